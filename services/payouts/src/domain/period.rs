//! Payout periods: calendar months in UTC, written "YYYY-MM".

use std::fmt;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};

/// Why a period label was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeriodError {
    /// Not of the form "YYYY-MM".
    #[error("period {0:?} is not of the form YYYY-MM (e.g. \"2011-01\")")]
    Format(String),
    /// The month is not 01..=12 or the year is out of range.
    #[error("period {0:?} is not a calendar month between 1970-01 and 9999-12")]
    Range(String),
}

/// A required "YYYY-MM" request field; a malformed one is a violation on
/// `field` (INVALID_ARGUMENT once collected).
pub fn period_field(field: &str, value: &str, violations: &mut accrue_kit::FieldViolations) -> Option<Period> {
    match Period::parse(value) {
        Ok(period) => Some(period),
        Err(error) => {
            violations.add(field, error.to_string());
            None
        }
    }
}

/// A calendar month (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Period {
    year: i32,
    month: u32,
}

impl Period {
    /// Parses "YYYY-MM" (four-digit year 1970..=9999, two-digit month 01..=12).
    ///
    /// Errors: [`PeriodError`].
    pub fn parse(text: &str) -> Result<Self, PeriodError> {
        let bytes = text.as_bytes();
        let well_formed =
            bytes.len() == 7 && bytes[4] == b'-' && bytes.iter().enumerate().all(|(i, b)| i == 4 || b.is_ascii_digit());
        if !well_formed {
            return Err(PeriodError::Format(text.to_string()));
        }
        let year: i32 = text[..4].parse().map_err(|_| PeriodError::Format(text.to_string()))?;
        let month: u32 = text[5..].parse().map_err(|_| PeriodError::Format(text.to_string()))?;
        if !(1970..=9999).contains(&year) || !(1..=12).contains(&month) {
            return Err(PeriodError::Range(text.to_string()));
        }
        Ok(Period { year, month })
    }

    /// The first instant of the month (00:00:00 UTC on the 1st).
    pub fn start(self) -> DateTime<Utc> {
        month_start(self.year, self.month)
    }

    /// The default payable cutoff: the last instant of the month, i.e. the
    /// next month's start minus one microsecond (Postgres' resolution).
    pub fn default_cutoff(self) -> DateTime<Utc> {
        let (year, month) = if self.month == 12 { (self.year + 1, 1) } else { (self.year, self.month + 1) };
        month_start(year, month) - TimeDelta::microseconds(1)
    }
}

fn month_start(year: i32, month: u32) -> DateTime<Utc> {
    // Year and month are range-checked by `parse` (year ≤ 10000 here), so
    // the date exists; fall back to the epoch rather than panic.
    NaiveDate::from_ymd_opt(year, month, 1)
        .and_then(|date| date.and_hms_opt(0, 0, 0))
        .map(|naive| naive.and_utc())
        .unwrap_or(DateTime::UNIX_EPOCH)
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let period = Period::parse("2011-01").unwrap();
        assert_eq!(period.to_string(), "2011-01");
        assert_eq!(period.start().to_rfc3339(), "2011-01-01T00:00:00+00:00");
    }

    #[test]
    fn default_cutoff_is_the_last_microsecond_of_the_month() {
        let cutoff = Period::parse("2011-02").unwrap().default_cutoff();
        assert_eq!(cutoff.to_rfc3339(), "2011-02-28T23:59:59.999999+00:00");
        let december = Period::parse("2011-12").unwrap().default_cutoff();
        assert_eq!(december.to_rfc3339(), "2011-12-31T23:59:59.999999+00:00");
        let leap = Period::parse("2012-02").unwrap().default_cutoff();
        assert_eq!(leap.to_rfc3339(), "2012-02-29T23:59:59.999999+00:00");
    }

    #[test]
    fn rejects_malformed_labels() {
        for bad in ["", "2011-1", "2011/01", "11-01", "2011-01-01", "abcd-ef", "2011-+1"] {
            assert!(matches!(Period::parse(bad), Err(PeriodError::Format(_))), "{bad}");
        }
        for bad in ["2011-00", "2011-13", "1969-12"] {
            assert!(matches!(Period::parse(bad), Err(PeriodError::Range(_))), "{bad}");
        }
        assert!(Period::parse("9999-12").is_ok());
    }
}
