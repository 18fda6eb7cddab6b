//! The harness of attribution's API tests: the real hierarchy and attribution
//! services in-process on ephemeral ports over a fresh Postgres database, real
//! gRPC between them. No saga worker runs, so a recorded sale stays PENDING
//! with its saga started and commission and ledger are never called (their
//! URLs point at a closed port).
// Each test binary that includes this module uses only part of it.
#![allow(dead_code)]

use accrue_attribution::SagaOptions;
use accrue_kit::client::AuthChannel;
use accrue_proto::attribution::v1::attribution_service_client::AttributionServiceClient;
use accrue_proto::hierarchy::v1::hierarchy_service_client::HierarchyServiceClient;
use accrue_testkit::TestServices;

/// Clients of the two services; the services stop when it is dropped.
pub struct Harness {
    pub attribution: AttributionServiceClient<AuthChannel>,
    pub hierarchy: HierarchyServiceClient<AuthChannel>,
    pub attribution_url: String,
    pub services: TestServices,
}

/// Starts hierarchy, then attribution pointed at it.
pub async fn start() -> Harness {
    let services = TestServices::new().await;
    let hierarchy_url = services.spawn::<accrue_hierarchy::Hierarchy>(accrue_hierarchy::Config::default()).await;
    let config = accrue_attribution::Config {
        hierarchy_url: hierarchy_url.clone(),
        commission_url: "http://127.0.0.1:9".into(),
        ledger_url: "http://127.0.0.1:9".into(),
        max_future_skew: accrue_kit::convert::DEFAULT_MAX_FUTURE_SKEW,
        stream_idle_timeout: std::time::Duration::from_secs(2),
        saga: SagaOptions { workers: 0, ..SagaOptions::default() },
        hooks: Default::default(),
    };
    let attribution_url = services.spawn::<accrue_attribution::Attribution>(config).await;
    Harness {
        attribution: services.client(&attribution_url),
        hierarchy: services.client(&hierarchy_url),
        attribution_url,
        services,
    }
}

impl Harness {
    /// Creates a GBP program called `name`; returns its id.
    pub async fn gbp_program(&self, name: &str) -> String {
        let program = accrue_proto::hierarchy::v1::Program {
            display_name: name.into(),
            default_currency: "GBP".into(),
            ..Default::default()
        };
        let request =
            accrue_proto::hierarchy::v1::CreateProgramRequest { program: Some(program), request_id: String::new() };
        self.hierarchy.clone().create_program(request).await.unwrap().into_inner().id
    }
}
