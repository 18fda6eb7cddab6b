//! Conversions between the store's rows and the protobuf messages, the
//! page cursors, and the small checks every handler shares.

// The API module's imports.
use super::*;

/// Keyset cursor of ListPartners: (created_at, id).
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct PartnerCursor {
    pub(super) t: DateTime<Utc>,
    pub(super) id: PartnerId,
}

/// Keyset cursor of ListDownline: (depth, created_at, id).
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct DownlineCursor {
    pub(super) d: i32,
    pub(super) t: DateTime<Utc>,
    pub(super) id: PartnerId,
}

/// Whether a stored row's request fingerprint matches this request's. Rows
/// made before fingerprints were stored have none and are taken as a match,
/// as they always were.
pub(super) fn same_body(stored: Option<&[u8]>, fingerprint: &[u8]) -> bool {
    stored.is_none_or(|stored| stored == fingerprint)
}

pub(super) fn tree_error(error: TreeError) -> Status {
    failed_precondition(error.reason(), error.to_string())
}

pub(super) fn stored_rounding_mode(name: &str) -> Result<types::RoundingMode, Status> {
    rounding_mode_from_str(name)
        .map(rounding_mode_to_proto)
        .ok_or_else(|| internal(format!("stored rounding mode {name:?} is unknown")))
}

pub(super) fn settings_version_to_proto(row: &SettingsVersionRow) -> Result<pb::ProgramSettingsVersion, Status> {
    Ok(pb::ProgramSettingsVersion {
        version: row.version,
        effective_from: Some(timestamp(row.effective_from)),
        rounding_mode: stored_rounding_mode(&row.rounding_mode)? as i32,
        override_depth_cap: row.override_depth_cap,
        compression_enabled: row.compression_enabled,
    })
}

/// A program as the API shows it, with its settings history (one more query).
/// True when `scope` may see partner `row`: a program-wide reader of its
/// program, or a partner token for it or one of its ancestors (seed 004: a
/// parent sees its downline's partner records, never their sales; issue 10
/// item 3).
pub(super) fn visible(scope: &accrue_kit::auth::Identity, row: &PartnerRow) -> bool {
    let mut partners = Vec::with_capacity(row.ancestor_ids.len() + 1);
    partners.push(row.id);
    partners.extend_from_slice(&row.ancestor_ids);
    scope.may_see(row.program_id, &partners)
}

pub(super) async fn program_reply(
    executor: impl sqlx::PgExecutor<'_>,
    row: &ProgramRow,
) -> Result<pb::Program, Status> {
    let history = store::settings_history(executor, row.id).await?;
    program_with_history(row, &history)
}

/// The reply for a program read with its settings history
/// ([`store::get_program_with_history`]); INTERNAL when it has no settings
/// version (every program is created with its first).
pub(super) fn program_with_history(row: &ProgramRow, history: &[SettingsVersionRow]) -> Result<pb::Program, Status> {
    if history.is_empty() {
        return Err(internal(format!("program {} has no settings version", row.id)));
    }
    program_to_proto(row, history)
}

pub(super) fn program_to_proto(row: &ProgramRow, history: &[SettingsVersionRow]) -> Result<pb::Program, Status> {
    let currency = Currency::from_code(&row.default_currency).map_err(internal)?;
    Ok(pb::Program {
        id: row.id.to_string(),
        display_name: row.display_name.clone(),
        default_currency: row.default_currency.clone(),
        rounding_mode: stored_rounding_mode(&row.rounding_mode)? as i32,
        override_depth_cap: row.override_depth_cap,
        compression_enabled: row.compression_enabled,
        auto_approve_cleared: row.auto_approve_cleared,
        require_second_approver: row.require_second_approver,
        minimum_payout: Some(amount_to_proto(currency, row.minimum_payout)),
        role_ladder: row.role_ladder.clone(),
        create_time: Some(timestamp(row.created_at)),
        non_transacting_roles: row.non_transacting_roles.clone(),
        max_tree_depth: row.max_tree_depth,
        update_time: Some(timestamp(row.updated_at)),
        settings_history: history.iter().map(settings_version_to_proto).collect::<Result<_, _>>()?,
    })
}

pub(super) fn status_of(row: &PartnerRow) -> Result<PartnerStatus, Status> {
    PartnerStatus::from_name(&row.status)
        .ok_or_else(|| internal(format!("stored partner status {:?} is unknown", row.status)))
}

/// The event of `kind` about the partner `row` (as it is after the change,
/// at `time`); it concerns that partner, so its own token sees it.
pub(super) fn partner_event(
    kind: &'static accrue_kit::events::EventType,
    row: &PartnerRow,
    time: DateTime<Utc>,
) -> Result<accrue_kit::events::NewEvent, Status> {
    let data = partner_to_proto(row)?;
    Ok(accrue_kit::events::NewEvent::new(
        kind,
        row.program_id,
        format!("partners/{}", row.id),
        Some(row.id),
        time,
        &data,
    ))
}

pub(super) fn partner_to_proto(row: &PartnerRow) -> Result<pb::Partner, Status> {
    Ok(pb::Partner {
        id: row.id.to_string(),
        program_id: row.program_id.to_string(),
        display_name: row.display_name.clone(),
        external_id: row.external_id.clone().unwrap_or_default(),
        status: status_to_proto(status_of(row)?) as i32,
        role: row.role.clone().unwrap_or_default(),
        parent_id: row.parent_id.map(|id| id.to_string()).unwrap_or_default(),
        ancestor_ids: row.ancestor_ids.iter().map(PartnerId::to_string).collect(),
        depth: row.depth,
        create_time: Some(timestamp(row.created_at)),
    })
}

pub(super) fn partner_ref(row: &PartnerRow) -> Result<pb::PartnerRef, Status> {
    Ok(pb::PartnerRef {
        id: row.id.to_string(),
        status: status_to_proto(status_of(row)?) as i32,
        role: row.role.clone().unwrap_or_default(),
    })
}

pub(super) fn parent_node(row: &PartnerRow) -> ParentNode<'_> {
    ParentNode { id: row.id, ancestor_ids: &row.ancestor_ids }
}
