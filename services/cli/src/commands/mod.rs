//! The `accrue` subcommands, one file each: their flags and what they run.

pub(crate) mod admin;
pub(crate) mod bench;
pub(crate) mod chaos;
pub(crate) mod payouts;
pub(crate) mod stack;
