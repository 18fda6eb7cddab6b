//! A payout run (seed 001, DESIGN §5): start it (or find the one a request
//! id or period already started), reserve each batch of partners in the
//! ledger, write the payouts, complete it.

// The API module's imports.
use super::*;

impl PayoutsApi {
    /// Ok when `partner_id` is a partner of `program_id` (hierarchy
    /// GetPartner); NOT_FOUND PARTNER_NOT_FOUND otherwise, the same answer
    /// for another program's partner as for an unknown id.
    pub(super) async fn require_partner(&self, program_id: ProgramId, partner_id: PartnerId) -> Result<(), Status> {
        match self.hierarchy.clone().get_partner(hierarchy_pb::GetPartnerRequest { id: partner_id.to_string() }).await {
            Ok(partner) if partner.get_ref().program_id == program_id.to_string() => Ok(()),
            Ok(_) => Err(not_found("partner", partner_id)),
            Err(status) if status.code() == Code::NotFound => Err(not_found("partner", partner_id)),
            Err(status) => Err(peer_error("hierarchy", status)),
        }
    }

    /// The program's minimum payout from the hierarchy service.
    /// NOT_FOUND when the program does not exist.
    pub(super) async fn program_minimum(&self, program_id: ProgramId) -> Result<Option<Money>, Status> {
        let program = match self
            .hierarchy
            .clone()
            .get_program(hierarchy_pb::GetProgramRequest { id: program_id.to_string() })
            .await
        {
            Ok(response) => response.into_inner(),
            Err(status) if status.code() == Code::NotFound => return Err(not_found("program", program_id)),
            Err(status) => return Err(peer_error("hierarchy", status)),
        };
        match program.minimum_payout {
            None => Ok(None),
            Some(minimum) if minimum.amount.is_empty() => Ok(None),
            Some(minimum) => Money::parse(&minimum.currency_code, &minimum.amount).map(Some).map_err(internal),
        }
    }

    /// Starts a new run, or returns the one a concurrent request created
    /// (for the same period, or with the same request id: then it is
    /// answered as a repeat of `request_hash`'s request).
    pub(super) async fn start_run(
        &self,
        request: &RunRequest,
        request_hash: &[u8],
        actor: &str,
    ) -> Result<RunRow, Status> {
        let program_minimum = self.program_minimum(request.program_id).await?;
        let minimum = resolve_minimum(request.minimum, program_minimum, request.currency)
            .map_err(|error| failed_precondition("MINIMUM_CURRENCY_MISMATCH", error.to_string()))?;
        let period = request.period.to_string();
        let insert = store::RunInsert {
            id: PayoutRunId::new_v7(),
            program_id: request.program_id,
            currency: request.currency.code(),
            period: &period,
            cutoff: request.cutoff.unwrap_or_else(|| request.period.default_cutoff()),
            minimum_amount: minimum,
            request_id: request.request_id.as_deref(),
            request_hash: request.request_id.as_ref().map(|_| request_hash),
            created_by: actor,
        };
        match store::insert_run(&self.pool, &insert).await {
            Ok(Some(run)) => {
                tracing::info!(run_id = %run.id, program_id = %run.program_id, period = %run.period, "payout run started");
                return Ok(run);
            }
            Ok(None) => {}
            Err(error) if accrue_kit::error::is_unique_violation(&error.0) => {
                if let Some(run) = self.run_of_request(request, request_hash).await? {
                    return Ok(run);
                }
                return Err(error.into());
            }
            Err(error) => return Err(error.into()),
        }
        store::find_run(&self.pool, request.program_id, request.currency.code(), &period)
            .await?
            .ok_or_else(|| internal("payout run insert conflicted but no run exists"))
    }

    /// The run `request`'s request id started, when one did: Ok for a repeat
    /// of the same body, ALREADY_EXISTS REQUEST_ID_REUSED for another body
    /// (AIP-155, as in every service). A run from before request hashes were
    /// kept counts as the same body.
    pub(super) async fn run_of_request(
        &self,
        request: &RunRequest,
        request_hash: &[u8],
    ) -> Result<Option<RunRow>, Status> {
        let Some(request_id) = request.request_id.as_deref() else { return Ok(None) };
        let Some(run) = store::find_run_by_request_id(&self.pool, request.program_id, request_id).await? else {
            return Ok(None);
        };
        idempotency::replay(request_id, run, |run| run.request_hash.as_deref().is_none_or(|hash| hash == request_hash))
            .map(Some)
    }

    /// Reserves one batch of partners' entries in `currency` cleared by
    /// `cutoff` in the ledger, retrying when a concurrent run won an entry
    /// (ABORTED).
    pub(super) async fn reserve(
        &self,
        program_id: ProgramId,
        currency: &str,
        cutoff: DateTime<Utc>,
        reservations: Vec<ledger_pb::PartnerReservation>,
    ) -> Result<Vec<ledger_pb::ReservationResult>, Status> {
        let request = ledger_pb::ReserveForPayoutRequest {
            program_id: program_id.to_string(),
            currency_code: currency.to_string(),
            cutoff: Some(timestamp(cutoff)),
            reservations,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.ledger.clone().reserve_for_payout(request.clone()).await {
                Ok(response) => return Ok(response.into_inner().results),
                Err(status) if status.code() == Code::Aborted && attempt < RESERVE_ATTEMPTS => {
                    tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
                }
                Err(status) => return Err(peer_error("ledger", status)),
            }
        }
    }

    /// Runs (or resumes) a RUNNING run to completion: every partner of the
    /// program, page by page, is asked for a reservation under its
    /// deterministic payout id with the minimum [`partner_rule`] gives it
    /// (its own, else the run's; SUSPENDED partners and partners on hold
    /// carry forward; TERMINATED partners are still paid); reserved balances
    /// become PENDING_APPROVAL payouts, smaller ones are carried forward.
    pub(super) async fn execute(&self, run: RunRow, actor: &str) -> Result<RunRow, Status> {
        let currency = currency_of(&run.currency)?;
        let mut carried = CarriedForward::default();
        let mut created: u64 = 0;
        let mut page_token = String::new();
        loop {
            let page = self
                .hierarchy
                .clone()
                .list_partners(hierarchy_pb::ListPartnersRequest {
                    program_id: run.program_id.to_string(),
                    status: 0,
                    page_size: RESERVE_BATCH,
                    page_token: page_token.clone(),
                })
                .await
                .map_err(|status| peer_error("hierarchy", status))?
                .into_inner();
            let mut partners = Vec::with_capacity(page.partners.len());
            for partner in &page.partners {
                let partner_id = partner.id.parse::<PartnerId>().map_err(internal)?;
                partners.push((partner_id, payout_id(run.id, partner_id)));
            }
            if !partners.is_empty() {
                let ids: Vec<PartnerId> = partners.iter().map(|(partner_id, _)| *partner_id).collect();
                let settings: std::collections::HashMap<PartnerId, store::SettingsRow> =
                    store::settings_of(&self.pool, run.program_id, &ids)
                        .await?
                        .into_iter()
                        .map(|row| (row.partner_id, row))
                        .collect();
                let mut reservations = Vec::with_capacity(partners.len());
                for ((partner_id, payout_id), partner) in partners.iter().zip(&page.partners) {
                    let own = settings.get(partner_id);
                    let own_minimum = match own.and_then(|s| s.minimum_currency.as_deref().zip(s.minimum_amount)) {
                        Some((code, amount)) => Some(Money { amount, currency: currency_of(code)? }),
                        None => None,
                    };
                    let status = types::PartnerStatus::try_from(partner.status).unwrap_or(types::PartnerStatus::Active);
                    let hold = own.is_some_and(|s| s.hold);
                    let minimum = match partner_rule(status, hold, own_minimum, run.minimum_amount, currency) {
                        PartnerRule::Reserve(minimum) => amount_to_proto(currency, minimum),
                        PartnerRule::CarryForward => amount_to_proto(currency, HOLD_MINIMUM),
                    };
                    reservations.push(ledger_pb::PartnerReservation {
                        partner_id: partner_id.to_string(),
                        payout_id: payout_id.to_string(),
                        minimum_amount: Some(minimum),
                    });
                }
                let results = self.reserve(run.program_id, &run.currency, run.cutoff, reservations).await?;
                if results.len() != partners.len() {
                    return Err(internal(format!(
                        "ledger answered {} reservations for {} partners",
                        results.len(),
                        partners.len()
                    )));
                }
                let mut payouts = Vec::new();
                for ((partner_id, payout_id), result) in partners.iter().zip(&results) {
                    if result.payout_id != payout_id.to_string() {
                        return Err(internal(format!(
                            "ledger answered payout {} where {payout_id} was asked",
                            result.payout_id
                        )));
                    }
                    let amount = match &result.amount {
                        Some(money) if money.currency_code == run.currency => {
                            currency.parse_amount(&money.amount).map_err(internal)?
                        }
                        Some(money) => {
                            return Err(internal(format!(
                                "ledger answered {} for a {} run",
                                money.currency_code, run.currency
                            )));
                        }
                        None => Decimal::ZERO,
                    };
                    carried.record(result.reserved, amount);
                    if result.reserved {
                        if amount <= Decimal::ZERO {
                            return Err(internal(format!("ledger reserved a non-positive {amount} for {partner_id}")));
                        }
                        payouts.push(NewPayout {
                            id: *payout_id,
                            partner_id: *partner_id,
                            amount,
                            entry_count: result.entry_count,
                        });
                    }
                }
                created += store::insert_payouts(&self.pool, &run, &payouts, actor).await?;
            }
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        let done = store::complete_run(&self.pool, run.id, carried).await?;
        tracing::info!(
            run_id = %done.id,
            payouts = done.payout_count,
            created,
            total = %done.total_amount,
            carried_forward = done.carried_forward_count,
            "payout run complete"
        );
        Ok(done)
    }
}
