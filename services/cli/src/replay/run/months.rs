//! The month-by-month timeline: each month's refunds, clearance and payout run.

// The replay's shared vocabulary (clients, errors, money helpers).
use super::*;

/// The first instant of the month after (year, month), UTC.
pub(super) fn next_month_start(year: i32, month: u32) -> Option<DateTime<Utc>> {
    let (y, m) = if month == 12 { (year + 1, 1) } else { (year, month + 1) };
    NaiveDate::from_ymd_opt(y, m, 1).and_then(|d| d.and_hms_opt(0, 0, 0)).map(|t| Utc.from_utc_datetime(&t))
}

/// The months ("YYYY-MM", month end) from the first sale's month to the month
/// after the last sale's, so the last sales can clear.
pub fn replay_months(first: DateTime<Utc>, last: DateTime<Utc>) -> Vec<(String, DateTime<Utc>)> {
    let mut months = Vec::new();
    let (mut year, mut month) = (first.year(), first.month());
    let (end_year, end_month) = if last.month() == 12 { (last.year() + 1, 1) } else { (last.year(), last.month() + 1) };
    while (year, month) <= (end_year, end_month) {
        if let Some(next) = next_month_start(year, month) {
            // The last microsecond of the month (Postgres keeps microseconds).
            months.push((format!("{year:04}-{month:02}"), next - chrono::Duration::microseconds(1)));
        }
        (year, month) = if month == 12 { (year + 1, 1) } else { (year, month + 1) };
    }
    months
}

/// What the month-by-month phase did.
pub(super) struct Paid {
    pub(super) months: Vec<MonthPayouts>,
    /// RecordRefund calls acknowledged.
    pub(super) refunds_recorded: u64,
    /// Time spent recording refunds and waiting for their sagas.
    pub(super) refund_time: Duration,
}

/// For each month: its refunds (RecordRefund, then wait for the clawback
/// sagas), ClearMatured(as_of = month end), CreatePayoutRun, then the run's
/// money flow ([`settle_month`]: approve, pay, a few failed and retried, one
/// payout of the replay rejected). Refunds are
/// in application order (see [`refunds::plan`]); any after the last month end
/// (none in the data set) are recorded after the last run.
#[allow(clippy::too_many_arguments)]
pub(super) async fn pay_months(
    clients: &Clients,
    program_id: &str,
    plan: &Plan,
    created: &Created,
    sales: &[&Invoice],
    refunds: &[PlannedRefund],
    mode: ProgressMode,
    stall_timeout: Duration,
) -> Result<Paid, ReplayError> {
    let mut paid = Paid { months: Vec::new(), refunds_recorded: 0, refund_time: Duration::ZERO };
    let (Some(first), Some(last)) = (sales.first(), sales.last()) else { return Ok(paid) };
    let partners: PartnerKeys = created.partners.iter().map(|p| (p.id.clone(), p.external_id.clone())).collect();
    let months = replay_months(first.occurred_at, last.occurred_at);
    let phase = Phase::start(mode, "refunding, clearing & paying", months.len() as u64);
    let mut pending = refunds;
    let mut rejected = false;
    for (done, (period, month_end)) in months.into_iter().enumerate() {
        let due = pending.iter().take_while(|r| r.occurred_at <= month_end).count();
        let (now, later) = pending.split_at(due);
        pending = later;
        let started = Instant::now();
        let recorded = record_refunds(clients, program_id, now).await?;
        if recorded > 0 {
            wait_for_sagas(clients, program_id, CLAWBACK_SALE, recorded, ProgressMode::Quiet, stall_timeout).await?;
        }
        paid.refund_time += started.elapsed();
        paid.refunds_recorded += recorded;
        let request =
            ledger::ClearMaturedRequest { program_id: program_id.to_string(), as_of: Some(timestamp(month_end)) };
        let cleared =
            retry::idempotent(
                "ClearMatured",
                &clients.ledger,
                &request,
                |mut c, r| async move { c.clear_matured(r).await },
            )
            .await
            .map_err(rpc(format!("ClearMatured {period}")))?;
        let request = payouts::CreatePayoutRunRequest {
            program_id: program_id.to_string(),
            currency_code: plan.program.default_currency.clone(),
            period: period.clone(),
            cutoff: Some(timestamp(month_end)),
            minimum_amount: None,
            request_id: format!("replay-{}-payout-run-{period}", plan.seed),
        };
        let run = retry::idempotent("CreatePayoutRun", &clients.payouts, &request, |mut c, r| async move {
            c.create_payout_run(r).await
        })
        .await
        .map_err(rpc(format!("CreatePayoutRun {period}")))?;
        rejected |=
            settle_month(clients, program_id, plan.seed, &partners, &period, &run.id, month_end, !rejected).await?;
        let call = "CreatePayoutRun";
        paid.months.push(MonthPayouts {
            period,
            payout_run_id: run.id,
            cleared_entries: cleared.cleared_count,
            payout_count: run.payout_count,
            refunds_recorded: recorded,
            amount: parse_amount(call, run.total_amount.as_ref())?,
            carried_forward_count: run.carried_forward_count,
            carried_forward_amount: parse_amount(call, run.carried_forward_amount.as_ref())?,
        });
        phase.set(done as u64 + 1);
    }
    if !pending.is_empty() {
        let started = Instant::now();
        let recorded = record_refunds(clients, program_id, pending).await?;
        wait_for_sagas(clients, program_id, CLAWBACK_SALE, recorded, ProgressMode::Quiet, stall_timeout).await?;
        paid.refund_time += started.elapsed();
        paid.refunds_recorded += recorded;
    }
    phase.finish(&format!("{} payout runs, {} refunds", paid.months.len(), paid.refunds_recorded));
    Ok(paid)
}

pub(super) fn refund_request(program_id: &str, refund: &PlannedRefund) -> attribution::RecordRefundRequest {
    attribution::RecordRefundRequest {
        program_id: program_id.to_string(),
        external_id: refund.external_id.clone(),
        sale: Some(attribution::record_refund_request::Sale::SaleExternalId(refund.sale_external_id.clone())),
        amount: Some(gbp(refund.amount)),
        occurred_at: Some(timestamp(refund.occurred_at)),
        reason: format!("credit invoice {}", refund.credit_invoice),
    }
}

/// Records `refunds` in order ([`record_refund_requests`]). Returns how many
/// were acknowledged.
pub(super) async fn record_refunds(
    clients: &Clients,
    program_id: &str,
    refunds: &[PlannedRefund],
) -> Result<u64, ReplayError> {
    let requests: Vec<_> = refunds.iter().map(|refund| refund_request(program_id, refund)).collect();
    record_refund_requests(clients, &requests).await
}

/// The sale a refund request names (its id or external id).
fn refunded_sale(request: &attribution::RecordRefundRequest) -> Option<&str> {
    use attribution::record_refund_request::Sale;
    match &request.sale {
        Some(Sale::SaleExternalId(id) | Sale::SaleId(id)) => Some(id.as_str()),
        None => None,
    }
}

/// Records `requests` in order, [`REFUND_CONCURRENCY`] at a time, in waves that
/// never hold two refunds of one sale: a sale's refunds get their sequence in
/// application order. Returns how many were acknowledged.
pub(crate) async fn record_refund_requests(
    clients: &Clients,
    requests: &[attribution::RecordRefundRequest],
) -> Result<u64, ReplayError> {
    let mut recorded = 0u64;
    let mut rest = requests;
    while !rest.is_empty() {
        let mut sales = std::collections::HashSet::new();
        let wave =
            rest.iter().take_while(|r| sales.insert(refunded_sale(r))).take(REFUND_CONCURRENCY * 4).count().max(1);
        let (now, later) = rest.split_at(wave);
        rest = later;
        let calls = now.iter().map(|request| async move {
            retry::idempotent("RecordRefund", &clients.attribution, request, |mut c, r| async move {
                c.record_refund(r).await
            })
            .await
            .map_err(rpc(format!("RecordRefund {}", request.external_id)))
        });
        let acknowledged: Vec<_> =
            futures::stream::iter(calls).buffer_unordered(REFUND_CONCURRENCY).try_collect().await?;
        recorded += acknowledged.len() as u64;
    }
    Ok(recorded)
}
