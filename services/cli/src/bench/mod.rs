//! `accrue bench` (issue 15 item 1), built in parts: so far the Postgres
//! limit it compares Accrue with ([`baseline`]). The synthetic gRPC
//! workload, the open-loop latency run, per-process peak RSS and the scaling
//! runs are still to come, and so is the subcommand itself.

pub mod baseline;
