//! The downline roster's aggregates (seed 004 "a roster of their
//! sub-partners, with each sub-partner's funded count and the override
//! earned from them"; issue 14 item 4), read from the ledger over gRPC
//! (ledger.GetOverrideBreakdown): the hierarchy never reads the ledger's
//! schema, and a parent sees counts and sums, never a sub-partner's sales.

use std::collections::{BTreeMap, HashMap};

use accrue_money::Currency;
use accrue_proto::ledger::v1 as lpb;
use accrue_proto::types::v1 as types;
use accrue_types::PartnerId;
use rust_decimal::Decimal;
use tonic::{Code, Status};

use super::HierarchyApi;
use crate::store::PartnerRow;

/// One roster member's aggregates.
#[derive(Debug, Clone, Default)]
pub(super) struct MemberTotals {
    /// The member's funded sales.
    pub(super) funded_sale_count: i64,
    /// The override the queried partner earned from it, net, per currency.
    pub(super) override_earned: Vec<types::Money>,
    /// The member's sales that paid the queried partner an override.
    pub(super) override_sale_count: i64,
}

impl HierarchyApi {
    /// The aggregates of `members` (one page of `own`'s downline): each
    /// one's funded sales and, when `with_overrides`, the override `own`
    /// earned from it. Empty without a ledger client; UNAVAILABLE when the
    /// ledger does not answer.
    pub(super) async fn downline_aggregates(
        &self,
        own: &PartnerRow,
        members: &[PartnerRow],
        with_overrides: bool,
    ) -> Result<HashMap<PartnerId, MemberTotals>, Status> {
        let Some(ledger) = &self.ledger else { return Ok(HashMap::new()) };
        if members.is_empty() {
            return Ok(HashMap::new());
        }
        let mut client = ledger.clone();
        let mut totals: HashMap<PartnerId, MemberTotals> = HashMap::new();
        let mut nets: HashMap<PartnerId, BTreeMap<String, Decimal>> = HashMap::new();
        let mut page_token = String::new();
        loop {
            let response = client
                .get_override_breakdown(lpb::GetOverrideBreakdownRequest {
                    program_id: own.program_id.to_string(),
                    partner_id: own.id.to_string(),
                    source_partner_ids: members.iter().map(|m| m.id.to_string()).collect(),
                    page_size: 1000,
                    page_token: page_token.clone(),
                    ..Default::default()
                })
                .await
                .map_err(unavailable)?
                .into_inner();
            for funded in &response.funded_sales {
                if let Ok(source) = funded.source_partner_id.parse::<PartnerId>() {
                    totals.entry(source).or_default().funded_sale_count = funded.sale_count;
                }
            }
            if with_overrides {
                for row in &response.sources {
                    let Ok(source) = row.source_partner_id.parse::<PartnerId>() else { continue };
                    let net =
                        row.net_amount.as_ref().and_then(|m| m.amount.parse::<Decimal>().ok()).unwrap_or_default();
                    *nets.entry(source).or_default().entry(row.currency_code.clone()).or_default() += net;
                    totals.entry(source).or_default().override_sale_count += row.sale_count;
                }
            }
            if response.next_page_token.is_empty() {
                break;
            }
            page_token = response.next_page_token;
        }
        for (source, by_currency) in nets {
            let entry = totals.entry(source).or_default();
            for (code, amount) in by_currency {
                if let Ok(currency) = Currency::from_code(&code) {
                    entry.override_earned.push(accrue_kit::convert::amount_to_proto(currency, amount));
                }
            }
        }
        Ok(totals)
    }
}

/// A ledger failure as the roster's: UNAVAILABLE (retry), logged.
fn unavailable(status: Status) -> Status {
    tracing::warn!(error = %status, "ledger.GetOverrideBreakdown failed");
    Status::new(Code::Unavailable, "the ledger service is unavailable; retry")
}
