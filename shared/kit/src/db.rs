//! Postgres access for a service that owns one schema (DESIGN §2).
//!
//! Every connection's `search_path` is the service's schema, so its SQL names
//! its own tables unqualified and the sqlx migration table (`_sqlx_migrations`)
//! lives inside the schema: five services can share one database without their
//! migrations colliding, and each schema can move to its own cluster.

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::error::StoreError;

/// Why the database could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The URL does not parse.
    #[error("invalid database URL: {0}")]
    Url(#[source] sqlx::Error),
    /// Connecting or running SQL failed.
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    /// A migration failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Pool settings for one service.
#[derive(Debug, Clone)]
pub struct DbConfig {
    /// `postgres://user@host:port/db`.
    pub url: String,
    /// The schema this service owns (`hierarchy`, `ledger`, …).
    pub schema: String,
    /// Maximum pool connections.
    pub max_connections: u32,
}

/// Opens a lazy pool whose connections use `schema` as their search path.
/// Nothing connects until first use, so a service can start (NOT_SERVING)
/// while its database is still down.
pub fn pool(config: &DbConfig) -> Result<PgPool, DbError> {
    let options = PgConnectOptions::from_str(&config.url)
        .map_err(DbError::Url)?
        .options([("search_path", config.schema.as_str())]);
    Ok(PgPoolOptions::new()
        .max_connections(config.max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_lazy_with(options))
}

/// Like [`pool`], but every transaction commits with `synchronous_commit =
/// off`: a crash may lose the last few hundred milliseconds of commits (never
/// a torn one). Only for work that is idempotent and re-derivable after a
/// crash — the saga workers' step log, whose lost rows just make a step run
/// again (DESIGN §3: every step may run twice). Never for acknowledged writes.
pub fn relaxed_durability_pool(config: &DbConfig) -> Result<PgPool, DbError> {
    let options = PgConnectOptions::from_str(&config.url)
        .map_err(DbError::Url)?
        .options([("search_path", config.schema.as_str()), ("synchronous_commit", "off")]);
    Ok(PgPoolOptions::new()
        .max_connections(config.max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_lazy_with(options))
}

/// Creates the schema if needed and applies the service's migrations inside
/// it. Safe to run from several replicas at once (sqlx takes an advisory lock).
pub async fn migrate(pool: &PgPool, schema: &str, migrator: &Migrator) -> Result<(), DbError> {
    // Concurrent CREATE SCHEMA IF NOT EXISTS can still race on the catalog;
    // a unique violation there means another process won, which is fine.
    let statement = format!("CREATE SCHEMA IF NOT EXISTS \"{}\"", schema.replace('"', ""));
    if let Err(error) = sqlx::query(sqlx::AssertSqlSafe(statement)).execute(pool).await
        && !crate::error::is_unique_violation(&error)
    {
        return Err(error.into());
    }
    migrator.run(pool).await?;
    Ok(())
}

/// True when a trivial query succeeds within two seconds.
pub async fn is_reachable(pool: &PgPool) -> bool {
    matches!(tokio::time::timeout(Duration::from_secs(2), sqlx::query("SELECT 1").execute(pool)).await, Ok(Ok(_)))
}

/// Starts a transaction on `pool`, its failure a [`StoreError`] like every
/// other store call's.
pub async fn begin(pool: &PgPool) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StoreError> {
    Ok(pool.begin().await?)
}

/// Commits `tx`.
pub async fn commit(tx: sqlx::Transaction<'_, sqlx::Postgres>) -> Result<(), StoreError> {
    Ok(tx.commit().await?)
}
