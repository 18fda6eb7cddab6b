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
use crate::server::{Hosted, ServeError};

/// Default pool size per service (the `--max-connections` default says 16 too).
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
    /// The service's own configuration.
    pub service: C,
}

impl<C> ServiceConfig<C> {
    /// `service` over `database_url` with the default pool size.
    pub fn new(database_url: impl Into<String>, auth: AuthConfig, service: C) -> Self {
        ServiceConfig { database_url: database_url.into(), max_connections: DEFAULT_MAX_CONNECTIONS, auth, service }
    }

    /// The same with a pool of `max_connections`.
    pub fn with_max_connections(self, max_connections: u32) -> Self {
        ServiceConfig { max_connections, ..self }
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
    background: JoinSet<()>,
    background_shutdown: CancellationToken,
}

impl Setup {
    /// Starts a background task. `task` gets a token that is cancelled once
    /// the server has stopped and drained its RPCs; the service returns only
    /// after every such task has finished (saga workers release their leases).
    pub fn spawn<F, Fut>(&mut self, task: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.background.spawn(task(self.background_shutdown.clone()));
    }
}

/// Runs service `S` on `listener` until `shutdown` is cancelled: opens its
/// pool, builds its routes, hosts them (health, reflection, layers, migrations
/// via [`crate::server::serve`]), then stops its background tasks.
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
    let mut setup = Setup {
        pool: pool.clone(),
        db,
        credential,
        background: JoinSet::new(),
        background_shutdown: CancellationToken::new(),
    };
    let (sampled, service) = (pool.clone(), S::SCHEMA);
    setup.spawn(move |shutdown| crate::scrape::sample_pool(service, sampled, shutdown));
    let routes = S::routes(&config.service, &mut setup)?;
    let hosted = Hosted { routes, service_name: S::NAME, pool, schema: S::SCHEMA, migrator: S::migrator(), verifier };
    let served = crate::server::serve(listener, hosted, shutdown).await;
    setup.background_shutdown.cancel();
    setup.background.join_all().await;
    served?;
    Ok(())
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
    metrics_listen: Option<SocketAddr>,
    database_url: String,
    max_connections: u32,
    auth: AuthConfig,
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
            Arg::new("max_connections")
                .long("max-connections")
                .value_name("N")
                .env("ACCRUE_DB_MAX_CONNECTIONS")
                .default_value("16")
                .value_parser(clap::value_parser!(u32))
                .help("Maximum database connections"),
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
    let text = |name: &str, default: &str| matches.get_one::<String>(name).cloned().unwrap_or_else(|| default.into());
    let auth = AuthConfig {
        hs256_secret: matches.get_one::<String>("auth_hs256_secret").cloned(),
        jwks_file: matches.get_one::<PathBuf>("auth_jwks_file").cloned(),
        issuer: text("auth_issuer", crate::auth::DEFAULT_ISSUER),
        audience: text("auth_audience", crate::auth::DEFAULT_AUDIENCE),
        service_token_file: matches.get_one::<PathBuf>("service_token_file").cloned(),
        page_token_key: matches.get_one::<String>("page_token_key").cloned(),
    };
    Ok(Common { listen, metrics_listen, database_url, max_connections, auth })
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
    let config = ServiceConfig {
        database_url: common.database_url,
        max_connections: common.max_connections,
        auth: common.auth,
        service: flags.into(),
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
