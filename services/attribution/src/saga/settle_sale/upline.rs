//! upline: hierarchy.GetUplines for the seller and the split partners of every
//! sale (statuses, roles, ancestors, program settings), one call per program
//! chunk. Its undo is [`super::nothing`].

use std::collections::HashMap;

use accrue_proto::hierarchy::v1 as hpb;
use accrue_saga::{StepError, StepResult, output};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::resolve::ResolveOut;
use super::{Item, Ready, SettleSale, Step, chunk_by_program, chunk_program, earlier, merge, per_chunk};
use crate::peers::step_error;

/// A partner's status and role.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct PartnerCtx {
    pub(crate) partner_id: String,
    /// `accrue.hierarchy.v1.PartnerStatus` number.
    pub(crate) status: i32,
    pub(crate) role: String,
}

/// The program settings the calculation needs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct ProgramCtx {
    /// `accrue.types.v1.RoundingMode` number; never UNSPECIFIED.
    pub(crate) rounding_mode: i32,
    pub(crate) override_depth_cap: i32,
    pub(crate) compression_enabled: bool,
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

/// The program settings hierarchy sent; a missing program or an unspecified
/// rounding mode is the hierarchy's bug, not a reason to guess.
fn program_ctx(program: Option<&hpb::Program>) -> Result<ProgramCtx, StepError> {
    let program = program.ok_or_else(|| StepError::Permanent("hierarchy returned no program settings".into()))?;
    if program.rounding_mode == 0 {
        return Err(StepError::Permanent("hierarchy returned an unspecified rounding mode".into()));
    }
    Ok(ProgramCtx {
        rounding_mode: program.rounding_mode,
        override_depth_cap: program.override_depth_cap,
        compression_enabled: program.compression_enabled,
    })
}

pub(super) async fn action(saga: &SettleSale, items: &[Item<'_>]) -> Vec<StepResult> {
    let inputs: Vec<Result<ResolveOut, StepError>> = items.iter().map(|item| earlier(item, Step::Resolve)).collect();
    let ready = Ready::of(items, &inputs);
    let chunks = chunk_by_program(&ready.items, |i| 1 + ready.inputs.get(i).map_or(0, |r| r.splits.len()));
    let outcomes = per_chunk(chunks, ready.items.len(), |chunk| {
        let mut client = saga.peers.hierarchy.clone();
        let program_id = chunk_program(&ready.items, &chunk);
        let mut partner_ids: Vec<String> = Vec::new();
        for &i in &chunk {
            let r = ready.inputs[i];
            for id in std::iter::once(r.seller_partner_id).chain(r.splits.iter().map(|s| s.partner_id)) {
                let id = id.to_string();
                if !partner_ids.contains(&id) {
                    partner_ids.push(id);
                }
            }
        }
        let resolved = &ready.inputs;
        async move {
            let response = client
                .get_uplines(hpb::GetUplinesRequest { program_id: program_id?.to_string(), partner_ids })
                .await
                .map_err(|status| step_error("hierarchy.GetUplines", &status))?
                .into_inner();
            let program = program_ctx(response.program.as_ref())?;
            let by_id: HashMap<&str, &hpb::Upline> =
                response.uplines.iter().filter_map(|u| u.partner.as_ref().map(|p| (p.id.as_str(), u))).collect();
            let partner = |id: Uuid| {
                by_id
                    .get(id.to_string().as_str())
                    .and_then(|upline| upline.partner.as_ref().map(|p| (*upline, partner_ctx(p))))
                    .ok_or_else(|| StepError::Permanent(format!("hierarchy returned no upline for partner {id}")))
            };
            Ok(chunk
                .iter()
                .map(|&i| {
                    let r = resolved[i];
                    let (seller_upline, seller) = partner(r.seller_partner_id)?;
                    let splits = r
                        .splits
                        .iter()
                        .map(|split| {
                            Ok(SplitCtx { partner: partner(split.partner_id)?.1, basis_points: split.basis_points })
                        })
                        .collect::<Result<Vec<_>, StepError>>()?;
                    output(&UplineOut {
                        program: program.clone(),
                        seller,
                        ancestors: seller_upline.ancestors.iter().map(partner_ctx).collect(),
                        splits,
                    })
                })
                .collect())
        }
    })
    .await;
    let positions = ready.positions;
    merge(inputs, positions, outcomes)
}
