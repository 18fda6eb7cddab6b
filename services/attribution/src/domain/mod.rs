//! Pure attribution rules (no I/O): link and split validation, sale input
//! validation and request hashing, states, and the saga retry backoff.

pub(crate) mod link;
pub(crate) mod retry;
pub(crate) mod sale;
pub(crate) mod settings;
pub(crate) mod state;
