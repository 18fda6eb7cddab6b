//! Shared harness of the commission service's gRPC tests: a fresh Postgres
//! database, the real hierarchy service and the real commission service, both
//! in-process on ephemeral ports. No mocks.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use accrue_kit::client::AuthChannel;
use accrue_proto::commission::v1 as pb;
use accrue_proto::commission::v1::commission_service_client::CommissionServiceClient;
use accrue_proto::hierarchy::v1 as hpb;
use accrue_proto::hierarchy::v1::hierarchy_service_client::HierarchyServiceClient;
use accrue_proto::types::v1 as types;
use accrue_testkit::TestServices;
use tonic_types::StatusExt;

/// The running services; dropping it stops them.
pub struct Service {
    /// Commission client.
    pub client: CommissionServiceClient<AuthChannel>,
    /// Hierarchy client (programs and partners for schemes and quotes).
    pub hierarchy: HierarchyServiceClient<AuthChannel>,
    /// The commission service's URL (for clients with other tokens).
    pub url: String,
    /// The services and their database.
    pub services: TestServices,
}

/// Starts hierarchy and commission on a fresh database and waits until both serve.
pub async fn start() -> Service {
    let services = TestServices::new().await;
    let hierarchy_url = services.spawn::<accrue_hierarchy::Hierarchy>(accrue_hierarchy::Config::default()).await;
    let config = accrue_commission::Config { hierarchy_url: hierarchy_url.clone() };
    let commission_url = services.spawn::<accrue_commission::Commission>(config).await;
    Service {
        client: services.client(&commission_url),
        hierarchy: services.client(&hierarchy_url),
        url: commission_url,
        services,
    }
}

impl Service {
    /// Creates a program (USD, default ladder unless `ladder` is non-empty) and returns its id.
    pub async fn program(&mut self, ladder: &[&str]) -> String {
        let program = hpb::Program {
            display_name: "test program".into(),
            default_currency: "USD".into(),
            role_ladder: ladder.iter().map(|role| (*role).to_string()).collect(),
            ..Default::default()
        };
        let request = hpb::CreateProgramRequest { program: Some(program), request_id: String::new() };
        self.hierarchy.create_program(request).await.unwrap().into_inner().id
    }

    /// Creates a partner with an optional role and parent; returns its id.
    pub async fn partner(&mut self, program_id: &str, role: &str, parent_id: &str) -> String {
        let partner = hpb::Partner {
            display_name: format!("{role} partner"),
            role: role.into(),
            parent_id: parent_id.into(),
            ..Default::default()
        };
        let request = hpb::CreatePartnerRequest {
            program_id: program_id.into(),
            partner: Some(partner),
            request_id: String::new(),
        };
        self.hierarchy.create_partner(request).await.unwrap().into_inner().id
    }
}

/// A fresh UUID string.
pub fn id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// USD money.
pub fn usd(amount: &str) -> Option<types::Money> {
    Some(types::Money { currency_code: "USD".into(), amount: amount.into() })
}

/// An RFC 3339 time as a protobuf timestamp.
pub fn ts(text: &str) -> Option<prost_types::Timestamp> {
    let time: chrono::DateTime<chrono::Utc> = text.parse().unwrap();
    Some(prost_types::Timestamp { seconds: time.timestamp(), nanos: 0 })
}

/// PERCENTAGE on payment with 30 clearance days.
pub fn percentage(rate: &str) -> pb::AgreementRules {
    pb::AgreementRules {
        model: pb::CommissionModel::Percentage as i32,
        trigger: pb::CommissionTrigger::OnPayment as i32,
        rate: rate.into(),
        clearance_days: 30,
        ..Default::default()
    }
}

/// The sorted field paths of an INVALID_ARGUMENT's field violations.
pub fn violations(status: &tonic::Status) -> Vec<String> {
    let mut fields: Vec<String> = status
        .get_details_bad_request()
        .map(|bad| bad.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default();
    fields.sort();
    fields
}
