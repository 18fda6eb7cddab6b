//! The settlement of one sale (DESIGN §4): checks the sale's own facts, then
//! either the agreement path — [`base`](super::base) commission C, link
//! [`splits`](super::splits) of C, upline [`overrides`](super::overrides) — or,
//! for a scheme-managed service code, scheme [`margins`](super::margins). Pure
//! and deterministic: the same inputs always give the same settlement.

use accrue_money::Money;
use accrue_types::split::SplitPoints;

use super::agreements::AgreementBook;
use super::base::base_commission;
use super::margins::settle_margins;
use super::overrides::{OverridePlans, QUALIFICATION_FACTS_REQUIRED, override_lines, required_facts};
use super::sale::{Breakdown, Failure, ProgramSettings, Sale, Settlement};
use super::scheme::SchemeBook;
use super::splits::split_lines;

/// Checks the sale's own facts: amount ≥ 0 and the link split rule; the
/// checked split points are what [`split_lines`] allocates over.
fn check_sale(sale: &Sale) -> Result<SplitPoints, Failure> {
    if sale.amount.amount.is_sign_negative() && !sale.amount.amount.is_zero() {
        return Err(Failure::invalid("NEGATIVE_AMOUNT", "the sale amount must not be negative"));
    }
    SplitPoints::parse(sale.splits.iter().map(|split| i64::from(split.basis_points))).map_err(|errors| {
        let messages: Vec<String> = errors
            .iter()
            .map(|error| match error.index() {
                Some(index) => format!("splits[{index}].basis_points {error}"),
                None => format!("splits: {error}"),
            })
            .collect();
        Failure::invalid("INVALID_SPLITS", messages.join("; "))
    })
}

/// Settles one sale (DESIGN §4, steps 1–9 of the commission brief):
///
/// 1. the agreement version in force at `occurred_at` (seller's scope, else
///    the program default; none → C = 0 and no lines);
/// 2. the trigger must fire (else C = 0, no lines);
/// 3. a TERMINATED seller earns nothing (no lines);
/// 4. the raw commission by model (FIXED in another currency fails with
///    FAILED_PRECONDITION `CURRENCY_MISMATCH`);
/// 5. per-customer facts: setup fee on the first firing event under the
///    agreement, `max_commissions`, `max_duration_months` (calendar months in UTC,
///    clamped to the month's end);
/// 6. C = round(raw + setup fee) once with the program mode, then clamped to
///    [min, max] when C > 0;
/// 7. C is split over the owner and the link's split partners by largest
///    remainder over minor units (seed 000);
/// 8. overrides up the ancestors (seed 004), on top of C; an ancestor whose
///    plan has a qualification must meet it (issue 16 item 3), and a sale
///    lacking the facts fails with FAILED_PRECONDITION
///    `QUALIFICATION_FACTS_REQUIRED`, naming them in `required_facts`;
/// 9. every line clears at `occurred_at + clearance_days`.
///
/// A sale whose `service_code` is scheme-managed (some scheme of the program
/// sets a rate for it) skips all of the above: DESIGN §4 "a program may use
/// schemes instead of agreements for a service_code", so C = 0 (base model
/// SCHEME), no agreement, split or override applies, and the lines are the
/// MARGINs of [`settle_margins`] (seed 002).
pub fn settle(
    program: &ProgramSettings,
    book: &AgreementBook,
    plans: &OverridePlans,
    schemes: &SchemeBook,
    sale: &Sale,
) -> Settlement {
    let mut settlement = Settlement {
        sale_id: sale.sale_id.clone(),
        base_commission: Some(Money::zero(sale.amount.currency)),
        agreement_version_id: None,
        lines: Vec::new(),
        failure: None,
        base_breakdown: Breakdown::default(),
        required_facts: Vec::new(),
    };
    let result = if schemes.manages(&sale.service_code) {
        check_sale(sale).and_then(|_| settle_margins(program, schemes, sale, &mut settlement))
    } else {
        compute(program, book, plans, schemes, sale, &mut settlement)
    };
    if let Err(failure) = result {
        settlement.base_commission = None;
        settlement.lines.clear();
        settlement.base_breakdown.add_note(format!("failed: {}", failure.message));
        settlement.failure = Some(failure);
    }
    program.record(&mut settlement.base_breakdown);
    for breakdown in settlement.lines.iter_mut().filter_map(|line| line.breakdown.as_mut()) {
        program.record(breakdown);
    }
    settlement
}

fn compute(
    program: &ProgramSettings,
    book: &AgreementBook,
    plans: &OverridePlans,
    schemes: &SchemeBook,
    sale: &Sale,
    out: &mut Settlement,
) -> Result<(), Failure> {
    let points = check_sale(sale)?;
    let Some(base) = base_commission(program, book, schemes, sale, out)? else {
        return Ok(());
    };
    let mut lines = split_lines(sale, &points, &base, out)?;
    // Qualified overrides (issue 16 item 3) are decided on facts the caller
    // gathers only when asked: name every missing one at once.
    let needed = required_facts(plans, sale);
    if !needed.is_empty() {
        let names: Vec<String> = needed.iter().map(|n| n.partner_id.to_string()).collect();
        out.required_facts = needed;
        return Err(Failure::precondition(
            QUALIFICATION_FACTS_REQUIRED,
            format!("the override plans of ancestors {} require qualification facts the sale lacks", names.join(", ")),
        ));
    }
    lines.extend(override_lines(program, plans, sale, &base, out)?);
    out.lines = lines;
    Ok(())
}
