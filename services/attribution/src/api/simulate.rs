//! SimulateProgram (issue 16 item 2; DESIGN §8 "Backtests"): a period's
//! settled sales (refunded ones included) recomputed under a draft through the settlement saga's own
//! step functions — [`resolve_sales`] (local facts), [`uplines_of`]
//! (hierarchy.GetUplines), [`settle_batch`] (commission.ComputeSettlements
//! with the draft, and the qualification facts' second trip) and
//! [`settlement_lines`] — compared with the lines the ledger holds
//! (ledger.ListSaleLines). Writes nothing: no sale, saga, posting or rule.
//!
//! Facts are the ones settlement ran on: each sale's resolve and upline
//! outputs from its saga's log (customer history, first payment, prior
//! volume as recorded then; ancestors, statuses, roles and program settings
//! as the hierarchy answered then), so that the backtest differs from the
//! ledger only by what the draft changes — sales recorded out of
//! `occurred_at` order, or a partner moved since, add no noise. A sale whose
//! log lacks them is resolved again by [`resolve_sales`] and [`uplines_of`],
//! as settlement would now; a sale the draft re-splits keeps its logged
//! upline with its new split partners' statuses and roles asked now.

use accrue_kit::auth::Identity;
use accrue_kit::convert::require_timestamp;
use accrue_kit::convert::settlement::{kind_from_proto, kind_to_proto};
use accrue_money::Money;
use accrue_proto::commission::v1 as cpb;
use accrue_proto::ledger::v1 as lpb;
use accrue_saga::StepError;
use accrue_types::{LinkId, SaleId};
use chrono::{DateTime, Duration};
use serde::{Deserialize, Serialize};

// The API module's imports.
use super::*;
use crate::domain::simulation::{DEFAULT_TOP_K, MAX_TOP_K, SaleComparison, SimLine, Tally};
use crate::saga::settle_sale::{
    MAX_BATCH, ResolveOut, UplineOut, by_settings, cut_by_weight, program_context, resolve_sales, sale_context,
    settle_batch, settlement_lines, upline_weight, uplines_of,
};
use crate::store::IndexProbes;

/// Longest period one simulation covers, in days.
pub const MAX_PERIOD_DAYS: i64 = 400;
/// Most sales per page (and the default page).
pub const MAX_SIMULATION_PAGE: usize = 20_000;
/// Most link split changes one draft carries.
pub const MAX_LINK_SPLITS_CHANGES: usize = 100;

/// A split config as parsed from the wire: each partner (None when its id
/// was malformed and already reported) and its basis points.
type ParsedSplits = Vec<(Option<PartnerId>, i32)>;

/// SimulateProgram keyset cursor: the last sale's (occurred_at µs, id).
#[derive(Debug, Serialize, Deserialize)]
struct SimulationCursor {
    t: i64,
    id: SaleId,
}

/// A validated request.
struct Simulation {
    program_id: ProgramId,
    period: (DateTime<Utc>, DateTime<Utc>),
    top_k: usize,
    page_size: usize,
    /// Draft splits by link.
    splits: HashMap<LinkId, Vec<Split>>,
}

impl AttributionApi {
    /// SimulateProgram: see the proto and this module's doc. Errors:
    /// INVALID_ARGUMENT with every field violation at once (`program_id`,
    /// `start_time`, `end_time` — required, end after start, at most
    /// [`MAX_PERIOD_DAYS`] later —, `top_k` 0..=100, `page_size`
    /// 0..=[`MAX_SIMULATION_PAGE`], `page_token`, `link_splits[i].link_id` (a
    /// link of the program, at most once), `link_splits[i].splits[j]` as
    /// CreateLink checks splits, and the commission draft's `draft.…` paths as
    /// CreateAgreement and SetOverridePlan check them); NOT_FOUND for a
    /// program the caller's token does not name or the hierarchy does not
    /// know, and for a draft partner not in the program; FAILED_PRECONDITION
    /// for a draft split partner that is not ACTIVE or may not transact;
    /// UNAVAILABLE when a peer cannot answer.
    pub(super) async fn simulate(
        &self,
        scope: &Identity,
        request: pb::SimulateProgramRequest,
    ) -> Result<pb::SimulateProgramResponse, Status> {
        let simulation = self.check_simulation(scope, &request).await?;
        let program_id = simulation.program_id;
        let query = format!(
            "simulate|{program_id}|{}|{}",
            simulation.period.0.timestamp_micros(),
            simulation.period.1.timestamp_micros()
        );
        let after = match page::decode::<SimulationCursor>(&query, &request.page_token)? {
            None => None,
            Some(cursor) => {
                let time = DateTime::<Utc>::from_timestamp_micros(cursor.t)
                    .ok_or_else(|| invalid_field("page_token", "is not a valid page token"))?;
                Some((time, cursor.id))
            }
        };
        let limit = simulation.page_size as i64;
        let mut sales = store::settled_sales_in(&self.pool, program_id, simulation.period, after, limit + 1)
            .await
            .map_err(accrue_kit::error::db_error)?;
        let next_page_token = page::next_page(&mut sales, limit, &query, |last| SimulationCursor {
            t: last.occurred_at.timestamp_micros(),
            id: last.id,
        })?;
        let saga = SettleSale { pool: self.pool.clone(), peers: self.peers.clone() };
        let mut tally = Tally::new(simulation.top_k);
        for chunk in sales.chunks(MAX_BATCH) {
            self.simulate_chunk(&saga, &simulation, request.draft.as_ref(), chunk, &mut tally).await?;
        }
        encode_tally(tally, next_page_token)
    }

    /// Validates the request (see [`Self::simulate_program`]); the
    /// commission draft is validated by commission itself, with no sales.
    async fn check_simulation(
        &self,
        scope: &Identity,
        request: &pb::SimulateProgramRequest,
    ) -> Result<Simulation, Status> {
        let mut violations = FieldViolations::new();
        let program_id = require_uuid::<ProgramId>("program_id", &request.program_id, &mut violations);
        let start = require_timestamp("start_time", request.start_time.as_ref(), &mut violations);
        let end = require_timestamp("end_time", request.end_time.as_ref(), &mut violations);
        if let (Some(start), Some(end)) = (start, end) {
            if end <= start {
                violations.add("end_time", "must be after start_time");
            } else if end - start > Duration::days(MAX_PERIOD_DAYS) {
                violations.add("end_time", format!("must be at most {MAX_PERIOD_DAYS} days after start_time"));
            }
        }
        let top_k = bounded("top_k", request.top_k, DEFAULT_TOP_K, MAX_TOP_K, &mut violations);
        let page_size =
            bounded("page_size", request.page_size, MAX_SIMULATION_PAGE, MAX_SIMULATION_PAGE, &mut violations);
        if request.link_splits.len() > MAX_LINK_SPLITS_CHANGES {
            violations.add(
                "link_splits",
                format!("at most {MAX_LINK_SPLITS_CHANGES} links, got {}", request.link_splits.len()),
            );
        }
        let mut changes: Vec<(usize, LinkId, ParsedSplits)> = Vec::new();
        for (i, change) in request.link_splits.iter().enumerate() {
            let link_id =
                require_uuid::<LinkId>(&format!("link_splits[{i}].link_id"), &change.link_id, &mut violations);
            let parsed: Vec<(Option<PartnerId>, i32)> = change
                .splits
                .iter()
                .enumerate()
                .map(|(j, split)| {
                    let field = format!("link_splits[{i}].splits[{j}].partner_id");
                    (require_uuid(&field, &split.partner_id, &mut violations), split.basis_points)
                })
                .collect();
            if let Some(link_id) = link_id {
                if changes.iter().any(|(_, known, _)| *known == link_id) {
                    violations.add(format!("link_splits[{i}].link_id"), "names a link an earlier change already names");
                }
                changes.push((i, link_id, parsed));
            }
        }
        violations.into_result()?;
        let (Some(program_id), Some(start), Some(end)) = (program_id, start, end) else {
            return Err(internal("validated SimulateProgram request lost a field"));
        };
        scope.require_program(program_id)?;
        // Each changed link must be the program's; its splits follow the
        // link split rule with its owner, as CreateLink checks them.
        let mut violations = FieldViolations::new();
        let mut splits = HashMap::new();
        let mut partners: Vec<PartnerId> = Vec::new();
        for (i, link_id, parsed) in changes {
            let link = store::get_link(&self.pool, link_id).await?.filter(|link| link.program_id == program_id);
            let Some(link) = link else {
                violations.add(format!("link_splits[{i}].link_id"), "is not a link of the program");
                continue;
            };
            check_splits(&format!("link_splits[{i}].splits"), Some(link.owner_partner_id), &parsed, &mut violations);
            let new: Vec<Split> = parsed
                .iter()
                .filter_map(|(partner, bps)| partner.map(|partner_id| Split { partner_id, basis_points: *bps }))
                .collect();
            for split in &new {
                if !partners.contains(&split.partner_id) {
                    partners.push(split.partner_id);
                }
            }
            splits.insert(link_id, new);
        }
        violations.into_result()?;
        // The program must exist (NOT_FOUND otherwise); draft split partners
        // must be its own, ACTIVE and allowed to transact (as CreateLink).
        if partners.is_empty() {
            self.get_uplines(program_id, &[]).await?;
        } else {
            self.check_partners(program_id, &partners).await?;
        }
        if let Some(draft) = request.draft.as_ref() {
            self.check_commission_draft(program_id, draft).await?;
        }
        Ok(Simulation { program_id, period: (start, end), top_k, page_size, splits })
    }

    /// Has commission validate the draft (a ComputeSettlements call with the
    /// draft and no sales): its INVALID_ARGUMENT, NOT_FOUND and
    /// FAILED_PRECONDITION reach the caller as they are (field paths
    /// `draft.…` are the same in both requests); anything else is UNAVAILABLE.
    async fn check_commission_draft(&self, program_id: ProgramId, draft: &cpb::SettlementDraft) -> Result<(), Status> {
        let program = cpb::ProgramContext { program_id: program_id.to_string(), ..Default::default() };
        let request = cpb::ComputeSettlementsRequest {
            program: Some(program),
            sales: Vec::new(),
            draft: Some(draft.clone()),
            omit_base_breakdown: false,
        };
        match self.peers.commission.clone().compute_settlements(request).await {
            Ok(_) => Ok(()),
            Err(status)
                if matches!(status.code(), Code::InvalidArgument | Code::NotFound | Code::FailedPrecondition) =>
            {
                Err(status)
            }
            Err(status) => {
                tracing::warn!(error = %status, "commission.ComputeSettlements (draft check) failed");
                Err(Status::unavailable("the commission service is unavailable; retry"))
            }
        }
    }

    /// Runs one chunk (≤ [`MAX_BATCH`] sales) through resolve, upline and
    /// compute under the draft, reads its actual lines, and tallies it.
    async fn simulate_chunk(
        &self,
        saga: &SettleSale,
        simulation: &Simulation,
        draft: Option<&cpb::SettlementDraft>,
        chunk: &[SaleRow],
        tally: &mut Tally,
    ) -> Result<(), Status> {
        let program_id = simulation.program_id;
        let (simulated, actual) =
            tokio::join!(self.simulated_lines(saga, simulation, draft, chunk), self.actual_lines(program_id, chunk));
        let (simulated, mut actual) = (simulated?, actual?);
        for (sale, outcome) in chunk.iter().zip(simulated) {
            let currency = Currency::from_code(&sale.currency)
                .map_err(|e| internal(format!("stored sale currency {:?}: {e}", sale.currency)))?;
            let (lines, failure) = match outcome {
                Ok(lines) => (lines, None),
                Err(failure) => (Vec::new(), Some(failure)),
            };
            tally.add(SaleComparison {
                sale_id: sale.id,
                occurred_at: sale.occurred_at,
                currency,
                actual: actual.remove(&sale.id).unwrap_or_default(),
                simulated: lines,
                failure,
            });
        }
        Ok(())
    }

    /// The lines the draft gives each sale of `chunk`, in order (`Err`: why
    /// it could not settle, as the saga would have failed it).
    async fn simulated_lines(
        &self,
        saga: &SettleSale,
        simulation: &Simulation,
        draft: Option<&cpb::SettlementDraft>,
        chunk: &[SaleRow],
    ) -> Result<Vec<Result<Vec<SimLine>, String>>, Status> {
        let program_id = simulation.program_id;
        let mut outcomes: Vec<Result<Vec<SimLine>, String>> = vec![Ok(Vec::new()); chunk.len()];
        // The facts settlement ran on, as its saga logged them; resolve
        // again only the sales whose log lacks them.
        let ids: Vec<SaleId> = chunk.iter().map(|sale| sale.id).collect();
        let mut logged = store::settled_facts(&self.pool, &ids).await.map_err(accrue_kit::error::db_error)?;
        let mut resolved: Vec<Option<ResolveOut>> = Vec::with_capacity(chunk.len());
        let mut logged_uplines: Vec<Option<UplineOut>> = Vec::with_capacity(chunk.len());
        for sale in chunk {
            let facts = logged.remove(&sale.id).unwrap_or_default();
            resolved.push(facts.resolve);
            logged_uplines.push(facts.upline);
        }
        let missing: Vec<usize> = (0..chunk.len()).filter(|&i| resolved[i].is_none()).collect();
        if !missing.is_empty() {
            let sales: Vec<&SaleRow> = missing.iter().map(|&i| &chunk[i]).collect();
            let fresh =
                resolve_sales(&self.pool, &sales, IndexProbes::SetLocal).await.map_err(accrue_kit::error::db_error)?;
            for (&i, answer) in missing.iter().zip(fresh) {
                resolved[i] = keep(&mut outcomes[i], answer);
            }
        }
        // The draft's splits in place of the sale's snapshot.
        let mut resplit = vec![false; chunk.len()];
        for (i, resolved) in resolved.iter_mut().enumerate() {
            if let Some(r) = resolved.as_mut()
                && let Some(splits) = r.link_id.and_then(|link| simulation.splits.get(&link))
            {
                r.splits = splits.clone();
                resplit[i] = true;
            }
        }
        // upline: the logged one, but asked again (cut by partner ids per
        // call as the step cuts it) when the log lacks it or the draft
        // re-split the sale (its new split partners' statuses and roles).
        let mut uplines = logged_uplines;
        let ask: Vec<usize> =
            (0..chunk.len()).filter(|&i| resolved[i].is_some() && (uplines[i].is_none() || resplit[i])).collect();
        for piece in cut_by_weight(ask, |i| resolved[i].as_ref().map_or(1, upline_weight)) {
            let inputs: Vec<(&ResolveOut, DateTime<Utc>)> =
                piece.iter().filter_map(|&i| Some((resolved[i].as_ref()?, chunk[i].occurred_at))).collect();
            let answers = uplines_of(self.peers.hierarchy.clone(), program_id, &inputs).await.map_err(chunk_failure)?;
            for (&i, answer) in piece.iter().zip(answers) {
                let Some(fresh) = keep(&mut outcomes[i], answer) else {
                    uplines[i] = None;
                    continue;
                };
                uplines[i] = Some(match uplines[i].take() {
                    // Settlement's own upline, with the draft's split partners.
                    Some(settled) => UplineOut { splits: fresh.splits, ..settled },
                    None => fresh,
                });
            }
        }
        // compute, one commission call per program settings version.
        let ready: Vec<(usize, &ResolveOut, &UplineOut)> =
            (0..chunk.len()).filter_map(|i| Some((i, resolved[i].as_ref()?, uplines[i].as_ref()?))).collect();
        for members in by_settings((0..ready.len()).collect(), |k| &ready[k].2.program) {
            let Some(ctx) = members.first().map(|&k| &ready[k].2.program) else { continue };
            let mut group = Vec::with_capacity(members.len());
            let mut currencies = Vec::with_capacity(members.len());
            for &k in &members {
                let (i, _, _) = ready[k];
                group.push(i);
                let currency = Currency::from_code(&chunk[i].currency)
                    .map_err(|e| internal(format!("stored sale currency {:?}: {e}", chunk[i].currency)))?;
                currencies.push(currency);
            }
            let sale_ids: Vec<String> = group.iter().map(|&i| chunk[i].id.to_string()).collect();
            let context = |m: usize| {
                let (i, r, u) = ready[members[m]];
                sale_context(&chunk[i], r, u, currencies[m])
            };
            let response = settle_batch(saga, &program_context(program_id, ctx), &sale_ids, context, draft)
                .await
                .map_err(chunk_failure)?;
            let mut by_sale: HashMap<String, accrue_proto::passthrough::Settlement> =
                response.settlements.into_iter().map(|s| (s.sale_id.clone(), s)).collect();
            for ((&i, currency), sale_id) in group.iter().zip(currencies).zip(&sale_ids) {
                let settlement = by_sale
                    .remove(sale_id.as_str())
                    .ok_or_else(|| Status::unavailable("commission returned no settlement for a sale; retry"))?;
                if let Some(out) = keep(&mut outcomes[i], settlement_lines(settlement, currency)) {
                    outcomes[i] = Ok(out
                        .lines
                        .into_iter()
                        .map(|computed| SimLine {
                            partner_id: computed.line.partner_id,
                            kind: computed.line.kind,
                            level: computed.line.level,
                            amount: computed.line.amount,
                        })
                        .collect());
                }
            }
        }
        Ok(outcomes)
    }

    /// The live CREDIT lines the ledger holds for each sale of `chunk`.
    async fn actual_lines(
        &self,
        program_id: ProgramId,
        chunk: &[SaleRow],
    ) -> Result<HashMap<SaleId, Vec<SimLine>>, Status> {
        let request = lpb::ListSaleLinesRequest {
            program_id: program_id.to_string(),
            sale_ids: chunk.iter().map(|sale| sale.id.to_string()).collect(),
        };
        let response = self.peers.ledger.clone().list_sale_lines(request).await.map_err(|status| {
            tracing::warn!(error = %status, "ledger.ListSaleLines failed");
            Status::unavailable("the ledger service is unavailable; retry")
        })?;
        let mut lines: HashMap<SaleId, Vec<SimLine>> = HashMap::new();
        for line in response.into_inner().lines {
            let bad = |what: &str| internal(format!("ledger.ListSaleLines returned {what}"));
            let sale_id: SaleId = line.sale_id.parse().map_err(|_| bad("a malformed sale id"))?;
            let partner_id: PartnerId = line.partner_id.parse().map_err(|_| bad("a malformed partner id"))?;
            let kind = kind_from_proto(line.kind).ok_or_else(|| bad("an unknown kind"))?;
            let money = line.amount.as_ref().ok_or_else(|| bad("a line without an amount"))?;
            let currency = Currency::from_code(&money.currency_code).map_err(|_| bad("an unknown currency"))?;
            let amount = currency.parse_amount(&money.amount).map_err(|_| bad("a malformed amount"))?;
            let level = u32::try_from(line.level).map_err(|_| bad("a negative level"))?;
            lines.entry(sale_id).or_default().push(SimLine {
                partner_id,
                kind,
                level,
                amount: Money { amount, currency },
            });
        }
        Ok(lines)
    }
}

/// A request number in `0..=max` (0: `default`), else a violation.
fn bounded(field: &str, value: i32, default: usize, max: usize, violations: &mut FieldViolations) -> usize {
    match usize::try_from(value) {
        Ok(0) => default,
        Ok(n) if n <= max => n,
        _ => {
            violations.add(field, format!("must be 0 (default {default}) to {max}"));
            default
        }
    }
}

/// A step's per-sale outcome: the value, or the error recorded in the
/// sale's `outcome` slot (the first error wins).
fn keep<T>(outcome: &mut Result<Vec<SimLine>, String>, result: Result<T, StepError>) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(error) => {
            if outcome.is_ok() {
                *outcome = Err(step_message(&error));
            }
            None
        }
    }
}

fn step_message(error: &StepError) -> String {
    match error {
        StepError::Permanent(m) => m.clone(),
        StepError::Transient(m) => format!("transient: {m}"),
        StepError::Internal(m) => format!("internal: {m}"),
    }
}

/// A whole peer call failed: the peer's trouble is UNAVAILABLE (retry);
/// an answer that retrying would not change is FAILED_PRECONDITION.
fn chunk_failure(error: StepError) -> Status {
    match error {
        StepError::Transient(message) | StepError::Internal(message) => {
            tracing::warn!(%message, "a peer failed during SimulateProgram");
            Status::unavailable(format!("a peer could not answer; retry ({message})"))
        }
        StepError::Permanent(message) => {
            failed_precondition("SIMULATION_FAILED", format!("the settlement steps refused the period: {message}"))
        }
    }
}

/// The page's tally on the wire.
fn encode_tally(tally: Tally, next_page_token: String) -> Result<pb::SimulateProgramResponse, Status> {
    let differences = tally
        .totals
        .iter()
        .map(|((partner, kind, code), totals)| {
            let currency = Currency::from_code(code).map_err(internal)?;
            Ok(pb::PartnerKindDifference {
                partner_id: partner.to_string(),
                kind: kind_to_proto(*kind) as i32,
                actual: Some(amount_to_proto(currency, totals.actual)),
                simulated: Some(amount_to_proto(currency, totals.simulated)),
                difference: Some(amount_to_proto(currency, totals.simulated - totals.actual)),
            })
        })
        .collect::<Result<Vec<_>, Status>>()?;
    let line = |line: &SimLine| pb::SimulatedLine {
        partner_id: line.partner_id.to_string(),
        kind: kind_to_proto(line.kind) as i32,
        level: i32::try_from(line.level).unwrap_or(i32::MAX),
        amount: Some(amount_to_proto(line.amount.currency, line.amount.amount)),
    };
    let top_sales = tally
        .top
        .iter()
        .map(|(change, sale)| pb::SaleDifference {
            sale_id: sale.sale_id.to_string(),
            occurred_at: Some(timestamp(sale.occurred_at)),
            change: Some(amount_to_proto(sale.currency, *change)),
            difference: Some(amount_to_proto(sale.currency, sale.difference())),
            actual_lines: sale.actual.iter().map(line).collect(),
            simulated_lines: sale.simulated.iter().map(line).collect(),
            failure: sale.failure.clone().unwrap_or_default(),
        })
        .collect();
    let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    Ok(pb::SimulateProgramResponse {
        differences,
        top_sales,
        sales_simulated: count(tally.simulated),
        sales_failed: count(tally.failed),
        sales_changed: count(tally.changed),
        next_page_token,
    })
}
