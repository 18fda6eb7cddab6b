//! What the ledger writes to its outbox (issue 16 item 1; docs/events.md):
//! entries as GetEntry shows them (`Entry`), one `entry.posted` per new
//! entry and one `entry.status_changed` per status event, each carrying in
//! `history` the one change it reports. An entry concerns the partner who
//! earns it, whose token sees it (redacted as GetEntry redacts it:
//! [`redact`]).

use accrue_kit::auth::Identity;
use accrue_kit::convert::settlement::{breakdown_to_proto, kind_to_proto};
use accrue_kit::convert::{amount_to_proto, timestamp};
use accrue_kit::events::{EventType, NewEvent, catalogue};
use accrue_proto::events::v1 as epb;
use accrue_proto::ledger::v1 as pb;
use accrue_types::{EntryId, ProgramId};
use chrono::{DateTime, Utc};
use prost::Message;

use crate::api::codec::{entry_to_proto, shown_to};
use crate::domain::posting::{PostedLine, Posting};
use crate::domain::status::{Status, proto_from_stored};
use crate::store::EntryRow;

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

/// `entry.posted` for line `posted` of `posting`, entry `id`, created
/// PENDING at `created_at` by `actor` — built from the posting in memory, so
/// the posting transaction reads nothing back (settlement's hot path).
pub(crate) fn posted(
    program_id: ProgramId,
    posting: &Posting,
    (id, posted): (EntryId, &PostedLine),
    created_at: DateTime<Utc>,
    actor: &str,
) -> NewEvent {
    let line = &posted.line;
    let pending = Status::Pending.as_str();
    let entry = pb::Entry {
        id: id.to_string(),
        program_id: program_id.to_string(),
        partner_id: line.partner_id.to_string(),
        sale_id: posting.sale_id.clone(),
        kind: kind_to_proto(line.kind) as i32,
        entry_type: posted.entry_type().to_proto() as i32,
        amount: Some(amount_to_proto(posted.currency(), posted.amount())),
        status: proto_from_stored(pending) as i32,
        level: i32::try_from(line.level).unwrap_or(i32::MAX),
        source_partner_id: line.source_partner_id.map(|id| id.to_string()).unwrap_or_default(),
        occurred_at: Some(timestamp(posted.occurred_at)),
        clears_at: Some(timestamp(line.clears_at)),
        breakdown: line.breakdown.clone().map(breakdown_to_proto),
        idempotency_key: posting.key.clone(),
        payout_id: String::new(),
        create_time: Some(timestamp(created_at)),
        history: vec![status_event("UNSPECIFIED", pending, actor, "posted", created_at)],
        reverses_entry_id: String::new(),
        refund_id: String::new(),
    };
    NewEvent::new(
        &catalogue::ENTRY_POSTED,
        program_id,
        format!("entries/{id}"),
        Some(line.partner_id),
        created_at,
        &entry,
    )
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
