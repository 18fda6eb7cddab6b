//! The webhook worker: one per service process. Each pass, in one short
//! transaction holding the service's webhook advisory lock (one replica at a
//! time):
//!
//! 1. **enqueue**: for every ACTIVE subscription, a PENDING delivery per
//!    sequenced event after its cursor that matches its types, and the cursor
//!    moved past every event looked at — in the same statement, so an event
//!    is queued exactly once per subscription;
//! 2. **claim**: each subscription's first PENDING delivery in sequence
//!    order, when it is due (`FOR UPDATE SKIP LOCKED`), leased by moving its
//!    `next_attempt_at` past the request timeout — a subscription's next
//!    event waits until the earlier one is DELIVERED or DEAD, so delivery is
//!    in order.
//!
//! Then, outside the transaction, it POSTs the claimed events (each of
//! another subscription) at once and records each outcome: 2xx → DELIVERED;
//! otherwise the attempt is counted and the delivery is due again after
//! [`WebhookOptions::backoff`], or DEAD after [`WebhookOptions::max_attempts`].
//! A process that dies mid-POST leaves the lease to expire: the delivery is
//! sent again (at least once; receivers deduplicate on `webhook-id`).

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{Nudge, Payload, WebhookOptions};
use crate::events::{Materialize, Source};

/// Events queued per subscription per pass.
const ENQUEUE_LIMIT: i64 = 1000;

/// Runs of the feed numbered per subscription per pass (each at most
/// [`crate::events::sequencer::RUN_LIMIT`] events): enough for
/// [`ENQUEUE_LIMIT`] events when runs are full, fewer when they are not (a
/// pass's cursor moves on by what it read, so the next pass goes on).
const ENQUEUE_RUNS: i64 = 2;

/// How long to wait after a failed pass (database down).
const RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// How much of a failed answer's body is kept in `last_error`.
const ERROR_BYTES: usize = 500;

/// A claimed delivery with its event.
#[derive(sqlx::FromRow)]
struct Claimed {
    id: Uuid,
    attempts: i32,
    url: String,
    secret: String,
    event_id: Uuid,
    r#type: String,
    subject: String,
    time: DateTime<Utc>,
    program_id: Uuid,
    sequence: i64,
    data: Vec<u8>,
}

/// What one attempt came to.
struct Outcome {
    delivered: bool,
    status: Option<i32>,
    error: Option<String>,
}

/// The worker task: a pass whenever the sequencer numbered events (`wake`),
/// an RPC queued something (`nudge`), or [`WebhookOptions::poll_interval`]
/// passed; back to back while a pass claims a full batch. Stops at
/// `shutdown` (a pass in flight finishes its POSTs first).
pub async fn run(
    pool: PgPool,
    source: &'static Source,
    options: WebhookOptions,
    materialize: Option<Materialize>,
    mut wake: watch::Receiver<u64>,
    nudge: Nudge,
    shutdown: CancellationToken,
) {
    let client = match reqwest::Client::builder()
        .timeout(options.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("accrue-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(source = source.uri, %error, "cannot build the webhook HTTP client; no webhooks");
            return;
        }
    };
    let mut wake_alive = true;
    loop {
        let pause = match pass(&pool, source, &options, materialize.as_ref(), &client).await {
            Ok(claimed) if claimed >= options.batch => Duration::ZERO,
            Ok(_) => options.poll_interval,
            Err(error) => {
                tracing::warn!(source = source.uri, %error, "webhook pass failed; retrying");
                RETRY_INTERVAL
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
            () = nudge.woken() => {}
            changed = wake.changed(), if wake_alive => wake_alive = changed.is_ok(),
        }
    }
}

/// One pass (see the module docs); returns how many deliveries it POSTed.
pub async fn pass(
    pool: &PgPool,
    source: &Source,
    options: &WebhookOptions,
    materialize: Option<&Materialize>,
    client: &reqwest::Client,
) -> Result<i64, sqlx::Error> {
    let (any,): (bool,) = sqlx::query_as("SELECT EXISTS (SELECT 1 FROM webhook_subscriptions WHERE state = 'ACTIVE')")
        .fetch_one(pool)
        .await?;
    if !any {
        return Ok(0);
    }
    let Some(mut tx) = crate::events::lock::begin_locked(pool, super::lock_key(source.schema)).await? else {
        return Ok(0);
    };
    sqlx::query(
        r#"
        WITH subs AS (
            SELECT id, program_id, types, cursor_sequence FROM webhook_subscriptions
            WHERE state = 'ACTIVE' FOR UPDATE
        ), candidates AS (
            SELECT s.id AS subscription_id, s.types, e.program_id, e.sequence, e.position, e.id AS event_id, e.type
            FROM subs s CROSS JOIN LATERAL (
                SELECT n.program_id, n.sequence, n.position, n.id, n.type
                FROM numbered_events(s.program_id, s.cursor_sequence, $2) n
                WHERE n.sequence > s.cursor_sequence
                ORDER BY n.sequence LIMIT $1
            ) e
        ), queued AS (
            INSERT INTO webhook_deliveries
                (id, subscription_id, program_id, sequence, event_position, event_id, event_type, state, attempts,
                 next_attempt_at)
            SELECT gen_random_uuid(), subscription_id, program_id, sequence, position, event_id, type, 'PENDING', 0,
                   now()
            FROM candidates WHERE cardinality(types) = 0 OR type = ANY(types)
            ON CONFLICT (subscription_id, sequence) DO NOTHING
            RETURNING 1
        ), advanced AS (
            UPDATE webhook_subscriptions w SET cursor_sequence = m.last
            FROM (SELECT subscription_id, max(sequence) AS last FROM candidates GROUP BY subscription_id) m
            WHERE w.id = m.subscription_id
            RETURNING 1
        )
        SELECT (SELECT count(*) FROM queued), (SELECT count(*) FROM advanced)
        "#,
    )
    .bind(ENQUEUE_LIMIT)
    .bind(ENQUEUE_RUNS)
    .execute(&mut *tx)
    .await?;
    let lease = options.timeout + Duration::from_secs(30);
    let mut claimed: Vec<Claimed> = sqlx::query_as(
        r#"
        WITH heads AS (
            SELECT DISTINCT ON (d.subscription_id) d.id, d.next_attempt_at
            FROM webhook_deliveries d JOIN webhook_subscriptions s ON s.id = d.subscription_id
            WHERE d.state = 'PENDING' AND s.state = 'ACTIVE'
            ORDER BY d.subscription_id, d.sequence
        ), due AS (
            SELECT d.id FROM webhook_deliveries d JOIN heads h USING (id)
            WHERE h.next_attempt_at <= now()
            ORDER BY h.next_attempt_at
            LIMIT $1
            FOR UPDATE OF d SKIP LOCKED
        ), leased AS (
            UPDATE webhook_deliveries d SET next_attempt_at = now() + $2::float8 * interval '1 millisecond'
            FROM due WHERE d.id = due.id
            RETURNING d.id, d.subscription_id, d.attempts, d.program_id, d.sequence, d.event_position
        )
        SELECT l.id, l.attempts, s.url, s.secret, e.id AS event_id, e.type, e.subject, e.time,
               e.program_id, l.sequence, e.data
        FROM leased l
        JOIN webhook_subscriptions s ON s.id = l.subscription_id
        JOIN events e ON e.position = l.event_position
        "#,
    )
    .bind(options.batch)
    .bind(lease.as_secs_f64() * 1000.0)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let by_reference = claimed.iter_mut().map(|delivery| (delivery.subject.as_str(), &mut delivery.data));
    crate::events::materialize::fill(materialize, pool, by_reference).await?;
    let count = i64::try_from(claimed.len()).unwrap_or(i64::MAX);
    let attempts = claimed.iter().map(|delivery| attempt(client, source, delivery));
    let outcomes = futures::future::join_all(attempts).await;
    for (delivery, outcome) in claimed.iter().zip(outcomes) {
        record(pool, options, delivery, outcome).await?;
    }
    Ok(count)
}

/// POSTs one claimed delivery, signed.
async fn attempt(client: &reqwest::Client, source: &Source, delivery: &Claimed) -> Outcome {
    let data_type = source.event_type(&delivery.r#type).map_or("", |t| t.data);
    let (id, program_id) = (delivery.event_id.to_string(), delivery.program_id.to_string());
    let body = super::payload(&Payload {
        id: &id,
        source: source.uri,
        r#type: &delivery.r#type,
        time: delivery.time,
        subject: &delivery.subject,
        program_id: &program_id,
        sequence: delivery.sequence,
        data_type,
        data: &delivery.data,
    });
    let timestamp = Utc::now().timestamp();
    let signature = match super::sign(&delivery.secret, &id, timestamp, &body) {
        Ok(signature) => signature,
        Err(error) => return Outcome { delivered: false, status: None, error: Some(error.to_string()) },
    };
    let sent = client
        .post(&delivery.url)
        .header("content-type", "application/json")
        .header("webhook-id", &id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await;
    match sent {
        Ok(response) => {
            let status = response.status();
            let code = Some(i32::from(status.as_u16()));
            if status.is_success() {
                return Outcome { delivered: true, status: code, error: None };
            }
            let text = response.text().await.unwrap_or_default();
            let mut error = format!("HTTP {status}");
            if !text.is_empty() {
                error.push_str(": ");
                error.extend(text.chars().take(ERROR_BYTES));
            }
            Outcome { delivered: false, status: code, error: Some(error) }
        }
        Err(error) => Outcome { delivered: false, status: None, error: Some(error_chain(&error)) },
    }
}

/// An error and its sources, `: `-separated.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text.chars().take(ERROR_BYTES).collect()
}

/// Records an attempt's outcome: DELIVERED, or PENDING again after the
/// backoff, or DEAD after the last attempt.
async fn record(
    pool: &PgPool,
    options: &WebhookOptions,
    delivery: &Claimed,
    outcome: Outcome,
) -> Result<(), sqlx::Error> {
    let attempts = u32::try_from(delivery.attempts).unwrap_or(0).saturating_add(1);
    let state = if outcome.delivered {
        "DELIVERED"
    } else if attempts >= options.max_attempts {
        "DEAD"
    } else {
        "PENDING"
    };
    let backoff = options.backoff(attempts).as_secs_f64() * 1000.0;
    if !outcome.delivered {
        tracing::debug!(delivery = %delivery.id, attempts, state, error = ?outcome.error, "webhook attempt failed");
    }
    sqlx::query(
        "UPDATE webhook_deliveries SET attempts = $2, state = $3, last_status_code = $4, last_error = $5, \
         delivered_at = CASE WHEN $3 = 'DELIVERED' THEN now() END, \
         next_attempt_at = now() + $6::float8 * interval '1 millisecond' \
         WHERE id = $1 AND state = 'PENDING'",
    )
    .bind(delivery.id)
    .bind(i32::try_from(attempts).unwrap_or(i32::MAX))
    .bind(state)
    .bind(outcome.status)
    .bind(outcome.error)
    .bind(backoff)
    .execute(pool)
    .await?;
    Ok(())
}
