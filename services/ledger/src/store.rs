//! sqlx access to the ledger schema.
