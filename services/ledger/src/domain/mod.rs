//! Pure ledger rules (no I/O): the entry state machine (seed 003, DESIGN §5),
//! posting validation and request hashing, and payout reservation decisions.

pub mod posting;
pub mod reserve;
pub mod status;
