//! The partner writes: CreatePartner, UpdatePartnerStatus and SetParent,
//! each one transaction with its idempotency check, its tree rule (seed 004)
//! and its outbox event.

// The API module's imports and helpers.
use super::*;

/// CreatePartner: a partner under its parent (or a root), idempotent on
/// `request_id` (ALREADY_EXISTS for the same id with another body).
pub(super) async fn create(
    api: &HierarchyApi,
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
    let mut tx = accrue_kit::db::begin(&api.pool).await?;
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
    let placement = tree::place_new(parent.as_ref().map(parent_node), program.max_tree_depth).map_err(tree_error)?;
    if let Some(parent) = &parent {
        tree::check_role_rank(&program.role_ladder, parent.role.as_deref(), new.role.as_deref()).map_err(tree_error)?;
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
                && let Some(existing) = store::partner_by_request_id(&api.pool, program.id, request_id).await?
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

/// UpdatePartnerStatus: a status change with its reason (at most
/// [`MAX_REASON_CHARS`]) and its partner.status_changed event.
pub(super) async fn update_status(
    api: &HierarchyApi,
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
    let mut tx = accrue_kit::db::begin(&api.pool).await?;
    let current = store::lock_partner(&mut tx, id)
        .await?
        .filter(|row| scope.programs.contains(row.program_id))
        .ok_or_else(|| not_found("partner", id))?;
    let from = status_of(&current)?;
    let changed =
        check_status_change(from, to).map_err(|error| failed_precondition("PARTNER_TERMINATED", error.to_string()))?;
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

/// SetParent: moves a partner (and its subtree) under a new parent,
/// refusing cycles and trees deeper than the program allows.
pub(super) async fn set_parent(
    api: &HierarchyApi,
    request: Request<pb::SetParentRequest>,
) -> Result<Response<pb::SetParentResponse>, Status> {
    let scope = accrue_kit::auth::caller(&request)?.clone();
    let request = request.into_inner();
    let mut violations = FieldViolations::new();
    let id = require_uuid("id", &request.id, &mut violations);
    let parent_id = optional_uuid("parent_id", &request.parent_id, &mut violations);
    violations.into_result()?;
    let id = id.ok_or_else(|| invalid_field("id", "is required"))?;

    let mut tx = accrue_kit::db::begin(&api.pool).await?;
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
    Ok(Response::new(pb::SetParentResponse { partner: Some(partner_to_proto(&moved)?), rewritten_count: rewritten }))
}
