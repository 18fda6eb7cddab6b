//! Shared helpers for the end-to-end tests: the five services on ephemeral
//! ports over a fresh Postgres database, typed clients, the data set's
//! location, and paging helpers that read whole collections.

pub mod fixtures;

use std::path::PathBuf;

use accrue_cli::stack::{Stack, StackConfig};
use accrue_proto::attribution::v1 as attribution;
use accrue_proto::ledger::v1 as ledger;
use accrue_testkit::TestDb;
use anyhow::Context;

/// The UCI Online Retail directory: `ACCRUE_DATA_DIR`, else the repository's
/// bundled copy (`data/uci_online_retail`), else `/work/shared/data/uci_online_retail`.
pub fn data_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("ACCRUE_DATA_DIR")
        && !dir.is_empty()
    {
        return PathBuf::from(dir);
    }
    let bundled = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../data/uci_online_retail"));
    if bundled.join("online_retail.csv.gz").is_file() {
        return bundled;
    }
    PathBuf::from("/work/shared/data/uci_online_retail")
}

pub use accrue_cli::clients::Clients;

/// The five services on ephemeral ports over a fresh database. The database
/// is dropped when this is dropped; call [`TestStack::shutdown`] first.
pub struct TestStack {
    /// The running services.
    pub stack: Stack,
    /// Clients of them.
    pub clients: Clients,
    /// The database (dropped last).
    pub db: TestDb,
}

impl TestStack {
    /// Creates a fresh database, migrates it, starts the services and waits
    /// until every one reports SERVING.
    pub async fn start() -> anyhow::Result<TestStack> {
        TestStack::start_with(|_| {}).await
    }

    /// [`TestStack::start`] with the test's changes to the stack's config
    /// (metrics ports, saga options…).
    pub async fn start_with(change: impl FnOnce(&mut StackConfig)) -> anyhow::Result<TestStack> {
        let db = TestDb::create().await.context("creating a test database")?;
        let mut config = StackConfig::for_tests(db.url.clone());
        change(&mut config);
        let stack = Stack::start(config).await.context("starting the stack")?;
        for (service, url) in stack.endpoints.list() {
            accrue_testkit::wait_serving(accrue_kit::client::channel(url)?, service)
                .await
                .map_err(anyhow::Error::msg)?;
        }
        let clients = Clients::connect(&stack.endpoints, &stack.admin)?;
        Ok(TestStack { stack, clients, db })
    }

    /// Stops the services (the database goes when `self` is dropped).
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let TestStack { stack, clients, db } = self;
        drop(clients);
        stack.shutdown().await?;
        drop(db);
        Ok(())
    }
}

/// Every sale of a program (ListSales, all pages).
pub async fn all_sales(clients: &Clients, program_id: &str) -> anyhow::Result<Vec<attribution::Sale>> {
    let mut client = clients.attribution.clone();
    let mut sales = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_sales(attribution::ListSalesRequest {
                program_id: program_id.to_string(),
                state: 0,
                page_size: 1000,
                page_token: page_token.clone(),
            })
            .await
            .context("ListSales")?
            .into_inner();
        sales.extend(page.sales);
        if page.next_page_token.is_empty() {
            return Ok(sales);
        }
        page_token = page.next_page_token;
    }
}

/// Every ledger entry of a program (ListEntries, all pages, oldest first).
pub async fn all_entries(clients: &Clients, program_id: &str) -> anyhow::Result<Vec<ledger::Entry>> {
    let mut client = clients.ledger.clone();
    let mut entries = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_entries(ledger::ListEntriesRequest {
                program_id: program_id.to_string(),
                page_size: 1000,
                page_token: page_token.clone(),
                ..Default::default()
            })
            .await
            .context("ListEntries")?
            .into_inner();
        entries.extend(page.entries);
        if page.next_page_token.is_empty() {
            return Ok(entries);
        }
        page_token = page.next_page_token;
    }
}

/// A wire amount as an exact decimal (absent or empty → 0).
pub fn amount(money: Option<&accrue_proto::types::v1::Money>) -> anyhow::Result<rust_decimal::Decimal> {
    match money {
        Some(m) if !m.amount.is_empty() => {
            m.amount.parse().with_context(|| format!("amount {:?} is not a decimal", m.amount))
        }
        _ => Ok(rust_decimal::Decimal::ZERO),
    }
}

/// How long [`wait_saga`] waits for a saga to finish.
pub const SAGA_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Polls GetSaga until the saga is DONE, FAILED or STUCK (errors after [`SAGA_WAIT`]).
pub async fn wait_saga(clients: &Clients, saga_id: &str) -> anyhow::Result<attribution::Saga> {
    let finished = [attribution::SagaState::Done, attribution::SagaState::Failed, attribution::SagaState::Stuck];
    let deadline = tokio::time::Instant::now() + SAGA_WAIT;
    let mut client = clients.attribution.clone();
    loop {
        let saga = client
            .get_saga(attribution::GetSagaRequest { id: saga_id.to_string() })
            .await
            .context("GetSaga")?
            .into_inner();
        if finished.iter().any(|state| *state as i32 == saga.state) {
            return Ok(saga);
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "saga {saga_id} did not finish in time: {saga:#?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The ledger entries of one sale, oldest first (one page of up to 1000).
pub async fn sale_entries(clients: &Clients, program_id: &str, sale_id: &str) -> anyhow::Result<Vec<ledger::Entry>> {
    let mut client = clients.ledger.clone();
    Ok(client
        .list_entries(ledger::ListEntriesRequest {
            program_id: program_id.to_string(),
            sale_id: sale_id.to_string(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .context("ListEntries")?
        .into_inner()
        .entries)
}
