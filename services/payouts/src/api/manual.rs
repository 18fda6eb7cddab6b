//! Manual payouts (CreatePayout) and soft deletion (DeletePayout) (issue 12
//! item 2; seed 001). A manual payout is a one-partner run: the ledger
//! reserves the partner's payable entries under the payout's deterministic
//! id, then the payout is written — so a retry after a crash between the two
//! finds the same reservation (the ledger is idempotent per payout id).

use accrue_kit::error::failed_precondition;

// The API module's imports.
use super::*;
use crate::domain::{ManualRequest, manual_payout_id, validate_manual_request};

impl PayoutsApi {
    /// CreatePayout: see the RPC's documentation in api.rs.
    pub(super) async fn create_manual_payout(
        &self,
        scope: &accrue_kit::auth::Identity,
        actor: &str,
        request: &pb::CreatePayoutRequest,
    ) -> Result<PayoutRow, Status> {
        let request_hash =
            idempotency::fingerprint_message(&pb::CreatePayoutRequest { request_id: String::new(), ..request.clone() });
        let request = validate_manual_request(request)?;
        scope.require_program(request.program_id)?;
        let id = manual_payout_id(request.program_id, &request.request_id);
        if let Some(done) = self.manual_repeat(&request, id, &request_hash).await? {
            return Ok(done);
        }
        self.require_payable_partner(&request).await?;
        let reservation = ledger_pb::PartnerReservation {
            partner_id: request.partner_id.to_string(),
            payout_id: id.to_string(),
            // No threshold: an operator paying one partner by hand decides
            // the amount is worth paying.
            minimum_amount: Some(amount_to_proto(request.currency, Decimal::ZERO)),
        };
        let results =
            self.reserve(request.program_id, request.currency.code(), request.cutoff, vec![reservation]).await?;
        let [result] = results.as_slice() else {
            return Err(internal(format!("ledger answered {} reservations for one partner", results.len())));
        };
        let net = match &result.amount {
            Some(money) if money.currency_code == request.currency.code() => {
                request.currency.parse_amount(&money.amount).map_err(internal)?
            }
            Some(money) => {
                return Err(internal(format!(
                    "ledger answered {} for a {} payout",
                    money.currency_code,
                    request.currency.code()
                )));
            }
            None => Decimal::ZERO,
        };
        if !result.reserved {
            return Err(failed_precondition(
                "NOTHING_PAYABLE",
                format!(
                    "partner {} has {net} {} approved and cleared by {} that no payout holds; a payout needs a \
                     positive balance",
                    request.partner_id,
                    request.currency.code(),
                    request.cutoff.to_rfc3339()
                ),
            ));
        }
        let period = request.period.to_string();
        let insert = store::ManualInsert {
            id,
            program_id: request.program_id,
            partner_id: request.partner_id,
            currency: request.currency.code(),
            amount: net,
            period: &period,
            entry_count: result.entry_count,
            notes: &request.notes,
            created_by: actor,
            request_hash: &request_hash,
        };
        match store::insert_manual_payout(&self.pool, &insert).await? {
            Some(row) => {
                tracing::info!(payout_id = %id, partner_id = %request.partner_id, amount = %net, actor, "manual payout created");
                Ok(row)
            }
            // A concurrent repeat of the same request wrote it first.
            None => self
                .manual_repeat(&request, id, &request_hash)
                .await?
                .ok_or_else(|| internal("manual payout insert conflicted but no payout exists")),
        }
    }

    /// The payout a previous CreatePayout with this request id created:
    /// Ok(Some) for a repeat of the same body, ALREADY_EXISTS
    /// REQUEST_ID_REUSED for another body (AIP-155).
    async fn manual_repeat(
        &self,
        request: &ManualRequest,
        id: PayoutId,
        request_hash: &[u8],
    ) -> Result<Option<PayoutRow>, Status> {
        let Some(row) = store::get_payout(&self.pool, id).await? else { return Ok(None) };
        let stored = store::create_request_hash(&self.pool, id).await?;
        idempotency::replay(&request.request_id, row, |_| stored.as_deref() == Some(request_hash)).map(Some)
    }

    /// Ok when the partner is in the program and a run would pay it: NOT_FOUND
    /// for an unknown partner or another program's; FAILED_PRECONDITION
    /// PARTNER_NOT_PAYABLE for a SUSPENDED partner or one on hold (the rule
    /// runs apply, [`partner_rule`]; a TERMINATED partner is still paid).
    async fn require_payable_partner(&self, request: &ManualRequest) -> Result<(), Status> {
        let partner = match self
            .hierarchy
            .clone()
            .get_partner(hierarchy_pb::GetPartnerRequest { id: request.partner_id.to_string() })
            .await
        {
            Ok(partner) if partner.get_ref().program_id == request.program_id.to_string() => partner.into_inner(),
            Ok(_) => return Err(not_found("partner", request.partner_id)),
            Err(status) if status.code() == Code::NotFound => return Err(not_found("partner", request.partner_id)),
            Err(status) => return Err(peer_error("hierarchy", status)),
        };
        let hold = store::settings_of(&self.pool, request.program_id, &[request.partner_id])
            .await?
            .first()
            .is_some_and(|settings| settings.hold);
        let status = types::PartnerStatus::try_from(partner.status).unwrap_or(types::PartnerStatus::Active);
        match partner_rule(status, hold, None, Decimal::ZERO, request.currency) {
            PartnerRule::Reserve(_) => Ok(()),
            PartnerRule::CarryForward => Err(failed_precondition(
                "PARTNER_NOT_PAYABLE",
                format!(
                    "partner {} is {}; its balance carries forward until it is active and off hold",
                    request.partner_id,
                    if hold { "on payout hold" } else { "SUSPENDED" }
                ),
            )),
        }
    }
}
