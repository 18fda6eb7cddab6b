//! Sale input rules: what RecordSale accepts, and the request hash that makes
//! it idempotent on (program, external_id).

use accrue_kit::FieldViolations;
use accrue_kit::convert::{EventWindow, require_money, require_uuid};
use accrue_money::Money;
use accrue_proto::attribution::v1::RecordSaleRequest;
use accrue_proto::types::v1 as tpb;
use accrue_types::ProgramId;
use chrono::{DateTime, SecondsFormat, Utc};
use rust_decimal::Decimal;
use sha2::{Digest, Sha256};

/// Longest external id, customer id, product or service code.
pub(crate) const MAX_ID_LEN: usize = 256;

/// A sale event type, shared with commission (one definition in
/// accrue-types); stored in `sales.event_type` and the saga's JSON by its
/// upper-case name.
pub(crate) use accrue_types::sale::SaleEventType;

/// The wire enum of an event type.
pub(crate) fn event_type_to_proto(event_type: SaleEventType) -> tpb::SaleEventType {
    match event_type {
        SaleEventType::Signup => tpb::SaleEventType::Signup,
        SaleEventType::Payment => tpb::SaleEventType::Payment,
        SaleEventType::Renewal => tpb::SaleEventType::Renewal,
    }
}

/// A validated RecordSale input.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SaleInput {
    /// Program.
    pub(crate) program_id: ProgramId,
    /// Caller's event id (idempotency key within the program).
    pub(crate) external_id: String,
    /// Caller's customer id; None when unattributed.
    pub(crate) customer_external_id: Option<String>,
    /// Event type (unset on the wire → PAYMENT).
    pub(crate) event_type: SaleEventType,
    /// Gross amount, exact in the currency's minor unit: > 0 for PAYMENT and
    /// RENEWAL, ≥ 0 for SIGNUP.
    pub(crate) amount: Money,
    /// Product code.
    pub(crate) product_code: String,
    /// Service code.
    pub(crate) service_code: String,
    /// When it occurred.
    pub(crate) occurred_at: DateTime<Utc>,
}

fn check_len(field: String, value: &str, violations: &mut FieldViolations) -> bool {
    if value.len() > MAX_ID_LEN {
        violations.add(field, format!("must be at most {MAX_ID_LEN} bytes"));
        return false;
    }
    true
}

/// Validates one sale; violations are named `{prefix}amount` etc. (prefix ""
/// for RecordSale, "sales[3]." inside RecordSales). Returns None when any
/// violation was recorded for this sale.
/// `occurred_at` must fall in `events` (not before 1970, not beyond the
/// allowed future skew).
pub(crate) fn parse_sale(
    prefix: &str,
    req: &RecordSaleRequest,
    events: &EventWindow,
    violations: &mut FieldViolations,
) -> Option<SaleInput> {
    let mut valid = true;
    let program_id = require_uuid(&format!("{prefix}program_id"), &req.program_id, violations);
    if req.external_id.trim().is_empty() {
        violations.add(format!("{prefix}external_id"), "is required");
        valid = false;
    }
    valid &= check_len(format!("{prefix}external_id"), &req.external_id, violations);
    valid &= check_len(format!("{prefix}customer_external_id"), &req.customer_external_id, violations);
    valid &= check_len(format!("{prefix}product_code"), &req.product_code, violations);
    valid &= check_len(format!("{prefix}service_code"), &req.service_code, violations);
    let event_type = match tpb::SaleEventType::try_from(req.event_type) {
        Ok(tpb::SaleEventType::Unspecified) | Ok(tpb::SaleEventType::Payment) => Some(SaleEventType::Payment),
        Ok(tpb::SaleEventType::Signup) => Some(SaleEventType::Signup),
        Ok(tpb::SaleEventType::Renewal) => Some(SaleEventType::Renewal),
        Err(_) => {
            violations.add(format!("{prefix}event_type"), format!("unknown event type {}", req.event_type));
            None
        }
    };
    let amount = require_money(&format!("{prefix}amount"), req.amount.as_ref(), violations);
    // A SIGNUP (an account or subscription created, seed 003 ON_SIGNUP
    // bounties) usually carries no money; a PAYMENT or RENEWAL always does.
    match (amount, event_type) {
        (Some(money), Some(SaleEventType::Signup)) if money.amount < Decimal::ZERO => {
            violations.add(format!("{prefix}amount.amount"), "must not be negative");
            valid = false;
        }
        (Some(money), Some(SaleEventType::Payment | SaleEventType::Renewal)) if money.amount <= Decimal::ZERO => {
            violations.add(format!("{prefix}amount.amount"), "must be greater than zero for a PAYMENT or RENEWAL");
            valid = false;
        }
        _ => {}
    }
    let occurred_at = events.require(&format!("{prefix}occurred_at"), req.occurred_at.as_ref(), violations);
    if !valid {
        return None;
    }
    let customer = req.customer_external_id.trim();
    Some(SaleInput {
        program_id: program_id?,
        external_id: req.external_id.clone(),
        customer_external_id: (!customer.is_empty()).then(|| req.customer_external_id.clone()),
        event_type: event_type?,
        amount: amount?,
        product_code: req.product_code.clone(),
        service_code: req.service_code.clone(),
        occurred_at: occurred_at?,
    })
}

impl SaleInput {
    /// SHA-256 (hex) of the sale's canonical body: the same sale sent twice
    /// hashes the same ("100" and "100.00" GBP are one amount); any changed
    /// field changes the hash.
    pub(crate) fn request_hash(&self) -> String {
        let fields: [&str; 9] = [
            &self.program_id.to_string(),
            &self.external_id,
            self.customer_external_id.as_deref().unwrap_or(""),
            self.event_type.as_str(),
            self.amount.currency.code(),
            &self.amount.amount_string(),
            &self.product_code,
            &self.service_code,
            &self.occurred_at.to_rfc3339_opts(SecondsFormat::Nanos, true),
        ];
        let mut hasher = Sha256::new();
        for field in fields {
            hasher.update((field.len() as u64).to_be_bytes());
            hasher.update(field.as_bytes());
        }
        hex::encode(hasher.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window() -> EventWindow {
        EventWindow::at(Utc::now(), accrue_kit::convert::DEFAULT_MAX_FUTURE_SKEW)
    }
    use accrue_proto::types::v1::Money as PbMoney;

    fn request() -> RecordSaleRequest {
        RecordSaleRequest {
            program_id: ProgramId::new_v7().to_string(),
            external_id: "inv-1".into(),
            customer_external_id: "cust-1".into(),
            event_type: 0,
            amount: Some(PbMoney { currency_code: "GBP".into(), amount: "100".into() }),
            product_code: String::new(),
            service_code: String::new(),
            occurred_at: Some(prost_types::Timestamp { seconds: 1_300_000_000, nanos: 0 }),
        }
    }

    #[test]
    fn defaults_and_hash() {
        let req = request();
        let mut v = FieldViolations::new();
        let sale = parse_sale("", &req, &window(), &mut v).unwrap();
        assert!(v.is_empty());
        assert_eq!(sale.event_type, SaleEventType::Payment);
        let mut same = req.clone();
        same.amount = Some(PbMoney { currency_code: "GBP".into(), amount: "100.00".into() });
        let same = parse_sale("", &same, &window(), &mut v).unwrap();
        assert_eq!(sale.request_hash(), same.request_hash());
        let mut other = req.clone();
        other.amount = Some(PbMoney { currency_code: "GBP".into(), amount: "100.01".into() });
        let other = parse_sale("", &other, &window(), &mut v).unwrap();
        assert_ne!(sale.request_hash(), other.request_hash());
    }

    #[test]
    fn rejects_bad_sales_with_field_names() {
        let mut req = request();
        req.amount = Some(PbMoney { currency_code: "GBP".into(), amount: "0".into() });
        req.external_id.clear();
        req.occurred_at = None;
        let mut v = FieldViolations::new();
        assert!(parse_sale("sales[2].", &req, &window(), &mut v).is_none());
        let message = v.into_status().message().to_string();
        assert!(message.contains("sales[2].amount"), "{message}");
        assert!(message.contains("sales[2].external_id"), "{message}");
        assert!(message.contains("sales[2].occurred_at"), "{message}");

        let mut req = request();
        req.amount = Some(PbMoney { currency_code: "GBP".into(), amount: "1.001".into() });
        let mut v = FieldViolations::new();
        assert!(parse_sale("", &req, &window(), &mut v).is_none());
        let mut req = request();
        req.amount = Some(PbMoney { currency_code: "GBP".into(), amount: "-5".into() });
        let mut v = FieldViolations::new();
        assert!(parse_sale("", &req, &window(), &mut v).is_none());
    }
}
