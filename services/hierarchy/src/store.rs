//! sqlx access to the hierarchy schema.
