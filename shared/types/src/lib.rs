//! Domain values more than one Accrue service relies on, so that each rule is
//! written once: the link split rule ([`split`], seed 000) and the program
//! defaults ([`program`], DESIGN §4). Pure and dependency-light on purpose:
//! every service crate may depend on it, it depends on no service.

pub mod program;
pub mod split;
