//! GetLinkStats and GetPartnerStats (issue 14 item 5): clicks, leads, sales,
//! revenue and refunds from the attribution schema's own rows; commission by
//! kind from the ledger over gRPC (ledger.GetEarningsSummary), never from
//! another schema.

// The API module's imports.
use super::*;

use std::collections::BTreeMap;

use accrue_kit::auth::Identity;
use accrue_kit::convert::from_timestamp;
use accrue_proto::ledger::v1 as lpb;
use rust_decimal::Decimal;

use crate::store::{Period, StatsOf, StatsRow};

/// Sale ids per ledger.GetEarningsSummary call (the ledger's limit).
const SALES_PER_SUMMARY: usize = 1000;

/// A stats period from `start_time` / `end_time` (either optional; the end
/// after the start), violations on those fields.
fn period(
    start: Option<&prost_types::Timestamp>,
    end: Option<&prost_types::Timestamp>,
    violations: &mut FieldViolations,
) -> Period {
    let start = from_timestamp("start_time", start, violations);
    let end = from_timestamp("end_time", end, violations);
    if let (Some(start), Some(end)) = (start, end)
        && end <= start
    {
        violations.add("end_time", "must be after start_time");
    }
    Period { start, end }
}

/// Amounts per currency code on the wire (unknown stored codes are skipped:
/// every stored currency was validated on the way in).
fn moneys(amounts: &[(String, Decimal)]) -> Vec<types::Money> {
    amounts
        .iter()
        .filter_map(|(code, amount)| Currency::from_code(code).ok().map(|c| amount_to_proto(c, *amount)))
        .collect()
}

/// Per-kind sums of one currency.
#[derive(Debug, Default)]
struct Kinds {
    direct: Decimal,
    split: Decimal,
    r#override: Decimal,
    margin: Decimal,
    clawback: Decimal,
}

fn amount_of(money: Option<&types::Money>) -> Decimal {
    money.and_then(|m| m.amount.parse().ok()).unwrap_or_default()
}

/// Folds ledger summaries (any partners) into one [`pb::CommissionTotals`]
/// per currency, ordered by code.
fn commission_totals(summaries: &[lpb::EarningsSummary]) -> Vec<pb::CommissionTotals> {
    let mut by_currency: BTreeMap<String, Kinds> = BTreeMap::new();
    for s in summaries {
        let kinds = by_currency.entry(s.currency_code.clone()).or_default();
        kinds.direct += amount_of(s.direct.as_ref());
        kinds.split += amount_of(s.split.as_ref());
        kinds.r#override += amount_of(s.r#override.as_ref());
        kinds.margin += amount_of(s.margin.as_ref());
        kinds.clawback += amount_of(s.clawback.as_ref());
    }
    by_currency
        .into_iter()
        .filter_map(|(code, k)| {
            let currency = Currency::from_code(&code).ok()?;
            let money = |amount| Some(amount_to_proto(currency, amount));
            Some(pb::CommissionTotals {
                currency_code: code,
                direct: money(k.direct),
                split: money(k.split),
                r#override: money(k.r#override),
                margin: money(k.margin),
                clawback: money(k.clawback),
                total: money(k.direct + k.split + k.r#override + k.margin - k.clawback),
            })
        })
        .collect()
}

impl AttributionApi {
    /// ledger.GetEarningsSummary; anything but the caller's mistake is
    /// UNAVAILABLE (retry).
    async fn earnings(&self, request: lpb::GetEarningsSummaryRequest) -> Result<Vec<lpb::EarningsSummary>, Status> {
        let mut client = self.peers.ledger.clone();
        Ok(client
            .get_earnings_summary(request)
            .await
            .map_err(|status| match status.code() {
                Code::InvalidArgument | Code::NotFound => status,
                _ => {
                    tracing::warn!(error = %status, "ledger.GetEarningsSummary failed");
                    Status::unavailable("the ledger service is unavailable; retry")
                }
            })?
            .into_inner()
            .summaries)
    }

    /// GetLinkStats: the link's clicks, credited leads, attributed sales
    /// (every state) and their revenue, and refunds of its sales, in
    /// [start_time, end_time) by each one's occurred_at; the ledger entries
    /// of those sales by kind (for a partner token only its own entries);
    /// clicks per UTC day for the days the period touches. NOT_FOUND when
    /// the link is absent or the caller may not see it (a partner token:
    /// links it owns or shares in). INVALID_ARGUMENT for a bad id or period.
    pub(super) async fn link_stats(
        &self,
        scope: &Identity,
        req: pb::GetLinkStatsRequest,
    ) -> Result<pb::LinkStats, Status> {
        let mut violations = FieldViolations::new();
        let link_id: Option<accrue_types::LinkId> = require_uuid("link_id", &req.link_id, &mut violations);
        let period = period(req.start_time.as_ref(), req.end_time.as_ref(), &mut violations);
        violations.into_result()?;
        let link_id = link_id.ok_or_else(|| invalid_field("link_id", "is required"))?;
        let link = store::get_link(&self.pool, link_id)
            .await?
            .filter(|row| scope.may_see(row.program_id, &row.partners()))
            .ok_or_else(|| not_found("link", link_id))?;
        let row = store::stats(&self.pool, StatsOf::Link(link_id), period).await?;
        let partner_ids: Vec<String> = scope.partner_scope().map(|own| own.to_string()).into_iter().collect();
        let mut summaries = Vec::new();
        for chunk in row.sale_ids.chunks(SALES_PER_SUMMARY) {
            summaries.extend(
                self.earnings(lpb::GetEarningsSummaryRequest {
                    program_id: link.program_id.to_string(),
                    partner_ids: partner_ids.clone(),
                    sale_ids: chunk.iter().map(ToString::to_string).collect(),
                    ..Default::default()
                })
                .await?,
            );
        }
        let StatsRow { clicks, leads, sales, revenue, refunds, refunded, daily_clicks, .. } = row;
        Ok(pb::LinkStats {
            link_id: link_id.to_string(),
            clicks,
            leads,
            sales,
            revenue: moneys(&revenue),
            commission: commission_totals(&summaries),
            refunds,
            refunded: moneys(&refunded),
            daily_clicks: daily_clicks
                .into_iter()
                .map(|(day, clicks)| pb::DailyClicks { date: day.format("%Y-%m-%d").to_string(), clicks })
                .collect(),
        })
    }

    /// GetPartnerStats: clicks on and leads credited to the links the
    /// partner owns, the sales it sold (every state) and their revenue, and
    /// refunds of them, in [start_time, end_time) by each one's occurred_at;
    /// its ledger entries whose occurred_at is in the period, by kind. A
    /// partner token sees only itself (another partner: NOT_FOUND).
    /// NOT_FOUND when the partner is not one of the program's (hierarchy).
    pub(super) async fn partner_stats(
        &self,
        scope: &Identity,
        req: pb::GetPartnerStatsRequest,
    ) -> Result<pb::PartnerStats, Status> {
        let mut violations = FieldViolations::new();
        let program_id: Option<ProgramId> = require_uuid("program_id", &req.program_id, &mut violations);
        let partner_id: Option<PartnerId> = require_uuid("partner_id", &req.partner_id, &mut violations);
        let period = period(req.start_time.as_ref(), req.end_time.as_ref(), &mut violations);
        violations.into_result()?;
        let (Some(program_id), Some(partner_id)) = (program_id, partner_id) else {
            return Err(invalid_field("partner_id", "is required"));
        };
        scope.require_program(program_id)?;
        if !scope.may_see(program_id, &[partner_id]) {
            return Err(not_found("partner", partner_id));
        }
        // NOT_FOUND for a partner that is not the program's.
        self.check_exists(program_id, partner_id).await?;
        let row = store::stats(&self.pool, StatsOf::Partner(program_id, partner_id), period).await?;
        let summaries = self
            .earnings(lpb::GetEarningsSummaryRequest {
                program_id: program_id.to_string(),
                partner_ids: vec![partner_id.to_string()],
                start_time: period.start.map(timestamp),
                end_time: period.end.map(timestamp),
                sale_ids: Vec::new(),
            })
            .await?;
        Ok(pb::PartnerStats {
            program_id: program_id.to_string(),
            partner_id: partner_id.to_string(),
            clicks: row.clicks,
            leads: row.leads,
            sales: row.sales,
            revenue: moneys(&row.revenue),
            earnings: commission_totals(&summaries),
            refunds: row.refunds,
            refunded: moneys(&row.refunded),
        })
    }

    /// NOT_FOUND unless `partner_id` is one of the program's partners
    /// (hierarchy.GetUplines; any status).
    async fn check_exists(&self, program_id: ProgramId, partner_id: PartnerId) -> Result<(), Status> {
        let response = self.get_uplines(program_id, &[partner_id]).await?;
        let id = partner_id.to_string();
        if response.uplines.iter().filter_map(|u| u.partner.as_ref()).any(|p| p.id == id) {
            Ok(())
        } else {
            Err(not_found("partner", partner_id))
        }
    }
}
