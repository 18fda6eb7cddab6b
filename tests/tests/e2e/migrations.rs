//! Deployment order (k8s/): the migration job (`accrue migrate --provision`)
//! runs first on a fresh database, then the five services start with
//! migrations off and settle a sale end to end; the job run again is a
//! no-op while they serve.

use std::collections::HashMap;
use std::time::Duration;

use accrue_cli::migrate::{MigrateOptions, run};
use accrue_cli::stack::{Stack, StackConfig};
use accrue_e2e::Clients;
use accrue_e2e::fixtures::{
    dec, default_agreement, link_with_lead, partner, payment, percentage_on_payment, program, record_and_settle,
};
use accrue_testkit::TestDb;

#[tokio::test(flavor = "multi_thread")]
async fn services_with_migrations_off_work_after_the_migration_job_and_a_second_job_is_a_no_op() {
    let db = TestDb::create().await.unwrap();
    let job = MigrateOptions {
        database_url: Some(db.url.clone()),
        provision: true,
        passwords: HashMap::new(),
        wait: Duration::ZERO,
    };
    let first = run(&job).await.unwrap();
    assert_eq!(first.len(), 5);
    for report in &first {
        assert!(report.known > 0 && report.applied == report.known, "{report}");
        assert_eq!(report.role, format!("accrue_{}", report.schema));
    }

    let mut config = StackConfig::for_tests(db.url.clone());
    config.migrate = false;
    let stack = Stack::start(config).await.unwrap();
    for (service, url) in stack.endpoints.list() {
        accrue_testkit::wait_serving(accrue_kit::client::channel(url).unwrap(), service).await.unwrap();
    }
    let mut c = Clients::connect(&stack.endpoints, &stack.admin).unwrap();
    let program_id = program(&mut c).await;
    default_agreement(&mut c, &program_id, percentage_on_payment("0.10")).await;
    let seller = partner(&mut c, &program_id, "", "").await;
    link_with_lead(&mut c, &program_id, &seller, "cust-1").await;
    let (_, lines) =
        record_and_settle(&mut c, payment(&program_id, "s-1", "cust-1", "150.00", "", "2024-03-01T12:00:00Z")).await;
    assert_eq!(lines.len(), 1);
    assert_eq!(accrue_e2e::amount(lines[0].amount.as_ref()).unwrap(), dec("15.00"));

    // A second job (the next release's, with nothing new) changes nothing
    // under running services.
    let second = run(&job).await.unwrap();
    assert!(second.iter().all(|report| report.applied == 0), "{second:?}");
    assert_eq!(
        second.iter().map(|r| (r.schema, r.known)).collect::<Vec<_>>(),
        first.iter().map(|r| (r.schema, r.known)).collect::<Vec<_>>()
    );
    drop(c);
    stack.shutdown().await.unwrap();
}
