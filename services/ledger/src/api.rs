//! tonic implementation of `LedgerService`: decode and validate, call the
//! store (which applies the pure rules in `domain`), encode.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use accrue_kit::FieldViolations;
use accrue_kit::auth::Identity;
use accrue_kit::client::AuthChannel;
use accrue_kit::convert::settlement::{breakdown_to_proto, kind_from_proto, kind_to_proto};
use accrue_kit::convert::{
    amount_to_proto, from_timestamp, optional_money, optional_uuid, parse_id, require_money, require_timestamp,
    require_uuid, timestamp,
};
use accrue_kit::error::{already_exists, db_error, failed_precondition, internal, invalid_field, not_found};
use accrue_kit::page;
use accrue_money::{Currency, RoundingMode};
use accrue_proto::hierarchy::v1 as hierarchy;
use accrue_proto::hierarchy::v1::hierarchy_service_client::HierarchyServiceClient;
use accrue_proto::ledger::v1 as pb;
use accrue_proto::ledger::v1::ledger_service_server::LedgerService;
use accrue_proto::types::v1 as types;
use accrue_types::settlement::{Breakdown, EarningKind};
use accrue_types::{EntryId, PartnerId, PayoutId, ProgramId, RefundId};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tonic::{Code, Request, Response, Status};

use crate::domain::posting::{self, EntryType, Posting};
use crate::domain::reversal::{Refund, ReversalError, VoidError};
use crate::domain::status::{Status as EntryStatus, TransitionError, proto_from_stored};
use crate::store::{
    self, EntryFilter, PostingOutcome, ReservationRequest, ReserveError, ReverseOutcome, TransitionOutcome, VoidOutcome,
};

pub(crate) mod codec;
mod reports;
mod reservations;
mod reversals;
mod upstream;
mod validate;

use codec::*;
use validate::*;

/// Most partners per hierarchy.GetUplines call (the hierarchy's limit).
const UPLINE_BATCH: usize = 1000;

/// Most postings in one `PostEntries` call.
pub const MAX_POSTINGS: usize = 1000;
/// Most partner reservations in one `ReserveForPayout` call.
pub const MAX_RESERVATIONS: usize = 1000;
/// Most entry ids in one `TransitionEntries` call.
pub const MAX_TRANSITION_IDS: usize = 100_000;
/// Longest reason accepted on a transition.
const MAX_TEXT_LEN: usize = 1000;

/// The `LedgerService` implementation.
#[derive(Debug, Clone)]
pub struct LedgerApi {
    pool: PgPool,
    hierarchy: HierarchyServiceClient<AuthChannel>,
    /// Partners the hierarchy confirmed in a program. A partner never moves
    /// to another program and is never deleted, so a confirmation holds for
    /// the life of the process; the saga's batches ask the hierarchy once
    /// per new partner, not once per call.
    known_partners: Arc<Mutex<HashSet<(ProgramId, PartnerId)>>>,
}

/// Most partners [`LedgerApi::known_partners`] remembers before it starts
/// over (a memory bound: about 50 MB of pairs).
const MAX_KNOWN_PARTNERS: usize = 1_000_000;

impl LedgerApi {
    /// A new API over the service's pool and a client of the hierarchy
    /// service (for `GetProgram` → `auto_approve_cleared`).
    pub fn new(pool: PgPool, hierarchy: HierarchyServiceClient<AuthChannel>) -> Self {
        LedgerApi { pool, hierarchy, known_partners: Arc::default() }
    }
}

/// ListEntries keyset cursor: `(created_at, id)` of the last entry served.
#[derive(Debug, Serialize, Deserialize)]
struct EntryCursor {
    /// created_at in microseconds since the epoch.
    t: i64,
    /// Entry id.
    id: EntryId,
}

#[tonic::async_trait]
impl LedgerService for LedgerApi {
    /// Posts many sales' lines in ONE database transaction, idempotent per
    /// posting on (program, key) + request hash. Request-level mistakes
    /// (program id, more than 1000 postings) → INVALID_ARGUMENT; an invalid
    /// posting fails alone (ItemFailure INVALID_ARGUMENT / INVALID_POSTING);
    /// a key reused with another body fails alone (ALREADY_EXISTS /
    /// IDEMPOTENCY_KEY_REUSED); a posting naming a partner (or source
    /// partner) that is not one of the program's fails alone (NOT_FOUND /
    /// PARTNER_NOT_FOUND, the same for another program's partner as for an
    /// unknown id). NOT_FOUND when the program does not exist. Results are
    /// in request order.
    #[tracing::instrument(skip_all, fields(postings = request.get_ref().postings.len()))]
    async fn post_entries(
        &self,
        request: Request<pb::PostEntriesRequest>,
    ) -> Result<Response<pb::PostEntriesResponse>, Status> {
        let actor = accrue_kit::auth::actor(&request)?;
        let scope = accrue_kit::auth::caller(&request)?.clone();
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let program_id = require_uuid("program_id", &request.program_id, &mut violations);
        if request.postings.len() > MAX_POSTINGS {
            violations.add("postings", format!("at most {MAX_POSTINGS} postings per call"));
        }
        violations.into_result()?;
        let program_id = program_id.ok_or_else(|| invalid_field("program_id", "is required"))?;
        scope.require_program(program_id)?;

        // Validate each posting on its own; the first valid posting of a key
        // is the one written, later ones with that key are compared to it.
        // Each result names its posting's key as sent, whatever became of it.
        let keys: Vec<String> = request.postings.iter().map(|p| p.idempotency_key.clone()).collect();
        let mut parsed: Vec<Result<Posting, types::ItemFailure>> = Vec::with_capacity(request.postings.len());
        for (index, input) in request.postings.into_iter().enumerate() {
            parsed.push(posting::validate(input, &format!("postings[{index}]")).map_err(|violations| {
                item_failure("INVALID_ARGUMENT", "INVALID_POSTING", violations.into_status().message())
            }));
        }
        // Every line's partner and source partner must be one of the
        // program's partners; a posting naming any other fails alone, as
        // for an unknown id. The program itself must exist.
        let named: HashSet<PartnerId> = parsed
            .iter()
            .flatten()
            .flat_map(|posting| posting.lines.iter())
            .flat_map(|posted| std::iter::once(posted.line.partner_id).chain(posted.line.source_partner_id))
            .collect();
        let foreign = if named.is_empty() {
            self.auto_approve(program_id).await.map(|_| HashSet::new())?
        } else {
            self.foreign_partners(program_id, named).await?
        };
        for (index, result) in parsed.iter_mut().enumerate() {
            let Ok(posting) = result else { continue };
            let missing = posting.lines.iter().enumerate().find_map(|(line, posted)| {
                let partner = posted.line.partner_id;
                let source = posted.line.source_partner_id.filter(|source| foreign.contains(source));
                if foreign.contains(&partner) {
                    Some((format!("postings[{index}].lines[{line}].partner_id"), partner))
                } else {
                    source.map(|source| (format!("postings[{index}].lines[{line}].source_partner_id"), source))
                }
            });
            if let Some((field, partner)) = missing {
                *result = Err(item_failure(
                    "NOT_FOUND",
                    "PARTNER_NOT_FOUND",
                    format!("{field}: partner {partner} not found in program {program_id}"),
                ));
            }
        }
        let mut first_of_key: HashMap<&str, usize> = HashMap::new();
        let mut to_write: Vec<&Posting> = Vec::new();
        let mut write_slot: HashMap<usize, usize> = HashMap::new();
        for (index, result) in parsed.iter().enumerate() {
            if let Ok(posting) = result
                && !first_of_key.contains_key(posting.key.as_str())
            {
                first_of_key.insert(posting.key.as_str(), index);
                write_slot.insert(index, to_write.len());
                to_write.push(posting);
            }
        }
        let outcomes = store::post(&self.pool, program_id, &to_write, &actor).await?;

        let reused = |key: &str| {
            item_failure(
                "ALREADY_EXISTS",
                "IDEMPOTENCY_KEY_REUSED",
                format!("idempotency key {key:?} was already used with a different request body"),
            )
        };
        let mut results = Vec::with_capacity(parsed.len());
        for (index, result) in parsed.iter().enumerate() {
            let key = keys.get(index).cloned().unwrap_or_default();
            let posting = match result {
                Err(failure) => {
                    results.push(pb::PostingResult {
                        idempotency_key: key,
                        failure: Some(failure.clone()),
                        ..Default::default()
                    });
                    continue;
                }
                Ok(posting) => posting,
            };
            let first = first_of_key.get(posting.key.as_str()).copied().unwrap_or(index);
            let slot = write_slot.get(&first).copied().unwrap_or(usize::MAX);
            let (Some(outcome), Some(written)) = (outcomes.get(slot), to_write.get(slot)) else {
                return Err(internal("posting outcome missing"));
            };
            // A repeat of a key inside this request is compared with its first occurrence.
            let duplicate = first != index;
            let result = match outcome {
                _ if duplicate && written.hash != posting.hash => {
                    pb::PostingResult { failure: Some(reused(&key)), idempotency_key: key, ..Default::default() }
                }
                PostingOutcome::KeyReused => {
                    pb::PostingResult { failure: Some(reused(&key)), idempotency_key: key, ..Default::default() }
                }
                PostingOutcome::Posted(ids) | PostingOutcome::Replayed(ids) => pb::PostingResult {
                    idempotency_key: key,
                    entry_ids: ids.iter().map(EntryId::to_string).collect(),
                    replayed: duplicate || matches!(outcome, PostingOutcome::Replayed(_)),
                    failure: None,
                },
            };
            results.push(result);
        }
        Ok(Response::new(pb::PostEntriesResponse { results }))
    }

    /// One entry with its breakdown, current status, reserving payout and
    /// status history (oldest first). INVALID_ARGUMENT for a malformed id,
    /// NOT_FOUND when absent.
    async fn get_entry(&self, request: Request<pb::GetEntryRequest>) -> Result<Response<pb::Entry>, Status> {
        let id = parse_id("id", &request.get_ref().id)?;
        // Another program's entry is answered exactly as a missing one.
        let scope = accrue_kit::auth::caller(&request)?;
        let Some((row, history)) =
            store::get_entry(&self.pool, id).await?.filter(|(row, _)| scope.may_see(row.program_id, &[row.partner_id]))
        else {
            return Err(not_found("entry", id));
        };
        Ok(Response::new(shown_to(scope, entry_to_proto(row, history)?)))
    }

    /// A program's entries, oldest first (`(create_time, id)` keyset), with
    /// optional partner, sale, status, kind and entry type (CREDIT / DEBIT)
    /// filters. INVALID_ARGUMENT for
    /// malformed ids, unknown enum values, negative page sizes or bad tokens.
    async fn list_entries(
        &self,
        request: Request<pb::ListEntriesRequest>,
    ) -> Result<Response<pb::ListEntriesResponse>, Status> {
        let scope = accrue_kit::auth::caller(&request)?.clone();
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let program_id = require_uuid("program_id", &request.program_id, &mut violations);
        let partner_id = optional_uuid("partner_id", &request.partner_id, &mut violations);
        let status = match request.status {
            0 => None,
            value => {
                let status = EntryStatus::from_proto(value);
                if status.is_none() {
                    violations.add("status", format!("unknown entry status {value}"));
                }
                status
            }
        };
        let kind = match request.kind {
            0 => None,
            value => {
                let kind = kind_from_proto(value);
                if kind.is_none() {
                    violations.add("kind", format!("unknown earning kind {value}"));
                }
                kind
            }
        };
        let entry_type = match request.entry_type {
            0 => None,
            value => match pb::EntryType::try_from(value) {
                Ok(pb::EntryType::Credit) => Some(EntryType::Credit),
                Ok(pb::EntryType::Debit) => Some(EntryType::Debit),
                _ => {
                    violations.add("entry_type", format!("unknown entry type {value}"));
                    None
                }
            },
        };
        violations.into_result()?;
        let program_id = program_id.ok_or_else(|| invalid_field("program_id", "is required"))?;
        scope.require_program(program_id)?;
        let size = page::page_size(request.page_size)?;
        let query = format!(
            "entries|{program_id}|{}|{}|{}|{}|{}",
            request.partner_id, request.sale_id, request.status, request.kind, request.entry_type
        );
        let after = match page::decode::<EntryCursor>(&query, &request.page_token)? {
            None => None,
            Some(cursor) => {
                let time = DateTime::<Utc>::from_timestamp_micros(cursor.t)
                    .ok_or_else(|| invalid_field("page_token", "is not a valid page token"))?;
                Some((time, cursor.id))
            }
        };
        // A partner token asking for another partner's entries gets an
        // empty page, as for a partner without entries.
        let Some(partner_id) = scope.partner_filter(partner_id) else {
            return Ok(Response::new(pb::ListEntriesResponse::default()));
        };
        let filter = EntryFilter {
            partner_id,
            sale_id: (!request.sale_id.is_empty()).then(|| request.sale_id.clone()),
            status,
            kind: kind.map(EarningKind::as_str),
            entry_type: entry_type.map(EntryType::as_str),
        };
        let mut rows = store::list_entries(&self.pool, program_id, &filter, after, size + 1).await?;
        let next_page_token = page::next_page(&mut rows, size, &query, |last| EntryCursor {
            t: last.created_at.timestamp_micros(),
            id: last.id,
        })?;
        let entries = rows
            .into_iter()
            .map(|row| entry_to_proto(row, Vec::new()).map(|entry| shown_to(&scope, entry)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Response::new(pb::ListEntriesResponse { entries, next_page_token }))
    }

    /// Moves entries to `to_status`, all or nothing (DESIGN §5 / seed 003
    /// state machine). Entries already there are skipped and not counted.
    /// NOT_FOUND for an entry not in the program; FAILED_PRECONDITION
    /// INVALID_TRANSITION (naming the entry) for an illegal move, or
    /// ENTRY_RESERVED when voiding an entry held by a payout; nothing changes
    /// then. ABORTED CONCURRENT_UPDATE when a concurrent write deadlocked with
    /// this one (nothing changed; retry). The events' actor is the caller's token subject. The clawback debits that travel with a
    /// moved line (issue 9 item 4) and are in the line's status move with it
    /// in the same transaction, with the same actor and reason; they are not
    /// counted in `transitioned_count`.  REVERSED is terminal here: only
    /// VoidReversal leads out of it.
    async fn transition_entries(
        &self,
        request: Request<pb::TransitionEntriesRequest>,
    ) -> Result<Response<pb::TransitionEntriesResponse>, Status> {
        let actor = accrue_kit::auth::actor(&request)?;
        let scope = accrue_kit::auth::caller(&request)?.clone();
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let program_id = require_uuid("program_id", &request.program_id, &mut violations);
        if request.entry_ids.is_empty() {
            violations.add("entry_ids", "is required");
        } else if request.entry_ids.len() > MAX_TRANSITION_IDS {
            violations.add("entry_ids", format!("at most {MAX_TRANSITION_IDS} entries per call"));
        }
        let mut ids = Vec::with_capacity(request.entry_ids.len());
        let mut seen = HashSet::new();
        for (index, id) in request.entry_ids.iter().enumerate() {
            if let Some(id) = require_uuid(&format!("entry_ids[{index}]"), id, &mut violations)
                && seen.insert(id)
            {
                ids.push(id);
            }
        }
        let to = EntryStatus::from_proto(request.to_status);
        if to.is_none() {
            violations.add("to_status", "must be a known status other than UNSPECIFIED");
        }
        if request.reason.len() > MAX_TEXT_LEN {
            violations.add("reason", format!("is longer than {MAX_TEXT_LEN} bytes"));
        }
        violations.into_result()?;
        let (Some(program_id), Some(to)) = (program_id, to) else {
            return Err(invalid_field("program_id", "is required"));
        };
        scope.require_program(program_id)?;
        let outcome =
            store::transition(&self.pool, program_id, &ids, to, &actor, &request.reason).await.map_err(store_status)?;
        match outcome {
            TransitionOutcome::Done(count) => Ok(Response::new(pb::TransitionEntriesResponse {
                transitioned_count: i64::try_from(count).unwrap_or(i64::MAX),
            })),
            TransitionOutcome::NotFound(id) => Err(not_found("entry", id)),
            TransitionOutcome::Refused(error @ TransitionError::Invalid { .. }) => {
                Err(failed_precondition("INVALID_TRANSITION", error.to_string()))
            }
            TransitionOutcome::Refused(error @ TransitionError::Reserved { .. }) => {
                Err(failed_precondition("ENTRY_RESERVED", error.to_string()))
            }
        }
    }

    /// Per (partner, currency), VOIDED entries excluded: direct, split,
    /// override and margin are what CREDIT lines of that kind earned;
    /// `clawback` is Σ DEBITs (and `clawback_<kind>` those of each kind — a
    /// clawback debit has its line's kind); `total` is the net, Σ kinds −
    /// clawback. REVERSED lines still count as earned, their debits as clawed
    /// back. Optionally only entries whose occurred_at is in [start_time,
    /// end_time) and only some sales' (≤ 1000). Ordered by partner id, then
    /// currency. INVALID_ARGUMENT for malformed ids or times.
    async fn get_earnings_summary(
        &self,
        request: Request<pb::GetEarningsSummaryRequest>,
    ) -> Result<Response<pb::GetEarningsSummaryResponse>, Status> {
        self.earnings_summary(request).await
    }

    /// See [`reports::list_sale_lines`].
    async fn list_sale_lines(
        &self,
        request: Request<pb::ListSaleLinesRequest>,
    ) -> Result<Response<pb::ListSaleLinesResponse>, Status> {
        let scope = accrue_kit::auth::caller(&request)?.clone();
        reports::list_sale_lines(self, &scope, request.into_inner()).await.map(Response::new)
    }

    /// PENDING entries with `clears_at ≤ as_of` (default now) → CLEARED, and
    /// on to APPROVED when hierarchy `GetProgram(program_id).auto_approve_cleared`.
    /// NOT_FOUND when the program does not exist; UNAVAILABLE when the
    /// hierarchy service cannot answer.
    async fn clear_matured(
        &self,
        request: Request<pb::ClearMaturedRequest>,
    ) -> Result<Response<pb::ClearMaturedResponse>, Status> {
        let actor = accrue_kit::auth::actor(&request)?;
        let scope = accrue_kit::auth::caller(&request)?.clone();
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let program_id = require_uuid("program_id", &request.program_id, &mut violations);
        let as_of = from_timestamp("as_of", request.as_of.as_ref(), &mut violations);
        violations.into_result()?;
        let program_id = program_id.ok_or_else(|| invalid_field("program_id", "is required"))?;
        scope.require_program(program_id)?;
        let as_of = as_of.unwrap_or_else(Utc::now);
        let auto_approve = self.auto_approve(program_id).await?;
        let (cleared_count, approved_count) =
            store::clear_matured(&self.pool, program_id, as_of, auto_approve, &actor).await?;
        Ok(Response::new(pb::ClearMaturedResponse { cleared_count, approved_count }))
    }

    /// For each (partner, payout, minimum): a payout that already holds
    /// reservations returns them (idempotent); otherwise the partner's
    /// APPROVED, unreserved entries in the currency with `clears_at ≤ cutoff`
    /// are summed (CREDIT − DEBIT) and reserved when the sum is > 0 and ≥ the
    /// minimum, else carried forward. One transaction. INVALID_ARGUMENT for
    /// malformed input (duplicate partner or payout ids, a minimum in another
    /// currency or negative, more than 1000 reservations); ABORTED when a
    /// concurrent run reserved an entry first (retry).
    async fn reserve_for_payout(
        &self,
        request: Request<pb::ReserveForPayoutRequest>,
    ) -> Result<Response<pb::ReserveForPayoutResponse>, Status> {
        self.reserve(request).await
    }

    /// Releases every reservation of `payout_id` (issue 12 item 2; DESIGN §5:
    /// a rejected or deleted payout's entries go back to the partner's
    /// payable balance for a later run), in one transaction, each release
    /// kept with the caller's subject and `reason`. Idempotent on the payout
    /// id: a payout that holds nothing (released before, never reserved, or
    /// of another program) releases 0. INVALID_ARGUMENT for malformed ids or
    /// a reason over 1000 characters; FAILED_PRECONDITION RESERVATION_SETTLED
    /// when the payout was paid (nothing changes).
    async fn release_reservation(
        &self,
        request: Request<pb::ReleaseReservationRequest>,
    ) -> Result<Response<pb::ReleaseReservationResponse>, Status> {
        self.release(request).await
    }

    /// Settles `payout_id`'s reservation (issue 12 item 2; DESIGN §5: Paid
    /// settles it): every reserved APPROVED entry, credits and debits, moves
    /// to PAID with a status event by the caller naming the payout and
    /// `payment_reference`; entries REVERSED while reserved stay. One
    /// transaction. FAILED_PRECONDITION RESERVED_ENTRY_NOT_APPROVED (nothing
    /// written) while one of its entries is DISPUTED or CLEARED. Idempotent on the payout id: a repeat
    /// with the same reference answers the stored settlement and writes
    /// nothing. INVALID_ARGUMENT for malformed ids or a missing or
    /// over-long reference; FAILED_PRECONDITION RESERVATION_SETTLED when it
    /// was settled with another reference, RESERVATION_RELEASED when the
    /// payout's reservation was released; NOT_FOUND RESERVATION_NOT_FOUND
    /// when the payout holds none in this program (another program's payout
    /// is answered exactly as an unknown one).
    async fn settle_reservation(
        &self,
        request: Request<pb::SettleReservationRequest>,
    ) -> Result<Response<pb::SettleReservationResponse>, Status> {
        self.settle(request).await
    }

    /// Claws back a refund on one sale (DESIGN §4 "Refunds", issue 9 item 3):
    /// after refunds totalling T (`refunded_total`) on a sale of amount A
    /// (`sale_amount`) the sale's total clawback is `target = round(Σ lines ×
    /// T / A)` (the currency's minor unit, `rounding_mode`, default half away
    /// from zero); this call posts Δ = target − what earlier reversals clawed
    /// back (never below 0), allocated in minor units by largest remainder
    /// weighted by each line's amount not yet clawed back, ties in line order.
    /// The lines are the sale's non-VOIDED CREDIT entries in the order
    /// PostEntries received them.
    ///
    /// Where a debit goes (issue 9 item 4): against a line neither PAID nor
    /// reserved by a payout, it *travels with the line* — created in the
    /// line's status with its clears_at, and from then on moved with it by
    /// TransitionEntries, ClearMatured (same clears_at) and ReserveForPayout
    /// (same status and clearance, so reserved together). Against a PAID or
    /// reserved line it is APPROVED at once with clears_at = `occurred_at`
    /// and nets against the partner's next payout run. A line given back in
    /// full becomes REVERSED whatever its status, and its travelling debits
    /// with it (no payout counts them); at-once debits stay APPROVED.
    ///
    /// Atomic, serialized per sale, idempotent on (program, key) + request
    /// hash: the same key and body → the stored result with `replayed`; the
    /// same key with another body → ALREADY_EXISTS (IDEMPOTENCY_KEY_REUSED).
    /// INVALID_ARGUMENT (field violations) for malformed ids or key, amounts
    /// with too many decimals, T ≤ 0, A ≤ 0, T and A in different currencies,
    /// a missing `occurred_at`, an unknown rounding mode. FAILED_PRECONDITION
    /// REFUND_EXCEEDS_SALE when T > A; CURRENCY_MISMATCH when the sale's lines
    /// are in another currency. A sale without live lines succeeds and posts
    /// nothing. ABORTED CONCURRENT_UPDATE when a concurrent write deadlocked
    /// with this one (retry). Nothing is written on any error. The status
    /// events' actor is the caller's token subject.
    #[tracing::instrument(skip_all, fields(sale_id = %request.get_ref().sale_id))]
    async fn reverse_sale(
        &self,
        request: Request<pb::ReverseSaleRequest>,
    ) -> Result<Response<pb::ReverseSaleResponse>, Status> {
        self.reverse(request).await
    }

    /// The compensation of a ReverseSale (issue 9 item 4): voids the debits
    /// posted under the key and gives each entry it moved to REVERSED (its
    /// lines given back in full, and their travelling debits) the status it
    /// had before, with status events carrying the caller (token subject) and `reason` — the only
    /// way out of REVERSED. A later ReverseSale of the sale then counts those
    /// debits as not clawed back. Idempotent: a second call changes nothing
    /// and answers empty lists. NOT_FOUND when no ReverseSale was applied
    /// under the key; FAILED_PRECONDITION (nothing changes) DEBIT_RESERVED
    /// when a debit is reserved by a payout, DEBIT_PAID when one is paid,
    /// REVERSAL_SUPERSEDED when a later reversal of the sale reversed one
    /// (undo that one first). INVALID_ARGUMENT for a malformed program id or
    /// a missing key.
    async fn void_reversal(
        &self,
        request: Request<pb::VoidReversalRequest>,
    ) -> Result<Response<pb::VoidReversalResponse>, Status> {
        self.void(request).await
    }

    /// The override breakdown by source partner (seed 004; issue 14 item
    /// 4): see [`LedgerApi::override_breakdown`].
    async fn get_override_breakdown(
        &self,
        request: Request<pb::GetOverrideBreakdownRequest>,
    ) -> Result<Response<pb::GetOverrideBreakdownResponse>, Status> {
        self.override_breakdown(request).await
    }

    /// Per (partner, currency), read only from the balance projection (kept
    /// in the same transaction as every entry and status change): signed
    /// totals (CREDIT +, DEBIT −) of entries PENDING, CLEARED, APPROVED and
    /// not reserved (`approved`), APPROVED and reserved by a payout
    /// (`reserved`), PAID and DISPUTED — REVERSED and VOIDED entries are in no
    /// total —, `clawed_back` = Σ non-VOIDED debits, and `payable` =
    /// `approved` (negative when clawbacks exceed approved credits: carried
    /// forward). Ordered by partner id, then currency. INVALID_ARGUMENT for
    /// malformed ids or an unknown currency.
    async fn get_balances(
        &self,
        request: Request<pb::GetBalancesRequest>,
    ) -> Result<Response<pb::GetBalancesResponse>, Status> {
        let scope = accrue_kit::auth::caller(&request)?.clone();
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let program_id = require_uuid("program_id", &request.program_id, &mut violations);
        let partner_ids: Vec<PartnerId> = request
            .partner_ids
            .iter()
            .enumerate()
            .filter_map(|(index, id)| require_uuid(&format!("partner_ids[{index}]"), id, &mut violations))
            .collect();
        let currency = if request.currency_code.is_empty() {
            None
        } else {
            match Currency::from_code(&request.currency_code) {
                Ok(currency) => Some(currency),
                Err(error) => {
                    violations.add("currency_code", error.to_string());
                    None
                }
            }
        };
        violations.into_result()?;
        let program_id = program_id.ok_or_else(|| invalid_field("program_id", "is required"))?;
        scope.require_program(program_id)?;
        let Some(partner_ids) = scope.partner_ids(partner_ids) else {
            return Ok(Response::new(pb::GetBalancesResponse::default()));
        };
        let rows = store::balances(&self.pool, program_id, &partner_ids, currency.map(Currency::code)).await?;
        let mut balances = Vec::with_capacity(rows.len());
        for row in rows {
            let currency = Currency::from_code(&row.currency).map_err(internal)?;
            balances.push(pb::Balance {
                partner_id: row.partner_id.to_string(),
                currency_code: currency.code().to_string(),
                pending: money(currency, row.pending),
                cleared: money(currency, row.cleared),
                approved: money(currency, row.approved),
                reserved: money(currency, row.reserved),
                paid: money(currency, row.paid),
                disputed: money(currency, row.disputed),
                clawed_back: money(currency, row.clawed_back),
                payable: money(currency, row.approved),
            });
        }
        Ok(Response::new(pb::GetBalancesResponse { balances }))
    }
}
