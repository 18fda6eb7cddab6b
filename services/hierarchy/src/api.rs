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

mod codec;
mod downline;
mod partners;

use codec::*;

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
        let (row, history) =
            store::get_program_with_history(&self.pool, id).await?.ok_or_else(|| not_found("program", id))?;
        Ok(Response::new(program_with_history(&row, &history)?))
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
        partners::create(self, request).await
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
        partners::update_status(self, request).await
    }

    async fn set_parent(
        &self,
        request: Request<pb::SetParentRequest>,
    ) -> Result<Response<pb::SetParentResponse>, Status> {
        partners::set_parent(self, request).await
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
        let (program, history) = store::get_program_with_history(&self.pool, program_id)
            .await?
            .ok_or_else(|| not_found("program", program_id))?;
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
        Ok(Response::new(pb::GetUplinesResponse { program: Some(program_with_history(&program, &history)?), uplines }))
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
