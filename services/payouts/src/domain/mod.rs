//! Pure payouts rules.
