//! Starts the five services in one process, each on its own port with real
//! gRPC between them (DESIGN §6 "Dev"). Used by `accrue dev`, `accrue replay
//! --dev` and the end-to-end tests (with port 0 for ephemeral ports).

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
}

/// How to start the stack.
#[derive(Debug, Clone)]
pub struct StackConfig {
    /// One Postgres URL for all five schemas.
    pub database_url: String,
    /// Host to bind (usually 127.0.0.1).
    pub host: std::net::IpAddr,
    /// Ports.
    pub ports: Ports,
    /// Pool size per service.
    pub max_connections: u32,
    /// Saga worker options for the attribution service.
    pub saga: accrue_attribution::SagaOptions,
    /// Faults injected into the attribution saga workers (none by default;
    /// settable only with the `test-hooks` feature).
    pub saga_hooks: accrue_attribution::SagaHooks,
    /// The token keys every service verifies with: a fresh random HS256
    /// secret per stack (development), from which each service mints its
    /// peer credential and [`Stack::admin`] is minted.
    pub auth: AuthConfig,
}

impl StackConfig {
    /// The stack on `host` and `ports` over one database, default saga options.
    pub fn new(database_url: String, host: std::net::IpAddr, ports: Ports, max_connections: u32) -> Self {
        StackConfig {
            database_url,
            host,
            ports,
            max_connections,
            saga: accrue_attribution::SagaOptions::default(),
            saga_hooks: accrue_attribution::SagaHooks::default(),
            auth: AuthConfig::hs256(dev_secret()),
        }
    }

    /// Loopback, ephemeral ports, default saga options.
    pub fn for_tests(database_url: String) -> Self {
        StackConfig::new(database_url, std::net::IpAddr::from([127, 0, 0, 1]), Ports::ephemeral(), 8)
    }
}

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
    /// Migrates all five schemas, then starts the services and returns once
    /// every one is listening. The returned stack stops on `shutdown()`.
    pub async fn start(config: StackConfig) -> anyhow::Result<Stack> {
        let url = config.database_url.clone();
        let max = config.max_connections;
        let (hierarchy_listener, hierarchy) = bind(config.host, config.ports.hierarchy).await?;
        let (attribution_listener, attribution) = bind(config.host, config.ports.attribution).await?;
        let (commission_listener, commission) = bind(config.host, config.ports.commission).await?;
        let (ledger_listener, ledger) = bind(config.host, config.ports.ledger).await?;
        let (payouts_listener, payouts) = bind(config.host, config.ports.payouts).await?;
        let endpoints = Endpoints { hierarchy, attribution, commission, ledger, payouts };

        migrate_all(&url).await?;

        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let minter = Minter::new(
            config.auth.hs256_secret.as_deref().unwrap_or_default(),
            &config.auth.issuer,
            &config.auth.audience,
        )
        .context("the stack's token secret")?;
        let admin_token = minter.mint("accrue-dev-admin", &[Role::Admin], &["*".to_string()], None, ADMIN_TOKEN_TTL)?;
        let mut launch = Launch {
            tasks: &mut tasks,
            database_url: &url,
            max_connections: max,
            auth: &config.auth,
            shutdown: &shutdown,
        };
        launch.spawn::<Hierarchy>(accrue_hierarchy::Config {}, hierarchy_listener);
        let commission_config = accrue_commission::Config { hierarchy_url: endpoints.hierarchy.clone() };
        launch.spawn::<Commission>(commission_config, commission_listener);
        let ledger_config = accrue_ledger::Config { hierarchy_url: endpoints.hierarchy.clone() };
        launch.spawn::<Ledger>(ledger_config, ledger_listener);
        let payouts_config =
            accrue_payouts::Config { hierarchy_url: endpoints.hierarchy.clone(), ledger_url: endpoints.ledger.clone() };
        launch.spawn::<Payouts>(payouts_config, payouts_listener);
        let attribution_config = accrue_attribution::Config {
            hierarchy_url: endpoints.hierarchy.clone(),
            commission_url: endpoints.commission.clone(),
            ledger_url: endpoints.ledger.clone(),
            max_future_skew: accrue_kit::convert::DEFAULT_MAX_FUTURE_SKEW,
            saga: config.saga.clone(),
            hooks: config.saga_hooks.clone(),
        };
        launch.spawn::<Attribution>(attribution_config, attribution_listener);
        let admin = Credential::token(admin_token.clone());
        Ok(Stack { endpoints, admin_token, admin, shutdown, tasks })
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

/// What every service of the stack shares when it is started.
struct Launch<'a> {
    tasks: &'a mut JoinSet<anyhow::Result<()>>,
    database_url: &'a str,
    max_connections: u32,
    auth: &'a AuthConfig,
    shutdown: &'a CancellationToken,
}

impl Launch<'_> {
    /// Runs service `S` as one task of the stack.
    fn spawn<S: Service>(&mut self, service: S::Config, listener: TcpListener) {
        let config = ServiceConfig {
            database_url: self.database_url.to_string(),
            max_connections: self.max_connections,
            auth: self.auth.clone(),
            service,
        };
        let token = self.shutdown.clone();
        self.tasks.spawn(async move {
            accrue_kit::service::run::<S>(config, listener, token)
                .await
                .with_context(|| format!("{} service", S::SCHEMA))
        });
    }
}

/// Applies every service's migrations to its own schema in `database_url`.
pub async fn migrate_all(database_url: &str) -> anyhow::Result<()> {
    use accrue_kit::db::{DbConfig, migrate, pool};
    let schemas: [(&str, &sqlx::migrate::Migrator); 5] = [
        (Hierarchy::SCHEMA, Hierarchy::migrator()),
        (Attribution::SCHEMA, Attribution::migrator()),
        (Commission::SCHEMA, Commission::migrator()),
        (Ledger::SCHEMA, Ledger::migrator()),
        (Payouts::SCHEMA, Payouts::migrator()),
    ];
    for (schema, migrator) in schemas {
        let db = pool(&DbConfig { url: database_url.to_string(), schema: schema.to_string(), max_connections: 1 })?;
        migrate(&db, schema, migrator).await.with_context(|| format!("migrating schema {schema}"))?;
        db.close().await;
    }
    Ok(())
}
