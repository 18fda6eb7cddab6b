//! `accrue payouts …` and `accrue audit list` (issue 12 item 8): a finance
//! operator's daily work against a running stack without grpcurl or proto
//! files. Each command is one or a few PayoutService calls; its output is a
//! human table by default, or JSON (one object per line) with `--json`.
//! Amounts are printed as the service sends them (decimal strings in the
//! currency's minor unit, never floats).
//!
//! Every call is retried while the service is briefly away (UNAVAILABLE, a
//! broken connection; [`crate::retry`]): reads as they are, changes under
//! their request id — the one given, or one made up for this invocation —
//! so a retried approval is answered from the first one's result.

use std::fmt::Write as _;

use accrue_kit::client::AuthChannel;
use accrue_proto::payouts::v1 as pb;
use accrue_proto::payouts::v1::payout_service_client::PayoutServiceClient;
use serde::Serialize;

use crate::retry;

/// Why an operator command failed.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// The service refused or failed the call.
    #[error("{call}: {code:?}: {message}")]
    Rpc {
        /// Which call.
        call: &'static str,
        /// The gRPC code.
        code: tonic::Code,
        /// The status message.
        message: String,
    },
    /// A flag's value is malformed.
    #[error("{0}")]
    Usage(String),
}

fn rpc(call: &'static str) -> impl FnOnce(tonic::Status) -> OperatorError {
    move |status| OperatorError::Rpc { call, code: status.code(), message: status.message().to_string() }
}

/// `request_id`, or a fresh one for this invocation when empty, so that the
/// call can be retried safely.
fn key(request_id: &str) -> String {
    if request_id.is_empty() { format!("accrue-cli-{}", uuid::Uuid::new_v4()) } else { request_id.to_string() }
}

/// "PENDING_APPROVAL" for a wire status.
pub fn status_name(status: i32) -> String {
    pb::PayoutStatus::try_from(status)
        .map(|s| s.as_str_name().trim_start_matches("PAYOUT_STATUS_").to_string())
        .unwrap_or_else(|_| status.to_string())
}

/// A wire status from "paid", "PAID" or "PAYOUT_STATUS_PAID".
pub fn parse_status(text: &str) -> Result<pb::PayoutStatus, OperatorError> {
    let upper = text.trim().to_uppercase();
    let name = if upper.starts_with("PAYOUT_STATUS_") { upper } else { format!("PAYOUT_STATUS_{upper}") };
    pb::PayoutStatus::from_str_name(&name)
        .ok_or_else(|| OperatorError::Usage(format!("unknown payout status {text:?}")))
}

fn time(value: Option<&prost_types::Timestamp>) -> String {
    value
        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// A payout as the CLI prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PayoutView {
    /// Id.
    pub id: String,
    /// Partner.
    pub partner_id: String,
    /// "YYYY-MM".
    pub period: String,
    /// ISO 4217 code.
    pub currency_code: String,
    /// Decimal amount in the minor unit ("42.00").
    pub amount: String,
    /// Status name.
    pub status: String,
    /// Approver (token subject).
    pub approved_by: String,
    /// Payment reference.
    pub payment_reference: String,
    /// Payment method.
    pub payment_method: String,
    /// Why rejected or why the payment last failed.
    pub status_reason: String,
    /// Created (RFC 3339).
    pub create_time: String,
    /// Paid (RFC 3339).
    pub paid_time: String,
}

impl From<&pb::Payout> for PayoutView {
    fn from(p: &pb::Payout) -> Self {
        let (currency_code, amount) =
            p.amount.as_ref().map(|m| (m.currency_code.clone(), m.amount.clone())).unwrap_or_default();
        PayoutView {
            id: p.id.clone(),
            partner_id: p.partner_id.clone(),
            period: p.period.clone(),
            currency_code,
            amount,
            status: status_name(p.status),
            approved_by: p.approved_by.clone(),
            payment_reference: p.payment_reference.clone(),
            payment_method: p.payment_method.clone(),
            status_reason: p.status_reason.clone(),
            create_time: time(p.create_time.as_ref()),
            paid_time: time(p.paid_time.as_ref()),
        }
    }
}

/// An audit event as the CLI prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditView {
    /// When (RFC 3339).
    pub time: String,
    /// Who.
    pub actor: String,
    /// Payout.
    pub payout_id: String,
    /// From status.
    pub from: String,
    /// To status.
    pub to: String,
    /// Why.
    pub reason: String,
    /// Request id.
    pub request_id: String,
}

impl From<&pb::AuditEvent> for AuditView {
    fn from(e: &pb::AuditEvent) -> Self {
        AuditView {
            time: time(e.create_time.as_ref()),
            actor: e.actor.clone(),
            payout_id: e.payout_id.clone(),
            from: status_name(e.from_status),
            to: status_name(e.to_status),
            reason: e.reason.clone(),
            request_id: e.request_id.clone(),
        }
    }
}

/// Left-aligned columns, two spaces apart, a header row first.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let text: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        let _ = writeln!(out, "{}", text.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// `items` as JSON lines (with `json`) or as a table of `columns`.
fn render<T: Serialize>(items: &[T], json: bool, header: &[&str], columns: impl Fn(&T) -> Vec<String>) -> String {
    if json {
        items.iter().map(|item| serde_json::to_string(item).unwrap_or_default() + "\n").collect()
    } else {
        table(header, &items.iter().map(columns).collect::<Vec<_>>())
    }
}

/// Payouts as a table (id, partner, period, amount, status, reference) or JSON lines.
pub fn render_payouts(payouts: &[PayoutView], json: bool) -> String {
    render(payouts, json, &["ID", "PARTNER", "PERIOD", "AMOUNT", "STATUS", "APPROVED BY", "REFERENCE"], |p| {
        vec![
            p.id.clone(),
            p.partner_id.clone(),
            p.period.clone(),
            format!("{} {}", p.amount, p.currency_code),
            p.status.clone(),
            p.approved_by.clone(),
            p.payment_reference.clone(),
        ]
    })
}

/// Audit events as a table (time, actor, payout, from → to, reason) or JSON lines.
pub fn render_audit(events: &[AuditView], json: bool) -> String {
    render(events, json, &["TIME", "ACTOR", "PAYOUT", "CHANGE", "REASON"], |e| {
        vec![e.time.clone(), e.actor.clone(), e.payout_id.clone(), format!("{} → {}", e.from, e.to), e.reason.clone()]
    })
}

/// `accrue payouts list`: every page of ListPayouts with `filter`.
pub async fn list(
    client: &mut PayoutServiceClient<AuthChannel>,
    filter: pb::ListPayoutsRequest,
) -> Result<Vec<PayoutView>, OperatorError> {
    let mut views = Vec::new();
    let mut request = pb::ListPayoutsRequest { page_size: 1000, ..filter };
    loop {
        let page =
            retry::idempotent("ListPayouts", client, &request, |mut c, r| async move { c.list_payouts(r).await })
                .await
                .map_err(rpc("ListPayouts"))?;
        views.extend(page.payouts.iter().map(PayoutView::from));
        if page.next_page_token.is_empty() {
            return Ok(views);
        }
        request.page_token = page.next_page_token;
    }
}

/// `accrue payouts show ID`.
pub async fn show(client: &mut PayoutServiceClient<AuthChannel>, id: &str) -> Result<PayoutView, OperatorError> {
    let request = pb::GetPayoutRequest { id: id.to_string() };
    let payout = retry::idempotent("GetPayout", client, &request, |mut c, r| async move { c.get_payout(r).await })
        .await
        .map_err(rpc("GetPayout"))?;
    Ok(PayoutView::from(&payout))
}

/// `accrue payouts approve ID…`: one id is ApprovePayout; several are
/// BulkApprovePayouts in `program` (each fails alone; failures are returned
/// as `(id, message)` beside the approved payouts).
pub async fn approve(
    client: &mut PayoutServiceClient<AuthChannel>,
    program: Option<&str>,
    ids: &[String],
    request_id: &str,
) -> Result<(Vec<PayoutView>, Vec<(String, String)>), OperatorError> {
    let request_id = key(request_id);
    if let [id] = ids {
        let request = pb::ApprovePayoutRequest { id: id.clone(), request_id };
        let payout =
            retry::idempotent("ApprovePayout", client, &request, |mut c, r| async move { c.approve_payout(r).await })
                .await
                .map_err(rpc("ApprovePayout"))?;
        return Ok((vec![PayoutView::from(&payout)], Vec::new()));
    }
    let program = program.ok_or_else(|| OperatorError::Usage("--program is required to approve several".into()))?;
    let request = pb::BulkApprovePayoutsRequest { program_id: program.to_string(), ids: ids.to_vec(), request_id };
    let results =
        retry::idempotent(
            "BulkApprovePayouts",
            client,
            &request,
            |mut c, r| async move { c.bulk_approve_payouts(r).await },
        )
        .await
        .map_err(rpc("BulkApprovePayouts"))?
        .results;
    let mut approved = Vec::new();
    let mut failed = Vec::new();
    for result in results {
        match (result.payout, result.failure) {
            (Some(payout), _) => approved.push(PayoutView::from(&payout)),
            (None, Some(failure)) => failed.push((result.id, format!("{}: {}", failure.code, failure.message))),
            (None, None) => failed.push((result.id, "no answer".into())),
        }
    }
    Ok((approved, failed))
}

/// `accrue payouts reject ID --reason …`.
pub async fn reject(
    client: &mut PayoutServiceClient<AuthChannel>,
    id: &str,
    reason: &str,
    request_id: &str,
) -> Result<PayoutView, OperatorError> {
    let request =
        pb::RejectPayoutRequest { id: id.to_string(), reason: reason.to_string(), request_id: key(request_id) };
    let payout =
        retry::idempotent("RejectPayout", client, &request, |mut c, r| async move { c.reject_payout(r).await })
            .await
            .map_err(rpc("RejectPayout"))?;
    Ok(PayoutView::from(&payout))
}

/// `accrue payouts create --program … --partner … --currency … --period …
/// --request-id …`: a manual payout of the partner's payable entries.
pub async fn create(
    client: &mut PayoutServiceClient<AuthChannel>,
    request: pb::CreatePayoutRequest,
) -> Result<PayoutView, OperatorError> {
    let payout = client.create_payout(request).await.map_err(rpc("CreatePayout"))?.into_inner();
    Ok(PayoutView::from(&payout))
}

/// `accrue payouts delete ID --reason …`.
pub async fn delete(
    client: &mut PayoutServiceClient<AuthChannel>,
    id: &str,
    reason: &str,
    request_id: &str,
) -> Result<PayoutView, OperatorError> {
    let payout = client
        .delete_payout(pb::DeletePayoutRequest {
            id: id.to_string(),
            reason: reason.to_string(),
            request_id: request_id.to_string(),
        })
        .await
        .map_err(rpc("DeletePayout"))?
        .into_inner();
    Ok(PayoutView::from(&payout))
}

/// `accrue payouts mark-paid ID --reference … --method … [--paid-at …]`.
pub async fn mark_paid(
    client: &mut PayoutServiceClient<AuthChannel>,
    id: &str,
    reference: &str,
    method: &str,
    paid_at: Option<&str>,
    request_id: &str,
) -> Result<PayoutView, OperatorError> {
    let paid_time = match paid_at {
        None => None,
        Some(text) => {
            let time = chrono::DateTime::parse_from_rfc3339(text)
                .map_err(|e| OperatorError::Usage(format!("--paid-at {text:?}: {e} (want RFC 3339)")))?;
            Some(prost_types::Timestamp { seconds: time.timestamp(), nanos: time.timestamp_subsec_nanos() as i32 })
        }
    };
    let request = pb::MarkPayoutPaidRequest {
        id: id.to_string(),
        payment_reference: reference.to_string(),
        payment_method: method.to_string(),
        paid_time,
        request_id: key(request_id),
    };
    let payout =
        retry::idempotent("MarkPayoutPaid", client, &request, |mut c, r| async move { c.mark_payout_paid(r).await })
            .await
            .map_err(rpc("MarkPayoutPaid"))?;
    Ok(PayoutView::from(&payout))
}

/// `accrue payouts export`: ExportPayouts' CSV bytes, streamed into `out`;
/// returns the rows written.
pub async fn export(
    client: &mut PayoutServiceClient<AuthChannel>,
    filter: pb::ExportPayoutsRequest,
    out: &mut (dyn std::io::Write + Send),
) -> Result<i64, OperatorError> {
    // Only opening the stream is retried: rows already written cannot be
    // taken back.
    let mut stream =
        retry::idempotent("ExportPayouts", client, &filter, |mut c, r| async move { c.export_payouts(r).await })
            .await
            .map_err(rpc("ExportPayouts"))?;
    let mut rows = 0;
    while let Some(chunk) = stream.message().await.map_err(rpc("ExportPayouts"))? {
        out.write_all(&chunk.csv_chunk).map_err(|e| OperatorError::Usage(format!("writing the CSV: {e}")))?;
        rows += chunk.row_count;
    }
    out.flush().map_err(|e| OperatorError::Usage(format!("writing the CSV: {e}")))?;
    Ok(rows)
}

/// `accrue audit list`: every page of ListAuditEvents with `filter`.
pub async fn audit(
    client: &mut PayoutServiceClient<AuthChannel>,
    filter: pb::ListAuditEventsRequest,
) -> Result<Vec<AuditView>, OperatorError> {
    let mut views = Vec::new();
    let mut request = pb::ListAuditEventsRequest { page_size: 1000, ..filter };
    loop {
        let page =
            retry::idempotent(
                "ListAuditEvents",
                client,
                &request,
                |mut c, r| async move { c.list_audit_events(r).await },
            )
            .await
            .map_err(rpc("ListAuditEvents"))?;
        views.extend(page.events.iter().map(AuditView::from));
        if page.next_page_token.is_empty() {
            return Ok(views);
        }
        request.page_token = page.next_page_token;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_parse_in_any_case() {
        assert_eq!(parse_status("paid").unwrap(), pb::PayoutStatus::Paid);
        assert_eq!(parse_status("PENDING_APPROVAL").unwrap(), pb::PayoutStatus::PendingApproval);
        assert_eq!(parse_status("PAYOUT_STATUS_FAILED").unwrap(), pb::PayoutStatus::Failed);
        assert!(parse_status("sent").is_err());
        assert_eq!(status_name(pb::PayoutStatus::Rejected as i32), "REJECTED");
    }

    #[test]
    fn tables_align_columns() {
        let out = table(&["A", "BB"], &[vec!["xxx".into(), "y".into()], vec!["z".into(), "".into()]]);
        assert_eq!(out, "A    BB\nxxx  y\nz\n");
    }
}
