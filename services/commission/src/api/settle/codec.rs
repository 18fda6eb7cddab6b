//! ComputeSettlements on the wire ↔ the domain's [`Sale`] and [`Settlement`]:
//! a malformed sale becomes its own failure, never the request's.

use accrue_kit::FieldViolations;
use accrue_kit::convert::settlement::{breakdown_to_proto, settlement_line_to_proto};
use accrue_kit::convert::{money_to_proto, optional_money, require_money, require_timestamp, require_uuid};
use accrue_money::RoundingMode;
use accrue_proto::commission::v1 as pb;
use accrue_proto::types::v1 as types;
use accrue_types::program::DEFAULT_OVERRIDE_DEPTH_CAP;
use accrue_types::split::SplitPoints;
use accrue_types::{PartnerId, ProgramId};

use std::collections::BTreeMap;

use crate::domain::{
    Breakdown, Failure, PartnerRef, PartnerStatus, PriorEvent, ProgramSettings, QualificationFacts, RequiredFacts,
    Sale, SaleEventType, Settlement, SplitShare,
};

/// Most sales one ComputeSettlements call takes.
pub const MAX_SALES_PER_CALL: usize = 1000;

/// Decodes the request-level program context (field paths under `program.`)
/// with [`decode_settings`].
pub fn decode_program(
    program: Option<&pb::ProgramContext>,
    violations: &mut FieldViolations,
) -> Option<(ProgramId, ProgramSettings)> {
    let Some(program) = program else {
        violations.add("program", "is required");
        return None;
    };
    let id = require_uuid("program.program_id", &program.program_id, violations);
    let settings = decode_settings(
        program.rounding_mode,
        program.override_depth_cap,
        program.compression_enabled,
        program.settings_version,
        violations,
    );
    Some((id?, settings?))
}

/// A program's settings from their wire numbers (the hierarchy's `Program`
/// or a `ProgramContext`; violations under `program.`): rounding_mode
/// UNSPECIFIED → the default [`RoundingMode`];
/// override_depth_cap 0 → [`DEFAULT_OVERRIDE_DEPTH_CAP`], negative → violation;
/// settings_version 0 → none named, negative → violation.
pub(crate) fn decode_settings(
    rounding_mode: i32,
    override_depth_cap: i32,
    compression_enabled: bool,
    settings_version: i32,
    violations: &mut FieldViolations,
) -> Option<ProgramSettings> {
    let rounding = match types::RoundingMode::try_from(rounding_mode) {
        Ok(types::RoundingMode::Unspecified) => Some(RoundingMode::default()),
        Ok(types::RoundingMode::HalfAwayFromZero) => Some(RoundingMode::HalfAwayFromZero),
        Ok(types::RoundingMode::HalfEven) => Some(RoundingMode::HalfEven),
        Err(_) => {
            violations.add(
                "program.rounding_mode",
                format!("{rounding_mode} is not 1 (HALF_AWAY_FROM_ZERO) or 2 (HALF_EVEN)"),
            );
            None
        }
    };
    let cap = match u32::try_from(override_depth_cap) {
        Ok(0) => Some(DEFAULT_OVERRIDE_DEPTH_CAP),
        Ok(cap) => Some(cap),
        Err(_) => {
            violations.add("program.override_depth_cap", "must not be negative");
            None
        }
    };
    let settings_version = u32::try_from(settings_version).ok();
    if settings_version.is_none() {
        violations.add("program.settings_version", "must not be negative (0: no version named)");
    }
    Some(ProgramSettings {
        rounding: rounding?,
        override_depth_cap: cap?,
        compression_enabled,
        settings_version: settings_version?,
    })
}

pub(crate) fn decode_event_type(field: &str, value: i32, violations: &mut FieldViolations) -> Option<SaleEventType> {
    match types::SaleEventType::try_from(value) {
        Ok(types::SaleEventType::Signup) => Some(SaleEventType::Signup),
        Ok(types::SaleEventType::Payment) => Some(SaleEventType::Payment),
        Ok(types::SaleEventType::Renewal) => Some(SaleEventType::Renewal),
        _ => {
            violations.add(field, "is required (SIGNUP, PAYMENT or RENEWAL)");
            None
        }
    }
}

/// A partner's wire status (`accrue.type.v1.PartnerStatus`) and role (empty:
/// none) as the calculation sees them.
pub(crate) fn partner_ref(id: PartnerId, status: i32, role: &str) -> PartnerRef {
    PartnerRef { id, status: decode_partner_status(status), role: (!role.is_empty()).then(|| role.to_string()) }
}

/// UNSPECIFIED and numbers this build does not know decode to `None`, which
/// the rules treat as neither ACTIVE nor TERMINATED.
fn decode_partner_status(status: i32) -> Option<PartnerStatus> {
    match types::PartnerStatus::try_from(status).ok()? {
        types::PartnerStatus::Unspecified => None,
        types::PartnerStatus::Active => Some(PartnerStatus::Active),
        types::PartnerStatus::Suspended => Some(PartnerStatus::Suspended),
        types::PartnerStatus::Terminated => Some(PartnerStatus::Terminated),
    }
}

pub(crate) fn decode_partner(
    field: &str,
    partner: Option<&pb::PartnerContext>,
    violations: &mut FieldViolations,
) -> Option<PartnerRef> {
    let Some(partner) = partner else {
        violations.add(field, "is required");
        return None;
    };
    let id = require_uuid(&format!("{field}.partner_id"), &partner.partner_id, violations)?;
    Some(partner_ref(id, partner.status, &partner.role))
}

/// Decodes a customer's earlier events (field paths `{prefix}[i].…`):
/// `event_type`, `seller_partner_id` and `occurred_at` required; `sale_id`
/// and `service_code` as sent (an empty service code is no service code).
/// `None` when any is invalid.
pub(crate) fn decode_history(
    prefix: &str,
    events: &[pb::PriorEvent],
    violations: &mut FieldViolations,
) -> Option<Vec<PriorEvent>> {
    let mut history = Vec::with_capacity(events.len());
    for (i, event) in events.iter().enumerate() {
        let field = format!("{prefix}[{i}]");
        let event_type = decode_event_type(&format!("{field}.event_type"), event.event_type, violations);
        let seller = require_uuid(&format!("{field}.seller_partner_id"), &event.seller_partner_id, violations);
        let at = require_timestamp(&format!("{field}.occurred_at"), event.occurred_at.as_ref(), violations);
        if let (Some(event_type), Some(seller_partner_id), Some(occurred_at)) = (event_type, seller, at) {
            history.push(PriorEvent {
                sale_id: event.sale_id.clone(),
                event_type,
                seller_partner_id,
                occurred_at,
                service_code: event.service_code.clone(),
            });
        }
    }
    (history.len() == events.len()).then_some(history)
}

/// Decodes one sale; any problem is a per-sale INVALID_ARGUMENT failure
/// (reason `INVALID_SALE`) listing every violation.
pub fn decode_sale(index: usize, sale: &pb::SaleContext) -> Result<Sale, Failure> {
    let mut v = FieldViolations::new();
    let p = format!("sales[{index}]");
    let event_type = decode_event_type(&format!("{p}.event_type"), sale.event_type, &mut v);
    let amount = require_money(&format!("{p}.amount"), sale.amount.as_ref(), &mut v);
    if let Some(amount) = amount
        && amount.amount.is_sign_negative()
        && !amount.amount.is_zero()
    {
        v.add(format!("{p}.amount.amount"), "must not be negative");
    }
    let occurred_at = require_timestamp(&format!("{p}.occurred_at"), sale.occurred_at.as_ref(), &mut v);
    let seller = decode_partner(&format!("{p}.seller"), sale.seller.as_ref(), &mut v);
    let mut splits = Vec::with_capacity(sale.splits.len());
    for (i, split) in sale.splits.iter().enumerate() {
        let partner = decode_partner(&format!("{p}.splits[{i}].partner"), split.partner.as_ref(), &mut v);
        if let (Some(partner), Ok(basis_points)) = (partner, u32::try_from(split.basis_points)) {
            splits.push(SplitShare { partner, basis_points });
        }
    }
    if let Err(errors) = SplitPoints::parse(sale.splits.iter().map(|split| i64::from(split.basis_points))) {
        for error in errors {
            v.add(error.field(&format!("{p}.splits")), error.to_string());
        }
    }
    let mut ancestors = Vec::with_capacity(sale.ancestors.len());
    let mut ancestor_facts = BTreeMap::new();
    for (i, ancestor) in sale.ancestors.iter().enumerate() {
        if let Some(partner) = decode_partner(&format!("{p}.ancestors[{i}]"), Some(ancestor), &mut v) {
            let field = format!("{p}.ancestors[{i}].qualification_facts");
            if let Some(facts) = ancestor.qualification_facts.as_ref().and_then(|f| decode_facts(&field, f, &mut v)) {
                ancestor_facts.insert(partner.id, facts);
            }
            ancestors.push(partner);
        }
    }
    let prior_volume = optional_money(&format!("{p}.seller_prior_volume"), sale.seller_prior_volume.as_ref(), &mut v);
    let history = decode_history(&format!("{p}.customer_history"), &sale.customer_history, &mut v).unwrap_or_default();
    if !v.is_empty() {
        return Err(Failure::invalid("INVALID_SALE", v.into_status().message().to_string()));
    }
    match (event_type, amount, occurred_at, seller) {
        (Some(event_type), Some(amount), Some(occurred_at), Some(seller)) => Ok(Sale {
            sale_id: sale.sale_id.clone(),
            event_type,
            amount,
            product_code: sale.product_code.clone(),
            service_code: sale.service_code.clone(),
            occurred_at,
            seller,
            splits,
            ancestors,
            is_first_payment: sale.is_first_payment,
            seller_prior_volume: prior_volume,
            customer_history: history,
            ancestor_facts,
        }),
        _ => Err(Failure::invalid("INVALID_SALE", "the sale is incomplete")),
    }
}

/// Decodes an ancestor's qualification facts (issue 16 item 3; violations
/// under `field`): `personal_volume` ≥ 0 when set, `volume_window_days` ≥ 0,
/// `active_direct_partners` ≥ 0 when set.
pub(crate) fn decode_facts(
    field: &str,
    facts: &pb::QualificationFacts,
    violations: &mut FieldViolations,
) -> Option<QualificationFacts> {
    let volume = optional_money(&format!("{field}.personal_volume"), facts.personal_volume.as_ref(), violations);
    if let Some(volume) = volume
        && volume.amount.is_sign_negative()
        && !volume.amount.is_zero()
    {
        violations.add(format!("{field}.personal_volume.amount"), "must not be negative");
    }
    let window = u32::try_from(facts.volume_window_days).ok();
    if window.is_none() {
        violations.add(format!("{field}.volume_window_days"), "must not be negative");
    }
    let partners = facts.active_direct_partners.map(u32::try_from).transpose().ok();
    if partners.is_none() {
        violations.add(format!("{field}.active_direct_partners"), "must not be negative");
    }
    Some(QualificationFacts { personal_volume: volume, volume_window_days: window?, active_direct_partners: partners? })
}

/// Encodes the facts a settlement needs (issue 16 item 3).
fn encode_required(required: RequiredFacts) -> pb::RequiredQualificationFacts {
    pb::RequiredQualificationFacts {
        partner_id: required.partner_id.to_string(),
        qualification: Some(crate::api::plans::codec::encode_qualification(&required.qualification)),
    }
}

/// The partner ids a batch needs agreements for (sellers and the sellers of
/// customer history) and override plans for (ancestors), sorted and unique.
pub fn referenced_partners(sales: &[&Sale]) -> (Vec<PartnerId>, Vec<PartnerId>) {
    let mut sellers = std::collections::BTreeSet::new();
    let mut uplines = std::collections::BTreeSet::new();
    for sale in sales {
        sellers.insert(sale.seller.id);
        sellers.extend(sale.customer_history.iter().map(|event| event.seller_partner_id));
        uplines.extend(sale.ancestors.iter().map(|ancestor| ancestor.id));
    }
    (sellers.into_iter().collect(), uplines.into_iter().collect())
}

/// Encodes a settlement, its base breakdown only when `with_base_breakdown`
/// (ComputeSettlementsRequest.omit_base_breakdown).
pub fn encode_settlement(settlement: Settlement, with_base_breakdown: bool) -> pb::Settlement {
    pb::Settlement {
        sale_id: settlement.sale_id,
        base_commission: settlement.base_commission.map(money_to_proto),
        agreement_version_id: settlement.agreement_version_id.map(|id| id.to_string()).unwrap_or_default(),
        lines: settlement.lines.into_iter().map(settlement_line_to_proto).collect(),
        failure: settlement.failure.map(|failure| types::ItemFailure {
            code: failure.code.as_str().to_string(),
            reason: failure.reason,
            message: failure.message,
        }),
        base_breakdown: with_base_breakdown.then(|| breakdown_to_proto(settlement.base_breakdown)),
        required_facts: settlement.required_facts.into_iter().map(encode_required).collect(),
    }
}

/// A settlement for a sale that failed to decode.
pub fn failed_settlement(sale_id: &str, failure: Failure) -> Settlement {
    Settlement {
        sale_id: sale_id.to_string(),
        base_commission: None,
        agreement_version_id: None,
        lines: Vec::new(),
        base_breakdown: Breakdown { note: format!("failed: {}", failure.message), ..Breakdown::default() },
        failure: Some(failure),
        required_facts: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use accrue_money::Money;

    fn usd(amount: &str) -> Option<types::Money> {
        Some(types::Money { currency_code: "USD".into(), amount: amount.into() })
    }

    #[test]
    fn program_context_defaults_and_errors() {
        let mut violations = FieldViolations::new();
        let context = pb::ProgramContext {
            program_id: uuid::Uuid::nil().to_string(),
            rounding_mode: 2,
            override_depth_cap: 0,
            compression_enabled: true,
            settings_version: 3,
        };
        let (_, settings) = decode_program(Some(&context), &mut violations).unwrap();
        assert_eq!(settings.rounding, RoundingMode::HalfEven);
        assert_eq!(settings.override_depth_cap, DEFAULT_OVERRIDE_DEPTH_CAP);
        assert_eq!(settings.settings_version, 3);
        let bad = pb::ProgramContext { rounding_mode: 3, override_depth_cap: -1, settings_version: -1, ..context };
        assert!(decode_program(Some(&bad), &mut violations).is_none());
        let message = violations.into_status().message().to_string();
        assert!(message.contains("program.rounding_mode") && message.contains("program.override_depth_cap"));
        assert!(message.contains("program.settings_version"), "{message}");
    }

    #[test]
    fn sale_roles_and_service_code_decode_and_margins_encode() {
        let sale = pb::SaleContext {
            sale_id: "s".into(),
            event_type: types::SaleEventType::Payment as i32,
            amount: usd("10.00"),
            service_code: "RECHARGE".into(),
            occurred_at: Some(prost_types::Timestamp { seconds: 0, nanos: 0 }),
            seller: Some(pb::PartnerContext {
                partner_id: PartnerId::from_u128(1).to_string(),
                status: 1,
                role: "RETAILER".into(),
                qualification_facts: None,
            }),
            ancestors: vec![pb::PartnerContext {
                partner_id: PartnerId::from_u128(2).to_string(),
                status: 2,
                role: String::new(),
                qualification_facts: None,
            }],
            ..Default::default()
        };
        let decoded = decode_sale(0, &sale).unwrap();
        assert_eq!(decoded.service_code, "RECHARGE");
        assert_eq!(decoded.seller.role.as_deref(), Some("RETAILER"));
        assert_eq!(decoded.ancestors[0].role, None, "an empty role is no role");
        let line = crate::domain::Line {
            partner_id: PartnerId::from_u128(1),
            kind: crate::domain::EarningKind::Margin,
            amount: Money::parse("USD", "1.00").unwrap(),
            level: 3,
            source_partner_id: Some(PartnerId::from_u128(1)),
            clears_at: chrono::DateTime::<chrono::Utc>::UNIX_EPOCH,
            breakdown: Some(Breakdown::default()),
        };
        let encoded = settlement_line_to_proto(line);
        assert_eq!((encoded.kind, encoded.level), (types::EarningKind::Margin as i32, 3));
    }

    #[test]
    fn ancestor_qualification_facts_decode_and_bad_ones_fail_the_sale() {
        let ancestor = |facts: pb::QualificationFacts| pb::PartnerContext {
            partner_id: PartnerId::from_u128(2).to_string(),
            status: 1,
            role: String::new(),
            qualification_facts: Some(facts),
        };
        let mut sale = pb::SaleContext {
            sale_id: "s".into(),
            event_type: types::SaleEventType::Payment as i32,
            amount: usd("10.00"),
            occurred_at: Some(prost_types::Timestamp { seconds: 0, nanos: 0 }),
            seller: Some(pb::PartnerContext {
                partner_id: PartnerId::from_u128(1).to_string(),
                status: 1,
                role: String::new(),
                qualification_facts: None,
            }),
            ancestors: vec![ancestor(pb::QualificationFacts {
                personal_volume: usd("1000.00"),
                volume_window_days: 30,
                active_direct_partners: Some(3),
            })],
            ..Default::default()
        };
        let decoded = decode_sale(0, &sale).unwrap();
        let facts = decoded.ancestor_facts[&PartnerId::from_u128(2)];
        assert_eq!(facts.personal_volume, Some(Money::parse("USD", "1000.00").unwrap()));
        assert_eq!((facts.volume_window_days, facts.active_direct_partners), (30, Some(3)));
        sale.ancestors = vec![ancestor(pb::QualificationFacts {
            personal_volume: usd("-1.00"),
            volume_window_days: -1,
            active_direct_partners: Some(-2),
        })];
        let failure = decode_sale(0, &sale).unwrap_err();
        assert_eq!(failure.reason, "INVALID_SALE");
        for field in ["personal_volume.amount", "volume_window_days", "active_direct_partners"] {
            assert!(
                failure.message.contains(&format!("sales[0].ancestors[0].qualification_facts.{field}")),
                "{field}: {}",
                failure.message
            );
        }
    }

    #[test]
    fn a_sale_with_oversubscribed_splits_is_invalid() {
        let partner = |n: u128| {
            Some(pb::PartnerContext {
                partner_id: PartnerId::from_u128(n).to_string(),
                status: 1,
                role: String::new(),
                qualification_facts: None,
            })
        };
        let sale = pb::SaleContext {
            sale_id: "s".into(),
            event_type: types::SaleEventType::Payment as i32,
            amount: usd("10.00"),
            occurred_at: Some(prost_types::Timestamp { seconds: 0, nanos: 0 }),
            seller: partner(1),
            splits: vec![
                pb::SplitContext { partner: partner(2), basis_points: 6000 },
                pb::SplitContext { partner: partner(3), basis_points: 5000 },
            ],
            ..Default::default()
        };
        let failure = decode_sale(0, &sale).unwrap_err();
        assert_eq!(failure.reason, "INVALID_SALE");
        assert!(failure.message.contains("sales[0].splits"), "{}", failure.message);
    }
}
