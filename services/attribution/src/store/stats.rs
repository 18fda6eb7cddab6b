//! Link and partner stats from the attribution schema's own rows (issue 14
//! item 5): clicks, credited leads, attributed sales and their revenue, and
//! refunds, in a period by each row's occurred_at. Commission comes from the
//! ledger over gRPC (the API adds it).

// The store's imports and shared helpers.
use super::*;

/// Whose numbers: one link's, or the links and sales of one partner (as
/// link owner and seller).
#[derive(Debug, Clone, Copy)]
pub(crate) enum StatsOf {
    /// One link.
    Link(LinkId),
    /// A partner of a program.
    Partner(ProgramId, PartnerId),
}

/// A period [start, end), either bound optional.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Period {
    pub(crate) start: Option<DateTime<Utc>>,
    pub(crate) end: Option<DateTime<Utc>>,
}

/// The counts and sums of a [`StatsOf`] in a period.
#[derive(Debug, Clone, Default)]
pub(crate) struct StatsRow {
    pub(crate) clicks: i64,
    pub(crate) leads: i64,
    pub(crate) sales: i64,
    /// Σ sale amounts by currency code.
    pub(crate) revenue: Vec<(String, Decimal)>,
    pub(crate) refunds: i64,
    /// Σ refund amounts by currency code.
    pub(crate) refunded: Vec<(String, Decimal)>,
    /// The ids of the sales counted (for their ledger entries).
    pub(crate) sale_ids: Vec<SaleId>,
    /// Clicks per UTC day (link stats only).
    pub(crate) daily_clicks: Vec<(chrono::NaiveDate, i64)>,
}

/// The numbers of `of` in `period` (a handful of index-range queries).
pub(crate) async fn stats(pool: &PgPool, of: StatsOf, period: Period) -> Result<StatsRow, StoreError> {
    // Every query filters on the same two shapes: a link id, or a program
    // and partner; `$1` / `$2` / `$3` are link, program, partner.
    let (link, program, partner) = match of {
        StatsOf::Link(link) => (Some(link), None, None),
        StatsOf::Partner(program, partner) => (None, Some(program), Some(partner)),
    };
    let scoped = |table: &str, partner_column: &str| {
        format!(
            "(($1::uuid IS NOT NULL AND {table}.link_id = $1)
              OR ($1::uuid IS NULL AND {table}.program_id = $2 AND {table}.{partner_column} = $3))
             AND ($4::timestamptz IS NULL OR {table}.occurred_at >= $4)
             AND ($5::timestamptz IS NULL OR {table}.occurred_at < $5)"
        )
    };
    let count = |sql: String| {
        sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql))
            .bind(link)
            .bind(program)
            .bind(partner)
            .bind(period.start)
            .bind(period.end)
            .fetch_one(pool)
    };
    let clicks = count(format!("SELECT count(*) FROM clicks WHERE {}", scoped("clicks", "partner_id"))).await?;
    let leads =
        count(format!("SELECT count(*) FROM lead_events WHERE {}", scoped("lead_events", "partner_id"))).await?;
    let sales: Vec<(SaleId, String, Decimal)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT id, currency, amount FROM sales WHERE {} ORDER BY occurred_at, id",
        scoped("sales", "partner_id")
    )))
    .bind(link)
    .bind(program)
    .bind(partner)
    .bind(period.start)
    .bind(period.end)
    .fetch_all(pool)
    .await?;
    // A refund counts in the period it occurred in, whenever its sale did.
    let refunds: Vec<(String, Decimal)> = sqlx::query_as(
        "SELECT r.currency, r.amount FROM refunds r JOIN sales s ON s.id = r.sale_id
         WHERE (($1::uuid IS NOT NULL AND s.link_id = $1)
                OR ($1::uuid IS NULL AND s.program_id = $2 AND s.partner_id = $3))
           AND ($4::timestamptz IS NULL OR r.occurred_at >= $4)
           AND ($5::timestamptz IS NULL OR r.occurred_at < $5)",
    )
    .bind(link)
    .bind(program)
    .bind(partner)
    .bind(period.start)
    .bind(period.end)
    .fetch_all(pool)
    .await?;
    let daily_clicks = match link {
        None => Vec::new(),
        // The per-day counters, for the days the period touches.
        Some(link) => {
            sqlx::query_as(
                "SELECT day, clicks FROM click_days
             WHERE link_id = $1
               AND ($2::timestamptz IS NULL OR day >= ($2 AT TIME ZONE 'UTC')::date)
               AND ($3::timestamptz IS NULL OR day <= (($3 - interval '1 microsecond') AT TIME ZONE 'UTC')::date)
             ORDER BY day",
            )
            .bind(link)
            .bind(period.start)
            .bind(period.end)
            .fetch_all(pool)
            .await?
        }
    };
    Ok(StatsRow {
        clicks,
        leads,
        sales: i64::try_from(sales.len()).unwrap_or(i64::MAX),
        revenue: by_currency(sales.iter().map(|(_, currency, amount)| (currency, *amount))),
        refunds: i64::try_from(refunds.len()).unwrap_or(i64::MAX),
        refunded: by_currency(refunds.iter().map(|(currency, amount)| (currency, *amount))),
        sale_ids: sales.into_iter().map(|(id, _, _)| id).collect(),
        daily_clicks,
    })
}

/// Σ amounts per currency code, ordered by code.
fn by_currency<'a>(amounts: impl Iterator<Item = (&'a String, Decimal)>) -> Vec<(String, Decimal)> {
    let mut sums: std::collections::BTreeMap<String, Decimal> = std::collections::BTreeMap::new();
    for (currency, amount) in amounts {
        *sums.entry(currency.clone()).or_default() += amount;
    }
    sums.into_iter().collect()
}
