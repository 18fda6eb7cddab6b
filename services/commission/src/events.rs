//! What commission writes to its outbox (issue 16 item 1; docs/events.md):
//! a new agreement version as CreateAgreement returns it. Agreements are
//! program configuration (partner tokens cannot read them), so the event
//! has no partner and only program-wide readers see it.

use accrue_kit::events::{NewEvent, catalogue};

use crate::api::agreements::encode_version;
use crate::store::StoredVersion;

/// `agreement.version_created` for `stored`, at its creation time.
pub(crate) fn version_created(stored: &StoredVersion) -> NewEvent {
    let data = encode_version(stored);
    let subject = format!("agreements/{}/versions/{}", stored.version.agreement_id, stored.version.version);
    NewEvent::new(&catalogue::AGREEMENT_VERSION_CREATED, stored.program_id, subject, None, stored.created_at, &data)
}
