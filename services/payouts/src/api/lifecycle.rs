//! The payout lifecycle (issue 12 items 1–4; seed 001, DESIGN §5): one path
//! for every state change — read and scope, lock the payout's row, answer a
//! repeated request id, check the move against [`crate::domain::plan`],
//! maker-checker on approval, release or settle the ledger reservation, then
//! write the new state and its audit event in the same transaction.
//!
//! Concurrency: the payout's row is locked (`SELECT … FOR UPDATE`) for the
//! whole change, ledger call included, so of two concurrent changes of one
//! payout the second waits and then sees the first one's state: exactly one
//! of two conflicting moves (approve and reject) succeeds, the other is
//! FAILED_PRECONDITION INVALID_PAYOUT_TRANSITION.

use std::collections::HashMap;

use accrue_kit::auth::Identity;
use accrue_kit::error::{ERROR_DOMAIN, failed_precondition, with_reason};
use tonic_types::{ErrorDetails, StatusExt};

use super::*;
use crate::domain::{InvalidTransition, LedgerEffect, check_approver, plan};

/// One requested state change.
#[derive(Debug, Clone)]
pub(super) struct Move {
    /// The new state.
    pub to: PayoutStatus,
    /// The audit event's reason.
    pub reason: String,
    /// Idempotency key (AIP-155), per payout.
    pub request_id: Option<String>,
    /// SHA-256 of the request without its request id.
    pub request_hash: Vec<u8>,
    /// New payment reference.
    pub payment_reference: Option<String>,
    /// New payment method.
    pub payment_method: Option<String>,
    /// When paid.
    pub paid_at: Option<DateTime<Utc>>,
    /// New rejection or failure reason.
    pub status_reason: Option<String>,
    /// New notes (UpdatePayout, which stays in PENDING_APPROVAL).
    pub notes: Option<String>,
}

impl Move {
    /// A move to `to` with the audit `reason`, and nothing else.
    pub fn to(to: PayoutStatus, reason: String, request_id: Option<String>, request_hash: Vec<u8>) -> Self {
        Move {
            to,
            reason,
            request_id,
            request_hash,
            payment_reference: None,
            payment_method: None,
            paid_at: None,
            status_reason: None,
            notes: None,
        }
    }
}

impl Move {
    /// A move to `to` that records `reason` (required, trimmed, at most
    /// [`MAX_TEXT_CHARS`]) as the audit reason and the payout's status
    /// reason: RejectPayout, MarkPayoutFailed, DeletePayout. `body` is the
    /// request without its request id (the idempotency fingerprint).
    ///
    /// Errors: INVALID_ARGUMENT with a violation per malformed field (`id`,
    /// `reason`, `request_id`).
    pub fn with_reason(
        to: PayoutStatus,
        id: &str,
        reason: &str,
        request_id: &str,
        body: &impl prost::Message,
    ) -> Result<(PayoutId, Move), Status> {
        let mut violations = FieldViolations::new();
        let id = require_uuid::<PayoutId>("id", id, &mut violations);
        let reason = required_text("reason", reason, MAX_TEXT_CHARS, &mut violations);
        let (request_id, hash) = change_key(request_id, body, &mut violations);
        violations.into_result()?;
        let id = id.ok_or_else(|| invalid_field("id", "is required"))?;
        let mut change = Move::to(to, reason.clone(), request_id, hash);
        change.status_reason = Some(reason);
        Ok((id, change))
    }
}

/// FAILED_PRECONDITION with ErrorInfo reason INVALID_PAYOUT_TRANSITION and
/// metadata `from` and `to` (the stored state names).
pub(super) fn invalid_transition(error: InvalidTransition) -> Status {
    let metadata = HashMap::from([
        ("from".to_string(), error.from.as_str().to_string()),
        ("to".to_string(), error.to.as_str().to_string()),
    ]);
    let details = ErrorDetails::with_error_info("INVALID_PAYOUT_TRANSITION", ERROR_DOMAIN, metadata);
    Status::with_error_details(Code::FailedPrecondition, error.to_string(), details)
}

/// The gRPC name of a code ("FAILED_PRECONDITION"), as an ItemFailure carries it.
pub(super) fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// A failed status as a batch item's failure.
pub(super) fn item_failure(status: &Status) -> types::ItemFailure {
    types::ItemFailure {
        code: code_name(status.code()).to_string(),
        reason: status.get_details_error_info().map(|info| info.reason).unwrap_or_default(),
        message: status.message().to_string(),
    }
}

fn status_of(row: &PayoutRow) -> Result<PayoutStatus, Status> {
    PayoutStatus::from_str_name(&row.status)
        .ok_or_else(|| internal(format!("stored payout status {:?} is unknown", row.status)))
}

impl PayoutsApi {
    /// Applies `change` to payout `id` for `actor` (the caller's token
    /// subject). NOT_FOUND when the payout does not exist or is of a program
    /// the token does not name or other than `within` (the same answer); a repeat of a request id answers the
    /// payout as it stands (ALREADY_EXISTS REQUEST_ID_REUSED when the id
    /// was used for another change of it); FAILED_PRECONDITION
    /// INVALID_PAYOUT_TRANSITION (metadata `from`, `to`) for a move outside
    /// the state machine; PERMISSION_DENIED SAME_APPROVER under
    /// maker-checker; UNAVAILABLE when a peer is down (nothing is written;
    /// retrying is safe, the ledger side being idempotent on the payout id).
    pub(super) async fn move_payout(
        &self,
        scope: &Identity,
        within: Option<ProgramId>,
        actor: &str,
        id: PayoutId,
        change: &Move,
    ) -> Result<PayoutRow, Status> {
        let visible = |row: &PayoutRow| {
            scope.may_see(row.program_id, &[row.partner_id]) && within.is_none_or(|program| program == row.program_id)
        };
        if store::get_payout(&self.pool, id).await?.filter(visible).is_none() {
            return Err(not_found("payout", id));
        }
        let mut tx = self.pool.begin().await.map_err(store::StoreError::from)?;
        let row = store::lock_payout(&mut tx, id).await?.ok_or_else(|| not_found("payout", id))?;
        if let Some(request_id) = change.request_id.as_deref()
            && let Some(hash) = store::change_of_request(&mut *tx, id, request_id).await?
        {
            return idempotency::replay(request_id, row, |_| {
                hash.as_deref().is_none_or(|hash| hash == change.request_hash.as_slice())
            });
        }
        let from = status_of(&row)?;
        // UpdatePayout: a change that keeps the payout awaiting approval.
        let effect = if change.notes.is_some() && change.to == PayoutStatus::PendingApproval {
            if from != PayoutStatus::PendingApproval {
                return Err(failed_precondition(
                    "PAYOUT_NOT_PENDING",
                    format!("payout {id} is {}; only a payout awaiting approval can be changed", from.as_str()),
                ));
            }
            LedgerEffect::None
        } else {
            plan(from, change.to).map_err(invalid_transition)?
        };
        if change.to == PayoutStatus::Approved {
            let required = self.require_second_approver(row.program_id).await?;
            if required {
                let creator = store::payout_creator(&mut *tx, &row).await?;
                check_approver(required, creator.as_deref(), actor)
                    .map_err(|error| with_reason(Code::PermissionDenied, "SAME_APPROVER", error.to_string()))?;
            }
        }
        match effect {
            LedgerEffect::None => {}
            LedgerEffect::Release => {
                self.ledger
                    .clone()
                    .release_reservation(ledger_pb::ReleaseReservationRequest {
                        program_id: row.program_id.to_string(),
                        payout_id: row.id.to_string(),
                        reason: format!("payout {} {} by {actor}: {}", row.id, change.to.as_str(), change.reason),
                    })
                    .await
                    .map_err(|status| peer_error("ledger", status))?;
            }
            LedgerEffect::Settle => {
                let reference = change.payment_reference.clone().unwrap_or_default();
                self.ledger
                    .clone()
                    .settle_reservation(ledger_pb::SettleReservationRequest {
                        program_id: row.program_id.to_string(),
                        payout_id: row.id.to_string(),
                        payment_reference: reference,
                    })
                    .await
                    .map_err(|status| match status.code() {
                        // The payout's entries are not payable as they stand
                        // (a disputed entry): the caller's to resolve, as
                        // the ledger says, never INTERNAL.
                        Code::FailedPrecondition => status,
                        _ => peer_error("ledger", status),
                    })?;
            }
        }
        let updated = store::write_change(
            &mut tx,
            &store::Change {
                payout_id: id,
                from,
                to: change.to,
                actor,
                reason: &change.reason,
                request_id: change.request_id.as_deref(),
                request_hash: &change.request_hash,
                approve: change.to == PayoutStatus::Approved,
                payment_reference: change.payment_reference.as_deref(),
                payment_method: change.payment_method.as_deref(),
                paid_at: change.paid_at,
                status_reason: change.status_reason.as_deref(),
                notes: change.notes.as_deref(),
            },
        )
        .await?;
        tx.commit().await.map_err(store::StoreError::from)?;
        // A notes update stays in PENDING_APPROVAL: it enters no status.
        if from != change.to {
            crate::counters::payouts_entered(change.to, &updated.currency, [updated.amount]);
        }
        tracing::info!(payout_id = %id, from = from.as_str(), to = change.to.as_str(), actor, "payout moved");
        Ok(updated)
    }

    /// Whether the program requires a second approver (hierarchy
    /// GetProgram). NOT_FOUND when the program is gone; UNAVAILABLE when the
    /// hierarchy cannot answer.
    pub(super) async fn require_second_approver(&self, program_id: ProgramId) -> Result<bool, Status> {
        match self.hierarchy.clone().get_program(hierarchy_pb::GetProgramRequest { id: program_id.to_string() }).await {
            Ok(program) => Ok(program.into_inner().require_second_approver),
            Err(status) if status.code() == Code::NotFound => Err(not_found("program", program_id)),
            Err(status) => Err(peer_error("hierarchy", status)),
        }
    }
}
