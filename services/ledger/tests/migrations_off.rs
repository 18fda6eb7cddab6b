//! The ledger binary started with migrations off (`--migrate=false` or
//! `ACCRUE_MIGRATE=false`, as the Kubernetes Deployments run it) on a schema
//! the migration job has not migrated: it must not serve, and must say why
//! and what to run.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::process::{Command, Stdio};
use std::time::Duration;

use accrue_testkit::{TEST_SECRET, TestDb};

/// Runs the ledger binary on `url` with `extra` and `env`; returns its exit
/// status and stderr (or panics if it is still up after 30 s).
async fn run_ledger(url: &str, extra: &[&str], env: &[(&str, &str)]) -> (std::process::ExitStatus, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_accrue-ledger"));
    command
        .args(["--listen", "127.0.0.1:0"])
        .args(extra)
        .env_remove("DATABASE_URL")
        .env_remove("ACCRUE_MIGRATE")
        .env("ACCRUE_LEDGER_DATABASE_URL", url)
        .env("ACCRUE_AUTH_HS256_SECRET", TEST_SECRET)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let child = command.spawn().expect("the ledger binary starts");
    let output =
        tokio::time::timeout(Duration::from_secs(30), tokio::task::spawn_blocking(move || child.wait_with_output()))
            .await
            .expect("the ledger exits instead of serving an unmigrated schema")
            .unwrap()
            .unwrap();
    (output.status, String::from_utf8_lossy(&output.stderr).into_owned())
}

#[tokio::test]
async fn with_migrations_off_the_ledger_refuses_an_unmigrated_schema_and_names_the_fix() {
    let db = TestDb::create().await.unwrap();
    // The role and its empty schema exist (as after `accrue db provision`),
    // but no migration has run.
    let url = accrue_kit::db::provision_dev(&db.url, "ledger").await.unwrap();

    for (extra, env) in [(vec!["--migrate=false"], vec![]), (vec![], vec![("ACCRUE_MIGRATE", "false")])] {
        let (status, stderr) = run_ledger(&url, &extra, &env).await;
        assert!(!status.success(), "{extra:?} {env:?}: {stderr}");
        assert!(stderr.contains("schema ledger is not migrated"), "{stderr}");
        assert!(stderr.contains("none of"), "says nothing was applied: {stderr}");
        assert!(stderr.contains("run `accrue migrate`"), "names the fix: {stderr}");
    }

    // Nothing was created behind the operator's back.
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let tables: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_tables WHERE schemaname = 'ledger'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(tables, 0);
    pool.close().await;
}

#[tokio::test]
async fn with_migrations_off_the_ledger_refuses_a_schema_missing_its_latest_migration() {
    let db = TestDb::create().await.unwrap();
    let url = accrue_kit::db::provision_dev(&db.url, "ledger").await.unwrap();
    let migrator = <accrue_ledger::Ledger as accrue_kit::service::Service>::migrator();
    let pool = accrue_kit::db::pool(&accrue_kit::db::DbConfig {
        url: url.clone(),
        schema: "ledger".into(),
        max_connections: 1,
    })
    .unwrap();
    accrue_kit::db::migrate(&pool, "ledger", migrator).await.unwrap();
    let latest = migrator.iter().map(|m| m.version).max().unwrap();
    sqlx::query("DELETE FROM _sqlx_migrations WHERE version = $1").bind(latest).execute(&pool).await.unwrap();
    pool.close().await;

    let (status, stderr) = run_ledger(&url, &["--migrate=false"], &[]).await;
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("missing 1 of {} migrations, the first {latest}", migrator.iter().count())),
        "{stderr}"
    );
}
