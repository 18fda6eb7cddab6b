//! upline: hierarchy.GetUplines for the seller and the split partners of every
//! sale (statuses, roles, ancestors, program settings), one call per program
//! chunk. It has no undo (it changes nothing
//! outside the saga log).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use accrue_kit::client::AuthChannel;
use accrue_proto::hierarchy::v1 as hpb;
use accrue_proto::hierarchy::v1::hierarchy_service_client::HierarchyServiceClient;
use accrue_saga::{StepError, StepResult, output_kept};
use accrue_types::{PartnerId, ProgramId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::resolve::ResolveOut;
use super::{Item, Ready, SettleSale, Step, chunk_by_program, chunk_program, earlier, merge, per_chunk};
use crate::domain::settings::version_in_force;
use crate::peers::step_error;

/// A partner's status and role.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct PartnerCtx {
    pub(crate) partner_id: String,
    /// `accrue.type.v1.PartnerStatus` number.
    pub(crate) status: i32,
    pub(crate) role: String,
}

/// The program settings the calculation needs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct ProgramCtx {
    /// `accrue.type.v1.RoundingMode` number; never UNSPECIFIED.
    pub(crate) rounding_mode: i32,
    pub(crate) override_depth_cap: i32,
    pub(crate) compression_enabled: bool,
    /// The hierarchy settings version these are: the one in force at the
    /// sale's occurred_at (see [`version_in_force`]).
    pub(crate) settings_version: i32,
}

/// A split partner with its share.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SplitCtx {
    pub(crate) partner: PartnerCtx,
    /// Share of the base commission, 1..9999 basis points.
    pub(crate) basis_points: i32,
}

/// upline's output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct UplineOut {
    pub(crate) program: ProgramCtx,
    pub(crate) seller: PartnerCtx,
    /// The seller's ancestors, nearest first.
    pub(crate) ancestors: Vec<PartnerCtx>,
    pub(crate) splits: Vec<SplitCtx>,
}

fn partner_ctx(partner: &hpb::PartnerRef) -> PartnerCtx {
    PartnerCtx { partner_id: partner.id.clone(), status: partner.status, role: partner.role.clone() }
}

/// The program's settings versions with their start, oldest first; a missing
/// program, an unspecified rounding mode or a version without a start is the
/// hierarchy's bug, not a reason to guess.
fn settings_history(program: Option<&hpb::Program>) -> Result<Vec<(ProgramCtx, DateTime<Utc>)>, StepError> {
    let program = program.ok_or_else(|| StepError::Permanent("hierarchy returned no program settings".into()))?;
    program
        .settings_history
        .iter()
        .map(|version| {
            if version.rounding_mode == 0 {
                return Err(StepError::Permanent("hierarchy returned an unspecified rounding mode".into()));
            }
            let effective_from = version
                .effective_from
                .as_ref()
                .and_then(|t| DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).ok()?))
                .ok_or_else(|| {
                    StepError::Permanent(format!("settings version {} has no valid effective_from", version.version))
                })?;
            let ctx = ProgramCtx {
                rounding_mode: version.rounding_mode,
                override_depth_cap: version.override_depth_cap,
                compression_enabled: version.compression_enabled,
                settings_version: version.version,
            };
            Ok((ctx, effective_from))
        })
        .collect()
}

pub(super) async fn action(saga: &SettleSale, items: &[Item<'_>]) -> Vec<StepResult> {
    let inputs: Vec<Result<Cow<'_, ResolveOut>, StepError>> =
        items.iter().map(|item| earlier(item, Step::Resolve)).collect();
    let ready = Ready::of(items, &inputs);
    let chunks = chunk_by_program(&ready.items, |i| upline_weight(ready.inputs[i]));
    let outcomes = per_chunk(chunks, ready.items.len(), |chunk| {
        let client = saga.peers.hierarchy.clone();
        let program_id = chunk_program(&ready.items, &chunk);
        let sales: Vec<(&ResolveOut, DateTime<Utc>)> =
            chunk.iter().map(|&i| (&**ready.inputs[i], ready.items[i].subject.occurred_at)).collect();
        async move {
            let uplines = uplines_of(client, program_id?, &sales).await?;
            Ok(uplines.into_iter().map(|upline| upline.and_then(output_kept)).collect())
        }
    })
    .await;
    let positions = ready.positions;
    merge(inputs, positions, outcomes)
}

/// How many partner ids a sale adds to a GetUplines call (the seller and
/// its split partners), for cutting batches within [`super::MAX_BATCH`].
pub(crate) fn upline_weight(resolved: &ResolveOut) -> usize {
    1 + resolved.splits.len()
}

/// The upline of each of `sales` — its resolved facts and `occurred_at`,
/// all of `program_id`, at most [`super::MAX_BATCH`] partner ids in all (see
/// [`upline_weight`]) — in one hierarchy.GetUplines call, in their order:
/// what the upline step logs, and what SimulateProgram (issue 16 item 2)
/// recomputes a sale from. `Err` when the call itself fails; a sale whose
/// partner the hierarchy did not return fails alone.
pub(crate) async fn uplines_of(
    mut hierarchy: HierarchyServiceClient<AuthChannel>,
    program_id: ProgramId,
    sales: &[(&ResolveOut, DateTime<Utc>)],
) -> Result<Vec<Result<UplineOut, StepError>>, StepError> {
    let mut partner_ids: Vec<String> = Vec::new();
    let mut seen: HashSet<PartnerId> = HashSet::new();
    for (r, _) in sales {
        for id in std::iter::once(r.seller_partner_id).chain(r.splits.iter().map(|s| s.partner_id)) {
            if seen.insert(id) {
                partner_ids.push(id.to_string());
            }
        }
    }
    let response = hierarchy
        .get_uplines(hpb::GetUplinesRequest { program_id: program_id.to_string(), partner_ids })
        .await
        .map_err(|status| step_error("hierarchy.GetUplines", &status))?
        .into_inner();
    let history = settings_history(response.program.as_ref())?;
    let by_id: HashMap<&str, &hpb::Upline> =
        response.uplines.iter().filter_map(|u| u.partner.as_ref().map(|p| (p.id.as_str(), u))).collect();
    let partner = |id: PartnerId| {
        by_id
            .get(id.to_string().as_str())
            .and_then(|upline| upline.partner.as_ref().map(|p| (*upline, partner_ctx(p))))
            .ok_or_else(|| StepError::Permanent(format!("hierarchy returned no upline for partner {id}")))
    };
    Ok(sales
        .iter()
        .map(|(r, occurred_at)| {
            let (seller_upline, seller) = partner(r.seller_partner_id)?;
            let splits = r
                .splits
                .iter()
                .map(|split| Ok(SplitCtx { partner: partner(split.partner_id)?.1, basis_points: split.basis_points }))
                .collect::<Result<Vec<_>, StepError>>()?;
            let (program, _) = version_in_force(&history, *occurred_at, |v| v.1)
                .ok_or_else(|| StepError::Permanent("the program has no settings version".into()))?;
            Ok(UplineOut {
                program: program.clone(),
                seller,
                ancestors: seller_upline.ancestors.iter().map(partner_ctx).collect(),
                splits,
            })
        })
        .collect())
}
