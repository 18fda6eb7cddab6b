//! Wire conversions with field-aware validation; a settlement line and its
//! breakdown in [`settlement`].

use std::str::FromStr;

use accrue_money::{Currency, Money};
use accrue_proto::types::v1 as pb;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use crate::FieldViolations;

pub mod settlement;

/// Parses a required id field (any typed id of `accrue_types::id`, or a bare
/// `Uuid`); records a violation and returns `None` when it is empty or
/// malformed. The one place a request's id text becomes an id.
pub fn require_uuid<T: FromStr>(field: &str, value: &str, violations: &mut FieldViolations) -> Option<T> {
    if value.is_empty() {
        violations.add(field, "is required");
        return None;
    }
    match value.parse() {
        Ok(id) => Some(id),
        Err(_) => {
            violations.add(field, format!("{value:?} is not a UUID"));
            None
        }
    }
}

/// Parses an optional id field (empty → `None` with no violation).
pub fn optional_uuid<T: FromStr>(field: &str, value: &str, violations: &mut FieldViolations) -> Option<T> {
    if value.is_empty() { None } else { require_uuid(field, value, violations) }
}

/// Parses an id for a Get: malformed ids are NOT_FOUND-equivalent
/// INVALID_ARGUMENT on `field`.
pub fn parse_id<T: FromStr>(field: &str, value: &str) -> Result<T, tonic::Status> {
    let mut violations = FieldViolations::new();
    let id = require_uuid(field, value, &mut violations);
    violations.into_result()?;
    id.ok_or_else(|| crate::error::invalid_field(field, "is required"))
}

/// Parses a required `Money` field strictly (currency known, decimals within
/// the minor unit).
pub fn require_money(field: &str, value: Option<&pb::Money>, violations: &mut FieldViolations) -> Option<Money> {
    match value {
        None => {
            violations.add(field, "is required");
            None
        }
        Some(money) => parse_money(field, money, violations),
    }
}

/// Parses an optional `Money` field (absent, or empty amount → `None`).
pub fn optional_money(field: &str, value: Option<&pb::Money>, violations: &mut FieldViolations) -> Option<Money> {
    match value {
        Some(money) if !(money.amount.is_empty() && money.currency_code.is_empty()) => {
            parse_money(field, money, violations)
        }
        _ => None,
    }
}

fn parse_money(field: &str, money: &pb::Money, violations: &mut FieldViolations) -> Option<Money> {
    let currency = match Currency::from_code(&money.currency_code) {
        Ok(currency) => currency,
        Err(error) => {
            violations.add(format!("{field}.currency_code"), error.to_string());
            return None;
        }
    };
    match currency.parse_amount(&money.amount) {
        Ok(amount) => Some(Money { amount, currency }),
        Err(error) => {
            violations.add(format!("{field}.amount"), error.to_string());
            None
        }
    }
}

/// Parses a rate given as a decimal string in [0, 1].
pub fn parse_rate(field: &str, value: &str, violations: &mut FieldViolations) -> Option<Decimal> {
    match value.trim().parse::<Decimal>() {
        Ok(rate) if rate >= Decimal::ZERO && rate <= Decimal::ONE && !value.contains(['e', 'E']) => {
            Some(rate.normalize())
        }
        Ok(_) => {
            violations.add(field, format!("rate {value:?} must be between 0 and 1"));
            None
        }
        Err(_) => {
            violations.add(field, format!("{value:?} is not a decimal rate (e.g. \"0.10\" for 10%)"));
            None
        }
    }
}

/// Encodes money for the wire.
pub fn money_to_proto(money: Money) -> pb::Money {
    pb::Money { currency_code: money.currency.code().to_string(), amount: money.amount_string() }
}

/// Encodes an amount in a currency for the wire.
pub fn amount_to_proto(currency: Currency, amount: Decimal) -> pb::Money {
    money_to_proto(Money { amount: currency.rescale(amount), currency })
}

/// Converts a timestamp to the wire.
pub fn timestamp(time: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: time.timestamp(), nanos: time.timestamp_subsec_nanos() as i32 }
}

/// Converts an optional wire timestamp; records a violation when out of range.
pub fn from_timestamp(
    field: &str,
    value: Option<&prost_types::Timestamp>,
    violations: &mut FieldViolations,
) -> Option<DateTime<Utc>> {
    let ts = value?;
    let nanos = u32::try_from(ts.nanos).ok();
    match nanos.and_then(|nanos| DateTime::from_timestamp(ts.seconds, nanos)) {
        Some(time) => Some(time),
        None => {
            violations.add(field, "is not a valid timestamp");
            None
        }
    }
}

/// Converts a required wire timestamp.
pub fn require_timestamp(
    field: &str,
    value: Option<&prost_types::Timestamp>,
    violations: &mut FieldViolations,
) -> Option<DateTime<Utc>> {
    if value.is_none() {
        violations.add(field, "is required");
        return None;
    }
    from_timestamp(field, value, violations)
}
