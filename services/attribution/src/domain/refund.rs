//! Refund input rules (DESIGN §4 "Refunds"; issue 9): what RecordRefund
//! accepts on its own, what it accepts given the refunded sale, the request
//! hash that makes it idempotent on (program, external_id), and refund states.

use accrue_kit::FieldViolations;
use accrue_kit::convert::{EventWindow, require_money, require_uuid};
use accrue_kit::idempotency;
use accrue_money::Money;
use accrue_proto::attribution::v1 as pb;
use accrue_proto::attribution::v1::record_refund_request::Sale as SaleRefProto;
use accrue_types::{ProgramId, SaleId};
use chrono::{DateTime, SecondsFormat, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use tonic::Status;

use super::sale::MAX_ID_LEN;

/// Longest refund reason, in characters (the proto's limit).
pub(crate) const MAX_REASON_CHARS: usize = 1000;

/// How a RecordRefund names the refunded sale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SaleRef {
    /// By Accrue's sale id.
    Id(SaleId),
    /// By the caller's external id of the sale (in the refund's program).
    External(String),
}

/// A RecordRefund input that passed the checks that need no sale.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RefundInput {
    /// Program.
    pub(crate) program_id: ProgramId,
    /// Caller's refund id (idempotency key within the program).
    pub(crate) external_id: String,
    /// The refunded sale.
    pub(crate) sale: SaleRef,
    /// Refunded amount: > 0 and exact in the currency's minor unit.
    pub(crate) amount: Money,
    /// When the refund happened.
    pub(crate) occurred_at: DateTime<Utc>,
    /// Why (free text, ≤ [`MAX_REASON_CHARS`]).
    pub(crate) reason: String,
}

/// Validates a RecordRefund request on its own (INVALID_ARGUMENT with field
/// violations: program_id, external_id, sale_id / sale_external_id, amount,
/// occurred_at, reason). The checks against the sale are
/// [`check_against_sale`]'s. `occurred_at` must fall in `events`.
pub(crate) fn parse_refund(req: &pb::RecordRefundRequest, events: &EventWindow) -> Result<RefundInput, Status> {
    let mut violations = FieldViolations::new();
    let program_id = require_uuid("program_id", &req.program_id, &mut violations);
    if req.external_id.trim().is_empty() {
        violations.add("external_id", "is required");
    } else if req.external_id.len() > MAX_ID_LEN {
        violations.add("external_id", format!("must be at most {MAX_ID_LEN} bytes"));
    }
    // A oneof carries at most one of the two; an empty one counts as absent.
    let sale = match &req.sale {
        Some(SaleRefProto::SaleId(id)) if !id.is_empty() => {
            require_uuid("sale_id", id, &mut violations).map(SaleRef::Id)
        }
        Some(SaleRefProto::SaleExternalId(external)) if !external.trim().is_empty() => {
            if external.len() > MAX_ID_LEN {
                violations.add("sale_external_id", format!("must be at most {MAX_ID_LEN} bytes"));
                None
            } else {
                Some(SaleRef::External(external.clone()))
            }
        }
        _ => {
            violations.add("sale_id", "exactly one of sale_id or sale_external_id is required");
            None
        }
    };
    let amount = require_money("amount", req.amount.as_ref(), &mut violations);
    let mut amount_ok = true;
    if let Some(money) = amount
        && money.amount <= Decimal::ZERO
    {
        violations.add("amount.amount", "must be greater than zero");
        amount_ok = false;
    }
    let occurred_at = events.require("occurred_at", req.occurred_at.as_ref(), &mut violations);
    if req.reason.chars().count() > MAX_REASON_CHARS {
        violations.add("reason", format!("must be at most {MAX_REASON_CHARS} characters"));
    }
    violations.into_result()?;
    match (program_id, sale, amount, occurred_at) {
        (Some(program_id), Some(sale), Some(amount), Some(occurred_at)) if amount_ok => Ok(RefundInput {
            program_id,
            external_id: req.external_id.clone(),
            sale,
            amount,
            occurred_at,
            reason: req.reason.clone(),
        }),
        // Unreachable: every None above recorded a violation.
        _ => Err(accrue_kit::error::invalid_field("refund", "is invalid")),
    }
}

/// The checks that need the refunded sale: the refund is in the sale's
/// currency and does not precede it (INVALID_ARGUMENT on
/// `amount.currency_code` / `occurred_at`).
pub(crate) fn check_against_sale(
    refund: &RefundInput,
    sale_currency: &str,
    sale_occurred_at: DateTime<Utc>,
) -> Result<(), Status> {
    let mut violations = FieldViolations::new();
    if refund.amount.currency.code() != sale_currency {
        violations.add(
            "amount.currency_code",
            format!("must be the sale's currency {sale_currency} (got {})", refund.amount.currency.code()),
        );
    }
    if refund.occurred_at < sale_occurred_at {
        violations.add(
            "occurred_at",
            format!(
                "must not be before the sale's occurred_at {}",
                sale_occurred_at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
            ),
        );
    }
    violations.into_result()
}

/// The canonical body a refund's request hash is taken over.
#[derive(Serialize)]
struct HashedBody<'a> {
    program_id: ProgramId,
    external_id: &'a str,
    sale_id: SaleId,
    currency: &'a str,
    amount: String,
    occurred_at: String,
    reason: &'a str,
}

impl RefundInput {
    /// SHA-256 (hex) of the refund's canonical body with the sale resolved to
    /// its id: naming the sale by id or by external id, or writing "10" or
    /// "10.00" GBP, is the same refund; any other change is another body.
    pub(crate) fn request_hash(&self, sale_id: SaleId) -> Result<String, Status> {
        let body = HashedBody {
            program_id: self.program_id,
            external_id: &self.external_id,
            sale_id,
            currency: self.amount.currency.code(),
            amount: self.amount.amount_string(),
            occurred_at: self.occurred_at.to_rfc3339_opts(SecondsFormat::Nanos, true),
            reason: &self.reason,
        };
        Ok(hex::encode(idempotency::fingerprint(&body)?))
    }
}

/// A refund's lifecycle state (stored upper case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum RefundState {
    /// Recorded; its ClawbackSale saga is running or waiting.
    Pending,
    /// Clawed back (or, for an unattributed sale, nothing to claw back).
    Applied,
    /// Its saga failed and unwound.
    Failed,
}

impl RefundState {
    /// The stored name.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RefundState::Pending => "PENDING",
            RefundState::Applied => "APPLIED",
            RefundState::Failed => "FAILED",
        }
    }

    /// The wire enum.
    pub(crate) fn to_proto(self) -> pb::RefundState {
        match self {
            RefundState::Pending => pb::RefundState::Pending,
            RefundState::Applied => pb::RefundState::Applied,
            RefundState::Failed => pb::RefundState::Failed,
        }
    }

    /// From the wire enum (UNSPECIFIED → None: no filter).
    pub(crate) fn from_proto(state: pb::RefundState) -> Option<Self> {
        match state {
            pb::RefundState::Unspecified => None,
            pb::RefundState::Pending => Some(RefundState::Pending),
            pb::RefundState::Applied => Some(RefundState::Applied),
            pb::RefundState::Failed => Some(RefundState::Failed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window() -> EventWindow {
        EventWindow::at(Utc::now(), accrue_kit::convert::DEFAULT_MAX_FUTURE_SKEW)
    }
    use accrue_proto::types::v1::Money as PbMoney;

    fn request() -> pb::RecordRefundRequest {
        pb::RecordRefundRequest {
            program_id: ProgramId::from_u128(7).to_string(),
            external_id: "ref-1".into(),
            sale: Some(SaleRefProto::SaleExternalId("inv-1".into())),
            amount: Some(PbMoney { currency_code: "GBP".into(), amount: "10".into() }),
            occurred_at: Some(prost_types::Timestamp { seconds: 1_300_000_000, nanos: 0 }),
            reason: "damaged".into(),
        }
    }

    fn fields(status: Status) -> String {
        status.message().to_string()
    }

    #[test]
    fn parses_and_hashes_canonically() {
        let refund = parse_refund(&request(), &window()).unwrap();
        let sale = SaleId::new_v7();
        let mut same = request();
        same.amount = Some(PbMoney { currency_code: "GBP".into(), amount: "10.00".into() });
        let same = parse_refund(&same, &window()).unwrap();
        assert_eq!(refund.request_hash(sale).unwrap(), same.request_hash(sale).unwrap());
        let mut other = request();
        other.reason = "lost".into();
        assert_ne!(
            refund.request_hash(sale).unwrap(),
            parse_refund(&other, &window()).unwrap().request_hash(sale).unwrap()
        );
        assert_ne!(refund.request_hash(sale).unwrap(), refund.request_hash(SaleId::new_v7()).unwrap());
    }

    #[test]
    fn rejects_bad_refunds_naming_fields() {
        for (amount, field) in [("0", "amount.amount"), ("-1", "amount.amount"), ("1.001", "amount.amount")] {
            let mut req = request();
            req.amount = Some(PbMoney { currency_code: "GBP".into(), amount: amount.into() });
            let message = fields(parse_refund(&req, &window()).unwrap_err());
            assert!(message.contains(field), "{amount}: {message}");
        }
        let mut req = request();
        req.sale = None;
        req.occurred_at = None;
        req.external_id.clear();
        let message = fields(parse_refund(&req, &window()).unwrap_err());
        for field in ["sale_id", "occurred_at", "external_id"] {
            assert!(message.contains(field), "{field}: {message}");
        }
        let mut req = request();
        req.sale = Some(SaleRefProto::SaleId("not-a-uuid".into()));
        req.reason = "x".repeat(MAX_REASON_CHARS + 1);
        let message = fields(parse_refund(&req, &window()).unwrap_err());
        assert!(message.contains("sale_id") && message.contains("reason"), "{message}");
    }

    #[test]
    fn checks_currency_and_time_against_the_sale() {
        let refund = parse_refund(&request(), &window()).unwrap();
        let at = refund.occurred_at;
        assert!(check_against_sale(&refund, "GBP", at).is_ok(), "the sale's own instant is allowed");
        let message = fields(check_against_sale(&refund, "USD", at + chrono::Duration::seconds(1)).unwrap_err());
        assert!(message.contains("amount.currency_code") && message.contains("occurred_at"), "{message}");
    }

    #[test]
    fn refund_states_round_trip() {
        for state in [RefundState::Pending, RefundState::Applied, RefundState::Failed] {
            assert_eq!(RefundState::from_proto(state.to_proto()), Some(state));
        }
    }
}
