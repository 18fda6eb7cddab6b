//! The end-to-end tests, one binary (one link step, one process) with a
//! module per area: the five real services over real gRPC on a fresh Postgres
//! database per test.

mod agreements;
mod auth;
mod clawback;
mod corrections;
mod events;
mod fuzz;
mod hostile_input;
mod margins;
mod migrations;
mod operator;
mod paging;
mod partner_scope;
mod qualified;
mod recording;
mod refunds;
mod replay;
mod roles;
mod saga;
mod simulate;
mod tenancy;
mod touches;
mod webhooks;
mod wire;
mod world;
