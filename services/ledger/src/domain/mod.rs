//! Pure ledger rules (no I/O): the entry state machine (seed 003, DESIGN §5),
//! posting validation and request hashing, payout reservation decisions, and
//! the clawback of refunds with its undo (DESIGN §4 "Refunds").

pub mod posting;
pub mod reserve;
pub mod reversal;
pub mod status;
