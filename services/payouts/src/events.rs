//! What payouts writes to its outbox (issue 16 item 1; docs/events.md): a
//! payout as GetPayout returns it, created and at each of the lifecycle
//! changes the feed reports (approved, rejected, paid, failed; processing
//! and deletion are not in the catalogue). A payout concerns its partner,
//! whose token sees it.

use accrue_kit::events::{EventType, NewEvent, catalogue};
use chrono::{DateTime, Utc};

use crate::api::codec::payout_to_proto;
use crate::domain::status::PayoutStatus;
use crate::store::PayoutRow;

/// The event type of a change into `to`, if the feed reports it.
pub(crate) fn of_change(to: PayoutStatus) -> Option<&'static EventType> {
    match to {
        PayoutStatus::Approved => Some(&catalogue::PAYOUT_APPROVED),
        PayoutStatus::Rejected => Some(&catalogue::PAYOUT_REJECTED),
        PayoutStatus::Paid => Some(&catalogue::PAYOUT_PAID),
        PayoutStatus::Failed => Some(&catalogue::PAYOUT_FAILED),
        PayoutStatus::PendingApproval | PayoutStatus::Processing | PayoutStatus::Deleted => None,
    }
}

/// The event of `kind` about `payout` as it is after the change at `time`.
/// A stored row the API cannot show (an unknown currency or status) is a
/// decode error, which rolls the change back.
pub(crate) fn payout(
    kind: &'static EventType,
    payout: &PayoutRow,
    time: DateTime<Utc>,
) -> Result<NewEvent, sqlx::Error> {
    let data = payout_to_proto(payout).map_err(|status| sqlx::Error::Decode(status.message().to_string().into()))?;
    Ok(NewEvent::new(kind, payout.program_id, format!("payouts/{}", payout.id), Some(payout.partner_id), time, &data))
}
