//! Typed clients of the five services, as the CLI and the end-to-end tests use
//! them, built by [`accrue_kit::client::connect`] with the 15 min call timeout
//! of bulk calls.

use accrue_kit::auth::Credential;
use accrue_kit::client::AuthChannel;
use accrue_kit::client::{BULK_TIMEOUT, ClientError, connect};
use accrue_proto::attribution::v1::attribution_service_client::AttributionServiceClient;
use accrue_proto::commission::v1::commission_service_client::CommissionServiceClient;
use accrue_proto::hierarchy::v1::hierarchy_service_client::HierarchyServiceClient;
use accrue_proto::ledger::v1::ledger_service_client::LedgerServiceClient;
use accrue_proto::payouts::v1::payout_service_client::PayoutServiceClient;

use crate::stack::Endpoints;

/// Clients of the five services.
#[derive(Clone)]
pub struct Clients {
    /// Hierarchy.
    pub hierarchy: HierarchyServiceClient<AuthChannel>,
    /// Attribution.
    pub attribution: AttributionServiceClient<AuthChannel>,
    /// Commission.
    pub commission: CommissionServiceClient<AuthChannel>,
    /// Ledger.
    pub ledger: LedgerServiceClient<AuthChannel>,
    /// Payouts.
    pub payouts: PayoutServiceClient<AuthChannel>,
}

impl Clients {
    /// Clients of `endpoints` with the [`BULK_TIMEOUT`], every call carrying
    /// `credential`; fails only on a malformed URL.
    pub fn connect(endpoints: &Endpoints, credential: &Credential) -> Result<Self, ClientError> {
        Ok(Clients {
            hierarchy: connect(&endpoints.hierarchy, BULK_TIMEOUT, credential)?,
            attribution: connect(&endpoints.attribution, BULK_TIMEOUT, credential)?,
            commission: connect(&endpoints.commission, BULK_TIMEOUT, credential)?,
            ledger: connect(&endpoints.ledger, BULK_TIMEOUT, credential)?,
            payouts: connect(&endpoints.payouts, BULK_TIMEOUT, credential)?,
        })
    }
}
