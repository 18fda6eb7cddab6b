//! Test support (the zero-to-production pattern): a fresh, empty Postgres
//! database per test, and [`TestServices`] to run any Accrue service on it
//! in-process on an ephemeral port.
//!
//! The server comes from `ACCRUE_TEST_DATABASE_URL`, else `DATABASE_URL`, else
//! `postgres://postgres@127.0.0.1:5432/postgres`. Each [`TestDb`] creates a
//! uniquely named database there and drops it (WITH FORCE) when dropped.

mod serving;
mod spawn;

pub use serving::{SERVING_TIMEOUT, wait_serving};
pub use spawn::{TEST_SECRET, TestServices};

use sqlx::{Connection, PgConnection};

/// Why a test database could not be made.
#[derive(Debug)]
pub struct TestDbError(pub String);

impl std::fmt::Display for TestDbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TestDbError {}

/// The admin URL tests create their databases through.
pub fn admin_url() -> String {
    std::env::var("ACCRUE_TEST_DATABASE_URL")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

/// A database that exists for one test.
#[derive(Debug)]
pub struct TestDb {
    name: String,
    admin_url: String,
    /// URL of the fresh database.
    pub url: String,
}

impl TestDb {
    /// Creates a fresh database on the admin server.
    pub async fn create() -> Result<Self, TestDbError> {
        let admin_url = admin_url();
        let name = format!("accrue_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect(&admin_url)
            .await
            .map_err(|e| TestDbError(format!("cannot reach Postgres at {admin_url}: {e}")))?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .map_err(|e| TestDbError(format!("CREATE DATABASE {name}: {e}")))?;
        let _ = conn.close().await;
        let url = replace_database(&admin_url, &name);
        Ok(TestDb { name, admin_url, url })
    }

    /// A small pool on `schema` of this database with `migrator`'s
    /// migrations applied, for a store test that reads and writes one
    /// service's tables directly (no service running).
    pub async fn migrated_pool(
        &self,
        schema: &str,
        migrator: &sqlx::migrate::Migrator,
    ) -> Result<sqlx::PgPool, TestDbError> {
        let config = accrue_kit::db::DbConfig { url: self.url.clone(), schema: schema.to_string(), max_connections: 2 };
        let pool = accrue_kit::db::pool(&config).map_err(|e| TestDbError(format!("pool on {schema}: {e}")))?;
        accrue_kit::db::migrate(&pool, schema, migrator)
            .await
            .map_err(|e| TestDbError(format!("migrating {schema}: {e}")))?;
        Ok(pool)
    }
}

/// `url` with its database name replaced by `name`.
pub fn replace_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Drop runs inside or outside a runtime; a private thread + runtime
        // works in both.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            runtime.block_on(async move {
                if let Ok(mut conn) = PgConnection::connect(&admin_url).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
                        .execute(&mut conn)
                        .await;
                    let _ = conn.close().await;
                }
            });
        })
        .join();
    }
}
