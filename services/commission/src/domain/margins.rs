//! Scheme margins (seed 002; DESIGN §4 "Scheme margins"): a scheme-managed
//! sale pays MARGIN lines up the seller's upline, each partner its role's
//! absolute rate minus that of the partner below it.

use accrue_types::PartnerId;
use chrono::TimeDelta;
use rust_decimal::Decimal;

use super::sale::{
    Breakdown, EarningKind, Failure, Line, PartnerRef, PartnerStatus, ProgramSettings, Sale, Settlement, mul,
    out_of_range, rounding_text, show,
};
use super::scheme::{Effective, Scheme, SchemeBook};

/// One partner's margin in a scheme-managed sale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarginShare {
    /// Position in the walk (0 = seller, 1 = its parent, …).
    pub position: usize,
    /// The partner.
    pub partner_id: PartnerId,
    /// Its role.
    pub role: String,
    /// abs[role] in the scheme used.
    pub abs: Effective,
    /// The nearest counted partner below (role and abs); `None` for the
    /// bottom of the chain (it earns abs[role] − 0).
    pub below: Option<(String, Effective)>,
    /// abs − abs(below); may be negative (then it pays 0).
    pub margin_rate: Decimal,
}

/// How a scheme-managed sale's margins are shared out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarginWalk<'a> {
    /// The scheme used.
    pub scheme: &'a Scheme,
    /// Whether it is the seller's assignment (else the program's root).
    pub assigned: bool,
    /// Every counted partner's margin, in walk order.
    pub shares: Vec<MarginShare>,
    /// Why partners were skipped or forfeited.
    pub notes: Vec<String>,
}

/// The margin rates of a scheme-managed sale (seed 002 "Role Margin = Current
/// Role % − Next Lower Role %", DESIGN §4): the walk W is the seller then its
/// ancestors, nearest first.
///
/// - A partner without a role is transparent: skipped, the next one's margin
///   is measured against the partner below it.
/// - A TERMINATED partner above the seller forfeits its margin but still
///   counts as "below" for the next one, so its margin is lost, not passed
///   up — unless the program's compression is on: then it is transparent and
///   its margin rolls up to the next one (the override rule of DESIGN §4
///   applied to margins). SUSPENDED partners still accrue.
/// - Every other partner X earns abs[X's role] − abs[role of the nearest
///   counted partner below X] (the seller: abs[its role] − 0), so a clean
///   chain's margin rates sum to abs[top role].
///
/// `None` when the book has no scheme for the seller (no root).
pub fn margin_walk<'a>(program: &ProgramSettings, book: &'a SchemeBook, sale: &Sale) -> Option<MarginWalk<'a>> {
    let (scheme, assigned) = book.scheme_for(sale.seller.id)?;
    let mut walk = MarginWalk { scheme, assigned, shares: Vec::new(), notes: Vec::new() };
    let mut below: Option<(String, Effective)> = None;
    let partners = std::iter::once(&sale.seller).chain(&sale.ancestors);
    for (position, partner) in partners.enumerate() {
        let PartnerRef { id, status, role } = partner;
        let Some(role) = role.as_deref().filter(|role| !role.is_empty()) else {
            walk.notes.push(format!("position {position}: partner {id} has no role and is transparent"));
            continue;
        };
        let abs = book.tree().effective(scheme.id, &sale.service_code, role);
        if position > 0 && *status == Some(PartnerStatus::Terminated) {
            if program.compression_enabled {
                walk.notes.push(format!(
                    "position {position}: partner {id} ({role}) is TERMINATED: transparent (compression), its margin \
                     rolls up"
                ));
            } else {
                walk.notes
                    .push(format!("position {position}: partner {id} ({role}) is TERMINATED and forfeits its margin"));
                below = Some((role.to_string(), abs));
            }
            continue;
        }
        let below_rate = below.as_ref().map_or(Decimal::ZERO, |(_, effective)| effective.rate);
        let margin_rate = (abs.rate - below_rate).normalize();
        walk.shares.push(MarginShare {
            position,
            partner_id: *id,
            role: role.to_string(),
            abs,
            below: below.clone(),
            margin_rate,
        });
        below = Some((role.to_string(), abs));
    }
    Some(walk)
}

/// Settles a scheme-managed sale into `out` (seed 002, DESIGN §4): no
/// agreement is consulted, C = 0 (base model SCHEME) and there are no DIRECT,
/// SPLIT or OVERRIDE lines; a TERMINATED seller gets no lines at all. Each
/// share of [`margin_walk`] with a positive amount = round(gross ×
/// margin_rate) — one rounding, the program's mode — becomes a MARGIN line
/// (level = walk position, source = the seller, clearing `clearance_days` of
/// the scheme used after `occurred_at`), in walk order. Margins have no
/// trigger: every event type earns them.
pub fn settle_margins(
    program: &ProgramSettings,
    book: &SchemeBook,
    sale: &Sale,
    out: &mut Settlement,
) -> Result<(), Failure> {
    let currency = sale.amount.currency;
    let mode = program.rounding;
    let gross = sale.amount.amount;
    let base = &mut out.base_breakdown;
    base.model = "SCHEME".into();
    base.formula = "scheme-managed service = 0 (margins are paid instead)".into();
    base.input("gross_amount", sale.amount.amount_string());
    base.input("currency", currency.code());
    base.input("event_type", sale.event_type.as_str());
    base.input("service_code", &sale.service_code);
    base.add_note(format!(
        "service_code {} is scheme-managed: no agreement applies; margins up the seller's upline",
        sale.service_code
    ));
    if !sale.splits.is_empty() {
        base.add_note("link splits do not apply to scheme margins");
    }
    let Some(walk) = margin_walk(program, book, sale) else {
        base.add_note("the program has no root scheme: no margins");
        return Ok(());
    };
    base.input("scheme_id", walk.scheme.id);
    base.input("scheme_source", if walk.assigned { "assigned" } else { "program root" });
    if sale.seller.is(PartnerStatus::Terminated) {
        base.add_note(format!("seller {} is TERMINATED: no lines", sale.seller.id));
        return Ok(());
    }
    for note in &walk.notes {
        base.add_note(note);
    }
    let clears_at = sale
        .occurred_at
        .checked_add_signed(TimeDelta::days(i64::from(walk.scheme.clearance_days)))
        .ok_or_else(|| Failure::invalid("TIME_OUT_OF_RANGE", "occurred_at + clearance_days is out of range"))?;
    let mut lines = Vec::new();
    for share in &walk.shares {
        let MarginShare { position, partner_id, role, abs, below, margin_rate } = share;
        if margin_rate.is_sign_negative() && !margin_rate.is_zero() {
            base.add_note(format!(
                "position {position}: partner {partner_id} ({role}) margin {margin_rate} is negative (its abs rate is \
                 below the partner beneath it): pays 0"
            ));
            continue;
        }
        let unrounded = mul(gross, *margin_rate)?;
        let rounded = currency.rescale(currency.round(unrounded, mode));
        if rounded <= Decimal::ZERO {
            base.add_note(format!("position {position}: partner {partner_id} ({role}) margin rounds to 0, no line"));
            continue;
        }
        let below_text = match below {
            Some((below_role, effective)) => format!("abs[{below_role}] {}", effective.rate),
            None => "0".to_string(),
        };
        let mut breakdown = Breakdown {
            model: "MARGIN".into(),
            formula: format!(
                "{} × (abs[{role}] {} − {below_text} = {margin_rate}) = {} → {rounded}",
                show(currency, gross),
                abs.rate,
                show(currency, unrounded)
            ),
            rule: format!("role {role}"),
            rounding: rounding_text(currency, mode, unrounded, rounded),
            ..Breakdown::default()
        };
        breakdown.input("role", role);
        breakdown.input("abs_rate", abs.rate);
        breakdown.input("abs_source_scheme_id", abs.source.map(|id| id.to_string()).unwrap_or_default());
        breakdown.input("below_role", below.as_ref().map(|(role, _)| role.as_str()).unwrap_or_default());
        breakdown.input("below_abs_rate", below.as_ref().map_or(Decimal::ZERO, |(_, effective)| effective.rate));
        breakdown.input("scheme_id", walk.scheme.id);
        breakdown.input("service_code", &sale.service_code);
        breakdown.input("margin_rate", margin_rate);
        lines.push(Line {
            partner_id: *partner_id,
            kind: EarningKind::Margin,
            amount: accrue_money::Money { amount: rounded, currency },
            level: u32::try_from(*position).map_err(|_| out_of_range())?,
            source_partner_id: Some(sale.seller.id),
            clears_at,
            breakdown: Some(breakdown),
        });
    }
    out.lines = lines;
    Ok(())
}
