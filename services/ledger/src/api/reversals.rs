//! Refund clawbacks (issue 9): reverse a sale's entries in part or whole,
//! and void a reversal when its saga unwinds.

// The API module's imports.
use super::*;

impl LedgerApi {
    /// ReverseSale: see the RPC's documentation in api.rs.
    pub(super) async fn reverse(
        &self,
        request: Request<pb::ReverseSaleRequest>,
    ) -> Result<Response<pb::ReverseSaleResponse>, Status> {
        let actor = accrue_kit::auth::actor(&request)?;
        let scope = accrue_kit::auth::caller(&request)?.clone();
        let request = request.into_inner();
        let valid = validate_reverse(&request)?;
        scope.require_program(valid.program_id)?;
        if valid.refund.refunded_total > valid.refund.sale_amount {
            return Err(failed_precondition(
                "REFUND_EXCEEDS_SALE",
                format!(
                    "refunded_total {} exceeds sale_amount {}",
                    valid.refund.refunded_total, valid.refund.sale_amount
                ),
            ));
        }
        let store_request = store::ReverseRequest {
            key: &request.idempotency_key,
            sale_id: &request.sale_id,
            refund_id: valid.refund_id,
            hash: accrue_kit::idempotency::fingerprint_message(&request),
            refund: valid.refund,
            occurred_at: valid.occurred_at,
            actor: &actor,
            reason: &request.reason,
        };
        let (row, replayed) =
            match store::reverse_sale(&self.pool, valid.program_id, &store_request).await.map_err(store_status)? {
                ReverseOutcome::Applied(row) => (row, false),
                ReverseOutcome::Replayed(row) => (row, true),
                ReverseOutcome::KeyReused => {
                    return Err(already_exists(
                        "IDEMPOTENCY_KEY_REUSED",
                        format!(
                            "idempotency key {:?} was already used with a different request body",
                            request.idempotency_key
                        ),
                    ));
                }
                ReverseOutcome::CurrencyMismatch(lines) => {
                    return Err(failed_precondition(
                        "CURRENCY_MISMATCH",
                        format!(
                            "sale {:?} has lines in {lines}, the refund is in {}",
                            request.sale_id,
                            valid.refund.currency.code()
                        ),
                    ));
                }
                ReverseOutcome::Refused(error @ ReversalError::RefundExceedsSale { .. }) => {
                    return Err(failed_precondition("REFUND_EXCEEDS_SALE", error.to_string()));
                }
                ReverseOutcome::Refused(error) => return Err(invalid_field("refunded_total", error.to_string())),
            };
        let currency = Currency::from_code(&row.currency).map_err(internal)?;
        let debits = store::entries_by_ids(&self.pool, &row.debit_ids)
            .await?
            .into_iter()
            .map(|entry| entry_to_proto(entry, Vec::new()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Response::new(pb::ReverseSaleResponse {
            debits,
            lines_total: money(currency, row.lines_total),
            target: money(currency, row.target),
            previously_clawed_back: money(currency, row.previously_clawed_back),
            clawed_back: money(currency, row.clawed_back),
            reversed_entry_ids: row.reversed_line_ids.iter().map(EntryId::to_string).collect(),
            replayed,
        }))
    }

    /// VoidReversal: see the RPC's documentation in api.rs.
    pub(super) async fn void(
        &self,
        request: Request<pb::VoidReversalRequest>,
    ) -> Result<Response<pb::VoidReversalResponse>, Status> {
        let actor = accrue_kit::auth::actor(&request)?;
        let scope = accrue_kit::auth::caller(&request)?.clone();
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let program_id = require_uuid("program_id", &request.program_id, &mut violations);
        check_key("idempotency_key", &request.idempotency_key, &mut violations);
        check_text("reason", &request.reason, false, &mut violations);
        violations.into_result()?;
        let program_id = program_id.ok_or_else(|| invalid_field("program_id", "is required"))?;
        scope.require_program(program_id)?;
        let outcome = store::void_reversal(&self.pool, program_id, &request.idempotency_key, &actor, &request.reason)
            .await
            .map_err(store_status)?;
        let (voided, restored) = match outcome {
            VoidOutcome::Applied(voided, restored) => (voided, restored),
            VoidOutcome::AlreadyVoided => (Vec::new(), Vec::new()),
            VoidOutcome::NotFound => return Err(not_found("reversal", &request.idempotency_key)),
            VoidOutcome::Refused(error @ VoidError::Reserved(_)) => {
                return Err(failed_precondition("DEBIT_RESERVED", error.to_string()));
            }
            VoidOutcome::Refused(error @ VoidError::Paid(_)) => {
                return Err(failed_precondition("DEBIT_PAID", error.to_string()));
            }
            VoidOutcome::Refused(error @ VoidError::Superseded(_)) => {
                return Err(failed_precondition("REVERSAL_SUPERSEDED", error.to_string()));
            }
        };
        Ok(Response::new(pb::VoidReversalResponse {
            voided_entry_ids: voided.iter().map(EntryId::to_string).collect(),
            restored_entry_ids: restored.iter().map(EntryId::to_string).collect(),
        }))
    }
}
