//! Link splits (seed 000; DESIGN §4 "Link splits"): C shared between the link
//! owner and its split partners by largest remainder over minor units, over
//! the configured points; a TERMINATED partner's amount then moves to the owner.

use accrue_money::{Money, allocate_largest_remainder};
use accrue_types::split::{BASIS_POINTS_WHOLE, SplitPoints};

use super::base::Base;
use super::sale::{EarningKind, Failure, Line, PartnerStatus, Sale, Settlement, out_of_range};

/// The DIRECT line (owner) and SPLIT lines (split order) of C; zero shares
/// post nothing, Σ lines = C. `points` are the sale's checked split points.
/// Notes about TERMINATED partners go to `out.base_breakdown`.
pub fn split_lines(
    sale: &Sale,
    points: &SplitPoints,
    base: &Base<'_>,
    out: &mut Settlement,
) -> Result<Vec<Line>, Failure> {
    let currency = sale.amount.currency;
    let commission = base.commission;
    let clears_at = base.clears_at;
    // 7. Splits: allocate over the configured points first, so an active
    // partner's share never depends on another's status; only then does a
    // TERMINATED partner's allocation move to the owner (DESIGN §4, issue 8).
    let units = currency.to_minor_units(commission).ok_or_else(out_of_range)?;
    let weights = points.weights();
    let mut parts = if units > 0 {
        allocate_largest_remainder(units, &weights)
            .map_err(|error| Failure::invalid("INVALID_SPLITS", error.to_string()))?
    } else {
        vec![0; weights.len()]
    };
    let mut fallbacks = Vec::new();
    let mut moved_to_owner: i128 = 0;
    for (index, split) in sale.splits.iter().enumerate() {
        if !split.partner.is(PartnerStatus::Terminated) {
            continue;
        }
        let moved = std::mem::take(&mut parts[index + 1]);
        moved_to_owner += moved;
        let moved_amount = currency.from_minor_units(moved).ok_or_else(out_of_range)?;
        fallbacks.push(format!(
            "split[{index}] partner {} is TERMINATED: the {moved_amount} allocated to its {} bp fall back to the \
             owner",
            split.partner.id, split.basis_points
        ));
    }
    parts[0] += moved_to_owner;
    for note in &fallbacks {
        out.base_breakdown.add_note(note);
    }
    let moved_to_owner = currency.from_minor_units(moved_to_owner).ok_or_else(out_of_range)?;
    let mut lines = Vec::new();
    for (index, (part, weight)) in parts.iter().zip(&weights).enumerate() {
        if *part == 0 {
            continue;
        }
        let amount = currency.from_minor_units(*part).ok_or_else(out_of_range)?;
        let (partner_id, kind, rule) = if index == 0 {
            (sale.seller.id, EarningKind::Direct, "owner".to_string())
        } else {
            (sale.splits[index - 1].partner.id, EarningKind::Split, format!("split[{}]", index - 1))
        };
        // A share line explains C itself (model, tier or rule chosen,
        // inputs, rounding) and then its share of C, so a partner reading
        // one ledger entry sees the whole derivation.
        let base = &out.base_breakdown;
        let mut breakdown = base.clone();
        breakdown.rule = if base.rule.is_empty() { rule.clone() } else { format!("{}; {rule}", base.rule) };
        breakdown.formula = if index == 0 && !fallbacks.is_empty() {
            format!(
                "C: {}; {rule} share: {commission} × {weight}/{BASIS_POINTS_WHOLE} + {moved_to_owner} from \
                 TERMINATED splits → {amount}",
                base.formula
            )
        } else {
            format!("C: {}; {rule} share: {commission} × {weight}/{BASIS_POINTS_WHOLE} → {amount}", base.formula)
        };
        breakdown.input("share", &rule);
        breakdown.input("base_commission", commission);
        breakdown.input("basis_points", weight);
        breakdown.input("total_basis_points", BASIS_POINTS_WHOLE);
        breakdown.rounding = format!(
            "C: {}; shares of C by largest remainder over {units} minor units (Σ shares = C)",
            if base.rounding.is_empty() { "none" } else { base.rounding.as_str() }
        );
        breakdown.note = String::new();
        if index == 0 {
            for note in &fallbacks {
                breakdown.add_note(note);
            }
        }
        lines.push(Line {
            partner_id,
            kind,
            amount: Money { amount, currency },
            level: 0,
            source_partner_id: Some(sale.seller.id),
            clears_at,
            breakdown: Some(breakdown),
        });
    }
    Ok(lines)
}
