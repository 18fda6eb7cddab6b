//! A settlement line and its breakdown (DESIGN §4, §5): one Rust type from
//! the commission calculation, through the SettleSale saga's log, to the
//! ledger's entry row. The wire forms are `accrue.commission.v1.SettlementLine`,
//! `accrue.ledger.v1.EntryInput` and `accrue.type.v1.CommissionBreakdown`; the
//! one place they are converted is `accrue_kit::convert::settlement`.
//!
//! Serialized (feature `serde`) in the shapes already stored: a [`Breakdown`]
//! as the ledger's `entries.breakdown` jsonb (`agreement_version_id` "" when
//! none), a [`Line`] as the saga's compute output, whose older logs named the
//! kind by its proto value name ("EARNING_KIND_DIRECT") and still read back.

use std::collections::BTreeMap;

use accrue_money::Money;
use chrono::{DateTime, Utc};

use crate::id::{AgreementVersionId, PartnerId};

/// What a line pays for (DESIGN §4). Stored (the ledger's `entries.kind`)
/// and serialized by [`EarningKind::as_str`]; the wire form is
/// `accrue.type.v1.EarningKind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum EarningKind {
    /// The link owner's (seller's) share of the base commission C.
    #[cfg_attr(feature = "serde", serde(rename = "DIRECT", alias = "EARNING_KIND_DIRECT"))]
    Direct,
    /// A split partner's share of C (seed 000).
    #[cfg_attr(feature = "serde", serde(rename = "SPLIT", alias = "EARNING_KIND_SPLIT"))]
    Split,
    /// An upline's override on a downline's sale (seed 004).
    #[cfg_attr(feature = "serde", serde(rename = "OVERRIDE", alias = "EARNING_KIND_OVERRIDE"))]
    Override,
    /// A scheme margin: a partner's role's absolute rate minus that of the
    /// partner just below it (seed 002).
    #[cfg_attr(feature = "serde", serde(rename = "MARGIN", alias = "EARNING_KIND_MARGIN"))]
    Margin,
}

impl EarningKind {
    /// Every kind, in wire-number order.
    pub const ALL: [EarningKind; 4] =
        [EarningKind::Direct, EarningKind::Split, EarningKind::Override, EarningKind::Margin];

    /// The stored name ("DIRECT"): the proto value name without its
    /// `EARNING_KIND_` prefix.
    pub fn as_str(self) -> &'static str {
        match self {
            EarningKind::Direct => "DIRECT",
            EarningKind::Split => "SPLIT",
            EarningKind::Override => "OVERRIDE",
            EarningKind::Margin => "MARGIN",
        }
    }

    /// Parses a name written by [`EarningKind::as_str`]; case-sensitive.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }
}

/// Why a line (or a sale's base commission) earned what it earned: the audit
/// trail stored with every ledger entry. Every field may be empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default))]
pub struct Breakdown {
    /// PERCENTAGE, FIXED, TIERED, HYBRID (C, and the DIRECT/SPLIT shares of C),
    /// NONE, SCHEME (base of a scheme-managed sale), OVERRIDE_PERCENTAGE,
    /// OVERRIDE_FLAT, MARGIN; the ledger's clawback debits say CLAWBACK.
    pub model: String,
    /// The formula with its numbers ("100.00 × 0.10 = 10.00").
    pub formula: String,
    /// Inputs by name (decimal strings for amounts and rates), in key order.
    pub inputs: BTreeMap<String, String>,
    /// Rule, tier or level chosen ("tier[1]", "level 2").
    pub rule: String,
    /// The agreement version C was computed under; stored and sent as "" when none.
    #[cfg_attr(feature = "serde", serde(with = "empty_is_none"))]
    pub agreement_version_id: Option<AgreementVersionId>,
    /// The rounding applied ("HALF_AWAY_FROM_ZERO to 2 dp: 3.335 → 3.34").
    pub rounding: String,
    /// Notes (why nothing was paid, why a share fell back), "; "-separated.
    pub note: String,
}

impl Breakdown {
    /// Records an input under `name` (replacing one of the same name).
    pub fn input(&mut self, name: &str, value: impl ToString) {
        self.inputs.insert(name.to_string(), value.to_string());
    }

    /// Appends a note, "; "-separated from those before it.
    pub fn add_note(&mut self, note: impl AsRef<str>) {
        if !self.note.is_empty() {
            self.note.push_str("; ");
        }
        self.note.push_str(note.as_ref());
    }
}

/// One line of a settlement, as commission computes it, the saga logs it and
/// the ledger stores it as an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "serde_line::LineJson", into = "serde_line::LineJson"))]
pub struct Line {
    /// Who earns it.
    pub partner_id: PartnerId,
    /// What for.
    pub kind: EarningKind,
    /// Exact in the currency's minor unit. Commission's lines are > 0; on a
    /// posting (`EntryInput`) a positive amount is a CREDIT and a negative one
    /// a DEBIT of its absolute value (DESIGN §5).
    pub amount: Money,
    /// OVERRIDE: level (1 = parent). MARGIN: position in the upline walk (0 =
    /// the seller, 1 = its parent, …). 0 for DIRECT and SPLIT.
    pub level: u32,
    /// The seller whose sale produced it; commission always names it, a
    /// posting may leave it out (the wire's empty string).
    pub source_partner_id: Option<PartnerId>,
    /// When it clears: the sale's `occurred_at` + the agreement's clearance days.
    pub clears_at: DateTime<Utc>,
    /// Why; commission always gives one, a posting may leave it out.
    pub breakdown: Option<Breakdown>,
}

/// An optional id as the string the ledger and the wire use: "" for `None`
/// (a JSON `null` or a missing field also reads as `None`).
#[cfg(feature = "serde")]
mod empty_is_none {
    use std::fmt::Display;
    use std::str::FromStr;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer, T: Display>(id: &Option<T>, serializer: S) -> Result<S::Ok, S::Error> {
        match id {
            Some(id) => serializer.collect_str(id),
            None => serializer.serialize_str(""),
        }
    }

    pub(super) fn deserialize<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: FromStr<Err: Display>,
    {
        match Option::<String>::deserialize(deserializer)?.as_deref() {
            None | Some("") => Ok(None),
            Some(text) => text.parse().map(Some).map_err(serde::de::Error::custom),
        }
    }
}

/// A [`Line`]'s JSON: the shape of the saga's compute log (money as a
/// currency code and a decimal string side by side).
#[cfg(feature = "serde")]
mod serde_line {
    use accrue_money::{Currency, Money};
    use chrono::{DateTime, Utc};
    use rust_decimal::Decimal;
    use serde::{Deserialize, Serialize};

    use super::{Breakdown, EarningKind, Line};
    use crate::id::PartnerId;

    #[derive(Serialize, Deserialize)]
    pub(super) struct LineJson {
        partner_id: PartnerId,
        kind: EarningKind,
        currency: String,
        amount: Decimal,
        level: u32,
        #[serde(default, with = "super::empty_is_none")]
        source_partner_id: Option<PartnerId>,
        clears_at: DateTime<Utc>,
        #[serde(default)]
        breakdown: Option<Breakdown>,
    }

    impl From<Line> for LineJson {
        fn from(line: Line) -> Self {
            LineJson {
                partner_id: line.partner_id,
                kind: line.kind,
                currency: line.amount.currency.code().to_string(),
                amount: line.amount.amount,
                level: line.level,
                source_partner_id: line.source_partner_id,
                clears_at: line.clears_at,
                breakdown: line.breakdown,
            }
        }
    }

    impl TryFrom<LineJson> for Line {
        type Error = accrue_money::MoneyError;

        fn try_from(json: LineJson) -> Result<Self, Self::Error> {
            Ok(Line {
                partner_id: json.partner_id,
                kind: json.kind,
                amount: Money { amount: json.amount, currency: Currency::from_code(&json.currency)? },
                level: json.level,
                source_partner_id: json.source_partner_id,
                clears_at: json.clears_at,
                breakdown: json.breakdown,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_round_trip() {
        for kind in EarningKind::ALL {
            assert_eq!(EarningKind::from_name(kind.as_str()), Some(kind));
        }
        assert_eq!(EarningKind::from_name("EARNING_KIND_DIRECT"), None);
        assert_eq!(EarningKind::from_name("direct"), None);
    }

    #[test]
    fn notes_are_semicolon_separated_and_inputs_replace() {
        let mut breakdown = Breakdown::default();
        breakdown.add_note("first");
        breakdown.add_note("second");
        breakdown.input("rate", "0.10");
        breakdown.input("rate", 0.2);
        assert_eq!(breakdown.note, "first; second");
        assert_eq!(breakdown.inputs["rate"], "0.2");
    }
}

/// The JSON shapes stored before these types were shared must read back.
#[cfg(all(test, feature = "serde"))]
mod serde_tests {
    use super::*;

    #[test]
    fn a_ledger_stored_breakdown_reads_back_and_writes_the_same_json() {
        let version = AgreementVersionId::from_u128(9);
        let stored = serde_json::json!({
            "model": "PERCENTAGE", "formula": "100.00 × 0.10 = 10.00", "inputs": {"a": "1", "rate": "0.10"},
            "rule": "", "agreement_version_id": version.to_string(), "rounding": "HALF_EVEN to 2 dp", "note": "",
        });
        let breakdown: Breakdown = serde_json::from_value(stored.clone()).unwrap();
        assert_eq!(breakdown.agreement_version_id, Some(version));
        assert_eq!(serde_json::to_value(&breakdown).unwrap(), stored);

        let clawback = serde_json::json!({"model": "CLAWBACK", "agreement_version_id": ""});
        let breakdown: Breakdown = serde_json::from_value(clawback).unwrap();
        assert_eq!((breakdown.model.as_str(), breakdown.agreement_version_id), ("CLAWBACK", None));
        assert_eq!(serde_json::to_value(&breakdown).unwrap()["agreement_version_id"], "");
        assert!(serde_json::from_value::<Breakdown>(serde_json::json!({"agreement_version_id": "v1"})).is_err());
    }

    #[test]
    fn an_old_compute_log_line_reads_back_and_new_ones_name_the_stored_kind() {
        let seller = PartnerId::from_u128(1);
        let old = serde_json::json!({
            "partner_id": seller.to_string(), "kind": "EARNING_KIND_OVERRIDE", "currency": "GBP", "amount": "5.00",
            "level": 2, "source_partner_id": "", "clears_at": "2024-02-01T00:00:00Z",
            "breakdown": {"model": "OVERRIDE_FLAT", "formula": "", "inputs": {}, "rule": "level 2",
                          "agreement_version_id": "", "rounding": "", "note": ""},
        });
        let line: Line = serde_json::from_value(old).unwrap();
        assert_eq!((line.kind, line.level, line.source_partner_id), (EarningKind::Override, 2, None));
        assert_eq!((line.amount.amount.to_string(), line.amount.currency.code()), ("5.00".to_string(), "GBP"));
        assert_eq!(line.breakdown.as_ref().map(|b| b.rule.as_str()), Some("level 2"));

        let new = serde_json::to_value(Line { source_partner_id: Some(seller), ..line.clone() }).unwrap();
        assert_eq!(
            (new["kind"].as_str(), new["source_partner_id"].as_str()),
            (Some("OVERRIDE"), Some(&*seller.to_string()))
        );
        assert_eq!(serde_json::from_value::<Line>(new).unwrap(), Line { source_partner_id: Some(seller), ..line });

        let bad_currency = serde_json::json!({
            "partner_id": seller.to_string(), "kind": "DIRECT", "currency": "XYZ", "amount": "1.00", "level": 0,
            "clears_at": "2024-02-01T00:00:00Z",
        });
        assert!(serde_json::from_value::<Line>(bad_currency).is_err());
    }
}
