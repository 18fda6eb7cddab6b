//! A payout's entries (DESIGN §5, issue 12 item 3): reserve a partner's
//! payable entries for a payout, release them (rejected or deleted payout),
//! settle them as PAID (paid payout). Each idempotent on the payout id.

// The API module's imports.
use super::*;

impl LedgerApi {
    /// ReserveForPayout: see the RPC's documentation in api.rs.
    pub(super) async fn reserve(
        &self,
        request: Request<pb::ReserveForPayoutRequest>,
    ) -> Result<Response<pb::ReserveForPayoutResponse>, Status> {
        let scope = accrue_kit::auth::caller(&request)?.clone();
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let program_id = require_uuid("program_id", &request.program_id, &mut violations);
        let currency = match Currency::from_code(&request.currency_code) {
            Ok(currency) => Some(currency),
            Err(error) => {
                violations.add("currency_code", error.to_string());
                None
            }
        };
        let cutoff = require_timestamp("cutoff", request.cutoff.as_ref(), &mut violations);
        if request.reservations.len() > MAX_RESERVATIONS {
            violations.add("reservations", format!("at most {MAX_RESERVATIONS} reservations per call"));
        }
        let mut requests = Vec::with_capacity(request.reservations.len());
        let mut partners = HashSet::new();
        let mut payouts = HashSet::new();
        for (index, reservation) in request.reservations.iter().enumerate() {
            let field = format!("reservations[{index}]");
            let partner_id = require_uuid(&format!("{field}.partner_id"), &reservation.partner_id, &mut violations);
            let payout_id = require_uuid(&format!("{field}.payout_id"), &reservation.payout_id, &mut violations);
            let minimum = optional_money(
                &format!("{field}.minimum_amount"),
                reservation.minimum_amount.as_ref(),
                &mut violations,
            );
            if let Some(minimum) = minimum {
                if currency.is_some_and(|currency| currency != minimum.currency) {
                    violations.add(
                        format!("{field}.minimum_amount.currency_code"),
                        format!("{} differs from currency_code {}", minimum.currency, request.currency_code),
                    );
                }
                if minimum.amount.is_sign_negative() && !minimum.amount.is_zero() {
                    violations.add(format!("{field}.minimum_amount.amount"), "must not be negative");
                }
            }
            if let Some(partner_id) = partner_id
                && !partners.insert(partner_id)
            {
                violations.add(format!("{field}.partner_id"), format!("partner {partner_id} appears twice"));
            }
            if let Some(payout_id) = payout_id
                && !payouts.insert(payout_id)
            {
                violations.add(format!("{field}.payout_id"), format!("payout {payout_id} appears twice"));
            }
            if let (Some(partner_id), Some(payout_id)) = (partner_id, payout_id) {
                requests.push(ReservationRequest {
                    partner_id,
                    payout_id,
                    minimum: minimum.map(|m| m.amount).unwrap_or(Decimal::ZERO),
                });
            }
        }
        violations.into_result()?;
        let (Some(program_id), Some(currency), Some(cutoff)) = (program_id, currency, cutoff) else {
            return Err(invalid_field("program_id", "is required"));
        };
        scope.require_program(program_id)?;
        let outcomes = match store::reserve(&self.pool, program_id, currency.code(), cutoff, &requests).await {
            Ok(outcomes) => outcomes,
            Err(ReserveError::Conflict) => {
                return Err(accrue_kit::error::aborted(
                    "CONCURRENT_RESERVATION",
                    "an entry was reserved by a concurrent payout run; retry",
                ));
            }
            Err(ReserveError::Db(error)) if is_concurrency_failure(&error) => {
                return Err(store_status(store::StoreError(error)));
            }
            Err(ReserveError::Db(error)) => return Err(db_error(error)),
        };
        let results = requests
            .iter()
            .zip(outcomes)
            .map(|(request, outcome)| pb::ReservationResult {
                partner_id: request.partner_id.to_string(),
                payout_id: request.payout_id.to_string(),
                amount: money(currency, outcome.amount),
                entry_count: outcome.entry_count,
                reserved: outcome.reserved,
            })
            .collect();
        Ok(Response::new(pb::ReserveForPayoutResponse { results }))
    }

    /// ReleaseReservation: see the RPC's documentation in api.rs.
    pub(super) async fn release(
        &self,
        request: Request<pb::ReleaseReservationRequest>,
    ) -> Result<Response<pb::ReleaseReservationResponse>, Status> {
        let actor = accrue_kit::auth::actor(&request)?;
        let scope = accrue_kit::auth::caller(&request)?.clone();
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let program_id = require_uuid::<ProgramId>("program_id", &request.program_id, &mut violations);
        let payout_id = require_uuid::<PayoutId>("payout_id", &request.payout_id, &mut violations);
        if request.reason.chars().count() > MAX_TEXT_LEN {
            violations.add("reason", format!("must be at most {MAX_TEXT_LEN} characters"));
        }
        violations.into_result()?;
        let (Some(program_id), Some(payout_id)) = (program_id, payout_id) else {
            return Err(invalid_field("program_id", "is required"));
        };
        scope.require_program(program_id)?;
        match store::release(&self.pool, program_id, payout_id, &actor, request.reason.trim()).await {
            Ok(store::ReleaseOutcome::Released(count)) => Ok(Response::new(pb::ReleaseReservationResponse {
                payout_id: payout_id.to_string(),
                released_count: count as i64,
            })),
            Ok(store::ReleaseOutcome::Settled) => Err(failed_precondition(
                "RESERVATION_SETTLED",
                format!("payout {payout_id} was paid; its entries are settled and cannot be released"),
            )),
            Err(error) => Err(store_status(error)),
        }
    }

    /// SettleReservation: see the RPC's documentation in api.rs.
    pub(super) async fn settle(
        &self,
        request: Request<pb::SettleReservationRequest>,
    ) -> Result<Response<pb::SettleReservationResponse>, Status> {
        let actor = accrue_kit::auth::actor(&request)?;
        let scope = accrue_kit::auth::caller(&request)?.clone();
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let program_id = require_uuid::<ProgramId>("program_id", &request.program_id, &mut violations);
        let payout_id = require_uuid::<PayoutId>("payout_id", &request.payout_id, &mut violations);
        let reference = request.payment_reference.trim();
        if reference.is_empty() {
            violations.add("payment_reference", "is required");
        } else if reference.chars().count() > MAX_TEXT_LEN {
            violations.add("payment_reference", format!("must be at most {MAX_TEXT_LEN} characters"));
        }
        violations.into_result()?;
        let (Some(program_id), Some(payout_id)) = (program_id, payout_id) else {
            return Err(invalid_field("program_id", "is required"));
        };
        scope.require_program(program_id)?;
        let settlement = match store::settle(&self.pool, program_id, payout_id, reference, &actor).await {
            Ok(store::SettleOutcome::Settled(settlement)) => settlement,
            Ok(store::SettleOutcome::OtherReference(stored)) => {
                return Err(failed_precondition(
                    "RESERVATION_SETTLED",
                    format!("payout {payout_id} was settled with payment reference {stored:?}"),
                ));
            }
            Ok(store::SettleOutcome::NotPayable(entry, status)) => {
                return Err(failed_precondition(
                    "RESERVED_ENTRY_NOT_APPROVED",
                    format!(
                        "entry {entry} of payout {payout_id} is {status}; approve it (or reverse it) before paying"
                    ),
                ));
            }
            Ok(store::SettleOutcome::Nothing { released: true }) => {
                return Err(failed_precondition(
                    "RESERVATION_RELEASED",
                    format!("payout {payout_id}'s reservation was released; it has nothing to settle"),
                ));
            }
            Ok(store::SettleOutcome::Nothing { released: false }) => {
                return Err(accrue_kit::error::with_reason(
                    Code::NotFound,
                    "RESERVATION_NOT_FOUND",
                    format!("payout {payout_id} holds no reservation"),
                ));
            }
            Err(error) => return Err(store_status(error)),
        };
        let currency = Currency::from_code(&settlement.currency).map_err(internal)?;
        Ok(Response::new(pb::SettleReservationResponse {
            payout_id: payout_id.to_string(),
            entry_count: settlement.entry_count,
            paid_count: settlement.paid_count,
            paid_amount: money(currency, settlement.paid_amount),
            payment_reference: settlement.payment_reference,
            settle_time: Some(timestamp(settlement.settled_at)),
        }))
    }
}
