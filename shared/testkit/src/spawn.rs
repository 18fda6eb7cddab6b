//! Any Accrue service in-process on `127.0.0.1:0` over a fresh database, the
//! way the zero-to-production `spawn_app` does it: the real service, real
//! gRPC, real Postgres — no mocks.

use accrue_kit::client::{Client, PEER_TIMEOUT};
use accrue_kit::service::{Service, ServiceConfig};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{TestDb, wait_serving};

/// Pool size of each spawned service.
const MAX_CONNECTIONS: u32 = 4;

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
    /// URL once it reports SERVING (its migrations have run).
    pub async fn spawn<S: Service>(&self, config: S::Config) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|error| panic!("bind: {error}"));
        let url = match listener.local_addr() {
            Ok(addr) => format!("http://{addr}"),
            Err(error) => panic!("local address: {error}"),
        };
        let config =
            ServiceConfig { database_url: self.db.url.clone(), max_connections: MAX_CONNECTIONS, service: config };
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

    /// A client of the service at `url` (from [`TestServices::spawn`]).
    pub fn client<C: Client>(&self, url: &str) -> C {
        accrue_kit::client::connect(url, PEER_TIMEOUT).unwrap_or_else(|error| panic!("{error}"))
    }

    /// A small pool on `S`'s schema, for reading its tables directly.
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
