//! Manual payouts (CreatePayout; issue 12 item 2, seed 001 "create a payout
//! for a partner"): request validation and the payout's deterministic id.
//!
//! A manual payout pays the partner's payable ledger entries, never an
//! amount typed by the caller: every cent paid is a ledger entry, so Σ PAID
//! payouts = Σ PAID entries holds for manual payouts as for runs (a one-off
//! amount is posted to the ledger first).

use accrue_kit::FieldViolations;
use accrue_kit::convert::{from_timestamp, require_uuid};
use accrue_money::Currency;
use accrue_proto::payouts::v1 as pb;
use accrue_types::{PartnerId, PayoutId, ProgramId};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::period::{Period, period_field};
use super::run::currency_field;

/// Longest free text a payout keeps, in characters: notes, a rejection,
/// failure or deletion reason, a payment reference.
pub const MAX_TEXT_CHARS: usize = 1000;

/// A validated CreatePayout request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManualRequest {
    /// Program.
    pub program_id: ProgramId,
    /// The partner to pay.
    pub partner_id: PartnerId,
    /// Currency of the entries paid.
    pub currency: Currency,
    /// The period the payout is reported under.
    pub period: Period,
    /// Entries cleared at or before this are payable.
    pub cutoff: DateTime<Utc>,
    /// Trimmed notes.
    pub notes: String,
    /// Idempotency key (required: the payout id derives from it).
    pub request_id: String,
}

/// Validates a CreatePayout request, collecting every violation:
/// `program_id`, `partner_id` UUIDs; `currency_code` ISO 4217; `period`
/// "YYYY-MM"; `cutoff` a valid timestamp when set (default: the period's
/// last instant, as for a run); `notes` at most [`MAX_TEXT_CHARS`];
/// `request_id` required — the payout's reservation lives in the ledger, and
/// only an id the caller repeats lets a retry find it instead of reserving
/// under a second payout.
///
/// Errors: INVALID_ARGUMENT with one field violation per problem.
pub fn validate_manual_request(request: &pb::CreatePayoutRequest) -> Result<ManualRequest, tonic::Status> {
    let mut violations = FieldViolations::new();
    let program_id = require_uuid("program_id", &request.program_id, &mut violations);
    let partner_id = require_uuid("partner_id", &request.partner_id, &mut violations);
    let currency = currency_field("currency_code", &request.currency_code, &mut violations);
    let period = period_field("period", &request.period, &mut violations);
    let cutoff = from_timestamp("cutoff", request.cutoff.as_ref(), &mut violations);
    let notes = request.notes.trim().to_string();
    if notes.chars().count() > MAX_TEXT_CHARS {
        violations.add("notes", format!("must be at most {MAX_TEXT_CHARS} characters"));
    }
    let request_id = accrue_kit::idempotency::require_key("request_id", request.request_id.trim(), &mut violations);
    violations.into_result()?;
    let (Some(program_id), Some(partner_id), Some(currency), Some(period), Some(request_id)) =
        (program_id, partner_id, currency, period, request_id)
    else {
        return Err(accrue_kit::error::invalid_field("program_id", "is required"));
    };
    Ok(ManualRequest {
        program_id,
        partner_id,
        currency,
        period,
        cutoff: cutoff.unwrap_or_else(|| period.default_cutoff()),
        notes,
        request_id: request_id.as_str().to_string(),
    })
}

/// The id of the manual payout `request_id` creates in `program_id`: UUID v5
/// in the program's namespace, so a retry asks the ledger for the same
/// reservation (idempotent per payout id) and finds the same payout row.
pub fn manual_payout_id(program_id: ProgramId, request_id: &str) -> PayoutId {
    let name = format!("manual-payout|{request_id}");
    PayoutId::from_uuid(Uuid::new_v5(program_id.as_uuid(), name.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> pb::CreatePayoutRequest {
        pb::CreatePayoutRequest {
            program_id: Uuid::now_v7().to_string(),
            partner_id: Uuid::now_v7().to_string(),
            currency_code: "GBP".into(),
            period: "2011-03".into(),
            cutoff: None,
            notes: "  early payment  ".into(),
            request_id: "manual-1".into(),
        }
    }

    #[test]
    fn defaults_the_cutoff_to_the_end_of_the_period_and_trims_notes() {
        let valid = validate_manual_request(&request()).unwrap();
        assert_eq!(valid.cutoff, Period::parse("2011-03").unwrap().default_cutoff());
        assert_eq!(valid.notes, "early payment");
    }

    #[test]
    fn every_violation_is_reported_and_request_id_is_required() {
        let bad = pb::CreatePayoutRequest {
            program_id: "x".into(),
            partner_id: String::new(),
            currency_code: "gbp".into(),
            period: "2011-13".into(),
            cutoff: None,
            notes: "n".repeat(MAX_TEXT_CHARS + 1),
            request_id: " ".into(),
        };
        let status = validate_manual_request(&bad).unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        for field in ["program_id", "partner_id", "currency_code", "period", "notes", "request_id"] {
            assert!(status.message().contains(field), "{field} in {}", status.message());
        }
    }

    #[test]
    fn the_id_is_stable_per_program_and_request_id() {
        let program = ProgramId::new_v7();
        assert_eq!(manual_payout_id(program, "a"), manual_payout_id(program, "a"));
        assert_ne!(manual_payout_id(program, "a"), manual_payout_id(program, "b"));
        assert_ne!(manual_payout_id(program, "a"), manual_payout_id(ProgramId::new_v7(), "a"));
    }
}
