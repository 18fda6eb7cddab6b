//! Pure ledger rules.
