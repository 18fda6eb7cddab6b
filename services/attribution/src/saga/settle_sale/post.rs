//! post: ledger.PostEntries, every line of a sale in one atomic ledger
//! posting under a key per saga run, one call per program chunk. Its undo
//! voids whatever the run posted.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use accrue_kit::convert::settlement::entry_input;
use accrue_proto::ledger::v1 as lpb;
use accrue_proto::passthrough;
use accrue_saga::{StepError, StepResult, output};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::compute::{ComputeOut, ComputedLine};
use super::resolve::ResolveOut;
use super::{
    Item, Ready, SettleSale, Step, chunk_by_program, chunk_program, earlier, failure_message, merge, per_chunk,
    post_key, sale_entries,
};
use crate::peers::step_error;

/// Concurrent per-saga undo calls.
const UNDO_CONCURRENCY: usize = 16;

/// post's output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PostOut {
    pub(crate) idempotency_key: String,
    pub(crate) entry_ids: Vec<String>,
}

/// What the undo of post voided.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct UndoOut {
    idempotency_key: String,
    voided_entry_ids: Vec<String>,
    voided: usize,
}

/// What a posting is built from: compute's lines and the attribution rule
/// resolve found (borrowed when this claim kept them).
type Inputs<'a> = (Cow<'a, ComputeOut>, Option<crate::domain::touch::Rule>);

fn posting_inputs<'a>(item: &Item<'a>) -> Result<Inputs<'a>, StepError> {
    Ok((earlier::<ComputeOut>(item, Step::Compute)?, earlier::<ResolveOut>(item, Step::Resolve)?.attribution))
}

/// The posting of `item`'s lines, each breakdown forwarded as commission
/// encoded it. The rule in force is kept on every line's breakdown (issue 14
/// item 2) as map entries appended to it, which set those inputs (protobuf's
/// merge); a resolve logged before the rule existed adds nothing, so its
/// posting's request hash is what it always was.
fn posting(item: &Item<'_>, (computed, rule): &Inputs<'_>) -> passthrough::SalePosting {
    let rule_inputs = rule.map(|rule| {
        let mut inputs = BTreeMap::from([("attribution_model".to_string(), rule.model.as_str().to_string())]);
        if rule.window_days > 0 {
            inputs.insert("attribution_window_days".into(), rule.window_days.to_string());
        }
        passthrough::breakdown_inputs(inputs)
    });
    let lines = computed
        .lines
        .iter()
        .map(|computed| posted_line(computed, item.subject.occurred_at, rule_inputs.as_deref()))
        .collect();
    passthrough::SalePosting {
        idempotency_key: post_key(item.saga.id, item.saga.run),
        sale_id: item.subject.id.to_string(),
        lines,
    }
}

/// One line of a posting: `computed` of a sale that occurred at
/// `occurred_at`, with `extra` (encoded breakdown inputs) appended to its
/// breakdown, if it has one.
fn posted_line(computed: &ComputedLine, occurred_at: DateTime<Utc>, extra: Option<&[u8]>) -> passthrough::EntryInput {
    let input = entry_input(computed.line.clone(), occurred_at);
    let breakdown = match (&computed.breakdown, extra) {
        (Some(encoded), Some(extra)) => Some(Bytes::from([encoded.as_ref(), extra].concat())),
        (breakdown, _) => breakdown.clone(),
    };
    passthrough::EntryInput {
        partner_id: input.partner_id,
        kind: input.kind,
        amount: input.amount,
        level: input.level,
        source_partner_id: input.source_partner_id,
        occurred_at: input.occurred_at,
        clears_at: input.clears_at,
        breakdown,
    }
}

pub(super) async fn action(saga: &SettleSale, items: &[Item<'_>]) -> Vec<StepResult> {
    // Built per call from the inputs: a built posting kept for a retry of
    // its chunk would be copied, breakdowns and all, into every call.
    let mut inputs: Vec<Result<Inputs<'_>, StepError>> = items.iter().map(posting_inputs).collect();
    // A posting compute adopted (the run had posted before a crash) is not
    // sent again: its entries are post's output.
    let mut adopted: Vec<Option<StepResult>> = (0..items.len()).map(|_| None).collect();
    for ((input, item), adopted) in inputs.iter_mut().zip(items).zip(&mut adopted) {
        let Ok((computed, _)) = input else { continue };
        let Some(posted) = &computed.adopted else { continue };
        let key = post_key(item.saga.id, item.saga.run);
        *adopted = Some(output(&PostOut { idempotency_key: key, entry_ids: posted.entry_ids.clone() }));
        // Kept out of the call; its result is the one above.
        *input = Err(StepError::Transient("adopted".into()));
    }
    let ready = Ready::of(items, &inputs);
    let chunks = chunk_by_program(&ready.items, |_| 1);
    let outcomes = per_chunk(chunks, ready.items.len(), |chunk| {
        let mut client = saga.peers.ledger_raw.clone();
        let program_id = chunk_program(&ready.items, &chunk);
        let postings: Vec<passthrough::SalePosting> =
            chunk.iter().map(|&i| posting(&ready.items[i], ready.inputs[i])).collect();
        async move {
            let program_id = program_id?;
            let keys: Vec<String> = postings.iter().map(|p| p.idempotency_key.clone()).collect();
            let request = passthrough::PostEntriesRequest { program_id: program_id.to_string(), postings };
            let (service, method) = passthrough::POST_ENTRIES;
            let response: lpb::PostEntriesResponse = client
                .unary(service, method, request)
                .await
                .map_err(|status| step_error("ledger.PostEntries", &status))?
                .into_inner();
            let by_key: HashMap<&str, &lpb::PostingResult> =
                response.results.iter().map(|r| (r.idempotency_key.as_str(), r)).collect();
            Ok(keys
                .iter()
                .map(|key| {
                    let result = by_key
                        .get(key.as_str())
                        .ok_or_else(|| StepError::Transient("ledger returned no result for the posting".into()))?;
                    if let Some(failure) = &result.failure {
                        return Err(StepError::Permanent(failure_message(failure)));
                    }
                    output(&PostOut { idempotency_key: key.clone(), entry_ids: result.entry_ids.clone() })
                })
                .collect())
        }
    })
    .await;
    let positions = ready.positions;
    let mut results = merge(inputs, positions, outcomes);
    for (result, adopted) in results.iter_mut().zip(adopted) {
        if let Some(adopted) = adopted {
            *result = adopted;
        }
    }
    results
}

pub(super) async fn undo(saga: &SettleSale, items: &[Item<'_>]) -> Vec<StepResult> {
    // Collected first: a lazy `map` closure makes the future not Send over every lifetime.
    let mut calls = Vec::with_capacity(items.len());
    for item in items {
        calls.push(undo_one(saga, *item));
    }
    futures::stream::iter(calls).buffered(UNDO_CONCURRENCY).collect().await
}

/// Voids every live entry this saga run posted: those listed for the sale
/// under the run's key (so a post that took effect but whose output was never
/// logged is found too), plus the logged entry ids. Idempotent: already
/// voided entries are skipped.
async fn undo_one(saga: &SettleSale, item: Item<'_>) -> StepResult {
    let key = post_key(item.saga.id, item.saga.run);
    let logged: Vec<String> = match item.saga.raw_output(Step::Post as usize) {
        Some(_) => earlier::<PostOut>(&item, Step::Post)?.into_owned().entry_ids,
        // The post may have taken effect without its output being logged.
        None => Vec::new(),
    };
    let mut to_void: Vec<String> = Vec::new();
    for entry in sale_entries(saga, &item).await? {
        let ours = entry.idempotency_key == key || logged.contains(&entry.id);
        if ours && entry.status != lpb::EntryStatus::Voided as i32 && !to_void.contains(&entry.id) {
            to_void.push(entry.id);
        }
    }
    let program_id = item.subject.program_id.to_string();
    let mut client = saga.peers.ledger.clone();
    if !to_void.is_empty() {
        client
            .transition_entries(lpb::TransitionEntriesRequest {
                program_id: program_id.clone(),
                entry_ids: to_void.clone(),
                to_status: lpb::EntryStatus::Voided as i32,
                reason: format!("saga {} run {} unwound: {}", item.saga.id, item.saga.run, item.saga.failure_reason),
            })
            .await
            .map_err(|status| step_error("ledger.TransitionEntries", &status))?;
    }
    output(&UndoOut { idempotency_key: key, voided: to_void.len(), voided_entry_ids: to_void })
}

#[cfg(test)]
mod tests {
    use accrue_proto::types::v1 as tpb;
    use chrono::DateTime;

    use super::*;

    /// A compute log written before lines were the shared type (kind by its
    /// proto name, no source partner as "") still posts, and posts the very
    /// EntryInput the old code built: the ledger's request hash of a resumed
    /// saga run is unchanged.
    #[test]
    fn an_old_compute_log_posts_the_same_entry_input() {
        let (partner, seller, version) =
            (uuid::Uuid::from_u128(1).to_string(), uuid::Uuid::from_u128(2).to_string(), uuid::Uuid::from_u128(9));
        let old = serde_json::json!({
            "currency": "GBP", "base_commission": "10.00", "agreement_version_id": version.to_string(),
            "lines": [
                {"partner_id": partner, "kind": "EARNING_KIND_OVERRIDE", "currency": "GBP", "amount": "1.50",
                 "level": 1, "source_partner_id": seller, "clears_at": "2024-02-01T00:00:00Z",
                 "breakdown": {"model": "OVERRIDE_PERCENTAGE", "formula": "f", "inputs": {"rate": "0.05"},
                               "rule": "level 1", "agreement_version_id": version.to_string(),
                               "rounding": "r", "note": ""}},
                {"partner_id": partner, "kind": "EARNING_KIND_MARGIN", "currency": "GBP", "amount": "0.10",
                 "level": 0, "source_partner_id": "", "clears_at": "2024-02-01T00:00:00Z", "breakdown": null},
            ],
        });
        let computed: ComputeOut = serde_json::from_value(old).unwrap();
        let occurred_at = DateTime::from_timestamp(1_704_067_200, 0).unwrap();
        // Each line as post sends it, read back as the ledger decodes it.
        let posted = |extra: Option<&[u8]>| -> Vec<lpb::EntryInput> {
            computed
                .lines
                .iter()
                .map(|line| {
                    let wire = prost::Message::encode_to_vec(&posted_line(line, occurred_at, extra));
                    <lpb::EntryInput as prost::Message>::decode(wire.as_slice()).unwrap()
                })
                .collect()
        };
        let inputs = posted(None);
        let ts = |seconds| Some(prost_types::Timestamp { seconds, nanos: 0 });
        let gbp = |amount: &str| Some(tpb::Money { currency_code: "GBP".into(), amount: amount.into() });
        assert_eq!(
            inputs,
            vec![
                lpb::EntryInput {
                    partner_id: partner.clone(),
                    kind: tpb::EarningKind::Override as i32,
                    amount: gbp("1.50"),
                    level: 1,
                    source_partner_id: seller,
                    occurred_at: ts(1_704_067_200),
                    clears_at: ts(1_706_745_600),
                    breakdown: Some(tpb::CommissionBreakdown {
                        model: "OVERRIDE_PERCENTAGE".into(),
                        formula: "f".into(),
                        inputs: [("rate".to_string(), "0.05".to_string())].into_iter().collect(),
                        rule: "level 1".into(),
                        agreement_version_id: version.to_string(),
                        rounding: "r".into(),
                        note: String::new(),
                    }),
                },
                lpb::EntryInput {
                    partner_id: partner,
                    kind: tpb::EarningKind::Margin as i32,
                    amount: gbp("0.10"),
                    level: 0,
                    source_partner_id: String::new(),
                    occurred_at: ts(1_704_067_200),
                    clears_at: ts(1_706_745_600),
                    breakdown: None,
                },
            ]
        );
        // The rule in force joins the inputs of a line that has a breakdown.
        let rule = BTreeMap::from([("attribution_model".to_string(), "FIRST_TOUCH".to_string())]);
        let with_rule = posted(Some(&passthrough::breakdown_inputs(rule)));
        let mut expected = inputs;
        if let Some(breakdown) = expected[0].breakdown.as_mut() {
            breakdown.inputs.insert("attribution_model".into(), "FIRST_TOUCH".into());
        }
        assert_eq!(with_rule, expected);
        assert_eq!(with_rule[0].breakdown.as_ref().map(|b| b.inputs.len()), Some(2));
    }
}
