//! The `accrue` command's library: the in-process stack launcher used by
//! `accrue dev`, the replay and the end-to-end tests.

pub mod stack;
