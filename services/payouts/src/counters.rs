//! The payouts' business metrics (the `metrics` crate; free without a
//! recorder; served by [`accrue_kit::scrape`]), counted once the change
//! committed:
//!
//! - `accrue_payouts_total{service, status, currency}`: payouts entering
//!   each status (`PENDING_APPROVAL` when a run or CreatePayout creates
//!   them, then `APPROVED`, `REJECTED`, `PROCESSING`, `PAID`, `FAILED`,
//!   `DELETED`; a notes update enters none);
//! - `accrue_payout_amount_total{service, status, currency}`: their amounts,
//!   in **minor units** of the currency (cents for USD, yen for JPY), as an
//!   exact integer counter; divide by 10^exponent for major units.

use rust_decimal::Decimal;

use crate::domain::PayoutStatus;

/// The `service` label of the payouts' series.
const SERVICE: &str = "payouts";

/// Counts payouts (their amounts, in `currency`) entering `status`.
pub(crate) fn payouts_entered(status: PayoutStatus, currency: &str, amounts: impl IntoIterator<Item = Decimal>) {
    let minor = accrue_money::Currency::from_code(currency).ok();
    let (mut count, mut units) = (0u64, 0u64);
    for amount in amounts {
        count += 1;
        // A payout amount is positive and exact in its currency; anything
        // else (never stored) would not be a count of minor units.
        let in_minor = minor.and_then(|c| c.to_minor_units(amount)).and_then(|u| u64::try_from(u).ok());
        units = units.saturating_add(in_minor.unwrap_or(0));
    }
    if count == 0 {
        return;
    }
    let labels =
        [("service", SERVICE.to_string()), ("status", status.as_str().to_string()), ("currency", currency.to_string())];
    metrics::counter!("accrue_payouts_total", &labels).increment(count);
    metrics::counter!("accrue_payout_amount_total", &labels).increment(units);
}
