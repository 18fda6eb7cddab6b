//! A settlement line and its breakdown on the wire (DESIGN §4, §5): the one
//! place where [`accrue_types::settlement`]'s [`Line`] and [`Breakdown`] meet
//! `accrue.commission.v1.SettlementLine` (commission's answer, the saga's
//! compute input), `accrue.ledger.v1.EntryInput` (the saga's posting, the
//! ledger's input) and `accrue.type.v1.CommissionBreakdown`.
//!
//! Here rather than in accrue-proto because decoding validates with
//! [`FieldViolations`] and accrue-money, which this crate already joins to the
//! generated types; accrue-types stays free of protobuf, so the graph is
//! types → money, kit → {proto, money, types}, with no cycle.

use accrue_proto::commission::v1 as cpb;
use accrue_proto::ledger::v1 as lpb;
use accrue_proto::types::v1 as pb;
use accrue_types::settlement::{Breakdown, EarningKind, Line};
use chrono::{DateTime, Utc};

use super::{amount_to_proto, optional_uuid, require_money, require_timestamp, require_uuid, timestamp};
use crate::FieldViolations;

/// The wire kind of `kind`.
pub fn kind_to_proto(kind: EarningKind) -> pb::EarningKind {
    match kind {
        EarningKind::Direct => pb::EarningKind::Direct,
        EarningKind::Split => pb::EarningKind::Split,
        EarningKind::Override => pb::EarningKind::Override,
        EarningKind::Margin => pb::EarningKind::Margin,
    }
}

/// The kind a wire number names; `None` for UNSPECIFIED and numbers this
/// build does not know.
pub fn kind_from_proto(value: i32) -> Option<EarningKind> {
    match pb::EarningKind::try_from(value).ok()? {
        pb::EarningKind::Unspecified => None,
        pb::EarningKind::Direct => Some(EarningKind::Direct),
        pb::EarningKind::Split => Some(EarningKind::Split),
        pb::EarningKind::Override => Some(EarningKind::Override),
        pb::EarningKind::Margin => Some(EarningKind::Margin),
    }
}

/// Encodes a breakdown; no agreement version is the empty string.
pub fn breakdown_to_proto(breakdown: Breakdown) -> pb::CommissionBreakdown {
    pb::CommissionBreakdown {
        model: breakdown.model,
        formula: breakdown.formula,
        inputs: breakdown.inputs,
        rule: breakdown.rule,
        agreement_version_id: breakdown.agreement_version_id.map(|id| id.to_string()).unwrap_or_default(),
        rounding: breakdown.rounding,
        note: breakdown.note,
    }
}

/// Decodes a breakdown at `field`: every text as sent; `agreement_version_id`
/// empty (none) or a UUID, else a violation at `{field}.agreement_version_id`.
/// Takes the wire form by value: its texts move into the breakdown (a copy of
/// every text of every line was a twelfth of attribution's CPU in
/// settlement, issue 15).
pub fn breakdown_from_proto(
    field: &str,
    breakdown: pb::CommissionBreakdown,
    violations: &mut FieldViolations,
) -> Option<Breakdown> {
    let mut local = FieldViolations::new();
    let agreement_version_id =
        optional_uuid(&format!("{field}.agreement_version_id"), &breakdown.agreement_version_id, &mut local);
    let valid = local.is_empty();
    violations.absorb(local, str::to_string);
    valid.then_some(Breakdown {
        model: breakdown.model,
        formula: breakdown.formula,
        inputs: breakdown.inputs,
        rule: breakdown.rule,
        agreement_version_id,
        rounding: breakdown.rounding,
        note: breakdown.note,
    })
}

/// Encodes a line as commission answers it. Levels above `i32::MAX` cannot
/// occur (the upline walk is bounded by the tree depth) and saturate.
pub fn settlement_line_to_proto(line: Line) -> cpb::SettlementLine {
    let wire = wire_fields(line);
    cpb::SettlementLine {
        partner_id: wire.partner_id,
        kind: wire.kind,
        amount: Some(wire.amount),
        level: wire.level,
        source_partner_id: wire.source_partner_id,
        clears_at: Some(wire.clears_at),
        breakdown: wire.breakdown,
    }
}

/// Decodes a line commission answered, at `field` (`lines[2]`): see
/// [`entry_input_to_line`] for the rules, with any level ≥ 0 accepted.
pub fn settlement_line_from_proto(
    field: &str,
    line: cpb::SettlementLine,
    violations: &mut FieldViolations,
) -> Option<Line> {
    let fields = WireIn {
        partner_id: &line.partner_id,
        kind: line.kind,
        amount: line.amount.as_ref(),
        level: line.level,
        source_partner_id: &line.source_partner_id,
        clears_at: line.clears_at.as_ref(),
        breakdown: line.breakdown,
    };
    decode(field, fields, i32::MAX.unsigned_abs(), violations)
}

/// Encodes a line for ledger.PostEntries; `occurred_at` is the sale's.
pub fn entry_input(line: Line, occurred_at: DateTime<Utc>) -> lpb::EntryInput {
    let wire = wire_fields(line);
    lpb::EntryInput {
        partner_id: wire.partner_id,
        kind: wire.kind,
        amount: Some(wire.amount),
        level: wire.level,
        source_partner_id: wire.source_partner_id,
        occurred_at: Some(timestamp(occurred_at)),
        clears_at: Some(wire.clears_at),
        breakdown: wire.breakdown,
    }
}

/// Decodes one posted line at `field` (`postings[3].lines[1]`) and the sale's
/// `occurred_at`, every problem a violation at its path (the ledger's
/// INVALID_ARGUMENT, DESIGN §5): `partner_id` a UUID; `source_partner_id`
/// empty or a UUID; `kind` DIRECT, SPLIT, OVERRIDE or MARGIN; `amount` a
/// strict `Money` (known currency, no decimals beyond its minor unit; the
/// sign is kept); `level` 0..=`max_level`; `occurred_at` and `clears_at`
/// present and valid; `breakdown` absent or with an empty-or-UUID
/// `agreement_version_id`. `None` when any is wrong.
pub fn entry_input_to_line(
    field: &str,
    input: lpb::EntryInput,
    max_level: u32,
    violations: &mut FieldViolations,
) -> Option<(Line, DateTime<Utc>)> {
    let fields = WireIn {
        partner_id: &input.partner_id,
        kind: input.kind,
        amount: input.amount.as_ref(),
        level: input.level,
        source_partner_id: &input.source_partner_id,
        clears_at: input.clears_at.as_ref(),
        breakdown: input.breakdown,
    };
    let occurred_at = require_timestamp(&format!("{field}.occurred_at"), input.occurred_at.as_ref(), violations);
    let line = decode(field, fields, max_level, violations);
    Some((line?, occurred_at?))
}

/// The fields `SettlementLine` and `EntryInput` share, encoded.
struct Wire {
    partner_id: String,
    kind: i32,
    amount: pb::Money,
    level: i32,
    source_partner_id: String,
    clears_at: prost_types::Timestamp,
    breakdown: Option<pb::CommissionBreakdown>,
}

fn wire_fields(line: Line) -> Wire {
    Wire {
        partner_id: line.partner_id.to_string(),
        kind: kind_to_proto(line.kind) as i32,
        amount: amount_to_proto(line.amount.currency, line.amount.amount),
        level: i32::try_from(line.level).unwrap_or(i32::MAX),
        source_partner_id: line.source_partner_id.map(|id| id.to_string()).unwrap_or_default(),
        clears_at: timestamp(line.clears_at),
        breakdown: line.breakdown.map(breakdown_to_proto),
    }
}

/// The fields `SettlementLine` and `EntryInput` share, as received: the
/// breakdown by value (its texts move into the line), the rest borrowed.
struct WireIn<'a> {
    partner_id: &'a str,
    kind: i32,
    amount: Option<&'a pb::Money>,
    level: i32,
    source_partner_id: &'a str,
    clears_at: Option<&'a prost_types::Timestamp>,
    breakdown: Option<pb::CommissionBreakdown>,
}

fn decode(field: &str, wire: WireIn<'_>, max_level: u32, violations: &mut FieldViolations) -> Option<Line> {
    let partner_id = require_uuid(&format!("{field}.partner_id"), wire.partner_id, violations);
    let mut source = FieldViolations::new();
    let source_partner_id = optional_uuid(&format!("{field}.source_partner_id"), wire.source_partner_id, &mut source);
    let source_ok = source.is_empty();
    violations.absorb(source, str::to_string);
    let kind = kind_from_proto(wire.kind);
    if kind.is_none() {
        violations.add(format!("{field}.kind"), "must be DIRECT, SPLIT, OVERRIDE or MARGIN");
    }
    let amount = require_money(&format!("{field}.amount"), wire.amount, violations);
    let level = u32::try_from(wire.level).ok().filter(|level| *level <= max_level);
    if level.is_none() {
        violations.add(format!("{field}.level"), format!("must be between 0 and {max_level}"));
    }
    let clears_at = require_timestamp(&format!("{field}.clears_at"), wire.clears_at, violations);
    let breakdown = match wire.breakdown {
        None => Some(None),
        Some(breakdown) => breakdown_from_proto(&format!("{field}.breakdown"), breakdown, violations).map(Some),
    };
    if !source_ok {
        return None;
    }
    Some(Line {
        partner_id: partner_id?,
        kind: kind?,
        amount: amount?,
        level: level?,
        source_partner_id,
        clears_at: clears_at?,
        breakdown: breakdown?,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use accrue_money::Money;
    use accrue_types::{AgreementVersionId, PartnerId};

    use super::*;

    fn line() -> Line {
        Line {
            partner_id: PartnerId::from_u128(1),
            kind: EarningKind::Override,
            amount: Money::parse("GBP", "2.50").unwrap(),
            level: 2,
            source_partner_id: Some(PartnerId::from_u128(3)),
            clears_at: DateTime::from_timestamp(1_702_592_000, 0).unwrap(),
            breakdown: Some(Breakdown {
                model: "OVERRIDE_PERCENTAGE".into(),
                inputs: BTreeMap::from([("rate".to_string(), "0.05".to_string())]),
                agreement_version_id: Some(AgreementVersionId::from_u128(9)),
                ..Breakdown::default()
            }),
        }
    }

    #[test]
    fn every_kind_round_trips_and_unspecified_is_none() {
        for kind in EarningKind::ALL {
            assert_eq!(kind_from_proto(kind_to_proto(kind) as i32), Some(kind));
            assert_eq!(kind_to_proto(kind).as_str_name(), format!("EARNING_KIND_{}", kind.as_str()));
        }
        assert_eq!((kind_from_proto(0), kind_from_proto(99)), (None, None));
    }

    #[test]
    fn a_line_round_trips_through_both_wire_forms() {
        let mut violations = FieldViolations::new();
        let wire = settlement_line_to_proto(line());
        assert_eq!((wire.amount.as_ref().unwrap().amount.as_str(), wire.level), ("2.50", 2));
        assert_eq!(wire.breakdown.as_ref().unwrap().agreement_version_id, AgreementVersionId::from_u128(9).to_string());
        assert_eq!(settlement_line_from_proto("lines[0]", wire, &mut violations), Some(line()));

        let occurred_at = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let input = entry_input(line(), occurred_at);
        assert_eq!(input.source_partner_id, PartnerId::from_u128(3).to_string());
        assert_eq!(entry_input_to_line("p", input, 64, &mut violations), Some((line(), occurred_at)));

        let bare = Line { source_partner_id: None, breakdown: None, ..line() };
        let input = entry_input(bare.clone(), occurred_at);
        assert_eq!((input.source_partner_id.as_str(), input.breakdown.is_none()), ("", true));
        assert_eq!(entry_input_to_line("p", input, 64, &mut violations), Some((bare, occurred_at)));
        assert!(violations.is_empty());
    }

    #[test]
    fn every_problem_is_a_violation_at_its_path() {
        let mut input = entry_input(line(), DateTime::UNIX_EPOCH);
        input.partner_id = "nope".into();
        input.source_partner_id = "also nope".into();
        input.kind = 0;
        input.amount = Some(pb::Money { currency_code: "GBP".into(), amount: "1.001".into() });
        input.level = 65;
        input.occurred_at = None;
        input.clears_at = None;
        if let Some(breakdown) = input.breakdown.as_mut() {
            breakdown.agreement_version_id = "v1".into();
        }
        let mut violations = FieldViolations::new();
        assert_eq!(entry_input_to_line("postings[2].lines[1]", input, 64, &mut violations), None);
        let status = violations.into_status();
        for expected in [
            "postings[2].lines[1].partner_id",
            "postings[2].lines[1].source_partner_id",
            "postings[2].lines[1].kind: must be DIRECT, SPLIT, OVERRIDE or MARGIN",
            "postings[2].lines[1].amount.amount",
            "postings[2].lines[1].level: must be between 0 and 64",
            "postings[2].lines[1].occurred_at: is required",
            "postings[2].lines[1].clears_at: is required",
            "postings[2].lines[1].breakdown.agreement_version_id",
        ] {
            assert!(status.message().contains(expected), "{expected} missing from {}", status.message());
        }
    }

    #[test]
    fn a_bad_source_partner_alone_rejects_the_line() {
        let mut wire = settlement_line_to_proto(line());
        wire.source_partner_id = "x".into();
        let mut violations = FieldViolations::new();
        assert_eq!(settlement_line_from_proto("lines[0]", wire.clone(), &mut violations), None);
        assert!(violations.into_status().message().contains("lines[0].source_partner_id"));
        wire.level = -1;
        wire.source_partner_id = String::new();
        let mut violations = FieldViolations::new();
        assert_eq!(settlement_line_from_proto("lines[0]", wire.clone(), &mut violations), None);
        assert!(violations.into_status().message().contains("lines[0].level"));
    }
}
