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

    /// Reads the non-transacting roles (seed 002) of every program of
    /// `sales` that `roles` does not hold yet: one hierarchy.GetUplines per
    /// program, naming no partner. Read on every call, not kept across
    /// calls, because UpdateProgram changes the list; a sale into a program
    /// that does not exist is NOT_FOUND (hierarchy's answer), never recorded.
    pub(super) async fn program_roles(&self, sales: &[SaleInput], roles: &mut RoleCache) -> Result<(), Status> {
        let mut programs: Vec<ProgramId> =
            sales.iter().map(|sale| sale.program_id).filter(|id| !roles.programs.contains_key(id)).collect();
        programs.sort_unstable();
        programs.dedup();
        for program_id in programs {
            let response = self.get_uplines(program_id, &[]).await?;
            let program =
                response.program.ok_or_else(|| accrue_kit::internal("hierarchy.GetUplines returned no program"))?;
            roles.programs.insert(program_id, program.non_transacting_roles);
        }
        Ok(())
    }

    /// The sellers of `sales` (their link owners) that may not transact,
    /// partner → role (seed 002: a role in the program's
    /// `non_transacting_roles`, which [`program_roles`](Self::program_roles)
    /// read into `roles`). A seller's role is asked of hierarchy.GetUplines
    /// (once per program, for every seller not known yet) only in a program
    /// that bars some role, and only once per process: a partner's role
    /// and program never change ([`SellerRoles`]).
    pub(super) async fn barred_sellers(
        &self,
        sales: &[SaleInput],
        attributions: &Attributions,
        roles: &RoleCache,
    ) -> Result<HashMap<PartnerId, String>, Status> {
        let mut sellers: HashMap<ProgramId, HashSet<PartnerId>> = HashMap::new();
        for sale in sales {
            if let Some(attribution) = store::attribution_of(attributions, sale) {
                sellers.entry(sale.program_id).or_default().insert(attribution.partner_id);
            }
        }
        let mut barred = HashMap::new();
        for (program_id, partners) in sellers {
            let Some(non_transacting) = roles.programs.get(&program_id).cloned() else {
                return Err(accrue_kit::internal(format!("program {program_id}'s roles were not read")));
            };
            if non_transacting.is_empty() {
                continue;
            }
            // Looked up here, not read back from the cache, which may have
            // evicted an answer meanwhile.
            let mut known: HashMap<PartnerId, String> = HashMap::with_capacity(partners.len());
            let mut unknown = Vec::new();
            for &id in &partners {
                match self.seller_roles.get(program_id, id) {
                    Some(role) => {
                        known.insert(id, role);
                    }
                    None => unknown.push(id),
                }
            }
            if !unknown.is_empty() {
                unknown.sort_unstable();
                let response = self.get_uplines(program_id, &unknown).await?;
                for partner in response.uplines.into_iter().filter_map(|upline| upline.partner) {
                    if let Ok(id) = partner.id.parse::<PartnerId>() {
                        self.seller_roles.insert(program_id, id, partner.role.clone());
                        known.insert(id, partner.role);
                    }
                }
            }
            for partner_id in partners {
                let role = known.remove(&partner_id).ok_or_else(|| {
                    accrue_kit::internal(format!("hierarchy.GetUplines did not return seller {partner_id}"))
                })?;
                if !role.is_empty() && non_transacting.contains(&role) {
                    barred.insert(partner_id, role);
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
        // The programs' roles do not depend on the attribution: both reads
        // at once, one round trip's wait instead of two (issue 15).
        let (attributions, ()) = tokio::try_join!(
            async { store::attributions(&self.pool, sales).await.map_err(Status::from) },
            self.program_roles(sales, roles)
        )?;
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

/// What one RecordSale / RecordSales call read from the hierarchy service:
/// each program's non-transacting roles. The list may change
/// (UpdateProgram), so it is read once per call, and every sale of the call
/// is judged by the same list.
#[derive(Debug, Default)]
pub(super) struct RoleCache {
    programs: HashMap<ProgramId, Vec<String>>,
}

/// Sellers' roles, kept for the life of the process: a partner's role and
/// program are set when it is created and never change (hierarchy has no
/// RPC that changes them), so an answer stays true. Bounded to
/// [`SellerRoles::CAPACITY`] partners; one evicted is asked again.
#[derive(Clone)]
pub(crate) struct SellerRoles(std::sync::Arc<quick_cache::sync::Cache<PartnerId, (ProgramId, String)>>);

impl std::fmt::Debug for SellerRoles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SellerRoles").field("len", &self.0.len()).finish()
    }
}

impl Default for SellerRoles {
    fn default() -> Self {
        SellerRoles(std::sync::Arc::new(quick_cache::sync::Cache::new(Self::CAPACITY)))
    }
}

impl SellerRoles {
    /// Partners remembered (about 100 bytes each).
    pub(crate) const CAPACITY: usize = 100_000;

    /// The role of `partner_id` in `program_id` ("" for none), if known.
    fn get(&self, program_id: ProgramId, partner_id: PartnerId) -> Option<String> {
        self.0.get(&partner_id).filter(|(program, _)| *program == program_id).map(|(_, role)| role)
    }

    fn insert(&self, program_id: ProgramId, partner_id: PartnerId, role: String) {
        self.0.insert(partner_id, (program_id, role));
    }
}
