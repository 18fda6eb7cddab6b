//! Pure payouts rules (no I/O): payout periods and their default cutoff,
//! payout states, the run and manual payout requests' validation, the minimum a run applies,
//! deterministic payout ids, the carried-forward tally, and the payout state
//! machine with its ledger effects and maker-checker rule (seed 001, DESIGN §5).

pub mod manual;
pub mod period;
pub mod run;
pub mod status;
pub mod transition;

pub use manual::{MAX_TEXT_CHARS, ManualRequest, manual_payout_id, validate_manual_request};
pub use period::Period;
pub use run::{
    CarriedForward, HOLD_MINIMUM, PartnerRule, RunRequest, partner_rule, payout_id, resolve_minimum,
    validate_run_request,
};
pub use status::PayoutStatus;
pub use transition::{InvalidTransition, LedgerEffect, SameApprover, check_approver, plan};
