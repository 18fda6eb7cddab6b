//! Starts the five services in one process, each on its own port with real
//! gRPC between them (DESIGN §6 "Dev"). Used by `accrue dev`, `accrue replay
//! --dev` and the end-to-end tests (with port 0 for ephemeral ports).
//!
//! As in production, each service connects as its own database role
//! (`accrue_<schema>`, [`accrue_kit::db::provision`]): the stack provisions
//! the five roles with the admin URL it is given, then hands each service
//! only its own role's URL.

use accrue_kit::auth::{AuthConfig, Credential, Minter, Role};
use std::net::SocketAddr;

use accrue_attribution::Attribution;
use accrue_commission::Commission;
use accrue_hierarchy::Hierarchy;
use accrue_kit::service::{Service, ServiceConfig};
use accrue_ledger::Ledger;
use accrue_payouts::Payouts;
use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Where each service listens (port 0 picks a free port).
#[derive(Debug, Clone)]
pub struct Ports {
    /// Hierarchy (default 50051).
    pub hierarchy: u16,
    /// Attribution (default 50052).
    pub attribution: u16,
    /// Commission (default 50053).
    pub commission: u16,
    /// Ledger (default 50054).
    pub ledger: u16,
    /// Payouts (default 50055).
    pub payouts: u16,
}

impl Ports {
    /// The standard ports 50051..50055.
    pub fn standard() -> Self {
        Ports {
            hierarchy: Hierarchy::DEFAULT_PORT,
            attribution: Attribution::DEFAULT_PORT,
            commission: Commission::DEFAULT_PORT,
            ledger: Ledger::DEFAULT_PORT,
            payouts: Payouts::DEFAULT_PORT,
        }
    }

    /// Ephemeral ports (tests).
    pub fn ephemeral() -> Self {
        Ports { hierarchy: 0, attribution: 0, commission: 0, ledger: 0, payouts: 0 }
    }

    /// `base`, `base + 1`, … in the order hierarchy, attribution,
    /// commission, ledger, payouts (`accrue dev`'s metrics ports); 0 gives
    /// ephemeral ones.
    pub fn from_base(base: u16) -> Self {
        let port = |offset: u16| if base == 0 { 0 } else { base.saturating_add(offset) };
        Ports { hierarchy: port(0), attribution: port(1), commission: port(2), ledger: port(3), payouts: port(4) }
    }
}

/// How to start the stack.
#[derive(Debug, Clone)]
pub struct StackConfig {
    /// One Postgres URL for all five schemas, of an admin role (superuser,
    /// or CREATEROLE with CREATE on the database): the stack provisions the
    /// service roles with it; the services never use it.
    pub database_url: String,
    /// Host to bind (usually 127.0.0.1).
    pub host: std::net::IpAddr,
    /// Ports.
    pub ports: Ports,
    /// Pool size per service (the attribution service opens a second one
    /// of this size for its saga workers: six pools in all).
    pub max_connections: u32,
    /// How long each service may take to stop on [`Stack::shutdown`]
    /// (RPCs drain, saga workers release their leases; the rest is cut off).
    pub shutdown_grace: std::time::Duration,
    /// Saga worker options for the attribution service.
    pub saga: accrue_attribution::SagaOptions,
    /// Faults injected into the attribution saga workers (none by default;
    /// settable only with the `test-hooks` feature).
    pub saga_hooks: accrue_attribution::SagaHooks,
    /// How long a RecordSales stream may stay silent (default 30 s).
    pub stream_idle_timeout: std::time::Duration,
    /// The token keys every service verifies with: a fresh random HS256
    /// secret per stack (development), from which each service mints its
    /// peer credential and [`Stack::admin`] is minted.
    pub auth: AuthConfig,
    /// The ledger's ClearMatured timer (zero: off, the default here — the
    /// replay and the tests clear month by month at their own `as_of`, and a
    /// wall-clock pass would clear their historic entries at once).
    pub clear_matured_interval: std::time::Duration,
    /// Whether the stack provisions the service roles and migrates their
    /// schemas before starting the services, which then migrate on start
    /// too (the default). Off, as in a deployment whose migration job
    /// (`accrue migrate --provision`) ran first: the stack only derives each
    /// role's URL and starts the services with migrations off, so they
    /// refuse to start on an out-of-date schema.
    pub migrate: bool,
    /// Where each service serves Prometheus metrics (`GET /metrics`); None:
    /// no metrics (the default). All five serve the process's one registry,
    /// told apart by the `service` label ([`accrue_kit::scrape`]).
    pub metrics_ports: Option<Ports>,
    /// How every service's webhook worker delivers and retries (the
    /// defaults; the tests shorten the backoff).
    pub webhooks: accrue_kit::events::webhooks::WebhookOptions,
}

impl StackConfig {
    /// The stack on `host` and `ports` over one database, default saga options.
    pub fn new(database_url: String, host: std::net::IpAddr, ports: Ports, max_connections: u32) -> Self {
        StackConfig {
            database_url,
            host,
            ports,
            max_connections,
            shutdown_grace: accrue_kit::shutdown::DEFAULT_GRACE,
            saga: accrue_attribution::SagaOptions::default(),
            saga_hooks: accrue_attribution::SagaHooks::default(),
            stream_idle_timeout: std::time::Duration::from_secs(30),
            auth: AuthConfig::hs256(dev_secret()),
            clear_matured_interval: std::time::Duration::ZERO,
            migrate: true,
            metrics_ports: None,
            webhooks: accrue_kit::events::webhooks::WebhookOptions::default(),
        }
    }

    /// Loopback, ephemeral ports, default saga options, pools of
    /// [`TEST_MAX_CONNECTIONS`].
    pub fn for_tests(database_url: String) -> Self {
        StackConfig::new(database_url, std::net::IpAddr::from([127, 0, 0, 1]), Ports::ephemeral(), TEST_MAX_CONNECTIONS)
    }
}

/// Pool size per service of a test stack: its six pools hold at most 24
/// connections, so the two stacks a 2-core `cargo test` runs at once stay
/// near half of Postgres's default max_connections of 100.
pub const TEST_MAX_CONNECTIONS: u32 = 4;

/// A random HS256 secret: 32 random bytes as 64 hex digits.
pub fn dev_secret() -> String {
    rand::random::<[u8; 32]>().iter().map(|byte| format!("{byte:02x}")).collect()
}

/// How long the stack's admin token lives.
pub const ADMIN_TOKEN_TTL: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

/// The `http://host:port` endpoint of each running service.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// Hierarchy.
    pub hierarchy: String,
    /// Attribution.
    pub attribution: String,
    /// Commission.
    pub commission: String,
    /// Ledger.
    pub ledger: String,
    /// Payouts.
    pub payouts: String,
}

impl Endpoints {
    /// `(service name, endpoint)` pairs, for printing.
    pub fn list(&self) -> [(&'static str, &str); 5] {
        [
            (Hierarchy::NAME, &self.hierarchy),
            (Attribution::NAME, &self.attribution),
            (Commission::NAME, &self.commission),
            (Ledger::NAME, &self.ledger),
            (Payouts::NAME, &self.payouts),
        ]
    }
}

/// A running stack. Dropping it does not stop it: call [`Stack::shutdown`].
pub struct Stack {
    /// Service endpoints.
    pub endpoints: Endpoints,
    /// An admin token over every program, signed with the stack's secret
    /// (`accrue dev` prints it; the replay and the tests call with it).
    pub admin_token: String,
    /// [`Stack::admin_token`] as a client credential.
    pub admin: Credential,
    /// Each service's metrics URL (`http://host:port/metrics`), when
    /// [`StackConfig::metrics_ports`] asked for them.
    pub metrics: Option<Endpoints>,
    shutdown: CancellationToken,
    tasks: JoinSet<anyhow::Result<()>>,
}

async fn bind(host: std::net::IpAddr, port: u16) -> anyhow::Result<(TcpListener, String)> {
    let addr = SocketAddr::new(host, port);
    let listener = TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    Ok((listener, format!("http://{local}")))
}

impl Stack {
    /// Provisions the five service roles, migrates each schema as its role,
    /// then starts the services, each connected as its own role, and returns
    /// once every one is listening. The returned stack stops on `shutdown()`.
    pub async fn start(config: StackConfig) -> anyhow::Result<Stack> {
        let url = config.database_url.clone();
        let max = config.max_connections;
        let (hierarchy_listener, hierarchy) = bind(config.host, config.ports.hierarchy).await?;
        let (attribution_listener, attribution) = bind(config.host, config.ports.attribution).await?;
        let (commission_listener, commission) = bind(config.host, config.ports.commission).await?;
        let (ledger_listener, ledger) = bind(config.host, config.ports.ledger).await?;
        let (payouts_listener, payouts) = bind(config.host, config.ports.payouts).await?;
        let endpoints = Endpoints { hierarchy, attribution, commission, ledger, payouts };

        let roles = if config.migrate { migrate_all(&url).await? } else { role_urls(&url)? };

        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let metrics = match &config.metrics_ports {
            Some(ports) => Some(serve_metrics(config.host, ports, &mut tasks, &shutdown).await?),
            None => None,
        };
        let minter = Minter::new(
            config.auth.hs256_secret.as_deref().unwrap_or_default(),
            &config.auth.issuer,
            &config.auth.audience,
        )
        .context("the stack's token secret")?;
        let admin_token = minter.mint("accrue-dev-admin", &[Role::Admin], &["*".to_string()], None, ADMIN_TOKEN_TTL)?;
        let mut launch = Launch {
            tasks: &mut tasks,
            roles: &roles,
            max_connections: max,
            auth: &config.auth,
            migrate: config.migrate,
            shutdown_grace: config.shutdown_grace,
            shutdown: &shutdown,
            webhooks: &config.webhooks,
        };
        let hierarchy_config = accrue_hierarchy::Config { ledger_url: Some(endpoints.ledger.clone()) };
        launch.spawn::<Hierarchy>(hierarchy_config, hierarchy_listener)?;
        let commission_config = accrue_commission::Config { hierarchy_url: endpoints.hierarchy.clone() };
        launch.spawn::<Commission>(commission_config, commission_listener)?;
        let ledger_config = accrue_ledger::Config {
            hierarchy_url: endpoints.hierarchy.clone(),
            clear_matured_interval_seconds: config.clear_matured_interval.as_secs(),
        };
        launch.spawn::<Ledger>(ledger_config, ledger_listener)?;
        let payouts_config =
            accrue_payouts::Config { hierarchy_url: endpoints.hierarchy.clone(), ledger_url: endpoints.ledger.clone() };
        launch.spawn::<Payouts>(payouts_config, payouts_listener)?;
        let attribution_config = accrue_attribution::Config {
            hierarchy_url: endpoints.hierarchy.clone(),
            commission_url: endpoints.commission.clone(),
            ledger_url: endpoints.ledger.clone(),
            max_future_skew: accrue_kit::convert::DEFAULT_MAX_FUTURE_SKEW,
            stream_idle_timeout: config.stream_idle_timeout,
            saga: config.saga.clone(),
            hooks: config.saga_hooks.clone(),
        };
        launch.spawn::<Attribution>(attribution_config, attribution_listener)?;
        let admin = Credential::token(admin_token.clone());
        Ok(Stack { endpoints, admin_token, admin, metrics, shutdown, tasks })
    }

    /// Resolves when any service stops on its own (an error), or never.
    pub async fn wait_for_failure(&mut self) -> anyhow::Result<()> {
        match self.tasks.join_next().await {
            Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(error))) => Err(error),
            Some(Err(join)) => Err(anyhow::anyhow!("a service task panicked: {join}")),
            None => std::future::pending().await,
        }
    }

    /// Stops every service (draining in-flight RPCs, releasing saga leases)
    /// and waits for them.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        let mut first_error = None;
        while let Some(result) = self.tasks.join_next().await {
            let outcome = result.map_err(anyhow::Error::from).and_then(|r| r);
            if let Err(error) = outcome
                && first_error.is_none()
            {
                first_error = Some(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// Binds a metrics port per service and serves the process's registry on
/// each until `shutdown`; returns their `/metrics` URLs.
async fn serve_metrics(
    host: std::net::IpAddr,
    ports: &Ports,
    tasks: &mut JoinSet<anyhow::Result<()>>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Endpoints> {
    accrue_kit::scrape::install().context("installing the metrics recorder")?;
    let mut urls = Vec::with_capacity(5);
    for port in [ports.hierarchy, ports.attribution, ports.commission, ports.ledger, ports.payouts] {
        let (listener, url) = bind(host, port).await?;
        let token = shutdown.clone();
        tasks.spawn(async move { accrue_kit::scrape::serve(listener, token).await.context("metrics server") });
        urls.push(format!("{url}/metrics"));
    }
    let [hierarchy, attribution, commission, ledger, payouts]: [String; 5] =
        urls.try_into().map_err(|_| anyhow::anyhow!("five metrics listeners"))?;
    Ok(Endpoints { hierarchy, attribution, commission, ledger, payouts })
}

/// What every service of the stack shares when it is started.
struct Launch<'a> {
    tasks: &'a mut JoinSet<anyhow::Result<()>>,
    roles: &'a [ServiceRole],
    max_connections: u32,
    shutdown_grace: std::time::Duration,
    auth: &'a AuthConfig,
    migrate: bool,
    shutdown: &'a CancellationToken,
    webhooks: &'a accrue_kit::events::webhooks::WebhookOptions,
}

impl Launch<'_> {
    /// Runs service `S` as one task of the stack, connected as its role.
    fn spawn<S: Service>(&mut self, service: S::Config, listener: TcpListener) -> anyhow::Result<()> {
        let config = ServiceConfig {
            database_url: role_of(self.roles, S::SCHEMA)?.url.clone(),
            max_connections: self.max_connections,
            auth: self.auth.clone(),
            shutdown_grace: self.shutdown_grace,
            service,
            migrate: self.migrate,
            webhooks: self.webhooks.clone(),
        };
        let token = self.shutdown.clone();
        self.tasks.spawn(async move {
            accrue_kit::service::run::<S>(config, listener, token)
                .await
                .with_context(|| format!("{} service", S::SCHEMA))
        });
        Ok(())
    }
}

/// The five service schemas, each owned by its own role.
pub const SCHEMAS: [&str; 5] =
    [Hierarchy::SCHEMA, Attribution::SCHEMA, Commission::SCHEMA, Ledger::SCHEMA, Payouts::SCHEMA];

/// One service's database role, as [`provision_all`] left it.
#[derive(Debug, Clone)]
pub struct ServiceRole {
    /// The service's schema (`ledger`).
    pub schema: &'static str,
    /// Its login role (`accrue_ledger`).
    pub role: String,
    /// The URL the service connects with: the admin URL with the role's
    /// user and password.
    pub url: String,
}

impl ServiceRole {
    /// The variable the service reads its URL from
    /// (`ACCRUE_LEDGER_DATABASE_URL`).
    pub fn env_var(&self) -> String {
        format!("ACCRUE_{}_DATABASE_URL", self.schema.to_uppercase())
    }
}

/// The role of `schema` among `roles`.
fn role_of<'a>(roles: &'a [ServiceRole], schema: &str) -> anyhow::Result<&'a ServiceRole> {
    roles.iter().find(|role| role.schema == schema).with_context(|| format!("no database role for schema {schema}"))
}

/// Provisions the five service roles through `admin_url`
/// ([`accrue_kit::db::provision`]), role `accrue_<schema>` getting the
/// password `password(schema)` (`None`: an existing role keeps its own).
/// Idempotent. Returns each service's role and URL, in [`SCHEMAS`] order.
pub async fn provision_all(
    admin_url: &str,
    password: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<Vec<ServiceRole>> {
    let mut roles = Vec::with_capacity(SCHEMAS.len());
    for schema in SCHEMAS {
        let password = password(schema);
        accrue_kit::db::provision(admin_url, schema, password.as_deref()).await?;
        let url = accrue_kit::db::role_url(admin_url, schema, password.as_deref())?;
        roles.push(ServiceRole { schema, role: accrue_kit::db::role_name(schema), url });
    }
    Ok(roles)
}

/// Provisions the five service roles through `admin_url` and applies every
/// service's migrations to its own schema, connected as its role. The roles
/// get the admin URL's password, if it has one: a development convenience
/// (a local cluster with password auth, no secret store), see
/// [`accrue_kit::db::provision_dev`]; with trust auth they need none.
/// Returns each service's role and URL.
pub async fn migrate_all(admin_url: &str) -> anyhow::Result<Vec<ServiceRole>> {
    let admin_password = accrue_kit::db::url_password(admin_url)?;
    let roles = provision_all(admin_url, |_| admin_password.clone()).await.context("provisioning the service roles")?;
    for (schema, migrator) in crate::migrate::migrators() {
        let url = role_of(&roles, schema)?.url.clone();
        crate::migrate::migrate_schema(&url, schema, migrator, None).await?;
    }
    Ok(roles)
}

/// Each service's role and URL as [`migrate_all`] would return them, without
/// touching the database: for a stack whose roles and schemas an earlier
/// `accrue migrate --provision` made (with the admin URL's password, if any).
pub fn role_urls(admin_url: &str) -> anyhow::Result<Vec<ServiceRole>> {
    let password = accrue_kit::db::url_password(admin_url)?;
    SCHEMAS
        .into_iter()
        .map(|schema| {
            let url = accrue_kit::db::role_url(admin_url, schema, password.as_deref())?;
            Ok(ServiceRole { schema, role: accrue_kit::db::role_name(schema), url })
        })
        .collect()
}
