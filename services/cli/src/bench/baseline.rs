//! The Postgres limit `accrue bench` compares Accrue with (issue 15 item
//! 1): the same machine's Postgres writing, per sale, one sale row and its
//! ledger lines with unique idempotency keys — the durable facts of a
//! settled sale and nothing else — in two shapes:
//!
//! - **naive**: one transaction per sale from [`NAIVE_CONNECTIONS`]
//!   connections (what a Dub-style design does);
//! - **batched**: [`BATCH_SALES`] sales per transaction from
//!   [`BATCHED_CONNECTIONS`] connections (as pgbench would drive it).
//!
//! The tables live in their own schema, [`SCHEMA`], dropped and made again
//! at every measurement, in whatever database the bench was given; the
//! commits are fully durable (`synchronous_commit` as the server has it),
//! as Accrue's are.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

/// The schema the baseline writes to (dropped and made again each run).
pub const SCHEMA: &str = "bench_baseline";
/// Connections of the one-transaction-per-sale shape.
pub const NAIVE_CONNECTIONS: u32 = 8;
/// Connections of the batched shape.
pub const BATCHED_CONNECTIONS: u32 = 2;
/// Sales per transaction of the batched shape.
pub const BATCH_SALES: u64 = 50;

/// How much work each shape does.
#[derive(Debug, Clone, Copy)]
pub struct BaselineOptions {
    /// Ledger lines per sale (the workload's mean, rounded).
    pub lines_per_sale: u32,
    /// Sales written one transaction each.
    pub naive_sales: u64,
    /// Sales written [`BATCH_SALES`] per transaction.
    pub batched_sales: u64,
}

/// Sales per second of each shape.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Baseline {
    /// One transaction per sale, [`NAIVE_CONNECTIONS`] connections.
    pub naive_per_second: f64,
    /// [`BATCH_SALES`] sales per transaction, [`BATCHED_CONNECTIONS`] connections.
    pub batched_per_second: f64,
}

/// Why the baseline could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    /// A statement failed.
    #[error("baseline: {0}")]
    Db(#[from] sqlx::Error),
    /// A writer task panicked or was cancelled.
    #[error("baseline writer: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Measures both shapes on the database at `url` (the connecting role needs
/// CREATE on it): the schema is made afresh before each shape, so neither
/// inherits the other's rows.
pub async fn measure(url: &str, options: BaselineOptions) -> Result<Baseline, BaselineError> {
    let pool = PgPoolOptions::new().max_connections(NAIVE_CONNECTIONS).connect(url).await?;
    reset(&pool).await?;
    let naive = run(&pool, NAIVE_CONNECTIONS, 1, options.naive_sales, options.lines_per_sale).await?;
    reset(&pool).await?;
    let batched = run(&pool, BATCHED_CONNECTIONS, BATCH_SALES, options.batched_sales, options.lines_per_sale).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {SCHEMA} CASCADE"))).execute(&pool).await?;
    pool.close().await;
    Ok(Baseline {
        naive_per_second: per_second(options.naive_sales, naive),
        batched_per_second: per_second(options.batched_sales, batched),
    })
}

fn per_second(sales: u64, elapsed: Duration) -> f64 {
    sales as f64 / elapsed.as_secs_f64().max(f64::EPSILON)
}

/// Drops and makes the schema: a sale table and a ledger table shaped like
/// Accrue's durable facts (unique idempotency keys, the partner index a
/// balance query needs).
async fn reset(pool: &PgPool) -> Result<(), sqlx::Error> {
    let ddl = format!(
        "DROP SCHEMA IF EXISTS {SCHEMA} CASCADE;
         CREATE SCHEMA {SCHEMA};
         CREATE TABLE {SCHEMA}.sales (
             id uuid PRIMARY KEY,
             program_id uuid NOT NULL,
             idempotency_key text NOT NULL UNIQUE,
             amount numeric NOT NULL,
             currency text NOT NULL,
             occurred_at timestamptz NOT NULL,
             created_at timestamptz NOT NULL DEFAULT clock_timestamp());
         CREATE TABLE {SCHEMA}.ledger_entries (
             id uuid PRIMARY KEY,
             sale_id uuid NOT NULL REFERENCES {SCHEMA}.sales (id),
             partner_id uuid NOT NULL,
             idempotency_key text NOT NULL UNIQUE,
             kind text NOT NULL,
             amount numeric NOT NULL,
             currency text NOT NULL,
             status text NOT NULL,
             created_at timestamptz NOT NULL DEFAULT clock_timestamp());
         CREATE INDEX ON {SCHEMA}.ledger_entries (partner_id, created_at);"
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(ddl)).execute(pool).await?;
    Ok(())
}

/// Writes `sales` sales from `connections` concurrent writers, `per_tx`
/// sales per transaction; returns the wall time.
async fn run(pool: &PgPool, connections: u32, per_tx: u64, sales: u64, lines: u32) -> Result<Duration, BaselineError> {
    let next = Arc::new(AtomicU64::new(0));
    let program = Uuid::now_v7();
    let started = Instant::now();
    let mut writers = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let (pool, next) = (pool.clone(), next.clone());
        writers.spawn(async move {
            loop {
                let first = next.fetch_add(per_tx, Ordering::Relaxed);
                if first >= sales {
                    return Ok::<(), sqlx::Error>(());
                }
                let last = (first + per_tx).min(sales);
                write_batch(&pool, program, first..last, lines).await?;
            }
        });
    }
    while let Some(joined) = writers.join_next().await {
        joined??;
    }
    Ok(started.elapsed())
}

/// One transaction: the sales numbered `range` and `lines` ledger lines
/// each, two multi-row statements.
async fn write_batch(pool: &PgPool, program: Uuid, range: std::ops::Range<u64>, lines: u32) -> Result<(), sqlx::Error> {
    let count = (range.end - range.start) as usize;
    let mut sale_ids = Vec::with_capacity(count);
    let mut sale_keys = Vec::with_capacity(count);
    let mut amounts = Vec::with_capacity(count);
    let mut entry_ids = Vec::with_capacity(count * lines as usize);
    let mut entry_sales = Vec::with_capacity(count * lines as usize);
    let mut entry_partners = Vec::with_capacity(count * lines as usize);
    let mut entry_keys = Vec::with_capacity(count * lines as usize);
    let mut entry_amounts = Vec::with_capacity(count * lines as usize);
    for n in range {
        let sale = Uuid::now_v7();
        sale_ids.push(sale);
        sale_keys.push(format!("sale-{n}"));
        amounts.push(Decimal::new(1000 + (n % 9000) as i64, 2));
        for line in 0..lines {
            entry_ids.push(Uuid::now_v7());
            entry_sales.push(sale);
            entry_partners.push(Uuid::from_u128(u128::from(n % 1000) << 8 | u128::from(line)));
            entry_keys.push(format!("sale-{n}/{line}"));
            entry_amounts.push(Decimal::new(100 + i64::from(line), 2));
        }
    }
    let mut tx = pool.begin().await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {SCHEMA}.sales (id, program_id, idempotency_key, amount, currency, occurred_at) \
         SELECT s.id, $1, s.key, s.amount, 'GBP', clock_timestamp() \
         FROM unnest($2::uuid[], $3::text[], $4::numeric[]) AS s(id, key, amount)"
    )))
    .bind(program)
    .bind(&sale_ids)
    .bind(&sale_keys)
    .bind(&amounts)
    .execute(&mut *tx)
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {SCHEMA}.ledger_entries (id, sale_id, partner_id, idempotency_key, kind, amount, currency, status) \
         SELECT e.id, e.sale_id, e.partner_id, e.key, 'DIRECT', e.amount, 'GBP', 'PENDING' \
         FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::numeric[]) \
              AS e(id, sale_id, partner_id, key, amount)"
    )))
    .bind(&entry_ids)
    .bind(&entry_sales)
    .bind(&entry_partners)
    .bind(&entry_keys)
    .bind(&entry_amounts)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both shapes write exactly their sales and lines (counted before the
    /// schema is dropped) and report a positive rate.
    #[tokio::test]
    async fn both_shapes_write_every_sale_and_line() {
        let db = accrue_testkit::TestDb::create().await.unwrap();
        let pool = PgPoolOptions::new().max_connections(NAIVE_CONNECTIONS).connect(&db.url).await.unwrap();
        reset(&pool).await.unwrap();
        run(&pool, NAIVE_CONNECTIONS, 1, 37, 6).await.unwrap();
        let count = |table: &'static str| {
            let pool = pool.clone();
            async move {
                sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {SCHEMA}.{table}")))
                    .fetch_one(&pool)
                    .await
                    .unwrap()
            }
        };
        assert_eq!((count("sales").await, count("ledger_entries").await), (37, 37 * 6));
        reset(&pool).await.unwrap();
        run(&pool, BATCHED_CONNECTIONS, BATCH_SALES, 120, 6).await.unwrap();
        assert_eq!((count("sales").await, count("ledger_entries").await), (120, 120 * 6));
        pool.close().await;

        let options = BaselineOptions { lines_per_sale: 6, naive_sales: 50, batched_sales: 200 };
        let baseline = measure(&db.url, options).await.unwrap();
        assert!(baseline.naive_per_second > 0.0 && baseline.batched_per_second > 0.0, "{baseline:?}");
    }
}
