//! Field checks of the ledger's requests (INVALID_ARGUMENT with every
//! violation).

// The API module's imports.
use super::*;

/// A ReverseSale request, validated.
pub(super) struct ValidReverse {
    pub(super) program_id: ProgramId,
    pub(super) refund_id: RefundId,
    pub(super) refund: Refund,
    pub(super) occurred_at: DateTime<Utc>,
}

pub(super) fn check_key(field: &str, key: &str, violations: &mut FieldViolations) {
    if key.trim().is_empty() {
        violations.add(field, "is required");
    } else if key.len() > posting::MAX_KEY_LEN {
        violations.add(field, format!("is longer than {} bytes", posting::MAX_KEY_LEN));
    }
}

pub(super) fn check_text(field: &str, text: &str, required: bool, violations: &mut FieldViolations) {
    if required && text.trim().is_empty() {
        violations.add(field, "is required");
    } else if text.len() > MAX_TEXT_LEN {
        violations.add(field, format!("is longer than {MAX_TEXT_LEN} bytes"));
    }
}

/// Field checks of ReverseSale (INVALID_ARGUMENT with every violation): ids,
/// key, strict money for A and T (> 0, same currency), `occurred_at`, a known
/// rounding mode, a short reason. T > A is not checked here (it is a
/// FAILED_PRECONDITION).
pub(super) fn validate_reverse(request: &pb::ReverseSaleRequest) -> Result<ValidReverse, Status> {
    let mut violations = FieldViolations::new();
    let program_id = require_uuid("program_id", &request.program_id, &mut violations);
    if request.sale_id.trim().is_empty() {
        violations.add("sale_id", "is required");
    } else if request.sale_id.len() > posting::MAX_SALE_ID_LEN {
        violations.add("sale_id", format!("is longer than {} bytes", posting::MAX_SALE_ID_LEN));
    }
    check_key("idempotency_key", &request.idempotency_key, &mut violations);
    let refund_id = require_uuid("refund_id", &request.refund_id, &mut violations);
    let sale_amount = require_money("sale_amount", request.sale_amount.as_ref(), &mut violations);
    let refunded_total = require_money("refunded_total", request.refunded_total.as_ref(), &mut violations);
    if let Some(a) = sale_amount
        && a.amount <= Decimal::ZERO
    {
        violations.add("sale_amount.amount", "must be greater than zero");
    }
    if let Some(t) = refunded_total
        && t.amount <= Decimal::ZERO
    {
        violations.add("refunded_total.amount", "must be greater than zero");
    }
    if let (Some(a), Some(t)) = (sale_amount, refunded_total)
        && a.currency != t.currency
    {
        violations.add(
            "refunded_total.currency_code",
            format!("{} differs from the sale amount's currency {}", t.currency, a.currency),
        );
    }
    let occurred_at = require_timestamp("occurred_at", request.occurred_at.as_ref(), &mut violations);
    let mode = match types::RoundingMode::try_from(request.rounding_mode) {
        Ok(types::RoundingMode::Unspecified | types::RoundingMode::HalfAwayFromZero) => {
            Some(RoundingMode::HalfAwayFromZero)
        }
        Ok(types::RoundingMode::HalfEven) => Some(RoundingMode::HalfEven),
        Err(_) => {
            violations.add("rounding_mode", format!("unknown rounding mode {}", request.rounding_mode));
            None
        }
    };
    check_text("reason", &request.reason, false, &mut violations);
    violations.into_result()?;
    let (Some(program_id), Some(refund_id), Some(a), Some(t), Some(occurred_at), Some(mode)) =
        (program_id, refund_id, sale_amount, refunded_total, occurred_at, mode)
    else {
        return Err(invalid_field("program_id", "is required"));
    };
    Ok(ValidReverse {
        program_id,
        refund_id,
        refund: Refund { sale_amount: a.amount, refunded_total: t.amount, mode, currency: a.currency },
        occurred_at,
    })
}
