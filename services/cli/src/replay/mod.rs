//! `accrue replay online-retail`: replays the UCI Online Retail data set
//! (DESIGN §7) into a running stack.
//!
//! - [`load`]: parse the line file and fold invoices (exact decimals).
//! - [`config`]: the seeded program configuration and the configuration file.
//! - [`refunds`]: credit invoices matched to the sales they refund.
//! - [`run`]: the gRPC calls ([`replay`]).
//! - [`summary`]: what it did.
//! - [`progress`]: bars and progress lines on stderr.

pub mod config;
pub mod load;
pub mod progress;
pub mod refunds;
pub mod run;
pub mod summary;

pub use progress::ProgressMode;
pub use run::{ReplayError, ReplayOptions, replay};
pub use summary::{CommissionTotals, MonthPayouts, Summary};
