//! Pure commission rules.
