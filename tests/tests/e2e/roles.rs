//! One database role per service (issue 10 item 6): the stack provisions
//! `accrue_<schema>` for each service, which owns its schema and everything
//! in it, and each service connects as its own role. A service role cannot
//! read or write another service's schema (SQLSTATE 42501), provisioning is
//! idempotent, and a database migrated as the admin before roles existed is
//! handed over to the roles, which then apply later migrations themselves.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use accrue_cli::stack::{SCHEMAS, Stack, StackConfig, provision_all};
use accrue_e2e::{Clients, TestStack};
use accrue_kit::db::{DbConfig, DbError, migrate, pool, role_name, role_url, url_password};
use accrue_testkit::TestDb;
use sqlx::migrate::Migrator;
use sqlx::{Connection, PgConnection};

/// The URL the stack gives service `schema` (the admin URL's password, if any).
fn url_as(db: &TestDb, schema: &str) -> String {
    role_url(&db.url, schema, url_password(&db.url).unwrap().as_deref()).unwrap()
}

async fn connect(url: &str) -> PgConnection {
    PgConnection::connect(url).await.unwrap_or_else(|error| panic!("connecting: {error}"))
}

/// The SQLSTATE `sql` fails with, or "ok".
async fn sql_state(conn: &mut PgConnection, sql: &'static str) -> String {
    match sqlx::raw_sql(sql).execute(&mut *conn).await {
        Ok(_) => "ok".into(),
        Err(sqlx::Error::Database(db)) => db.code().map(|code| code.into_owned()).unwrap_or_default(),
        Err(error) => panic!("{sql}: {error}"),
    }
}

/// A service's migrations, read from its directory (the e2e crate does not
/// depend on every service crate); the checksums are the embedded ones.
async fn migrator(schema: &str) -> Migrator {
    Migrator::new(migrations_dir(schema)).await.unwrap()
}

fn migrations_dir(schema: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../services").join(schema).join("migrations")
}

/// Every (schema, owner) of the objects in the five schemas — relations
/// (indexes included), routines, types (array and row types included) and
/// the schemas themselves — that is not the schema's own role.
async fn foreign_owned(conn: &mut PgConnection) -> Vec<(String, String, String)> {
    let schemas: Vec<String> = SCHEMAS.iter().map(|s| s.to_string()).collect();
    sqlx::query_as(
        "WITH objects AS ( \
             SELECT n.nspname, c.relname::text AS object, c.relowner AS owner \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             UNION ALL SELECT n.nspname, p.oid::regprocedure::text, p.proowner \
             FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
             UNION ALL SELECT n.nspname, t.typname::text, t.typowner \
             FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace \
             UNION ALL SELECT n.nspname, '(schema)', n.nspowner FROM pg_namespace n) \
         SELECT o.nspname::text, o.object, r.rolname::text \
         FROM objects o JOIN pg_roles r ON r.oid = o.owner \
         WHERE o.nspname = ANY($1) AND r.rolname <> 'accrue_' || o.nspname \
         ORDER BY 1, 2",
    )
    .bind(schemas)
    .fetch_all(&mut *conn)
    .await
    .unwrap()
}

/// Waits until the only client connections to the test database, besides
/// `conn`'s own, are the five service roles' (closed admin connections
/// linger for a moment); returns the last set seen.
async fn wait_for_service_roles_only(conn: &mut PgConnection) -> BTreeSet<String> {
    let expected: BTreeSet<String> = SCHEMAS.iter().map(|schema| role_name(schema)).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let users: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT usename::text FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
        )
        .fetch_all(&mut *conn)
        .await
        .unwrap();
        let users: BTreeSet<String> = users.into_iter().collect();
        if users == expected || tokio::time::Instant::now() > deadline {
            return users;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn each_service_connects_as_its_own_role_and_cannot_reach_another_schema() {
    let stack = TestStack::start().await.unwrap();
    let mut admin = connect(&stack.db.url).await;

    let mut hierarchy = connect(&url_as(&stack.db, "hierarchy")).await;
    assert_eq!(sql_state(&mut hierarchy, "SELECT count(*) FROM ledger.entries").await, "42501");
    assert_eq!(sql_state(&mut hierarchy, "SELECT count(*) FROM hierarchy.programs").await, "ok");
    let mut ledger = connect(&url_as(&stack.db, "ledger")).await;
    assert_eq!(sql_state(&mut ledger, "INSERT INTO attribution.sales DEFAULT VALUES").await, "42501");
    assert_eq!(sql_state(&mut ledger, "SELECT count(*) FROM attribution.sales").await, "42501");
    assert_eq!(sql_state(&mut ledger, "SELECT count(*) FROM ledger.entries").await, "ok");
    // Nor can a service role make a schema of its own to work around that.
    assert_eq!(sql_state(&mut ledger, "CREATE SCHEMA ledger_side_door").await, "42501");
    hierarchy.close().await.unwrap();
    ledger.close().await.unwrap();

    let owners: Vec<(String, String)> = sqlx::query_as(
        "SELECT schemaname::text, tableowner::text FROM pg_tables WHERE schemaname = ANY($1) ORDER BY 1, 2",
    )
    .bind(SCHEMAS.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    .fetch_all(&mut admin)
    .await
    .unwrap();
    for schema in SCHEMAS {
        assert!(owners.iter().any(|(s, _)| s == schema), "schema {schema} has tables");
    }
    for (schema, owner) in &owners {
        assert_eq!(owner, &role_name(schema), "tables of {schema}");
    }
    let migrations: String = sqlx::query_scalar(
        "SELECT tableowner::text FROM pg_tables WHERE schemaname = 'ledger' AND tablename = '_sqlx_migrations'",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(migrations, "accrue_ledger");
    assert_eq!(foreign_owned(&mut admin).await, Vec::new());

    let expected: BTreeSet<String> = SCHEMAS.iter().map(|schema| role_name(schema)).collect();
    assert_eq!(wait_for_service_roles_only(&mut admin).await, expected, "the services' live connections");
    admin.close().await.unwrap();
    stack.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn provisioning_is_idempotent_and_hands_over_a_database_migrated_as_the_admin() {
    let db = TestDb::create().await.unwrap();
    let mut admin = connect(&db.url).await;
    let admin_user: String = sqlx::query_scalar("SELECT current_user::text").fetch_one(&mut admin).await.unwrap();

    // The way a database was set up before roles: the admin migrates every
    // schema, hierarchy only to its first migration (later ones alter its
    // tables, which only an owner may), and leaves a few more kinds of
    // object behind.
    let first_only = tempfile::tempdir().unwrap();
    std::fs::copy(migrations_dir("hierarchy").join("0001_init.sql"), first_only.path().join("0001_init.sql")).unwrap();
    for schema in SCHEMAS {
        let migrator = if schema == "hierarchy" {
            Migrator::new(first_only.path()).await.unwrap()
        } else {
            migrator(schema).await
        };
        let pool = pool(&DbConfig { url: db.url.clone(), schema: schema.into(), max_connections: 1 }).unwrap();
        migrate(&pool, schema, &migrator).await.unwrap();
        pool.close().await;
    }
    sqlx::raw_sql(
        "CREATE TYPE payouts.legacy_state AS ENUM ('old'); \
         CREATE DOMAIN payouts.legacy_amount AS numeric CHECK (VALUE >= 0); \
         CREATE TYPE payouts.legacy_pair AS (a int, b int); \
         CREATE SEQUENCE payouts.legacy_numbers; \
         CREATE TABLE payouts.legacy_rows (id serial PRIMARY KEY, state payouts.legacy_state); \
         CREATE VIEW payouts.legacy_view AS SELECT id FROM payouts.legacy_rows;",
    )
    .execute(&mut admin)
    .await
    .unwrap();
    let before = foreign_owned(&mut admin).await;
    assert!(
        before.iter().any(|(schema, object, owner)| {
            schema == "ledger" && object == "_sqlx_migrations" && owner == &admin_user
        })
    );

    // Twice at once (roles are shared by the whole cluster, and other tests
    // provision them concurrently too), then once more.
    let password = url_password(&db.url).unwrap();
    let (first, second) =
        tokio::join!(provision_all(&db.url, |_| password.clone()), provision_all(&db.url, |_| password.clone()));
    first.unwrap();
    second.unwrap();
    let roles = provision_all(&db.url, |_| password.clone()).await.unwrap();
    assert_eq!(
        roles.iter().map(|r| r.role.as_str()).collect::<Vec<_>>(),
        ["accrue_hierarchy", "accrue_attribution", "accrue_commission", "accrue_ledger", "accrue_payouts"]
    );
    assert_eq!(roles[3].env_var(), "ACCRUE_LEDGER_DATABASE_URL");
    assert_eq!(foreign_owned(&mut admin).await, Vec::new(), "everything handed over");
    let public_grants: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_namespace n, aclexplode(n.nspacl) a WHERE n.nspname = ANY($1) AND a.grantee = 0",
    )
    .bind(SCHEMAS.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(public_grants, 0, "PUBLIC has no privilege on any service schema");
    let attributes: Vec<(String, bool, bool, bool, bool)> = sqlx::query_as(
        "SELECT rolname::text, rolsuper, rolcreatedb, rolcreaterole, rolcanlogin FROM pg_roles \
         WHERE rolname LIKE 'accrue\\_%' ORDER BY 1",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    for schema in SCHEMAS {
        let role = role_name(schema);
        assert!(attributes.contains(&(role.clone(), false, false, false, true)), "{role}: {attributes:?}");
    }

    // The stack provisions once more and migrates as the roles: hierarchy
    // applies its remaining migrations to tables the admin created.
    let stack = Stack::start(StackConfig::for_tests(db.url.clone())).await.unwrap();
    for (service, url) in stack.endpoints.list() {
        accrue_testkit::wait_serving(accrue_kit::client::channel(url).unwrap(), service).await.unwrap();
    }
    let applied: i64 =
        sqlx::query_scalar("SELECT count(*) FROM hierarchy._sqlx_migrations").fetch_one(&mut admin).await.unwrap();
    assert_eq!(applied, migrator("hierarchy").await.iter().count() as i64);
    assert_eq!(foreign_owned(&mut admin).await, Vec::new());
    let mut clients = Clients::connect(&stack.endpoints, &stack.admin).unwrap();
    let program_id = accrue_e2e::fixtures::program(&mut clients).await;
    assert!(!program_id.is_empty());
    let expected: BTreeSet<String> = SCHEMAS.iter().map(|schema| role_name(schema)).collect();
    assert_eq!(wait_for_service_roles_only(&mut admin).await, expected);

    drop(clients);
    stack.shutdown().await.unwrap();
    admin.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_role_that_may_not_create_its_schema_is_told_to_provision_first() {
    let db = TestDb::create().await.unwrap();
    let password = url_password(&db.url).unwrap();
    accrue_kit::db::provision(&db.url, "hierarchy", password.as_deref()).await.unwrap();
    let as_hierarchy = |schema: &str| {
        pool(&DbConfig { url: url_as(&db, "hierarchy"), schema: schema.into(), max_connections: 1 }).unwrap()
    };
    let ledger = migrator("ledger").await;

    // Missing, and the role may not create schemas.
    let error = migrate(&as_hierarchy("ledger"), "ledger", &ledger).await.unwrap_err();
    assert!(
        matches!(&error, DbError::NotProvisioned { schema, role, .. } if schema == "ledger" && role == "accrue_hierarchy")
    );
    assert!(error.to_string().contains("accrue db provision"), "{error}");

    // Present, but another role's.
    let mut admin = connect(&db.url).await;
    sqlx::raw_sql("CREATE SCHEMA ledger").execute(&mut admin).await.unwrap();
    let error = migrate(&as_hierarchy("ledger"), "ledger", &ledger).await.unwrap_err();
    assert!(matches!(error, DbError::NotProvisioned { .. }), "{error}");

    // Its own schema migrates (already there, owned by the role).
    migrate(&as_hierarchy("hierarchy"), "hierarchy", &migrator("hierarchy").await).await.unwrap();
    admin.close().await.unwrap();
}
