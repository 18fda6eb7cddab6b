//! `accrue migrate`, the binary as the Kubernetes migration Job runs it, on
//! a fresh database: it provisions the roles and applies every schema's
//! migrations, a second run changes nothing, and without an admin URL each
//! schema is checked over its service's own URL.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::process::{Command, Output};

use accrue_testkit::TestDb;

const SCHEMAS: [&str; 5] = ["hierarchy", "attribution", "commission", "ledger", "payouts"];

fn accrue(args: &[&str], env: &[(String, String)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_accrue"));
    command.args(args).env_remove("DATABASE_URL");
    for schema in SCHEMAS {
        command.env_remove(format!("ACCRUE_{}_DATABASE_URL", schema.to_uppercase()));
    }
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("accrue runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// (schema, migrations recorded, latest installed_on) of every schema.
async fn recorded(url: &str) -> Vec<(String, i64, String)> {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let mut out = Vec::new();
    for schema in SCHEMAS {
        let row: (i64, String) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT count(*), COALESCE(max(installed_on)::text, '') FROM {schema}._sqlx_migrations WHERE success"
        )))
        .fetch_one(&pool)
        .await
        .unwrap();
        out.push((schema.to_string(), row.0, row.1));
    }
    pool.close().await;
    out
}

#[tokio::test]
async fn migrate_provisions_and_migrates_every_schema_once_and_then_is_a_no_op() {
    let db = TestDb::create().await.unwrap();
    let admin = [("DATABASE_URL".to_string(), db.url.clone())];

    let first = accrue(&["migrate", "--provision", "--wait", "0s"], &admin);
    let stdout = text(&first.stdout);
    assert!(first.status.success(), "{stdout}{}", text(&first.stderr));
    for schema in SCHEMAS {
        let line = stdout.lines().find(|line| line.starts_with(schema)).unwrap_or_else(|| panic!("{stdout}"));
        assert!(line.contains("applied") && line.contains(&format!("role accrue_{schema}")), "{line}");
    }
    let after_first = recorded(&db.url).await;
    assert!(after_first.iter().all(|(_, count, _)| *count > 0), "{after_first:?}");

    // Everything the migrations made belongs to the service's own role.
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let foreign: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT schemaname::text, tablename::text, tableowner::text FROM pg_tables \
         WHERE schemaname = ANY($1) AND tableowner <> 'accrue_' || schemaname",
    )
    .bind(SCHEMAS.map(String::from).to_vec())
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(foreign.is_empty(), "tables not owned by their service role: {foreign:?}");
    pool.close().await;

    let second = accrue(&["migrate", "--provision", "--wait", "0s"], &admin);
    let stdout = text(&second.stdout);
    assert!(second.status.success(), "{stdout}{}", text(&second.stderr));
    assert_eq!(stdout.matches("up to date (").count(), SCHEMAS.len(), "{stdout}");
    assert!(stdout.contains("0 migrations applied"), "{stdout}");
    assert_eq!(recorded(&db.url).await, after_first, "a second run changes nothing");

    // Without --provision: each schema over its service's own URL, as the
    // service would connect.
    let own: Vec<(String, String)> = SCHEMAS
        .iter()
        .map(|schema| {
            let url = accrue_kit::db::role_url(&db.url, schema, None).unwrap();
            (format!("ACCRUE_{}_DATABASE_URL", schema.to_uppercase()), url)
        })
        .collect();
    let third = accrue(&["migrate", "--wait", "0s"], &own);
    let stdout = text(&third.stdout);
    assert!(third.status.success(), "{stdout}{}", text(&third.stderr));
    assert_eq!(stdout.matches("up to date (").count(), SCHEMAS.len(), "{stdout}");
    assert_eq!(recorded(&db.url).await, after_first);
}

#[test]
fn migrate_without_a_database_url_says_which_variables_to_set() {
    let output = accrue(&["migrate"], &[]);
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(stderr.contains("no database URL for schema hierarchy"), "{stderr}");
    assert!(stderr.contains("ACCRUE_HIERARCHY_DATABASE_URL"), "{stderr}");

    let output = accrue(&["migrate", "--provision"], &[]);
    assert!(!output.status.success());
    assert!(text(&output.stderr).contains("--provision needs an admin URL"), "{}", text(&output.stderr));
}

#[tokio::test]
async fn migrate_names_the_schema_and_role_when_the_admin_may_not_provision() {
    let db = TestDb::create().await.unwrap();
    let Some(rest) = db.url.strip_prefix("postgres://postgres@") else {
        eprintln!("skipped: the test server's URL is not postgres://postgres@… ({})", db.url);
        return;
    };
    // A login role that is neither superuser nor CREATEROLE.
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let weak = format!("accrue_weak_{}", &db.url.rsplit('_').next().unwrap()[..8]);
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE ROLE {weak} LOGIN"))).execute(&pool).await.unwrap();
    pool.close().await;
    let weak_url = format!("postgres://{weak}@{rest}");

    let output = accrue(&["migrate", "--provision", "--wait", "0s"], &[("DATABASE_URL".into(), weak_url)]);
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(stderr.contains("provisioning the service roles"), "{stderr}");
    assert!(stderr.contains("hierarchy"), "{stderr}");

    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP ROLE {weak}"))).execute(&pool).await.unwrap();
    pool.close().await;
}
