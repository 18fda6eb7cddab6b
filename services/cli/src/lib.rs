//! The `accrue` command's library: the in-process stack launcher used by
//! `accrue dev`, the replay and the end-to-end tests; the throwaway Postgres
//! of `accrue dev`; the Online Retail replay and its client retries; the
//! service processes started from their binaries ([`procs`]), which the
//! crash campaign (`accrue chaos`) and the benchmark (`accrue bench`) run;
//! the migration job (`accrue migrate`).

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
