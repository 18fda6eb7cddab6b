//! Hosts one Accrue gRPC service with health, reflection, the shared layer
//! stack ([`crate::layers`]) and graceful shutdown.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic_health::ServingStatus;

use crate::auth::Verifier;

/// Why a server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Reflection could not be built from the descriptor set.
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The transport failed.
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
}

mod incoming;

/// Most client connections a service holds open at once; more wait in the
/// listener's backlog (issue 11 item 3).
pub const MAX_CONNECTIONS: usize = 4096;
/// Most concurrent HTTP/2 streams (RPCs) per connection
/// (SETTINGS_MAX_CONCURRENT_STREAMS); a client over it waits for a stream.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 256;
/// How often an idle connection is pinged (HTTP/2 PING), and how long the
/// answer may take before the connection is closed: a peer that vanished
/// without a FIN (a killed pod, a dropped NAT entry) is noticed in under a
/// minute instead of holding its streams forever.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// See [`KEEPALIVE_INTERVAL`].
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// The health service's name; reflection advertises it beside the service's own.
const HEALTH_SERVICE: &str = "grpc.health.v1.Health";

/// How often the database is probed for the health status.
const HEALTH_PROBE_INTERVAL: Duration = Duration::from_secs(2);

/// Largest gRPC message a service accepts or sends (batch calls carry up to
/// 1000 sales with their facts).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// A generated Accrue `…ServiceServer` that [`routes`] can host.
pub trait Server: Sized {
    /// The server, accepting and sending messages up to [`MAX_MESSAGE_BYTES`].
    fn with_limits(self) -> Self;
}

macro_rules! limited_servers {
    ($($server:path),* $(,)?) => {$(
        impl<T> Server for $server {
            fn with_limits(self) -> Self {
                self.max_decoding_message_size(MAX_MESSAGE_BYTES).max_encoding_message_size(MAX_MESSAGE_BYTES)
            }
        }
    )*};
}

limited_servers!(
    accrue_proto::hierarchy::v1::hierarchy_service_server::HierarchyServiceServer<T>,
    accrue_proto::attribution::v1::attribution_service_server::AttributionServiceServer<T>,
    accrue_proto::commission::v1::commission_service_server::CommissionServiceServer<T>,
    accrue_proto::ledger::v1::ledger_service_server::LedgerServiceServer<T>,
    accrue_proto::payouts::v1::payout_service_server::PayoutServiceServer<T>,
);

/// The routes of one generated server, with the message limits set.
pub fn routes<S>(server: S) -> Routes
where
    S: Server
        + tower::Service<
            tonic::codegen::http::Request<tonic::body::Body>,
            Response = tonic::codegen::http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        > + tonic::server::NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    Routes::new(server.with_limits())
}

/// What a service hands to [`serve`].
pub struct Hosted {
    /// The service's routes (`Routes::new(FooServiceServer::new(api))`).
    pub routes: Routes,
    /// Fully qualified service name reported on health
    /// (`accrue.hierarchy.v1.HierarchyService`).
    pub service_name: &'static str,
    /// The service's pool (its own schema).
    pub pool: PgPool,
    /// The schema the migrations run in.
    pub schema: &'static str,
    /// The service's migrations.
    pub migrator: &'static Migrator,
    /// Verifies every RPC's bearer token ([`crate::auth`]).
    pub verifier: Arc<Verifier>,
}

/// Serves a service on `listener` together with `grpc.health.v1.Health`
/// (`service_name` and `""` are SERVING once migrations have run and while the
/// pool answers, NOT_SERVING otherwise) and reflection v1 and v1alpha over
/// every Accrue proto and health. Migrations run in the background and are
/// retried until the database is reachable. Returns when `shutdown` is
/// cancelled and in-flight RPCs have drained.
pub async fn serve(listener: TcpListener, hosted: Hosted, shutdown: CancellationToken) -> Result<(), ServeError> {
    let Hosted { routes, service_name, pool, schema, migrator, verifier } = hosted;
    let (reporter, health_service) = tonic_health::server::health_reporter();
    reporter.set_service_status("", ServingStatus::NotServing).await;
    reporter.set_service_status(service_name, ServingStatus::NotServing).await;

    let probe_shutdown = shutdown.clone();
    tokio::spawn(async move {
        let mut last = None;
        let mut migrated = false;
        loop {
            if !migrated {
                match crate::db::migrate(&pool, schema, migrator).await {
                    Ok(()) => migrated = true,
                    Err(error) => {
                        tracing::warn!(service = service_name, %error, "migrations not applied yet; retrying")
                    }
                }
            }
            let status = if migrated && crate::db::is_reachable(&pool).await {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            if last != Some(status) {
                log_health(service_name, last, status);
                reporter.set_service_status("", status).await;
                reporter.set_service_status(service_name, status).await;
                last = Some(status);
            }
            tokio::select! {
                _ = probe_shutdown.cancelled() => {
                    reporter.set_service_status("", ServingStatus::NotServing).await;
                    reporter.set_service_status(service_name, ServingStatus::NotServing).await;
                    break;
                }
                _ = tokio::time::sleep(HEALTH_PROBE_INTERVAL) => {}
            }
        }
    });

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(accrue_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .with_service_name(service_name)
        .with_service_name(HEALTH_SERVICE)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(accrue_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .with_service_name(service_name)
        .with_service_name(HEALTH_SERVICE)
        .build_v1alpha()?;

    let routes = routes.add_service(health_service).add_service(reflection_v1).add_service(reflection_v1alpha);
    tonic::transport::Server::builder()
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .layer(crate::layers::stack(schema, verifier))
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming::limited(listener, MAX_CONNECTIONS), shutdown.cancelled_owned())
        .await?;
    Ok(())
}

/// A health change worth an operator's eye is WARN (serving → not serving:
/// the database went away) or INFO (back to serving); the start-up ones
/// (the first status) is DEBUG, so a healthy start logs only its
/// "listening" line.
fn log_health(service: &str, last: Option<ServingStatus>, status: ServingStatus) {
    match (last, status) {
        (Some(ServingStatus::Serving), _) => tracing::warn!(service, ?status, "health: no longer serving"),
        (Some(_), ServingStatus::Serving) => tracing::info!(service, ?status, "health: serving again"),
        _ => tracing::debug!(service, ?status, "health"),
    }
}
