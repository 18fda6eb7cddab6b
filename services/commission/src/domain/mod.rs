//! Pure commission rules (DESIGN §4): the agreement and override-plan models
//! ([`rules`]), scheme trees and margins ([`scheme`], seed 002) and the
//! settlement of a sale ([`settle`]). No I/O; every function here is
//! deterministic and unit-tested without a database.

mod money_serde;
pub mod rules;
pub mod scheme;
pub mod settle;
#[cfg(test)]
mod tests;

pub use rules::*;
pub use scheme::*;
pub use settle::*;
