//! Writing events: inside the transaction of the change they report, so an
//! event exists exactly when its change committed. Events are written
//! unnumbered, stamped with the writing transaction's id (the column's
//! default); the [`super::sequencer`] numbers them once they are final.

use std::sync::LazyLock;

use accrue_types::{PartnerId, ProgramId};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::catalogue::EventType;
use crate::error::StoreError;

/// Bumped by every [`insert`] in this process (before the writer's
/// transaction commits): the process's sequencers poll often for a while
/// after a write and seldom while nothing is written
/// ([`super::sequencer::run`]). Process-wide because a write happens deep in
/// a store, far from the service's setup; a service's writes and its
/// sequencer are in the same process (each writes only its own outbox), and
/// waking another service's sequencer of the same process costs one probe.
static WRITES: LazyLock<tokio::sync::watch::Sender<u64>> = LazyLock::new(|| tokio::sync::watch::channel(0).0);

/// Changes whenever this process wrote events (see [`WRITES`]).
pub(crate) fn writes() -> tokio::sync::watch::Receiver<u64> {
    WRITES.subscribe()
}

/// One event to write.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// Its id (UUID v7: unique by construction, and time-ordered).
    pub id: Uuid,
    /// Its type; must be one of the writing service's [`super::Source`] types.
    pub kind: &'static EventType,
    /// The program it belongs to (the feed it is sequenced in).
    pub program_id: ProgramId,
    /// The resource it is about (`sales/{id}`).
    pub subject: String,
    /// The partner it concerns, if any: a partner token sees only events
    /// whose partner is its own; None → only program-wide readers see it.
    pub partner_id: Option<PartnerId>,
    /// When the change happened (the change's own time).
    pub time: DateTime<Utc>,
    /// The data message ([`EventType::data`]), protobuf-encoded.
    pub data: Vec<u8>,
}

impl NewEvent {
    /// An event of `kind` about `subject` carrying `data`, with a fresh id.
    /// `data` must be the type's message; a mismatch is a programming error
    /// caught in debug builds (the feed would announce the wrong type).
    pub fn new<M: prost::Message + prost::Name>(
        kind: &'static EventType,
        program_id: ProgramId,
        subject: String,
        partner_id: Option<PartnerId>,
        time: DateTime<Utc>,
        data: &M,
    ) -> Self {
        debug_assert_eq!(M::full_name(), kind.data, "event {} carries the wrong message", kind.name);
        NewEvent { id: Uuid::now_v7(), kind, program_id, subject, partner_id, time, data: data.encode_to_vec() }
    }
}

impl NewEvent {
    /// An event of `kind` about `subject` written by reference: its data
    /// message is not stored but built when the event is read, by the
    /// service's [`super::Materialize`] hook from what `subject` names —
    /// only for a subject that never changes after the event (see
    /// [`super::materialize`]).
    pub fn by_reference(
        kind: &'static EventType,
        program_id: ProgramId,
        subject: String,
        partner_id: Option<PartnerId>,
        time: DateTime<Utc>,
    ) -> Self {
        NewEvent { id: Uuid::now_v7(), kind, program_id, subject, partner_id, time, data: Vec::new() }
    }
}

/// Writes `events` in one statement on `conn` (the caller's open
/// transaction: the events commit or roll back with the change). Nothing
/// is sent for an empty slice. Errors are the database's (the caller's
/// transaction is then to be rolled back, as for any failed write).
pub async fn insert(conn: &mut sqlx::PgConnection, events: &[NewEvent]) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let n = events.len();
    let (mut ids, mut programs, mut types, mut subjects) =
        (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut partners, mut times, mut data) = (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    for event in events {
        ids.push(event.id);
        programs.push(event.program_id);
        types.push(event.kind.name);
        subjects.push(event.subject.as_str());
        partners.push(event.partner_id);
        times.push(event.time);
        data.push(event.data.as_slice());
    }
    // WITH ORDINALITY + ORDER BY: positions follow the slice's order, so
    // events of one change are sequenced in the order they were given.
    sqlx::query(
        "INSERT INTO events (id, program_id, type, subject, partner_id, time, data) \
         SELECT id, program_id, type, subject, partner_id, time, data \
         FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::uuid[], $6::timestamptz[], $7::bytea[]) \
              WITH ORDINALITY AS e(id, program_id, type, subject, partner_id, time, data, n) \
         ORDER BY n",
    )
    .bind(&ids)
    .bind(&programs)
    .bind(&types)
    .bind(&subjects)
    .bind(&partners)
    .bind(&times)
    .bind(&data)
    .execute(conn)
    .await?;
    WRITES.send_modify(|count| *count = count.wrapping_add(1));
    Ok(())
}
