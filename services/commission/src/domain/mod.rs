//! Pure commission rules (DESIGN §4), one module per rule: the agreement and
//! override-plan models ([`rules`]), the version in force ([`agreements`]),
//! base commission C ([`base`]), link splits ([`splits`], seed 000), upline
//! overrides ([`overrides`], seed 004), scheme trees ([`scheme`]) and their
//! margins ([`margins`], seed 002), put together by [`settle`]. The types they
//! share are [`sale`]'s. No I/O; every function here is deterministic and
//! unit-tested without a database.

pub mod agreements;
pub mod base;
pub mod margins;
mod money_serde;
pub mod overrides;
pub mod rules;
pub mod sale;
pub mod scheme;
pub mod settle;
pub mod splits;
#[cfg(test)]
mod tests;

pub use agreements::*;
pub use base::*;
pub use margins::*;
pub use overrides::*;
pub use rules::*;
pub use sale::*;
pub use scheme::*;
pub use settle::*;
pub use splits::*;
