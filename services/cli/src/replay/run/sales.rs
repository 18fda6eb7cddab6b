//! Recording the sales and waiting for their sagas.

// The replay's shared vocabulary (clients, errors, money helpers).
use super::*;

pub(super) fn sale_request(program_id: &str, invoice: &Invoice) -> attribution::RecordSaleRequest {
    attribution::RecordSaleRequest {
        program_id: program_id.to_string(),
        external_id: invoice.external_id(),
        customer_external_id: invoice.customer.clone().unwrap_or_default(),
        event_type: types::SaleEventType::Payment as i32,
        amount: Some(gbp(invoice.total)),
        product_code: invoice.product_code.clone(),
        service_code: String::new(),
        occurred_at: Some(timestamp(invoice.occurred_at)),
    }
}

/// Records every sale in time order, 1000 per stream message. Returns how
/// many sales the service acknowledged.
pub(super) async fn record_sales(
    clients: &Clients,
    program_id: &str,
    sales: &[&Invoice],
    mode: ProgressMode,
) -> Result<u64, ReplayError> {
    let phase = Phase::start(mode, "recording sales", sales.len() as u64);
    let requests = sales.iter().map(|invoice| sale_request(program_id, invoice)).collect();
    let recorded = record_sale_requests(clients, requests, 1, &phase).await?;
    phase.finish(&format!("{recorded} sales recorded"));
    Ok(recorded)
}

/// Records `requests` in order, [`SALES_PER_MESSAGE`] per stream message and
/// [`MESSAGES_PER_CALL`] messages per RecordSales call, `streams` calls in
/// flight at once; `phase` follows the sales sent. Returns how many sales the
/// service acknowledged (every one, or an error).
pub(crate) async fn record_sale_requests(
    clients: &Clients,
    requests: Vec<attribution::RecordSaleRequest>,
    streams: usize,
    phase: &Phase,
) -> Result<u64, ReplayError> {
    let sent = Arc::new(AtomicU64::new(0));
    let mut messages = Vec::with_capacity(requests.len().div_ceil(SALES_PER_MESSAGE));
    let mut requests = requests.into_iter().peekable();
    while requests.peek().is_some() {
        messages.push(attribution::RecordSalesRequest { sales: requests.by_ref().take(SALES_PER_MESSAGE).collect() });
    }
    let mut calls = Vec::with_capacity(messages.len().div_ceil(MESSAGES_PER_CALL));
    let mut messages = messages.into_iter().peekable();
    while messages.peek().is_some() {
        calls.push(messages.by_ref().take(MESSAGES_PER_CALL).collect::<Vec<_>>());
    }
    let calls = calls.into_iter().map(|call| {
        let client = clients.attribution.clone();
        let (sent, phase) = (sent.clone(), phase.clone());
        async move {
            let expected: usize = call.iter().map(|m| m.sales.len()).sum();
            let first = call.first().and_then(|m| m.sales.first()).map(|s| s.external_id.clone()).unwrap_or_default();
            // What this call's attempts counted as sent: a retry counts again from zero.
            let attempt = Arc::new(AtomicU64::new(0));
            // A stream cut mid-way is sent again from its first message: the
            // service acknowledges the sales it already recorded by external id.
            let response = retry::idempotent("RecordSales", &client, &call, |mut c, call| {
                let (sent, phase, attempt) = (sent.clone(), phase.clone(), attempt.clone());
                sent.fetch_sub(attempt.swap(0, Ordering::Relaxed), Ordering::Relaxed);
                let stream = futures::stream::iter(call).map(move |message| {
                    let count = message.sales.len() as u64;
                    attempt.fetch_add(count, Ordering::Relaxed);
                    phase.set(sent.fetch_add(count, Ordering::Relaxed) + count);
                    message
                });
                async move { c.record_sales(stream).await }
            })
            .await
            .map_err(rpc(format!("RecordSales (batch from {first})")))?;
            if response.sales.len() != expected {
                return Err(ReplayError::Response {
                    call: "RecordSales".into(),
                    message: format!("{} sales acknowledged of {expected} (batch from {first})", response.sales.len()),
                });
            }
            Ok(expected as u64)
        }
    });
    let acknowledged: Vec<u64> = futures::stream::iter(calls).buffered(streams.max(1)).try_collect().await?;
    Ok(acknowledged.iter().sum())
}

/// Sagas of `kind` (empty: every kind) in `state`.
pub(crate) async fn count_sagas(
    clients: &Clients,
    program_id: &str,
    kind: &str,
    state: attribution::SagaState,
) -> Result<i64, ReplayError> {
    let request = attribution::ListSagasRequest {
        program_id: program_id.to_string(),
        state: state as i32,
        page_size: 1,
        page_token: String::new(),
        kind: kind.to_string(),
    };
    let response =
        retry::idempotent("ListSagas", &clients.attribution, &request, |mut c, r| async move { c.list_sagas(r).await })
            .await
            .map_err(rpc("ListSagas"))?;
    Ok(response.total_size)
}

pub(crate) async fn count_sales(
    clients: &Clients,
    program_id: &str,
    state: attribution::SaleState,
) -> Result<i64, ReplayError> {
    let request = attribution::ListSalesRequest {
        program_id: program_id.to_string(),
        state: state as i32,
        page_size: 1,
        page_token: String::new(),
    };
    let response =
        retry::idempotent("ListSales", &clients.attribution, &request, |mut c, r| async move { c.list_sales(r).await })
            .await
            .map_err(rpc("ListSales"))?;
    Ok(response.total_size)
}

/// Sales settled at some point: SETTLED, PARTIALLY_REFUNDED or REFUNDED.
pub(super) async fn count_settled(clients: &Clients, program_id: &str) -> Result<i64, ReplayError> {
    let mut settled = 0;
    for state in SETTLED_STATES {
        settled += count_sales(clients, program_id, state).await?;
    }
    Ok(settled)
}

/// The shortest pause between two polls of [`wait_for_sagas`].
const POLL: Duration = Duration::from_millis(250);
/// The pause between two polls is at least this many times as long as the
/// last poll took: a count that grows slow with the backlog (it reads every
/// unfinished saga) then stays a bounded share of one database backend.
const POLL_PAUSE_FACTOR: u32 = 10;

/// Polls ListSagas until no saga of `kind` is RUNNING or UNWINDING; progress
/// counts the ones that finished out of `expected` (every saga waited for
/// exists before the wait starts). Only the unfinished are counted each tick,
/// the UNWINDING ones only once none is RUNNING, at most every [`POLL`] and
/// never more often than [`POLL_PAUSE_FACTOR`] allows: counting more made
/// the waiting itself a growing load on the database the replay (and the
/// benchmark) measures.
pub(crate) async fn wait_for_sagas(
    clients: &Clients,
    program_id: &str,
    kind: &str,
    expected: u64,
    mode: ProgressMode,
    stall_timeout: Duration,
) -> Result<(), ReplayError> {
    use attribution::SagaState;
    let label = if kind == CLAWBACK_SALE { "clawing back" } else { "settling sales" };
    let phase = Phase::start(mode, label, expected);
    let mut best = i64::MAX;
    let mut last_change = Instant::now();
    loop {
        let polled = Instant::now();
        let mut unfinished = count_sagas(clients, program_id, kind, SagaState::Running).await?;
        if unfinished == 0 {
            unfinished = count_sagas(clients, program_id, kind, SagaState::Unwinding).await?;
        }
        let cost = polled.elapsed();
        phase.set(expected.saturating_sub(u64::try_from(unfinished).unwrap_or(0)));
        if unfinished == 0 {
            phase.finish(&format!("{expected} {kind} sagas done or failed"));
            return Ok(());
        }
        if unfinished < best {
            best = unfinished;
            last_change = Instant::now();
        } else if last_change.elapsed() > stall_timeout {
            return Err(ReplayError::Stalled(stall_timeout, unfinished));
        }
        tokio::time::sleep(POLL.max(cost * POLL_PAUSE_FACTOR)).await;
    }
}
