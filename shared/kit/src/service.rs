//! The one shape every Accrue service has (DESIGN §1 "Each service crate keeps
//! the same inner shape"): a service says what it is — its gRPC server (whose
//! `NamedService::NAME` health reports), its schema and migrations, its own
//! flags — and how to build its routes; this module does the rest for all
//! five: flags and environment, the pool, hosting, background tasks and
//! graceful shutdown.
//!
//! A service crate implements [`Service`] on a unit struct and its `main.rs`
//! is one line: `accrue_kit::service::main::<accrue_foo::Foo>()`.

use std::fmt::Debug;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Arg, ArgMatches, Args, Command, FromArgMatches};
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic::service::Routes;

use crate::auth::{AuthConfig, AuthError, Credential};
use crate::client::ClientError;
use crate::db::{DbConfig, DbError};
use crate::events::webhooks::WebhookOptions;
use crate::server::{Hosted, ServeError};
use crate::shutdown::Drain;

/// Default pool size per service (the `--max-connections` default says 16
/// too). A service binary opens one such pool, the attribution service a
/// second one for its saga workers (at most 2 × 16 = 32 connections); the
/// five services of one deployment together at most 96 — just under
/// Postgres's default `max_connections` of 100, so a production database
/// needs a higher limit or smaller pools (see the README, "Database
/// connections"). The dev stack and the tests use smaller pools.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 16;

/// One Accrue gRPC service, as the scaffold hosts it.
pub trait Service: 'static {
    /// The generated `…ServiceServer`; its `NamedService::NAME` is the name
    /// health and reflection report.
    type Server: NamedService;
    /// What the service needs beyond the database (peer URLs, worker options).
    type Config: Clone + Debug + Send + Sync + 'static;
    /// The service's own command-line flags (each also read from the
    /// environment); often the config itself.
    type Flags: Args + FromArgMatches + Into<Self::Config>;

    /// The Postgres schema the service owns (`hierarchy`); also its short
    /// name in flags and environment variables (`ACCRUE_HIERARCHY_LISTEN`).
    const SCHEMA: &'static str;
    /// The port it listens on unless told otherwise.
    const DEFAULT_PORT: u16;
    /// The fully qualified gRPC service name (`accrue.hierarchy.v1.HierarchyService`).
    const NAME: &'static str = <Self::Server as NamedService>::NAME;

    /// Its migrations, run inside [`Service::SCHEMA`].
    fn migrator() -> &'static Migrator;

    /// Builds the service's routes over `setup.pool` (usually
    /// [`crate::server::routes`] of its generated server); background work
    /// (saga workers) is started through [`Setup::spawn`].
    fn routes(config: &Self::Config, setup: &mut Setup) -> Result<Routes, Error>;
}

/// Everything a service needs to run: the database and its own config.
#[derive(Debug, Clone)]
pub struct ServiceConfig<C> {
    /// Postgres URL (the service uses only its own schema in it).
    pub database_url: String,
    /// Pool size.
    pub max_connections: u32,
    /// Token keys, and this service's credential for its peers.
    pub auth: AuthConfig,
    /// How long the service may take to stop once asked to: RPCs drain and
    /// background tasks stop within it, whatever is left is cut off
    /// ([`crate::shutdown::Drain`]).
    pub shutdown_grace: Duration,
    /// The service's own configuration.
    pub service: C,
    /// Apply the schema's migrations on start (`--migrate`, the default);
    /// when off, the service refuses to start until a migration job
    /// (`accrue migrate`) has brought its schema up to date.
    pub migrate: bool,
    /// How the service's webhook worker delivers and retries
    /// (`--webhook-*`; [`crate::events::webhooks`]).
    pub webhooks: WebhookOptions,
}

impl<C> ServiceConfig<C> {
    /// `service` over `database_url` with the default pool size and
    /// shutdown grace.
    pub fn new(database_url: impl Into<String>, auth: AuthConfig, service: C) -> Self {
        ServiceConfig {
            database_url: database_url.into(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            auth,
            shutdown_grace: crate::shutdown::DEFAULT_GRACE,
            service,
            migrate: true,
            webhooks: WebhookOptions::default(),
        }
    }

    /// The same with another shutdown grace.
    pub fn with_shutdown_grace(self, shutdown_grace: Duration) -> Self {
        ServiceConfig { shutdown_grace, ..self }
    }

    /// The same with a pool of `max_connections`.
    pub fn with_max_connections(self, max_connections: u32) -> Self {
        ServiceConfig { max_connections, ..self }
    }

    /// The same with other webhook delivery options.
    pub fn with_webhooks(self, webhooks: WebhookOptions) -> Self {
        ServiceConfig { webhooks, ..self }
    }

    /// The same with migrations on start on or off.
    pub fn with_migrate(self, migrate: bool) -> Self {
        ServiceConfig { migrate, ..self }
    }
}

/// Why a service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database could not be set up.
    #[error(transparent)]
    Db(#[from] DbError),
    /// A peer URL is invalid.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The server failed.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// The token keys or the service credential are unusable.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The command line or environment is incomplete.
    #[error("{0}")]
    Config(String),
    /// Metrics cannot be served.
    #[error(transparent)]
    Metrics(#[from] crate::scrape::MetricsError),
    /// The async runtime could not start.
    #[error("cannot start the runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// What [`Service::routes`] gets: the service's pool, the database settings
/// (for a second pool with other options) and a place to start background
/// tasks that stop with the service.
pub struct Setup {
    /// The service's pool (its own schema, fully durable).
    pub pool: PgPool,
    /// The settings `pool` was made from.
    pub db: DbConfig,
    /// The token this service calls its peers with (`service:<schema>`).
    pub credential: Credential,
    /// How its webhook worker delivers ([`crate::events::host`] starts it).
    pub webhooks: WebhookOptions,
    background: JoinSet<()>,
    background_shutdown: CancellationToken,
}

impl Setup {
    /// Starts a background task. `task` gets a token that is cancelled when
    /// the service begins to shut down (while its RPCs drain) or its server
    /// fails; the service returns once every such task has finished (saga
    /// workers finish their step and release their leases), or when the
    /// shutdown grace has passed: then the rest are aborted (their leases
    /// lapse by themselves within one lease).
    pub fn spawn<F, Fut>(&mut self, task: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.background.spawn(task(self.background_shutdown.clone()));
    }

    /// A token cancelled when the service begins to shut down: what
    /// long-lived RPCs (WatchEvents) end on, so that the drain is not held
    /// until its deadline.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.background_shutdown.clone()
    }
}

/// Runs service `S` on `listener` until `shutdown` is cancelled: opens its
/// pool, builds its routes, hosts them (health, reflection, layers, migrations
/// via [`crate::server::serve`]). On shutdown its RPCs drain and its
/// background tasks stop, together within `config.shutdown_grace`.
///
/// With [`ServiceConfig::migrate`] off it first waits until the database
/// answers and returns [`DbError::NotMigrated`] if the schema is not up to
/// date, before building routes or starting background work.
pub async fn run<S: Service>(
    config: ServiceConfig<S::Config>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let db = DbConfig {
        url: config.database_url.clone(),
        schema: S::SCHEMA.to_string(),
        max_connections: config.max_connections,
    };
    let verifier = Arc::new(config.auth.verifier()?);
    install_page_token_key(&config.auth);
    let credential = config.auth.service_credential(S::SCHEMA)?;
    let pool = crate::db::pool(&db)?;
    if !config.migrate && !schema_is_current(&pool, S::SCHEMA, S::migrator(), &shutdown).await? {
        return Ok(());
    }
    let mut setup = Setup {
        pool: pool.clone(),
        db,
        credential,
        webhooks: config.webhooks.clone(),
        background: JoinSet::new(),
        background_shutdown: shutdown.child_token(),
    };
    let (sampled, service) = (pool.clone(), S::SCHEMA);
    setup.spawn(move |shutdown| crate::scrape::sample_pool(service, sampled, shutdown));
    let routes = S::routes(&config.service, &mut setup)?;
    let hosted = Hosted {
        routes,
        service_name: S::NAME,
        pool,
        schema: S::SCHEMA,
        migrator: S::migrator(),
        migrate: config.migrate,
        verifier,
    };
    let drain = Drain::new(shutdown, config.shutdown_grace);
    let served = crate::server::serve(listener, hosted, &drain).await;
    setup.background_shutdown.cancel();
    let mut background = setup.background;
    let stopped = async { while background.join_next().await.is_some() {} };
    let late = tokio::select! {
        () = stopped => false,
        () = drain.deadline() => true,
    };
    if late {
        tracing::warn!(
            service = S::NAME,
            tasks = background.len(),
            "shutdown grace passed; aborting background tasks (their saga leases lapse by themselves)"
        );
        background.shutdown().await;
    }
    served?;
    tracing::info!(service = S::NAME, "stopped");
    Ok(())
}

/// How often a service with migrations off retries reading its schema
/// while the database does not answer.
const SCHEMA_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// Waits until the database answers, then checks that `schema` is migrated
/// ([`crate::db::check_migrated`]). An unreachable database is retried (it
/// may still be starting, as with migrations on); an out-of-date schema is
/// an error, since nothing in this process will fix it. `Ok(false)` when
/// `shutdown` came first.
async fn schema_is_current(
    pool: &PgPool,
    schema: &str,
    migrator: &Migrator,
    shutdown: &CancellationToken,
) -> Result<bool, Error> {
    loop {
        match crate::db::check_migrated(pool, schema, migrator).await {
            Ok(()) => return Ok(true),
            Err(error @ DbError::NotMigrated { .. }) => return Err(error.into()),
            Err(error) => tracing::warn!(schema, %error, "cannot read the schema's migrations yet; retrying"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(false),
            () = tokio::time::sleep(SCHEMA_CHECK_INTERVAL) => {}
        }
    }
}

/// Installs the key this process signs page tokens with: the configured
/// one, else one derived from the HS256 secret (a development stack's
/// services then agree), else a random one with a warning. The first
/// service of a process to start sets it for all of them.
fn install_page_token_key(auth: &AuthConfig) {
    let installed = match (&auth.page_token_key, &auth.hs256_secret) {
        (Some(key), _) => crate::page::install_key(key.as_bytes()),
        (None, Some(secret)) => crate::page::install_key(format!("accrue page tokens|{secret}").as_bytes()),
        (None, None) => {
            tracing::warn!(
                "no --page-token-key / ACCRUE_PAGE_TOKEN_KEY: page tokens are signed with a random key and will not \
                 survive a restart nor be accepted by another replica"
            );
            false
        }
    };
    if !installed {
        tracing::debug!("page token key already installed in this process");
    }
}

/// The flags every service shares, named after the service.
struct Common {
    listen: SocketAddr,
    migrate: bool,
    metrics_listen: Option<SocketAddr>,
    database_url: String,
    max_connections: u32,
    auth: AuthConfig,
    shutdown_grace: Duration,
    webhooks: WebhookOptions,
}

/// `ACCRUE_<SCHEMA>_<suffix>`; leaked because clap wants `'static` names and
/// a process builds its command once.
fn env_name(schema: &str, suffix: &str) -> &'static str {
    Box::leak(format!("ACCRUE_{}_{suffix}", schema.to_uppercase()).into_boxed_str())
}

/// The command line of service `S`: the shared flags plus `S::Flags`.
pub fn command<S: Service>() -> Command {
    let name: &'static str = Box::leak(format!("accrue-{}", S::SCHEMA).into_boxed_str());
    let about: &'static str = Box::leak(format!("Accrue {} service ({})", S::SCHEMA, S::NAME).into_boxed_str());
    let listen: &'static str = Box::leak(format!("0.0.0.0:{}", S::DEFAULT_PORT).into_boxed_str());
    let command = Command::new(name)
        .version(env!("CARGO_PKG_VERSION"))
        .arg(
            Arg::new("listen")
                .long("listen")
                .value_name("ADDR")
                .env(env_name(S::SCHEMA, "LISTEN"))
                .default_value(listen)
                .value_parser(clap::value_parser!(SocketAddr))
                .help("Address to listen on"),
        )
        .arg(
            Arg::new("metrics_listen")
                .long("metrics-listen")
                .value_name("ADDR")
                .env(env_name(S::SCHEMA, "METRICS_LISTEN"))
                .value_parser(clap::value_parser!(SocketAddr))
                .help("Address to serve Prometheus metrics on (GET /metrics); off when unset"),
        )
        .arg(
            Arg::new("database_url")
                .long("database-url")
                .value_name("URL")
                .env(env_name(S::SCHEMA, "DATABASE_URL"))
                .help("Postgres URL for this service (falls back to DATABASE_URL)"),
        )
        .arg(
            Arg::new("migrate")
                .long("migrate")
                .value_name("BOOL")
                .env("ACCRUE_MIGRATE")
                .num_args(0..=1)
                .require_equals(true)
                .default_value("true")
                .default_missing_value("true")
                .value_parser(clap::builder::BoolishValueParser::new())
                .help(
                    "Apply this service's migrations on start; with --migrate=false a migration job \
                     (`accrue migrate`) owns the schema and the service refuses to start until it is up to date",
                ),
        )
        .arg(
            Arg::new("max_connections")
                .long("max-connections")
                .value_name("N")
                .env("ACCRUE_DB_MAX_CONNECTIONS")
                .default_value("16")
                .value_parser(clap::value_parser!(u32))
                .help("Maximum database connections"),
        )
        .arg(
            Arg::new("shutdown_grace")
                .long("shutdown-grace")
                .value_name("SECONDS")
                .env("ACCRUE_SHUTDOWN_GRACE")
                .default_value("20")
                .value_parser(clap::value_parser!(u64))
                .help(
                    "Seconds to stop in after SIGTERM: readiness goes NOT_SERVING, RPCs drain and saga workers \
                     release their leases; what is left then is cut off (keep it below the pod's \
                     terminationGracePeriodSeconds)",
                ),
        )
        .arg(
            Arg::new("peer_resolve_interval")
                .long("peer-resolve-interval")
                .value_name("SECONDS")
                .env("ACCRUE_PEER_RESOLVE_INTERVAL")
                .default_value("10")
                .value_parser(clap::value_parser!(u64).range(1..))
                .help(
                    "Seconds between DNS lookups of a peer URL's host name: calls are spread over every address it \
                     resolves to (a headless Service's pods); URLs with an IP address are not resolved",
                ),
        )
        .arg(
            Arg::new("auth_jwks_file")
                .long("auth-jwks-file")
                .value_name("PATH")
                .env("ACCRUE_AUTH_JWKS_FILE")
                .value_parser(clap::value_parser!(PathBuf))
                .help("JWKS file of the RS256/ES256 keys that sign bearer tokens (production; re-read on change)"),
        )
        .arg(
            Arg::new("auth_hs256_secret")
                .long("auth-hs256-secret")
                .value_name("SECRET")
                .env("ACCRUE_AUTH_HS256_SECRET")
                .hide_env_values(true)
                .help("HS256 secret (at least 32 bytes) that signs bearer tokens (development)"),
        )
        .arg(
            Arg::new("auth_issuer")
                .long("auth-issuer")
                .value_name("ISS")
                .env("ACCRUE_AUTH_ISSUER")
                .default_value(crate::auth::DEFAULT_ISSUER)
                .help("Expected `iss` of bearer tokens"),
        )
        .arg(
            Arg::new("auth_audience")
                .long("auth-audience")
                .value_name("AUD")
                .env("ACCRUE_AUTH_AUDIENCE")
                .default_value(crate::auth::DEFAULT_AUDIENCE)
                .help("Expected `aud` of bearer tokens"),
        )
        .arg(
            Arg::new("service_token_file")
                .long("service-token-file")
                .value_name("PATH")
                .env(env_name(S::SCHEMA, "SERVICE_TOKEN_FILE"))
                .value_parser(clap::value_parser!(PathBuf))
                .help("This service's token for calls to its peers, re-read on change (minted from the HS256 secret when absent)"),
        )
        .arg(
            Arg::new("page_token_key")
                .long("page-token-key")
                .value_name("KEY")
                .env("ACCRUE_PAGE_TOKEN_KEY")
                .hide_env_values(true)
                .help("Key page tokens are signed with (HMAC-SHA256), shared by every replica (default: derived from the HS256 secret, else random per process)"),
        )
        .arg(
            Arg::new("webhook_max_attempts")
                .long("webhook-max-attempts")
                .value_name("N")
                .env("ACCRUE_WEBHOOK_MAX_ATTEMPTS")
                .default_value("8")
                .value_parser(clap::value_parser!(u32).range(1..))
                .help("Attempts to deliver a webhook before it is dead-lettered (RedeliverWebhook queues it again)"),
        )
        .arg(
            Arg::new("webhook_backoff_ms")
                .long("webhook-backoff-ms")
                .value_name("MS")
                .env("ACCRUE_WEBHOOK_BACKOFF_MS")
                .default_value("5000")
                .value_parser(clap::value_parser!(u64))
                .help("Wait after a webhook's first failed attempt, doubled after each further one"),
        )
        .arg(
            Arg::new("webhook_max_backoff_seconds")
                .long("webhook-max-backoff-seconds")
                .value_name("SECONDS")
                .env("ACCRUE_WEBHOOK_MAX_BACKOFF_SECONDS")
                .default_value("3600")
                .value_parser(clap::value_parser!(u64))
                .help("Longest wait between two attempts of a webhook"),
        )
        .arg(
            Arg::new("webhook_timeout_seconds")
                .long("webhook-timeout-seconds")
                .value_name("SECONDS")
                .env("ACCRUE_WEBHOOK_TIMEOUT_SECONDS")
                .default_value("10")
                .value_parser(clap::value_parser!(u64).range(1..))
                .help("How long one webhook POST may take"),
        );
    // After the service's flags: their doc comment would replace the about.
    S::Flags::augment_args(command).about(about)
}

fn common<S: Service>(matches: &ArgMatches) -> Result<Common, Error> {
    let listen = matches.get_one::<SocketAddr>("listen").copied().ok_or_else(|| Error::Config("no --listen".into()))?;
    let metrics_listen = matches.get_one::<SocketAddr>("metrics_listen").copied();
    let database_url =
        matches.get_one::<String>("database_url").cloned().or_else(|| std::env::var("DATABASE_URL").ok()).ok_or_else(
            || Error::Config(format!("set --database-url, {} or DATABASE_URL", env_name(S::SCHEMA, "DATABASE_URL"))),
        )?;
    let max_connections = matches.get_one::<u32>("max_connections").copied().unwrap_or(DEFAULT_MAX_CONNECTIONS);
    let migrate = matches.get_one::<bool>("migrate").copied().unwrap_or(true);
    let text = |name: &str, default: &str| matches.get_one::<String>(name).cloned().unwrap_or_else(|| default.into());
    let auth = AuthConfig {
        hs256_secret: matches.get_one::<String>("auth_hs256_secret").cloned(),
        jwks_file: matches.get_one::<PathBuf>("auth_jwks_file").cloned(),
        issuer: text("auth_issuer", crate::auth::DEFAULT_ISSUER),
        audience: text("auth_audience", crate::auth::DEFAULT_AUDIENCE),
        service_token_file: matches.get_one::<PathBuf>("service_token_file").cloned(),
        page_token_key: matches.get_one::<String>("page_token_key").cloned(),
    };
    let shutdown_grace = matches
        .get_one::<u64>("shutdown_grace")
        .map_or(crate::shutdown::DEFAULT_GRACE, |seconds| Duration::from_secs(*seconds));
    let defaults = WebhookOptions::default();
    let webhooks = WebhookOptions {
        max_attempts: matches.get_one::<u32>("webhook_max_attempts").copied().unwrap_or(defaults.max_attempts),
        initial_backoff: matches
            .get_one::<u64>("webhook_backoff_ms")
            .map_or(defaults.initial_backoff, |ms| Duration::from_millis(*ms)),
        max_backoff: matches
            .get_one::<u64>("webhook_max_backoff_seconds")
            .map_or(defaults.max_backoff, |seconds| Duration::from_secs(*seconds)),
        timeout: matches
            .get_one::<u64>("webhook_timeout_seconds")
            .map_or(defaults.timeout, |seconds| Duration::from_secs(*seconds)),
        ..defaults
    };
    Ok(Common { listen, migrate, metrics_listen, database_url, max_connections, auth, shutdown_grace, webhooks })
}

/// The whole `main` of a service binary: parses flags and environment
/// (`--help` lists them), installs logging, binds, and runs until SIGTERM or
/// Ctrl-C. A failure is printed and exits with status 1.
pub fn main<S: Service>() -> std::process::ExitCode {
    match try_main::<S>() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("accrue-{}: {error}", S::SCHEMA);
            std::process::ExitCode::FAILURE
        }
    }
}

fn try_main<S: Service>() -> Result<(), Error> {
    let matches = command::<S>().get_matches();
    let common = common::<S>(&matches)?;
    let flags = S::Flags::from_arg_matches(&matches).map_err(|error| Error::Config(error.to_string()))?;
    if let Some(seconds) = matches.get_one::<u64>("peer_resolve_interval") {
        crate::client::balance::set_resolve_interval(Duration::from_secs(*seconds));
    }
    let config = ServiceConfig {
        database_url: common.database_url,
        max_connections: common.max_connections,
        auth: common.auth,
        shutdown_grace: common.shutdown_grace,
        service: flags.into(),
        migrate: common.migrate,
        webhooks: common.webhooks,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(Error::Runtime)?;
    runtime.block_on(async move {
        let telemetry = crate::telemetry::init(&format!("accrue-{}", S::SCHEMA), "info");
        let served = serve_until_signal::<S>(config, common.listen, common.metrics_listen).await;
        telemetry.flush().await;
        served
    })
}

/// Binds, logs the one "listening" line, serves metrics when asked, and
/// runs the service until SIGTERM or Ctrl-C.
async fn serve_until_signal<S: Service>(
    config: ServiceConfig<S::Config>,
    listen: SocketAddr,
    metrics_listen: Option<SocketAddr>,
) -> Result<(), Error> {
    let listener = TcpListener::bind(listen).await.map_err(|source| Error::Bind { addr: listen, source })?;
    let shutdown = crate::shutdown::on_signal();
    match metrics_listen {
        Some(addr) => {
            let metrics = TcpListener::bind(addr).await.map_err(|source| Error::Bind { addr, source })?;
            crate::scrape::install()?;
            let metrics_shutdown = shutdown.clone();
            tokio::spawn(async move {
                if let Err(error) = crate::scrape::serve(metrics, metrics_shutdown).await {
                    tracing::error!(%error, "the metrics server stopped");
                }
            });
            tracing::info!(addr = %listen, metrics = %format!("http://{addr}/metrics"), service = S::NAME, "listening");
        }
        None => tracing::info!(addr = %listen, service = S::NAME, "listening"),
    }
    run::<S>(config, listener, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_follow_the_schema() {
        assert_eq!(env_name("hierarchy", "LISTEN"), "ACCRUE_HIERARCHY_LISTEN");
    }
}
