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

/// Seconds of 0001-01-01T00:00:00Z, the earliest google.protobuf.Timestamp.
const TIMESTAMP_MIN_SECONDS: i64 = -62_135_596_800;
/// Seconds of 9999-12-31T23:59:59Z, the latest google.protobuf.Timestamp.
const TIMESTAMP_MAX_SECONDS: i64 = 253_402_300_799;

/// Converts an optional wire timestamp. Every Accrue time field takes
/// google.protobuf.Timestamp's own range, 0001-01-01T00:00:00Z to
/// 9999-12-31T23:59:59.999999999Z with `nanos` in 0..1e9 (its definition in
/// timestamp.proto); outside it a violation is recorded, so nothing Postgres
/// cannot hold reaches a store. Event times are narrower: [`EventWindow`].
pub fn from_timestamp(
    field: &str,
    value: Option<&prost_types::Timestamp>,
    violations: &mut FieldViolations,
) -> Option<DateTime<Utc>> {
    let ts = value?;
    let in_range = (TIMESTAMP_MIN_SECONDS..=TIMESTAMP_MAX_SECONDS).contains(&ts.seconds);
    let nanos = u32::try_from(ts.nanos).ok().filter(|nanos| *nanos < 1_000_000_000);
    match nanos.filter(|_| in_range).and_then(|nanos| DateTime::from_timestamp(ts.seconds, nanos)) {
        Some(time) => Some(time),
        None => {
            violations.add(field, "is not a valid timestamp (0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z)");
            None
        }
    }
}

/// When a recorded event (a sale, a lead, a refund) may have happened:
/// not before the Unix epoch (1970-01-01T00:00:00Z; nothing this system
/// pays for is older) nor later than `now` plus the deployment's future
/// skew (clocks of callers drift; default [`DEFAULT_MAX_FUTURE_SKEW`]).
/// One window per request, so every event of a batch is judged alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventWindow {
    /// Latest accepted event time.
    pub latest: DateTime<Utc>,
}

/// How far in the future an event time may be by default: 24 hours.
pub const DEFAULT_MAX_FUTURE_SKEW: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

impl EventWindow {
    /// The window at `now` with `max_future_skew` (saturating: a skew too
    /// large for the calendar accepts up to the latest timestamp).
    pub fn at(now: DateTime<Utc>, max_future_skew: std::time::Duration) -> Self {
        let latest = chrono::Duration::from_std(max_future_skew)
            .ok()
            .and_then(|skew| now.checked_add_signed(skew))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        EventWindow { latest }
    }

    /// Records a violation on `field` when `time` is before 1970 or after
    /// [`EventWindow::latest`]; true when it is inside.
    pub fn check(&self, field: &str, time: DateTime<Utc>, violations: &mut FieldViolations) -> bool {
        if time < DateTime::UNIX_EPOCH {
            violations.add(field, "must not be before 1970-01-01T00:00:00Z");
            return false;
        }
        if time > self.latest {
            violations.add(
                field,
                format!(
                    "must not be after {} (now plus the allowed clock skew)",
                    self.latest.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                ),
            );
            return false;
        }
        true
    }

    /// [`require_timestamp`] inside the window.
    pub fn require(
        &self,
        field: &str,
        value: Option<&prost_types::Timestamp>,
        violations: &mut FieldViolations,
    ) -> Option<DateTime<Utc>> {
        require_timestamp(field, value, violations).filter(|time| self.check(field, *time, violations))
    }

    /// [`from_timestamp`] inside the window.
    pub fn optional(
        &self,
        field: &str,
        value: Option<&prost_types::Timestamp>,
        violations: &mut FieldViolations,
    ) -> Option<DateTime<Utc>> {
        from_timestamp(field, value, violations).filter(|time| self.check(field, *time, violations))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64, nanos: i32) -> Option<DateTime<Utc>> {
        from_timestamp("t", Some(&prost_types::Timestamp { seconds, nanos }), &mut FieldViolations::new())
    }

    #[test]
    fn a_timestamp_outside_protobufs_range_is_a_violation() {
        assert!(at(TIMESTAMP_MIN_SECONDS, 0).is_some());
        assert!(at(TIMESTAMP_MAX_SECONDS, 999_999_999).is_some());
        assert!(at(TIMESTAMP_MIN_SECONDS - 1, 0).is_none(), "1 BC");
        assert!(at(TIMESTAMP_MAX_SECONDS + 1, 0).is_none(), "year 10000");
        assert!(at(0, -1).is_none() && at(0, 1_000_000_000).is_none(), "nanos outside 0..1e9");
    }

    #[test]
    fn an_event_is_not_before_1970_nor_beyond_the_skew() {
        let now = DateTime::from_timestamp(1_750_000_000, 0).unwrap();
        let window = EventWindow::at(now, DEFAULT_MAX_FUTURE_SKEW);
        let mut violations = FieldViolations::new();
        assert!(window.check("t", DateTime::UNIX_EPOCH, &mut violations));
        assert!(window.check("t", now + chrono::Duration::hours(24), &mut violations));
        assert!(violations.into_result().is_ok());
        let mut violations = FieldViolations::new();
        assert!(!window.check("before", DateTime::UNIX_EPOCH - chrono::Duration::seconds(1), &mut violations));
        assert!(!window.check(
            "after",
            now + chrono::Duration::hours(24) + chrono::Duration::seconds(1),
            &mut violations
        ));
        let message = violations.into_status().message().to_string();
        assert!(
            message.contains("before: must not be before 1970") && message.contains("after: must not be after"),
            "{message}"
        );
        // A skew beyond the calendar saturates instead of overflowing.
        assert_eq!(EventWindow::at(now, std::time::Duration::MAX).latest, DateTime::<Utc>::MAX_UTC);
    }
}
