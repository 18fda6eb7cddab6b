//! What the SettleSale saga reads and writes on sales: the facts it
//! resolves, and the sale's state when it settles, unwinds or fails.

// The store's imports and shared helpers.
use super::*;

/// The sales of a claimed batch of SettleSale sagas, by saga id (one query;
/// a sale's `saga_id` is the saga that settles it).
pub(crate) async fn saga_sales(pool: &PgPool, saga_ids: &[SagaId]) -> Result<HashMap<SagaId, SaleRow>, sqlx::Error> {
    let sales: Vec<SaleRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {} FROM sagas g JOIN sales s ON s.id = g.sale_id WHERE g.id = ANY($1)",
        sale_columns_of("s")
    )))
    .bind(saga_ids)
    .fetch_all(pool)
    .await?;
    Ok(sales.into_iter().filter_map(|s| s.saga_id.map(|id| (id, s))).collect())
}

/// The one statement of a seller's volume before a sale (TIERED prior
/// volume, DESIGN §4; the personal volume of qualified overrides, issue 16
/// item 3): Σ gross (major units) of the partner's attributed sales in the
/// currency with `(occurred_at, id)` before the row `s`'s, whatever their
/// state. `s` must have `program_id`, `partner_id`, `currency`,
/// `occurred_at`, `id` and `t` (= `occurred_at AT TIME ZONE 'UTC'`). A sale
/// with a seller is attributed (constraint `sales_seller_iff_attributed`),
/// so no state test is needed.
///
/// From the calendar buckets (migration 0008), each grain read by its own
/// primary-key range probe (one filter over all of a seller's buckets read
/// every hour it ever sold in): the years before t's, the months of its year
/// before t's, the days of its month before t's; then the hours of its day,
/// one of two ways, both exact. A sale of an hour that is still under way,
/// or of the later half of its hour, takes the day's hours up to and
/// including its own (one probe) less its hour's sales at or after it: sales settled as they
/// happen read only the few recorded since (reading the hour's earlier sales
/// one by one, a seller selling a thousand times a second summed ever more
/// of them for each new sale, two thirds of the settlement's history read in
/// the bench's latency run, issue 15). A sale of the earlier half of a past
/// hour takes the day's hours before its own plus its hour's sales before it. Work is bounded by the calendar
/// and at most half an hour's sales of a past hour, not by the history.
///
/// The hour's sales are bounded by row comparisons that lead with the
/// seller, `(partner_id, occurred_at[, id])`, which only `sales_seller_order`
/// can take as its range; see [`sale_histories`] for why. A macro so that
/// each query embeds it with `concat!` and stays one static statement.
macro_rules! seller_volume_before {
    () => {
        r#"((SELECT COALESCE(sum(v.amount), 0) FROM seller_volumes v
             WHERE v.program_id = s.program_id AND v.partner_id = s.partner_id AND v.currency = s.currency
               AND v.grain = 'year' AND v.period < date_trunc('year', s.t))
          + (SELECT COALESCE(sum(v.amount), 0) FROM seller_volumes v
             WHERE v.program_id = s.program_id AND v.partner_id = s.partner_id AND v.currency = s.currency
               AND v.grain = 'month' AND v.period >= date_trunc('year', s.t) AND v.period < date_trunc('month', s.t))
          + (SELECT COALESCE(sum(v.amount), 0) FROM seller_volumes v
             WHERE v.program_id = s.program_id AND v.partner_id = s.partner_id AND v.currency = s.currency
               AND v.grain = 'day' AND v.period >= date_trunc('month', s.t) AND v.period < date_trunc('day', s.t))
          + CASE WHEN date_trunc('hour', s.t) + interval '1 hour' > (statement_timestamp() AT TIME ZONE 'UTC')
                   OR s.t >= date_trunc('hour', s.t) + interval '30 minutes'
            THEN (SELECT COALESCE(sum(v.amount), 0) FROM seller_volumes v
                  WHERE v.program_id = s.program_id AND v.partner_id = s.partner_id AND v.currency = s.currency
                    AND v.grain = 'hour' AND v.period >= date_trunc('day', s.t)
                    AND v.period <= date_trunc('hour', s.t))
               - (SELECT COALESCE(sum(p.amount), 0) FROM sales p
                  WHERE p.program_id = s.program_id AND p.partner_id = s.partner_id AND p.currency = s.currency
                    AND (p.partner_id, p.occurred_at)
                        < (s.partner_id, (date_trunc('hour', s.t) + interval '1 hour') AT TIME ZONE 'UTC')
                    AND (p.partner_id, p.occurred_at, p.id) >= (s.partner_id, s.occurred_at, s.id))
            ELSE (SELECT COALESCE(sum(v.amount), 0) FROM seller_volumes v
                  WHERE v.program_id = s.program_id AND v.partner_id = s.partner_id AND v.currency = s.currency
                    AND v.grain = 'hour' AND v.period >= date_trunc('day', s.t)
                    AND v.period < date_trunc('hour', s.t))
               + (SELECT COALESCE(sum(p.amount), 0) FROM sales p
                  WHERE p.program_id = s.program_id AND p.partner_id = s.partner_id AND p.currency = s.currency
                    AND (p.partner_id, p.occurred_at) >= (s.partner_id, date_trunc('hour', s.t) AT TIME ZONE 'UTC')
                    AND (p.partner_id, p.occurred_at, p.id) < (s.partner_id, s.occurred_at, s.id))
            END)"#
    };
}

/// What the rules need from a sale's history (see [`sale_histories`]).
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct SaleHistory {
    /// The sale.
    pub(crate) id: SaleId,
    /// A PAYMENT or RENEWAL with no earlier one by its customer in the program.
    pub(crate) is_first_payment: bool,
    /// Σ the seller's earlier attributed sales in the sale's currency (major units).
    pub(crate) prior_volume: Decimal,
    /// The customer's earlier attributed sales, oldest first, column by
    /// column (arrays rather than a JSON document: no JSON built in Postgres
    /// nor parsed here, issue 15): ids, event types, sellers (None: no
    /// seller), times and service codes, all of one length.
    pub(crate) history_ids: Vec<SaleId>,
    pub(crate) history_event_types: Vec<String>,
    pub(crate) history_sellers: Vec<Option<PartnerId>>,
    pub(crate) history_times: Vec<DateTime<Utc>>,
    pub(crate) history_service_codes: Vec<String>,
}

/// The statement of [`sale_histories`] (`$1`: the sale ids). The
/// customer's earlier sales are read once, by one range of
/// `sales_customer_order`, for both facts: the first payment looks at all of
/// them, the history keeps the attributed ones (a probe of its own for the
/// first payment read the same range again, issue 15).
const SALE_HISTORIES: &str = concat!(
    r#"WITH batch AS (
               SELECT id, program_id, partner_id, currency, customer_external_id, event_type, occurred_at,
                      occurred_at AT TIME ZONE 'UTC' AS t
               FROM sales WHERE id = ANY($1)
           )
           SELECT s.id,
             (s.event_type IN ('PAYMENT', 'RENEWAL') AND s.customer_external_id IS NOT NULL
              AND NOT COALESCE(h.paid_before, false)) AS is_first_payment,
             CASE WHEN s.partner_id IS NULL THEN 0 ELSE "#,
    seller_volume_before!(),
    r#" END AS prior_volume,
             COALESCE(h.ids, '{}') AS history_ids, COALESCE(h.event_types, '{}') AS history_event_types,
             COALESCE(h.sellers, '{}') AS history_sellers, COALESCE(h.times, '{}') AS history_times,
             COALESCE(h.service_codes, '{}') AS history_service_codes
           FROM batch s
           LEFT JOIN LATERAL (
               SELECT bool_or(e.event_type IN ('PAYMENT', 'RENEWAL')) AS paid_before,
                      array_agg(e.id ORDER BY e.occurred_at, e.id) FILTER (WHERE e.state <> 'UNATTRIBUTED') AS ids,
                      array_agg(e.event_type ORDER BY e.occurred_at, e.id)
                          FILTER (WHERE e.state <> 'UNATTRIBUTED') AS event_types,
                      array_agg(e.partner_id ORDER BY e.occurred_at, e.id)
                          FILTER (WHERE e.state <> 'UNATTRIBUTED') AS sellers,
                      array_agg(e.occurred_at ORDER BY e.occurred_at, e.id)
                          FILTER (WHERE e.state <> 'UNATTRIBUTED') AS times,
                      array_agg(e.service_code ORDER BY e.occurred_at, e.id)
                          FILTER (WHERE e.state <> 'UNATTRIBUTED') AS service_codes
               FROM sales e
               WHERE e.program_id = s.program_id AND e.customer_external_id = s.customer_external_id
                 AND (e.customer_external_id, e.occurred_at, e.id) < (s.customer_external_id, s.occurred_at, s.id)
           ) h ON true"#
);

/// The history facts of every sale in `ids`, in one query, which probes
/// only by index whatever the statistics say (see accrue_kit::db, "Plans on
/// a young database").
///
/// "Earlier than the sale" is written as a row comparison that leads with
/// the customer, `(customer_external_id, occurred_at, id) < (…)` (beside the
/// customer's equality, so it means the same as `(occurred_at, id) < (…)`):
/// `sales_customer_order` takes it as its range and `sales_program_order`
/// (program, occurred_at, id) cannot. Written as `(occurred_at, id) < (…)`,
/// both indexes could, and while the statistics were those of a younger
/// table the two paths cost the same: Postgres took the program's index and
/// filtered on the customer, reading every earlier sale of the program for
/// each sale — 5,400 rows per sale and 1.7 s for a batch of 352, 30 s into
/// the bench's latency run, whose p99 it set (issue 15).
pub(crate) async fn sale_histories(
    pool: &PgPool,
    ids: &[SaleId],
    probes: IndexProbes,
) -> Result<Vec<SaleHistory>, sqlx::Error> {
    match probes {
        IndexProbes::Pooled => sqlx::query_as(SALE_HISTORIES).bind(ids).fetch_all(pool).await,
        IndexProbes::SetLocal => {
            let mut tx = pool.begin().await?;
            accrue_kit::db::index_probes_only(&mut tx).await?;
            let histories = sqlx::query_as(SALE_HISTORIES).bind(ids).fetch_all(&mut *tx).await?;
            tx.commit().await?;
            Ok(histories)
        }
    }
}

/// Where a statement that must probe by index gets `enable_seqscan = off`
/// (see accrue_kit::db, "Plans on a young database").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IndexProbes {
    /// From the pool: its connections plan that way already (the saga
    /// workers' pool, `accrue_kit::db::saga_worker_pool`), so the statement
    /// runs alone, in one round trip.
    Pooled,
    /// From a transaction around the statement (`SET LOCAL`), on any other
    /// pool: four round trips.
    SetLocal,
}

/// A settled sale's totals, for the saga (and generation) that settled it.
#[derive(Debug, Clone)]
pub(crate) struct Settled {
    pub(crate) saga_id: SagaId,
    pub(crate) generation: i64,
    pub(crate) base_commission: Decimal,
    pub(crate) total_commission: Decimal,
}

/// Marks each saga's sale SETTLED with its totals and the time, fenced on the
/// saga's generation (a saga a newer owner holds changes nothing); run in the
/// engine's transaction that closes the sagas done.
pub(crate) async fn settle_sales(conn: &mut sqlx::PgConnection, settled: &[Settled]) -> Result<(), sqlx::Error> {
    if settled.is_empty() {
        return Ok(());
    }
    let saga_ids: Vec<SagaId> = settled.iter().map(|s| s.saga_id).collect();
    let generations: Vec<i64> = settled.iter().map(|s| s.generation).collect();
    let bases: Vec<Decimal> = settled.iter().map(|s| s.base_commission).collect();
    let totals: Vec<Decimal> = settled.iter().map(|s| s.total_commission).collect();
    // RETURNING the settled sales for their sale.settled events, written in
    // this same (closing) transaction.
    let rows: Vec<SaleRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE sales SET state = $5, base_commission = u.base, total_commission = u.total, failure_reason = '',
             settled_at = clock_timestamp()
         FROM UNNEST($1::uuid[], $2::bigint[], $3::numeric[], $4::numeric[]) AS u(saga_id, generation, base, total)
         JOIN sagas g ON g.id = u.saga_id AND g.generation = u.generation
         WHERE sales.id = g.sale_id
         RETURNING {}",
        sale_columns_of("sales")
    )))
    .bind(&saga_ids)
    .bind(&generations)
    .bind(&bases)
    .bind(&totals)
    .bind(SaleState::Settled)
    .fetch_all(&mut *conn)
    .await?;
    let settled: Vec<NewEvent> = rows
        .iter()
        .map(|row| events::sale(&catalogue::SALE_SETTLED, row, row.settled_at.unwrap_or(row.created_at)))
        .collect();
    accrue_kit::events::insert(conn, &settled).await.map_err(|error| error.0)
}

/// Marks each unwound saga's sale FAILED with the saga's reason (inside the
/// engine's fenced transaction that fails the sagas).
pub(crate) async fn fail_sales(conn: &mut sqlx::PgConnection, sagas: &[&Saga]) -> Result<(), sqlx::Error> {
    if sagas.is_empty() {
        return Ok(());
    }
    let saga_ids: Vec<SagaId> = sagas.iter().map(|s| s.id).collect();
    let reasons: Vec<&str> = sagas.iter().map(|s| s.failure_reason.as_str()).collect();
    let rows: Vec<SaleRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE sales SET state = $3, failure_reason = u.reason, base_commission = NULL, total_commission = NULL
         FROM UNNEST($1::uuid[], $2::text[]) AS u(saga_id, reason)
         JOIN sagas g ON g.id = u.saga_id
         WHERE sales.id = g.sale_id
         RETURNING {}",
        sale_columns_of("sales")
    )))
    .bind(&saga_ids)
    .bind(&reasons)
    .bind(SaleState::Failed)
    .fetch_all(&mut *conn)
    .await?;
    let now = Utc::now();
    let failed: Vec<NewEvent> = rows.iter().map(|row| events::sale(&catalogue::SALE_FAILED, row, now)).collect();
    accrue_kit::events::insert(conn, &failed).await.map_err(|error| error.0)
}

/// One personal-volume window of qualified overrides (issue 16 item 3): a
/// partner's own attributed sales (as seller) in `currency` with
/// `start <= occurred_at < end`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VolumeWindow {
    pub(crate) partner_id: PartnerId,
    pub(crate) currency: String,
    pub(crate) start: DateTime<Utc>,
    pub(crate) end: DateTime<Utc>,
}

/// Σ gross (major units) of each window's sales, in window order, from the
/// `seller_volumes` calendar buckets (migration 0008), as a sale's prior
/// volume is: a window's volume is V(end) − V(start), where V(t) — Σ of the
/// partner's sales with `occurred_at < t` — is Σ of the buckets of the years,
/// months, days and hours wholly before t plus t's own hour's sales before t
/// (see `seller_volume_before!` for how that hour is read). Work is bounded
/// by the calendar and at most half an hour's sales per end, not by the
/// partner's history. Every attributed sale counts
/// whatever its state (PENDING, SETTLED, FAILED), as the buckets do, and
/// refunds do not lower it.
pub(crate) async fn window_volumes(
    pool: &PgPool,
    program_id: ProgramId,
    windows: &[VolumeWindow],
) -> Result<Vec<Decimal>, sqlx::Error> {
    let partners: Vec<PartnerId> = windows.iter().map(|w| w.partner_id).collect();
    let currencies: Vec<&str> = windows.iter().map(|w| w.currency.as_str()).collect();
    let starts: Vec<DateTime<Utc>> = windows.iter().map(|w| w.start).collect();
    let ends: Vec<DateTime<Utc>> = windows.iter().map(|w| w.end).collect();
    let rows: Vec<(i64, Decimal)> = sqlx::query_as(concat!(
        r#"WITH q AS (
               SELECT * FROM UNNEST($2::uuid[], $3::text[], $4::timestamptz[], $5::timestamptz[])
                   WITH ORDINALITY AS q(partner_id, currency, start_at, end_at, i)
           ), s AS (
               -- V(t) is the volume before (t, the least uuid): every sale at t itself is left out.
               SELECT q.i, x.sign, $1::uuid AS program_id, q.partner_id, q.currency, x.at AS occurred_at,
                      '00000000-0000-0000-0000-000000000000'::uuid AS id, x.at AT TIME ZONE 'UTC' AS t
               FROM q CROSS JOIN LATERAL (VALUES (1, q.end_at), (-1, q.start_at)) AS x(sign, at)
           )
           SELECT s.i, COALESCE(sum(s.sign * ("#,
        seller_volume_before!(),
        r#")), 0) AS volume
           FROM s GROUP BY s.i ORDER BY s.i"#
    ))
    .bind(program_id)
    .bind(&partners)
    .bind(&currencies)
    .bind(&starts)
    .bind(&ends)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|(_, volume)| volume).collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use chrono::{Duration, TimeZone};

    /// A small deterministic generator (no dependency for a test's dice).
    struct Dice(u64);

    impl Dice {
        fn roll(&mut self, sides: u64) -> u64 {
            self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 33) % sides
        }
    }

    /// Inserts sales `first..first + count`, attributed PAYMENTs of `program`
    /// 10 ms apart in the last minute (a stream settled as it happens), sale
    /// `n` bought by customer `n % customers` from seller `n % 40`; returns
    /// their ids in order.
    async fn record_payments(
        pool: &PgPool,
        program: ProgramId,
        first: usize,
        count: usize,
        customers: usize,
    ) -> Vec<SaleId> {
        let now = Utc::now();
        let rows: Vec<(SaleId, usize)> = (first..first + count).map(|n| (SaleId::new_v7(), n)).collect();
        let mut query = sqlx::QueryBuilder::new(
            "INSERT INTO sales (id, program_id, external_id, request_hash, customer_external_id, event_type, \
             currency, amount, occurred_at, partner_id, state) ",
        );
        query.push_values(&rows, |mut row, &(id, n)| {
            let partner = PartnerId::from_u128(1 + (n % 40) as u128);
            let at = now - Duration::seconds(60) + Duration::milliseconds(i64::try_from(n).unwrap() * 10);
            row.push_bind(id)
                .push_bind(program)
                .push_bind(format!("s-{n}"))
                .push_bind("h")
                .push_bind(format!("c-{}", n % customers))
                .push_bind("PAYMENT")
                .push_bind("GBP")
                .push_bind(Decimal::new(1000, 2))
                .push_bind(at)
                .push_bind(partner)
                .push_bind("PENDING");
        });
        query.build().execute(pool).await.unwrap();
        rows.into_iter().map(|(id, _)| id).collect()
    }

    /// resolve's history statement reads a customer's earlier sales through
    /// `sales_customer_order` and a seller's through `sales_seller_order`,
    /// never by walking the program's sales in `sales_program_order`, in a
    /// generic plan and in a custom one, on a table that grew twentyfold
    /// since it was analyzed with a single customer. With the comparison
    /// written `(occurred_at, id) < (…)` the generic plan here took the
    /// program's index (checked before the change), as settlement's did in
    /// the bench's latency run: every earlier sale of the program read per
    /// sale, 1.7 s for a batch (issue 15).
    #[tokio::test]
    async fn the_history_never_walks_the_programs_sales() {
        let db = accrue_testkit::TestDb::create().await.unwrap();
        let pool = db.migrated_pool("attribution", &crate::MIGRATOR).await.unwrap();
        // Statistics only from the ANALYZE below.
        sqlx::query("ALTER TABLE sales SET (autovacuum_enabled = false)").execute(&pool).await.unwrap();
        let program = ProgramId::from_u128(7);
        // Analyzed while one customer had bought: its customer column looks
        // as unselective as the program's.
        record_payments(&pool, program, 0, 200, 1).await;
        sqlx::query("ANALYZE sales").execute(&pool).await.unwrap();
        let ids = record_payments(&pool, program, 200, 4000, 400).await;
        let batch: Vec<String> = ids[ids.len() - 300..].iter().map(ToString::to_string).collect();
        let mut conn = pool.acquire().await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("PREPARE histories (uuid[]) AS {SALE_HISTORIES}")))
            .execute(&mut *conn)
            .await
            .unwrap();
        for mode in ["force_generic_plan", "force_custom_plan"] {
            let mut tx = sqlx::Connection::begin(&mut *conn).await.unwrap();
            accrue_kit::db::index_probes_only(&mut tx).await.unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("SET LOCAL plan_cache_mode = {mode}")))
                .execute(&mut *tx)
                .await
                .unwrap();
            let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "EXPLAIN EXECUTE histories('{{{}}}')",
                batch.join(",")
            )))
            .fetch_all(&mut *tx)
            .await
            .unwrap();
            tx.rollback().await.unwrap();
            let plan = plan.join("\n");
            assert!(!plan.contains("sales_program_order"), "{mode}:\n{plan}");
            assert!(plan.contains("sales_customer_order"), "{mode}:\n{plan}");
            assert!(plan.contains("sales_seller_order"), "{mode}:\n{plan}");
        }
        // And the facts are those of the sales before each one.
        let histories = sale_histories(&pool, &ids[ids.len() - 300..], IndexProbes::SetLocal).await.unwrap();
        assert_eq!(histories.len(), 300);
        for history in histories {
            let n = ids.iter().position(|id| *id == history.id).unwrap() + 200;
            // Customer c-(n % 400) bought at n - 400, n - 800, … down to 200
            // (and c-0 at every sale below 200); seller n % 40 sold every 40th.
            let earlier = (n - 200) / 400 + if n % 400 == 0 { 200 } else { 0 };
            assert_eq!(history.history_ids.len(), earlier, "sale {n}");
            assert!(!history.is_first_payment, "sale {n}");
            assert_eq!(history.prior_volume, Decimal::new(1000, 2) * Decimal::from(n / 40), "sale {n}");
        }
        drop(conn);
        pool.close().await;
    }

    /// A customer's earlier unattributed payment is not in its history but
    /// still makes its next payment not the first; a sign-up is in the
    /// history and is no payment (DESIGN §4 "first payment").
    #[tokio::test]
    async fn the_first_payment_counts_every_earlier_payment_and_the_history_only_attributed_sales() {
        let db = accrue_testkit::TestDb::create().await.unwrap();
        let pool = db.migrated_pool("attribution", &crate::MIGRATOR).await.unwrap();
        let program = ProgramId::from_u128(7);
        let seller = PartnerId::from_u128(1);
        let now = Utc::now();
        // (customer, event type, seller, minutes ago)
        let sales = [
            ("unattributed-first", "PAYMENT", None, 30),
            ("unattributed-first", "PAYMENT", Some(seller), 20),
            ("signup-first", "SIGNUP", Some(seller), 30),
            ("signup-first", "PAYMENT", Some(seller), 20),
            ("signup-first", "RENEWAL", Some(seller), 10),
        ];
        let mut ids = Vec::new();
        for (n, (customer, event_type, partner, ago)) in sales.into_iter().enumerate() {
            let id = SaleId::new_v7();
            sqlx::query(
                "INSERT INTO sales (id, program_id, external_id, request_hash, customer_external_id, event_type, \
                 currency, amount, occurred_at, partner_id, state) \
                 VALUES ($1, $2, $3, 'h', $4, $5, 'GBP', 10, $6, $7, $8)",
            )
            .bind(id)
            .bind(program)
            .bind(format!("s-{n}"))
            .bind(customer)
            .bind(event_type)
            .bind(now - Duration::minutes(ago))
            .bind(partner)
            .bind(if partner.is_some() { "PENDING" } else { "UNATTRIBUTED" })
            .execute(&pool)
            .await
            .unwrap();
            ids.push(id);
        }
        let histories: HashMap<SaleId, SaleHistory> =
            sale_histories(&pool, &ids, IndexProbes::SetLocal).await.unwrap().into_iter().map(|h| (h.id, h)).collect();
        let facts = |i: usize| {
            let h = &histories[&ids[i]];
            (h.is_first_payment, h.history_ids.clone(), h.history_event_types.clone())
        };
        assert_eq!(facts(0), (true, vec![], vec![]));
        assert_eq!(facts(1), (false, vec![], vec![]), "the earlier payment was unattributed");
        assert_eq!(facts(2), (false, vec![], vec![]), "a sign-up is no payment");
        assert_eq!(facts(3), (true, vec![ids[2]], vec!["SIGNUP".to_string()]));
        assert_eq!(facts(4), (false, vec![ids[2], ids[3]], vec!["SIGNUP".to_string(), "PAYMENT".to_string()]));
        pool.close().await;
    }

    /// Windows from the calendar buckets equal a plain scan of the sales
    /// (`start <= occurred_at < end`, attributed, in the currency), for
    /// windows across hour, day, month and year boundaries, windows whose
    /// ends fall exactly on sales (issue 16 item 3), ends in either half of
    /// a past hour, and windows inside a burst of sales of the hour under way
    /// (its bucket less the sales since, issue 15).
    #[tokio::test]
    async fn volumes_from_the_buckets_equal_a_scan_of_the_sales() {
        let db = accrue_testkit::TestDb::create().await.unwrap();
        let pool = db.migrated_pool("attribution", &crate::MIGRATOR).await.unwrap();
        let program = ProgramId::from_u128(7);
        let partners = [PartnerId::from_u128(1), PartnerId::from_u128(2)];
        let origin = Utc.with_ymd_and_hms(2023, 12, 30, 22, 0, 0).single().unwrap();
        let mut dice = Dice(16);
        let mut times = Vec::new();
        // Sales of the last three seconds: the hour under way.
        let burst = Utc::now() - Duration::seconds(3);
        // Five statements (the buckets are filled per statement); the last
        // is a burst of sales within three seconds.
        for batch in 0..5 {
            let mut values = Vec::new();
            for n in 0..60 {
                let at = if batch == 4 {
                    burst + Duration::microseconds(i64::try_from(dice.roll(3_000_000)).unwrap())
                } else {
                    origin + Duration::microseconds(i64::try_from(dice.roll(80 * 86_400 * 1_000_000)).unwrap())
                };
                let partner = partners[usize::try_from(dice.roll(2)).unwrap()];
                let currency = if dice.roll(5) == 0 { "EUR" } else { "GBP" };
                // An UNATTRIBUTED sale has no seller (sales_seller_iff_attributed).
                let state = ["PENDING", "SETTLED", "FAILED"][usize::try_from(dice.roll(3)).unwrap()];
                let amount = Decimal::new(i64::try_from(1 + dice.roll(100_000)).unwrap(), 2);
                times.push((partner, at));
                values.push((format!("s-{batch}-{n}"), partner, currency, state, amount, at));
            }
            let mut query = sqlx::QueryBuilder::new(
                "INSERT INTO sales (id, program_id, external_id, request_hash, event_type, currency, amount, \
                 occurred_at, partner_id, state) ",
            );
            query.push_values(values, |mut row, (external, partner, currency, state, amount, at)| {
                row.push_bind(Uuid::new_v4())
                    .push_bind(program)
                    .push_bind(external)
                    .push_bind("h")
                    .push_bind("PAYMENT")
                    .push_bind(currency)
                    .push_bind(amount)
                    .push_bind(at)
                    .push_bind(partner)
                    .push_bind(state);
            });
            query.build().execute(&pool).await.unwrap();
        }
        let mut windows = Vec::new();
        for (i, (partner, at)) in times.iter().enumerate().take(80) {
            let days = [1, 7, 30, 45][i % 4];
            // Ends on a sale, and ends a window that starts on it.
            windows.push(VolumeWindow {
                partner_id: *partner,
                currency: "GBP".into(),
                start: *at - Duration::days(days),
                end: *at,
            });
            windows.push(VolumeWindow {
                partner_id: *partner,
                currency: "GBP".into(),
                start: *at,
                end: *at + Duration::days(days),
            });
        }
        for (i, (partner, at)) in times.iter().enumerate().skip(240).take(30) {
            let span = [Duration::milliseconds(300), Duration::seconds(1), Duration::minutes(1)][i % 3];
            windows.push(VolumeWindow { partner_id: *partner, currency: "GBP".into(), start: *at - span, end: *at });
            windows.push(VolumeWindow { partner_id: *partner, currency: "GBP".into(), start: burst, end: *at });
        }
        windows.push(VolumeWindow {
            partner_id: partners[0],
            currency: "EUR".into(),
            start: origin,
            end: origin + Duration::days(90),
        });
        let volumes = window_volumes(&pool, program, &windows).await.unwrap();
        assert_eq!(volumes.len(), windows.len());
        assert!(volumes.iter().filter(|v| !v.is_zero()).count() > windows.len() / 2, "{volumes:?}");
        for (window, volume) in windows.iter().zip(volumes) {
            let scanned: Decimal = sqlx::query_scalar(
                "SELECT COALESCE(sum(amount), 0) FROM sales WHERE program_id = $1 AND partner_id = $2 \
                 AND currency = $3 AND state <> 'UNATTRIBUTED' AND occurred_at >= $4 AND occurred_at < $5",
            )
            .bind(program)
            .bind(window.partner_id)
            .bind(&window.currency)
            .bind(window.start)
            .bind(window.end)
            .fetch_one(&pool)
            .await
            .unwrap();
            assert_eq!(volume, scanned, "{window:?}");
        }
        // Each sale's prior volume (the settlement's read) equals a scan of
        // the seller's sales before it, in every way its hour is read.
        let ids: Vec<SaleId> = sqlx::query_scalar("SELECT id FROM sales").fetch_all(&pool).await.unwrap();
        let histories = sale_histories(&pool, &ids, IndexProbes::SetLocal).await.unwrap();
        assert_eq!(histories.len(), ids.len());
        for history in histories {
            let scanned: Decimal = sqlx::query_scalar(
                "SELECT COALESCE(sum(p.amount), 0) FROM sales s JOIN sales p ON p.program_id = s.program_id \
                 AND p.partner_id = s.partner_id AND p.currency = s.currency \
                 AND (p.occurred_at, p.id) < (s.occurred_at, s.id) WHERE s.id = $1",
            )
            .bind(history.id)
            .fetch_one(&pool)
            .await
            .unwrap();
            assert_eq!(history.prior_volume, scanned, "sale {}", history.id);
        }
        pool.close().await;
    }
}

/// One page of the program's settled sales (SETTLED, PARTIALLY_REFUNDED or
/// REFUNDED: every one whose lines were posted) whose `occurred_at` is in
/// `[start, end)`, ordered by (occurred_at, id), after the cursor `after`
/// (the last sale of the previous page), at most `limit`: what
/// SimulateProgram (issue 16 item 2) recomputes.
pub(crate) async fn settled_sales_in(
    pool: &PgPool,
    program_id: ProgramId,
    (start, end): (DateTime<Utc>, DateTime<Utc>),
    after: Option<(DateTime<Utc>, SaleId)>,
    limit: i64,
) -> Result<Vec<SaleRow>, sqlx::Error> {
    let (after_time, after_id) = match after {
        Some((time, id)) => (Some(time), Some(id)),
        None => (None, None),
    };
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {} FROM sales s
         WHERE s.program_id = $1 AND s.occurred_at >= $2 AND s.occurred_at < $3 AND s.state IN ($4, $8, $9)
           AND ($5::timestamptz IS NULL OR (s.occurred_at, s.id) > ($5, $6))
         ORDER BY s.occurred_at, s.id
         LIMIT $7",
        sale_columns_of("s")
    )))
    .bind(program_id)
    .bind(start)
    .bind(end)
    .bind(SaleState::Settled)
    .bind(after_time)
    .bind(after_id)
    .bind(limit)
    .bind(SaleState::PartiallyRefunded)
    .bind(SaleState::Refunded)
    .fetch_all(pool)
    .await
}

/// The facts the settlement of each of `sale_ids` ran on: the resolve and
/// upline outputs its SETTLE_SALE saga's current run logged (the engine
/// carries the outputs of steps without an undo in the next `started`
/// event, post's, once: a post started again after a crash carries nothing;
/// the latest one that carries them wins). A sale without them is absent; an
/// output that no longer decodes is `None` (the caller resolves it again).
/// SimulateProgram (issue 16 item 2) recomputes sales from these, so that a
/// backtest differs from the ledger only by what its draft changes.
pub(crate) async fn settled_facts(
    pool: &PgPool,
    sale_ids: &[SaleId],
) -> Result<HashMap<SaleId, SettledFacts>, sqlx::Error> {
    let rows: Vec<(SaleId, Option<serde_json::Value>, Option<serde_json::Value>)> = sqlx::query_as(
        "SELECT DISTINCT ON (g.sale_id) g.sale_id, e.detail->'carried'->'resolve', e.detail->'carried'->'upline'
         FROM sagas g
         JOIN saga_step_events e ON e.saga_id = g.id AND e.run = g.run AND e.step = 'post' AND e.event = 'started'
         WHERE g.sale_id = ANY($1) AND g.kind = 'SETTLE_SALE' AND e.detail -> 'carried' IS NOT NULL
         ORDER BY g.sale_id, e.id DESC",
    )
    .bind(sale_ids)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(sale_id, resolve, upline)| {
            let facts = SettledFacts {
                resolve: resolve.and_then(|value| serde_json::from_value(value).ok()),
                upline: upline.and_then(|value| serde_json::from_value(value).ok()),
            };
            (sale_id, facts)
        })
        .collect())
}

/// What [`settled_facts`] reads for one sale.
#[derive(Debug, Clone, Default)]
pub(crate) struct SettledFacts {
    /// The resolve step's output.
    pub(crate) resolve: Option<crate::saga::settle_sale::ResolveOut>,
    /// The upline step's output.
    pub(crate) upline: Option<crate::saga::settle_sale::UplineOut>,
}
