//! sqlx access to the commission schema.
