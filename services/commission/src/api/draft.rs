//! A ComputeSettlements `draft` (SimulateProgram's backtest, issue 16 item 2)
//! on the wire → [`Draft`]: every part validated exactly as the write RPC
//! that would store it validates it — agreements as CreateAgreement
//! ([`decode_rules_under`], `effective_from`, the partner in the program),
//! override plans as SetOverridePlan ([`plans::codec::decode_plan`], the
//! qualification's currency the program's), scheme rates as SetSchemeRates
//! ([`schemes::codec::decode_rate_changes`], roles on the program's ladder,
//! the tree's child ≤ parent and role order after each change) — with
//! field paths under `draft.`.

use std::collections::HashSet;

use accrue_kit::FieldViolations;
use accrue_kit::convert::{from_timestamp, optional_uuid, require_uuid};
use accrue_proto::commission::v1 as pb;
use accrue_types::{PartnerId, ProgramId, SchemeId};
use tonic::Status;

use super::quote::decode_rules_under;
use super::{CommissionApi, Draft, DraftAgreement, get_uplines, plans, schemes};
use crate::scheme_store::{self, SchemeError};

/// Most agreements, and most override plans, one draft carries.
pub const MAX_DRAFT_ITEMS: usize = 100;

/// Validates `draft` for `program_id` and decodes it. INVALID_ARGUMENT with
/// every field violation at once (`draft.agreements[i].rules.rate`,
/// `draft.override_plans[i].mode`, a `program_id` naming another program,
/// more than [`MAX_DRAFT_ITEMS`], a plan scope twice); NOT_FOUND
/// (`PROGRAM_NOT_FOUND` / `PARTNER_NOT_FOUND`) for an unknown program or a
/// partner not in it; UNAVAILABLE when the hierarchy cannot answer.
pub(super) async fn decode(
    api: &CommissionApi,
    program_id: ProgramId,
    draft: &pb::SettlementDraft,
) -> Result<Draft, Status> {
    let mut violations = FieldViolations::new();
    let program_text = program_id.to_string();
    let same_program = |field: String, value: &str, violations: &mut FieldViolations| {
        if !value.is_empty() && value != program_text {
            violations.add(field, "must be empty or the program of the call");
        }
    };
    for (name, len) in
        [("draft.agreements", draft.agreements.len()), ("draft.override_plans", draft.override_plans.len())]
    {
        if len > MAX_DRAFT_ITEMS {
            violations.add(name, format!("at most {MAX_DRAFT_ITEMS}, got {len}"));
        }
    }
    let mut partners: Vec<(PartnerId, String)> = Vec::new();
    let mut agreements = Vec::with_capacity(draft.agreements.len());
    for (i, agreement) in draft.agreements.iter().enumerate() {
        let at = format!("draft.agreements[{i}]");
        same_program(format!("{at}.program_id"), &agreement.program_id, &mut violations);
        let scope = optional_uuid(&format!("{at}.partner_id"), &agreement.partner_id, &mut violations);
        let effective_from =
            from_timestamp(&format!("{at}.effective_from"), agreement.effective_from.as_ref(), &mut violations);
        let rules = match agreement.rules.as_ref() {
            Some(rules) => decode_rules_under(&format!("{at}.rules"), rules, &mut violations),
            None => {
                violations.add(format!("{at}.rules"), "is required");
                None
            }
        };
        if let Some(partner) = scope {
            partners.push((partner, format!("{at}.partner_id")));
        }
        if let Some(rules) = rules {
            agreements.push(DraftAgreement { scope, effective_from, rules });
        }
    }
    let mut plans = Vec::with_capacity(draft.override_plans.len());
    let mut scopes = HashSet::new();
    for (i, plan) in draft.override_plans.iter().enumerate() {
        let at = format!("draft.override_plans[{i}]");
        same_program(format!("{at}.program_id"), &plan.program_id, &mut violations);
        // SetOverridePlan's own decoder, on the plan as that RPC would get it.
        let mut own = FieldViolations::new();
        let whole = pb::OverridePlan { program_id: program_id.to_string(), ..plan.clone() };
        let decoded = plans::codec::decode_plan(Some(&whole), &mut own);
        if !own.is_empty() {
            violations.absorb(own, |field| match field.strip_prefix("plan") {
                Some(rest) => format!("{at}{rest}"),
                None => format!("{at}.{field}"),
            });
            continue;
        }
        let Some((scope, plan)) = decoded else { continue };
        if !scopes.insert(scope.partner_id) {
            violations.add(format!("{at}.partner_id"), "names a plan scope an earlier draft plan already names");
        }
        if let Some(partner) = scope.partner_id {
            partners.push((partner, format!("{at}.partner_id")));
        }
        plans.push((i, scope.partner_id, plan));
    }
    let mut scheme_rates = Vec::with_capacity(draft.scheme_rates.len());
    for (i, write) in draft.scheme_rates.iter().enumerate() {
        let at = format!("draft.scheme_rates[{i}]");
        let scheme_id = require_uuid::<SchemeId>(&format!("{at}.scheme_id"), &write.scheme_id, &mut violations);
        if write.rates.is_empty() {
            violations.add(format!("{at}.rates"), "at least one rate is required");
        }
        let changes = schemes::codec::decode_rate_changes(&format!("{at}.rates"), &write.rates, &mut violations);
        if let (Some(scheme_id), Some(changes)) = (scheme_id, changes) {
            scheme_rates.push((i, scheme_id, changes));
        }
    }
    violations.into_result()?;
    if agreements.is_empty() && plans.is_empty() && scheme_rates.is_empty() {
        return Ok(Draft::default());
    }
    // The program must exist and every partner be one of its own, as for
    // the write RPCs; a qualification's volume is in the program's currency.
    let uplines = get_uplines(api, program_id, &partners).await?;
    let program = uplines.program.ok_or_else(|| accrue_kit::internal("hierarchy GetUplines returned no program"))?;
    let mut violations = FieldViolations::new();
    for (i, _, plan) in &plans {
        let mut own = FieldViolations::new();
        plans::codec::check_program_currency(plan, &program.default_currency, &mut own);
        violations.absorb(own, |field| match field.strip_prefix("plan") {
            Some(rest) => format!("draft.override_plans[{i}]{rest}"),
            None => format!("draft.override_plans[{i}].{field}"),
        });
    }
    for (i, _, changes) in &scheme_rates {
        schemes::codec::check_rate_roles(
            &format!("draft.scheme_rates[{i}].rates"),
            changes,
            &program.role_ladder,
            &mut violations,
        );
    }
    violations.into_result()?;
    // Each change must keep the program's tree consistent, as
    // SetSchemeRates checks it, on the tree the earlier changes left.
    if !scheme_rates.is_empty() {
        let mut tree = scheme_store::load_tree(&api.pool, program_id).await?;
        for (i, scheme_id, changes) in &scheme_rates {
            if tree.get(*scheme_id).is_none() {
                return Err(schemes::scheme_error(SchemeError::NotFound(*scheme_id), ""));
            }
            tree = tree.check_write(*scheme_id, changes, &program.role_ladder).map_err(|conflicts| {
                schemes::scheme_error(SchemeError::Conflicts(conflicts), &format!("draft.scheme_rates[{i}].rates"))
            })?;
        }
    }
    Ok(Draft {
        agreements,
        plans: plans.into_iter().map(|(_, scope, plan)| (scope, plan)).collect(),
        scheme_rates: scheme_rates.into_iter().map(|(_, scheme_id, changes)| (scheme_id, changes)).collect(),
    })
}
