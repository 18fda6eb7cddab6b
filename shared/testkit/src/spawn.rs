//! Any Accrue service in-process on `127.0.0.1:0` over a fresh database, the
//! way the zero-to-production `spawn_app` does it: the real service, real
//! gRPC, real Postgres — no mocks.

use std::time::Duration;

use accrue_kit::auth::{AuthConfig, Credential, Minter, Role};
use accrue_kit::client::{Client, PEER_TIMEOUT};
use accrue_kit::service::{Service, ServiceConfig};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{TestDb, wait_serving};

/// Pool size of each spawned service.
const MAX_CONNECTIONS: u32 = 4;

/// The HS256 secret every spawned service verifies tokens with (test only).
pub const TEST_SECRET: &str = "accrue-testkit-hs256-secret-not-for-production";

/// Services spawned for one test over one fresh database. Dropping it stops
/// them, then drops the database.
pub struct TestServices {
    shutdown: CancellationToken,
    db: TestDb,
}

impl TestServices {
    /// A fresh database with nothing running on it yet.
    pub async fn new() -> Self {
        let db = TestDb::create().await.unwrap_or_else(|error| panic!("test database: {error}"));
        TestServices { shutdown: CancellationToken::new(), db }
    }

    /// The fresh database.
    pub fn db(&self) -> &TestDb {
        &self.db
    }

    /// Starts service `S` with `config` on an ephemeral port and returns its
    /// URL once it reports SERVING (its migrations have run). Like a
    /// deployment, `S` connects as its own role (`accrue_<schema>`,
    /// provisioned here on the fresh database), so a test would notice a
    /// service reaching into another's schema.
    pub async fn spawn<S: Service>(&self, config: S::Config) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|error| panic!("bind: {error}"));
        let url = match listener.local_addr() {
            Ok(addr) => format!("http://{addr}"),
            Err(error) => panic!("local address: {error}"),
        };
        let database_url = accrue_kit::db::provision_dev(&self.db.url, S::SCHEMA)
            .await
            .unwrap_or_else(|error| panic!("provisioning the {} role: {error}", S::SCHEMA));
        let config = ServiceConfig::new(database_url, AuthConfig::hs256(TEST_SECRET), config)
            .with_max_connections(MAX_CONNECTIONS);
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            if let Err(error) = accrue_kit::service::run::<S>(config, listener, shutdown).await {
                panic!("{} service failed: {error}", S::SCHEMA);
            }
        });
        let channel = accrue_kit::client::channel(&url).unwrap_or_else(|error| panic!("{error}"));
        wait_serving(channel, S::NAME).await.unwrap_or_else(|error| panic!("{error}"));
        url
    }

    /// A client of the service at `url` (from [`TestServices::spawn`]) with
    /// an admin token over every program.
    pub fn client<C: Client>(&self, url: &str) -> C {
        let admin = self
            .minter()
            .mint("test-admin", &[Role::Admin], &["*".to_string()], None, Duration::from_secs(3600))
            .unwrap_or_else(|error| panic!("{error}"));
        self.client_as(url, &Credential::token(admin))
    }

    /// A client of the service at `url` calling as `subject` with one
    /// `role` in `program` (an id or `*`), for a ten-minute token.
    pub fn client_for<C: Client>(&self, url: &str, subject: &str, role: Role, program: &str) -> C {
        let token = self
            .minter()
            .mint(subject, &[role], &[program.to_string()], None, Duration::from_secs(600))
            .unwrap_or_else(|error| panic!("{error}"));
        self.client_as(url, &Credential::token(token))
    }

    /// A client of the service at `url` calling with `credential`.
    pub fn client_as<C: Client>(&self, url: &str, credential: &Credential) -> C {
        accrue_kit::client::connect(url, PEER_TIMEOUT, credential).unwrap_or_else(|error| panic!("{error}"))
    }

    /// Signs tokens the spawned services accept ([`TEST_SECRET`]).
    pub fn minter(&self) -> Minter {
        Minter::new(TEST_SECRET, accrue_kit::auth::DEFAULT_ISSUER, accrue_kit::auth::DEFAULT_AUDIENCE)
            .unwrap_or_else(|error| panic!("{error}"))
    }

    /// A small pool on `S`'s schema, for reading its tables directly. It
    /// connects with the admin URL, not as `S`'s role.
    pub fn pool<S: Service>(&self) -> PgPool {
        let config =
            accrue_kit::db::DbConfig { url: self.db.url.clone(), schema: S::SCHEMA.to_string(), max_connections: 2 };
        accrue_kit::db::pool(&config).unwrap_or_else(|error| panic!("pool: {error}"))
    }
}

impl Drop for TestServices {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
