//! Pure hierarchy rules.
