//! Qualified overrides (issue 16 item 3) inside compute: when commission
//! answers a sale with FAILED_PRECONDITION `QUALIFICATION_FACTS_REQUIRED`
//! (an ancestor's override plan has a qualification), gather the facts it
//! names — personal volumes from the local `seller_volumes` buckets, ACTIVE
//! direct sub-partner counts from hierarchy.CountActiveDirectPartners, both
//! as of the sale's `occurred_at` — and ask again for those sales only.
//! Programs without qualified plans never get that answer, so their
//! settlement makes no extra query or call.

use std::collections::{HashMap, HashSet};

use accrue_kit::convert::{amount_to_proto, timestamp};
use accrue_money::Currency;
use accrue_proto::commission::v1 as cpb;
use accrue_proto::hierarchy::v1 as hpb;
use accrue_proto::passthrough;
use accrue_saga::StepError;
use accrue_types::{PartnerId, ProgramId};
use chrono::{DateTime, Duration, Utc};

use super::{MAX_BATCH, SettleSale};
use crate::peers::step_error;
use crate::store::{self, VolumeWindow};

/// The reason commission gives a sale that lacks qualification facts.
const FACTS_REQUIRED: &str = "QUALIFICATION_FACTS_REQUIRED";

/// Whether a settlement asks for qualification facts.
fn asks_for_facts(settlement: &passthrough::Settlement) -> bool {
    settlement.failure.as_ref().is_some_and(|failure| failure.reason == FACTS_REQUIRED)
        && !settlement.required_facts.is_empty()
}

/// One fact to gather: which ancestor of which sale.
struct Wanted {
    /// Index of the sale in the re-sent batch.
    sale: usize,
    partner_id: String,
    occurred_at: DateTime<Utc>,
    /// (currency, window days) when a personal volume is asked for.
    volume: Option<(Currency, u32)>,
    /// Whether the ACTIVE direct sub-partner count is asked for.
    partners: bool,
}

/// The ids of the sales whose settlement in `response` asks for
/// qualification facts (empty for programs without qualified plans).
pub(super) fn asking(response: &passthrough::ComputeSettlementsResponse) -> HashSet<String> {
    response.settlements.iter().filter(|s| asks_for_facts(s)).map(|s| s.sale_id.clone()).collect()
}

/// Replaces, in `response`, the settlements that ask for qualification
/// facts by settlements of the same sales (`sales`, built again as first
/// sent) sent again with the facts gathered (under the same `draft`, if any). A settlement that still asks
/// after that (a plan changed between the two calls) is a transient error:
/// the step runs again.
pub(super) async fn settle_with_facts(
    saga: &SettleSale,
    program: &cpb::ProgramContext,
    sales: Vec<cpb::SaleContext>,
    draft: Option<&cpb::SettlementDraft>,
    response: &mut passthrough::ComputeSettlementsResponse,
) -> Result<(), StepError> {
    let asking: HashMap<&str, &passthrough::Settlement> =
        response.settlements.iter().filter(|s| asks_for_facts(s)).map(|s| (s.sale_id.as_str(), s)).collect();
    let mut resend: Vec<cpb::SaleContext> = Vec::new();
    let mut wanted: Vec<Wanted> = Vec::new();
    for sale in sales {
        let Some(settlement) = asking.get(sale.sale_id.as_str()) else {
            continue;
        };
        let occurred_at = sale
            .occurred_at
            .as_ref()
            .and_then(|t| DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).ok()?))
            .ok_or_else(|| StepError::Permanent("a sale without a valid occurred_at".into()))?;
        for required in &settlement.required_facts {
            let qualification = required.qualification.clone().unwrap_or_default();
            let volume = match qualification.min_personal_volume.as_ref() {
                Some(minimum) => {
                    let currency = Currency::from_code(&minimum.currency_code)
                        .map_err(|e| StepError::Permanent(format!("commission asked for a volume in {e}")))?;
                    let days = u32::try_from(qualification.volume_window_days)
                        .map_err(|_| StepError::Permanent("commission asked for a negative window".into()))?;
                    Some((currency, days))
                }
                None => None,
            };
            wanted.push(Wanted {
                sale: resend.len(),
                partner_id: required.partner_id.clone(),
                occurred_at,
                volume,
                partners: qualification.min_active_direct_partners > 0,
            });
        }
        resend.push(sale);
    }
    let program_id: ProgramId =
        program.program_id.parse().map_err(|_| StepError::Permanent(format!("program id {:?}", program.program_id)))?;
    gather(saga, program_id, &wanted, &mut resend).await?;
    let again = super::compute::compute_settlements(
        saga,
        cpb::ComputeSettlementsRequest {
            program: Some(program.clone()),
            sales: resend,
            draft: draft.cloned(),
            omit_base_breakdown: true,
        },
    )
    .await?;
    let mut by_sale: HashMap<String, passthrough::Settlement> =
        again.settlements.into_iter().map(|s| (s.sale_id.clone(), s)).collect();
    for settlement in response.settlements.iter_mut().filter(|s| asks_for_facts(s)) {
        let Some(fresh) = by_sale.remove(&settlement.sale_id) else {
            return Err(StepError::Transient("commission returned no settlement for a re-sent sale".into()));
        };
        if asks_for_facts(&fresh) {
            return Err(StepError::Transient(
                "commission still asks for qualification facts (an override plan changed meanwhile)".into(),
            ));
        }
        *settlement = fresh;
    }
    Ok(())
}

/// Gathers every wanted fact (one query for the volumes, one hierarchy call
/// per [`MAX_BATCH`] counts) and writes it on the re-sent sales' ancestors.
async fn gather(
    saga: &SettleSale,
    program_id: ProgramId,
    wanted: &[Wanted],
    sales: &mut [cpb::SaleContext],
) -> Result<(), StepError> {
    let mut windows = Vec::new();
    let mut window_of = Vec::new();
    for (w, want) in wanted.iter().enumerate() {
        if let Some((currency, days)) = want.volume {
            let partner_id: PartnerId = want
                .partner_id
                .parse()
                .map_err(|_| StepError::Permanent(format!("commission named partner {:?}", want.partner_id)))?;
            windows.push(VolumeWindow {
                partner_id,
                currency: currency.code().to_string(),
                start: want.occurred_at - Duration::days(i64::from(days)),
                end: want.occurred_at,
            });
            window_of.push(w);
        }
    }
    let volumes = if windows.is_empty() {
        Vec::new()
    } else {
        store::window_volumes(&saga.pool, program_id, &windows).await.map_err(|e| StepError::database(&e))?
    };
    let counted: Vec<usize> = (0..wanted.len()).filter(|&w| wanted[w].partners).collect();
    let mut counts = Vec::with_capacity(counted.len());
    for chunk in counted.chunks(MAX_BATCH) {
        let request = hpb::CountActiveDirectPartnersRequest {
            program_id: program_id.to_string(),
            queries: chunk
                .iter()
                .map(|&w| hpb::ActiveDirectPartnersQuery {
                    partner_id: wanted[w].partner_id.clone(),
                    as_of: Some(timestamp(wanted[w].occurred_at)),
                })
                .collect(),
        };
        let answer = saga
            .peers
            .hierarchy
            .clone()
            .count_active_direct_partners(request)
            .await
            .map_err(|status| step_error("hierarchy.CountActiveDirectPartners", &status))?
            .into_inner();
        if answer.counts.len() != chunk.len() {
            return Err(StepError::Permanent("hierarchy answered another number of counts".into()));
        }
        counts.extend(answer.counts);
    }
    for ((w, window), volume) in window_of.iter().zip(&windows).zip(volumes) {
        let want = &wanted[*w];
        let currency = Currency::from_code(&window.currency).map_err(|e| StepError::Permanent(e.to_string()))?;
        let days = want.volume.map_or(0, |(_, days)| days);
        let facts = facts_of(&mut sales[want.sale], &want.partner_id)?;
        facts.personal_volume = Some(amount_to_proto(currency, volume));
        facts.volume_window_days = i32::try_from(days).unwrap_or(i32::MAX);
    }
    for (&w, count) in counted.iter().zip(counts) {
        let want = &wanted[w];
        facts_of(&mut sales[want.sale], &want.partner_id)?.active_direct_partners = Some(count);
    }
    Ok(())
}

/// The qualification facts of one ancestor of a sale, created empty.
fn facts_of<'a>(
    sale: &'a mut cpb::SaleContext,
    partner_id: &str,
) -> Result<&'a mut cpb::QualificationFacts, StepError> {
    let ancestor = sale
        .ancestors
        .iter_mut()
        .find(|ancestor| ancestor.partner_id == partner_id)
        .ok_or_else(|| StepError::Permanent(format!("commission asked for facts of non-ancestor {partner_id}")))?;
    Ok(ancestor.qualification_facts.get_or_insert_with(Default::default))
}
