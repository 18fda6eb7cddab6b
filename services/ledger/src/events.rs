//! What the ledger writes to its outbox (issue 16 item 1; docs/events.md):
//! entries as GetEntry shows them (`Entry`), one `entry.posted` per new
//! entry and one `entry.status_changed` per status event, each carrying in
//! `history` the one change it reports. An entry concerns the partner who
//! earns it, whose token sees it (redacted as GetEntry redacts it:
//! [`redact`]). A posted line's `entry.posted` is written by reference and
//! built when read ([`materializer`]).

use std::collections::HashMap;
use std::sync::Arc;

use accrue_kit::auth::Identity;
use accrue_kit::convert::timestamp;
use accrue_kit::events::{EventType, Materialize, NewEvent, catalogue};
use accrue_proto::events::v1 as epb;
use accrue_proto::ledger::v1 as pb;
use accrue_types::{EntryId, ProgramId};
use chrono::{DateTime, Utc};
use prost::Message;
use sqlx::PgPool;

use crate::api::codec::{entry_to_proto, shown_to};
use crate::domain::posting::PostedLine;
use crate::domain::status::{Status, proto_from_stored};
use crate::store::{self, EntryRow};

/// One status event of an entry, as the event's `history` shows it.
pub(crate) struct Change<'a> {
    /// The entry.
    pub(crate) id: EntryId,
    /// Its status before ("UNSPECIFIED" when it was created).
    pub(crate) from: &'a str,
    /// Its status after.
    pub(crate) to: &'a str,
    /// The status event's reason.
    pub(crate) reason: &'a str,
}

fn status_event(from: &str, to: &str, actor: &str, reason: &str, time: DateTime<Utc>) -> pb::StatusEvent {
    pb::StatusEvent {
        from_status: proto_from_stored(from) as i32,
        to_status: proto_from_stored(to) as i32,
        actor: actor.to_string(),
        reason: reason.to_string(),
        event_time: Some(timestamp(time)),
    }
}

/// `entry.posted` for line `posted` of `posting`, entry `id`, created at
/// `created_at`: written by reference (no data stored; [`materialize`]
/// builds it when read), because a posted line never changes and its entry
/// was about a kilobyte per line written twice — the largest share of the
/// settlement's WAL (issue 15).
pub(crate) fn posted(
    program_id: ProgramId,
    (id, posted): (EntryId, &PostedLine),
    created_at: DateTime<Utc>,
) -> NewEvent {
    NewEvent::by_reference(
        &catalogue::ENTRY_POSTED,
        program_id,
        format!("entries/{id}"),
        Some(posted.line.partner_id),
        created_at,
    )
}

/// The data of `entry.posted` events written by reference (see [`posted`]),
/// by subject: each entry as it was posted — PENDING, reserved by no payout,
/// its history the creation event alone — from its immutable row and its
/// posting's actor (`entry_history`). The ledger's [`Materialize`] hook.
pub(crate) fn materializer() -> Materialize {
    Arc::new(|pool, subjects| Box::pin(materialize(pool, subjects)))
}

async fn materialize(pool: PgPool, subjects: Vec<String>) -> Result<HashMap<String, Vec<u8>>, sqlx::Error> {
    let ids: Vec<EntryId> =
        subjects.iter().filter_map(|subject| subject.strip_prefix("entries/").and_then(|id| id.parse().ok())).collect();
    let rows = store::entries_by_ids(&pool, &ids).await.map_err(decode_error)?;
    let mut created = store::creation_events(&pool, &ids).await.map_err(decode_error)?;
    let mut built = HashMap::with_capacity(rows.len());
    for row in rows {
        let id = row.id;
        let Some(creation) = created.remove(&id) else { continue };
        let mut entry = entry_to_proto(row, vec![creation])
            .map_err(|status| sqlx::Error::Decode(status.message().to_string().into()))?;
        entry.status = proto_from_stored(Status::Pending.as_str()) as i32;
        entry.payout_id = String::new();
        built.insert(format!("entries/{id}"), entry.encode_to_vec());
    }
    Ok(built)
}

fn decode_error(error: accrue_kit::error::StoreError) -> sqlx::Error {
    sqlx::Error::Decode(error.to_string().into())
}

/// The event of `kind` for `change` of the entry `row` (read after the
/// change): the entry with `status` = the change's `to` and `history` =
/// that one change. A row the API cannot show is a decode error, which
/// rolls the change back.
pub(crate) fn changed(
    kind: &'static EventType,
    row: &EntryRow,
    change: &Change<'_>,
    actor: &str,
    time: DateTime<Utc>,
) -> Result<NewEvent, sqlx::Error> {
    let mut entry = entry_to_proto(row.clone(), Vec::new())
        .map_err(|status| sqlx::Error::Decode(status.message().to_string().into()))?;
    entry.status = proto_from_stored(change.to) as i32;
    entry.history = vec![status_event(change.from, change.to, actor, change.reason, time)];
    Ok(NewEvent::new(kind, row.program_id, format!("entries/{}", row.id), Some(row.partner_id), time, &entry))
}

/// An entry event as a partner token may see it: the entry cleared as
/// GetEntry clears it (a downline sale's amounts on an override or margin
/// line). The feed has already confined the token to its own entries.
pub(crate) fn redact(scope: &Identity, mut event: epb::Event) -> epb::Event {
    if let Some(data) = event.data.as_mut()
        && let Ok(entry) = pb::Entry::decode(data.value.as_slice())
    {
        data.value = shown_to(scope, entry).encode_to_vec();
    }
    event
}
