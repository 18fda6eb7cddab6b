//! What attribution writes to its outbox (issue 16 item 1; docs/events.md):
//! sales and refunds as the API shows them (`Sale`, `Refund`), as events of
//! the catalogue's attribution types. A sale or refund event concerns the
//! program, not one partner (partner tokens cannot read sales), so it has
//! no partner and only program-wide readers see it.

use accrue_kit::events::{EventType, NewEvent};
use chrono::{DateTime, Utc};

use crate::api::codec::{refund_to_proto, sale_to_proto};
use crate::store::{RefundRow, SaleRow};

/// The event of `kind` about `sale` as it is after the change at `time`.
pub(crate) fn sale(kind: &'static EventType, sale: &SaleRow, time: DateTime<Utc>) -> NewEvent {
    let data = sale_to_proto(sale.clone());
    NewEvent::new(kind, sale.program_id, format!("sales/{}", sale.id), None, time, &data)
}

/// The event of `kind` about `refund` as it is after the change at `time`.
pub(crate) fn refund(kind: &'static EventType, refund: &RefundRow, time: DateTime<Utc>) -> NewEvent {
    let data = refund_to_proto(refund.clone());
    NewEvent::new(kind, refund.program_id, format!("refunds/{}", refund.id), None, time, &data)
}
