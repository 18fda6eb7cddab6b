//! Validating one sale's posting and hashing its body for idempotency
//! (DESIGN §5; TigerBeetle / Formance: same key + same body → stored result,
//! same key + different body → ALREADY_EXISTS).

use std::collections::BTreeMap;

use accrue_kit::FieldViolations;
use accrue_kit::convert::settlement::entry_input_to_line;
use accrue_money::{Currency, Money};
use accrue_proto::ledger::v1 as pb;
use accrue_types::settlement::Line;
use chrono::{DateTime, Utc};
use prost::Message;
use rust_decimal::Decimal;
use sha2::{Digest, Sha256};

/// Longest idempotency key accepted (bytes): the one limit of every request id.
pub const MAX_KEY_LEN: usize = accrue_kit::idempotency::MAX_REQUEST_ID_BYTES;
/// Longest sale id accepted.
pub const MAX_SALE_ID_LEN: usize = 256;
/// Most lines in one posting.
pub const MAX_LINES: usize = 1000;
/// Highest override level accepted.
pub const MAX_LEVEL: u32 = 64;

/// CREDIT earns; DEBIT claws back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryType {
    /// Earning.
    Credit,
    /// Clawback.
    Debit,
}

impl EntryType {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryType::Credit => "CREDIT",
            EntryType::Debit => "DEBIT",
        }
    }

    /// Parses a stored name.
    pub fn parse(name: &str) -> Option<EntryType> {
        match name {
            "CREDIT" => Some(EntryType::Credit),
            "DEBIT" => Some(EntryType::Debit),
            _ => None,
        }
    }

    /// To the wire.
    pub fn to_proto(self) -> pb::EntryType {
        match self {
            EntryType::Credit => pb::EntryType::Credit,
            EntryType::Debit => pb::EntryType::Debit,
        }
    }
}

/// One validated line of a posting: the shared settlement [`Line`] as sent
/// (its amount signed: > 0 a CREDIT, < 0 a DEBIT) and when the sale occurred.
/// Its breakdown is stored as `entries.breakdown` (text: the shared
/// `Breakdown`'s JSON, `{}` when absent); its kind by `EarningKind::as_str`.
#[derive(Debug, Clone, PartialEq)]
pub struct PostedLine {
    /// The line.
    pub line: Line,
    /// When the sale occurred.
    pub occurred_at: DateTime<Utc>,
}

impl PostedLine {
    /// CREDIT for a positive amount, DEBIT for a negative one.
    pub fn entry_type(&self) -> EntryType {
        if self.line.amount.amount.is_sign_negative() { EntryType::Debit } else { EntryType::Credit }
    }

    /// The absolute amount (> 0), at the currency's minor unit: what the entry row holds.
    pub fn amount(&self) -> Decimal {
        self.line.amount.amount.abs()
    }

    /// The currency.
    pub fn currency(&self) -> Currency {
        self.line.amount.currency
    }
}

/// A validated posting with its request hash.
#[derive(Debug, Clone, PartialEq)]
pub struct Posting {
    /// Idempotency key.
    pub key: String,
    /// Sale id.
    pub sale_id: String,
    /// Lines, in request order.
    pub lines: Vec<PostedLine>,
    /// [`request_hash`] of the posting.
    pub hash: Vec<u8>,
}

/// Validates one posting; `prefix` names it in violations (`postings[3]`).
/// Rules: key and sale id non-empty and short; each line decodes by
/// `accrue_kit::convert::settlement::entry_input_to_line` (UUID `partner_id`,
/// and `source_partner_id` when set, a kind, a strict `Money` amount, level
/// 0..=64, `occurred_at` and `clears_at`, a breakdown's agreement version
/// empty or a UUID) and its amount is non-zero (positive → CREDIT, negative →
/// DEBIT of its absolute value); all lines share one currency. By value: the
/// lines' texts move into the decoded lines.
pub fn validate(mut posting: pb::SalePosting, prefix: &str) -> Result<Posting, FieldViolations> {
    let hash = request_hash(&mut posting);
    let mut violations = FieldViolations::new();
    let key = std::mem::take(&mut posting.idempotency_key);
    if key.trim().is_empty() {
        violations.add(format!("{prefix}.idempotency_key"), "is required");
    } else if key.len() > MAX_KEY_LEN {
        violations.add(format!("{prefix}.idempotency_key"), format!("is longer than {MAX_KEY_LEN} bytes"));
    }
    let sale_id = std::mem::take(&mut posting.sale_id);
    if sale_id.trim().is_empty() {
        violations.add(format!("{prefix}.sale_id"), "is required");
    } else if sale_id.len() > MAX_SALE_ID_LEN {
        violations.add(format!("{prefix}.sale_id"), format!("is longer than {MAX_SALE_ID_LEN} bytes"));
    }
    if posting.lines.len() > MAX_LINES {
        violations.add(format!("{prefix}.lines"), format!("has more than {MAX_LINES} lines"));
    }
    let mut lines = Vec::with_capacity(posting.lines.len());
    let mut posting_currency: Option<Currency> = None;
    for (index, input) in posting.lines.into_iter().enumerate() {
        let field = format!("{prefix}.lines[{index}]");
        // The amount's own rules apply whenever it parses, even on a line
        // with other faults, so that every violation is reported at once
        // (the decoder reports why it does not parse).
        let money = input.amount.as_ref().and_then(|money| Money::parse(&money.currency_code, &money.amount).ok());
        let decoded = entry_input_to_line(&field, input, MAX_LEVEL, &mut violations);
        if let Some(money) = money {
            if money.amount.is_zero() {
                violations.add(format!("{field}.amount.amount"), "must not be zero");
            }
            match posting_currency {
                None => posting_currency = Some(money.currency),
                Some(currency) if currency != money.currency => violations.add(
                    format!("{field}.amount.currency_code"),
                    format!("{} differs from the posting's currency {currency}", money.currency),
                ),
                Some(_) => {}
            }
        }
        if let Some((line, occurred_at)) = decoded {
            lines.push(PostedLine { line, occurred_at });
        }
    }
    if !violations.is_empty() {
        return Err(violations);
    }
    Ok(Posting { key, sale_id, lines, hash })
}

/// SHA-256 of the prost-encoded `SalePosting`, made deterministic: each
/// line's breakdown inputs are taken out before encoding and appended
/// afterwards in key order, each string length-prefixed (a format fixed when
/// protobuf maps still encoded in hash-map order; kept so that a posting
/// hashed then still matches). The inputs are taken out of the posting itself
/// rather than out of a copy of it, and put back before it returns; being a
/// `BTreeMap`, each is already in key order, so it moves out and back whole
/// (issue 15).
pub fn request_hash(posting: &mut pb::SalePosting) -> Vec<u8> {
    let inputs: Vec<BTreeMap<String, String>> = posting
        .lines
        .iter_mut()
        .map(|line| line.breakdown.as_mut().map(|b| std::mem::take(&mut b.inputs)).unwrap_or_default())
        .collect();
    let mut hasher = Sha256::new();
    hasher.update(posting.encode_to_vec());
    for (index, pairs) in inputs.iter().enumerate() {
        hasher.update((index as u64).to_be_bytes());
        hasher.update((pairs.len() as u64).to_be_bytes());
        for (key, value) in pairs {
            hasher.update((key.len() as u64).to_be_bytes());
            hasher.update(key.as_bytes());
            hasher.update((value.len() as u64).to_be_bytes());
            hasher.update(value.as_bytes());
        }
    }
    for (line, pairs) in posting.lines.iter_mut().zip(inputs) {
        if let Some(breakdown) = line.breakdown.as_mut() {
            breakdown.inputs = pairs;
        }
    }
    hasher.finalize().to_vec()
}

#[cfg(test)]
mod tests {
    use accrue_kit::convert::settlement::{breakdown_from_proto, breakdown_to_proto};
    use accrue_proto::types::v1 as types;
    use accrue_types::settlement::Breakdown;
    use uuid::Uuid;

    use super::*;

    fn ts(seconds: i64) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp { seconds, nanos: 0 })
    }

    fn line(amount: &str, currency: &str) -> pb::EntryInput {
        pb::EntryInput {
            partner_id: Uuid::from_u128(7).to_string(),
            kind: types::EarningKind::Direct as i32,
            amount: Some(types::Money { currency_code: currency.into(), amount: amount.into() }),
            level: 0,
            source_partner_id: String::new(),
            occurred_at: ts(1_700_000_000),
            clears_at: ts(1_702_592_000),
            breakdown: Some(types::CommissionBreakdown {
                model: "PERCENTAGE".into(),
                inputs: [("rate", "0.10"), ("amount", "100.00"), ("base", "x"), ("z", "y")]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..Default::default()
            }),
        }
    }

    fn posting(lines: Vec<pb::EntryInput>) -> pb::SalePosting {
        pb::SalePosting { idempotency_key: "saga:1:post".into(), sale_id: "sale-1".into(), lines }
    }

    #[test]
    fn valid_posting_parses_credit_and_debit() {
        let parsed = validate(posting(vec![line("10.00", "GBP"), line("-2.5", "GBP")]), "postings[0]").unwrap();
        assert_eq!(parsed.lines.len(), 2);
        assert_eq!(parsed.lines[0].entry_type(), EntryType::Credit);
        assert_eq!(parsed.lines[0].amount().to_string(), "10.00");
        assert_eq!(parsed.lines[1].entry_type(), EntryType::Debit);
        assert_eq!(parsed.lines[1].amount().to_string(), "2.50");
        assert_eq!(parsed.lines[0].line.breakdown.as_ref().unwrap().inputs.len(), 4);
    }

    #[test]
    fn empty_posting_is_valid() {
        assert!(validate(posting(vec![]), "p").unwrap().lines.is_empty());
    }

    #[test]
    fn every_violation_is_reported() {
        let mut bad = line("1.001", "GBP");
        bad.partner_id = "nope".into();
        bad.kind = 0;
        bad.clears_at = None;
        let mut other_currency = line("1.00", "USD");
        other_currency.level = -1;
        let zero = line("0", "GBP");
        let mut p = posting(vec![line("1.00", "GBP"), bad, other_currency, zero]);
        p.idempotency_key = " ".into();
        let status = validate(p, "postings[2]").unwrap_err().into_status();
        let message = status.message();
        for expected in [
            "postings[2].idempotency_key",
            "postings[2].lines[1].partner_id",
            "postings[2].lines[1].kind",
            "postings[2].lines[1].amount.amount",
            "postings[2].lines[1].clears_at",
            "postings[2].lines[2].amount.currency_code",
            "postings[2].lines[2].level",
            "postings[2].lines[3].amount.amount: must not be zero",
        ] {
            assert!(message.contains(expected), "{expected} missing from {message}");
        }
    }

    /// The hash as it was first defined: each line's inputs collected as
    /// pairs and sorted. Postings hashed by it must still match.
    fn hash_as_first_defined(posting: &pb::SalePosting) -> Vec<u8> {
        let mut bare = posting.clone();
        let mut inputs: Vec<Vec<(String, String)>> = Vec::new();
        for line in &mut bare.lines {
            let mut pairs: Vec<(String, String)> = match line.breakdown.as_mut() {
                Some(breakdown) => std::mem::take(&mut breakdown.inputs).into_iter().collect(),
                None => Vec::new(),
            };
            pairs.sort();
            inputs.push(pairs);
        }
        let mut hasher = Sha256::new();
        hasher.update(bare.encode_to_vec());
        for (index, pairs) in inputs.iter().enumerate() {
            hasher.update((index as u64).to_be_bytes());
            hasher.update((pairs.len() as u64).to_be_bytes());
            for (key, value) in pairs {
                for part in [key, value] {
                    hasher.update((part.len() as u64).to_be_bytes());
                    hasher.update(part.as_bytes());
                }
            }
        }
        hasher.finalize().to_vec()
    }

    #[test]
    fn the_hash_is_the_one_postings_were_stored_with() {
        let mut without = line("1.00", "GBP");
        without.breakdown = None;
        let mut posting = posting(vec![line("10.00", "GBP"), without, line("-2.5", "GBP")]);
        let expected = hash_as_first_defined(&posting);
        assert_eq!(request_hash(&mut posting), expected);
        let hex: String = expected.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex, "0df50c938fd8d93e01f8e8ec1ccd11070b6dc9c325c3a70c1e59bc8d3b1f1414",
            "the format itself does not drift"
        );
    }

    #[test]
    fn hash_is_deterministic_and_body_sensitive() {
        let mut a = posting(vec![line("10.00", "GBP")]);
        let before = a.clone();
        let hashes: Vec<_> = (0..20).map(|_| request_hash(&mut a)).collect();
        assert!(hashes.windows(2).all(|w| w[0] == w[1]));
        assert_eq!(a, before, "the inputs taken out for the hash are put back");
        let mut b = posting(vec![line("10.01", "GBP")]);
        assert_ne!(request_hash(&mut a), request_hash(&mut b));
        let mut c = a.clone();
        if let Some(breakdown) = c.lines[0].breakdown.as_mut() {
            breakdown.inputs.insert("rate".into(), "0.11".into());
        }
        assert_ne!(request_hash(&mut a), request_hash(&mut c));
        assert_eq!(request_hash(&mut a).len(), 32);
    }

    #[test]
    fn breakdown_round_trips() {
        let wire = line("1.00", "GBP").breakdown.unwrap();
        let decode = |wire| breakdown_from_proto("b", wire, &mut FieldViolations::new()).unwrap();
        assert_eq!(breakdown_to_proto(decode(wire.clone())), wire);
        let json = serde_json::to_value(decode(wire.clone())).unwrap();
        let back: Breakdown = serde_json::from_value(json).unwrap();
        assert_eq!(breakdown_to_proto(back), wire);
    }
}
