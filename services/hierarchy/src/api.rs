//! tonic implementation of `HierarchyService`: decode and validate, call the
//! domain rules and the store, encode.

use std::collections::HashMap;

use accrue_kit::FieldViolations;
use accrue_kit::auth::Programs;
use accrue_kit::client::AuthChannel;
use accrue_kit::convert::{amount_to_proto, optional_uuid, parse_id, require_timestamp, require_uuid, timestamp};
use accrue_kit::error::{already_exists, failed_precondition, internal, invalid_field, not_found};
use accrue_kit::events::catalogue as events;
use accrue_kit::{idempotency, page};
use accrue_money::Currency;
use accrue_proto::hierarchy::v1 as pb;
use accrue_proto::hierarchy::v1::hierarchy_service_server::HierarchyService;
use accrue_proto::ledger::v1::ledger_service_client::LedgerServiceClient;
use accrue_proto::types::v1 as types;
use accrue_types::{PartnerId, ProgramId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::domain::program::{check_non_transacting_roles, validate_program_update};
use crate::domain::program::{rounding_mode_from_str, rounding_mode_to_proto};
use crate::domain::tree::{self, ParentNode};
use crate::domain::{
    PartnerStatus, TreeError, check_role_on_ladder, check_status_change, status_from_proto, status_to_proto,
    validate_new_partner, validate_new_program,
};
use crate::store::{self, PartnerRow, ProgramRow, SettingsVersionRow};

/// Most partners one GetUplines call may ask for.
pub const MAX_UPLINE_BATCH: usize = 1000;
/// Longest status-change reason kept (characters).
pub const MAX_REASON_CHARS: usize = 1000;

mod downline;

/// The `HierarchyService` implementation.
#[derive(Debug, Clone)]
pub struct HierarchyApi {
    pool: PgPool,
    /// The ledger, for the downline roster's aggregates (issue 14 item 4);
    /// without it ListDownline answers the roster with zero aggregates.
    ledger: Option<LedgerServiceClient<AuthChannel>>,
}

impl HierarchyApi {
    /// A new API over the service's pool, without a ledger.
    pub fn new(pool: PgPool) -> Self {
        HierarchyApi { pool, ledger: None }
    }

    /// This API asking `ledger` for the downline roster's funded sales and
    /// overrides.
    pub fn with_ledger(self, ledger: LedgerServiceClient<AuthChannel>) -> Self {
        HierarchyApi { ledger: Some(ledger), ..self }
    }
}

/// Keyset cursor of ListPartners: (created_at, id).
#[derive(Debug, Serialize, Deserialize)]
struct PartnerCursor {
    t: DateTime<Utc>,
    id: PartnerId,
}

/// Keyset cursor of ListDownline: (depth, created_at, id).
#[derive(Debug, Serialize, Deserialize)]
struct DownlineCursor {
    d: i32,
    t: DateTime<Utc>,
    id: PartnerId,
}

/// Whether a stored row's request fingerprint matches this request's. Rows
/// made before fingerprints were stored have none and are taken as a match,
/// as they always were.
fn same_body(stored: Option<&[u8]>, fingerprint: &[u8]) -> bool {
    stored.is_none_or(|stored| stored == fingerprint)
}

fn tree_error(error: TreeError) -> Status {
    failed_precondition(error.reason(), error.to_string())
}

fn stored_rounding_mode(name: &str) -> Result<types::RoundingMode, Status> {
    rounding_mode_from_str(name)
        .map(rounding_mode_to_proto)
        .ok_or_else(|| internal(format!("stored rounding mode {name:?} is unknown")))
}

fn settings_version_to_proto(row: &SettingsVersionRow) -> Result<pb::ProgramSettingsVersion, Status> {
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
fn visible(scope: &accrue_kit::auth::Identity, row: &PartnerRow) -> bool {
    let mut partners = Vec::with_capacity(row.ancestor_ids.len() + 1);
    partners.push(row.id);
    partners.extend_from_slice(&row.ancestor_ids);
    scope.may_see(row.program_id, &partners)
}

async fn program_reply(executor: impl sqlx::PgExecutor<'_>, row: &ProgramRow) -> Result<pb::Program, Status> {
    let history = store::settings_history(executor, row.id).await?;
    if history.is_empty() {
        return Err(internal(format!("program {} has no settings version", row.id)));
    }
    program_to_proto(row, &history)
}

fn program_to_proto(row: &ProgramRow, history: &[SettingsVersionRow]) -> Result<pb::Program, Status> {
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

fn status_of(row: &PartnerRow) -> Result<PartnerStatus, Status> {
    PartnerStatus::from_name(&row.status)
        .ok_or_else(|| internal(format!("stored partner status {:?} is unknown", row.status)))
}

/// The event of `kind` about the partner `row` (as it is after the change,
/// at `time`); it concerns that partner, so its own token sees it.
fn partner_event(
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

fn partner_to_proto(row: &PartnerRow) -> Result<pb::Partner, Status> {
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

fn partner_ref(row: &PartnerRow) -> Result<pb::PartnerRef, Status> {
    Ok(pb::PartnerRef {
        id: row.id.to_string(),
        status: status_to_proto(status_of(row)?) as i32,
        role: row.role.clone().unwrap_or_default(),
    })
}

fn parent_node(row: &PartnerRow) -> ParentNode<'_> {
    ParentNode { id: row.id, ancestor_ids: &row.ancestor_ids }
}

#[tonic::async_trait]
impl HierarchyService for HierarchyApi {
    async fn create_program(
        &self,
        request: Request<pb::CreateProgramRequest>,
    ) -> Result<Response<pb::Program>, Status> {
        let spec = validate_new_program(request.get_ref())?;
        if accrue_kit::auth::caller(&request)?.programs != Programs::All {
            return Err(Status::permission_denied("creating a program needs a token for every program (\"*\")"));
        }
        let fingerprint = idempotency::fingerprint_message(&pb::CreateProgramRequest {
            request_id: String::new(),
            ..request.into_inner()
        });
        let same = |row: &ProgramRow| same_body(row.request_hash.as_deref(), &fingerprint);
        if let Some(request_id) = spec.request_id.as_deref()
            && let Some(existing) = store::program_by_request_id(&self.pool, request_id).await?
        {
            return Ok(Response::new(
                program_reply(&self.pool, &idempotency::replay(request_id, existing, same)?).await?,
            ));
        }
        let row = match store::insert_program(&self.pool, ProgramId::new_v7(), &spec, &fingerprint).await? {
            Some(row) => row,
            // A concurrent request with the same key won the insert.
            None => {
                let request_id = spec.request_id.as_deref().unwrap_or_default();
                let winner = store::program_by_request_id(&self.pool, request_id)
                    .await?
                    .ok_or_else(|| internal("program insert conflicted but no program holds the request id"))?;
                idempotency::replay(request_id, winner, same)?
            }
        };
        tracing::info!(program_id = %row.id, "program created");
        Ok(Response::new(program_reply(&self.pool, &row).await?))
    }

    async fn get_program(&self, request: Request<pb::GetProgramRequest>) -> Result<Response<pb::Program>, Status> {
        let id = parse_id("id", &request.get_ref().id)?;
        accrue_kit::auth::caller(&request)?.require_program(id)?;
        let row = store::get_program(&self.pool, id).await?.ok_or_else(|| not_found("program", id))?;
        Ok(Response::new(program_reply(&self.pool, &row).await?))
    }

    async fn update_program(
        &self,
        request: Request<pb::UpdateProgramRequest>,
    ) -> Result<Response<pb::Program>, Status> {
        let update = validate_program_update(request.get_ref())?;
        accrue_kit::auth::caller(&request)?.require_program(update.id)?;
        let fingerprint = idempotency::fingerprint_message(&pb::UpdateProgramRequest {
            request_id: String::new(),
            ..request.into_inner()
        });
        let mut tx = accrue_kit::db::begin(&self.pool).await?;
        let current = store::lock_program(&mut tx, update.id).await?.ok_or_else(|| not_found("program", update.id))?;
        if let Some(request_id) = update.request_id.as_deref()
            && let Some(hash) = store::program_update_hash(&mut *tx, update.id, request_id).await?
        {
            let current = idempotency::replay(request_id, current, |_| hash == fingerprint)?;
            return Ok(Response::new(program_reply(&mut *tx, &current).await?));
        }
        if let Some(roles) = &update.non_transacting_roles {
            check_non_transacting_roles(roles, &current.role_ladder)?;
        }
        if let Some(depth) = update.max_tree_depth {
            // Partners cannot be placed while the tree lock is held exclusively,
            // so the deepest depth read here stays true until commit.
            store::lock_program_tree(&mut tx, update.id, true).await?;
            let deepest = store::deepest_partner(&mut *tx, update.id).await?;
            if deepest > depth {
                return Err(failed_precondition(
                    "TREE_TOO_DEEP",
                    format!("max_tree_depth {depth} is below the program's deepest partner, at depth {deepest}"),
                ));
            }
        }
        let mut next = current.clone();
        if let Some(name) = &update.display_name {
            next.display_name.clone_from(name);
        }
        if let Some(mode) = update.rounding_mode {
            next.rounding_mode = mode.as_str().to_string();
        }
        if let Some(cap) = update.override_depth_cap {
            next.override_depth_cap = cap;
        }
        if let Some(depth) = update.max_tree_depth {
            next.max_tree_depth = depth;
        }
        if let Some(enabled) = update.compression_enabled {
            next.compression_enabled = enabled;
        }
        if let Some(roles) = &update.non_transacting_roles {
            next.non_transacting_roles.clone_from(roles);
        }
        if let Some(enabled) = update.auto_approve_cleared {
            next.auto_approve_cleared = enabled;
        }
        if let Some(required) = update.require_second_approver {
            next.require_second_approver = required;
        }
        let history = store::settings_history(&mut *tx, update.id).await?;
        let latest =
            history.last().ok_or_else(|| internal(format!("program {} has no settings version", update.id)))?;
        // A version starts only when a settlement setting really changes, so
        // that re-sending the same settings leaves sales' history alone.
        let settlement_changed = latest.rounding_mode != next.rounding_mode
            || latest.override_depth_cap != next.override_depth_cap
            || latest.compression_enabled != next.compression_enabled;
        let new_version = settlement_changed.then(|| latest.version.saturating_add(1));
        let key = update.request_id.as_deref().map(|request_id| (request_id, fingerprint.as_slice()));
        let row = store::update_program(&mut tx, &next, new_version, key).await?;
        let reply = program_reply(&mut *tx, &row).await?;
        accrue_kit::db::commit(tx).await?;
        tracing::info!(program_id = %row.id, ?new_version, "program updated");
        Ok(Response::new(reply))
    }

    async fn create_partner(
        &self,
        request: Request<pb::CreatePartnerRequest>,
    ) -> Result<Response<pb::Partner>, Status> {
        let new = validate_new_partner(request.get_ref())?;
        let scope = accrue_kit::auth::caller(&request)?.clone();
        scope.require_program(new.program_id)?;
        let fingerprint = idempotency::fingerprint_message(&pb::CreatePartnerRequest {
            request_id: String::new(),
            ..request.into_inner()
        });
        let same = |row: &PartnerRow| same_body(row.request_hash.as_deref(), &fingerprint);
        let mut tx = accrue_kit::db::begin(&self.pool).await?;
        store::lock_program_tree(&mut tx, new.program_id, false).await?;
        let program =
            store::get_program(&mut *tx, new.program_id).await?.ok_or_else(|| not_found("program", new.program_id))?;
        if let Some(request_id) = new.request_id.as_deref()
            && let Some(existing) = store::partner_by_request_id(&mut *tx, program.id, request_id).await?
        {
            return Ok(Response::new(partner_to_proto(&idempotency::replay(request_id, existing, same)?)?));
        }
        let mut violations = FieldViolations::new();
        check_role_on_ladder("partner.role", new.role.as_deref(), &program.role_ladder, &mut violations);
        violations.into_result()?;

        let parent = match new.parent_id {
            None => None,
            Some(parent_id) => {
                // A parent in a program the token does not name is answered
                // exactly as a missing one.
                let parent = store::get_partner(&mut *tx, parent_id)
                    .await?
                    .filter(|row| scope.programs.contains(row.program_id))
                    .ok_or_else(|| not_found("partner", parent_id))?;
                if parent.program_id != program.id {
                    return Err(failed_precondition(
                        "PROGRAM_MISMATCH",
                        format!("parent {parent_id} belongs to another program than {}", program.id),
                    ));
                }
                Some(parent)
            }
        };
        let placement =
            tree::place_new(parent.as_ref().map(parent_node), program.max_tree_depth).map_err(tree_error)?;
        if let Some(parent) = &parent {
            tree::check_role_rank(&program.role_ladder, parent.role.as_deref(), new.role.as_deref())
                .map_err(tree_error)?;
        }
        let insert = store::PartnerInsert {
            id: PartnerId::new_v7(),
            program_id: program.id,
            display_name: &new.display_name,
            external_id: new.external_id.as_deref(),
            role: new.role.as_deref(),
            parent_id: new.parent_id,
            ancestor_ids: &placement.ancestor_ids,
            depth: placement.depth,
            request_id: new.request_id.as_deref(),
            request_hash: &fingerprint,
        };
        let row = match store::insert_partner(&mut *tx, &insert).await {
            Ok(Some(row)) => {
                let event = partner_event(&events::PARTNER_CREATED, &row, row.created_at)?;
                accrue_kit::events::insert(&mut tx, &[event]).await?;
                row
            }
            Ok(None) => {
                let request_id = new.request_id.as_deref().unwrap_or_default();
                let winner = store::partner_by_request_id(&mut *tx, program.id, request_id)
                    .await?
                    .ok_or_else(|| internal("partner insert conflicted but no partner holds the request id"))?;
                idempotency::replay(request_id, winner, same)?
            }
            Err(error) if error.constraint() == Some(store::EXTERNAL_ID_CONSTRAINT) => {
                // A concurrent retry of this very request can trip the
                // external_id index before the request_id one: the winner's
                // row is then this request's answer.
                drop(tx);
                if let Some(request_id) = new.request_id.as_deref()
                    && let Some(existing) = store::partner_by_request_id(&self.pool, program.id, request_id).await?
                {
                    return Ok(Response::new(partner_to_proto(&idempotency::replay(request_id, existing, same)?)?));
                }
                return Err(already_exists(
                    "EXTERNAL_ID_TAKEN",
                    format!(
                        "program {} already has a partner with external_id {:?}",
                        program.id,
                        new.external_id.unwrap_or_default()
                    ),
                ));
            }
            Err(error) => return Err(error.into()),
        };
        accrue_kit::db::commit(tx).await?;
        Ok(Response::new(partner_to_proto(&row)?))
    }

    async fn get_partner(&self, request: Request<pb::GetPartnerRequest>) -> Result<Response<pb::Partner>, Status> {
        let id = parse_id("id", &request.get_ref().id)?;
        // Another program's partner, and for a partner token any partner
        // outside its own subtree, is answered exactly as a missing one.
        let scope = accrue_kit::auth::caller(&request)?;
        let row = store::get_partner(&self.pool, id)
            .await?
            .filter(|row| visible(scope, row))
            .ok_or_else(|| not_found("partner", id))?;
        Ok(Response::new(partner_to_proto(&row)?))
    }

    async fn list_partners(
        &self,
        request: Request<pb::ListPartnersRequest>,
    ) -> Result<Response<pb::ListPartnersResponse>, Status> {
        let scope = accrue_kit::auth::caller(&request)?.clone();
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let program_id = require_uuid("program_id", &request.program_id, &mut violations);
        let status = match request.status {
            0 => None,
            value => {
                let status = status_from_proto(value);
                if status.is_none() {
                    violations.add("status", format!("unknown partner status {value}"));
                }
                status
            }
        };
        violations.into_result()?;
        let program_id = program_id.ok_or_else(|| invalid_field("program_id", "is required"))?;
        scope.require_program(program_id)?;
        let limit = page::page_size(request.page_size)?;
        let query = format!("partners|{program_id}|{}", request.status);
        let after = page::decode::<PartnerCursor>(&query, &request.page_token)?.map(|cursor| (cursor.t, cursor.id));
        if store::get_program(&self.pool, program_id).await?.is_none() {
            return Err(not_found("program", program_id));
        }
        let mut rows =
            store::list_partners(&self.pool, program_id, status.map(PartnerStatus::as_str), after, limit + 1).await?;
        let next_page_token =
            page::next_page(&mut rows, limit, &query, |row| PartnerCursor { t: row.created_at, id: row.id })?;
        let partners = rows.iter().map(partner_to_proto).collect::<Result<Vec<_>, _>>()?;
        Ok(Response::new(pb::ListPartnersResponse { partners, next_page_token }))
    }

    async fn update_partner_status(
        &self,
        request: Request<pb::UpdatePartnerStatusRequest>,
    ) -> Result<Response<pb::Partner>, Status> {
        let scope = accrue_kit::auth::caller(&request)?.clone();
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let id = require_uuid("id", &request.id, &mut violations);
        let to = status_from_proto(request.status);
        if to.is_none() {
            violations.add("status", "must be ACTIVE, SUSPENDED or TERMINATED");
        }
        let reason = request.reason.trim();
        if reason.chars().count() > MAX_REASON_CHARS {
            violations.add("reason", format!("must be at most {MAX_REASON_CHARS} characters"));
        }
        violations.into_result()?;
        let (Some(id), Some(to)) = (id, to) else {
            return Err(invalid_field("id", "is required"));
        };
        let mut tx = accrue_kit::db::begin(&self.pool).await?;
        let current = store::lock_partner(&mut tx, id)
            .await?
            .filter(|row| scope.programs.contains(row.program_id))
            .ok_or_else(|| not_found("partner", id))?;
        let from = status_of(&current)?;
        let changed = check_status_change(from, to)
            .map_err(|error| failed_precondition("PARTNER_TERMINATED", error.to_string()))?;
        if !changed {
            return Ok(Response::new(partner_to_proto(&current)?));
        }
        let row = store::update_status(&mut tx, id, from.as_str(), to.as_str(), reason).await?;
        let event = partner_event(&events::PARTNER_STATUS_CHANGED, &row, Utc::now())?;
        accrue_kit::events::insert(&mut tx, &[event]).await?;
        accrue_kit::db::commit(tx).await?;
        tracing::info!(partner_id = %id, from = from.as_str(), to = to.as_str(), "partner status changed");
        Ok(Response::new(partner_to_proto(&row)?))
    }

    async fn set_parent(
        &self,
        request: Request<pb::SetParentRequest>,
    ) -> Result<Response<pb::SetParentResponse>, Status> {
        let scope = accrue_kit::auth::caller(&request)?.clone();
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let id = require_uuid("id", &request.id, &mut violations);
        let parent_id = optional_uuid("parent_id", &request.parent_id, &mut violations);
        violations.into_result()?;
        let id = id.ok_or_else(|| invalid_field("id", "is required"))?;

        let mut tx = accrue_kit::db::begin(&self.pool).await?;
        let program_id = store::get_partner(&mut *tx, id)
            .await?
            .filter(|row| scope.programs.contains(row.program_id))
            .ok_or_else(|| not_found("partner", id))?
            .program_id;
        // Serialize every move in the program: paths read below cannot change
        // until this transaction ends.
        store::lock_program_tree(&mut tx, program_id, true).await?;
        let partner = store::lock_partner(&mut tx, id).await?.ok_or_else(|| not_found("partner", id))?;
        let program = store::get_program(&mut *tx, program_id)
            .await?
            .ok_or_else(|| internal(format!("partner {id} has no program {program_id}")))?;
        let new_parent = match parent_id {
            None => None,
            Some(parent_id) => {
                // As in CreatePartner: a parent the token cannot see is missing.
                let parent = store::get_partner(&mut *tx, parent_id)
                    .await?
                    .filter(|row| scope.programs.contains(row.program_id))
                    .ok_or_else(|| not_found("partner", parent_id))?;
                if parent.program_id != program.id {
                    return Err(failed_precondition(
                        "PROGRAM_MISMATCH",
                        format!("parent {parent_id} belongs to another program than partner {id}"),
                    ));
                }
                Some(parent)
            }
        };
        if parent_id == partner.parent_id {
            // Already there: nothing to rewrite.
            return Ok(Response::new(pb::SetParentResponse {
                partner: Some(partner_to_proto(&partner)?),
                rewritten_count: 0,
            }));
        }
        let (height, _descendants) = store::subtree_stats(&mut *tx, id, partner.depth).await?;
        let placement = tree::plan_move(id, new_parent.as_ref().map(parent_node), height, program.max_tree_depth)
            .map_err(tree_error)?;
        if let Some(parent) = &new_parent {
            tree::check_role_rank(&program.role_ladder, parent.role.as_deref(), partner.role.as_deref())
                .map_err(tree_error)?;
        }
        let moved = store::set_placement(&mut *tx, id, parent_id, &placement.ancestor_ids, placement.depth).await?;
        let mut rewritten: i64 = 1;
        let mut after = PartnerId::from_uuid(Uuid::nil());
        loop {
            let batch = store::rewrite_descendants_batch(
                &mut *tx,
                id,
                &placement.ancestor_ids,
                placement.depth,
                after,
                store::REWRITE_BATCH,
            )
            .await?;
            rewritten += i64::try_from(batch.len()).unwrap_or(i64::MAX);
            match batch.last() {
                Some(last) if i64::try_from(batch.len()).unwrap_or(i64::MAX) >= store::REWRITE_BATCH => after = *last,
                _ => break,
            }
        }
        accrue_kit::db::commit(tx).await?;
        tracing::info!(partner_id = %id, parent_id = ?parent_id, rewritten, "partner moved");
        Ok(Response::new(pb::SetParentResponse {
            partner: Some(partner_to_proto(&moved)?),
            rewritten_count: rewritten,
        }))
    }

    async fn get_uplines(
        &self,
        request: Request<pb::GetUplinesRequest>,
    ) -> Result<Response<pb::GetUplinesResponse>, Status> {
        let scope = accrue_kit::auth::caller(&request)?.clone();
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let program_id = require_uuid("program_id", &request.program_id, &mut violations);
        if request.partner_ids.len() > MAX_UPLINE_BATCH {
            violations.add("partner_ids", format!("at most {MAX_UPLINE_BATCH} partners per call"));
        }
        let mut ids = Vec::with_capacity(request.partner_ids.len());
        for (index, value) in request.partner_ids.iter().enumerate() {
            if let Some(id) = require_uuid(&format!("partner_ids[{index}]"), value, &mut violations) {
                ids.push(id);
            }
        }
        violations.into_result()?;
        let program_id = program_id.ok_or_else(|| invalid_field("program_id", "is required"))?;
        scope.require_program(program_id)?;
        let program =
            store::get_program(&self.pool, program_id).await?.ok_or_else(|| not_found("program", program_id))?;
        let mut unique = ids.clone();
        unique.sort_unstable();
        unique.dedup();
        let rows =
            if unique.is_empty() { Vec::new() } else { store::partners_with_ancestors(&self.pool, &unique).await? };
        let by_id: HashMap<PartnerId, &PartnerRow> = rows.iter().map(|row| (row.id, row)).collect();
        let mut uplines = Vec::with_capacity(ids.len());
        for id in ids {
            let row =
                by_id.get(&id).filter(|row| row.program_id == program_id).ok_or_else(|| not_found("partner", id))?;
            let ancestors = row
                .ancestor_ids
                .iter()
                .map(|ancestor| {
                    by_id
                        .get(ancestor)
                        .ok_or_else(|| internal(format!("ancestor {ancestor} of partner {id} is missing")))
                        .and_then(|ancestor| partner_ref(ancestor))
                })
                .collect::<Result<Vec<_>, _>>()?;
            uplines.push(pb::Upline { partner: Some(partner_ref(row)?), ancestors });
        }
        Ok(Response::new(pb::GetUplinesResponse { program: Some(program_reply(&self.pool, &program).await?), uplines }))
    }

    /// CountActiveDirectPartners (issue 16 item 3): per (partner, time) the
    /// partner's direct sub-partners ACTIVE at that time, as of the status
    /// history ([`store::count_active_children`]; the parent edge is the
    /// current one). INVALID_ARGUMENT with field violations for a malformed
    /// id or time or more than [`MAX_UPLINE_BATCH`] queries; NOT_FOUND for an
    /// unknown program or a partner not in it.
    async fn count_active_direct_partners(
        &self,
        request: Request<pb::CountActiveDirectPartnersRequest>,
    ) -> Result<Response<pb::CountActiveDirectPartnersResponse>, Status> {
        let scope = accrue_kit::auth::caller(&request)?.clone();
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let program_id = require_uuid("program_id", &request.program_id, &mut violations);
        if request.queries.len() > MAX_UPLINE_BATCH {
            violations.add("queries", format!("at most {MAX_UPLINE_BATCH} queries per call"));
        }
        let mut parents = Vec::with_capacity(request.queries.len());
        let mut times = Vec::with_capacity(request.queries.len());
        for (index, query) in request.queries.iter().enumerate() {
            let id = require_uuid(&format!("queries[{index}].partner_id"), &query.partner_id, &mut violations);
            let at = require_timestamp(&format!("queries[{index}].as_of"), query.as_of.as_ref(), &mut violations);
            if let (Some(id), Some(at)) = (id, at) {
                parents.push(id);
                times.push(at);
            }
        }
        violations.into_result()?;
        let program_id = program_id.ok_or_else(|| invalid_field("program_id", "is required"))?;
        scope.require_program(program_id)?;
        store::get_program(&self.pool, program_id).await?.ok_or_else(|| not_found("program", program_id))?;
        let mut unique = parents.clone();
        unique.sort_unstable();
        unique.dedup();
        let known = store::partners_in_program(&self.pool, program_id, &unique).await?;
        if let Some(missing) = unique.iter().find(|id| !known.contains(id)) {
            return Err(not_found("partner", *missing));
        }
        let counts = store::count_active_children(&self.pool, program_id, &parents, &times).await?;
        Ok(Response::new(pb::CountActiveDirectPartnersResponse {
            counts: counts.into_iter().map(|count| i32::try_from(count).unwrap_or(i32::MAX)).collect(),
        }))
    }

    async fn list_downline(
        &self,
        request: Request<pb::ListDownlineRequest>,
    ) -> Result<Response<pb::ListDownlineResponse>, Status> {
        let scope = accrue_kit::auth::caller(&request)?.clone();
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let id = require_uuid("id", &request.id, &mut violations);
        if request.max_depth < 0 {
            violations.add("max_depth", "must not be negative");
        }
        violations.into_result()?;
        let id = id.ok_or_else(|| invalid_field("id", "is required"))?;
        let limit = page::page_size(request.page_size)?;
        let query = format!("downline|{id}|{}", request.max_depth);
        let after =
            page::decode::<DownlineCursor>(&query, &request.page_token)?.map(|cursor| (cursor.d, cursor.t, cursor.id));
        let own = store::get_partner(&self.pool, id)
            .await?
            .filter(|row| visible(&scope, row))
            .ok_or_else(|| not_found("partner", id))?;
        let deepest = (request.max_depth > 0).then(|| own.depth.saturating_add(request.max_depth));
        let mut rows = store::list_downline(&self.pool, id, deepest, after, limit + 1).await?;
        let next_page_token = page::next_page(&mut rows, limit, &query, |row| DownlineCursor {
            d: row.depth,
            t: row.created_at,
            id: row.id,
        })?;
        // A partner token sees the override a partner earned only when that
        // partner is itself; a sub-partner's roster shows it counts only.
        let overrides_of_own = scope.partner_scope().is_none_or(|partner| partner == id);
        let aggregates = self.downline_aggregates(&own, &rows, overrides_of_own).await?;
        let members = rows
            .iter()
            .map(|row| {
                let totals = aggregates.get(&row.id).cloned().unwrap_or_default();
                Ok(pb::DownlineMember {
                    partner: Some(partner_to_proto(row)?),
                    relative_depth: row.depth - own.depth,
                    funded_sale_count: totals.funded_sale_count,
                    override_earned: totals.override_earned,
                    override_sale_count: totals.override_sale_count,
                })
            })
            .collect::<Result<Vec<_>, Status>>()?;
        Ok(Response::new(pb::ListDownlineResponse { members, next_page_token }))
    }
}
