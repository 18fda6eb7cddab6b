//! A service's migrations, applied inside its own schema or checked there
//! by a service started with migrations off.

use sqlx::PgPool;
use sqlx::migrate::Migrator;

use super::DbError;
#[cfg(doc)]
use super::provision;

/// Creates the schema if it is missing and applies the service's migrations
/// inside it. Safe to run from several replicas at once (sqlx takes an
/// advisory lock).
///
/// A service connecting as its own role (see [`provision`]) finds its schema
/// already there and owned by it; a superuser (older deployments, ad-hoc
/// tools) may still create it here.
///
/// # Errors
///
/// [`DbError::NotProvisioned`] when the connecting role may not create the
/// missing schema or objects in it, or a migration is refused for lack of
/// privilege (tables that another role owns): the fix is to run
/// [`provision`], so the error says so instead of a bare SQL error.
/// [`DbError::Sql`] or [`DbError::Migrate`] otherwise.
pub async fn migrate(pool: &PgPool, schema: &str, migrator: &Migrator) -> Result<(), DbError> {
    // Postgres checks CREATE on the database before IF NOT EXISTS, so a role
    // that owns its schema but may not create schemas must not even try.
    let (role, exists, may_create): (String, bool, bool) = sqlx::query_as(
        "SELECT current_user::text, n.oid IS NOT NULL, \
                COALESCE(has_schema_privilege(n.oid, 'CREATE'), false) \
         FROM (SELECT 1) AS one LEFT JOIN pg_namespace n ON n.nspname = $1",
    )
    .bind(schema)
    .fetch_one(pool)
    .await?;
    let not_provisioned =
        |detail: String| DbError::NotProvisioned { schema: schema.to_string(), role: role.clone(), detail };
    if !exists {
        let statement = format!("CREATE SCHEMA IF NOT EXISTS {}", quote_ident(schema));
        match sqlx::query(sqlx::AssertSqlSafe(statement)).execute(pool).await {
            Ok(_) => {}
            // Concurrent CREATE SCHEMA IF NOT EXISTS can still race on the
            // catalog; a unique violation means another process won.
            Err(error) if crate::error::is_unique_violation(&error) => {}
            Err(error) if is_insufficient_privilege(&error) => {
                return Err(not_provisioned(format!("the schema does not exist and {role} may not create it")));
            }
            Err(error) => return Err(error.into()),
        }
    } else if !may_create {
        return Err(not_provisioned(format!("{role} may not create objects in it")));
    }
    match migrator.run(pool).await {
        Ok(()) => Ok(()),
        Err(error) => {
            let refused = match &error {
                sqlx::migrate::MigrateError::Execute(sql) | sqlx::migrate::MigrateError::ExecuteMigration(sql, _) => {
                    is_insufficient_privilege(sql)
                }
                _ => false,
            };
            if refused { Err(not_provisioned(format!("a migration was refused: {error}"))) } else { Err(error.into()) }
        }
    }
}

/// Checks, without changing anything, that every migration of `migrator` has
/// been applied to `schema` (the pool's search path) and still has the text
/// it was applied with — what a service started with migrations off needs
/// before it serves. Versions applied to the schema that the binary does not
/// know are accepted: during a rolling update the old replicas keep running
/// against a schema the new release's migration job already moved on.
///
/// # Errors
///
/// [`DbError::NotMigrated`] naming the first missing, failed or changed
/// migration; [`DbError::Sql`] when the database cannot be read (it may be
/// down: the caller retries).
pub async fn check_migrated(pool: &PgPool, schema: &str, migrator: &Migrator) -> Result<(), DbError> {
    let not_migrated = |detail: String| DbError::NotMigrated { schema: schema.to_string(), detail };
    let table = migrator.table_name.as_ref();
    // to_regclass resolves through the search path: the schema's own table.
    let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL").bind(table).fetch_one(pool).await?;
    let expected: Vec<_> = migrator.iter().filter(|m| !m.migration_type.is_down_migration()).collect();
    if !exists {
        return if expected.is_empty() {
            Ok(())
        } else {
            Err(not_migrated(format!(
                "it has no migration table {table}; none of {} migrations applied",
                expected.len()
            )))
        };
    }
    let statement = format!("SELECT version, checksum, success FROM {}", quote_ident(table));
    let applied: Vec<(i64, Vec<u8>, bool)> = sqlx::query_as(sqlx::AssertSqlSafe(statement)).fetch_all(pool).await?;
    let applied: std::collections::HashMap<i64, (Vec<u8>, bool)> =
        applied.into_iter().map(|(version, checksum, success)| (version, (checksum, success))).collect();
    let missing: Vec<_> = expected.iter().filter(|m| !applied.contains_key(&m.version)).collect();
    if let Some(first) = missing.first() {
        return Err(not_migrated(format!(
            "missing {} of {} migrations, the first {} ({})",
            missing.len(),
            expected.len(),
            first.version,
            first.description
        )));
    }
    for migration in &expected {
        match applied.get(&migration.version) {
            Some((_, false)) => {
                return Err(not_migrated(format!(
                    "migration {} ({}) failed part-way and is marked dirty",
                    migration.version, migration.description
                )));
            }
            Some((checksum, true)) if checksum.as_slice() != migration.checksum.as_ref() => {
                return Err(not_migrated(format!(
                    "migration {} ({}) was applied with a different text than this binary has",
                    migration.version, migration.description
                )));
            }
            _ => {}
        }
    }
    Ok(())
}

/// `name` as a double-quoted SQL identifier.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// SQLSTATE 42501: the role lacks a privilege.
fn is_insufficient_privilege(error: &sqlx::Error) -> bool {
    has_sql_state(error, "42501")
}

fn has_sql_state(error: &sqlx::Error, state: &str) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.code().as_deref() == Some(state))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("ledger"), "\"ledger\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
