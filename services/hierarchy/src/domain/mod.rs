//! Pure hierarchy rules (no I/O): input validation for programs and partners,
//! partner statuses, and the tree rules of seed 004 — cycle guard, depth cap,
//! role ranking and the ancestor-path rewrite of a moved subtree.

pub mod partner;
pub mod program;
pub mod tree;

pub use partner::{
    NewPartner, PartnerStatus, check_role_on_ladder, check_status_change, status_from_proto, status_to_proto,
    validate_new_partner,
};
pub use program::{ProgramSpec, validate_new_program};
pub use tree::{Placement, TreeError};
