//! Pure attribution rules.
