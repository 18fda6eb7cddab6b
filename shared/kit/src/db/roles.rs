//! The login role each service connects as, `accrue_<schema>`, which owns
//! its schema and nothing else: provisioning it, and the URL it connects with.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{Connection, Executor};

use super::DbError;

/// The login role service schema `schema` connects as: `accrue_<schema>`
/// (`accrue_ledger`). Roles are cluster-wide, so every database of a cluster
/// that hosts Accrue shares the five roles.
pub fn role_name(schema: &str) -> String {
    format!("accrue_{schema}")
}

/// Serialises provisioners of one database (advisory locks are per
/// database): the schema and ownership changes below must not interleave.
const PROVISION_LOCK: i64 = 0x4163_6372_7565_0001;

/// How often a role statement that lost a race with a concurrent one on the
/// same role is retried. Races are real only where many provisioners start
/// at once (a test run, each test provisioning with the admin's password).
const ROLE_RETRIES: u32 = 10;

/// Makes service schema `schema` belong to its own login role, through an
/// admin connection (`admin_url`: a superuser, or a role with CREATEROLE
/// that may create schemas in the database and is a member of the roles
/// owning any objects to hand over). Idempotent, and safe to run while
/// other provisioners work on the same cluster (the test kit provisions a
/// fresh database per test, concurrently).
///
/// Afterwards:
/// - login role [`role_name`]`(schema)` exists with LOGIN, NOSUPERUSER,
///   NOCREATEDB, NOCREATEROLE, and may connect to the database. `password`
///   becomes its password; `None` leaves an existing role's password alone
///   (a new role then has none: for trust, peer or certificate auth);
/// - schema `schema` exists and is owned by the role, so the service can run
///   its own migrations (`CREATE`, `ALTER`) and nobody else needs a grant;
/// - the tables, views, sequences, functions and types already in the
///   schema are owned by the role: a database migrated before roles existed
///   (as the superuser, `_sqlx_migrations` included) is handed over, so later
///   migrations that alter those tables still work;
/// - PUBLIC has no privilege on the schema. Other service roles never get
///   one, so a service cannot read or write another's tables (Postgres
///   answers 42501 insufficient_privilege). Grants an operator made by hand
///   to other roles (say, a read-only reporting role) are kept.
///
/// Objects other than those above (operators, collations, text search
/// configurations, …) are not handed over; Accrue's migrations make none.
///
/// # Errors
///
/// [`DbError::Url`] for an unparsable URL, [`DbError::Sql`] when the
/// connection fails, [`DbError::Provision`] naming the step whose statement
/// failed (typically 42501: the admin lacks CREATEROLE, CREATE on the
/// database, or ownership of an object to hand over).
pub async fn provision(admin_url: &str, schema: &str, password: Option<&str>) -> Result<(), DbError> {
    let options = PgConnectOptions::from_str(admin_url).map_err(DbError::Url)?;
    let mut conn = PgConnection::connect_with(&options).await?;
    let role = role_name(schema);
    let result = async {
        ensure_role(&mut conn, schema, &role, password).await?;
        hand_over_schema(&mut conn, schema, &role).await
    }
    .await;
    // The outcome is already decided; a failed goodbye changes nothing.
    let _ = conn.close().await;
    result
}

/// Statements that make every object of schema `$1` that another role owns
/// belong to role `$2`. Table owners take their indexes, row types and
/// serial or identity sequences along (those sequences cannot change owner
/// alone, hence skipped); array and multirange types follow their element
/// or range type. Written by the server's `format()`, whose `%I` and
/// `reg*` output quote every name.
const HAND_OVER: &str = "\
WITH ns AS (SELECT oid, nspname FROM pg_namespace WHERE nspname = $1), \
     target AS (SELECT oid FROM pg_roles WHERE rolname = $2) \
SELECT format('ALTER %s %I.%I OWNER TO %I', \
              CASE c.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW' \
                             WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END, \
              ns.nspname, c.relname, $2::text) \
FROM pg_class c JOIN ns ON c.relnamespace = ns.oid CROSS JOIN target \
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') AND c.relowner <> target.oid \
  AND NOT (c.relkind = 'S' AND EXISTS ( \
      SELECT 1 FROM pg_depend d \
      WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid \
        AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i'))) \
UNION ALL \
SELECT format('ALTER ROUTINE %s OWNER TO %I', p.oid::regprocedure, $2::text) \
FROM pg_proc p JOIN ns ON p.pronamespace = ns.oid CROSS JOIN target \
WHERE p.proowner <> target.oid \
UNION ALL \
SELECT format('ALTER TYPE %I.%I OWNER TO %I', ns.nspname, t.typname, $2::text) \
FROM pg_type t JOIN ns ON t.typnamespace = ns.oid CROSS JOIN target \
WHERE t.typowner <> target.oid AND t.typtype <> 'm' \
  AND NOT EXISTS (SELECT 1 FROM pg_type e WHERE e.typarray = t.oid) \
  AND (t.typrelid = 0 OR EXISTS (SELECT 1 FROM pg_class k WHERE k.oid = t.typrelid AND k.relkind = 'c'))";

/// Creates login role `role` or brings its attributes (and password, when
/// given) in line, retrying when a concurrent provisioner of the same
/// cluster touched the same role at the same moment.
async fn ensure_role(conn: &mut PgConnection, schema: &str, role: &str, password: Option<&str>) -> Result<(), DbError> {
    let mut attempt = 0;
    loop {
        match ensure_role_once(conn, role, password).await {
            Ok(()) => return Ok(()),
            Err(error) if attempt < ROLE_RETRIES && lost_role_race(&error) => {
                attempt += 1;
                // Jittered, so that the losers of one race do not meet again.
                let jitter = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |now| u64::from(now.subsec_nanos() % 20));
                tokio::time::sleep(Duration::from_millis(10 * u64::from(attempt) + jitter)).await;
            }
            Err(source) => {
                return Err(DbError::Provision {
                    schema: schema.to_string(),
                    step: format!("creating or updating role {role}"),
                    source,
                });
            }
        }
    }
}

/// Another session created or changed the same role concurrently: CREATE
/// ROLE fails with 42710 duplicate_object (or 23505 on the catalog's unique
/// index), ALTER ROLE and GRANT with XX000 "tuple concurrently updated". The
/// next attempt sees the other session's work.
fn lost_role_race(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => match db.code().as_deref() {
            Some("42710" | "23505") => true,
            Some("XX000") => db.message().contains("concurrently updated"),
            _ => false,
        },
        _ => false,
    }
}

async fn ensure_role_once(conn: &mut PgConnection, role: &str, password: Option<&str>) -> Result<(), sqlx::Error> {
    let attributes: Option<(bool, bool, bool, bool)> =
        sqlx::query_as("SELECT rolsuper, rolcreatedb, rolcreaterole, rolcanlogin FROM pg_roles WHERE rolname = $1")
            .bind(role)
            .fetch_optional(&mut *conn)
            .await?;
    // ALTER ROLE only when something changes: concurrent ALTERs of one role
    // fail, and tests provision the same roles all at once.
    let verb = match attributes {
        None => Some("CREATE"),
        Some((false, false, false, true)) if password.is_none() => None,
        Some(_) => Some("ALTER"),
    };
    if let Some(verb) = verb {
        let statement: String = sqlx::query_scalar(
            "SELECT format('%s ROLE %I WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE', $1::text, $2::text) \
                    || COALESCE(' PASSWORD ' || quote_literal($3::text), '')",
        )
        .bind(verb)
        .bind(role)
        .bind(password)
        .fetch_one(&mut *conn)
        .await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement)).execute(&mut *conn).await?;
    }
    // An admin that is not a superuser may hand objects to the role only as
    // a member of it (a superuser always is).
    let member: bool =
        sqlx::query_scalar("SELECT pg_has_role(current_user, $1, 'USAGE')").bind(role).fetch_one(&mut *conn).await?;
    if !member {
        let grant = server_format(conn, "SELECT format('GRANT %I TO CURRENT_USER', $1::text)", &[role]).await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(grant)).execute(&mut *conn).await?;
    }
    Ok(())
}

/// Makes schema `schema` exist, belong to `role` with everything in it, and
/// closed to PUBLIC; lets `role` connect to the database. One transaction,
/// serialised with other provisioners of the same database.
async fn hand_over_schema(conn: &mut PgConnection, schema: &str, role: &str) -> Result<(), DbError> {
    let failed = |step: &str| {
        let step = step.to_string();
        move |source| DbError::Provision { schema: schema.to_string(), step, source }
    };
    let mut tx = conn.begin().await.map_err(failed("starting a transaction"))?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(PROVISION_LOCK)
        .execute(&mut *tx)
        .await
        .map_err(failed("waiting for other provisioners"))?;
    // `reg*` values print schema-qualified only when off the search path.
    tx.execute("SET LOCAL search_path = pg_catalog").await.map_err(failed("setting the search path"))?;
    let connect = server_format(
        &mut tx,
        "SELECT format('GRANT CONNECT ON DATABASE %I TO %I', current_database(), $1::text)",
        &[role],
    )
    .await
    .map_err(failed("granting CONNECT"))?;
    let owned: Option<bool> = sqlx::query_scalar(
        "SELECT n.nspowner = r.oid FROM pg_namespace n, pg_roles r WHERE n.nspname = $1 AND r.rolname = $2",
    )
    .bind(schema)
    .bind(role)
    .fetch_optional(&mut *tx)
    .await
    .map_err(failed("reading the schema's owner"))?;
    let schema_template = match owned {
        None => Some("SELECT format('CREATE SCHEMA %I AUTHORIZATION %I', $1::text, $2::text)"),
        Some(false) => Some("SELECT format('ALTER SCHEMA %I OWNER TO %I', $1::text, $2::text)"),
        Some(true) => None,
    };
    let schema_statement = match schema_template {
        Some(template) => Some(
            server_format(&mut tx, template, &[schema, role])
                .await
                .map_err(failed("creating the schema or changing its owner"))?,
        ),
        None => None,
    };
    let revoke = server_format(&mut tx, "SELECT format('REVOKE ALL ON SCHEMA %I FROM PUBLIC', $1::text)", &[schema])
        .await
        .map_err(failed("closing the schema to PUBLIC"))?;
    let hand_over: Vec<String> = sqlx::query_scalar(HAND_OVER)
        .bind(schema)
        .bind(role)
        .fetch_all(&mut *tx)
        .await
        .map_err(failed("listing objects owned by other roles"))?;
    let statements = std::iter::once(connect).chain(schema_statement).chain(std::iter::once(revoke));
    for statement in statements.chain(hand_over) {
        let step = format!("running `{statement}`");
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement)).execute(&mut *tx).await.map_err(failed(&step))?;
    }
    tx.commit().await.map_err(failed("committing"))?;
    Ok(())
}

/// A statement written by the server's `format()` from `template` (a
/// `SELECT format(…)` over `$1`, `$2`, …) and `args`, so that identifiers
/// (`%I`) and literals (`%L`, a password) are quoted by Postgres's own rules
/// — whatever `standard_conforming_strings` says.
async fn server_format(conn: &mut PgConnection, template: &'static str, args: &[&str]) -> Result<String, sqlx::Error> {
    let mut query = sqlx::query_scalar::<_, String>(template);
    for arg in args {
        query = query.bind(*arg);
    }
    query.fetch_one(&mut *conn).await
}

/// Development and tests: [`provision`]s `schema` with the admin URL's own
/// password (if it has one) and returns the URL the service connects with
/// ([`role_url`]). Reusing the admin's password is a convenience for a local
/// cluster with password authentication, where a development stack has no
/// secret store; production gives each role its own secret (`accrue db
/// provision --password-env`). With trust auth the roles need none.
///
/// # Errors
///
/// As [`provision`] and [`role_url`].
pub async fn provision_dev(admin_url: &str, schema: &str) -> Result<String, DbError> {
    let password = url_password(admin_url)?;
    provision(admin_url, schema, password.as_deref()).await?;
    role_url(admin_url, schema, password.as_deref())
}

/// The URL service `schema` connects with: `admin_url` with the user replaced
/// by [`role_name`]`(schema)` and the password by `password` (removed when
/// `None`); host, port, database and other parameters are kept.
/// `postgres://postgres:pw@db:5432/accrue?sslmode=require` becomes
/// `postgres://accrue_ledger:secret@db:5432/accrue?sslmode=require`. The
/// `user` and `password` query parameters are dropped (sqlx lets them
/// override the user info); a URL without a host (a Unix socket given as
/// `?host=/run/postgresql`) names the role in the query instead.
///
/// # Errors
///
/// [`DbError::RoleUrl`] when `admin_url` is not a URL.
pub fn role_url(admin_url: &str, schema: &str, password: Option<&str>) -> Result<String, DbError> {
    let mut url = url::Url::parse(admin_url).map_err(|error| DbError::RoleUrl(error.to_string()))?;
    let role = role_name(schema);
    let mut query: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(key, _)| key != "user" && key != "password")
        .map(|(key, value)| (key.into_owned(), value.into_owned()))
        .collect();
    if url.host_str().is_some_and(|host| !host.is_empty()) {
        url.set_username(&role).map_err(|()| DbError::RoleUrl("it cannot carry a user name".into()))?;
        url.set_password(password).map_err(|()| DbError::RoleUrl("it cannot carry a password".into()))?;
    } else {
        query.push(("user".into(), role));
        if let Some(password) = password {
            query.push(("password".into(), password.into()));
        }
    }
    if query.is_empty() {
        url.set_query(None);
    } else {
        url.query_pairs_mut().clear().extend_pairs(query);
    }
    Ok(url.into())
}

/// The password `url` carries (percent-decoded), in its user info or its
/// `password` query parameter; `None` when it has none.
///
/// # Errors
///
/// [`DbError::RoleUrl`] when `url` is not a URL or its password is not UTF-8.
pub fn url_password(url: &str) -> Result<Option<String>, DbError> {
    let url = url::Url::parse(url).map_err(|error| DbError::RoleUrl(error.to_string()))?;
    if let Some((_, password)) = url.query_pairs().find(|(key, _)| key == "password") {
        return Ok(Some(password.into_owned()));
    }
    url.password().map(percent_decode).transpose()
}

/// `%XX` escapes of URL user info decoded (a stray `%` stays as it is, as
/// sqlx reads it).
fn percent_decode(encoded: &str) -> Result<String, DbError> {
    let bytes = encoded.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let escaped = bytes.get(index + 1..index + 3).and_then(|hex| std::str::from_utf8(hex).ok());
        match (bytes[index], escaped.and_then(|hex| u8::from_str_radix(hex, 16).ok())) {
            (b'%', Some(byte)) => {
                decoded.push(byte);
                index += 3;
            }
            (byte, _) => {
                decoded.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8(decoded).map_err(|_| DbError::RoleUrl("the password is not UTF-8".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_named_after_their_schema() {
        assert_eq!(role_name("ledger"), "accrue_ledger");
    }

    #[test]
    fn a_role_url_swaps_the_user_and_password_and_keeps_the_rest() {
        let admin = "postgres://postgres:admin@db.internal:6432/accrue?sslmode=require";
        assert_eq!(
            role_url(admin, "ledger", Some("s3cret")).unwrap(),
            "postgres://accrue_ledger:s3cret@db.internal:6432/accrue?sslmode=require"
        );
        assert_eq!(
            role_url(admin, "ledger", None).unwrap(),
            "postgres://accrue_ledger@db.internal:6432/accrue?sslmode=require"
        );
        assert_eq!(
            role_url("postgres://127.0.0.1/accrue", "payouts", None).unwrap(),
            "postgres://accrue_payouts@127.0.0.1/accrue"
        );
    }

    #[test]
    fn a_role_url_escapes_the_password_the_way_sqlx_reads_it() {
        let url = role_url("postgres://postgres@h/db", "hierarchy", Some("p@ss:w/rd%")).unwrap();
        assert_eq!(url_password(&url).unwrap().as_deref(), Some("p@ss:w/rd%"));
        let options = PgConnectOptions::from_str(&url).unwrap();
        assert_eq!(options.get_username(), "accrue_hierarchy");
    }

    #[test]
    fn query_credentials_are_dropped_or_carry_the_role_without_a_host() {
        assert_eq!(
            role_url("postgres://h/db?user=postgres&password=x&application_name=a", "commission", None).unwrap(),
            "postgres://accrue_commission@h/db?application_name=a"
        );
        assert_eq!(
            role_url("postgres:///db?host=/run/postgresql&user=postgres", "ledger", Some("pw")).unwrap(),
            "postgres:///db?host=%2Frun%2Fpostgresql&user=accrue_ledger&password=pw"
        );
    }

    #[test]
    fn an_admin_password_is_read_from_the_user_info_or_the_query() {
        assert_eq!(url_password("postgres://u:a%2Fb@h/db").unwrap().as_deref(), Some("a/b"));
        assert_eq!(url_password("postgres://u@h/db?password=q").unwrap().as_deref(), Some("q"));
        assert_eq!(url_password("postgres://u@h/db").unwrap(), None);
        assert!(matches!(url_password("not a url"), Err(DbError::RoleUrl(_))));
    }
}
