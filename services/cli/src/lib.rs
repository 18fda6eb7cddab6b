//! The `accrue` command's library: the in-process stack launcher used by
//! `accrue dev`, the replay and the end-to-end tests; the throwaway Postgres
//! of `accrue dev`; the Online Retail replay and its client retries; and the
//! crash campaign (`accrue chaos`); the migration job (`accrue migrate`);
//! the first part of `accrue bench` (the Postgres baseline).

pub mod bench;
pub mod chaos;
pub mod clients;
pub mod migrate;
pub mod operator;
pub mod pg;
pub mod procs;
pub mod replay;
pub mod retry;
pub mod stack;
