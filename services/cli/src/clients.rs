//! Typed clients of the five services, as the CLI and the end-to-end tests use
//! them, built by [`accrue_kit::client::connect`] with the 15 min call timeout
//! of bulk calls.

use accrue_kit::client::{BULK_TIMEOUT, ClientError, connect};
use accrue_proto::attribution::v1::attribution_service_client::AttributionServiceClient;
use accrue_proto::commission::v1::commission_service_client::CommissionServiceClient;
use accrue_proto::hierarchy::v1::hierarchy_service_client::HierarchyServiceClient;
use accrue_proto::ledger::v1::ledger_service_client::LedgerServiceClient;
use accrue_proto::payouts::v1::payout_service_client::PayoutServiceClient;
use tonic::transport::Channel;

use crate::stack::Endpoints;

/// Clients of the five services.
#[derive(Clone)]
pub struct Clients {
    /// Hierarchy.
    pub hierarchy: HierarchyServiceClient<Channel>,
    /// Attribution.
    pub attribution: AttributionServiceClient<Channel>,
    /// Commission.
    pub commission: CommissionServiceClient<Channel>,
    /// Ledger.
    pub ledger: LedgerServiceClient<Channel>,
    /// Payouts.
    pub payouts: PayoutServiceClient<Channel>,
}

impl Clients {
    /// Clients of `endpoints` with the [`BULK_TIMEOUT`]; fails only on a malformed URL.
    pub fn connect(endpoints: &Endpoints) -> Result<Self, ClientError> {
        Ok(Clients {
            hierarchy: connect(&endpoints.hierarchy, BULK_TIMEOUT)?,
            attribution: connect(&endpoints.attribution, BULK_TIMEOUT)?,
            commission: connect(&endpoints.commission, BULK_TIMEOUT)?,
            ledger: connect(&endpoints.ledger, BULK_TIMEOUT)?,
            payouts: connect(&endpoints.payouts, BULK_TIMEOUT)?,
        })
    }
}
