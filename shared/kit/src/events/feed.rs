//! `accrue.events.v1.EventService` over one service's outbox: ListEvents
//! pages the sequenced events of a program, WatchEvents streams them (the
//! history, then live) in sequence order, at least once.

use std::pin::Pin;
use std::time::Duration;

use accrue_proto::events::v1 as pb;
use accrue_proto::events::v1::event_service_server::EventService;
use accrue_types::{PartnerId, ProgramId};
use chrono::{DateTime, Utc};
use futures::Stream;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::catalogue::Source;
use crate::FieldViolations;
use crate::auth::Identity;
use crate::convert::{require_uuid, timestamp};
use crate::error::invalid_field;
use crate::page;

/// How a service shows one of its events to a partner token, beyond the
/// partner filter (the ledger clears a downline sale's amounts from an
/// override entry, as GetEntry does). Called only for partner-scoped
/// callers, with the event whose `partner_id` is the caller's; returns the
/// event as that caller may see it.
pub type Redact = fn(&Identity, pb::Event) -> pb::Event;

/// How long a watcher waits for a wake-up before it looks anyway (a
/// notification lost while the listener reconnected costs at most this).
pub const WATCH_POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Events a watcher reads per query, and buffers ahead of a slow client.
const WATCH_BATCH: i64 = 500;

/// Runs numbered per read of a page (each at most
/// [`super::sequencer::RUN_LIMIT`] events).
const WINDOW_RUNS: i64 = 4;

/// The `EventService` of one service.
#[derive(Clone)]
pub struct EventApi {
    pool: PgPool,
    source: &'static Source,
    wake: watch::Receiver<u64>,
    shutdown: CancellationToken,
    hooks: super::Hooks,
}

impl std::fmt::Debug for EventApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventApi").field("source", &self.source.uri).finish_non_exhaustive()
    }
}

/// A validated request: the program, the start, the types, the caller's
/// partner confinement.
struct Query {
    program_id: ProgramId,
    after: i64,
    types: Vec<String>,
    partner: Option<PartnerId>,
}

impl Query {
    /// The page-token query description: every field but the paging ones.
    fn describe(&self) -> String {
        let partner = self.partner.map(|id| id.to_string()).unwrap_or_default();
        format!("events|{}|{}|{}|{partner}", self.program_id, self.after, self.types.join(","))
    }
}

/// ListEvents' page cursor: the last sequence served.
#[derive(Serialize, Deserialize)]
struct Cursor {
    s: i64,
}

/// One stored event.
#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    program_id: ProgramId,
    sequence: i64,
    r#type: String,
    subject: String,
    time: DateTime<Utc>,
    data: Vec<u8>,
}

impl EventApi {
    /// The feed of `source` over `pool` (the service's own schema). `wake`
    /// changes when events were sequenced; `shutdown` ends open watches.
    pub fn new(
        pool: PgPool,
        source: &'static Source,
        wake: watch::Receiver<u64>,
        shutdown: CancellationToken,
        hooks: super::Hooks,
    ) -> Self {
        EventApi { pool, source, wake, shutdown, hooks }
    }

    /// Validates a request's fields; INVALID_ARGUMENT with every violation,
    /// NOT_FOUND when the token does not name the program.
    fn query(&self, scope: &Identity, program_id: &str, after: i64, types: Vec<String>) -> Result<Query, Status> {
        let mut violations = FieldViolations::new();
        let program = require_uuid::<ProgramId>("program_id", program_id, &mut violations);
        if after < 0 {
            violations.add("after_sequence", "must not be negative");
        }
        for (index, name) in types.iter().enumerate() {
            if self.source.event_type(name).is_none() {
                let known: Vec<&str> = self.source.types.iter().map(|t| t.name).collect();
                violations.add(
                    format!("types[{index}]"),
                    format!("{name:?} is not an event type of {} (one of {})", self.source.uri, known.join(", ")),
                );
            }
        }
        violations.into_result()?;
        let program_id = program.ok_or_else(|| invalid_field("program_id", "is required"))?;
        scope.require_program(program_id)?;
        let mut types = types;
        types.sort();
        types.dedup();
        Ok(Query { program_id, after, types, partner: scope.partner_scope() })
    }

    /// Up to `limit` sequenced events of `query` after sequence `after`,
    /// read a window of [`WINDOW_RUNS`] runs at a time (see
    /// [`super::sequencer`]) until the page is full or the feed ends: a
    /// filter that matches little reads on, and no read numbers more than a
    /// window's events at once.
    async fn fetch(&self, query: &Query, after: i64, limit: i64) -> Result<Vec<Row>, sqlx::Error> {
        let mut rows: Vec<Row> = Vec::new();
        let mut from = after;
        while i64::try_from(rows.len()).unwrap_or(i64::MAX) < limit {
            // The last number of the window's last run; None: the feed ends.
            let (end,): (Option<i64>,) = sqlx::query_as(
                "SELECT max(last_sequence) FROM (SELECT last_sequence FROM event_runs \
                 WHERE program_id = $1 AND last_sequence > $2 ORDER BY first_sequence LIMIT $3) w",
            )
            .bind(query.program_id)
            .bind(from)
            .bind(WINDOW_RUNS)
            .fetch_one(&self.pool)
            .await?;
            let Some(end) = end else { break };
            let mut sql = sqlx::QueryBuilder::new(
                "SELECT id, program_id, sequence, type, subject, time, data FROM numbered_events(",
            );
            sql.push_bind(query.program_id).push(", ").push_bind(from).push(", ").push_bind(WINDOW_RUNS);
            // Bounded by `end` too: a run numbered since the window was read
            // is the next window's.
            sql.push(") WHERE sequence > ").push_bind(from).push(" AND sequence <= ").push_bind(end);
            if !query.types.is_empty() {
                sql.push(" AND type = ANY(").push_bind(&query.types).push(")");
            }
            if let Some(partner) = query.partner {
                sql.push(" AND partner_id = ").push_bind(partner);
            }
            let wanted = limit - i64::try_from(rows.len()).unwrap_or(i64::MAX);
            sql.push(" ORDER BY sequence LIMIT ").push_bind(wanted);
            rows.extend(sql.build_query_as::<Row>().fetch_all(&self.pool).await?);
            from = end;
        }
        let by_reference = rows.iter_mut().map(|row| (row.subject.as_str(), &mut row.data));
        super::materialize::fill(self.hooks.materialize.as_ref(), &self.pool, by_reference).await?;
        Ok(rows)
    }

    /// A row as the caller sees it.
    fn event(&self, scope: &Identity, row: Row) -> pb::Event {
        let data = self
            .source
            .event_type(&row.r#type)
            .map(|t| prost_types::Any { type_url: format!("type.googleapis.com/{}", t.data), value: row.data });
        let event = pb::Event {
            id: row.id.to_string(),
            source: self.source.uri.to_string(),
            r#type: row.r#type,
            time: Some(timestamp(row.time)),
            subject: row.subject,
            program_id: row.program_id.to_string(),
            sequence: row.sequence,
            data,
        };
        match (scope.partner_scope(), self.hooks.redact) {
            (Some(_), Some(redact)) => redact(scope, event),
            _ => event,
        }
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchEventsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl EventService for EventApi {
    async fn list_events(
        &self,
        request: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        let scope = crate::auth::caller(&request)?.clone();
        let request = request.into_inner();
        let query = self.query(&scope, &request.program_id, request.after_sequence, request.types)?;
        let size = page::page_size(request.page_size)?;
        let description = query.describe();
        let after = match page::decode::<Cursor>(&description, &request.page_token)? {
            Some(cursor) => cursor.s,
            None => query.after,
        };
        let mut rows = self.fetch(&query, after, size + 1).await.map_err(crate::error::db_error)?;
        let next_page_token = page::next_page(&mut rows, size, &description, |row| Cursor { s: row.sequence })?;
        let events = rows.into_iter().map(|row| self.event(&scope, row)).collect();
        Ok(Response::new(pb::ListEventsResponse { events, next_page_token }))
    }

    type WatchEventsStream = WatchStream;

    async fn watch_events(
        &self,
        request: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let scope = crate::auth::caller(&request)?.clone();
        let request = request.into_inner();
        let query = self.query(&scope, &request.program_id, request.after_sequence, request.types)?;
        let (sender, receiver) = mpsc::channel(usize::try_from(WATCH_BATCH).unwrap_or(500));
        let api = self.clone();
        tokio::spawn(async move { api.watch(scope, query, sender).await });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(receiver))))
    }
}

impl EventApi {
    /// Feeds one watch: reads what follows the last sequence sent, sends it,
    /// and when there is nothing waits for a wake-up (or
    /// [`WATCH_POLL_INTERVAL`]). Ends when the client goes away, or at
    /// shutdown (the stream then ends OK; the client resumes elsewhere). A
    /// database error ends the stream with UNAVAILABLE / INTERNAL.
    async fn watch(
        mut self,
        scope: Identity,
        query: Query,
        sender: mpsc::Sender<Result<pb::WatchEventsResponse, Status>>,
    ) {
        let mut last = query.after;
        loop {
            // Marked seen before the read: a wake-up during the read is not lost.
            self.wake.borrow_and_update();
            let rows = tokio::select! {
                () = self.shutdown.cancelled() => return,
                rows = self.fetch(&query, last, WATCH_BATCH) => rows,
            };
            let rows = match rows {
                Ok(rows) => rows,
                Err(error) => {
                    let _ = sender.send(Err(crate::error::db_error(error))).await;
                    return;
                }
            };
            if rows.is_empty() {
                tokio::select! {
                    () = self.shutdown.cancelled() => return,
                    () = sender.closed() => return,
                    changed = self.wake.changed() => if changed.is_err() {
                        // The sequencer has stopped (shutdown): poll.
                        tokio::time::sleep(WATCH_POLL_INTERVAL).await;
                    },
                    () = tokio::time::sleep(WATCH_POLL_INTERVAL) => {}
                }
                continue;
            }
            for row in rows {
                last = row.sequence;
                let event = self.event(&scope, row);
                let sent = tokio::select! {
                    () = self.shutdown.cancelled() => return,
                    sent = sender.send(Ok(pb::WatchEventsResponse { event: Some(event) })) => sent,
                };
                if sent.is_err() {
                    return;
                }
            }
        }
    }
}
