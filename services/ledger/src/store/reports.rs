//! Read-only reports over entries: the earnings summary (per partner and
//! currency, optionally for a period and a set of sales) and the override
//! breakdown by source partner (seed 004; issue 14 item 4).

// The store's imports.
use super::*;

/// One partner's earnings in one currency (VOIDED entries excluded).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SummaryRow {
    /// Partner.
    pub partner_id: PartnerId,
    /// ISO 4217 code.
    pub currency: String,
    /// DIRECT CREDITs.
    pub direct: Decimal,
    /// SPLIT CREDITs.
    pub split: Decimal,
    /// OVERRIDE CREDITs.
    pub override_amount: Decimal,
    /// MARGIN CREDITs.
    pub margin: Decimal,
    /// Net: Σ CREDITs − Σ DEBITs.
    pub total: Decimal,
    /// Σ DEBITs (positive).
    pub clawback: Decimal,
    /// DEBITs of kind DIRECT.
    pub clawback_direct: Decimal,
    /// DEBITs of kind SPLIT.
    pub clawback_split: Decimal,
    /// DEBITs of kind OVERRIDE.
    pub clawback_override: Decimal,
    /// DEBITs of kind MARGIN.
    pub clawback_margin: Decimal,
}

/// Which entries a report reads besides its program: entries whose
/// `occurred_at` is in [`start`, `end`) (either bound optional) and, when
/// `sale_ids` is not empty, only those sales' entries.
#[derive(Debug, Clone, Default)]
pub struct Period {
    /// Inclusive lower bound.
    pub start: Option<DateTime<Utc>>,
    /// Exclusive upper bound.
    pub end: Option<DateTime<Utc>>,
}

/// Per (partner, currency), VOIDED entries excluded: Σ CREDITs by kind, Σ
/// DEBITs in all and by kind (a clawback debit has its line's kind), and the
/// net total; ordered by partner id then currency; one aggregate query.
/// `partner_ids` empty = every partner with entries; `sale_ids` empty =
/// every sale; `period` bounds the entries' occurred_at.
pub async fn earnings_summary(
    pool: &PgPool,
    program_id: ProgramId,
    partner_ids: &[PartnerId],
    period: &Period,
    sale_ids: &[String],
) -> Result<Vec<SummaryRow>, StoreError> {
    sqlx::query_as::<_, SummaryRow>(
        r#"
        SELECT partner_id, currency,
               COALESCE(sum(amount) FILTER (WHERE credit AND kind = 'DIRECT'), 0)       AS direct,
               COALESCE(sum(amount) FILTER (WHERE credit AND kind = 'SPLIT'), 0)        AS split,
               COALESCE(sum(amount) FILTER (WHERE credit AND kind = 'OVERRIDE'), 0)     AS override_amount,
               COALESCE(sum(amount) FILTER (WHERE credit AND kind = 'MARGIN'), 0)       AS margin,
               COALESCE(sum(CASE WHEN credit THEN amount ELSE -amount END), 0)          AS total,
               COALESCE(sum(amount) FILTER (WHERE NOT credit), 0)                       AS clawback,
               COALESCE(sum(amount) FILTER (WHERE NOT credit AND kind = 'DIRECT'), 0)   AS clawback_direct,
               COALESCE(sum(amount) FILTER (WHERE NOT credit AND kind = 'SPLIT'), 0)    AS clawback_split,
               COALESCE(sum(amount) FILTER (WHERE NOT credit AND kind = 'OVERRIDE'), 0) AS clawback_override,
               COALESCE(sum(amount) FILTER (WHERE NOT credit AND kind = 'MARGIN'), 0)   AS clawback_margin
        FROM (
            SELECT e.partner_id, e.currency, e.kind, e.amount, e.entry_type = 'CREDIT' AS credit
            FROM entries e JOIN entry_states s ON s.entry_id = e.id
            WHERE e.program_id = $1 AND s.status <> 'VOIDED'
              AND (cardinality($2::uuid[]) = 0 OR e.partner_id = ANY($2::uuid[]))
              AND ($3::timestamptz IS NULL OR e.occurred_at >= $3)
              AND ($4::timestamptz IS NULL OR e.occurred_at < $4)
              AND (cardinality($5::text[]) = 0 OR e.sale_id = ANY($5::text[]))
        ) lines
        GROUP BY partner_id, currency
        ORDER BY partner_id, currency
        "#,
    )
    .bind(program_id)
    .bind(partner_ids)
    .bind(period.start)
    .bind(period.end)
    .bind(sale_ids)
    .fetch_all(pool)
    .await
    .map_err(StoreError::from)
}

/// One row of the override breakdown: what `partner` earned in overrides
/// from one source partner at one level in one currency.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OverrideSourceRow {
    /// The seller whose sales paid the override.
    pub source_partner_id: PartnerId,
    /// The override level.
    pub level: i32,
    /// ISO 4217 code.
    pub currency: String,
    /// Distinct sales with an OVERRIDE CREDIT in the row.
    pub sale_count: i64,
    /// Σ OVERRIDE CREDITs.
    pub amount: Decimal,
    /// Σ OVERRIDE DEBITs.
    pub clawback: Decimal,
}

/// Keyset position in the override breakdown: (source, level, currency).
pub type BreakdownKey = (PartnerId, i32, String);

/// The non-VOIDED OVERRIDE entries `partner` earned in `program_id` in
/// `period`, grouped by (source partner, level, currency) and ordered so,
/// after `after`, at most `limit` rows; `sources` empty = every source.
pub async fn override_breakdown(
    pool: &PgPool,
    program_id: ProgramId,
    partner: PartnerId,
    period: &Period,
    sources: &[PartnerId],
    after: Option<&BreakdownKey>,
    limit: i64,
) -> Result<Vec<OverrideSourceRow>, StoreError> {
    sqlx::query_as::<_, OverrideSourceRow>(
        r#"
        SELECT e.source_partner_id, e.level, e.currency,
               count(DISTINCT e.sale_id) FILTER (WHERE e.entry_type = 'CREDIT')           AS sale_count,
               COALESCE(sum(e.amount) FILTER (WHERE e.entry_type = 'CREDIT'), 0)          AS amount,
               COALESCE(sum(e.amount) FILTER (WHERE e.entry_type = 'DEBIT'), 0)           AS clawback
        FROM entries e JOIN entry_states s ON s.entry_id = e.id
        WHERE e.program_id = $1 AND e.partner_id = $2 AND e.kind = 'OVERRIDE' AND s.status <> 'VOIDED'
          AND e.source_partner_id IS NOT NULL
          AND ($3::timestamptz IS NULL OR e.occurred_at >= $3)
          AND ($4::timestamptz IS NULL OR e.occurred_at < $4)
          AND (cardinality($5::uuid[]) = 0 OR e.source_partner_id = ANY($5::uuid[]))
          AND ($6::uuid IS NULL OR (e.source_partner_id, e.level, e.currency) > ($6, $7, $8))
        GROUP BY e.source_partner_id, e.level, e.currency
        ORDER BY e.source_partner_id, e.level, e.currency
        LIMIT $9
        "#,
    )
    .bind(program_id)
    .bind(partner)
    .bind(period.start)
    .bind(period.end)
    .bind(sources)
    .bind(after.map(|key| key.0))
    .bind(after.map(|key| key.1))
    .bind(after.map(|key| key.2.clone()))
    .bind(limit)
    .fetch_all(pool)
    .await
    .map_err(StoreError::from)
}

/// Each of `sources`' funded sales in `period`: the distinct sales it sold
/// (entries' `source_partner_id`) with a non-VOIDED CREDIT entry of any
/// kind; with `earned_by` set, only the sources that paid that partner an
/// OVERRIDE in the period. Sources without any are answered with 0 (or left
/// out under `earned_by`).
pub async fn funded_sales(
    pool: &PgPool,
    program_id: ProgramId,
    sources: &[PartnerId],
    period: &Period,
    earned_by: Option<PartnerId>,
) -> Result<HashMap<PartnerId, i64>, StoreError> {
    let rows: Vec<(PartnerId, i64)> = sqlx::query_as(
        r#"
        SELECT e.source_partner_id, count(DISTINCT e.sale_id)
        FROM entries e JOIN entry_states s ON s.entry_id = e.id
        WHERE e.program_id = $1 AND e.source_partner_id = ANY($2::uuid[]) AND e.entry_type = 'CREDIT'
          AND s.status <> 'VOIDED'
          AND ($3::timestamptz IS NULL OR e.occurred_at >= $3)
          AND ($4::timestamptz IS NULL OR e.occurred_at < $4)
          AND ($5::uuid IS NULL OR EXISTS (
                SELECT 1 FROM entries o JOIN entry_states os ON os.entry_id = o.id
                WHERE o.program_id = $1 AND o.partner_id = $5 AND o.kind = 'OVERRIDE'
                  AND o.source_partner_id = e.source_partner_id AND os.status <> 'VOIDED'
                  AND ($3::timestamptz IS NULL OR o.occurred_at >= $3)
                  AND ($4::timestamptz IS NULL OR o.occurred_at < $4)))
        GROUP BY e.source_partner_id
        "#,
    )
    .bind(program_id)
    .bind(sources)
    .bind(period.start)
    .bind(period.end)
    .bind(earned_by)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().collect())
}

/// One live CREDIT line of a sale (see [`sale_lines`]).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SaleLineRow {
    /// The sale.
    pub sale_id: String,
    /// Who earns it.
    pub partner_id: PartnerId,
    /// Stored kind name (DIRECT, SPLIT, OVERRIDE, MARGIN).
    pub kind: String,
    /// Override level (margin: position in the walk).
    pub level: i32,
    /// ISO 4217 code.
    pub currency: String,
    /// Amount (positive, major units).
    pub amount: Decimal,
    /// Current status (never VOIDED).
    pub status: String,
}

/// The live (not VOIDED) CREDIT lines of `sale_ids` in one query, by sale
/// then posting order: what settlement posted for them (SimulateProgram's
/// actuals, issue 16 item 2).
pub async fn sale_lines(
    pool: &PgPool,
    program_id: ProgramId,
    sale_ids: &[String],
) -> Result<Vec<SaleLineRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT e.sale_id, e.partner_id, e.kind, e.level, e.currency, e.amount, s.status
         FROM entries e JOIN entry_states s ON s.entry_id = e.id
         WHERE e.program_id = $1 AND e.sale_id = ANY($2) AND e.entry_type = 'CREDIT' AND s.status <> 'VOIDED'
         ORDER BY e.sale_id, e.created_at, e.line_index",
    )
    .bind(program_id)
    .bind(sale_ids)
    .fetch_all(pool)
    .await
}
