//! The `accrue` command's library: the in-process stack launcher used by
//! `accrue dev`, the replay and the end-to-end tests; the throwaway Postgres
//! of `accrue dev`; and the Online Retail replay.

pub mod clients;
pub mod operator;
pub mod pg;
pub mod replay;
pub mod stack;
