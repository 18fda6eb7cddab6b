//! Exact money for Accrue (DESIGN §4 "Money").
//!
//! Every amount is a [`rust_decimal::Decimal`] paired with an ISO 4217
//! [`Currency`]. Nothing here uses floats. Input amounts are parsed strictly
//! ([`Currency::parse_amount`]): more fractional digits than the currency's minor
//! unit is an error, never a silent rounding. Rounding happens in exactly one
//! place, [`Currency::round`], with a named [`RoundingMode`]. Splitting an amount
//! into parts is [`allocate_largest_remainder`], whose parts always sum to the
//! whole.

mod allocate;
mod currency;

pub use allocate::{AllocationError, allocate_largest_remainder};
pub use currency::{Currency, Money, MoneyError, RoundingMode};
pub use rust_decimal::Decimal;
