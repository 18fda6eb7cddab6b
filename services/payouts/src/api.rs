//! tonic implementation of `PayoutService`: decode and validate, call the
//! domain rules, the store and the peer services (hierarchy, ledger), encode.

use accrue_types::{PartnerId, PayoutId, PayoutRunId, ProgramId};
use std::time::Duration;

use accrue_kit::FieldViolations;
use accrue_kit::client::AuthChannel;
use accrue_kit::convert::{amount_to_proto, from_timestamp, optional_uuid, parse_id, require_uuid, timestamp};
use accrue_kit::error::{failed_precondition, internal, invalid_field, not_found};
use accrue_kit::{idempotency, page};
use accrue_money::{Currency, Decimal, Money};
use accrue_proto::hierarchy::v1 as hierarchy_pb;
use accrue_proto::hierarchy::v1::hierarchy_service_client::HierarchyServiceClient;
use accrue_proto::ledger::v1 as ledger_pb;
use accrue_proto::ledger::v1::ledger_service_client::LedgerServiceClient;
use accrue_proto::payouts::v1 as pb;
use accrue_proto::payouts::v1::payout_service_server::PayoutService;
use accrue_proto::types::v1 as types;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tonic::{Code, Request, Response, Status};

use crate::domain::{
    CarriedForward, HOLD_MINIMUM, PartnerRule, PayoutStatus, Period, RunRequest, partner_rule, payout_id,
    resolve_minimum, validate_run_request,
};
use crate::store::{self, NewPayout, PayoutFilter, PayoutRow, RunRow};

pub(crate) mod codec;
mod export;
mod lifecycle;
mod manual;
mod run;
mod settings;
mod summary;

use codec::*;

use lifecycle::{Move, item_failure};

/// Partners per hierarchy page and per ledger ReserveForPayout call.
pub const RESERVE_BATCH: i32 = 1000;
/// How often a ReserveForPayout that the ledger ABORTED (a concurrent run
/// reserved an entry first) is retried.
const RESERVE_ATTEMPTS: u32 = 4;

/// The `PayoutService` implementation.
#[derive(Debug, Clone)]
pub struct PayoutsApi {
    pool: PgPool,
    hierarchy: HierarchyServiceClient<AuthChannel>,
    ledger: LedgerServiceClient<AuthChannel>,
}

impl PayoutsApi {
    /// A new API over the service's pool and channels to the hierarchy and
    /// ledger services.
    pub fn new(
        pool: PgPool,
        hierarchy: HierarchyServiceClient<AuthChannel>,
        ledger: LedgerServiceClient<AuthChannel>,
    ) -> Self {
        PayoutsApi { pool, hierarchy, ledger }
    }
}

#[tonic::async_trait]
impl PayoutService for PayoutsApi {
    /// Creates, resumes or returns the run for (program, currency, period).
    /// Each partner's payable is the ledger's net (DESIGN §5, issue 9 item
    /// 6): approved, unreserved CREDITs cleared by the cutoff minus approved,
    /// unreserved DEBITs (refund clawbacks) cleared by the cutoff; the ledger
    /// reserves both, so a payout's amount is that net. A net at or above the
    /// minimum creates a payout; a positive net below it is carried forward
    /// (`carried_forward_count` / `carried_forward_amount`); a net ≤ 0 creates
    /// no payout and is not counted as carried forward — it is a debt the
    /// ledger keeps (GetBalances shows it as a negative `payable`) and nets
    /// against later earnings in a later run.
    /// INVALID_ARGUMENT for malformed input, NOT_FOUND for an unknown
    /// program, FAILED_PRECONDITION (MINIMUM_CURRENCY_MISMATCH) when the
    /// program's minimum is in another currency and none is given,
    /// UNAVAILABLE when a peer is down (retrying resumes the run).
    /// Idempotent on `request_id` (AIP-155): a repeat of the same body
    /// answers that run; the same id with another body is ALREADY_EXISTS
    /// REQUEST_ID_REUSED and writes nothing.
    async fn create_payout_run(
        &self,
        request: Request<pb::CreatePayoutRunRequest>,
    ) -> Result<Response<pb::PayoutRun>, Status> {
        let actor = accrue_kit::auth::actor(&request)?;
        let scope = accrue_kit::auth::caller(&request)?.clone();
        let request_hash = idempotency::fingerprint_message(&pb::CreatePayoutRunRequest {
            request_id: String::new(),
            ..request.get_ref().clone()
        });
        let request = validate_run_request(request.get_ref())?;
        scope.require_program(request.program_id)?;
        let period = request.period.to_string();
        let existing = match self.run_of_request(&request, &request_hash).await? {
            Some(run) => Some(run),
            None => store::find_run(&self.pool, request.program_id, request.currency.code(), &period).await?,
        };
        let run = match existing {
            Some(run) if run.is_complete() => return Ok(Response::new(run_to_proto(&run)?)),
            Some(run) => {
                tracing::info!(run_id = %run.id, "resuming payout run");
                run
            }
            None => {
                let run = self.start_run(&request, &request_hash, &actor).await?;
                if run.is_complete() {
                    return Ok(Response::new(run_to_proto(&run)?));
                }
                run
            }
        };
        let done = self.execute(run, &actor).await?;
        Ok(Response::new(run_to_proto(&done)?))
    }

    async fn get_payout(&self, request: Request<pb::GetPayoutRequest>) -> Result<Response<pb::Payout>, Status> {
        let id = parse_id("id", &request.get_ref().id)?;
        // Another program's payout, and for a partner token another
        // partner's, is answered exactly as a missing one.
        let scope = accrue_kit::auth::caller(&request)?;
        let row = store::get_payout(&self.pool, id)
            .await?
            .filter(|row| scope.may_see(row.program_id, &[row.partner_id]))
            .ok_or_else(|| not_found("payout", id))?;
        Ok(Response::new(payout_to_proto(&row)?))
    }

    async fn list_payouts(
        &self,
        request: Request<pb::ListPayoutsRequest>,
    ) -> Result<Response<pb::ListPayoutsResponse>, Status> {
        let scope = accrue_kit::auth::caller(&request)?.clone();
        let request = request.into_inner();
        let mut filters = Filters::parse(FilterFields {
            program_id: &request.program_id,
            partner_id: &request.partner_id,
            payout_run_id: &request.payout_run_id,
            status: request.status,
            period: &request.period,
            currency_code: &request.currency_code,
            show_deleted: request.show_deleted,
        })?;
        scope.require_program(filters.program_id)?;
        let limit = page::page_size(request.page_size)?;
        let query = format!(
            "payouts|{}|{:?}|{:?}|{}|{:?}|{:?}|{}",
            filters.program_id,
            filters.partner_id,
            filters.payout_run_id,
            request.status,
            filters.period,
            filters.currency,
            filters.show_deleted
        );
        let after = page::decode::<PayoutCursor>(&query, &request.page_token)?.map(|cursor| (cursor.t, cursor.id));
        // A partner token asking for another partner's payouts gets an empty
        // page, as for a partner without payouts.
        let Some(partner_id) = scope.partner_filter(filters.partner_id) else {
            return Ok(Response::new(pb::ListPayoutsResponse::default()));
        };
        filters.partner_id = partner_id;
        let mut rows = store::list_payouts(&self.pool, &filters.as_store(), after, limit + 1).await?;
        let next_page_token =
            page::next_page(&mut rows, limit, &query, |row| PayoutCursor { t: row.created_at, id: row.id })?;
        let payouts = rows.iter().map(payout_to_proto).collect::<Result<Vec<_>, _>>()?;
        Ok(Response::new(pb::ListPayoutsResponse { payouts, next_page_token }))
    }

    /// PENDING_APPROVAL → APPROVED (seed 001), recording the caller's token
    /// subject as approver. With the program's `require_second_approver`,
    /// the identity that created the payout's run may not approve it:
    /// PERMISSION_DENIED SAME_APPROVER. INVALID_ARGUMENT for a malformed id
    /// or request id; NOT_FOUND for an unknown payout or another program's;
    /// FAILED_PRECONDITION INVALID_PAYOUT_TRANSITION (ErrorInfo metadata
    /// `from`, `to`) from any other status, changing nothing. Idempotent on
    /// (payout, `request_id`) (AIP-155): a repeat answers the payout as it
    /// stands; the id used for another change of the payout is
    /// ALREADY_EXISTS REQUEST_ID_REUSED.
    async fn approve_payout(&self, request: Request<pb::ApprovePayoutRequest>) -> Result<Response<pb::Payout>, Status> {
        let actor = accrue_kit::auth::actor(&request)?;
        let scope = accrue_kit::auth::caller(&request)?.clone();
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let id = require_uuid::<PayoutId>("id", &request.id, &mut violations);
        let body = pb::ApprovePayoutRequest { request_id: String::new(), ..request.clone() };
        let (request_id, hash) = change_key(&request.request_id, &body, &mut violations);
        violations.into_result()?;
        let id = id.ok_or_else(|| invalid_field("id", "is required"))?;
        let change = Move::to(PayoutStatus::Approved, "approved".into(), request_id, hash);
        let row = self.move_payout(&scope, None, &actor, id, &change).await?;
        Ok(Response::new(payout_to_proto(&row)?))
    }

    /// Approves each of `ids` as ApprovePayout would, one at a time and each
    /// on its own (not all-or-nothing): a result per id in request order,
    /// the approved payout or the failure ApprovePayout would have answered
    /// (NOT_FOUND, FAILED_PRECONDITION INVALID_PAYOUT_TRANSITION,
    /// PERMISSION_DENIED SAME_APPROVER…). `request_id` applies to each payout
    /// on its own, so a repeated call approves nothing twice and answers the
    /// payouts as they stand. All ids must be of `program_id`: another
    /// program's payout fails alone as NOT_FOUND, exactly as an unknown one.
    /// INVALID_ARGUMENT (nothing changes) for a malformed program id, no
    /// ids, more than 1000, a malformed or repeated id, or a malformed
    /// request id; NOT_FOUND for a program the token does not name.
    async fn bulk_approve_payouts(
        &self,
        request: Request<pb::BulkApprovePayoutsRequest>,
    ) -> Result<Response<pb::BulkApprovePayoutsResponse>, Status> {
        let actor = accrue_kit::auth::actor(&request)?;
        let scope = accrue_kit::auth::caller(&request)?.clone();
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let program_id = require_uuid::<ProgramId>("program_id", &request.program_id, &mut violations);
        if request.ids.is_empty() {
            violations.add("ids", "is required: name 1 to 1000 payouts");
        } else if request.ids.len() > MAX_BULK_IDS {
            violations.add("ids", format!("at most {MAX_BULK_IDS} ids per call"));
        }
        let mut ids: Vec<PayoutId> = Vec::with_capacity(request.ids.len());
        for (index, id) in request.ids.iter().enumerate() {
            let field = format!("ids[{index}]");
            if let Some(id) = require_uuid::<PayoutId>(&field, id, &mut violations) {
                if ids.contains(&id) {
                    violations.add(field, format!("payout {id} appears twice"));
                }
                ids.push(id);
            }
        }
        let request_id = idempotency::request_id("request_id", request.request_id.trim(), &mut violations)
            .map(|id| id.as_str().to_string());
        violations.into_result()?;
        let program_id = program_id.ok_or_else(|| invalid_field("program_id", "is required"))?;
        scope.require_program(program_id)?;
        let mut results = Vec::with_capacity(ids.len());
        for (id, asked) in ids.iter().zip(&request.ids) {
            // The same body as a single ApprovePayout of this id, so either
            // call's request id answers the other's repeat.
            let body = pb::ApprovePayoutRequest { id: asked.clone(), request_id: String::new() };
            let hash = idempotency::fingerprint_message(&body);
            let change = Move::to(PayoutStatus::Approved, "approved (bulk)".into(), request_id.clone(), hash);
            let result = match self.move_payout(&scope, Some(program_id), &actor, *id, &change).await {
                Ok(row) => pb::BulkApprovePayoutResult {
                    id: asked.clone(),
                    payout: Some(payout_to_proto(&row)?),
                    failure: None,
                },
                Err(status) if matches!(status.code(), Code::Internal | Code::Unavailable) => return Err(status),
                Err(status) => pb::BulkApprovePayoutResult {
                    id: asked.clone(),
                    payout: None,
                    failure: Some(item_failure(&status)),
                },
            };
            results.push(result);
        }
        Ok(Response::new(pb::BulkApprovePayoutsResponse { results }))
    }

    /// PENDING_APPROVAL → REJECTED with `reason` (required) (seed 001), then
    /// the ledger releases the payout's reservation so that the next run can
    /// pay the entries (DESIGN §5). Errors and idempotency as ApprovePayout;
    /// INVALID_ARGUMENT for a missing or over-long reason; UNAVAILABLE when
    /// the ledger is down (nothing changes; retrying is safe).
    async fn reject_payout(&self, request: Request<pb::RejectPayoutRequest>) -> Result<Response<pb::Payout>, Status> {
        let actor = accrue_kit::auth::actor(&request)?;
        let scope = accrue_kit::auth::caller(&request)?.clone();
        let request = request.into_inner();
        let body = pb::RejectPayoutRequest { request_id: String::new(), ..request.clone() };
        let (id, change) =
            Move::with_reason(PayoutStatus::Rejected, &request.id, &request.reason, &request.request_id, &body)?;
        let row = self.move_payout(&scope, None, &actor, id, &change).await?;
        Ok(Response::new(payout_to_proto(&row)?))
    }

    /// APPROVED → PROCESSING, or FAILED → PROCESSING (a retry of a failed
    /// payment) (seed 001), recording `payment_reference` (required). The
    /// entries stay reserved. Errors and idempotency as ApprovePayout;
    /// INVALID_ARGUMENT for a missing or over-long reference.
    async fn mark_payout_processing(
        &self,
        request: Request<pb::MarkPayoutProcessingRequest>,
    ) -> Result<Response<pb::Payout>, Status> {
        let actor = accrue_kit::auth::actor(&request)?;
        let scope = accrue_kit::auth::caller(&request)?.clone();
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let id = require_uuid::<PayoutId>("id", &request.id, &mut violations);
        let reference = required_text("payment_reference", &request.payment_reference, MAX_TEXT_CHARS, &mut violations);
        let body = pb::MarkPayoutProcessingRequest { request_id: String::new(), ..request.clone() };
        let (request_id, hash) = change_key(&request.request_id, &body, &mut violations);
        violations.into_result()?;
        let id = id.ok_or_else(|| invalid_field("id", "is required"))?;
        let mut change = Move::to(PayoutStatus::Processing, format!("payment reference {reference}"), request_id, hash);
        change.payment_reference = Some(reference);
        let row = self.move_payout(&scope, None, &actor, id, &change).await?;
        Ok(Response::new(payout_to_proto(&row)?))
    }

    /// APPROVED → PAID or PROCESSING → PAID (seed 001) with the payment's
    /// reference and method (required) and `paid_time` (default now; not
    /// more than 5 minutes past the server's clock); the ledger settles the
    /// payout's reservation first: every reserved APPROVED entry, credits
    /// and debits, becomes PAID with the payout id and reference in its
    /// status event (DESIGN §5). Errors and idempotency as ApprovePayout;
    /// INVALID_ARGUMENT for a missing or over-long reference or method or a
    /// bad paid_time; FAILED_PRECONDITION RESERVED_ENTRY_NOT_APPROVED (from
    /// the ledger, nothing changes) while one of its entries is disputed; UNAVAILABLE when the ledger is down (retrying is
    /// safe: settlement is idempotent on the payout id).
    async fn mark_payout_paid(
        &self,
        request: Request<pb::MarkPayoutPaidRequest>,
    ) -> Result<Response<pb::Payout>, Status> {
        let actor = accrue_kit::auth::actor(&request)?;
        let scope = accrue_kit::auth::caller(&request)?.clone();
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let id = require_uuid::<PayoutId>("id", &request.id, &mut violations);
        let reference = required_text("payment_reference", &request.payment_reference, MAX_TEXT_CHARS, &mut violations);
        let method = required_text("payment_method", &request.payment_method, MAX_METHOD_CHARS, &mut violations);
        let paid_at = from_timestamp("paid_time", request.paid_time.as_ref(), &mut violations);
        let now = Utc::now();
        if paid_at.is_some_and(|paid_at| paid_at > now + PAID_TIME_SKEW) {
            violations.add("paid_time", "must not be in the future");
        }
        let body = pb::MarkPayoutPaidRequest { request_id: String::new(), ..request.clone() };
        let (request_id, hash) = change_key(&request.request_id, &body, &mut violations);
        violations.into_result()?;
        let id = id.ok_or_else(|| invalid_field("id", "is required"))?;
        let mut change =
            Move::to(PayoutStatus::Paid, format!("paid by {method}, payment reference {reference}"), request_id, hash);
        change.payment_reference = Some(reference);
        change.payment_method = Some(method);
        change.paid_at = Some(paid_at.unwrap_or(now));
        let row = self.move_payout(&scope, None, &actor, id, &change).await?;
        Ok(Response::new(payout_to_proto(&row)?))
    }

    /// PROCESSING → FAILED with `reason` (required) (seed 001). The entries
    /// stay reserved: a failed payment is retried (MarkPayoutProcessing),
    /// and releasing them here would let a later run pay them a second time
    /// (a deliberate reading of DESIGN §5's "Fail releases", see
    /// `domain::plan`). Errors and idempotency as ApprovePayout.
    async fn mark_payout_failed(
        &self,
        request: Request<pb::MarkPayoutFailedRequest>,
    ) -> Result<Response<pb::Payout>, Status> {
        let actor = accrue_kit::auth::actor(&request)?;
        let scope = accrue_kit::auth::caller(&request)?.clone();
        let request = request.into_inner();
        let body = pb::MarkPayoutFailedRequest { request_id: String::new(), ..request.clone() };
        let (id, change) =
            Move::with_reason(PayoutStatus::Failed, &request.id, &request.reason, &request.request_id, &body)?;
        let row = self.move_payout(&scope, None, &actor, id, &change).await?;
        Ok(Response::new(payout_to_proto(&row)?))
    }

    /// A program's payout audit events, oldest first (id order), optionally
    /// of one payout, one actor, and `start_time` ≤ time < `end_time`; each
    /// with its actor (token subject), time, from → to, reason and request
    /// id. Keyset paged (`page_size` default 100, max 1000; signed
    /// `page_token`). INVALID_ARGUMENT for malformed ids, times or tokens;
    /// NOT_FOUND for a program the token does not name. Another program's
    /// payout id lists nothing.
    async fn list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
        let scope = accrue_kit::auth::caller(&request)?.clone();
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let program_id = require_uuid::<ProgramId>("program_id", &request.program_id, &mut violations);
        let payout_id = optional_uuid::<PayoutId>("payout_id", &request.payout_id, &mut violations);
        if request.actor.len() > idempotency::MAX_REQUEST_ID_BYTES {
            violations.add("actor", format!("must be at most {} bytes", idempotency::MAX_REQUEST_ID_BYTES));
        }
        let start = from_timestamp("start_time", request.start_time.as_ref(), &mut violations);
        let end = from_timestamp("end_time", request.end_time.as_ref(), &mut violations);
        violations.into_result()?;
        let program_id = program_id.ok_or_else(|| invalid_field("program_id", "is required"))?;
        scope.require_program(program_id)?;
        let limit = page::page_size(request.page_size)?;
        let actor = (!request.actor.is_empty()).then_some(request.actor.as_str());
        let query = format!("audit|{program_id}|{payout_id:?}|{actor:?}|{start:?}|{end:?}");
        let after = page::decode::<AuditCursor>(&query, &request.page_token)?.map(|cursor| cursor.id);
        let filter = store::AuditFilter { program_id, payout_id, actor, start, end };
        let mut rows = store::list_audit_events(&self.pool, &filter, after, limit + 1).await?;
        let next_page_token = page::next_page(&mut rows, limit, &query, |row| AuditCursor { id: row.id })?;
        let events = rows.iter().map(audit_to_proto).collect();
        Ok(Response::new(pb::ListAuditEventsResponse { events, next_page_token }))
    }

    /// Count and Σ amount (in each currency, minor-unit exact) of a
    /// program's payouts per (status, currency), optionally of one
    /// `period` ("YYYY-MM"); ordered by currency then status name; statuses
    /// without payouts are absent. INVALID_ARGUMENT for a malformed program
    /// id or period; NOT_FOUND for a program the token does not name.
    async fn get_payout_stats(
        &self,
        request: Request<pb::GetPayoutStatsRequest>,
    ) -> Result<Response<pb::GetPayoutStatsResponse>, Status> {
        let scope = accrue_kit::auth::caller(&request)?.clone();
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let program_id = require_uuid::<ProgramId>("program_id", &request.program_id, &mut violations);
        let period = optional_period("period", &request.period, &mut violations);
        violations.into_result()?;
        let program_id = program_id.ok_or_else(|| invalid_field("program_id", "is required"))?;
        scope.require_program(program_id)?;
        let period = period.map(|period| period.to_string());
        let rows = store::payout_stats(&self.pool, program_id, period.as_deref()).await?;
        let mut totals = Vec::with_capacity(rows.len());
        for (currency, status, count, amount) in rows {
            let status = PayoutStatus::from_str_name(&status)
                .ok_or_else(|| internal(format!("stored payout status {status:?} is unknown")))?;
            totals.push(pb::PayoutStatusTotal {
                status: status.to_proto() as i32,
                count,
                amount: Some(amount_to_proto(currency_of(&currency)?, amount)),
            });
        }
        Ok(Response::new(pb::GetPayoutStatsResponse { totals }))
    }

    /// One partner's payouts per currency (issue 12 item 5): lifetime PAID
    /// (Σ and count), Σ PENDING_APPROVAL, Σ approved but unpaid (APPROVED,
    /// PROCESSING, FAILED), the last PAID payout, and the ledger's approved,
    /// unreserved balance (`payable`, GetBalances; negative while clawbacks
    /// exceed earnings); amounts in each currency's minor unit. A partner
    /// token asking for another partner gets an empty answer, as for a
    /// partner without payouts. INVALID_ARGUMENT for malformed ids; NOT_FOUND
    /// for a program the token does not name; UNAVAILABLE when the ledger is
    /// down.
    async fn get_partner_payout_summary(
        &self,
        request: Request<pb::GetPartnerPayoutSummaryRequest>,
    ) -> Result<Response<pb::GetPartnerPayoutSummaryResponse>, Status> {
        self.partner_payout_summary(request).await
    }

    /// Sets a partner's payout settings, all at once (issue 12 item 4): its
    /// own minimum (a Money ≥ 0, exact in its currency's minor unit; applies
    /// in runs of that currency instead of the run's or the program's; unset:
    /// none), `hold` (runs carry its balance forward) and `payout_method` (a
    /// label, at most 100 characters); the caller's token subject is kept as
    /// `updated_by`. INVALID_ARGUMENT for malformed fields; NOT_FOUND for a
    /// partner that is not in the program (the same answer as for an
    /// unknown id) or a program the token does not name.
    async fn set_partner_payout_settings(
        &self,
        request: Request<pb::SetPartnerPayoutSettingsRequest>,
    ) -> Result<Response<pb::PartnerPayoutSettings>, Status> {
        self.set_settings(request).await
    }

    /// A partner's payout settings (defaults — no minimum, no hold, no
    /// method, no update_time — when never set). A partner token may read
    /// only its own: another partner's is NOT_FOUND exactly as an unknown
    /// partner. INVALID_ARGUMENT for malformed ids; NOT_FOUND for a partner
    /// not in the program or a program the token does not name.
    async fn get_partner_payout_settings(
        &self,
        request: Request<pb::GetPartnerPayoutSettingsRequest>,
    ) -> Result<Response<pb::PartnerPayoutSettings>, Status> {
        self.settings(request).await
    }

    /// Changes a payout awaiting approval (AIP-134; seed 001 "update: modify
    /// pending payouts"): `update_mask` must name `notes` (at most 1000
    /// characters) and nothing else — `amount` is the net of the ledger
    /// entries the run reserved, and the status moves through the transition
    /// RPCs. Writes an audit event (PENDING_APPROVAL → PENDING_APPROVAL,
    /// "notes updated") by the caller's subject. INVALID_ARGUMENT for a
    /// malformed id, an empty or other mask path, or over-long notes;
    /// NOT_FOUND for an unknown or another program's payout;
    /// FAILED_PRECONDITION PAYOUT_NOT_PENDING once it left PENDING_APPROVAL.
    /// Idempotent on (payout, `request_id`) as the transitions.
    async fn update_payout(&self, request: Request<pb::UpdatePayoutRequest>) -> Result<Response<pb::Payout>, Status> {
        let actor = accrue_kit::auth::actor(&request)?;
        let scope = accrue_kit::auth::caller(&request)?.clone();
        let request = request.into_inner();
        let payout = request.payout.clone().ok_or_else(|| invalid_field("payout", "is required"))?;
        let mut violations = FieldViolations::new();
        let id = require_uuid::<PayoutId>("payout.id", &payout.id, &mut violations);
        let paths = request.update_mask.as_ref().map(|mask| mask.paths.as_slice()).unwrap_or_default();
        if paths.is_empty() {
            violations.add("update_mask", "is required: name the fields to change (notes)");
        }
        for (index, path) in paths.iter().enumerate() {
            match path.trim() {
                "notes" => {}
                "amount" => violations.add(
                    format!("update_mask.paths[{index}]"),
                    "amount is the net of the ledger entries the run reserved and cannot be changed",
                ),
                "status" => violations.add(
                    format!("update_mask.paths[{index}]"),
                    "status moves through ApprovePayout, RejectPayout and the MarkPayout… RPCs",
                ),
                other => violations
                    .add(format!("update_mask.paths[{index}]"), format!("{other:?} cannot be changed; only notes")),
            }
        }
        let notes = payout.notes.trim().to_string();
        if notes.chars().count() > MAX_TEXT_CHARS {
            violations.add("payout.notes", format!("must be at most {MAX_TEXT_CHARS} characters"));
        }
        let body = pb::UpdatePayoutRequest { request_id: String::new(), ..request.clone() };
        let (request_id, hash) = change_key(&request.request_id, &body, &mut violations);
        violations.into_result()?;
        let id = id.ok_or_else(|| invalid_field("payout.id", "is required"))?;
        let mut change = Move::to(PayoutStatus::PendingApproval, "notes updated".into(), request_id, hash);
        change.notes = Some(notes);
        let row = self.move_payout(&scope, None, &actor, id, &change).await?;
        Ok(Response::new(payout_to_proto(&row)?))
    }

    /// Creates a manual payout outside any run (issue 12 item 2; seed 001):
    /// the ledger reserves the partner's approved, unreserved entries in
    /// `currency_code` cleared by `cutoff` (default: the end of `period`),
    /// credits and debits, and the payout's amount is their net — never an
    /// amount typed by the caller, so Σ PAID payouts = Σ PAID entries (a
    /// one-off amount is posted to the ledger first). No minimum applies. The
    /// payout starts PENDING_APPROVAL with an audit event by the caller's
    /// subject, who counts as its creator for maker-checker.
    /// INVALID_ARGUMENT for malformed fields or a missing `request_id`;
    /// NOT_FOUND for a program the token does not name or a partner not in
    /// the program; FAILED_PRECONDITION PARTNER_NOT_PAYABLE for a SUSPENDED
    /// partner or one on hold, NOTHING_PAYABLE when the net is ≤ 0;
    /// UNAVAILABLE when a peer is down (retry with the same request id).
    /// Idempotent on `request_id` (the payout id derives from it): a repeat
    /// answers the payout as it stands; another body is ALREADY_EXISTS
    /// REQUEST_ID_REUSED.
    async fn create_payout(&self, request: Request<pb::CreatePayoutRequest>) -> Result<Response<pb::Payout>, Status> {
        let actor = accrue_kit::auth::actor(&request)?;
        let scope = accrue_kit::auth::caller(&request)?.clone();
        let row = self.create_manual_payout(&scope, &actor, request.get_ref()).await?;
        Ok(Response::new(payout_to_proto(&row)?))
    }

    /// PENDING_APPROVAL → DELETED with `reason` (required) (AIP-164 soft
    /// delete): the ledger releases the payout's entries for a later run and
    /// the payout leaves ListPayouts and ExportPayouts unless `show_deleted`;
    /// GetPayout and ListAuditEvents still answer it. Errors and idempotency
    /// as RejectPayout (FAILED_PRECONDITION INVALID_PAYOUT_TRANSITION from any
    /// other status, changing nothing).
    async fn delete_payout(&self, request: Request<pb::DeletePayoutRequest>) -> Result<Response<pb::Payout>, Status> {
        let actor = accrue_kit::auth::actor(&request)?;
        let scope = accrue_kit::auth::caller(&request)?.clone();
        let request = request.into_inner();
        let body = pb::DeletePayoutRequest { request_id: String::new(), ..request.clone() };
        let (id, change) =
            Move::with_reason(PayoutStatus::Deleted, &request.id, &request.reason, &request.request_id, &body)?;
        let row = self.move_payout(&scope, None, &actor, id, &change).await?;
        Ok(Response::new(payout_to_proto(&row)?))
    }

    type ExportPayoutsStream = export::ExportStream;

    /// Streams the payouts ListPayouts would list (same filters, oldest
    /// first) as RFC 4180 CSV: a header row, then one row per payout
    /// (partner, run, period, currency, amount in the minor unit, status,
    /// entry count, approver and time, payment reference, method and time,
    /// status reason, creation and update times), at most 500 rows per
    /// message, from one consistent snapshot, in constant memory.
    /// INVALID_ARGUMENT for malformed filters; NOT_FOUND for a program the
    /// token does not name; a failure mid-stream ends it with that status.
    async fn export_payouts(
        &self,
        request: Request<pb::ExportPayoutsRequest>,
    ) -> Result<Response<Self::ExportPayoutsStream>, Status> {
        let scope = accrue_kit::auth::caller(&request)?.clone();
        let request = request.into_inner();
        let filter = Filters::parse(FilterFields {
            program_id: &request.program_id,
            partner_id: &request.partner_id,
            payout_run_id: &request.payout_run_id,
            status: request.status,
            period: &request.period,
            currency_code: &request.currency_code,
            show_deleted: request.show_deleted,
        })?;
        scope.require_program(filter.program_id)?;
        Ok(Response::new(export::export(self.pool.clone(), filter)))
    }
}
