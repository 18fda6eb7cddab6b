//! compute: commission.ComputeSettlements for every sale, pinned to the
//! agreement version in force at the sale's `occurred_at`; one call per
//! program (and program settings) chunk. It has no undo (it changes nothing
//! outside the saga log). Its output is never logged ([`SagaDef::UNLOGGED_STEPS`]:
//! the lines with their breakdowns were two thirds of the log's bytes, issue
//! 15); a claim that resumes a run whose post had begun adopts the posting the
//! ledger holds under the run's key instead ([`adopt`]).
//!
//! [`SagaDef::UNLOGGED_STEPS`]: accrue_saga::SagaDef::UNLOGGED_STEPS

use std::borrow::Cow;
use std::collections::HashMap;

use accrue_kit::FieldViolations;
use accrue_kit::convert::settlement::{breakdown_to_proto, settlement_line_from_proto};
use accrue_kit::convert::{amount_to_proto, timestamp};
use accrue_money::Currency;
use accrue_proto::commission::v1 as cpb;
use accrue_proto::ledger::v1 as lpb;
use accrue_proto::passthrough;
use accrue_proto::types::v1 as tpb;
use accrue_saga::{StepError, StepResult, output_unlogged};
use accrue_types::settlement::Line;
use bytes::Bytes;
use prost::Message;
use rust_decimal::Decimal;
use serde::Deserialize;

use super::qualify;
use super::resolve::ResolveOut;
use super::upline::{PartnerCtx, ProgramCtx, UplineOut};
use super::{
    Item, Ready, SettleSale, Step, chunk_by_program, chunk_program, currency_of, earlier, failure_message, merge,
    per_chunk, post_key, sale_entries,
};
use crate::domain::sale::event_type_to_proto;
use crate::peers::step_error;
use crate::store::SaleRow;
use accrue_types::ProgramId;

/// compute's output.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ComputeOut {
    /// Major units of the sale's currency; zero when no rule earned a base
    /// commission.
    pub(crate) base_commission: Decimal,
    /// The lines as post sends them to the ledger. A log written before
    /// compute went unlogged holds the shared settlement line, its kind by
    /// stored name ("EARNING_KIND_DIRECT" also reads); it still reads.
    pub(crate) lines: Vec<ComputedLine>,
    /// Set when a resumed compute adopted the posting its run had already
    /// made ([`adopt`]); `lines` is then empty and post sends nothing.
    #[serde(default)]
    pub(crate) adopted: Option<Adopted>,
}

/// A settlement line as post forwards it: the shared line without its
/// breakdown, and the breakdown as commission encoded it (an
/// `accrue.type.v1.CommissionBreakdown`), never decoded here (see
/// [`accrue_proto::passthrough`]; the ledger checks it).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(from = "Line")]
pub(crate) struct ComputedLine {
    /// Its `breakdown` is None: the breakdown is the next field.
    pub(crate) line: Line,
    pub(crate) breakdown: Option<Bytes>,
}

impl From<Line> for ComputedLine {
    /// A line as a log before issue 15 holds it, its breakdown decoded.
    fn from(mut line: Line) -> Self {
        let breakdown = line.breakdown.take().map(|b| Bytes::from(breakdown_to_proto(b).encode_to_vec()));
        ComputedLine { line, breakdown }
    }
}

/// A posting the ledger already holds under the saga run's key.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Adopted {
    /// Its entries, as the ledger lists them.
    pub(crate) entry_ids: Vec<String>,
    /// Σ its entries, CREDIT + and DEBIT − (major units).
    pub(crate) total_commission: Decimal,
}

impl ComputeOut {
    /// The sale's total commission: Σ its lines (major units).
    pub(crate) fn total_commission(&self) -> Decimal {
        match &self.adopted {
            Some(adopted) => adopted.total_commission,
            None => self.lines.iter().map(|computed| computed.line.amount.amount).sum(),
        }
    }
}

fn partner_context(p: &PartnerCtx) -> cpb::PartnerContext {
    cpb::PartnerContext {
        partner_id: p.partner_id.clone(),
        status: p.status,
        role: p.role.clone(),
        qualification_facts: None,
    }
}

/// The wire context commission settles `sale` from: its own fields, its
/// resolved facts and its upline.
pub(crate) fn sale_context(sale: &SaleRow, r: &ResolveOut, u: &UplineOut, currency: Currency) -> cpb::SaleContext {
    cpb::SaleContext {
        sale_id: sale.id.to_string(),
        event_type: event_type_to_proto(sale.event_type) as i32,
        amount: Some(amount_to_proto(currency, sale.amount)),
        product_code: sale.product_code.clone(),
        service_code: sale.service_code.clone(),
        occurred_at: Some(timestamp(sale.occurred_at)),
        // The wire's "no customer" is the empty string.
        customer_id: sale.customer_external_id.clone().unwrap_or_default(),
        seller: Some(partner_context(&u.seller)),
        splits: u
            .splits
            .iter()
            .map(|s| cpb::SplitContext { partner: Some(partner_context(&s.partner)), basis_points: s.basis_points })
            .collect(),
        ancestors: u.ancestors.iter().map(partner_context).collect(),
        is_first_payment: r.is_first_payment,
        seller_prior_volume: Some(amount_to_proto(currency, r.seller_prior_volume)),
        customer_history: r
            .customer_history
            .iter()
            .map(|h| cpb::PriorEvent {
                sale_id: h.sale_id.to_string(),
                event_type: event_type_to_proto(h.event_type) as i32,
                seller_partner_id: h.seller_partner_id.map(|p| p.to_string()).unwrap_or_default(),
                occurred_at: Some(timestamp(h.occurred_at)),
                service_code: h.service_code.clone(),
            })
            .collect(),
    }
}

fn invalid(what: &str) -> StepError {
    StepError::Permanent(format!("commission returned {what}"))
}

/// An amount commission sent, in its currency (the sale's when it names none).
fn parse_money(money: &tpb::Money, sale_currency: Currency) -> Result<(Currency, Decimal), StepError> {
    let bad = |e: accrue_money::MoneyError| invalid(&format!("an invalid amount: {e}"));
    let currency = if money.currency_code.is_empty() {
        sale_currency
    } else {
        Currency::from_code(&money.currency_code).map_err(bad)?
    };
    Ok((currency, currency.parse_amount(&money.amount).map_err(bad)?))
}

pub(super) fn compute_out(settlement: passthrough::Settlement, currency: Currency) -> StepResult {
    output_unlogged(settlement_lines(settlement, currency)?)
}

/// A settlement commission sent, checked and decoded into the lines post
/// sends to the ledger (and SimulateProgram compares, issue 16 item 2). A
/// settlement that carries a failure, or an invalid line, is a permanent error.
/// By value: the lines' texts move into the decoded lines; each breakdown
/// stays encoded, for post to forward (the ledger checks it).
pub(crate) fn settlement_lines(
    settlement: passthrough::Settlement,
    currency: Currency,
) -> Result<ComputeOut, StepError> {
    if let Some(failure) = &settlement.failure {
        return Err(StepError::Permanent(failure_message(failure)));
    }
    // No base commission is sent when no rule earned one.
    let (_, base) = match &settlement.base_commission {
        Some(money) => parse_money(money, currency)?,
        None => (currency, Decimal::ZERO),
    };
    let mut lines = Vec::with_capacity(settlement.lines.len());
    let mut violations = FieldViolations::new();
    for (index, encoded) in settlement.lines.into_iter().enumerate() {
        let mut line = cpb::SettlementLine {
            partner_id: encoded.partner_id,
            kind: encoded.kind,
            amount: encoded.amount,
            level: encoded.level,
            source_partner_id: encoded.source_partner_id,
            clears_at: encoded.clears_at,
            breakdown: None,
        };
        // A line that names no currency is in the sale's.
        if let Some(money) = line.amount.as_mut()
            && money.currency_code.is_empty()
        {
            money.currency_code = currency.code().to_string();
        }
        let decoded = settlement_line_from_proto(&format!("lines[{index}]"), line, &mut violations);
        lines.extend(decoded.map(|line| ComputedLine { line, breakdown: encoded.breakdown }));
    }
    if !violations.is_empty() {
        let status = violations.into_status();
        return Err(invalid(&format!("an invalid line ({})", status.message())));
    }
    Ok(ComputeOut { base_commission: base, lines, adopted: None })
}

/// Cuts `group` (sales of one program) into one group per program settings
/// version: settings travel per ComputeSettlements call.
pub(crate) fn by_settings<'a>(group: Vec<usize>, ctx: impl Fn(usize) -> &'a ProgramCtx) -> Vec<Vec<usize>> {
    let mut by_ctx: Vec<(&ProgramCtx, Vec<usize>)> = Vec::new();
    for i in group {
        let c = ctx(i);
        match by_ctx.iter_mut().find(|(known, _)| *known == c) {
            Some((_, members)) => members.push(i),
            None => by_ctx.push((c, vec![i])),
        }
    }
    by_ctx.into_iter().map(|(_, members)| members).collect()
}

/// The wire program context of `program_id` under settings `ctx`.
pub(crate) fn program_context(program_id: ProgramId, ctx: &ProgramCtx) -> cpb::ProgramContext {
    cpb::ProgramContext {
        program_id: program_id.to_string(),
        rounding_mode: ctx.rounding_mode,
        override_depth_cap: ctx.override_depth_cap,
        compression_enabled: ctx.compression_enabled,
        settings_version: ctx.settings_version,
    }
}

/// commission.ComputeSettlements for the sales `sale_ids` (≤ 1000, one
/// program and settings version; `context(k)` builds the k-th), under `draft` when
/// given (SimulateProgram, issue 16 item 2; the saga never gives one), with
/// the second trip qualified overrides need (issue 16 item 3) for the sales
/// that ask, whose contexts are built again as first sent (a copy of every
/// context kept for the few that ask cost more than the call, issue 15): the
/// settlement of every sale, in the response's order.
pub(crate) async fn settle_batch(
    saga: &SettleSale,
    program: &cpb::ProgramContext,
    sale_ids: &[String],
    context: impl Fn(usize) -> cpb::SaleContext,
    draft: Option<&cpb::SettlementDraft>,
) -> Result<passthrough::ComputeSettlementsResponse, StepError> {
    let sales: Vec<cpb::SaleContext> = (0..sale_ids.len()).map(&context).collect();
    // Lines only: nothing here reads a settlement's base breakdown.
    let request = cpb::ComputeSettlementsRequest {
        program: Some(program.clone()),
        sales,
        draft: draft.cloned(),
        omit_base_breakdown: true,
    };
    let mut response = compute_settlements(saga, request).await?;
    // Qualified overrides (issue 16 item 3): only the sales commission
    // asks qualification facts for make a second trip.
    let asking = qualify::asking(&response);
    if !asking.is_empty() {
        let sent: Vec<cpb::SaleContext> =
            (0..sale_ids.len()).filter(|&k| asking.contains(sale_ids[k].as_str())).map(&context).collect();
        qualify::settle_with_facts(saga, program, sent, draft, &mut response).await?;
    }
    Ok(response)
}

/// commission.ComputeSettlements, each line's breakdown kept encoded.
pub(super) async fn compute_settlements(
    saga: &SettleSale,
    request: cpb::ComputeSettlementsRequest,
) -> Result<passthrough::ComputeSettlementsResponse, StepError> {
    let (service, method) = passthrough::COMPUTE_SETTLEMENTS;
    let mut client = saga.peers.commission_raw.clone();
    client
        .unary(service, method, request)
        .await
        .map(tonic::Response::into_inner)
        .map_err(|status| step_error("commission.ComputeSettlements", &status))
}

/// What compute reads per sale: resolve's and upline's outputs (borrowed
/// when this claim kept them) and the sale's currency.
type Inputs<'a> = (Cow<'a, ResolveOut>, Cow<'a, UplineOut>, Currency);

pub(super) async fn action(saga: &SettleSale, items: &[Item<'_>]) -> Vec<StepResult> {
    // A claim before this one began post: the posting it made, if it landed,
    // is this run's settlement (resumed sagas are few: one look-up each).
    let mut adopted: Vec<Option<StepResult>> = Vec::with_capacity(items.len());
    for item in items {
        adopted.push(match item.saga.step_started(Step::Post as usize) {
            true => adopt(saga, item).await.transpose().map(|out| out.and_then(output_unlogged)),
            false => None,
        });
    }
    let fresh: Vec<Item<'_>> = items.iter().zip(&adopted).filter(|(_, a)| a.is_none()).map(|(item, _)| *item).collect();
    let mut settled = settle(saga, &fresh).await.into_iter();
    adopted
        .into_iter()
        .map(|adopted| {
            adopted.unwrap_or_else(|| {
                settled.next().unwrap_or_else(|| Err(StepError::Transient("the sale was not settled".into())))
            })
        })
        .collect()
}

/// The posting the ledger holds under `item`'s run key, as compute's output:
/// Σ its entries is the total commission, and Σ its DIRECT and SPLIT entries
/// the base commission C (the owner's and split partners' shares of C sum to
/// C: docs/commission-math.md, largest remainder). None when the ledger holds
/// nothing under the key (the post never landed): compute then settles the
/// sale afresh, exactly as if the earlier claim had stopped before post.
/// Adopting rather than settling again keeps a resumed run from computing
/// lines that differ from the ones it posted (an agreement or a qualification
/// fact changed in between) and that the ledger would refuse under the same
/// key.
async fn adopt(saga: &SettleSale, item: &Item<'_>) -> Result<Option<ComputeOut>, StepError> {
    let key = post_key(item.saga.id, item.saga.run);
    let currency = currency_of(item)?;
    let (mut entry_ids, mut total, mut base) = (Vec::new(), Decimal::ZERO, Decimal::ZERO);
    for entry in sale_entries(saga, item).await?.into_iter().filter(|entry| entry.idempotency_key == key) {
        let amount = entry
            .amount
            .as_ref()
            .ok_or_else(|| StepError::Permanent(format!("ledger entry {} has no amount", entry.id)))
            .and_then(|money| {
                currency
                    .parse_amount(&money.amount)
                    .map_err(|e| StepError::Permanent(format!("ledger entry {} has an invalid amount: {e}", entry.id)))
            })?;
        let signed = if entry.entry_type == lpb::EntryType::Debit as i32 { -amount } else { amount };
        total += signed;
        if entry.kind == tpb::EarningKind::Direct as i32 || entry.kind == tpb::EarningKind::Split as i32 {
            base += signed;
        }
        entry_ids.push(entry.id);
    }
    if entry_ids.is_empty() {
        return Ok(None);
    }
    Ok(Some(ComputeOut {
        base_commission: base,
        lines: Vec::new(),
        adopted: Some(Adopted { entry_ids, total_commission: total }),
    }))
}

/// commission.ComputeSettlements for `items`, one call per program and
/// program settings chunk.
async fn settle(saga: &SettleSale, items: &[Item<'_>]) -> Vec<StepResult> {
    let inputs: Vec<Result<Inputs<'_>, StepError>> = items
        .iter()
        .map(|item| Ok((earlier(item, Step::Resolve)?, earlier(item, Step::Upline)?, currency_of(item)?)))
        .collect();
    let ready = Ready::of(items, &inputs);
    // One request per program and program settings (settings live in each saga's log).
    let chunks: Vec<Vec<usize>> = chunk_by_program(&ready.items, |_| 1)
        .into_iter()
        .flat_map(|chunk| by_settings(chunk, |i| &ready.inputs[i].1.program))
        .collect();
    let outcomes = per_chunk(chunks, ready.items.len(), |chunk| {
        let program_id = chunk_program(&ready.items, &chunk);
        let ctx = chunk.first().map(|&i| &ready.inputs[i].1.program);
        let currencies: Vec<Currency> = chunk.iter().map(|&i| ready.inputs[i].2).collect();
        let sale_ids: Vec<String> = chunk.iter().map(|&i| ready.items[i].subject.id.to_string()).collect();
        let ready = &ready;
        let context = move |k: usize| {
            let i = chunk[k];
            let (r, u, currency) = ready.inputs[i];
            sale_context(ready.items[i].subject, r, u, *currency)
        };
        async move {
            let ctx = ctx.ok_or_else(|| StepError::Transient("a commission call was cut with no sales".into()))?;
            let program = program_context(program_id?, ctx);
            let response = settle_batch(saga, &program, &sale_ids, context, None).await?;
            let mut by_sale: HashMap<String, passthrough::Settlement> =
                response.settlements.into_iter().map(|s| (s.sale_id.clone(), s)).collect();
            Ok(sale_ids
                .iter()
                .zip(currencies)
                .map(|(sale_id, currency)| {
                    let settlement = by_sale
                        .remove(sale_id.as_str())
                        .ok_or_else(|| StepError::Transient("commission returned no settlement for the sale".into()))?;
                    compute_out(settlement, currency)
                })
                .collect())
        }
    })
    .await;
    let positions = ready.positions;
    merge(inputs, positions, outcomes)
}

#[cfg(test)]
mod tests {
    use accrue_kit::convert::settlement::entry_input;
    use accrue_types::settlement::EarningKind;

    use super::*;

    /// `settlement` as the saga reads it from the wire.
    fn received(settlement: &cpb::Settlement) -> passthrough::Settlement {
        passthrough::Settlement::decode(settlement.encode_to_vec().as_slice()).unwrap()
    }

    #[test]
    fn compute_out_rejects_failures_unknown_kinds_and_sums() {
        let gbp = Currency::from_code("GBP").unwrap();
        let failed = cpb::Settlement {
            failure: Some(tpb::ItemFailure {
                code: "FAILED_PRECONDITION".into(),
                reason: "CURRENCY_MISMATCH".into(),
                message: "x".into(),
            }),
            ..Default::default()
        };
        let failed = compute_out(received(&failed), gbp);
        assert!(matches!(failed, Err(StepError::Permanent(m)) if m.contains("CURRENCY_MISMATCH")));
        let breakdown = tpb::CommissionBreakdown { model: "PERCENTAGE".into(), ..Default::default() };
        let line = cpb::SettlementLine {
            partner_id: uuid::Uuid::from_u128(1).to_string(),
            kind: tpb::EarningKind::Direct as i32,
            amount: Some(tpb::Money { currency_code: "GBP".into(), amount: "5.00".into() }),
            clears_at: Some(prost_types::Timestamp { seconds: 1_702_592_000, nanos: 0 }),
            breakdown: Some(breakdown.clone()),
            ..Default::default()
        };
        let ok = cpb::Settlement {
            base_commission: Some(tpb::Money { currency_code: "GBP".into(), amount: "10.00".into() }),
            lines: vec![line.clone()],
            ..Default::default()
        };
        let value = compute_out(received(&ok), gbp).unwrap();
        assert_eq!(value.json(), "{}", "never logged");
        let out: ComputeOut = value.decode().unwrap();
        assert_eq!(out.lines[0].line.kind, EarningKind::Direct);
        assert_eq!(out.lines[0].line.breakdown, None, "kept encoded beside the line");
        assert_eq!(out.lines[0].breakdown.as_deref(), Some(breakdown.encode_to_vec().as_slice()), "as sent");
        assert_eq!(out.base_commission, Decimal::new(1000, 2));
        assert_eq!(out.total_commission(), Decimal::new(500, 2));
        let input = entry_input(out.lines[0].line.clone(), chrono::Utc::now());
        assert_eq!(input.kind, tpb::EarningKind::Direct as i32);
        assert_eq!(input.amount.unwrap().amount, "5.00");

        let unknown = cpb::Settlement { lines: vec![cpb::SettlementLine { kind: 99, ..line.clone() }], ..ok.clone() };
        let unknown = compute_out(received(&unknown), gbp);
        assert!(matches!(unknown, Err(StepError::Permanent(m)) if m.contains("lines[0].kind")));
        let no_amount = cpb::Settlement { lines: vec![cpb::SettlementLine { amount: None, ..line }], ..ok };
        assert!(matches!(compute_out(received(&no_amount), gbp), Err(StepError::Permanent(_))));
    }

    /// A compute output logged before issue 15 (lines with their breakdowns
    /// decoded, the kind by stored name) still reads, its breakdown encoded.
    #[test]
    fn a_logged_compute_output_reads_with_its_breakdown_encoded() {
        let logged = serde_json::json!({
            "currency": "GBP", "base_commission": "10.00", "agreement_version_id": "",
            "lines": [{"partner_id": uuid::Uuid::from_u128(1).to_string(), "kind": "DIRECT", "currency": "GBP",
                       "amount": "5.00", "level": 0, "source_partner_id": "", "clears_at": "2024-02-01T00:00:00Z",
                       "breakdown": {"model": "PERCENTAGE", "formula": "f", "inputs": {"rate": "0.05"},
                                     "rule": "r", "agreement_version_id": "", "rounding": "x", "note": ""}}],
        });
        let out: ComputeOut = serde_json::from_value(logged).unwrap();
        assert_eq!(out.lines[0].line.kind, EarningKind::Direct);
        let breakdown = tpb::CommissionBreakdown::decode(out.lines[0].breakdown.clone().unwrap()).unwrap();
        assert_eq!(breakdown.model, "PERCENTAGE");
        assert_eq!(breakdown.inputs.get("rate").map(String::as_str), Some("0.05"));
    }
}
