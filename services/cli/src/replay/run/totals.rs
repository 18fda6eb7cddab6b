//! What the summary reports, read back through the API.

// The replay's shared vocabulary (clients, errors, money helpers).
use super::*;

/// Settled sales by the model of the agreement they settled under: each
/// settled sale's seller's own agreement (every version takes force before
/// the data starts and none is replaced), else the program default's.
pub(super) async fn settled_by_model(
    clients: &Clients,
    plan: &Plan,
    created: &Created,
) -> Result<BTreeMap<String, i64>, ReplayError> {
    let default_model = plan.agreements.iter().find(|a| a.partner.is_none()).map_or("NONE", |a| a.rules.model.as_str());
    let own: std::collections::HashMap<&str, &str> = plan
        .agreements
        .iter()
        .filter_map(|a| {
            let partner = created.partners.get(a.partner?)?;
            Some((partner.id.as_str(), a.rules.model.as_str()))
        })
        .collect();
    let mut counts: BTreeMap<String, i64> = BTreeMap::new();
    for state in SETTLED_STATES {
        let mut page_token = String::new();
        loop {
            let request = attribution::ListSalesRequest {
                program_id: created.program_id.clone(),
                state: state as i32,
                page_size: 1000,
                page_token: page_token.clone(),
            };
            let page = retry::idempotent("ListSales", &clients.attribution, &request, |mut c, r| async move {
                c.list_sales(r).await
            })
            .await
            .map_err(rpc("ListSales"))?;
            for sale in &page.sales {
                let model = own.get(sale.partner_id.as_str()).copied().unwrap_or(default_model);
                *counts.entry(model.to_string()).or_default() += 1;
            }
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
    }
    Ok(counts)
}

/// Sums GetEarningsSummary over every partner of the program (GBP).
pub(super) async fn commission_totals(clients: &Clients, program_id: &str) -> Result<CommissionTotals, ReplayError> {
    let call = "GetEarningsSummary";
    let request = ledger::GetEarningsSummaryRequest {
        program_id: program_id.to_string(),
        partner_ids: Vec::new(),
        ..Default::default()
    };
    let response =
        retry::idempotent(call, &clients.ledger, &request, |mut c, r| async move { c.get_earnings_summary(r).await })
            .await
            .map_err(rpc(call))?;
    let mut totals = CommissionTotals::default();
    for summary in response.summaries.iter().filter(|s| s.currency_code == "GBP") {
        totals.direct += parse_amount(call, summary.direct.as_ref())?;
        totals.split += parse_amount(call, summary.split.as_ref())?;
        totals.r#override += parse_amount(call, summary.r#override.as_ref())?;
        totals.margin += parse_amount(call, summary.margin.as_ref())?;
        totals.clawback += parse_amount(call, summary.clawback.as_ref())?;
        totals.clawback_by_kind.direct += parse_amount(call, summary.clawback_direct.as_ref())?;
        totals.clawback_by_kind.split += parse_amount(call, summary.clawback_split.as_ref())?;
        totals.clawback_by_kind.r#override += parse_amount(call, summary.clawback_override.as_ref())?;
        totals.clawback_by_kind.margin += parse_amount(call, summary.clawback_margin.as_ref())?;
        totals.total += parse_amount(call, summary.total.as_ref())?;
    }
    let ClawbackByKind { direct, split, r#override, margin } = &mut totals.clawback_by_kind;
    for amount in [
        &mut totals.direct,
        &mut totals.split,
        &mut totals.r#override,
        &mut totals.margin,
        &mut totals.clawback,
        direct,
        split,
        r#override,
        margin,
        &mut totals.total,
    ] {
        amount.rescale(2);
    }
    Ok(totals)
}

/// The program's refunds by state with their sums (ListRefunds, every page),
/// and the partners whose GBP payable balance is negative (GetBalances).
pub(super) async fn refund_totals(
    clients: &Clients,
    program_id: &str,
    refund_plan: &RefundPlan,
    refunds_recorded: u64,
    elapsed: Duration,
) -> Result<RefundTotals, ReplayError> {
    let mut totals = RefundTotals {
        credit_lines_matched: refund_plan.matched_lines,
        credit_lines_unmatched: refund_plan.unmatched_lines.iter().map(|(r, n)| (r.to_string(), *n)).collect(),
        values_rounded: refund_plan.rounded_values,
        refunds_capped: refund_plan.capped_refunds,
        refunds_dropped: refund_plan.dropped_refunds,
        refunds_recorded,
        elapsed_seconds: Decimal::new(i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX), 3),
        ..Default::default()
    };
    let mut page_token = String::new();
    loop {
        let call = "ListRefunds";
        let request = attribution::ListRefundsRequest {
            program_id: program_id.to_string(),
            page_size: 1000,
            page_token: page_token.clone(),
            ..Default::default()
        };
        let page =
            retry::idempotent(call, &clients.attribution, &request, |mut c, r| async move { c.list_refunds(r).await })
                .await
                .map_err(rpc(call))?;
        for refund in &page.refunds {
            match attribution::RefundState::try_from(refund.state) {
                Ok(attribution::RefundState::Applied) => totals.refunds_applied += 1,
                Ok(attribution::RefundState::Failed) => totals.refunds_failed += 1,
                _ => totals.refunds_pending += 1,
            }
            totals.refunded_amount += parse_amount(call, refund.amount.as_ref())?;
            if let Some(clawback) = refund.clawback_amount.as_ref() {
                totals.clawback_amount += parse_amount(call, Some(clawback))?;
            }
        }
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let call = "GetBalances";
    let request = ledger::GetBalancesRequest {
        program_id: program_id.to_string(),
        partner_ids: Vec::new(),
        currency_code: "GBP".into(),
    };
    let balances =
        retry::idempotent(call, &clients.ledger, &request, |mut c, r| async move { c.get_balances(r).await })
            .await
            .map_err(rpc(call))?;
    for balance in &balances.balances {
        let payable = parse_amount(call, balance.payable.as_ref())?;
        if payable < Decimal::ZERO {
            totals.partners_with_negative_balance += 1;
            totals.negative_balance_total += payable;
        }
    }
    for amount in [&mut totals.refunded_amount, &mut totals.clawback_amount, &mut totals.negative_balance_total] {
        amount.rescale(2);
    }
    Ok(totals)
}

/// The timed sections of a run.
pub(super) struct Timing {
    /// From the first RecordSales until every settlement saga finished.
    pub(super) elapsed: Duration,
    /// Settled sales of the program before this run recorded any.
    pub(super) settled_before: i64,
    /// Settled sales of the program when every settlement saga had finished.
    pub(super) settled_after: i64,
    /// Recording refunds and waiting for their clawback sagas.
    pub(super) refunds: Duration,
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn summarize(
    clients: &Clients,
    options: &ReplayOptions,
    data: &Dataset,
    program_id: String,
    recorded: u64,
    with_customer: u64,
    payouts: Vec<MonthPayouts>,
    refund_plan: &RefundPlan,
    refunds_recorded: u64,
    timing: Timing,
    config_path: String,
) -> Result<Summary, ReplayError> {
    use attribution::{SagaState, SaleState};
    let settled = count_settled(clients, &program_id).await?;
    let partially_refunded = count_sales(clients, &program_id, SaleState::PartiallyRefunded).await?;
    let refunded = count_sales(clients, &program_id, SaleState::Refunded).await?;
    let failed = count_sales(clients, &program_id, SaleState::Failed).await?;
    let unattributed = count_sales(clients, &program_id, SaleState::Unattributed).await?;
    let pending = count_sales(clients, &program_id, SaleState::Pending).await?;
    let sagas_stuck = count_sagas(clients, &program_id, "", SagaState::Stuck).await?;
    let refunds = refund_totals(clients, &program_id, refund_plan, refunds_recorded, timing.refunds).await?;
    let commission = commission_totals(clients, &program_id).await?;
    let millis = i64::try_from(timing.elapsed.as_millis()).unwrap_or(i64::MAX).max(1);
    let elapsed_seconds = Decimal::new(millis, 3);
    let settled_this_run = (timing.settled_after - timing.settled_before).max(0);
    let settled_per_second =
        (Decimal::from(settled_this_run) * Decimal::from(1000) / Decimal::from(millis)).round_dp(1);
    Ok(Summary {
        program_id,
        seed: options.seed,
        rows_read: data.rows,
        invoices_read: data.invoices.len() as u64,
        sales_recorded: recorded,
        sales_with_customer: with_customer,
        settled,
        partially_refunded,
        refunded,
        failed,
        unattributed,
        pending,
        sagas_stuck,
        skipped: data.skipped.iter().map(|(reason, count)| (reason.to_string(), *count)).collect(),
        credit_invoices: data.credit_invoices,
        credit_lines: data.credit_lines,
        refunds,
        commission,
        payouts,
        settlement: Default::default(),
        settled_by_model: BTreeMap::new(),
        elapsed_seconds,
        settled_this_run,
        settled_per_second,
        config_path,
    })
}
