//! The plumbing every Accrue service shares, so that each service crate holds
//! only its API, domain and store:
//!
//! - [`service`]: the scaffold every service implements ([`service::Service`]):
//!   flags and environment, pool, routes, background tasks, `main`.
//! - [`layers`]: the tower layers every server runs behind (a span per RPC).
//! - [`server`]: host a tonic service with `grpc.health.v1` (NOT_SERVING while
//!   the database is unreachable), reflection v1 and v1alpha, and graceful
//!   shutdown.
//! - [`db`]: a Postgres pool whose `search_path` is the service's own schema,
//!   and migrations kept in that schema.
//! - [`error`]: `tonic::Status` builders with google.rpc details
//!   (BadRequest field violations, ErrorInfo).
//! - [`convert`]: ids, timestamps and `accrue.type.v1.Money` to and from the wire;
//!   a settlement line and its breakdown ([`convert::settlement`]).
//! - [`page`]: opaque keyset page tokens.
//! - [`events`]: the transactional outbox, its sequencer and the event feed
//!   (`accrue.events.v1.EventService`) every service hosts.
//! - [`idempotency`]: request ids and the answer to a repeated one.
//! - [`client`]: clients of the services, with the message limits set once.
//! - [`telemetry`]: logs (text or JSON lines), OTLP traces and W3C trace
//!   context across calls; [`scrape`]: Prometheus metrics over HTTP.
//! - [`shutdown`].

pub mod auth;
pub mod client;
pub mod convert;
pub mod db;
pub mod error;
pub mod events;
pub mod idempotency;
pub mod layers;
pub mod page;
pub mod scrape;
pub mod server;
pub mod service;
pub mod shutdown;
pub mod telemetry;

pub use error::{FieldViolations, internal};
