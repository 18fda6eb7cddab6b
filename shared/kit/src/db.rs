//! Postgres access for a service that owns one schema (DESIGN §2).
//!
//! Every connection's `search_path` is the service's schema, so its SQL names
//! its own tables unqualified and the sqlx migration table (`_sqlx_migrations`)
//! lives inside the schema: five services can share one database without their
//! migrations colliding, and each schema can move to its own cluster.
//!
//! Each service also connects as its own login role, `accrue_<schema>`, which
//! owns its schema and nothing else ([`provision`], [`role_url`]): a service
//! can then neither read nor write another service's tables, whatever bug or
//! injection it has. Provisioning needs an admin connection and runs before
//! the services start (`accrue db provision` in production; the dev stack and
//! the test kit do it themselves).
//!
//! The pools and their settings are in `pools`, migrations in `migrations`,
//! the service roles and their URLs in `roles`; why a connection was refused
//! in `refusal`.

use std::time::Duration;

use sqlx::PgPool;

use crate::error::StoreError;

mod migrations;
mod pools;
mod refusal;
mod roles;

pub use migrations::{check_migrated, migrate};
pub use pools::{index_probes_only, keyset_order_by_index, pool, saga_worker_pool};
pub use refusal::{RECENT as RECENT_REFUSAL, Refusal, diagnose, recent as recent_refusal};
pub use roles::{provision, provision_dev, role_name, role_url, url_password};

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
    /// The connecting role may not create or change objects in the schema:
    /// it is missing, or belongs to another role. The service roles cannot
    /// create schemas, so [`provision`] has to run first.
    #[error(
        "schema {schema} is not provisioned for role {role} ({detail}); provision the service roles first with an \
         admin connection: `accrue db provision --database-url ADMIN_URL` (accrue_kit::db::provision)"
    )]
    NotProvisioned {
        /// The service schema.
        schema: String,
        /// The role the service connected as (`current_user`).
        role: String,
        /// What is wrong, in Postgres's words or ours.
        detail: String,
    },
    /// A provisioning statement failed (most often: the admin role may not
    /// create roles or schemas, or does not own the objects to hand over).
    #[error("provisioning schema {schema} ({step}): {source}")]
    Provision {
        /// The service schema.
        schema: String,
        /// What was being done (`creating role accrue_ledger`).
        step: String,
        /// The database error.
        #[source]
        source: sqlx::Error,
    },
    /// A role's URL cannot be derived from the admin URL.
    #[error("cannot derive the service role's URL from the admin URL: {0}")]
    RoleUrl(String),
    /// Migrations are off for this service (`--migrate=false`) and its
    /// schema lacks migrations the binary knows, or holds one whose text
    /// changed since it was applied: the schema must be brought up to date
    /// first, by the migration job.
    #[error(
        "schema {schema} is not migrated ({detail}); migrations are off for this service (--migrate=false / \
         ACCRUE_MIGRATE=false), so run `accrue migrate` (the migration Job) against this database first"
    )]
    NotMigrated {
        /// The service schema.
        schema: String,
        /// What is missing or wrong (`missing 3 of 7 migrations, the first 20260101000000 (create ledger)`).
        detail: String,
    },
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
