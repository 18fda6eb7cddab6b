//! compute: commission.ComputeSettlements for every sale, pinned to the
//! agreement version in force at the sale's `occurred_at`; one call per
//! program (and program settings) chunk. Its undo is [`super::nothing`].

use std::collections::{BTreeMap, HashMap};

use accrue_kit::convert::{amount_to_proto, timestamp};
use accrue_money::Currency;
use accrue_proto::commission::v1 as cpb;
use accrue_proto::types::v1 as tpb;
use accrue_saga::{StepError, StepResult, output};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::resolve::ResolveOut;
use super::upline::{PartnerCtx, ProgramCtx, UplineOut};
use super::{
    Item, Ready, SettleSale, Step, chunk_by_program, chunk_program, currency_of, earlier, failure_message, merge,
    per_chunk,
};
use crate::domain::sale::event_type_to_proto;
use crate::peers::step_error;

/// A line's breakdown: how its amount was reached (the audit trail).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub(crate) struct BreakdownOut {
    pub(super) model: String,
    pub(super) formula: String,
    pub(super) inputs: BTreeMap<String, String>,
    pub(super) rule: String,
    pub(super) agreement_version_id: String,
    pub(super) rounding: String,
    pub(super) note: String,
}

/// One settlement line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LineOut {
    pub(super) partner_id: String,
    /// The `accrue.types.v1.EarningKind` name ("EARNING_KIND_DIRECT", …).
    pub(super) kind: String,
    pub(super) currency: String,
    /// Major units, exact in the currency's minor unit.
    pub(super) amount: Decimal,
    pub(super) level: i32,
    pub(super) source_partner_id: String,
    pub(super) clears_at: Option<DateTime<Utc>>,
    pub(super) breakdown: Option<BreakdownOut>,
}

/// compute's output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ComputeOut {
    pub(crate) currency: String,
    /// Major units; zero when no rule earned a base commission.
    pub(crate) base_commission: Decimal,
    pub(crate) agreement_version_id: String,
    pub(crate) lines: Vec<LineOut>,
}

fn partner_context(p: &PartnerCtx) -> cpb::PartnerContext {
    cpb::PartnerContext { partner_id: p.partner_id.clone(), status: p.status, role: p.role.clone() }
}

fn sale_context(item: &Item<'_>, r: &ResolveOut, u: &UplineOut, currency: Currency) -> cpb::SaleContext {
    let sale = item.subject;
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

fn from_timestamp(ts: &prost_types::Timestamp) -> Result<DateTime<Utc>, StepError> {
    u32::try_from(ts.nanos)
        .ok()
        .and_then(|nanos| DateTime::from_timestamp(ts.seconds, nanos))
        .ok_or_else(|| invalid(&format!("an invalid timestamp {ts:?}")))
}

fn breakdown_out(b: &tpb::CommissionBreakdown) -> BreakdownOut {
    BreakdownOut {
        model: b.model.clone(),
        formula: b.formula.clone(),
        inputs: b.inputs.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        rule: b.rule.clone(),
        agreement_version_id: b.agreement_version_id.clone(),
        rounding: b.rounding.clone(),
        note: b.note.clone(),
    }
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

pub(super) fn compute_out(settlement: &cpb::Settlement, currency: Currency) -> StepResult {
    if let Some(failure) = &settlement.failure {
        return Err(StepError::Permanent(failure_message(failure)));
    }
    // No base commission is sent when no rule earned one.
    let (base_currency, base) = match &settlement.base_commission {
        Some(money) => parse_money(money, currency)?,
        None => (currency, Decimal::ZERO),
    };
    let mut lines = Vec::with_capacity(settlement.lines.len());
    for line in &settlement.lines {
        let money = line.amount.as_ref().ok_or_else(|| invalid("a line without an amount"))?;
        let (line_currency, amount) = parse_money(money, currency)?;
        let kind = tpb::EarningKind::try_from(line.kind)
            .ok()
            .filter(|kind| *kind != tpb::EarningKind::Unspecified)
            .ok_or_else(|| invalid(&format!("a line of unknown kind {}", line.kind)))?;
        lines.push(LineOut {
            partner_id: line.partner_id.clone(),
            kind: kind.as_str_name().to_string(),
            currency: line_currency.code().to_string(),
            amount,
            level: line.level,
            source_partner_id: line.source_partner_id.clone(),
            clears_at: line.clears_at.as_ref().map(from_timestamp).transpose()?,
            breakdown: line.breakdown.as_ref().map(breakdown_out),
        });
    }
    output(&ComputeOut {
        currency: base_currency.code().to_string(),
        base_commission: base,
        agreement_version_id: settlement.agreement_version_id.clone(),
        lines,
    })
}

pub(super) async fn action(saga: &SettleSale, items: &[Item<'_>]) -> Vec<StepResult> {
    let inputs: Vec<Result<(ResolveOut, UplineOut, Currency), StepError>> = items
        .iter()
        .map(|item| Ok((earlier(item, Step::Resolve)?, earlier(item, Step::Upline)?, currency_of(item)?)))
        .collect();
    let ready = Ready::of(items, &inputs);
    // One request per program and program settings (settings live in each saga's log).
    let mut chunks: Vec<Vec<usize>> = Vec::new();
    for chunk in chunk_by_program(&ready.items, |_| 1) {
        let mut by_ctx: Vec<(ProgramCtx, Vec<usize>)> = Vec::new();
        for i in chunk {
            let ctx = &ready.inputs[i].1.program;
            match by_ctx.iter_mut().find(|(c, _)| c == ctx) {
                Some((_, group)) => group.push(i),
                None => by_ctx.push((ctx.clone(), vec![i])),
            }
        }
        chunks.extend(by_ctx.into_iter().map(|(_, group)| group));
    }
    let outcomes = per_chunk(chunks, ready.items.len(), |chunk| {
        let mut client = saga.peers.commission.clone();
        let program_id = chunk_program(&ready.items, &chunk);
        let ctx = chunk.first().map(|&i| ready.inputs[i].1.program.clone());
        let sales: Vec<cpb::SaleContext> = chunk
            .iter()
            .map(|&i| {
                let (r, u, currency) = ready.inputs[i];
                sale_context(&ready.items[i], r, u, *currency)
            })
            .collect();
        let currencies: Vec<Currency> = chunk.iter().map(|&i| ready.inputs[i].2).collect();
        async move {
            let program_id = program_id?;
            let ctx = ctx.ok_or_else(|| StepError::Transient("a commission call was cut with no sales".into()))?;
            let sale_ids: Vec<String> = sales.iter().map(|s| s.sale_id.clone()).collect();
            let response = client
                .compute_settlements(cpb::ComputeSettlementsRequest {
                    program: Some(cpb::ProgramContext {
                        program_id: program_id.to_string(),
                        rounding_mode: ctx.rounding_mode,
                        override_depth_cap: ctx.override_depth_cap,
                        compression_enabled: ctx.compression_enabled,
                        settings_version: ctx.settings_version,
                    }),
                    sales,
                })
                .await
                .map_err(|status| step_error("commission.ComputeSettlements", &status))?
                .into_inner();
            let by_sale: HashMap<&str, &cpb::Settlement> =
                response.settlements.iter().map(|s| (s.sale_id.as_str(), s)).collect();
            Ok(sale_ids
                .iter()
                .zip(currencies)
                .map(|(sale_id, currency)| {
                    let settlement = by_sale
                        .get(sale_id.as_str())
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
    use super::*;

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
        assert!(matches!(compute_out(&failed, gbp), Err(StepError::Permanent(m)) if m.contains("CURRENCY_MISMATCH")));
        let line = cpb::SettlementLine {
            partner_id: "p".into(),
            kind: tpb::EarningKind::Direct as i32,
            amount: Some(tpb::Money { currency_code: "GBP".into(), amount: "5.00".into() }),
            ..Default::default()
        };
        let ok = cpb::Settlement {
            base_commission: Some(tpb::Money { currency_code: "GBP".into(), amount: "10.00".into() }),
            lines: vec![line.clone()],
            ..Default::default()
        };
        let value = compute_out(&ok, gbp).unwrap();
        let out: ComputeOut = serde_json::from_value(value).unwrap();
        assert_eq!(out.lines[0].kind, "EARNING_KIND_DIRECT");
        assert_eq!(out.base_commission, Decimal::new(1000, 2));
        let input = super::super::post::entry_input(&out.lines[0], Utc::now()).unwrap();
        assert_eq!(input.kind, tpb::EarningKind::Direct as i32);
        assert_eq!(input.amount.unwrap().amount, "5.00");

        let unknown = cpb::Settlement { lines: vec![cpb::SettlementLine { kind: 99, ..line.clone() }], ..ok.clone() };
        assert!(matches!(compute_out(&unknown, gbp), Err(StepError::Permanent(m)) if m.contains("unknown kind 99")));
        let no_amount = cpb::Settlement { lines: vec![cpb::SettlementLine { amount: None, ..line }], ..ok };
        assert!(matches!(compute_out(&no_amount, gbp), Err(StepError::Permanent(_))));
    }
}
