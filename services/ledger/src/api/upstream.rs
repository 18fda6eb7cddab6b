//! What the ledger asks the hierarchy service: whether partners belong to a
//! program, a program's auto-approval, and the timed ClearMatured pass over
//! every program.

// The API module's imports.
use super::*;

impl LedgerApi {
    /// The partners of `partners` that are not partners of `program_id`
    /// (unknown ids and another program's partners alike, so the answer
    /// tells nothing about other programs; issue 11 item 2). NOT_FOUND when
    /// the program does not exist; UNAVAILABLE when the hierarchy cannot
    /// answer.
    pub(super) async fn foreign_partners(
        &self,
        program_id: ProgramId,
        partners: HashSet<PartnerId>,
    ) -> Result<HashSet<PartnerId>, Status> {
        let mut unconfirmed: Vec<PartnerId> = {
            let known = self.known_partners.lock().map_err(|_| internal("known partners lock poisoned"))?;
            partners.into_iter().filter(|partner| !known.contains(&(program_id, *partner))).collect()
        };
        unconfirmed.sort_unstable();
        let mut foreign = HashSet::new();
        // GetUplines answers NOT_FOUND naming the first partner it cannot
        // find; each such answer removes one partner, so this ends.
        while !unconfirmed.is_empty() {
            let chunk: Vec<PartnerId> = unconfirmed.iter().take(UPLINE_BATCH).copied().collect();
            let request = hierarchy::GetUplinesRequest {
                program_id: program_id.to_string(),
                partner_ids: chunk.iter().map(PartnerId::to_string).collect(),
            };
            match self.hierarchy.clone().get_uplines(request).await {
                Ok(_) => {
                    let mut known = self.known_partners.lock().map_err(|_| internal("known partners lock poisoned"))?;
                    if known.len() + chunk.len() > MAX_KNOWN_PARTNERS {
                        known.clear();
                    }
                    known.extend(chunk.iter().map(|partner| (program_id, *partner)));
                    unconfirmed.drain(..chunk.len());
                }
                Err(status) if status.code() == Code::NotFound => {
                    let missing = chunk.iter().copied().find(|partner| status.message().contains(&partner.to_string()));
                    let Some(missing) = missing else { return Err(not_found("program", program_id)) };
                    foreign.insert(missing);
                    unconfirmed.retain(|partner| *partner != missing);
                }
                Err(status) => {
                    tracing::warn!(code = ?status.code(), message = status.message(), "hierarchy GetUplines failed");
                    return Err(Status::unavailable(format!("hierarchy service unavailable: {}", status.message())));
                }
            }
        }
        Ok(foreign)
    }

    /// Reads a program's `auto_approve_cleared` from the hierarchy service.
    /// NOT_FOUND when the program does not exist; UNAVAILABLE when the
    /// hierarchy cannot answer.
    pub(super) async fn auto_approve(&self, program_id: ProgramId) -> Result<bool, Status> {
        let mut client = self.hierarchy.clone();
        match client.get_program(hierarchy::GetProgramRequest { id: program_id.to_string() }).await {
            Ok(program) => Ok(program.into_inner().auto_approve_cleared),
            Err(status) if status.code() == Code::NotFound => Err(not_found("program", program_id)),
            Err(status) if status.code() == Code::InvalidArgument => {
                Err(invalid_field("program_id", status.message().to_string()))
            }
            Err(status) => {
                tracing::warn!(code = ?status.code(), message = status.message(), "hierarchy GetProgram failed");
                Err(Status::unavailable(format!("hierarchy service unavailable: {}", status.message())))
            }
        }
    }
}

/// What one timer pass of ClearMatured did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClearancePass {
    /// Programs with matured PENDING entries.
    pub programs: u64,
    /// Entries moved PENDING → CLEARED.
    pub cleared: i64,
    /// Of them, moved on to APPROVED (auto-approve programs).
    pub approved: i64,
    /// Programs skipped because the hierarchy could not answer (retried next pass).
    pub failed_programs: u64,
}

impl LedgerApi {
    /// One ClearMatured pass over every program with PENDING entries whose
    /// `clears_at` ≤ `as_of`, each as ClearMatured(as_of) with the program's
    /// auto-approval, the status events naming `actor`. Runs only while this
    /// replica holds the session advisory lock `lock_key` (None: another
    /// replica is running one). A program whose settings cannot be read is
    /// skipped and counted.
    pub async fn clear_all_matured(
        &self,
        as_of: DateTime<Utc>,
        actor: &str,
        lock_key: i64,
    ) -> Result<Option<ClearancePass>, store::StoreError> {
        let mut conn = self.pool.acquire().await?;
        let locked: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(lock_key).fetch_one(&mut *conn).await?;
        if !locked {
            return Ok(None);
        }
        let pass = self.clear_programs(&mut conn, as_of, actor).await;
        sqlx::query("SELECT pg_advisory_unlock($1)").bind(lock_key).execute(&mut *conn).await?;
        pass.map(Some)
    }

    pub(super) async fn clear_programs(
        &self,
        conn: &mut sqlx::PgConnection,
        as_of: DateTime<Utc>,
        actor: &str,
    ) -> Result<ClearancePass, store::StoreError> {
        let programs: Vec<ProgramId> = sqlx::query_scalar(
            "SELECT DISTINCT program_id FROM entry_states WHERE status = 'PENDING' AND clears_at <= $1",
        )
        .bind(as_of)
        .fetch_all(&mut *conn)
        .await?;
        let mut pass = ClearancePass { programs: programs.len() as u64, ..ClearancePass::default() };
        for program_id in programs {
            let auto_approve = match self.auto_approve(program_id).await {
                Ok(auto_approve) => auto_approve,
                Err(status) => {
                    tracing::warn!(%program_id, code = ?status.code(), "clearance skipped a program");
                    pass.failed_programs += 1;
                    continue;
                }
            };
            let (cleared, approved) = store::clear_matured(&self.pool, program_id, as_of, auto_approve, actor).await?;
            pass.cleared += cleared;
            pass.approved += approved;
        }
        Ok(pass)
    }
}
