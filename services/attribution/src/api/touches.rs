//! Clicks, archived links and the programs' attribution settings (issue 14
//! items 1–3).

// The API module's imports.
use super::*;

use accrue_kit::auth::Identity;

use crate::domain::touch::{ClickInput, MAX_CLICKS_PER_CALL, RawClick, check_rule, parse_click};
use crate::store::{ClickOutcome, SettingsRow, SettingsUpdate};

/// FAILED_PRECONDITION LINK_ARCHIVED: an archived link takes no new clicks
/// or leads (issue 14 item 3).
pub(super) fn link_archived(link_id: impl std::fmt::Display) -> Status {
    failed_precondition(
        "LINK_ARCHIVED",
        format!("link {link_id} is archived: it takes no new clicks or leads (UnarchiveLink reopens it)"),
    )
}

/// A program's settings history on the wire: the rule in force now and
/// every version.
pub(super) fn settings_to_proto(program_id: ProgramId, history: &[SettingsRow]) -> pb::AttributionSettings {
    let now = store::rule_at(history, Utc::now());
    pb::AttributionSettings {
        program_id: program_id.to_string(),
        model: model_to_proto(now.model) as i32,
        attribution_window_days: now.window_days,
        history: history
            .iter()
            .map(|row| pb::AttributionSettingsVersion {
                model: model_to_proto(row.model) as i32,
                attribution_window_days: row.window_days,
                effective_time: Some(timestamp(row.effective_from)),
            })
            .collect(),
    }
}

impl AttributionApi {
    /// TrackClick / TrackClicks: validates every click (INVALID_ARGUMENT
    /// naming `click.…` or `clicks[i].…`; at most 1000 per call), then
    /// checks each link is one of the program's (NOT_FOUND) and live
    /// (FAILED_PRECONDITION LINK_ARCHIVED), then stores them in one
    /// transaction, idempotent on the click id (ALREADY_EXISTS
    /// CLICK_EXISTS_WITH_DIFFERENT_BODY for an id reused with another body).
    /// Nothing is written on any error. Returns (recorded, duplicates).
    pub(super) async fn track_clicks_of(
        &self,
        scope: &Identity,
        program_id: &str,
        clicks: &[pb::Click],
        single: bool,
    ) -> Result<(usize, usize), Status> {
        let field = |i: usize| if single { "click.".to_string() } else { format!("clicks[{i}].") };
        let mut violations = FieldViolations::new();
        let program_id: Option<ProgramId> = require_uuid("program_id", program_id, &mut violations);
        if clicks.is_empty() {
            violations.add(if single { "click" } else { "clicks" }, "is required");
        } else if clicks.len() > MAX_CLICKS_PER_CALL {
            violations.add("clicks", format!("at most {MAX_CLICKS_PER_CALL} clicks per call (got {})", clicks.len()));
        }
        let (window, now) = (self.events(), Utc::now());
        let parsed: Vec<Option<ClickInput>> = match program_id {
            Some(program_id) if clicks.len() <= MAX_CLICKS_PER_CALL => clicks
                .iter()
                .enumerate()
                .map(|(i, click)| {
                    let raw = RawClick {
                        click_id: &click.click_id,
                        link_id: &click.link_id,
                        occurred_at: click.occurred_at.as_ref(),
                        customer_external_id: &click.customer_external_id,
                        referrer: &click.referrer,
                        country_code: &click.country_code,
                        user_agent: &click.user_agent,
                    };
                    parse_click(&field(i), program_id, raw, &window, now, &mut violations)
                })
                .collect(),
            _ => Vec::new(),
        };
        violations.into_result()?;
        let program_id = program_id.ok_or_else(|| invalid_field("program_id", "is required"))?;
        scope.require_program(program_id)?;
        let clicks: Vec<ClickInput> = parsed.into_iter().flatten().collect();
        let mut links: HashMap<accrue_types::LinkId, LinkRow> = HashMap::new();
        for (i, click) in clicks.iter().enumerate() {
            if let std::collections::hash_map::Entry::Vacant(slot) = links.entry(click.link_id) {
                let link = store::get_link(&self.pool, click.link_id)
                    .await?
                    .filter(|link| link.program_id == program_id)
                    .ok_or_else(|| not_found("link", format!("{} ({}link_id)", click.link_id, field(i))))?;
                slot.insert(link);
            }
            if links.get(&click.link_id).is_some_and(|link| link.archived_at.is_some()) {
                let status = link_archived(click.link_id);
                return Err(failed_precondition("LINK_ARCHIVED", format!("{}link_id: {}", field(i), status.message())));
            }
        }
        match store::track_clicks(&self.pool, program_id, &clicks, &links).await? {
            ClickOutcome::Recorded { recorded, duplicates } => Ok((recorded, duplicates)),
            ClickOutcome::Conflict { index } => Err(already_exists(
                "CLICK_EXISTS_WITH_DIFFERENT_BODY",
                format!(
                    "{}click_id {:?} was already recorded in program {program_id} with a different body; nothing \
                     was recorded",
                    field(index),
                    clicks[index].click_id
                ),
            )),
        }
    }

    /// ArchiveLink / UnarchiveLink: the link as it now is. Idempotent (the
    /// request id is checked for length only: the change is its own
    /// idempotency). NOT_FOUND for a missing link or one of a program the
    /// token does not name.
    pub(super) async fn set_archived(
        &self,
        scope: &Identity,
        id: &str,
        request_id: &str,
        archived: bool,
    ) -> Result<pb::Link, Status> {
        let mut violations = FieldViolations::new();
        let id: Option<accrue_types::LinkId> = require_uuid("id", id, &mut violations);
        idempotency::request_id("request_id", request_id, &mut violations);
        violations.into_result()?;
        let id = id.ok_or_else(|| invalid_field("id", "is required"))?;
        // Another program's link is answered exactly as a missing one.
        if !store::get_link(&self.pool, id).await?.is_some_and(|row| scope.programs.contains(row.program_id)) {
            return Err(not_found("link", id));
        }
        let row = store::set_archived(&self.pool, id, archived).await?.ok_or_else(|| not_found("link", id))?;
        Ok(link_to_proto(row))
    }

    /// UpdateAttributionSettings: the model (FIRST_TOUCH or LAST_TOUCH) and
    /// window (last touch: 1..=3650 days, 0 → Dub's 90; first touch: 0) from
    /// now on. INVALID_ARGUMENT with field violations for a bad model or
    /// window; NOT_FOUND when the program does not exist (hierarchy);
    /// ALREADY_EXISTS REQUEST_ID_REUSED for a request id used with another
    /// body (the same body returns the settings).
    pub(super) async fn update_settings(
        &self,
        scope: &Identity,
        req: pb::UpdateAttributionSettingsRequest,
    ) -> Result<pb::AttributionSettings, Status> {
        let mut violations = FieldViolations::new();
        let program_id: Option<ProgramId> = require_uuid("program_id", &req.program_id, &mut violations);
        let model = match pb::AttributionModel::try_from(req.model) {
            Ok(pb::AttributionModel::FirstTouch) => Some(Model::FirstTouch),
            Ok(pb::AttributionModel::LastTouch) => Some(Model::LastTouch),
            _ => {
                violations.add("model", "must be ATTRIBUTION_MODEL_FIRST_TOUCH or ATTRIBUTION_MODEL_LAST_TOUCH");
                None
            }
        };
        let rule = model.and_then(|model| check_rule(model, req.attribution_window_days, &mut violations));
        let request_id = idempotency::request_id("request_id", &req.request_id, &mut violations);
        violations.into_result()?;
        let (Some(program_id), Some(rule)) = (program_id, rule) else {
            return Err(invalid_field("model", "is required"));
        };
        scope.require_program(program_id)?;
        // NOT_FOUND for a program the hierarchy does not know.
        self.get_uplines(program_id, &[]).await?;
        match store::update_settings(&self.pool, program_id, rule, request_id.as_ref().map(|id| id.as_str())).await? {
            SettingsUpdate::Stored(history) => Ok(settings_to_proto(program_id, &history)),
            SettingsUpdate::Reused => Err(already_exists(
                idempotency::REUSED_REASON,
                format!("request_id {:?} was used with another body", req.request_id),
            )),
        }
    }
}
