//! Pure attribution rules (no I/O): link and split validation, sale and
//! refund input validation and request hashing, and sale and refund states.

pub(crate) mod link;
pub(crate) mod refund;
pub(crate) mod sale;
pub(crate) mod settings;
pub(crate) mod simulation;
pub(crate) mod state;
pub(crate) mod touch;
