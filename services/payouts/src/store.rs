//! sqlx access to the payouts schema.
