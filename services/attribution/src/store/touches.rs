//! Clicks, credited leads, last-touch look-ups, archived links and the
//! programs' attribution settings (issue 14 items 1–3).

// The store's imports and shared helpers.
use super::*;

use crate::domain::settings::version_in_force;
use crate::domain::touch::ClickInput;

/// One version of a program's attribution settings.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct SettingsRow {
    pub(crate) program_id: ProgramId,
    pub(crate) effective_from: DateTime<Utc>,
    pub(crate) model: Model,
    pub(crate) window_days: i32,
    pub(crate) request_id: Option<String>,
}

impl SettingsRow {
    /// The rule this version sets.
    pub(crate) fn rule(&self) -> Rule {
        Rule { model: self.model, window_days: self.window_days }
    }
}

/// The rule in force at `at` under `history` (oldest first): the newest
/// version not after `at`; before the first version, the first (a program's
/// first choice covers the sales and leads it backfills — when it already
/// had some, [`update_settings`] pinned them to first touch); first touch
/// for a program that never chose.
pub(crate) fn rule_at(history: &[SettingsRow], at: DateTime<Utc>) -> Rule {
    version_in_force(history, at, |v| v.effective_from).map_or(Rule::FIRST_TOUCH, SettingsRow::rule)
}

/// Every program's settings history, oldest first (one query).
pub(crate) async fn settings_histories(
    pool: &PgPool,
    programs: &[ProgramId],
) -> Result<HashMap<ProgramId, Vec<SettingsRow>>, StoreError> {
    let rows: Vec<SettingsRow> = sqlx::query_as(
        "SELECT program_id, effective_from, model, window_days, request_id FROM attribution_settings
         WHERE program_id = ANY($1) ORDER BY program_id, effective_from",
    )
    .bind(programs)
    .fetch_all(pool)
    .await?;
    let mut out: HashMap<ProgramId, Vec<SettingsRow>> = HashMap::new();
    for row in rows {
        out.entry(row.program_id).or_default().push(row);
    }
    Ok(out)
}

/// What UpdateAttributionSettings did.
#[derive(Debug)]
pub(crate) enum SettingsUpdate {
    /// Stored (or a replay of the same request id and body): the history.
    Stored(Vec<SettingsRow>),
    /// The request id was used with another body.
    Reused,
}

/// Starts a new settings version at now. A program with leads, clicks or
/// sales but no history first gets a FIRST_TOUCH version from the epoch, so
/// that what it recorded (and backfills of that period) stays first touch
/// (issue 14 item 2: a change applies to later sales). Idempotent on
/// `request_id`. Serialized per program by an advisory lock.
pub(crate) async fn update_settings(
    pool: &PgPool,
    program_id: ProgramId,
    rule: Rule,
    request_id: Option<&str>,
) -> Result<SettingsUpdate, StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('attribution_settings:' || $1::text))")
        .bind(program_id)
        .execute(&mut *tx)
        .await?;
    const HISTORY: &str = "SELECT program_id, effective_from, model, window_days, request_id
        FROM attribution_settings WHERE program_id = $1 ORDER BY effective_from";
    let existing: Vec<SettingsRow> = sqlx::query_as(HISTORY).bind(program_id).fetch_all(&mut *tx).await?;
    if let Some(request_id) = request_id
        && let Some(row) = existing.iter().find(|row| row.request_id.as_deref() == Some(request_id))
    {
        return Ok(if row.rule() == rule { SettingsUpdate::Stored(existing) } else { SettingsUpdate::Reused });
    }
    if existing.is_empty() {
        let active: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM lead_events WHERE program_id = $1)
                 OR EXISTS (SELECT 1 FROM clicks WHERE program_id = $1)
                 OR EXISTS (SELECT 1 FROM sales WHERE program_id = $1)",
        )
        .bind(program_id)
        .fetch_one(&mut *tx)
        .await?;
        if active {
            sqlx::query(
                "INSERT INTO attribution_settings (program_id, effective_from, model, window_days)
                 VALUES ($1, 'epoch', 'FIRST_TOUCH', 0)",
            )
            .bind(program_id)
            .execute(&mut *tx)
            .await?;
        }
    }
    // A second change within the same microsecond replaces the first.
    sqlx::query(
        "INSERT INTO attribution_settings (program_id, effective_from, model, window_days, request_id)
         VALUES ($1, clock_timestamp(), $2, $3, $4)
         ON CONFLICT (program_id, effective_from) DO UPDATE
            SET model = EXCLUDED.model, window_days = EXCLUDED.window_days, request_id = EXCLUDED.request_id",
    )
    .bind(program_id)
    .bind(rule.model)
    .bind(rule.window_days)
    .bind(request_id)
    .execute(&mut *tx)
    .await?;
    let stored: Vec<SettingsRow> = sqlx::query_as(HISTORY).bind(program_id).fetch_all(&mut *tx).await?;
    tx.commit().await?;
    Ok(SettingsUpdate::Stored(stored))
}

/// Each (program, customer, time) key's last touch: the most recent click
/// naming the customer or lead credited for it, on a link of the program,
/// with occurred_at in [start, time] (both ends included); at one instant a
/// lead wins over a click, then the later recorded. One query.
pub(crate) async fn last_touches(
    pool: &PgPool,
    programs: &[ProgramId],
    customers: &[String],
    times: &[DateTime<Utc>],
    starts: &[Option<DateTime<Utc>>],
) -> Result<Vec<((ProgramId, String, DateTime<Utc>), Attribution)>, StoreError> {
    #[derive(sqlx::FromRow)]
    struct Touch {
        at: DateTime<Utc>,
        #[sqlx(flatten)]
        attribution: Attribution,
    }
    let rows: Vec<Touch> = sqlx::query_as(
        "SELECT DISTINCT ON (u.program_id, u.customer, u.at)
                u.program_id, u.customer AS customer_external_id, u.at, t.link_id,
                k.owner_partner_id AS partner_id, k.splits
         FROM UNNEST($1::uuid[], $2::text[], $3::timestamptz[], $4::timestamptz[]) AS u(program_id, customer, at, since)
         CROSS JOIN LATERAL (
             SELECT * FROM (
                 (SELECT e.link_id, e.occurred_at, 1 AS lead, e.created_at FROM lead_events e
                  WHERE e.program_id = u.program_id AND e.customer_external_id = u.customer
                    AND e.occurred_at <= u.at AND e.occurred_at >= u.since
                  ORDER BY e.occurred_at DESC, e.created_at DESC LIMIT 1)
                 UNION ALL
                 (SELECT c.link_id, c.occurred_at, 0 AS lead, c.created_at FROM clicks c
                  WHERE c.program_id = u.program_id AND c.customer_external_id = u.customer
                    AND c.occurred_at <= u.at AND c.occurred_at >= u.since
                  ORDER BY c.occurred_at DESC, c.created_at DESC LIMIT 1)
             ) touches ORDER BY occurred_at DESC, lead DESC, created_at DESC LIMIT 1
         ) t
         JOIN links k ON k.id = t.link_id
         ORDER BY u.program_id, u.customer, u.at",
    )
    .bind(programs)
    .bind(customers)
    .bind(times)
    .bind(starts)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            ((row.attribution.program_id, row.attribution.customer_external_id.clone(), row.at), row.attribution)
        })
        .collect())
}

/// What TrackClicks did.
#[derive(Debug)]
pub(crate) enum ClickOutcome {
    /// Stored: how many were new and how many repeats were skipped.
    Recorded { recorded: usize, duplicates: usize },
    /// Input `index` reuses a click id with another body; nothing written.
    Conflict { index: usize },
}

/// Stores validated clicks on `links` (live links of the program, by id)
/// in one transaction: idempotent on (program, click id) — a repeat in the
/// batch or of a stored click is skipped, a different body stops the
/// batch — and each new click counted in its link's day (UTC).
pub(crate) async fn track_clicks(
    pool: &PgPool,
    program_id: ProgramId,
    clicks: &[ClickInput],
    links: &HashMap<LinkId, LinkRow>,
) -> Result<ClickOutcome, StoreError> {
    let mut first: HashMap<&str, usize> = HashMap::new();
    let mut unique = Vec::with_capacity(clicks.len());
    for (i, click) in clicks.iter().enumerate() {
        match first.get(click.click_id.as_str()) {
            Some(&j) if !click.same_as(&clicks[j].request_hash(), clicks[j].occurred_at) => {
                return Ok(ClickOutcome::Conflict { index: i });
            }
            Some(_) => {}
            None => {
                first.insert(&click.click_id, i);
                unique.push(i);
            }
        }
    }
    let mut tx = pool.begin().await?;
    let ids: Vec<&str> = unique.iter().map(|&i| clicks[i].click_id.as_str()).collect();
    let stored: Vec<(String, String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT click_id, request_hash, occurred_at FROM clicks WHERE program_id = $1 AND click_id = ANY($2)",
    )
    .bind(program_id)
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await?;
    let stored: HashMap<String, (String, DateTime<Utc>)> =
        stored.into_iter().map(|(id, hash, at)| (id, (hash, at))).collect();
    let mut fresh = Vec::with_capacity(unique.len());
    for &i in &unique {
        match stored.get(&clicks[i].click_id) {
            Some((hash, at)) if clicks[i].same_as(hash, *at) => {}
            Some(_) => return Ok(ClickOutcome::Conflict { index: i }),
            None => fresh.push(i),
        }
    }
    let pick = |f: fn(&ClickInput) -> String| fresh.iter().map(|&i| f(&clicks[i])).collect::<Vec<String>>();
    let row_ids: Vec<Uuid> = fresh.iter().map(|_| Uuid::now_v7()).collect();
    let click_ids = pick(|c| c.click_id.clone());
    let hashes = pick(ClickInput::request_hash);
    let link_ids: Vec<LinkId> = fresh.iter().map(|&i| clicks[i].link_id).collect();
    let partners: Vec<Option<PartnerId>> =
        fresh.iter().map(|&i| links.get(&clicks[i].link_id).map(|l| l.owner_partner_id)).collect();
    let times: Vec<DateTime<Utc>> = fresh.iter().map(|&i| clicks[i].occurred_at).collect();
    let customers: Vec<Option<String>> = fresh.iter().map(|&i| clicks[i].customer_external_id.clone()).collect();
    let referrers = pick(|c| c.referrer.clone());
    let countries = pick(|c| c.country_code.clone());
    let agents = pick(|c| c.user_agent_hash.clone());
    // Concurrent inserts of one click id: ON CONFLICT skips the loser, which
    // is then counted as a duplicate (the winner's body is not compared).
    let inserted: Vec<(LinkId, DateTime<Utc>)> = sqlx::query_as(
        "WITH ins AS (
             INSERT INTO clicks (id, program_id, click_id, request_hash, link_id, partner_id, occurred_at,
                                 customer_external_id, referrer, country_code, user_agent_hash)
             SELECT u.id, $1, u.click_id, u.hash, u.link_id, u.partner_id, u.at, u.customer, u.referrer, u.country,
                    u.agent
             FROM UNNEST($2::uuid[], $3::text[], $4::text[], $5::uuid[], $6::uuid[], $7::timestamptz[], $8::text[],
                         $9::text[], $10::text[], $11::text[])
                  AS u(id, click_id, hash, link_id, partner_id, at, customer, referrer, country, agent)
             ON CONFLICT (program_id, click_id) DO NOTHING
             RETURNING link_id, occurred_at
         )
         SELECT link_id, occurred_at FROM ins",
    )
    .bind(program_id)
    .bind(&row_ids)
    .bind(&click_ids)
    .bind(&hashes)
    .bind(&link_ids)
    .bind(&partners)
    .bind(&times)
    .bind(&customers)
    .bind(&referrers)
    .bind(&countries)
    .bind(&agents)
    .fetch_all(&mut *tx)
    .await?;
    let inserted_links: Vec<LinkId> = inserted.iter().map(|(link, _)| *link).collect();
    let inserted_times: Vec<DateTime<Utc>> = inserted.iter().map(|(_, at)| *at).collect();
    sqlx::query(
        "INSERT INTO click_days (link_id, day, clicks)
         SELECT link_id, (at AT TIME ZONE 'UTC')::date, count(*)
         FROM UNNEST($1::uuid[], $2::timestamptz[]) AS u(link_id, at)
         GROUP BY 1, 2 ORDER BY 1, 2
         ON CONFLICT (link_id, day) DO UPDATE SET clicks = click_days.clicks + EXCLUDED.clicks",
    )
    .bind(&inserted_links)
    .bind(&inserted_times)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(ClickOutcome::Recorded { recorded: inserted.len(), duplicates: clicks.len() - inserted.len() })
}

/// Archives (`archived`) or unarchives a link; the link as it now is, or
/// None when absent. Archiving keeps the first archive time.
pub(crate) async fn set_archived(pool: &PgPool, id: LinkId, archived: bool) -> Result<Option<LinkRow>, StoreError> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE links SET archived_at = CASE WHEN $2 THEN COALESCE(archived_at, now()) END
         WHERE id = $1 RETURNING {LINK_COLUMNS}"
    )))
    .bind(id)
    .bind(archived)
    .fetch_optional(pool)
    .await
    .map_err(StoreError::from)
}
