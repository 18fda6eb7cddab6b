//! Shared harness of the commission service's gRPC tests: a fresh Postgres
//! database, the real hierarchy service and the real commission service, both
//! in-process on ephemeral ports. No mocks.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use accrue_proto::commission::v1 as pb;
use accrue_proto::commission::v1::commission_service_client::CommissionServiceClient;
use accrue_proto::hierarchy::v1 as hpb;
use accrue_proto::hierarchy::v1::hierarchy_service_client::HierarchyServiceClient;
use accrue_proto::types::v1 as types;
use accrue_testkit::TestDb;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic_types::StatusExt;

/// The running services; dropping it stops them.
pub struct Service {
    /// Commission client.
    pub client: CommissionServiceClient<Channel>,
    /// Hierarchy client (programs and partners for schemes and quotes).
    pub hierarchy: HierarchyServiceClient<Channel>,
    /// Stops both services.
    pub shutdown: CancellationToken,
    /// The test database (dropped last).
    pub db: TestDb,
}

impl Drop for Service {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Starts hierarchy and commission on a fresh database and waits until both serve.
pub async fn start() -> Service {
    let db = TestDb::create().await.expect("test database");
    let shutdown = CancellationToken::new();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hierarchy_url = format!("http://{}", listener.local_addr().unwrap());
    let config = accrue_hierarchy::Config { database_url: db.url.clone(), max_connections: 4 };
    tokio::spawn(accrue_hierarchy::run(config, listener, shutdown.clone()));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let commission_url = format!("http://{}", listener.local_addr().unwrap());
    let config = accrue_commission::Config {
        database_url: db.url.clone(),
        max_connections: 4,
        hierarchy_url: hierarchy_url.clone(),
    };
    tokio::spawn(accrue_commission::run(config, listener, shutdown.clone()));

    let hierarchy_channel = accrue_kit::client::channel(&hierarchy_url).unwrap();
    let commission_channel = accrue_kit::client::channel(&commission_url).unwrap();
    accrue_testkit::wait_serving(hierarchy_channel.clone(), accrue_hierarchy::SERVICE_NAME).await.unwrap();
    accrue_testkit::wait_serving(commission_channel.clone(), accrue_commission::SERVICE_NAME).await.unwrap();
    let client = CommissionServiceClient::new(commission_channel)
        .max_decoding_message_size(accrue_kit::server::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(accrue_kit::server::MAX_MESSAGE_BYTES);
    let hierarchy = HierarchyServiceClient::new(hierarchy_channel);
    Service { client, hierarchy, shutdown, db }
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
