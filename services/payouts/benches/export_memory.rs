//! Peak memory of ExportPayouts (issue 12: "ExportPayouts of 100k payouts
//! streams in constant memory — measure peak RSS in a benchmark").
//!
//! Runs the payouts service (with the hierarchy and ledger it is wired to)
//! in this process on a fresh database of the local Postgres, seeds N
//! payouts per size straight into its schema, exports them over real gRPC
//! while the client counts rows and drops the bytes, and reports the growth
//! of this process's peak RSS (VmHWM, reset before each phase through
//! `/proc/self/clear_refs`) over its RSS before the phase. The baseline,
//! measured in the same run on the largest size, is what the export avoids:
//! the same payouts paged through ListPayouts into one in-memory list.
//!
//! ```text
//! cargo bench -p accrue-payouts --bench export_memory            # 10k, 100k, 1M
//! ACCRUE_BENCH_SIZES=1000,100000 cargo bench -p accrue-payouts --bench export_memory
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout, missing_docs)]

use std::time::{Duration, Instant};

use accrue_kit::auth::{Credential, Role};
use accrue_kit::client::AuthChannel;
use accrue_proto::payouts::v1 as pb;
use accrue_proto::payouts::v1::payout_service_client::PayoutServiceClient;
use accrue_testkit::TestServices;
use sqlx::PgPool;
use uuid::Uuid;

/// Resident set now and its peak since the last reset, in KiB (Linux).
fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|value| value.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Resets the peak (VmHWM) to the current RSS: "5" to clear_refs (Linux ≥ 4.0).
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Runs `phase`, returning its result, its duration and how far the
/// process's peak RSS rose above the RSS it started from (KiB).
async fn measured<T>(phase: impl std::future::Future<Output = T>) -> (T, Duration, u64) {
    reset_peak();
    let (before, _) = rss_kib();
    let started = Instant::now();
    let value = phase.await;
    let elapsed = started.elapsed();
    let (_, peak) = rss_kib();
    (value, elapsed, peak.saturating_sub(before))
}

/// Adds payouts until the program holds `total` (manual payouts, no run:
/// what the export reads is only the payouts table).
async fn seed(pool: &PgPool, program: Uuid, total: i64) {
    let have: i64 = sqlx::query_scalar("SELECT count(*) FROM payouts WHERE program_id = $1")
        .bind(program)
        .fetch_one(pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO payouts (id, program_id, partner_id, currency, amount, status, period, entry_count, \
         created_at, updated_at, approved_by, payment_reference, notes) \
         SELECT gen_random_uuid(), $1, gen_random_uuid(), 'GBP', ((i % 100000) + 1)::numeric / 100, \
                (ARRAY['PENDING_APPROVAL','APPROVED','PAID','FAILED'])[i % 4 + 1], '2011-01', 1 + i % 7, \
                timestamptz '2011-02-01' + i * interval '1 millisecond', clock_timestamp(), \
                'fiona@finance', 'TRX-' || i, 'bench, \"quoted\" note' \
         FROM generate_series($2::bigint, $3::bigint - 1) AS i",
    )
    .bind(program)
    .bind(have)
    .bind(total)
    .execute(pool)
    .await
    .unwrap();
    // A table filled in one statement has no statistics until autovacuum
    // gets to it; one grown by runs has. Without them the first export's
    // paged scans are planned as for an empty table (seconds instead of
    // milliseconds at 100k), which would measure the bulk load, not the export.
    sqlx::query("ANALYZE payouts").execute(pool).await.unwrap();
}

/// Exports every payout of `program`; returns (rows, bytes).
async fn export(client: &mut PayoutServiceClient<AuthChannel>, program: Uuid) -> (i64, u64) {
    let request = pb::ExportPayoutsRequest { program_id: program.to_string(), ..Default::default() };
    let mut stream = client.export_payouts(request).await.unwrap().into_inner();
    let (mut rows, mut bytes) = (0, 0);
    while let Some(chunk) = stream.message().await.unwrap() {
        rows += chunk.row_count;
        bytes += chunk.csv_chunk.len() as u64;
    }
    (rows, bytes)
}

/// The baseline: every payout paged through ListPayouts into one list.
async fn collect_all(client: &mut PayoutServiceClient<AuthChannel>, program: Uuid) -> usize {
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_payouts(pb::ListPayoutsRequest {
                program_id: program.to_string(),
                page_size: 1000,
                page_token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        all.extend(page.payouts);
        if page.next_page_token.is_empty() {
            return all.len();
        }
        page_token = page.next_page_token;
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

#[tokio::main]
async fn main() {
    let sizes: Vec<i64> = std::env::var("ACCRUE_BENCH_SIZES")
        .unwrap_or_else(|_| "10000,100000,1000000".into())
        .split(',')
        .map(|size| size.trim().parse().expect("ACCRUE_BENCH_SIZES: comma-separated counts"))
        .collect();
    let services = TestServices::new().await;
    let hierarchy = services.spawn::<accrue_hierarchy::Hierarchy>(accrue_hierarchy::Config::default()).await;
    let ledger = services
        .spawn::<accrue_ledger::Ledger>(accrue_ledger::Config {
            hierarchy_url: hierarchy.clone(),
            clear_matured_interval_seconds: 0,
        })
        .await;
    let url = services
        .spawn::<accrue_payouts::Payouts>(accrue_payouts::Config { hierarchy_url: hierarchy, ledger_url: ledger })
        .await;
    let token = services
        .minter()
        .mint("bench-finance", &[Role::Finance], &["*".to_string()], None, Duration::from_secs(3600))
        .unwrap();
    let mut client: PayoutServiceClient<AuthChannel> =
        accrue_kit::client::connect(&url, accrue_kit::client::BULK_TIMEOUT, &Credential::token(token)).unwrap();
    let pool = services.pool::<accrue_payouts::Payouts>();
    let program = Uuid::now_v7();

    println!("ExportPayouts peak memory (this process: client + payouts, hierarchy, ledger services)");
    println!("{:>10}  {:>10}  {:>9}  {:>10}  {:>16}", "payouts", "rows", "seconds", "rows/s", "peak RSS Δ (MiB)");
    let mut largest = 0;
    for &size in &sizes {
        seed(&pool, program, size).await;
        let ((rows, bytes), elapsed, grew) = measured(export(&mut client, program)).await;
        assert_eq!(rows, size, "every payout exported once");
        println!(
            "{size:>10}  {rows:>10}  {:>9.2}  {:>10.0}  {:>16}   ({:.1} MiB of CSV)",
            elapsed.as_secs_f64(),
            rows as f64 / elapsed.as_secs_f64(),
            mib(grew),
            bytes as f64 / 1_048_576.0
        );
        largest = size;
    }
    let (listed, elapsed, grew) = measured(collect_all(&mut client, program)).await;
    assert_eq!(listed as i64, largest);
    println!(
        "baseline: ListPayouts of the {largest} payouts collected into memory: {:.2} s, peak RSS Δ {} MiB",
        elapsed.as_secs_f64(),
        mib(grew)
    );
}
