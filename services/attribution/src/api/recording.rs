//! Recording sales: the partners a link or sale names, checked with the
//! hierarchy (existence, status, non-transacting roles; seed 002), the
//! batch write with its sagas, and the stream's idle error.

// The API module's imports.
use super::*;

impl AttributionApi {
    /// hierarchy.GetUplines; the caller's mistakes pass through, anything else
    /// is UNAVAILABLE (retry).
    pub(super) async fn get_uplines(
        &self,
        program_id: ProgramId,
        partner_ids: &[PartnerId],
    ) -> Result<hpb::GetUplinesResponse, Status> {
        let mut client = self.peers.hierarchy.clone();
        Ok(client
            .get_uplines(hpb::GetUplinesRequest {
                program_id: program_id.to_string(),
                partner_ids: partner_ids.iter().map(PartnerId::to_string).collect(),
            })
            .await
            .map_err(|status| match status.code() {
                Code::NotFound | Code::FailedPrecondition | Code::InvalidArgument | Code::PermissionDenied => status,
                _ => {
                    tracing::warn!(error = %status, "hierarchy.GetUplines failed");
                    Status::unavailable("the hierarchy service is unavailable; retry")
                }
            })?
            .into_inner())
    }

    /// Checks that the owner and every split partner exist in the program, are
    /// ACTIVE and hold no role the program bars from transacting
    /// (hierarchy.GetUplines): a link whose sales could never be recorded is
    /// refused when it is configured (FAILED_PRECONDITION
    /// ROLE_MAY_NOT_TRANSACT), not on each sale.
    pub(super) async fn check_partners(&self, program_id: ProgramId, partner_ids: &[PartnerId]) -> Result<(), Status> {
        let response = self.get_uplines(program_id, partner_ids).await?;
        let program = response
            .program
            .as_ref()
            .ok_or_else(|| accrue_kit::internal("hierarchy.GetUplines returned no program"))?;
        let non_transacting = program.non_transacting_roles.as_slice();
        for id in partner_ids {
            let id_text = id.to_string();
            let partner = response
                .uplines
                .iter()
                .filter_map(|u| u.partner.as_ref())
                .find(|p| p.id == id_text)
                .ok_or_else(|| not_found("partner", id))?;
            if partner.status != types::PartnerStatus::Active as i32 {
                let status = types::PartnerStatus::try_from(partner.status)
                    .map_or_else(|_| partner.status.to_string(), |s| s.as_str_name().to_string());
                return Err(failed_precondition(
                    "PARTNER_NOT_ACTIVE",
                    format!("partner {id} is {status}; link owners and split partners must be ACTIVE"),
                ));
            }
            if !partner.role.is_empty() && non_transacting.contains(&partner.role) {
                return Err(failed_precondition(
                    "ROLE_MAY_NOT_TRANSACT",
                    format!(
                        "partner {id} has role {}, which may not transact in program {program_id} (seed 002: the \
                         program's non_transacting_roles); it cannot own or share a link",
                        partner.role
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The sellers of `sales` (their link owners) that may not transact,
    /// partner → role (seed 002: a role in the program's
    /// `non_transacting_roles`). Asks hierarchy.GetUplines once per program
    /// for the sellers `roles` does not know yet, and remembers the answers
    /// for the rest of the call. NOT_FOUND when a sale's program does not
    /// exist.
    pub(super) async fn barred_sellers(
        &self,
        sales: &[SaleInput],
        attributions: &Attributions,
        roles: &mut RoleCache,
    ) -> Result<HashMap<PartnerId, String>, Status> {
        // Every program of the batch is looked up at least once per call,
        // attributed sellers or not: a sale into a program that does not
        // exist is NOT_FOUND (hierarchy's answer), never recorded.
        let mut sellers: HashMap<ProgramId, HashSet<PartnerId>> = HashMap::new();
        for sale in sales {
            let program = sellers.entry(sale.program_id).or_default();
            if let Some(attribution) = store::attribution_of(attributions, sale) {
                program.insert(attribution.partner_id);
            }
        }
        let mut barred = HashMap::new();
        for (program_id, partners) in sellers {
            // Once the program is known to bar no role, its sellers need no look-up.
            let open = roles.programs.get(&program_id).is_some_and(Vec::is_empty);
            let mut unknown: Vec<PartnerId> =
                partners.iter().copied().filter(|id| !open && !roles.partners.contains_key(id)).collect();
            if !roles.programs.contains_key(&program_id) || !unknown.is_empty() {
                unknown.sort_unstable();
                let response = self.get_uplines(program_id, &unknown).await?;
                let program =
                    response.program.ok_or_else(|| accrue_kit::internal("hierarchy.GetUplines returned no program"))?;
                roles.programs.insert(program_id, program.non_transacting_roles);
                for partner in response.uplines.into_iter().filter_map(|upline| upline.partner) {
                    if let Ok(id) = partner.id.parse::<PartnerId>() {
                        roles.partners.insert(id, partner.role);
                    }
                }
            }
            let Some(non_transacting) = roles.programs.get(&program_id) else { continue };
            for partner_id in partners {
                if let Some(role) = roles.partners.get(&partner_id)
                    && !role.is_empty()
                    && non_transacting.contains(role)
                {
                    barred.insert(partner_id, role.clone());
                }
            }
        }
        Ok(barred)
    }

    /// Records validated sales (one transaction): attributes them, rejects
    /// the batch when a new sale's seller may not transact, writes.
    /// `stream_message` is the message's position in a RecordSales stream
    /// (0-based), named in every error so a client knows which message failed.
    /// `traceparents` holds each sale's recording trace (W3C traceparent),
    /// which its saga's steps join.
    pub(super) async fn record(
        &self,
        sales: &[SaleInput],
        traceparents: &[Option<String>],
        roles: &mut RoleCache,
        stream_message: Option<usize>,
    ) -> Result<Vec<SaleRow>, Status> {
        // "sales[3] (stream message 2): " inside RecordSales, nothing for RecordSale.
        let at = |i: usize| match stream_message {
            Some(message) => format!("sales[{i}] (stream message {message}): "),
            None => String::new(),
        };
        let attributions = store::attributions(&self.pool, sales).await?;
        let barred = self.barred_sellers(sales, &attributions, roles).await?;
        match store::record_sales(&self.pool, sales, traceparents, &attributions, &barred).await? {
            RecordOutcome::SellerMayNotTransact { index, partner_id, role } => {
                let at = at(index);
                Err(failed_precondition(
                    "ROLE_MAY_NOT_TRANSACT",
                    format!(
                        "{at}sale {:?} is attributed to partner {partner_id}, whose role {role} may not transact in \
                         program {} (seed 002: the program's non_transacting_roles); nothing was recorded",
                        sales[index].external_id, sales[index].program_id
                    ),
                ))
            }
            RecordOutcome::Recorded { sales, sagas_started } => {
                if sagas_started > 0 {
                    self.wake.settle();
                }
                Ok(sales)
            }
            RecordOutcome::Conflict { index } => Err(already_exists(
                "SALE_EXISTS_WITH_DIFFERENT_BODY",
                format!(
                    "{}external_id {:?} was already recorded in program {} with a different body",
                    at(index),
                    sales[index].external_id,
                    sales[index].program_id
                ),
            )),
        }
    }
}

/// DEADLINE_EXCEEDED STREAM_IDLE for a RecordSales stream silent for
/// `idle`: messages 0..`messages` were read and their `sales` sales are
/// recorded (ErrorInfo metadata `recorded_messages`, `recorded_sales`), so a
/// client resumes after them.
pub(super) fn stream_idle(idle: std::time::Duration, messages: usize, sales: usize) -> Status {
    let metadata: HashMap<String, String> =
        [("recorded_messages".to_string(), messages.to_string()), ("recorded_sales".to_string(), sales.to_string())]
            .into();
    accrue_kit::error::with_reason_and_metadata(
        Code::DeadlineExceeded,
        "STREAM_IDLE",
        format!(
            "the stream sent nothing for {} s and was closed; its first {messages} messages ({sales} sales) are \
             recorded, send the rest in a new call",
            idle.as_secs()
        ),
        metadata,
    )
}

/// What one RecordSale / RecordSales call learned from the hierarchy service:
/// each program's non-transacting roles and each seller's role. Roles never
/// change; the barred list may (UpdateProgram), but one call reads it once so
/// that every sale of the call is judged by the same list.
#[derive(Debug, Default)]
pub(super) struct RoleCache {
    programs: HashMap<ProgramId, Vec<String>>,
    partners: HashMap<PartnerId, String>,
}
