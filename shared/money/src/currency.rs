use std::fmt;
use std::str::FromStr;

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

/// Why an amount or currency was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// The currency code is not an active ISO 4217 code.
    #[error("unknown currency code {0:?} (expected an ISO 4217 code such as GBP)")]
    UnknownCurrency(String),
    /// The amount is not a plain decimal number.
    #[error("amount {0:?} is not a decimal number (expected e.g. \"12.34\")")]
    NotADecimal(String),
    /// The amount has more fractional digits than the currency allows.
    #[error("amount {amount:?} has more than {minor_unit} decimal places, the minor unit of {currency}")]
    TooManyDecimals {
        /// The amount as given.
        amount: String,
        /// The currency.
        currency: String,
        /// Its minor unit (decimal places).
        minor_unit: u32,
    },
}

/// How a computed amount is rounded to the currency's minor unit (DESIGN §4:
/// default half away from zero; half-even selectable per program).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RoundingMode {
    /// 0.005 → 0.01 and −0.005 → −0.01.
    #[default]
    HalfAwayFromZero,
    /// Banker's rounding: 0.005 → 0.00, 0.015 → 0.02.
    HalfEven,
}

impl RoundingMode {
    fn strategy(self) -> RoundingStrategy {
        match self {
            RoundingMode::HalfAwayFromZero => RoundingStrategy::MidpointAwayFromZero,
            RoundingMode::HalfEven => RoundingStrategy::MidpointNearestEven,
        }
    }

    /// The mode's name as it appears in breakdowns ("HALF_AWAY_FROM_ZERO").
    pub fn as_str(self) -> &'static str {
        match self {
            RoundingMode::HalfAwayFromZero => "HALF_AWAY_FROM_ZERO",
            RoundingMode::HalfEven => "HALF_EVEN",
        }
    }
}

/// An ISO 4217 currency with its minor unit (decimal places), from the
/// `iso_currency` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency(iso_currency::Currency);

impl Currency {
    /// Looks up an upper-case ISO 4217 code ("GBP"). Errors with
    /// [`MoneyError::UnknownCurrency`] for anything else.
    pub fn from_code(code: &str) -> Result<Self, MoneyError> {
        iso_currency::Currency::from_code(code)
            .filter(|c| c.exponent().is_some())
            .map(Currency)
            .ok_or_else(|| MoneyError::UnknownCurrency(code.to_string()))
    }

    /// The three-letter code.
    pub fn code(self) -> &'static str {
        self.0.code()
    }

    /// Decimal places of the minor unit (USD 2, JPY 0, BHD 3).
    pub fn minor_unit(self) -> u32 {
        u32::from(self.0.exponent().unwrap_or(0))
    }

    /// Parses an input amount strictly: a plain decimal ("12.30", "-4", "0.5"),
    /// no exponent, no more fractional digits than the minor unit. The result
    /// is rescaled to exactly the minor unit ("12.3" → 12.30 for GBP).
    pub fn parse_amount(self, text: &str) -> Result<Decimal, MoneyError> {
        let trimmed = text.trim();
        let plain = !trimmed.is_empty()
            && trimmed
                .chars()
                .enumerate()
                .all(|(i, c)| c.is_ascii_digit() || c == '.' || (i == 0 && (c == '-' || c == '+')));
        if !plain {
            return Err(MoneyError::NotADecimal(text.to_string()));
        }
        let value = Decimal::from_str(trimmed).map_err(|_| MoneyError::NotADecimal(text.to_string()))?;
        let value = value.normalize();
        if value.scale() > self.minor_unit() {
            return Err(MoneyError::TooManyDecimals {
                amount: text.to_string(),
                currency: self.code().to_string(),
                minor_unit: self.minor_unit(),
            });
        }
        Ok(self.rescale(value))
    }

    /// Rounds a computed amount to the minor unit with the named mode. This is
    /// the one rounding call every line amount goes through.
    pub fn round(self, value: Decimal, mode: RoundingMode) -> Decimal {
        let mut rounded = value.round_dp_with_strategy(self.minor_unit(), mode.strategy());
        rounded.rescale(self.minor_unit());
        rounded
    }

    /// Whether `value` is already exact in the minor unit.
    pub fn is_exact(self, value: Decimal) -> bool {
        value.normalize().scale() <= self.minor_unit()
    }

    /// `value` written with exactly the minor unit's decimals (no rounding:
    /// callers pass exact values).
    pub fn rescale(self, mut value: Decimal) -> Decimal {
        value.rescale(self.minor_unit());
        value
    }

    /// Converts an exact amount to an integer count of minor units.
    pub fn to_minor_units(self, value: Decimal) -> Option<i128> {
        if !self.is_exact(value) {
            return None;
        }
        Some(self.rescale(value).mantissa())
    }

    /// Converts a count of minor units back to an amount.
    pub fn from_minor_units(self, units: i128) -> Option<Decimal> {
        Decimal::try_from_i128_with_scale(units, self.minor_unit()).ok()
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// An exact amount in one currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Money {
    /// The amount in major units, scaled to the currency's minor unit.
    pub amount: Decimal,
    /// Its currency.
    pub currency: Currency,
}

impl Money {
    /// Parses a currency code and a strict decimal amount (see
    /// [`Currency::parse_amount`]).
    pub fn parse(currency_code: &str, amount: &str) -> Result<Self, MoneyError> {
        let currency = Currency::from_code(currency_code)?;
        Ok(Money { amount: currency.parse_amount(amount)?, currency })
    }

    /// Zero in `currency`.
    pub fn zero(currency: Currency) -> Self {
        Money { amount: currency.rescale(Decimal::ZERO), currency }
    }

    /// The amount as a decimal string with exactly the minor unit's decimals.
    pub fn amount_string(&self) -> String {
        self.currency.rescale(self.amount).to_string()
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount_string(), self.currency.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn parses_within_minor_unit_and_rescales() {
        let gbp = Currency::from_code("GBP").unwrap();
        assert_eq!(gbp.parse_amount("12.3").unwrap().to_string(), "12.30");
        assert_eq!(gbp.parse_amount("100").unwrap().to_string(), "100.00");
        assert_eq!(gbp.parse_amount("1.2300").unwrap().to_string(), "1.23");
    }

    #[test]
    fn rejects_too_many_decimals_and_junk() {
        let gbp = Currency::from_code("GBP").unwrap();
        assert!(matches!(gbp.parse_amount("1.234"), Err(MoneyError::TooManyDecimals { .. })));
        let jpy = Currency::from_code("JPY").unwrap();
        assert!(matches!(jpy.parse_amount("1.5"), Err(MoneyError::TooManyDecimals { .. })));
        let bhd = Currency::from_code("BHD").unwrap();
        assert_eq!(bhd.parse_amount("1.234").unwrap(), dec!(1.234));
        for junk in ["", "1e3", "NaN", "1,00", "--1", " "] {
            assert!(matches!(gbp.parse_amount(junk), Err(MoneyError::NotADecimal(_))), "{junk}");
        }
        assert!(Currency::from_code("XXQ").is_err());
        assert!(Currency::from_code("gbp").is_err());
    }

    #[test]
    fn rounding_modes() {
        let gbp = Currency::from_code("GBP").unwrap();
        assert_eq!(gbp.round(dec!(0.005), RoundingMode::HalfAwayFromZero), dec!(0.01));
        assert_eq!(gbp.round(dec!(-0.005), RoundingMode::HalfAwayFromZero), dec!(-0.01));
        assert_eq!(gbp.round(dec!(0.005), RoundingMode::HalfEven), dec!(0.00));
        assert_eq!(gbp.round(dec!(0.015), RoundingMode::HalfEven), dec!(0.02));
        let jpy = Currency::from_code("JPY").unwrap();
        assert_eq!(jpy.round(dec!(12.5), RoundingMode::HalfAwayFromZero), dec!(13));
    }

    #[test]
    fn minor_units_round_trip() {
        let gbp = Currency::from_code("GBP").unwrap();
        assert_eq!(gbp.to_minor_units(dec!(12.34)), Some(1234));
        assert_eq!(gbp.to_minor_units(dec!(-0.01)), Some(-1));
        assert_eq!(gbp.to_minor_units(dec!(0.001)), None);
        assert_eq!(gbp.from_minor_units(1234), Some(dec!(12.34)));
    }
}
