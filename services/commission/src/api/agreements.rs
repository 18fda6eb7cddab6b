//! CreateAgreement and ListAgreementVersions (seed 003 versioned agreements).

pub(super) mod codec;

use accrue_kit::FieldViolations;
use accrue_kit::convert::{optional_uuid, require_uuid, timestamp};
use accrue_proto::commission::v1 as pb;
use accrue_types::PartnerId;
use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use tonic::Status;

use super::{CommissionApi, check_request_id, get_uplines};
use crate::domain::AgreementRules;
use crate::store::{self, NewVersion, StoredVersion};

/// Canonical form of a CreateAgreement request, compared when a `request_id` repeats.
#[derive(Serialize)]
struct AgreementFingerprint<'a> {
    partner_id: Option<PartnerId>,
    effective_from: Option<DateTime<Utc>>,
    rules: &'a AgreementRules,
}

/// Keyset cursor of ListAgreementVersions (the page token binds it to its scope).
#[derive(Serialize, Deserialize)]
struct VersionCursor {
    after_version: i32,
}

pub(crate) fn encode_version(stored: &StoredVersion) -> pb::AgreementVersion {
    let version = &stored.version;
    pb::AgreementVersion {
        id: version.id.to_string(),
        agreement_id: version.agreement_id.to_string(),
        program_id: stored.program_id.to_string(),
        partner_id: version.partner_id.map(|id| id.to_string()).unwrap_or_default(),
        version: version.version,
        effective_from: Some(timestamp(version.effective_from)),
        rules: Some(codec::encode_rules(&version.rules)),
        create_time: Some(timestamp(stored.created_at)),
    }
}

/// Validates the rules (every violation reported together, INVALID_ARGUMENT)
/// and inserts the next version of the scope's agreement. NOT_FOUND when the
/// program does not exist or the partner is not one of its own. `effective_from`
/// unset = now. Repeating a `request_id` returns the stored version; reusing
/// it for a different request is ALREADY_EXISTS (`REQUEST_ID_REUSED`).
#[tracing::instrument(skip_all, fields(program_id = %request.program_id))]
pub(super) async fn create_agreement(
    api: &CommissionApi,
    request: pb::CreateAgreementRequest,
) -> Result<pb::AgreementVersion, Status> {
    let mut violations = FieldViolations::new();
    let program_id = require_uuid("program_id", &request.program_id, &mut violations);
    let partner_id = optional_uuid("partner_id", &request.partner_id, &mut violations);
    let effective_from = codec::decode_effective_from(request.effective_from.as_ref(), &mut violations);
    let request_id = check_request_id(&request.request_id, &mut violations);
    let rules = codec::decode_rules(request.rules.as_ref(), &mut violations);
    violations.into_result()?;
    let (Some(program_id), Some(rules)) = (program_id, rules) else {
        return Err(accrue_kit::internal("validated CreateAgreement request lost a field"));
    };
    // The program must exist and a partner agreement's partner be one of
    // its own (another program's partner is answered as an unknown one).
    let partners: Vec<(PartnerId, String)> = partner_id.map(|id| (id, "partner_id".to_string())).into_iter().collect();
    get_uplines(api, program_id, &partners).await?;
    let fingerprint = serde_json::to_string(&AgreementFingerprint { partner_id, effective_from, rules: &rules })
        .map_err(accrue_kit::internal)?;
    let effective_from = effective_from.unwrap_or_else(Utc::now).trunc_subsecs(6);
    let stored = store::create_agreement_version(
        &api.pool,
        &NewVersion {
            program_id,
            partner_id,
            effective_from,
            rules: &rules,
            request_id: request_id.as_deref(),
            fingerprint: &fingerprint,
        },
    )
    .await?;
    Ok(encode_version(&stored))
}

/// Lists a scope's versions oldest first (by version number); a scope
/// without an agreement lists nothing.
#[tracing::instrument(skip_all, fields(program_id = %request.program_id))]
pub(super) async fn list_agreement_versions(
    api: &CommissionApi,
    request: pb::ListAgreementVersionsRequest,
) -> Result<pb::ListAgreementVersionsResponse, Status> {
    let mut violations = FieldViolations::new();
    let program_id = require_uuid("program_id", &request.program_id, &mut violations);
    let partner_id = optional_uuid("partner_id", &request.partner_id, &mut violations);
    if request.page_size < 0 {
        violations.add("page_size", "must not be negative");
    }
    violations.into_result()?;
    let Some(program_id) = program_id else {
        return Err(accrue_kit::internal("validated ListAgreementVersions request lost program_id"));
    };
    let page_size = accrue_kit::page::page_size(request.page_size)?;
    let query = format!("versions|{program_id}|{partner_id:?}");
    let after = accrue_kit::page::decode::<VersionCursor>(&query, &request.page_token)?
        .map_or(0, |cursor| cursor.after_version);
    let mut versions = store::list_versions(&api.pool, program_id, partner_id, after, page_size + 1).await?;
    let next_page_token = if versions.len() as i64 > page_size {
        versions.truncate(page_size as usize);
        versions
            .last()
            .map(|last| accrue_kit::page::encode(&query, &VersionCursor { after_version: last.version.version }))
            .unwrap_or_default()
    } else {
        String::new()
    };
    Ok(pb::ListAgreementVersionsResponse { versions: versions.iter().map(encode_version).collect(), next_page_token })
}
