//! Store rows as the wire shows them.

// The API module's imports.
use super::*;

pub(super) fn link_to_proto(row: LinkRow) -> pb::Link {
    pb::Link {
        id: row.id.to_string(),
        program_id: row.program_id.to_string(),
        owner_partner_id: row.owner_partner_id.to_string(),
        key: row.key,
        destination_url: row.destination_url,
        splits: row
            .splits
            .0
            .iter()
            .map(|s| pb::LinkSplit { partner_id: s.partner_id.to_string(), basis_points: s.basis_points })
            .collect(),
        create_time: Some(timestamp(row.created_at)),
        archived: row.archived_at.is_some(),
        archive_time: row.archived_at.map(timestamp),
    }
}

pub(super) fn model_to_proto(model: Model) -> pb::AttributionModel {
    match model {
        Model::FirstTouch => pb::AttributionModel::FirstTouch,
        Model::LastTouch => pb::AttributionModel::LastTouch,
    }
}

pub(super) fn lead_to_proto(row: LeadRow, created: bool, rule: Rule) -> pb::Lead {
    pb::Lead {
        program_id: row.program_id.to_string(),
        customer_external_id: row.customer_external_id,
        link_id: row.link_id.to_string(),
        partner_id: row.partner_id.to_string(),
        occurred_at: Some(timestamp(row.occurred_at)),
        created,
        attribution_model: model_to_proto(rule.model) as i32,
    }
}

pub(crate) fn sale_to_proto(row: SaleRow) -> pb::Sale {
    let currency = Currency::from_code(&row.currency).ok();
    let money = |amount| currency.map(|c| amount_to_proto(c, amount));
    pb::Sale {
        id: row.id.to_string(),
        program_id: row.program_id.to_string(),
        external_id: row.external_id,
        customer_external_id: row.customer_external_id.unwrap_or_default(),
        event_type: event_type_to_proto(row.event_type) as i32,
        amount: money(row.amount),
        product_code: row.product_code,
        service_code: row.service_code,
        occurred_at: Some(timestamp(row.occurred_at)),
        link_id: row.link_id.map(|id| id.to_string()).unwrap_or_default(),
        partner_id: row.partner_id.map(|id| id.to_string()).unwrap_or_default(),
        state: row.state.to_proto() as i32,
        failure_reason: row.failure_reason,
        saga_id: row.saga_id.map(|id| id.to_string()).unwrap_or_default(),
        base_commission: row.base_commission.and_then(money),
        total_commission: row.total_commission.and_then(money),
        create_time: Some(timestamp(row.created_at)),
        refunded_amount: money(row.refunded_amount),
        attribution_model: model_to_proto(row.attribution_model) as i32,
        attribution_window_days: row.attribution_window_days,
        settle_time: row.settled_at.map(timestamp),
    }
}

pub(crate) fn refund_to_proto(row: RefundRow) -> pb::Refund {
    let currency = Currency::from_code(&row.currency).ok();
    let money = |amount| currency.map(|c| amount_to_proto(c, amount));
    pb::Refund {
        id: row.id.to_string(),
        program_id: row.program_id.to_string(),
        external_id: row.external_id,
        sale_id: row.sale_id.to_string(),
        sale_external_id: row.sale_external_id,
        amount: money(row.amount),
        occurred_at: Some(timestamp(row.occurred_at)),
        reason: row.reason,
        state: row.state.to_proto() as i32,
        failure_reason: row.failure_reason,
        saga_id: row.saga_id.map(|id| id.to_string()).unwrap_or_default(),
        sequence: row.sequence,
        refunded_total: money(row.refunded_total),
        clawback_amount: row.clawback_amount.and_then(money),
        create_time: Some(timestamp(row.created_at)),
    }
}

pub(super) fn saga_to_proto(row: SagaRow, events: Vec<store::EventRow>) -> pb::Saga {
    pb::Saga {
        id: row.id.to_string(),
        program_id: row.program_id.to_string(),
        sale_id: row.sale_id.to_string(),
        kind: row.kind,
        state: saga_state_to_proto(row.state) as i32,
        generation: row.generation,
        owner: row.owner.unwrap_or_default(),
        lease_expire_time: row.lease_expires_at.map(timestamp),
        failure_reason: row.failure_reason,
        attempt: row.attempt,
        refund_id: row.refund_id.map(|id| id.to_string()).unwrap_or_default(),
        events: events
            .into_iter()
            .map(|event| {
                // The run is part of the detail so that one log shows every run.
                let detail = match event.detail {
                    serde_json::Value::Object(mut map) => {
                        map.insert("run".to_string(), serde_json::json!(event.run));
                        serde_json::Value::Object(map)
                    }
                    other => serde_json::json!({ "run": event.run, "value": other }),
                };
                pb::SagaStepEvent {
                    step: event.step,
                    event: event.event.as_str().to_string(),
                    detail: detail.to_string(),
                    generation: event.generation,
                    event_time: Some(timestamp(event.created_at)),
                }
            })
            .collect(),
        create_time: Some(timestamp(row.created_at)),
        update_time: Some(timestamp(row.updated_at)),
    }
}

pub(super) fn required_program(value: &str) -> Result<ProgramId, Status> {
    parse_id("program_id", value)
}
