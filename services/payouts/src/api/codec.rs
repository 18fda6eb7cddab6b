//! Store rows as the wire shows them, request field parsers, page cursors
//! and the peer-error mapping the handlers share.

// The API module's imports.
use super::*;

/// Keyset cursor of ListPayouts: (created_at, id).
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct PayoutCursor {
    pub(super) t: DateTime<Utc>,
    pub(super) id: PayoutId,
}

/// Keyset cursor of ListAuditEvents: the last event id served.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct AuditCursor {
    pub(super) id: i64,
}

/// Maps a peer's failure: transient ones become UNAVAILABLE (the caller
/// retries; the run resumes), anything else is our fault (INTERNAL, logged).
/// A connection the peer dropped mid-call (killed, restarting) is transient
/// whatever code the transport gave it (the crash campaign saw UNKNOWN
/// "transport error" from a killed ledger turn into INTERNAL here).
pub(super) fn peer_error(peer: &str, status: Status) -> Status {
    let broken = accrue_kit::client::is_broken_connection(&status);
    match status.code() {
        _ if broken => {
            tracing::warn!(peer, code = ?status.code(), message = status.message(), "peer connection broken");
            Status::unavailable(format!("{peer} service unavailable; retry the request"))
        }
        Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted | Code::Aborted | Code::Cancelled => {
            tracing::warn!(peer, code = ?status.code(), message = status.message(), "peer unavailable");
            Status::unavailable(format!("{peer} service unavailable; retry the request"))
        }
        _ => internal(format!("{peer} call failed: {:?} {}", status.code(), status.message())),
    }
}

/// An optional "YYYY-MM" filter; a malformed one is a violation on `field`.
pub(super) fn optional_period(field: &str, value: &str, violations: &mut FieldViolations) -> Option<Period> {
    if value.is_empty() {
        return None;
    }
    crate::domain::period::period_field(field, value, violations)
}

/// An optional ISO 4217 filter; an unknown code is a violation on `field`.
pub(super) fn optional_currency(field: &str, value: &str, violations: &mut FieldViolations) -> Option<Currency> {
    if value.is_empty() {
        return None;
    }
    crate::domain::run::currency_field(field, value, violations)
}

pub(super) fn currency_of(code: &str) -> Result<Currency, Status> {
    Currency::from_code(code).map_err(internal)
}

pub(super) fn run_to_proto(row: &RunRow) -> Result<pb::PayoutRun, Status> {
    let currency = currency_of(&row.currency)?;
    Ok(pb::PayoutRun {
        id: row.id.to_string(),
        program_id: row.program_id.to_string(),
        currency_code: row.currency.clone(),
        period: row.period.clone(),
        cutoff: Some(timestamp(row.cutoff)),
        payout_count: row.payout_count,
        total_amount: Some(amount_to_proto(currency, row.total_amount)),
        carried_forward_count: row.carried_forward_count,
        carried_forward_amount: Some(amount_to_proto(currency, row.carried_forward_amount)),
        create_time: Some(timestamp(row.created_at)),
    })
}

pub(crate) fn payout_to_proto(row: &PayoutRow) -> Result<pb::Payout, Status> {
    let currency = currency_of(&row.currency)?;
    let status = PayoutStatus::from_str_name(&row.status)
        .ok_or_else(|| internal(format!("stored payout status {:?} is unknown", row.status)))?;
    Ok(pb::Payout {
        id: row.id.to_string(),
        program_id: row.program_id.to_string(),
        partner_id: row.partner_id.to_string(),
        payout_run_id: row.payout_run_id.map(|id| id.to_string()).unwrap_or_default(),
        amount: Some(amount_to_proto(currency, row.amount)),
        status: status.to_proto() as i32,
        period: row.period.clone(),
        entry_count: row.entry_count,
        create_time: Some(timestamp(row.created_at)),
        update_time: Some(timestamp(row.updated_at)),
        approved_by: row.approved_by.clone().unwrap_or_default(),
        approve_time: row.approved_at.map(timestamp),
        payment_reference: row.payment_reference.clone().unwrap_or_default(),
        payment_method: row.payment_method.clone().unwrap_or_default(),
        paid_time: row.paid_at.map(timestamp),
        status_reason: row.status_reason.clone().unwrap_or_default(),
        notes: row.notes.clone(),
    })
}

pub(super) fn settings_to_proto(
    program_id: ProgramId,
    partner_id: PartnerId,
    row: Option<&store::SettingsRow>,
) -> Result<pb::PartnerPayoutSettings, Status> {
    let minimum_amount = match row.and_then(|r| r.minimum_currency.as_deref().zip(r.minimum_amount)) {
        Some((code, amount)) => Some(amount_to_proto(currency_of(code)?, amount)),
        None => None,
    };
    Ok(pb::PartnerPayoutSettings {
        program_id: program_id.to_string(),
        partner_id: partner_id.to_string(),
        minimum_amount,
        hold: row.is_some_and(|r| r.hold),
        payout_method: row.map(|r| r.payout_method.clone()).unwrap_or_default(),
        update_time: row.map(|r| timestamp(r.updated_at)),
        updated_by: row.map(|r| r.updated_by.clone()).unwrap_or_default(),
    })
}

pub(super) fn audit_to_proto(row: &store::AuditRow) -> pb::AuditEvent {
    let status = |name: &str| PayoutStatus::from_str_name(name).map(PayoutStatus::to_proto).unwrap_or_default();
    pb::AuditEvent {
        id: row.id,
        payout_id: row.payout_id.to_string(),
        actor: row.actor.clone(),
        from_status: status(&row.from_status) as i32,
        to_status: status(&row.to_status) as i32,
        reason: row.reason.clone(),
        request_id: row.request_id.clone().unwrap_or_default(),
        create_time: Some(timestamp(row.created_at)),
    }
}

pub(super) use crate::domain::MAX_TEXT_CHARS;
/// Longest payment method accepted, in characters.
pub(super) const MAX_METHOD_CHARS: usize = 100;
/// Most ids in one BulkApprovePayouts call.
pub const MAX_BULK_IDS: usize = 1000;
/// How far past the server's clock a `paid_time` may be (clock skew).
pub(super) const PAID_TIME_SKEW: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

/// A required free text: trimmed, non-empty, at most `max` characters;
/// else a violation on `field`.
pub(super) fn required_text(field: &str, value: &str, max: usize, violations: &mut FieldViolations) -> String {
    let value = value.trim();
    if value.is_empty() {
        violations.add(field, "is required");
    } else if value.chars().count() > max {
        violations.add(field, format!("must be at most {max} characters"));
    }
    value.to_string()
}

/// The request id of a state change and the fingerprint of its body
/// (`body` is the request with its request id cleared).
pub(super) fn change_key(
    request_id: &str,
    body: &impl prost::Message,
    violations: &mut FieldViolations,
) -> (Option<String>, Vec<u8>) {
    let request_id = idempotency::request_id("request_id", request_id.trim(), violations);
    (request_id.map(|id| id.as_str().to_string()), idempotency::fingerprint_message(body))
}

/// The ListPayouts / ExportPayouts filters, validated and owned (the export
/// moves them into its task).
#[derive(Debug, Clone)]
pub(super) struct Filters {
    pub program_id: ProgramId,
    pub partner_id: Option<PartnerId>,
    pub payout_run_id: Option<PayoutRunId>,
    pub status: Option<PayoutStatus>,
    pub period: Option<String>,
    pub currency: Option<String>,
    pub show_deleted: bool,
}

/// The fields both requests filter on, as they come.
pub(super) struct FilterFields<'a> {
    pub program_id: &'a str,
    pub partner_id: &'a str,
    pub payout_run_id: &'a str,
    pub status: i32,
    pub period: &'a str,
    pub currency_code: &'a str,
    pub show_deleted: bool,
}

impl Filters {
    /// Validates the filters: `program_id` a UUID; `partner_id`,
    /// `payout_run_id` UUIDs when set; `status` a known status when set;
    /// `period` "YYYY-MM" and `currency_code` ISO 4217 when set.
    ///
    /// Errors: INVALID_ARGUMENT with a violation per malformed field.
    pub(super) fn parse(fields: FilterFields<'_>) -> Result<Filters, Status> {
        let mut violations = FieldViolations::new();
        let program_id = require_uuid::<ProgramId>("program_id", fields.program_id, &mut violations);
        let partner_id = optional_uuid::<PartnerId>("partner_id", fields.partner_id, &mut violations);
        let payout_run_id = optional_uuid::<PayoutRunId>("payout_run_id", fields.payout_run_id, &mut violations);
        let status = match fields.status {
            0 => None,
            value => {
                let status = PayoutStatus::from_proto(value);
                if status.is_none() {
                    violations.add("status", format!("unknown payout status {value}"));
                }
                status
            }
        };
        let period = optional_period("period", fields.period, &mut violations);
        let currency = optional_currency("currency_code", fields.currency_code, &mut violations);
        violations.into_result()?;
        let program_id = program_id.ok_or_else(|| invalid_field("program_id", "is required"))?;
        Ok(Filters {
            program_id,
            partner_id,
            payout_run_id,
            status,
            period: period.map(|period| period.to_string()),
            currency: currency.map(|currency| currency.code().to_string()),
            show_deleted: fields.show_deleted,
        })
    }

    /// The store's view of the filters.
    pub(super) fn as_store(&self) -> PayoutFilter<'_> {
        PayoutFilter {
            program_id: self.program_id,
            partner_id: self.partner_id,
            payout_run_id: self.payout_run_id,
            status: self.status.map(PayoutStatus::as_str),
            period: self.period.as_deref(),
            currency: self.currency.as_deref(),
            show_deleted: self.show_deleted,
        }
    }
}
