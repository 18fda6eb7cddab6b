//! `accrue migrate`: applies every service's migrations to its own schema
//! ahead of a deployment (the Kubernetes migration Job), so that the
//! services can run with `--migrate=false` and never race on DDL during a
//! rollout.
//!
//! Two ways to connect:
//! - with an admin URL and `provision`: each service role is first made or
//!   brought up to date ([`crate::stack::provision_all`], as `accrue db
//!   provision`), then its schema is migrated over the admin connection
//!   acting as that role (`SET ROLE` at connection start), so every object
//!   belongs to the role without the job knowing the role's password;
//! - without: each schema is migrated over `ACCRUE_<SCHEMA>_DATABASE_URL`,
//!   else the one given URL, exactly as the service would on start.
//!
//! Idempotent: a schema that is up to date is left untouched (sqlx skips
//! applied versions under an advisory lock, so concurrent runs are safe too).

use std::str::FromStr;
use std::time::{Duration, Instant};

use accrue_kit::db::{DbError, role_name};
use accrue_kit::service::Service;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::pg::redact;
use crate::stack::SCHEMAS;

/// Why `accrue migrate` failed; each names the schema and the URL (its
/// password redacted) it was working on.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// No URL for a schema.
    #[error("no database URL for schema {schema}: set --database-url / DATABASE_URL or {env}")]
    NoUrl {
        /// The schema.
        schema: &'static str,
        /// Its own variable.
        env: String,
    },
    /// `provision` without an admin URL.
    #[error("--provision needs an admin URL: set --database-url or DATABASE_URL")]
    NoAdminUrl,
    /// The database did not accept connections in time.
    #[error("cannot reach {url} (waited {waited:?}): {source}")]
    Unreachable {
        /// The URL, redacted.
        url: String,
        /// How long it was tried.
        waited: Duration,
        /// The last connection error.
        #[source]
        source: sqlx::Error,
    },
    /// Provisioning the roles failed.
    #[error("provisioning the service roles through {url}: {source:#}")]
    Provision {
        /// The admin URL, redacted.
        url: String,
        /// What failed.
        #[source]
        source: anyhow::Error,
    },
    /// A schema's migrations failed.
    #[error("migrating schema {schema} as {role} through {url}: {source}")]
    Schema {
        /// The schema.
        schema: &'static str,
        /// The role the migrations ran as.
        role: String,
        /// The URL, redacted.
        url: String,
        /// What failed.
        #[source]
        source: DbError,
    },
}

/// What `accrue migrate` does.
#[derive(Debug, Clone)]
pub struct MigrateOptions {
    /// The URL for schemas without their own variable; with `provision`,
    /// the admin URL.
    pub database_url: Option<String>,
    /// Provision the service roles first and migrate acting as each role.
    pub provision: bool,
    /// With `provision`: each role's password (`None` leaves an existing
    /// role's password alone).
    pub passwords: std::collections::HashMap<&'static str, String>,
    /// How long to wait for the database to accept connections (a job may
    /// start before its database).
    pub wait: Duration,
}

/// One schema after `accrue migrate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaReport {
    /// The schema.
    pub schema: &'static str,
    /// The role that owns what the migrations made.
    pub role: String,
    /// Migrations applied by this run (0: it was up to date).
    pub applied: usize,
    /// Migrations the service has in all.
    pub known: usize,
}

impl std::fmt::Display for SchemaReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.applied == 0 {
            write!(f, "{:<12} up to date ({} migrations, role {})", self.schema, self.known, self.role)
        } else {
            write!(f, "{:<12} applied {} of {} migrations (role {})", self.schema, self.applied, self.known, self.role)
        }
    }
}

/// Each service's schema and migrations, in [`SCHEMAS`] order.
pub fn migrators() -> [(&'static str, &'static Migrator); 5] {
    [
        (accrue_hierarchy::Hierarchy::SCHEMA, accrue_hierarchy::Hierarchy::migrator()),
        (accrue_attribution::Attribution::SCHEMA, accrue_attribution::Attribution::migrator()),
        (accrue_commission::Commission::SCHEMA, accrue_commission::Commission::migrator()),
        (accrue_ledger::Ledger::SCHEMA, accrue_ledger::Ledger::migrator()),
        (accrue_payouts::Payouts::SCHEMA, accrue_payouts::Payouts::migrator()),
    ]
}

/// The variable service `schema` reads its own URL from
/// (`ACCRUE_LEDGER_DATABASE_URL`).
pub fn url_env(schema: &str) -> String {
    format!("ACCRUE_{}_DATABASE_URL", schema.to_uppercase())
}

/// Runs `accrue migrate`: provisions (if asked) and migrates the five
/// schemas, stopping at the first failure.
///
/// # Errors
///
/// [`MigrateError`] naming what failed.
pub async fn run(options: &MigrateOptions) -> Result<Vec<SchemaReport>, MigrateError> {
    if options.provision {
        let admin = options.database_url.as_deref().ok_or(MigrateError::NoAdminUrl)?;
        wait_for(admin, options.wait).await?;
        crate::stack::provision_all(admin, |schema| options.passwords.get(schema).cloned())
            .await
            .map_err(|source| MigrateError::Provision { url: redact(admin), source })?;
    }
    let mut reports = Vec::with_capacity(SCHEMAS.len());
    for (schema, migrator) in migrators() {
        let own = std::env::var(url_env(schema)).ok().filter(|url| !url.is_empty());
        // With provisioning, the admin URL acting as the role; a schema's
        // own URL is what the service itself connects with.
        let (url, act_as) = match (options.provision, own, &options.database_url) {
            (true, _, Some(admin)) => (admin.clone(), Some(role_name(schema))),
            (false, Some(own), _) => (own, None),
            (false, None, Some(url)) => (url.clone(), None),
            _ => return Err(MigrateError::NoUrl { schema, env: url_env(schema) }),
        };
        if !options.provision {
            wait_for(&url, options.wait).await?;
        }
        reports.push(migrate_schema(&url, schema, migrator, act_as.as_deref()).await?);
    }
    Ok(reports)
}

/// Applies `migrator` to `schema` through `url`, acting as role `act_as`
/// when given (the connecting role must be a member of it, as [`crate::stack::provision_all`]
/// makes the admin). Returns how many migrations it applied.
///
/// # Errors
///
/// [`MigrateError::Schema`].
pub async fn migrate_schema(
    url: &str,
    schema: &'static str,
    migrator: &'static Migrator,
    act_as: Option<&str>,
) -> Result<SchemaReport, MigrateError> {
    let failed =
        |role: &str, source: DbError| MigrateError::Schema { schema, role: role.to_string(), url: redact(url), source };
    let role_hint = act_as.unwrap_or("the URL's user");
    let pool = pool_as(url, schema, act_as).map_err(|error| failed(role_hint, error))?;
    let outcome = async {
        let sql = |role: &str| {
            let role = role.to_string();
            move |error: sqlx::Error| (role, DbError::Sql(error))
        };
        let role: String =
            sqlx::query_scalar("SELECT current_user::text").fetch_one(&pool).await.map_err(sql(role_hint))?;
        let before = applied_count(&pool, migrator).await.map_err(sql(&role))?;
        accrue_kit::db::migrate(&pool, schema, migrator).await.map_err(|error| (role.clone(), error))?;
        let after = applied_count(&pool, migrator).await.map_err(sql(&role))?;
        Ok(SchemaReport {
            schema,
            applied: after.saturating_sub(before),
            known: migrator.iter().filter(|m| !m.migration_type.is_down_migration()).count(),
            role,
        })
    }
    .await;
    pool.close().await;
    outcome.map_err(|(role, error): (String, DbError)| failed(&role, error))
}

/// A one-connection pool over `url` whose search path is `schema` and,
/// when `act_as` is given, whose role is `act_as` from the first statement
/// on (`-c role=…` in the startup packet).
fn pool_as(url: &str, schema: &str, act_as: Option<&str>) -> Result<PgPool, DbError> {
    let mut options = PgConnectOptions::from_str(url).map_err(DbError::Url)?.options([("search_path", schema)]);
    if let Some(role) = act_as {
        options = options.options([("role", role)]);
    }
    Ok(PgPoolOptions::new().max_connections(1).acquire_timeout(Duration::from_secs(30)).connect_lazy_with(options))
}

/// Rows in the schema's migration table (0 before the first migration).
async fn applied_count(pool: &PgPool, migrator: &Migrator) -> Result<usize, sqlx::Error> {
    let table = migrator.table_name.as_ref();
    let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL").bind(table).fetch_one(pool).await?;
    if !exists {
        return Ok(0);
    }
    let statement = format!("SELECT count(*) FROM \"{}\" WHERE success", table.replace('"', "\"\""));
    let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(statement)).fetch_one(pool).await?;
    Ok(usize::try_from(count).unwrap_or(0))
}

/// Waits until `url` accepts a connection, for at most `wait`.
async fn wait_for(url: &str, wait: Duration) -> Result<(), MigrateError> {
    let options = PgConnectOptions::from_str(url).map_err(|source| MigrateError::Unreachable {
        url: redact(url),
        waited: Duration::ZERO,
        source,
    })?;
    let started = Instant::now();
    loop {
        match sqlx::ConnectOptions::connect(&options).await {
            Ok(conn) => {
                let _ = sqlx::Connection::close(conn).await;
                return Ok(());
            }
            Err(source) if started.elapsed() >= wait || !is_transient(&source) => {
                return Err(MigrateError::Unreachable { url: redact(url), waited: started.elapsed(), source });
            }
            Err(error) => {
                tracing::warn!(url = %redact(url), %error, "database not reachable yet; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

/// A connection failure that waiting may cure (the server is down or still
/// starting), as opposed to a refused login or a missing database.
fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Tls(_) => true,
        // 57P03 cannot_connect_now: the server is starting up or in recovery.
        sqlx::Error::Database(db) => db.code().as_deref() == Some("57P03"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_service_has_its_migrator_in_schema_order() {
        let schemas: Vec<_> = migrators().iter().map(|(schema, _)| *schema).collect();
        assert_eq!(schemas, SCHEMAS);
        assert!(migrators().iter().all(|(_, migrator)| migrator.iter().next().is_some()));
    }

    #[test]
    fn a_report_says_whether_anything_changed() {
        let report = SchemaReport { schema: "ledger", role: "accrue_ledger".into(), applied: 0, known: 7 };
        assert_eq!(report.to_string(), "ledger       up to date (7 migrations, role accrue_ledger)");
        let report = SchemaReport { applied: 7, ..report };
        assert_eq!(report.to_string(), "ledger       applied 7 of 7 migrations (role accrue_ledger)");
    }
}
