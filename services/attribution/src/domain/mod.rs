//! Pure attribution rules (no I/O): link and split validation, sale input
//! validation and request hashing, and sale states.

pub(crate) mod link;
pub(crate) mod sale;
pub(crate) mod settings;
pub(crate) mod state;
