//! Typed clients of the five services, as the CLI and the end-to-end tests use
//! them: lazy channels (nothing connects until the first call), a 5 s connect
//! timeout, a 15 min call timeout for bulk calls, and the services' message
//! size limits.

use std::time::Duration;

use accrue_kit::server::MAX_MESSAGE_BYTES;
use accrue_proto::attribution::v1::attribution_service_client::AttributionServiceClient;
use accrue_proto::commission::v1::commission_service_client::CommissionServiceClient;
use accrue_proto::hierarchy::v1::hierarchy_service_client::HierarchyServiceClient;
use accrue_proto::ledger::v1::ledger_service_client::LedgerServiceClient;
use accrue_proto::payouts::v1::payout_service_client::PayoutServiceClient;
use tonic::transport::{Channel, Endpoint};

use crate::stack::Endpoints;

/// An endpoint URL is not a valid URI.
#[derive(Debug, thiserror::Error)]
#[error("invalid endpoint {url:?}: {message}")]
pub struct EndpointError {
    /// The URL.
    pub url: String,
    /// Why.
    pub message: String,
}

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

fn channel(url: &str) -> Result<Channel, EndpointError> {
    let endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|e| EndpointError { url: url.to_string(), message: e.to_string() })?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(900))
        .tcp_nodelay(true)
        .http2_adaptive_window(true);
    Ok(endpoint.connect_lazy())
}

impl Clients {
    /// Clients of `endpoints`; fails only on a malformed URL.
    pub fn connect(endpoints: &Endpoints) -> Result<Self, EndpointError> {
        let m = MAX_MESSAGE_BYTES;
        Ok(Clients {
            hierarchy: HierarchyServiceClient::new(channel(&endpoints.hierarchy)?)
                .max_decoding_message_size(m)
                .max_encoding_message_size(m),
            attribution: AttributionServiceClient::new(channel(&endpoints.attribution)?)
                .max_decoding_message_size(m)
                .max_encoding_message_size(m),
            commission: CommissionServiceClient::new(channel(&endpoints.commission)?)
                .max_decoding_message_size(m)
                .max_encoding_message_size(m),
            ledger: LedgerServiceClient::new(channel(&endpoints.ledger)?)
                .max_decoding_message_size(m)
                .max_encoding_message_size(m),
            payouts: PayoutServiceClient::new(channel(&endpoints.payouts)?)
                .max_decoding_message_size(m)
                .max_encoding_message_size(m),
        })
    }
}
