//! GetPartnerPayoutSummary (issue 12 item 2): a partner's payouts per
//! currency — paid, awaiting approval, approved but unpaid, the last paid
//! payout — beside the ledger's payable balance.

// The API module's imports.
use super::*;

impl PayoutsApi {
    /// GetPartnerPayoutSummary: see the RPC's documentation in api.rs.
    pub(super) async fn partner_payout_summary(
        &self,
        request: Request<pb::GetPartnerPayoutSummaryRequest>,
    ) -> Result<Response<pb::GetPartnerPayoutSummaryResponse>, Status> {
        let scope = accrue_kit::auth::caller(&request)?.clone();
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let program_id = require_uuid::<ProgramId>("program_id", &request.program_id, &mut violations);
        let partner_id = require_uuid::<PartnerId>("partner_id", &request.partner_id, &mut violations);
        violations.into_result()?;
        let (Some(program_id), Some(partner_id)) = (program_id, partner_id) else {
            return Err(invalid_field("program_id", "is required"));
        };
        scope.require_program(program_id)?;
        let empty = pb::GetPartnerPayoutSummaryResponse { partner_id: partner_id.to_string(), summaries: Vec::new() };
        if scope.partner_filter(Some(partner_id)).is_none() {
            return Ok(Response::new(empty));
        }
        let balances = self
            .ledger
            .clone()
            .get_balances(ledger_pb::GetBalancesRequest {
                program_id: program_id.to_string(),
                partner_ids: vec![partner_id.to_string()],
                currency_code: String::new(),
            })
            .await
            .map_err(|status| peer_error("ledger", status))?
            .into_inner()
            .balances;
        let mut currencies: std::collections::BTreeMap<String, pb::PartnerPayoutSummary> = Default::default();
        let zero = |code: &str| -> Result<pb::PartnerPayoutSummary, Status> {
            let currency = currency_of(code)?;
            Ok(pb::PartnerPayoutSummary {
                currency_code: code.to_string(),
                paid: Some(amount_to_proto(currency, Decimal::ZERO)),
                paid_count: 0,
                pending_approval: Some(amount_to_proto(currency, Decimal::ZERO)),
                approved: Some(amount_to_proto(currency, Decimal::ZERO)),
                last_payout: None,
                payable: Some(amount_to_proto(currency, Decimal::ZERO)),
            })
        };
        let mut sums: std::collections::BTreeMap<(String, &'static str), Decimal> = Default::default();
        for (code, status, count, amount) in store::partner_totals(&self.pool, program_id, partner_id).await? {
            if !currencies.contains_key(&code) {
                currencies.insert(code.clone(), zero(&code)?);
            }
            let bucket = match PayoutStatus::from_str_name(&status) {
                Some(PayoutStatus::Paid) => {
                    if let Some(summary) = currencies.get_mut(&code) {
                        summary.paid_count += count;
                    }
                    "paid"
                }
                Some(PayoutStatus::PendingApproval) => "pending",
                Some(PayoutStatus::Approved | PayoutStatus::Processing | PayoutStatus::Failed) => "approved",
                Some(PayoutStatus::Rejected | PayoutStatus::Deleted) => continue,
                None => return Err(internal(format!("stored payout status {status:?} is unknown"))),
            };
            *sums.entry((code, bucket)).or_default() += amount;
        }
        for balance in &balances {
            let Some(approved) = balance.approved.as_ref() else { continue };
            if !currencies.contains_key(&approved.currency_code) {
                currencies.insert(approved.currency_code.clone(), zero(&approved.currency_code)?);
            }
            if let Some(summary) = currencies.get_mut(&approved.currency_code) {
                summary.payable = Some(approved.clone());
            }
        }
        for (code, summary) in currencies.iter_mut() {
            let currency = currency_of(code)?;
            let sum = |bucket: &str| sums.get(&(code.clone(), bucket)).copied().unwrap_or(Decimal::ZERO);
            summary.paid = Some(amount_to_proto(currency, sum("paid")));
            summary.pending_approval = Some(amount_to_proto(currency, sum("pending")));
            summary.approved = Some(amount_to_proto(currency, sum("approved")));
            if summary.paid_count > 0 {
                summary.last_payout = store::last_paid(&self.pool, program_id, partner_id, code)
                    .await?
                    .map(|row| payout_to_proto(&row))
                    .transpose()?;
            }
        }
        Ok(Response::new(pb::GetPartnerPayoutSummaryResponse {
            partner_id: partner_id.to_string(),
            summaries: currencies.into_values().collect(),
        }))
    }
}
