//! The clawback of a refund over a sale's lines (DESIGN §4 "Refunds", issue 9
//! item 3) and the plan of its undo (item 4). Pure: no I/O, no protobuf.
//!
//! After refunds totalling T on a sale of amount A, the sale's total clawback
//! is `target = round(Σ lines × T / A)` (the currency's minor unit, the
//! named rounding mode). A refund claws back `Δ = target − Σ already clawed
//! back` (never below zero), allocated in minor units by largest remainder
//! weighted by each line's amount not yet clawed back, ties in line order
//! (DIRECT, SPLIT in split order, OVERRIDE by level, MARGIN from the seller
//! up — the order PostEntries received them). Consequences, each tested
//! below: a line never gives back more than it earned, Σ debits = Δ exactly,
//! and once T = A every line is clawed back exactly.

use std::collections::{BTreeMap, HashSet};

use accrue_money::{Currency, RoundingMode, allocate_largest_remainder};
use accrue_types::settlement::Breakdown;
use accrue_types::{EntryId, RefundId};
use rust_decimal::Decimal;

use super::status::Status;

/// The breakdown model name of every clawback debit.
pub const CLAWBACK_MODEL: &str = "CLAWBACK";

/// One live CREDIT line of the sale (not VOIDED), in line order.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveLine {
    /// The entry.
    pub id: EntryId,
    /// What it earned (> 0, in the currency's minor unit).
    pub amount: Decimal,
    /// Σ of its non-VOIDED debits so far (≥ 0).
    pub clawed_back: Decimal,
}

/// What a refund is, for [`plan`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Refund {
    /// A: the sale's gross amount (> 0).
    pub sale_amount: Decimal,
    /// T: Σ of the sale's refunds up to and including this one (0 < T ≤ A).
    pub refunded_total: Decimal,
    /// Rounding of the target.
    pub mode: RoundingMode,
    /// The currency of A, T and the lines.
    pub currency: Currency,
}

/// One line's share of Δ.
#[derive(Debug, Clone, PartialEq)]
pub struct Share {
    /// Index of the line in the input (line order).
    pub index: usize,
    /// The line.
    pub line_id: EntryId,
    /// Its weight: what it had not yet given back.
    pub weight: Decimal,
    /// Its share of Δ (the debit's amount; may be zero — then no debit).
    pub amount: Decimal,
    /// Whether, after this share, the line has given back all it earned.
    pub reversed_in_full: bool,
}

/// The result of [`plan`].
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Σ of the live lines.
    pub lines_total: Decimal,
    /// `round(lines_total × T / A)`.
    pub target: Decimal,
    /// Σ of what the lines had already given back.
    pub previously_clawed_back: Decimal,
    /// Δ posted by this refund (Σ of the shares).
    pub delta: Decimal,
    /// One per input line, in line order.
    pub shares: Vec<Share>,
    /// Why Δ is zero when it is not simply `target − previous` (else empty).
    pub note: String,
}

/// Why a clawback cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReversalError {
    /// A or T is not > 0 (INVALID_ARGUMENT at the API).
    #[error("the sale amount and the refunded total must be greater than zero")]
    NotPositive,
    /// T > A (FAILED_PRECONDITION REFUND_EXCEEDS_SALE at the API).
    #[error("refunded total {refunded_total} exceeds the sale amount {sale_amount}")]
    RefundExceedsSale {
        /// T.
        refunded_total: Decimal,
        /// A.
        sale_amount: Decimal,
    },
    /// An amount is not exact in the currency's minor unit, or too large.
    #[error("amount {0} is not an exact amount in the currency's minor unit")]
    NotExact(Decimal),
}

fn units(currency: Currency, amount: Decimal) -> Result<i128, ReversalError> {
    currency.to_minor_units(amount).ok_or(ReversalError::NotExact(amount))
}

/// Plans the clawback of `refund` over `lines` (the sale's live CREDIT lines
/// in line order). See the module docs for the rule; errors are
/// [`ReversalError`]. A sale with no live lines plans Δ = 0 and no shares.
pub fn plan(lines: &[LiveLine], refund: Refund) -> Result<Plan, ReversalError> {
    let Refund { sale_amount, refunded_total, mode, currency } = refund;
    if sale_amount <= Decimal::ZERO || refunded_total <= Decimal::ZERO {
        return Err(ReversalError::NotPositive);
    }
    if refunded_total > sale_amount {
        return Err(ReversalError::RefundExceedsSale { refunded_total, sale_amount });
    }
    let lines_total: Decimal = lines.iter().map(|line| line.amount).sum();
    let previously_clawed_back: Decimal = lines.iter().map(|line| line.clawed_back).sum();
    let exact = lines_total.checked_mul(refunded_total).ok_or(ReversalError::NotExact(lines_total))?;
    let exact = exact.checked_div(sale_amount).ok_or(ReversalError::NotExact(lines_total))?;
    let target = currency.round(exact, mode);

    // What each line has not yet given back; a line that somehow gave back
    // more than it earned weighs nothing (and is never asked for more).
    let weights: Vec<Decimal> = lines.iter().map(|line| (line.amount - line.clawed_back).max(Decimal::ZERO)).collect();
    let remaining: Decimal = weights.iter().copied().sum();
    let mut note = String::new();
    let mut delta = target - previously_clawed_back;
    if delta < Decimal::ZERO {
        note = format!(
            "target {target} is below the {previously_clawed_back} earlier refunds clawed back \
             (the lines changed since): nothing more is clawed back"
        );
        delta = Decimal::ZERO;
    } else if delta > remaining {
        // Only reachable when a line gave back more than it earned: never ask
        // a line for more than it has left.
        note = format!("Δ {delta} capped at the {remaining} the lines have not yet given back");
        delta = remaining;
    }
    let delta = currency.rescale(delta);

    let weight_units = weights
        .iter()
        .map(|weight| units(currency, *weight).map(|u| u64::try_from(u).unwrap_or(u64::MAX)))
        .collect::<Result<Vec<u64>, _>>()?;
    let delta_units = units(currency, delta)?;
    let parts = if delta_units == 0 || weight_units.iter().all(|w| *w == 0) {
        vec![0; lines.len()]
    } else {
        allocate_largest_remainder(delta_units, &weight_units).map_err(|_| ReversalError::NotExact(delta))?
    };
    let mut shares = Vec::with_capacity(lines.len());
    for (index, (line, part)) in lines.iter().zip(parts).enumerate() {
        let amount = currency.from_minor_units(part).ok_or(ReversalError::NotExact(delta))?;
        shares.push(Share {
            index,
            line_id: line.id,
            weight: currency.rescale(weights[index]),
            amount,
            reversed_in_full: line.amount > Decimal::ZERO && line.clawed_back + amount >= line.amount,
        });
    }
    Ok(Plan {
        lines_total: currency.rescale(lines_total),
        target,
        previously_clawed_back: currency.rescale(previously_clawed_back),
        delta,
        shares,
        note,
    })
}

impl Plan {
    /// The breakdown stored on the debit of `share` (model CLAWBACK): every
    /// input of the rule, the formula with its numbers and the rounding used.
    pub fn breakdown(&self, share: &Share, refund: Refund, refund_id: RefundId) -> Breakdown {
        let total_weight: Decimal = self.shares.iter().map(|s| s.weight).sum();
        let inputs: BTreeMap<String, String> = [
            ("refunded_total", refund.refunded_total.to_string()),
            ("sale_amount", refund.sale_amount.to_string()),
            ("lines_total", self.lines_total.to_string()),
            ("target", self.target.to_string()),
            ("previously_clawed_back", self.previously_clawed_back.to_string()),
            ("delta", self.delta.to_string()),
            ("weight", share.weight.to_string()),
            ("total_weight", total_weight.to_string()),
            ("share", share.amount.to_string()),
            ("refund_id", refund_id.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        Breakdown {
            model: CLAWBACK_MODEL.to_string(),
            formula: format!(
                "target = round({} × {} / {}) = {}; Δ = {} − {} = {}; share = Δ × {} / {} by largest remainder = {}",
                self.lines_total,
                refund.refunded_total,
                refund.sale_amount,
                self.target,
                self.target,
                self.previously_clawed_back,
                self.delta,
                share.weight,
                total_weight,
                share.amount
            ),
            inputs,
            rule: format!("line {} of the sale (line order)", share.index),
            agreement_version_id: None,
            rounding: format!(
                "target {} to {} dp; shares by largest remainder in minor units, ties in line order",
                refund.mode.as_str(),
                refund.currency.minor_unit()
            ),
            note: self.note.clone(),
        }
    }
}

/// Where a clawback debit goes (issue 9 item 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// The line is neither paid nor reserved: the debit is created in the
    /// line's status with its clears_at and follows its status changes.
    Travels,
    /// The line is paid or reserved: the debit is APPROVED at once, clears at
    /// the refund's time and nets against the partner's next payout.
    AtOnce,
}

impl Placement {
    /// Stored name (`entries.placement`).
    pub fn as_str(self) -> &'static str {
        match self {
            Placement::Travels => "TRAVELS",
            Placement::AtOnce => "AT_ONCE",
        }
    }

    /// Where a debit against a line in `status` (reserved or not) goes, and
    /// the status it is created in. A DISPUTED line that is not reserved
    /// keeps its debits with it, so a dispute resolved VOIDED voids them too.
    pub fn of(status: Status, reserved: bool) -> (Placement, Status) {
        if reserved || status == Status::Paid {
            (Placement::AtOnce, Status::Approved)
        } else {
            (Placement::Travels, status)
        }
    }
}

/// One entry a VoidReversal looks at, with its state now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VoidTarget {
    /// Entry.
    pub id: EntryId,
    /// Status now.
    pub status: Status,
    /// Whether a payout holds it.
    pub reserved: bool,
    /// For an entry the reversal moved to REVERSED: the status it had before
    /// (from its status history), when known.
    pub before_reversed: Option<Status>,
}

/// Why a VoidReversal is refused (nothing changes).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VoidError {
    /// A debit is reserved by a payout (FAILED_PRECONDITION DEBIT_RESERVED).
    #[error("debit {0} is reserved by a payout; release the payout first")]
    Reserved(EntryId),
    /// A debit is PAID (FAILED_PRECONDITION DEBIT_PAID).
    #[error("debit {0} is paid; an operator must look")]
    Paid(EntryId),
    /// A debit was moved to REVERSED by a later reversal of the sale
    /// (FAILED_PRECONDITION REVERSAL_SUPERSEDED): undo that one first.
    #[error("debit {0} was reversed by a later reversal of the sale; void that reversal first")]
    Superseded(EntryId),
}

/// What a VoidReversal changes: `(entry, from, to)` moves, in input order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VoidPlan {
    /// The reversal's own debits → VOIDED.
    pub voids: Vec<(EntryId, Status)>,
    /// Entries it REVERSED → back to their earlier status.
    pub restores: Vec<(EntryId, Status, Status)>,
}

/// Plans the undo of a reversal: each of its `debits` is voided (from
/// PENDING, CLEARED, APPROVED or DISPUTED, or from REVERSED when this very
/// reversal reversed it — the entries in `reversed_here`); already VOIDED
/// ones are skipped. Each entry in `restores` (lines and travelling debits
/// this reversal moved to REVERSED, not its own debits) that is still
/// REVERSED goes back to the status it had before. This compensation is the
/// only way out of REVERSED (DESIGN §5; [`Status::can_move_to`] never allows
/// it). Errors: [`VoidError`].
pub fn plan_void(
    debits: &[VoidTarget],
    restores: &[VoidTarget],
    reversed_here: &HashSet<EntryId>,
) -> Result<VoidPlan, VoidError> {
    let mut plan = VoidPlan::default();
    for debit in debits {
        match debit.status {
            Status::Voided => continue,
            _ if debit.reserved => return Err(VoidError::Reserved(debit.id)),
            Status::Paid => return Err(VoidError::Paid(debit.id)),
            Status::Reversed if !reversed_here.contains(&debit.id) => return Err(VoidError::Superseded(debit.id)),
            from => plan.voids.push((debit.id, from)),
        }
    }
    for entry in restores {
        if entry.status != Status::Reversed {
            continue;
        }
        if let Some(before) = entry.before_reversed
            && before.can_move_to(Status::Reversed)
        {
            plan.restores.push((entry.id, Status::Reversed, before));
        }
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rust_decimal_macros::dec;

    fn gbp() -> Currency {
        Currency::from_code("GBP").unwrap()
    }

    fn refund(a: Decimal, t: Decimal) -> Refund {
        Refund { sale_amount: a, refunded_total: t, mode: RoundingMode::HalfAwayFromZero, currency: gbp() }
    }

    fn lines(amounts: &[Decimal]) -> Vec<LiveLine> {
        amounts
            .iter()
            .enumerate()
            .map(|(i, amount)| LiveLine {
                id: EntryId::from_u128(i as u128 + 1),
                amount: *amount,
                clawed_back: dec!(0),
            })
            .collect()
    }

    fn apply(lines: &mut [LiveLine], plan: &Plan) {
        for share in &plan.shares {
            lines[share.index].clawed_back += share.amount;
        }
    }

    #[test]
    fn seed_003_full_refund_reverses_the_line() {
        let plan = plan(&lines(&[dec!(15.00)]), refund(dec!(150.00), dec!(150.00))).unwrap();
        assert_eq!((plan.target, plan.delta), (dec!(15.00), dec!(15.00)));
        assert_eq!(plan.shares[0].amount, dec!(15.00));
        assert!(plan.shares[0].reversed_in_full);
    }

    #[test]
    fn two_half_refunds_return_every_line_exactly() {
        let amounts = [dec!(0.01), dec!(0.03), dec!(1.05), dec!(2.33), dec!(7.77)];
        let mut state = lines(&amounts);
        let first = plan(&state, refund(dec!(100.00), dec!(50.00))).unwrap();
        assert_eq!(first.target, dec!(5.60), "round(11.19 / 2 = 5.595) half away from zero");
        let shares: Vec<Decimal> = first.shares.iter().map(|s| s.amount).collect();
        assert_eq!(shares, vec![dec!(0.00), dec!(0.01), dec!(0.53), dec!(1.17), dec!(3.89)]);
        apply(&mut state, &first);
        let second = plan(&state, refund(dec!(100.00), dec!(100.00))).unwrap();
        assert_eq!((second.previously_clawed_back, second.delta), (dec!(5.60), dec!(5.59)));
        apply(&mut state, &second);
        for (line, amount) in state.iter().zip(amounts) {
            assert_eq!(line.clawed_back, amount);
        }
        assert!(second.shares.iter().all(|s| s.reversed_in_full));
    }

    #[test]
    fn half_even_target() {
        let mut r = refund(dec!(100.00), dec!(50.00));
        r.mode = RoundingMode::HalfEven;
        assert_eq!(plan(&lines(&[dec!(0.01), dec!(0.02)]), r).unwrap().target, dec!(0.02), "0.015 → 0.02");
        assert_eq!(plan(&lines(&[dec!(0.01)]), r).unwrap().target, dec!(0.00), "0.005 → 0.00");
    }

    #[test]
    fn one_penny_goes_to_the_first_line_on_a_tie() {
        let plan = plan(&lines(&[dec!(0.20); 5]), refund(dec!(1.00), dec!(0.01))).unwrap();
        let shares: Vec<Decimal> = plan.shares.iter().map(|s| s.amount).collect();
        assert_eq!(shares, vec![dec!(0.01), dec!(0), dec!(0), dec!(0), dec!(0)]);
    }

    #[test]
    fn refusals_and_empty_sales() {
        assert_eq!(
            plan(&lines(&[dec!(1.00)]), refund(dec!(10.00), dec!(10.01))),
            Err(ReversalError::RefundExceedsSale { refunded_total: dec!(10.01), sale_amount: dec!(10.00) })
        );
        assert_eq!(plan(&[], refund(dec!(0), dec!(1))), Err(ReversalError::NotPositive));
        let empty = plan(&[], refund(dec!(10.00), dec!(5.00))).unwrap();
        assert_eq!((empty.target, empty.delta, empty.shares.len()), (dec!(0.00), dec!(0.00), 0));
    }

    #[test]
    fn a_target_below_what_was_clawed_posts_nothing_and_says_why() {
        let mut state = lines(&[dec!(10.00)]);
        state[0].clawed_back = dec!(6.00);
        let plan = plan(&state, refund(dec!(100.00), dec!(50.00))).unwrap();
        assert_eq!(plan.delta, dec!(0.00));
        assert!(plan.note.contains("below"), "{}", plan.note);
        assert!(plan.shares.iter().all(|s| s.amount.is_zero()));
    }

    #[test]
    fn breakdown_names_inputs_and_rounding() {
        let r = refund(dec!(100.00), dec!(50.00));
        let plan = plan(&lines(&[dec!(1.05), dec!(2.33)]), r).unwrap();
        let breakdown = plan.breakdown(&plan.shares[1], r, RefundId::from_u128(9));
        assert_eq!(breakdown.model, "CLAWBACK");
        assert_eq!(breakdown.inputs["target"], "1.69");
        assert_eq!(breakdown.inputs["share"], plan.shares[1].amount.to_string());
        assert!(breakdown.formula.contains("round(3.38 × 50.00 / 100.00) = 1.69"), "{}", breakdown.formula);
        assert!(breakdown.rounding.contains("HALF_AWAY_FROM_ZERO"));
    }

    #[test]
    fn placement_follows_payment_and_reservation() {
        assert_eq!(Placement::of(Status::Pending, false), (Placement::Travels, Status::Pending));
        assert_eq!(Placement::of(Status::Approved, false), (Placement::Travels, Status::Approved));
        assert_eq!(Placement::of(Status::Approved, true), (Placement::AtOnce, Status::Approved));
        assert_eq!(Placement::of(Status::Paid, false), (Placement::AtOnce, Status::Approved));
    }

    #[test]
    fn void_plan_refuses_reserved_paid_and_superseded_debits() {
        let target = |n: u128, status: Status, reserved: bool| VoidTarget {
            id: EntryId::from_u128(n),
            status,
            reserved,
            before_reversed: Some(Status::Cleared),
        };
        let here: HashSet<EntryId> = [EntryId::from_u128(2)].into_iter().collect();
        let plan = plan_void(
            &[target(1, Status::Approved, false), target(2, Status::Reversed, false), target(3, Status::Voided, false)],
            &[target(4, Status::Reversed, false), target(5, Status::Cleared, false)],
            &here,
        )
        .unwrap();
        assert_eq!(
            plan.voids,
            vec![(EntryId::from_u128(1), Status::Approved), (EntryId::from_u128(2), Status::Reversed)]
        );
        assert_eq!(plan.restores, vec![(EntryId::from_u128(4), Status::Reversed, Status::Cleared)]);
        assert_eq!(
            plan_void(&[target(1, Status::Approved, true)], &[], &here),
            Err(VoidError::Reserved(EntryId::from_u128(1)))
        );
        assert_eq!(
            plan_void(&[target(1, Status::Paid, false)], &[], &here),
            Err(VoidError::Paid(EntryId::from_u128(1)))
        );
        assert_eq!(
            plan_void(&[target(7, Status::Reversed, false)], &[], &here),
            Err(VoidError::Superseded(EntryId::from_u128(7)))
        );
    }

    fn amounts_strategy() -> impl Strategy<Value = Vec<Decimal>> {
        proptest::collection::vec(1i64..50_000, 1..8)
            .prop_map(|cents| cents.into_iter().map(|c| Decimal::new(c, 2)).collect())
    }

    proptest! {
        #[test]
        fn never_more_than_earned_sums_exact_full_refund_reverses_all(
            amounts in amounts_strategy(),
            sale_cents in 1i64..1_000_000,
            steps in proptest::collection::vec(1u32..100, 1..6),
            half_even in any::<bool>(),
        ) {
            let sale = Decimal::new(sale_cents, 2);
            let mode = if half_even { RoundingMode::HalfEven } else { RoundingMode::HalfAwayFromZero };
            let mut state = lines(&amounts);
            // Cumulative refunded totals: random increasing fractions of A, ending at A.
            let mut refunded = Decimal::ZERO;
            let total_steps: u32 = steps.iter().sum();
            let mut acc = 0u32;
            let mut totals = Vec::new();
            for step in &steps {
                acc += step;
                let t = gbp().round(sale * Decimal::from(acc) / Decimal::from(total_steps), RoundingMode::HalfEven);
                if t > refunded { totals.push(t); refunded = t; }
            }
            if totals.last() != Some(&sale) { totals.push(sale); }
            for t in totals {
                let r = Refund { sale_amount: sale, refunded_total: t, mode, currency: gbp() };
                let plan = plan(&state, r).unwrap();
                let sum: Decimal = plan.shares.iter().map(|s| s.amount).sum();
                prop_assert_eq!(sum, plan.delta);
                prop_assert!(plan.delta >= Decimal::ZERO);
                apply(&mut state, &plan);
                for line in &state {
                    prop_assert!(line.clawed_back <= line.amount, "{} > {}", line.clawed_back, line.amount);
                }
                let clawed: Decimal = state.iter().map(|l| l.clawed_back).sum();
                prop_assert_eq!(clawed, plan.target.max(plan.previously_clawed_back));
            }
            for line in &state {
                prop_assert_eq!(line.clawed_back, line.amount);
            }
        }
    }
}
