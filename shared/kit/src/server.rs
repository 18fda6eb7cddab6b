//! Hosts one Accrue gRPC service with health (readiness and liveness),
//! reflection, the shared layer stack ([`crate::layers`]) and graceful
//! shutdown with a drain deadline.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::auth::Verifier;
use crate::shutdown::Drain;

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

/// The event feed every service hosts beside its own ([`crate::events`]).
const EVENT_SERVICE: &str = "accrue.events.v1.EventService";

/// The webhooks every service hosts beside its feed ([`crate::events::webhooks`]).
const WEBHOOK_SERVICE: &str = "accrue.events.v1.WebhookService";

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
    accrue_proto::events::v1::event_service_server::EventServiceServer<T>,
    accrue_proto::events::v1::webhook_service_server::WebhookServiceServer<T>,
);

/// `server` with the message limits set, to add to routes built by [`routes`].
pub fn limited<S: Server>(server: S) -> S {
    server.with_limits()
}

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
    /// Whether to apply `migrator` on start (the default). Off when a
    /// migration job owns the schema: the caller has then checked the
    /// schema is up to date ([`crate::db::check_migrated`]) before serving.
    pub migrate: bool,
    /// Verifies every RPC's bearer token ([`crate::auth`]).
    pub verifier: Arc<Verifier>,
}

/// The health name that answers SERVING whenever the process is up,
/// whatever its database does: what a Kubernetes liveness probe asks for
/// (`grpc: {port, service: liveness}`), so that a database outage makes the
/// pods unready, never restarts them. Readiness is the service's own name
/// and `""`.
pub const LIVENESS: &str = "liveness";

/// Serves a service on `listener` together with `grpc.health.v1.Health`
/// and reflection v1 and v1alpha over every Accrue proto, health and
/// google.rpc's error details (so grpcurl can print BadRequest and
/// ErrorInfo). Migrations run in the background and are retried until the
/// database is reachable.
///
/// Health: `service_name` and `""` (readiness) are SERVING once migrations
/// have run (at once when [`Hosted::migrate`] is off) and while the pool
/// answers, NOT_SERVING otherwise; [`LIVENESS`] is SERVING from the start.
///
/// Shutdown, when `drain`'s token is cancelled: readiness goes NOT_SERVING
/// first (open Health/Watch streams receive it, then end), then the server
/// stops accepting connections and lets in-flight RPCs finish. Whatever is
/// still open when the drain's grace has passed is cut off. Returns then.
pub async fn serve(listener: TcpListener, hosted: Hosted, drain: &Drain) -> Result<(), ServeError> {
    let Hosted { routes, service_name, pool, schema, migrator, migrate, verifier } = hosted;
    let (reporter, health_service) = tonic_health::server::health_reporter();
    reporter.set_service_status(LIVENESS, ServingStatus::Serving).await;
    reporter.set_service_status("", ServingStatus::NotServing).await;
    reporter.set_service_status(service_name, ServingStatus::NotServing).await;

    // Cancelled once readiness is NOT_SERVING: only then does the server
    // stop accepting, so a balancer watching health stops first.
    let unready = CancellationToken::new();
    tokio::spawn(probe(
        Probe { reporter, service_name, pool, schema, migrator, migrate },
        drain.clone(),
        unready.clone(),
    ));

    let reflection_v1 = reflection(service_name).build_v1()?;
    let reflection_v1alpha = reflection(service_name).build_v1alpha()?;

    let routes = routes.add_service(health_service).add_service(reflection_v1).add_service(reflection_v1alpha);
    // Past the deadline every connection is cut off, so the server's wait
    // for them ends too.
    let cut = CancellationToken::new();
    let cut_at_deadline = {
        let (drain, cut) = (drain.clone(), cut.clone());
        tokio::spawn(async move {
            drain.deadline().await;
            tracing::warn!(service = service_name, "drain deadline passed; closing the connections still open");
            cut.cancel();
        })
    };
    let served = tonic::transport::Server::builder()
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .layer(crate::layers::stack(schema, verifier))
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming::limited(listener, MAX_CONNECTIONS, cut), unready.cancelled_owned())
        .await;
    cut_at_deadline.abort();
    served?;
    Ok(())
}

/// Reflection over every Accrue proto, health, and google.rpc's `Status`
/// and error details (`BadRequest`, `ErrorInfo`, …), advertising
/// `service_name` and health.
fn reflection(service_name: &'static str) -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(accrue_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .with_service_name(service_name)
        .with_service_name(EVENT_SERVICE)
        .with_service_name(WEBHOOK_SERVICE)
        .with_service_name(HEALTH_SERVICE)
}

/// What the health probe reports on and with.
struct Probe {
    reporter: HealthReporter,
    service_name: &'static str,
    pool: PgPool,
    schema: &'static str,
    migrator: &'static Migrator,
    migrate: bool,
}

/// Runs the migrations until they apply, then keeps readiness in step with
/// the database every [`HEALTH_PROBE_INTERVAL`]. When the drain begins it
/// sets readiness NOT_SERVING, ends every Watch stream (after they have
/// received that), and cancels `unready`.
async fn probe(probe: Probe, drain: Drain, unready: CancellationToken) {
    let Probe { reporter, service_name, pool, schema, migrator, migrate } = probe;
    let mut last = None;
    let mut migrated = !migrate;
    loop {
        let check = async {
            if !migrated {
                match crate::db::migrate(&pool, schema, migrator).await {
                    Ok(()) => migrated = true,
                    Err(error) => {
                        tracing::warn!(service = service_name, %error, "migrations not applied yet; retrying")
                    }
                }
            }
            if migrated && crate::db::is_reachable(&pool).await {
                ServingStatus::Serving
            } else {
                crate::db::diagnose(&pool, service_name).await;
                ServingStatus::NotServing
            }
        };
        let status = tokio::select! {
            biased;
            () = drain.began() => break,
            status = check => status,
        };
        if last != Some(status) {
            log_health(service_name, last, status);
            reporter.set_service_status("", status).await;
            reporter.set_service_status(service_name, status).await;
            last = Some(status);
        }
        tokio::select! {
            () = drain.began() => break,
            () = tokio::time::sleep(HEALTH_PROBE_INTERVAL) => {}
        }
    }
    tracing::info!(
        service = service_name,
        grace_s = drain.grace().as_secs_f64(),
        "shutting down: NOT_SERVING, draining"
    );
    reporter.set_service_status("", ServingStatus::NotServing).await;
    reporter.set_service_status(service_name, ServingStatus::NotServing).await;
    // Clearing a name drops its sender: each Watch stream yields the
    // NOT_SERVING it has not seen yet, then ends, instead of holding the
    // drain until the deadline. Nobody can open a new one (the server stops
    // accepting streams now), so liveness goes too.
    let mut reporter = reporter;
    for name in ["", service_name, LIVENESS] {
        reporter.clear_service_status(name).await;
    }
    unready.cancel();
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
