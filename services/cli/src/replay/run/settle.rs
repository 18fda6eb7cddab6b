//! The money flow after each month's payout run (issue 12 item 7): every
//! payout is approved (BulkApprovePayouts), most are marked PAID at once, a
//! fixed-seed few fail first (PROCESSING → FAILED) and are retried to PAID,
//! and one payout of the replay — that of the partner with the smallest
//! external id in the first month with at least two — is REJECTED, so its
//! entries return to the next month's run. Every call carries a request id
//! derived from the seed and the payout, so a second replay changes nothing.
//! Which payouts fail and which is rejected is chosen by the partner's
//! external id, never by a generated id, so two replays into two databases
//! (the crash campaign's clean and chaos runs) do the same. At the end the
//! payouts are exported as CSV (ExportPayouts) and counted by final status.

// The replay's shared vocabulary (clients, errors, money helpers).
use super::*;

use super::super::summary::{PayoutSettlement, StatusTotal};

/// One payout in ten fails first (by seed and id, so the same ones every time).
const FAIL_ONE_IN: u64 = 10;

/// SplitMix64: a fixed, well-mixed hash of the seed and a payout id.
fn mix(seed: u64, id: &str) -> u64 {
    let mut z = id.bytes().fold(seed, |h, b| h.rotate_left(5) ^ u64::from(b)).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Whether the replay makes the first payment of the payout named `key`
/// (`<period>|<partner external id>`) fail (then retries it).
pub fn fails_first(seed: u64, key: &str) -> bool {
    mix(seed, key).is_multiple_of(FAIL_ONE_IN)
}

/// The payouts of one run, oldest first.
async fn run_payouts(clients: &Clients, program_id: &str, run_id: &str) -> Result<Vec<payouts::Payout>, ReplayError> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = crate::retry::idempotent(
            "ListPayouts",
            &clients.payouts,
            &payouts::ListPayoutsRequest {
                program_id: program_id.to_string(),
                payout_run_id: run_id.to_string(),
                page_size: 1000,
                page_token: page_token.clone(),
                ..Default::default()
            },
            |mut c, r| async move { c.list_payouts(r).await },
        )
        .await
        .map_err(rpc("ListPayouts"))?;
        all.extend(page.payouts);
        if page.next_page_token.is_empty() {
            return Ok(all);
        }
        page_token = page.next_page_token;
    }
}

/// Partner id → the partner's external id (`partner-017`), stable across
/// replays into different databases.
pub(super) type PartnerKeys = std::collections::HashMap<String, String>;

/// Approves, pays (failing and retrying the seed's few, by partner and
/// period) and, when `reject` and the run has at least two payouts, rejects
/// the payout of the partner with the smallest external id. Returns whether
/// it rejected one.
#[allow(clippy::too_many_arguments)]
pub(super) async fn settle_month(
    clients: &Clients,
    program_id: &str,
    seed: u64,
    partners: &PartnerKeys,
    period: &str,
    run_id: &str,
    paid_time: DateTime<Utc>,
    reject: bool,
) -> Result<bool, ReplayError> {
    let mut list = run_payouts(clients, program_id, run_id).await?;
    let key = |payout: &payouts::Payout| partners.get(&payout.partner_id).cloned().unwrap_or_default();
    list.sort_by_key(|payout| (key(payout), payout.id.clone()));
    let rejected = reject && list.len() >= 2;
    if rejected {
        let id = list.remove(0).id;
        crate::retry::idempotent(
            "RejectPayout",
            &clients.payouts,
            &payouts::RejectPayoutRequest {
                id: id.clone(),
                reason: "replay: held for review".into(),
                request_id: format!("replay-{seed}-reject-{id}"),
            },
            |mut c, r| async move { c.reject_payout(r).await },
        )
        .await
        .map_err(rpc(format!("RejectPayout {id}")))?;
    }
    for (batch, ids) in list.chunks(1000).enumerate() {
        let results = crate::retry::idempotent(
            "BulkApprovePayouts",
            &clients.payouts,
            &payouts::BulkApprovePayoutsRequest {
                program_id: program_id.to_string(),
                ids: ids.iter().map(|p| p.id.clone()).collect(),
                request_id: format!("replay-{seed}-approve-{period}-{batch}"),
            },
            |mut c, r| async move { c.bulk_approve_payouts(r).await },
        )
        .await
        .map_err(rpc(format!("BulkApprovePayouts {period}")))?
        .results;
        if let Some(failed) = results.iter().find(|r| r.failure.is_some()) {
            return Err(ReplayError::Response {
                call: format!("BulkApprovePayouts {period}"),
                message: format!("payout {} not approved: {:?}", failed.id, failed.failure),
            });
        }
    }
    let paid_time = Some(timestamp(paid_time));
    for payout in &list {
        let id = payout.id.clone();
        let reference = if fails_first(seed, &format!("{period}|{}", key(payout))) {
            let first = format!("replay-{seed}-{id}-1");
            crate::retry::idempotent(
                "MarkPayoutProcessing",
                &clients.payouts,
                &payouts::MarkPayoutProcessingRequest {
                    id: id.clone(),
                    payment_reference: first,
                    request_id: format!("replay-{seed}-processing-1-{id}"),
                },
                |mut c, r| async move { c.mark_payout_processing(r).await },
            )
            .await
            .map_err(rpc(format!("MarkPayoutProcessing {id}")))?;
            crate::retry::idempotent(
                "MarkPayoutFailed",
                &clients.payouts,
                &payouts::MarkPayoutFailedRequest {
                    id: id.clone(),
                    reason: "replay: the bank returned the transfer".into(),
                    request_id: format!("replay-{seed}-failed-{id}"),
                },
                |mut c, r| async move { c.mark_payout_failed(r).await },
            )
            .await
            .map_err(rpc(format!("MarkPayoutFailed {id}")))?;
            let retry = format!("replay-{seed}-{id}-2");
            crate::retry::idempotent(
                "MarkPayoutProcessing",
                &clients.payouts,
                &payouts::MarkPayoutProcessingRequest {
                    id: id.clone(),
                    payment_reference: retry.clone(),
                    request_id: format!("replay-{seed}-processing-2-{id}"),
                },
                |mut c, r| async move { c.mark_payout_processing(r).await },
            )
            .await
            .map_err(rpc(format!("MarkPayoutProcessing {id}")))?;
            retry
        } else {
            format!("replay-{seed}-{id}")
        };
        crate::retry::idempotent(
            "MarkPayoutPaid",
            &clients.payouts,
            &payouts::MarkPayoutPaidRequest {
                id: id.clone(),
                payment_reference: reference,
                payment_method: "bank_transfer".into(),
                paid_time,
                request_id: format!("replay-{seed}-paid-{id}"),
            },
            |mut c, r| async move { c.mark_payout_paid(r).await },
        )
        .await
        .map_err(rpc(format!("MarkPayoutPaid {id}")))?;
    }
    Ok(rejected)
}

/// Exports every payout of the program to `path` (CSV, ExportPayouts' bytes
/// as streamed) and counts the program's payouts by final status; the PAID
/// total is compared with Σ PAID entries in the ledger by the caller.
pub(super) async fn settle_summary(
    clients: &Clients,
    program_id: &str,
    path: &std::path::Path,
) -> Result<PayoutSettlement, ReplayError> {
    let mut stream = clients
        .payouts
        .clone()
        .export_payouts(payouts::ExportPayoutsRequest { program_id: program_id.to_string(), ..Default::default() })
        .await
        .map_err(rpc("ExportPayouts"))?
        .into_inner();
    let mut file = std::fs::File::create(path)
        .map_err(|e| ReplayError::Config { path: path.display().to_string(), message: e.to_string() })?;
    let mut exported = 0;
    while let Some(chunk) = stream.message().await.map_err(rpc("ExportPayouts"))? {
        std::io::Write::write_all(&mut file, &chunk.csv_chunk)
            .map_err(|e| ReplayError::Config { path: path.display().to_string(), message: e.to_string() })?;
        exported += chunk.row_count as u64;
    }
    let totals = clients
        .payouts
        .clone()
        .get_payout_stats(payouts::GetPayoutStatsRequest { program_id: program_id.to_string(), period: String::new() })
        .await
        .map_err(rpc("GetPayoutStats"))?
        .into_inner()
        .totals;
    let mut by_status = BTreeMap::new();
    for total in totals {
        let name = total.status().as_str_name().trim_start_matches("PAYOUT_STATUS_").to_string();
        let amount = parse_amount("GetPayoutStats", total.amount.as_ref())?;
        let slot = by_status.entry(name).or_insert(StatusTotal { count: 0, amount: Decimal::ZERO });
        slot.count += total.count;
        slot.amount += amount;
    }
    let paid_total = by_status.get("PAID").map(|t| t.amount).unwrap_or(Decimal::ZERO);
    let balances = clients
        .ledger
        .clone()
        .get_balances(ledger::GetBalancesRequest {
            program_id: program_id.to_string(),
            partner_ids: Vec::new(),
            currency_code: String::new(),
        })
        .await
        .map_err(rpc("GetBalances"))?
        .into_inner()
        .balances;
    let mut ledger_paid_total = Decimal::ZERO;
    for balance in &balances {
        ledger_paid_total += parse_amount("GetBalances", balance.paid.as_ref())?;
    }
    let paid_then_reversed = paid_then_reversed(clients, program_id).await?;
    Ok(PayoutSettlement {
        by_status,
        paid_total,
        ledger_paid_total,
        paid_then_reversed,
        exported,
        csv_path: path.display().to_string(),
    })
}

/// Σ (credits − debits) of the entries a payout paid that a full refund
/// later REVERSED (DESIGN §4: a line clawed back in full becomes REVERSED
/// whatever its status; its clawback is an at-once debit netted against a
/// later payout). They left the PAID balance while their money stays in the
/// PAID payouts, so Σ PAID payouts = Σ PAID entries + this. Read through
/// ListEntries (REVERSED) and each one's history (GetEntry), retried like
/// every read of the replay.
async fn paid_then_reversed(clients: &Clients, program_id: &str) -> Result<Decimal, ReplayError> {
    let mut request = ledger::ListEntriesRequest {
        program_id: program_id.to_string(),
        status: ledger::EntryStatus::Reversed as i32,
        page_size: 1000,
        ..Default::default()
    };
    let mut total = Decimal::ZERO;
    loop {
        let page = crate::retry::idempotent("ListEntries", &clients.ledger, &request, |mut c, r| async move {
            c.list_entries(r).await
        })
        .await
        .map_err(rpc("ListEntries"))?;
        for listed in &page.entries {
            let get = ledger::GetEntryRequest { id: listed.id.clone() };
            let entry =
                crate::retry::idempotent(
                    "GetEntry",
                    &clients.ledger,
                    &get,
                    |mut c, r| async move { c.get_entry(r).await },
                )
                .await
                .map_err(rpc("GetEntry"))?;
            let was_paid = entry.history.iter().any(|event| {
                event.from_status == ledger::EntryStatus::Paid as i32
                    && event.to_status == ledger::EntryStatus::Reversed as i32
            });
            if was_paid {
                let amount = parse_amount("GetEntry", entry.amount.as_ref())?;
                total += if entry.entry_type == ledger::EntryType::Debit as i32 { -amount } else { amount };
            }
        }
        if page.next_page_token.is_empty() || page.entries.is_empty() {
            return Ok(total);
        }
        request.page_token = page.next_page_token;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_few_fail_for_a_seed() {
        let ids: Vec<String> = (0..1000).map(|i| format!("00000000-0000-0000-0000-{i:012}")).collect();
        let failing = ids.iter().filter(|id| fails_first(42, id)).count();
        assert!((50..=150).contains(&failing), "about one in ten: {failing}");
        assert_eq!(failing, ids.iter().filter(|id| fails_first(42, id)).count());
        assert_ne!(
            ids.iter().filter(|id| fails_first(42, id)).collect::<Vec<_>>(),
            ids.iter().filter(|id| fails_first(43, id)).collect::<Vec<_>>()
        );
    }
}
