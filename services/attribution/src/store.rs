//! sqlx access to the attribution schema.
