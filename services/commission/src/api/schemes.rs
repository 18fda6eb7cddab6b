//! Scheme RPCs (seed 002; DESIGN §4 "Scheme margins"): CreateScheme,
//! GetScheme, SetSchemeRates, AssignScheme, GetSchemeChain. Programs, role
//! ladders and partners come from the hierarchy service; a hierarchy
//! NOT_FOUND is NOT_FOUND here, any other hierarchy failure UNAVAILABLE.

use accrue_kit::FieldViolations;
use accrue_kit::auth::Identity;
use accrue_kit::convert::{optional_uuid, parse_id, require_uuid, timestamp};
use accrue_kit::error::{already_exists, failed_precondition, not_found};
use accrue_proto::commission::v1 as pb;
use accrue_proto::hierarchy::v1 as hpb;
use accrue_types::{PartnerId, ProgramId, SchemeId};
use serde::Serialize;
use tonic::{Code, Status};

pub(super) mod codec;

use super::agreements::codec::MAX_CLEARANCE_DAYS;
use super::{CommissionApi, check_request_id};
use crate::domain::{RateChange, SchemeTree, valid_service_code};
use crate::scheme_store::{self, NewScheme, RatesWrite, SchemeError, StoredScheme};
use codec::MAX_DISPLAY_NAME_LEN;

/// Maps a hierarchy failure: NOT_FOUND stays NOT_FOUND (for `resource` `id`),
/// anything else is UNAVAILABLE (the hierarchy could not answer).
fn hierarchy_error(status: Status, resource: &str, id: impl std::fmt::Display) -> Status {
    if status.code() == Code::NotFound {
        return not_found(resource, id);
    }
    tracing::warn!(code = ?status.code(), message = status.message(), "hierarchy call failed");
    Status::unavailable(format!("hierarchy service unavailable: {}", status.message()))
}

/// The scheme `id` when the token names its program; NOT_FOUND exactly as a
/// missing scheme otherwise (issue 10 item 2).
async fn visible_scheme(api: &CommissionApi, scope: &Identity, id: SchemeId) -> Result<StoredScheme, Status> {
    scheme_store::get_scheme(&api.pool, id)
        .await?
        .filter(|stored| scope.programs.contains(stored.program_id))
        .ok_or_else(|| not_found("scheme", id))
}

/// The program (with its role ladder, highest first) from the hierarchy.
async fn get_program(api: &CommissionApi, id: ProgramId) -> Result<hpb::Program, Status> {
    let request = hpb::GetProgramRequest { id: id.to_string() };
    match api.hierarchy.clone().get_program(request).await {
        Ok(response) => Ok(response.into_inner()),
        Err(status) => Err(hierarchy_error(status, "program", id)),
    }
}

/// The partner (program, role, status) from the hierarchy, with its program id.
async fn get_partner(api: &CommissionApi, id: PartnerId) -> Result<(hpb::Partner, ProgramId), Status> {
    let request = hpb::GetPartnerRequest { id: id.to_string() };
    let partner = match api.hierarchy.clone().get_partner(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => return Err(hierarchy_error(status, "partner", id)),
    };
    let program_id = partner
        .program_id
        .parse::<ProgramId>()
        .map_err(|_| accrue_kit::internal(format!("hierarchy partner {id} has program id {:?}", partner.program_id)))?;
    Ok((partner, program_id))
}

/// Maps a store failure of a scheme write; rule conflicts become field
/// violations on `{prefix}[i].rate` (the written entries involved).
pub(super) fn scheme_error(error: SchemeError, prefix: &str) -> Status {
    match error {
        SchemeError::Store(error) => error.into(),
        SchemeError::NotFound(id) => not_found("scheme", id),
        SchemeError::RootExists { .. } => already_exists("ROOT_SCHEME_EXISTS", error.to_string()),
        SchemeError::OtherProgram { .. } => failed_precondition("SCHEME_IN_OTHER_PROGRAM", error.to_string()),
        SchemeError::Conflicts(conflicts) => {
            let mut violations = FieldViolations::new();
            for conflict in conflicts {
                let field = match conflict.index {
                    Some(index) => format!("{prefix}[{index}].rate"),
                    None => prefix.to_string(),
                };
                violations.add(field, conflict.message);
            }
            violations.into_status()
        }
    }
}

fn encode(stored: &StoredScheme) -> pb::Scheme {
    codec::encode_scheme(stored.program_id, &stored.scheme, stored.created_at, stored.updated_at)
}

/// Canonical rates of a request, compared when a `request_id` repeats.
fn rates_fingerprint(changes: &[RateChange]) -> Vec<(String, String, Option<String>)> {
    changes
        .iter()
        .map(|change| {
            (change.key.service_code.clone(), change.key.role.clone(), change.rate.map(|rate| rate.to_string()))
        })
        .collect()
}

/// Canonical form of a CreateScheme request.
#[derive(Serialize)]
struct CreateFingerprint<'a> {
    parent_id: Option<SchemeId>,
    display_name: &'a str,
    clearance_days: i32,
    rates: Vec<(String, String, Option<String>)>,
}

/// Canonical form of a SetSchemeRates request.
#[derive(Serialize)]
struct RatesFingerprint {
    scheme_id: SchemeId,
    rates: Vec<(String, String, Option<String>)>,
}

/// Creates a scheme (seed 002). Validation (INVALID_ARGUMENT, every violation
/// together): `program_id` a UUID; `scheme.display_name` required (trimmed,
/// ≤ 200 characters); `scheme.parent_id` empty (the root) or a UUID;
/// `scheme.clearance_days` 0..=3650 — 0 clears margin lines at `occurred_at`,
/// as for agreements (proto3 cannot tell an unset 0 from an explicit one);
/// `scheme.rates` as in SetSchemeRates, with roles on the program's ladder.
/// Then: program unknown to the hierarchy → NOT_FOUND; a second root of the
/// program → ALREADY_EXISTS `ROOT_SCHEME_EXISTS`; parent unknown → NOT_FOUND;
/// parent in another program → FAILED_PRECONDITION `SCHEME_IN_OTHER_PROGRAM`
/// (NOT_FOUND, as an unknown parent, when the token does not name that program);
/// initial rates breaking the tree's rules → INVALID_ARGUMENT on
/// `scheme.rates[i].rate`. A repeated `request_id` returns the stored scheme;
/// reusing it for another body is ALREADY_EXISTS `REQUEST_ID_REUSED`.
pub(super) async fn create_scheme(
    api: &CommissionApi,
    scope: &Identity,
    request: pb::CreateSchemeRequest,
) -> Result<pb::Scheme, Status> {
    let mut violations = FieldViolations::new();
    let program_id = require_uuid("program_id", &request.program_id, &mut violations);
    let request_id = check_request_id(&request.request_id, &mut violations);
    let Some(scheme) = request.scheme.as_ref() else {
        violations.add("scheme", "is required");
        return Err(violations.into_status());
    };
    let parent_id = optional_uuid("scheme.parent_id", &scheme.parent_id, &mut violations);
    let display_name = scheme.display_name.trim();
    if display_name.is_empty() {
        violations.add("scheme.display_name", "is required");
    } else if display_name.chars().count() > MAX_DISPLAY_NAME_LEN {
        violations.add("scheme.display_name", format!("must be at most {MAX_DISPLAY_NAME_LEN} characters"));
    }
    if !(0..=MAX_CLEARANCE_DAYS).contains(&scheme.clearance_days) {
        violations.add("scheme.clearance_days", format!("must be 0..{MAX_CLEARANCE_DAYS} (0 clears at once)"));
    }
    let changes = codec::decode_rate_changes("scheme.rates", &scheme.rates, &mut violations);
    violations.into_result()?;
    let (Some(program_id), Some(changes), Ok(clearance_days)) =
        (program_id, changes, u32::try_from(scheme.clearance_days))
    else {
        return Err(accrue_kit::internal("validated CreateScheme request lost a field"));
    };
    let program = get_program(api, program_id).await?;
    let mut violations = FieldViolations::new();
    codec::check_rate_roles("scheme.rates", &changes, &program.role_ladder, &mut violations);
    violations.into_result()?;
    let fingerprint = serde_json::to_string(&CreateFingerprint {
        parent_id,
        display_name,
        clearance_days: scheme.clearance_days,
        rates: rates_fingerprint(&changes),
    })
    .map_err(accrue_kit::internal)?;
    let stored = scheme_store::create_scheme(
        &api.pool,
        &NewScheme {
            program_id,
            parent_id,
            display_name,
            clearance_days,
            rates: &changes,
            ladder: &program.role_ladder,
            request_id: request_id.as_deref(),
            fingerprint: &fingerprint,
        },
    )
    .await
    .map_err(|error| match error {
        // A parent in a program the token does not name is answered exactly
        // as a missing one (issue 10 item 2).
        SchemeError::OtherProgram { scheme_id, scheme_program, .. } if !scope.programs.contains(scheme_program) => {
            not_found("scheme", scheme_id)
        }
        error => scheme_error(error, "scheme.rates"),
    })?;
    Ok(encode(&stored))
}

/// Returns one scheme with its own set rates by service_code then role;
/// NOT_FOUND when it does not exist.
pub(super) async fn get_scheme(
    api: &CommissionApi,
    scope: &Identity,
    request: pb::GetSchemeRequest,
) -> Result<pb::Scheme, Status> {
    let id = parse_id("id", &request.id)?;
    let stored = visible_scheme(api, scope, id).await?;
    Ok(encode(&stored))
}

/// Sets or unsets (empty `rate` = NULL, inherit) some of a scheme's rates
/// (seed 002). Field rules: `rates` non-empty (≤ 1000); each `service_code`
/// 1..=64 characters of `[A-Za-z0-9_.-]`; `role` on the program's role
/// ladder (`rates[i].role`); `rate` in [0, 1] with at most 10 decimals; one
/// (service_code, role) at most once. Unknown scheme → NOT_FOUND. The
/// changes are applied in memory to the program's whole tree, which must
/// then keep, for every scheme and every touched service code, child ≤
/// parent and lower role ≤ higher role on effective rates (a parent lowered
/// below a child's own value counts); otherwise INVALID_ARGUMENT on the
/// written `rates[i].rate` involved and nothing is written. Writes of one
/// program are serialized. A repeated `request_id` returns the scheme as it
/// is; reusing it for another body is ALREADY_EXISTS `REQUEST_ID_REUSED`.
pub(super) async fn set_scheme_rates(
    api: &CommissionApi,
    scope: &Identity,
    request: pb::SetSchemeRatesRequest,
) -> Result<pb::Scheme, Status> {
    let mut violations = FieldViolations::new();
    let scheme_id = require_uuid("scheme_id", &request.scheme_id, &mut violations);
    let request_id = check_request_id(&request.request_id, &mut violations);
    if request.rates.is_empty() {
        violations.add("rates", "at least one rate is required");
    }
    let changes = codec::decode_rate_changes("rates", &request.rates, &mut violations);
    violations.into_result()?;
    let (Some(scheme_id), Some(changes)) = (scheme_id, changes) else {
        return Err(accrue_kit::internal("validated SetSchemeRates request lost a field"));
    };
    let stored = visible_scheme(api, scope, scheme_id).await?;
    let program = get_program(api, stored.program_id).await?;
    let mut violations = FieldViolations::new();
    codec::check_rate_roles("rates", &changes, &program.role_ladder, &mut violations);
    violations.into_result()?;
    let fingerprint = serde_json::to_string(&RatesFingerprint { scheme_id, rates: rates_fingerprint(&changes) })
        .map_err(accrue_kit::internal)?;
    let stored = scheme_store::set_rates(
        &api.pool,
        &RatesWrite {
            scheme_id,
            program_id: stored.program_id,
            changes: &changes,
            ladder: &program.role_ladder,
            request_id: request_id.as_deref(),
            fingerprint: &fingerprint,
        },
    )
    .await
    .map_err(|error| scheme_error(error, "rates"))?;
    Ok(encode(&stored))
}

/// Assigns a partner to a scheme, replacing any earlier assignment (its
/// sales then use this scheme's effective rates). Partner unknown to the
/// hierarchy → NOT_FOUND; scheme unknown → NOT_FOUND; scheme of another
/// program than the partner's → FAILED_PRECONDITION `SCHEME_IN_OTHER_PROGRAM`.
pub(super) async fn assign_scheme(
    api: &CommissionApi,
    scope: &Identity,
    request: pb::AssignSchemeRequest,
) -> Result<pb::SchemeAssignment, Status> {
    let mut violations = FieldViolations::new();
    let partner_id = require_uuid("partner_id", &request.partner_id, &mut violations);
    let scheme_id = require_uuid("scheme_id", &request.scheme_id, &mut violations);
    violations.into_result()?;
    let (Some(partner_id), Some(scheme_id)) = (partner_id, scheme_id) else {
        return Err(accrue_kit::internal("validated AssignScheme request lost a field"));
    };
    let (_, program_id) = get_partner(api, partner_id).await?;
    if !scope.programs.contains(program_id) {
        return Err(not_found("partner", partner_id));
    }
    let stored = visible_scheme(api, scope, scheme_id).await?;
    if stored.program_id != program_id {
        return Err(failed_precondition(
            "SCHEME_IN_OTHER_PROGRAM",
            format!(
                "scheme {scheme_id} belongs to program {}, but partner {partner_id} is in program {program_id}",
                stored.program_id
            ),
        ));
    }
    let updated_at = scheme_store::assign(&api.pool, program_id, partner_id, scheme_id).await?;
    Ok(pb::SchemeAssignment {
        program_id: program_id.to_string(),
        partner_id: partner_id.to_string(),
        scheme_id: scheme_id.to_string(),
        update_time: Some(timestamp(updated_at)),
    })
}

/// Every scheme from a starting one up to the root (seed 002 "Commission
/// Chain View"). Exactly one of `partner_id` (its assigned scheme, else the
/// program's root; NOT_FOUND when the partner is unknown or its program has
/// no scheme) and `scheme_id` (NOT_FOUND when unknown); INVALID_ARGUMENT
/// otherwise. Each link carries the scheme with its own rates and its
/// effective rates for every service code configured in the program (some
/// scheme sets a rate for it) — or only `service_code` when given, even if
/// unconfigured (then every rate is "0") — times every role of the ladder,
/// by service_code then ladder order.
pub(super) async fn get_scheme_chain(
    api: &CommissionApi,
    scope: &Identity,
    request: pb::GetSchemeChainRequest,
) -> Result<pb::GetSchemeChainResponse, Status> {
    let mut violations = FieldViolations::new();
    let partner_id = optional_uuid("partner_id", &request.partner_id, &mut violations);
    let scheme_id = optional_uuid("scheme_id", &request.scheme_id, &mut violations);
    if request.partner_id.is_empty() == request.scheme_id.is_empty() {
        violations.add("partner_id", "set exactly one of partner_id and scheme_id");
    }
    if !request.service_code.is_empty() && !valid_service_code(&request.service_code) {
        violations.add("service_code", format!("{:?} is not a valid service code", request.service_code));
    }
    violations.into_result()?;
    let (program_id, partner_role, start) = match (partner_id, scheme_id) {
        (Some(partner_id), None) => {
            let (partner, program_id) = get_partner(api, partner_id).await?;
            if !scope.programs.contains(program_id) {
                return Err(not_found("partner", partner_id));
            }
            (program_id, partner.role, scheme_store::assignment(&api.pool, partner_id).await?)
        }
        (None, Some(scheme_id)) => {
            let stored = visible_scheme(api, scope, scheme_id).await?;
            (stored.program_id, String::new(), Some(scheme_id))
        }
        _ => return Err(accrue_kit::internal("validated GetSchemeChain request lost its subject")),
    };
    let program = get_program(api, program_id).await?;
    let stored = scheme_store::program_schemes(&api.pool, program_id).await?;
    let tree = SchemeTree::new(stored.iter().map(|stored| stored.scheme.clone()));
    let start = match start.filter(|id| tree.get(*id).is_some()).or_else(|| tree.root().map(|root| root.id)) {
        Some(start) => start,
        None => {
            let partner = partner_id.map(|id| id.to_string()).unwrap_or_default();
            return Err(not_found(
                "scheme",
                format_args!("for partner {partner} (its program {program_id} has no schemes)"),
            ));
        }
    };
    let services: Vec<String> = if request.service_code.is_empty() {
        tree.service_codes().into_iter().collect()
    } else {
        vec![request.service_code.clone()]
    };
    let mut links = Vec::new();
    for scheme in tree.chain(start) {
        let Some(stored) = stored.iter().find(|stored| stored.scheme.id == scheme.id) else {
            return Err(accrue_kit::internal(format!("scheme {} vanished from its program's tree", scheme.id)));
        };
        let mut effective_rates = Vec::with_capacity(services.len() * program.role_ladder.len());
        for service_code in &services {
            for role in &program.role_ladder {
                let effective = tree.effective(scheme.id, service_code, role);
                effective_rates.push(pb::EffectiveRate {
                    service_code: service_code.clone(),
                    role: role.clone(),
                    rate: effective.rate.normalize().to_string(),
                    source_scheme_id: effective.source.map(|id| id.to_string()).unwrap_or_default(),
                });
            }
        }
        links.push(pb::SchemeChainLink { scheme: Some(encode(stored)), effective_rates });
    }
    Ok(pb::GetSchemeChainResponse { schemes: links, partner_role, role_ladder: program.role_ladder })
}
