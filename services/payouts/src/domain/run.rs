//! Payout runs (DESIGN §5): request validation, the minimum a run applies,
//! deterministic payout ids and the carried-forward tally.

use accrue_kit::FieldViolations;
use accrue_kit::convert::{from_timestamp, optional_money, require_uuid};
use accrue_money::{Currency, Decimal, Money};
use accrue_proto::payouts::v1 as pb;
use accrue_types::{PartnerId, PayoutId, PayoutRunId, ProgramId};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::period::{Period, period_field};

/// A validated CreatePayoutRun request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRequest {
    /// Program.
    pub program_id: ProgramId,
    /// Currency of the run.
    pub currency: Currency,
    /// The calendar month.
    pub period: Period,
    /// Explicit cutoff (else the period's last instant).
    pub cutoff: Option<DateTime<Utc>>,
    /// Explicit minimum in the run's currency (else the program's).
    pub minimum: Option<Decimal>,
    /// Idempotency key.
    pub request_id: Option<String>,
}

/// A required ISO 4217 request field; an unknown code is a violation on
/// `field` (INVALID_ARGUMENT once collected).
pub fn currency_field(field: &str, value: &str, violations: &mut FieldViolations) -> Option<Currency> {
    match Currency::from_code(value) {
        Ok(currency) => Some(currency),
        Err(error) => {
            violations.add(field, error.to_string());
            None
        }
    }
}

/// Validates a CreatePayoutRun request, collecting every violation:
/// `program_id` a UUID; `currency_code` ISO 4217; `period` "YYYY-MM";
/// `cutoff` a valid timestamp when set; `minimum_amount` when set in
/// `currency_code`, ≥ 0 and exact in the minor unit; `request_id` within the kit's limit
/// characters.
///
/// Errors: INVALID_ARGUMENT with one field violation per problem.
pub fn validate_run_request(request: &pb::CreatePayoutRunRequest) -> Result<RunRequest, tonic::Status> {
    let mut violations = FieldViolations::new();
    let program_id = require_uuid("program_id", &request.program_id, &mut violations);
    let currency = currency_field("currency_code", &request.currency_code, &mut violations);
    let period = period_field("period", &request.period, &mut violations);
    let cutoff = from_timestamp("cutoff", request.cutoff.as_ref(), &mut violations);
    let minimum = optional_money("minimum_amount", request.minimum_amount.as_ref(), &mut violations);
    if let Some(minimum) = minimum {
        if let Some(currency) = currency
            && minimum.currency != currency
        {
            violations.add(
                "minimum_amount.currency_code",
                format!("must be the run's currency {currency}, not {}", minimum.currency),
            );
        }
        if minimum.amount < Decimal::ZERO {
            violations.add("minimum_amount.amount", "must not be negative");
        }
    }
    let request_id = accrue_kit::idempotency::request_id("request_id", request.request_id.trim(), &mut violations);
    violations.into_result()?;
    let (Some(program_id), Some(currency), Some(period)) = (program_id, currency, period) else {
        return Err(accrue_kit::error::invalid_field("program_id", "is required"));
    };
    Ok(RunRequest {
        program_id,
        currency,
        period,
        cutoff,
        minimum: minimum.map(|minimum| minimum.amount),
        request_id: request_id.map(|id| id.as_str().to_string()),
    })
}

/// The payout id a run gives a partner: UUID v5 in the run's namespace, so a
/// resumed run asks the ledger for the same reservation again (the ledger is
/// idempotent per payout id).
pub fn payout_id(run_id: PayoutRunId, partner_id: PartnerId) -> PayoutId {
    PayoutId::from_uuid(Uuid::new_v5(run_id.as_uuid(), partner_id.as_uuid().as_bytes()))
}

/// Why the program's minimum cannot apply to a run (FAILED_PRECONDITION,
/// reason MINIMUM_CURRENCY_MISMATCH).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the program's minimum payout is {program_minimum}, not in the run's currency {run_currency}; \
     pass minimum_amount in {run_currency}"
)]
pub struct MinimumCurrencyMismatch {
    /// The program's minimum.
    pub program_minimum: String,
    /// The run's currency.
    pub run_currency: String,
}

/// The minimum a run applies to every partner: the explicit one when given,
/// else the program's `minimum_payout` (DESIGN §5). A zero or absent program
/// minimum applies in any currency; a non-zero one only in its own currency.
///
/// Errors: [`MinimumCurrencyMismatch`].
pub fn resolve_minimum(
    explicit: Option<Decimal>,
    program_minimum: Option<Money>,
    currency: Currency,
) -> Result<Decimal, MinimumCurrencyMismatch> {
    if let Some(explicit) = explicit {
        return Ok(currency.rescale(explicit));
    }
    match program_minimum {
        None => Ok(currency.rescale(Decimal::ZERO)),
        Some(minimum) if minimum.amount.is_zero() => Ok(currency.rescale(Decimal::ZERO)),
        Some(minimum) if minimum.currency == currency => Ok(currency.rescale(minimum.amount)),
        Some(minimum) => Err(MinimumCurrencyMismatch {
            program_minimum: minimum.to_string(),
            run_currency: currency.code().to_string(),
        }),
    }
}

/// What a run asks the ledger for one partner (issue 12 item 4; DESIGN §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartnerRule {
    /// Reserve the payable balance when it reaches this minimum.
    Reserve(Decimal),
    /// Reserve nothing: the balance carries forward (a SUSPENDED partner, or
    /// one on hold). The ledger is still asked, with [`HOLD_MINIMUM`], so the
    /// balance is counted as carried forward.
    CarryForward,
}

/// A minimum no balance reaches: what a run sends the ledger for a partner
/// whose balance carries forward (10^18 in the currency).
pub const HOLD_MINIMUM: Decimal = Decimal::from_parts(0xA764_0000, 0x0DE0_B6B3, 0, false, 0);

/// The rule a run applies to one partner: SUSPENDED partners and partners on
/// hold carry forward (issue 12 item 4); ACTIVE and TERMINATED partners are
/// paid (a TERMINATED partner's approved balance is still owed), at their
/// own minimum when it is in the run's currency, else at the run's.
pub fn partner_rule(
    status: accrue_proto::types::v1::PartnerStatus,
    hold: bool,
    own_minimum: Option<Money>,
    run_minimum: Decimal,
    currency: Currency,
) -> PartnerRule {
    use accrue_proto::types::v1::PartnerStatus;
    if hold || status == PartnerStatus::Suspended {
        return PartnerRule::CarryForward;
    }
    match own_minimum {
        Some(minimum) if minimum.currency == currency => PartnerRule::Reserve(currency.rescale(minimum.amount)),
        _ => PartnerRule::Reserve(run_minimum),
    }
}

/// Partners whose payable balance stayed below the minimum in a run. Only
/// positive balances count: a negative net (refund clawbacks exceeding
/// earnings, issue 9 item 6) is a debt carried in the ledger, not an unpaid
/// balance, so adding it here would hide unpaid partners behind debtors.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CarriedForward {
    /// How many partners.
    pub count: i64,
    /// Σ their payable balances.
    pub amount: Decimal,
}

impl CarriedForward {
    /// Records one reservation outcome: a positive balance that was not
    /// reserved carries forward; reserved balances, zero and negative
    /// balances (debits awaiting later earnings) do not count.
    pub fn record(&mut self, reserved: bool, amount: Decimal) {
        if !reserved && amount > Decimal::ZERO {
            self.count += 1;
            self.amount += amount;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use accrue_proto::types::v1::Money as PbMoney;
    use rust_decimal_macros::dec;

    fn gbp() -> Currency {
        Currency::from_code("GBP").unwrap()
    }

    fn valid() -> pb::CreatePayoutRunRequest {
        pb::CreatePayoutRunRequest {
            program_id: ProgramId::new_v7().to_string(),
            currency_code: "GBP".into(),
            period: "2011-01".into(),
            cutoff: None,
            minimum_amount: None,
            request_id: "run-1".into(),
        }
    }

    #[test]
    fn validates_a_request() {
        let run = validate_run_request(&valid()).unwrap();
        assert_eq!(run.currency, gbp());
        assert_eq!(run.period.to_string(), "2011-01");
        assert_eq!(run.cutoff, None);
        assert_eq!(run.minimum, None);
        assert_eq!(run.request_id.as_deref(), Some("run-1"));

        let with_minimum = pb::CreatePayoutRunRequest {
            minimum_amount: Some(PbMoney { currency_code: "GBP".into(), amount: "25".into() }),
            ..valid()
        };
        assert_eq!(validate_run_request(&with_minimum).unwrap().minimum, Some(dec!(25.00)));
    }

    #[test]
    fn collects_every_violation() {
        let request = pb::CreatePayoutRunRequest {
            program_id: "x".into(),
            currency_code: "QQQ".into(),
            period: "2011-13".into(),
            cutoff: Some(prost_types::Timestamp { seconds: 0, nanos: -1 }),
            minimum_amount: Some(PbMoney { currency_code: "GBP".into(), amount: "1.001".into() }),
            request_id: String::new(),
        };
        let status = validate_run_request(&request).unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        for field in ["program_id", "currency_code", "period", "cutoff", "minimum_amount.amount"] {
            assert!(status.message().contains(field), "{field}: {}", status.message());
        }
        let wrong_currency = pb::CreatePayoutRunRequest {
            minimum_amount: Some(PbMoney { currency_code: "USD".into(), amount: "1".into() }),
            ..valid()
        };
        assert!(validate_run_request(&wrong_currency).unwrap_err().message().contains("minimum_amount.currency_code"));
        let negative = pb::CreatePayoutRunRequest {
            minimum_amount: Some(PbMoney { currency_code: "GBP".into(), amount: "-1".into() }),
            ..valid()
        };
        assert!(validate_run_request(&negative).is_err());
    }

    #[test]
    fn payout_ids_are_deterministic_per_run_and_partner() {
        let (run, other_run, partner, other_partner) =
            (PayoutRunId::new_v7(), PayoutRunId::new_v7(), PartnerId::new_v7(), PartnerId::new_v7());
        assert_eq!(payout_id(run, partner), payout_id(run, partner));
        assert_ne!(payout_id(run, partner), payout_id(other_run, partner));
        assert_ne!(payout_id(run, partner), payout_id(run, other_partner));
        assert_eq!(payout_id(run, partner).as_uuid().get_version_num(), 5);
    }

    #[test]
    fn minimum_resolution() {
        let usd = Currency::from_code("USD").unwrap();
        let program_minimum = Money { amount: dec!(50.00), currency: gbp() };
        assert_eq!(resolve_minimum(Some(dec!(10)), Some(program_minimum), gbp()), Ok(dec!(10.00)));
        assert_eq!(resolve_minimum(None, Some(program_minimum), gbp()), Ok(dec!(50.00)));
        assert_eq!(resolve_minimum(None, None, usd), Ok(dec!(0.00)));
        assert_eq!(resolve_minimum(None, Some(Money::zero(gbp())), usd), Ok(dec!(0.00)));
        assert!(resolve_minimum(None, Some(program_minimum), usd).is_err());
        assert_eq!(resolve_minimum(Some(dec!(5)), Some(program_minimum), usd), Ok(dec!(5.00)));
    }

    #[test]
    fn partner_rules() {
        use accrue_proto::types::v1::PartnerStatus;
        let own = Some(Money { amount: dec!(5), currency: gbp() });
        assert_eq!(HOLD_MINIMUM, dec!(1000000000000000000));
        assert_eq!(
            partner_rule(PartnerStatus::Active, false, None, dec!(20.00), gbp()),
            PartnerRule::Reserve(dec!(20.00))
        );
        assert_eq!(
            partner_rule(PartnerStatus::Active, false, own, dec!(20.00), gbp()),
            PartnerRule::Reserve(dec!(5.00))
        );
        let usd = Currency::from_code("USD").unwrap();
        assert_eq!(
            partner_rule(PartnerStatus::Active, false, own, dec!(20.00), usd),
            PartnerRule::Reserve(dec!(20.00))
        );
        assert_eq!(partner_rule(PartnerStatus::Terminated, false, None, dec!(1), gbp()), PartnerRule::Reserve(dec!(1)));
        assert_eq!(partner_rule(PartnerStatus::Suspended, false, None, dec!(1), gbp()), PartnerRule::CarryForward);
        assert_eq!(partner_rule(PartnerStatus::Active, true, own, dec!(1), gbp()), PartnerRule::CarryForward);
    }

    #[test]
    fn carried_forward_counts_positive_unreserved_balances() {
        let mut tally = CarriedForward::default();
        tally.record(true, dec!(80.00));
        tally.record(false, dec!(20.00));
        tally.record(false, dec!(0.00));
        tally.record(false, dec!(-5.00));
        tally.record(false, dec!(1.50));
        assert_eq!(tally, CarriedForward { count: 2, amount: dec!(21.50) });
    }
}
