//! The pools a service opens, and how their statements are planned.
//!
//! # Plans on a young database
//!
//! sqlx prepares every statement once per connection, and after five runs
//! Postgres may keep one generic plan for it, made from the statistics of
//! that moment. On a database younger than autovacuum's first ANALYZE (a new
//! deployment, a restore, each `accrue bench` run) that plan was made for
//! empty tables: sequential scans, kept while the tables grow. A statement
//! whose correlated probes then scan a table that grows with the sales is
//! linear in the table per row: the settlement's history read took 1.4–2.5 s
//! per batch after 10,000 sales (issue 15). Planning such a statement per
//! call does not help: a custom plan for a batch of 500 ids chose a
//! sequential scan filtered by the 500-element array and cost the
//! settlement a fifth of its throughput. Such a statement runs in a
//! transaction with [`index_probes_only`], where every table it reads has
//! the index it needs.
//!
//! A keyset page (`WHERE (created_at, id) > cursor ORDER BY created_at, id
//! LIMIT n`) has the opposite trap on any table that keeps growing: its
//! cursor lies past the newest value the statistics saw, so Postgres
//! estimates a handful of rows after it, fetches every row after the cursor
//! by bitmap, joins and sorts them all to keep the first `n` — each page
//! costs the rest of the table, and paging through it is quadratic
//! (ListEntries: 0.1–0.4 s a page at 100,000 entries, issue 15). A page
//! whose order an index gives runs with [`keyset_order_by_index`].

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};

use super::{DbConfig, DbError};

/// Makes the rest of the transaction plan its statements without
/// sequential scans where an index serves (`SET LOCAL enable_seqscan =
/// off`): for statements that must probe by index whatever the statistics
/// say (see "Plans on a young database" above). A plan made under it is
/// cached under it too, so a statement must always run this way.
pub async fn index_probes_only(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SET LOCAL enable_seqscan = off").execute(conn).await?;
    Ok(())
}

/// Makes the rest of the transaction produce `ORDER BY` from an index's
/// order rather than by sorting (`SET LOCAL enable_sort = off`): for a
/// keyset page whose `ORDER BY` an index gives, so that the page reads the
/// `LIMIT` rows after its cursor and stops, whatever the statistics say (see
/// "Plans on a young database" above). Only for such a statement: one whose
/// order no index gives still sorts (the setting prices a sort out, it
/// cannot forbid it), but may walk a worse index to avoid it.
pub async fn keyset_order_by_index(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SET LOCAL enable_sort = off").execute(conn).await?;
    Ok(())
}

/// Opens a lazy pool whose connections use `schema` as their search path.
/// Nothing connects until first use, so a service can start (NOT_SERVING)
/// while its database is still down.
pub fn pool(config: &DbConfig) -> Result<PgPool, DbError> {
    lazy_pool(config, &[])
}

/// The pool of a service's saga workers: like [`pool`], with two settings
/// on every connection.
///
/// - `synchronous_commit = off`: a crash may lose the last few hundred
///   milliseconds of commits (never a torn one). Only for work that is
///   idempotent and re-derivable after a crash — the workers' step log,
///   whose lost rows just make a step run again (DESIGN §3: every step may
///   run twice). Never for acknowledged writes.
/// - `enable_seqscan = off`: every statement a worker runs reads or writes
///   the rows of a claimed batch (at most a few thousand) by key, so a
///   sequential scan is never its right plan, and a planner that picks one
///   makes each batch's cost grow with every saga ever run. It did: the
///   engine's fenced writes join the batch's `UNNEST` of ids to `sagas`, and
///   for a batch of 500, custom plans (the first five runs of a statement on
///   each connection, which with a pool of eight is most of a short run)
///   priced 500 cached index probes at Postgres's default `random_page_cost`
///   above scanning 20,000 rows, and hashed the whole table — the claim, the
///   close, the sale settle and the heartbeat, each on every batch (issue
///   15). Where no index serves, Postgres still scans (the setting only
///   prices the scan out).
pub fn saga_worker_pool(config: &DbConfig) -> Result<PgPool, DbError> {
    lazy_pool(config, &[("synchronous_commit", "off"), ("enable_seqscan", "off")])
}

/// A lazy pool on `config` whose connections start with the schema as their
/// search path and `settings` (server parameters) besides.
fn lazy_pool(config: &DbConfig, settings: &[(&str, &str)]) -> Result<PgPool, DbError> {
    let options = PgConnectOptions::from_str(&config.url)
        .map_err(DbError::Url)?
        .options([("search_path", config.schema.as_str())])
        .options(settings.iter().copied());
    Ok(PgPoolOptions::new()
        .max_connections(config.max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_lazy_with(options))
}
