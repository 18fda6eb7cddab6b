//! Read-only reports: the earnings summary (optionally for a period and a
//! set of sales; GetLinkStats and GetPartnerStats of the attribution service
//! read it) and the override breakdown by source partner (seed 004 "show
//! each partner their own earnings plus downline/override earnings";
//! issue 14 item 4).

// The API module's imports.
use super::*;

/// Most sale ids one GetEarningsSummary names, and most source partners one
/// GetOverrideBreakdown names.
pub const MAX_REPORT_IDS: usize = 1000;

/// GetOverrideBreakdown keyset cursor: the last row's (source, level, currency).
#[derive(Debug, Serialize, Deserialize)]
struct BreakdownCursor {
    /// Source partner.
    s: PartnerId,
    /// Level.
    l: i32,
    /// Currency.
    c: String,
}

/// At most [`MAX_REPORT_IDS`] sale ids of 1..64 bytes each (violations on
/// `sale_ids` and `sale_ids[i]`).
fn check_sale_ids(sale_ids: &[String], violations: &mut FieldViolations) {
    if sale_ids.len() > MAX_REPORT_IDS {
        violations.add("sale_ids", format!("at most {MAX_REPORT_IDS} sales per call"));
    }
    for (index, id) in sale_ids.iter().enumerate() {
        if id.is_empty() || id.len() > 64 {
            violations.add(format!("sale_ids[{index}]"), "must be a sale id (1..64 bytes)");
        }
    }
}

/// A report's period from `start_time` / `end_time` (either optional; the
/// end must be after the start), violations on those fields.
pub(super) fn period(
    start: Option<&prost_types::Timestamp>,
    end: Option<&prost_types::Timestamp>,
    violations: &mut FieldViolations,
) -> store::Period {
    let start = from_timestamp("start_time", start, violations);
    let end = from_timestamp("end_time", end, violations);
    if let (Some(start), Some(end)) = (start, end)
        && end <= start
    {
        violations.add("end_time", "must be after start_time");
    }
    store::Period { start, end }
}

impl LedgerApi {
    /// GetEarningsSummary (see the trait method's contract).
    pub(super) async fn earnings_summary(
        &self,
        request: Request<pb::GetEarningsSummaryRequest>,
    ) -> Result<Response<pb::GetEarningsSummaryResponse>, Status> {
        let scope = accrue_kit::auth::caller(&request)?.clone();
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let program_id = require_uuid("program_id", &request.program_id, &mut violations);
        let partner_ids: Vec<PartnerId> = request
            .partner_ids
            .iter()
            .enumerate()
            .filter_map(|(index, id)| require_uuid(&format!("partner_ids[{index}]"), id, &mut violations))
            .collect();
        let period = period(request.start_time.as_ref(), request.end_time.as_ref(), &mut violations);
        check_sale_ids(&request.sale_ids, &mut violations);
        violations.into_result()?;
        let program_id = program_id.ok_or_else(|| invalid_field("program_id", "is required"))?;
        scope.require_program(program_id)?;
        let Some(partner_ids) = scope.partner_ids(partner_ids) else {
            return Ok(Response::new(pb::GetEarningsSummaryResponse::default()));
        };
        let rows = store::earnings_summary(&self.pool, program_id, &partner_ids, &period, &request.sale_ids).await?;
        let mut summaries = Vec::with_capacity(rows.len());
        for row in rows {
            let currency = Currency::from_code(&row.currency).map_err(internal)?;
            summaries.push(pb::EarningsSummary {
                partner_id: row.partner_id.to_string(),
                currency_code: currency.code().to_string(),
                direct: money(currency, row.direct),
                split: money(currency, row.split),
                r#override: money(currency, row.override_amount),
                margin: money(currency, row.margin),
                total: money(currency, row.total),
                clawback: money(currency, row.clawback),
                clawback_direct: money(currency, row.clawback_direct),
                clawback_split: money(currency, row.clawback_split),
                clawback_override: money(currency, row.clawback_override),
                clawback_margin: money(currency, row.clawback_margin),
            });
        }
        Ok(Response::new(pb::GetEarningsSummaryResponse { summaries }))
    }

    /// GetOverrideBreakdown: the partner's non-VOIDED OVERRIDE entries whose
    /// occurred_at is in [start_time, end_time), one row per (source partner,
    /// level, currency) with the distinct sales credited, Σ CREDITs, Σ DEBITs
    /// and the net, ordered by (source, level, currency) and paged (AIP-158).
    /// With `source_partner_ids` (≤ 1000) only those sources, and the first
    /// page also carries each one's funded sales (its sales with a live
    /// CREDIT entry of any kind in the period) — for a partner token only
    /// the sources that paid it an override, so a parent learns aggregates
    /// of its own downline only (seed 004 "Auth"). A partner token naming
    /// another partner gets an empty page. INVALID_ARGUMENT for malformed
    /// ids, times, page size or token.
    pub(super) async fn override_breakdown(
        &self,
        request: Request<pb::GetOverrideBreakdownRequest>,
    ) -> Result<Response<pb::GetOverrideBreakdownResponse>, Status> {
        let scope = accrue_kit::auth::caller(&request)?.clone();
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let program_id: Option<ProgramId> = require_uuid("program_id", &request.program_id, &mut violations);
        let partner_id: Option<PartnerId> = require_uuid("partner_id", &request.partner_id, &mut violations);
        let period = period(request.start_time.as_ref(), request.end_time.as_ref(), &mut violations);
        if request.source_partner_ids.len() > MAX_REPORT_IDS {
            violations.add("source_partner_ids", format!("at most {MAX_REPORT_IDS} partners per call"));
        }
        let sources: Vec<PartnerId> = request
            .source_partner_ids
            .iter()
            .enumerate()
            .filter_map(|(index, id)| require_uuid(&format!("source_partner_ids[{index}]"), id, &mut violations))
            .collect();
        violations.into_result()?;
        let (Some(program_id), Some(partner_id)) = (program_id, partner_id) else {
            return Err(invalid_field("partner_id", "is required"));
        };
        scope.require_program(program_id)?;
        let size = page::page_size(request.page_size)?;
        let source_key: Vec<String> = sources.iter().map(PartnerId::to_string).collect();
        let query = format!(
            "override-breakdown|{program_id}|{partner_id}|{:?}|{:?}|{}",
            period.start,
            period.end,
            source_key.join(",")
        );
        let cursor = page::decode::<BreakdownCursor>(&query, &request.page_token)?;
        if scope.partner_filter(Some(partner_id)).is_none() {
            return Ok(Response::new(pb::GetOverrideBreakdownResponse::default()));
        }
        let after = cursor.as_ref().map(|c| (c.s, c.l, c.c.clone()));
        let mut rows =
            store::override_breakdown(&self.pool, program_id, partner_id, &period, &sources, after.as_ref(), size + 1)
                .await?;
        let next_page_token = page::next_page(&mut rows, size, &query, |row| BreakdownCursor {
            s: row.source_partner_id,
            l: row.level,
            c: row.currency.clone(),
        })?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let currency = Currency::from_code(&row.currency).map_err(internal)?;
            out.push(pb::OverrideSource {
                source_partner_id: row.source_partner_id.to_string(),
                level: row.level,
                currency_code: currency.code().to_string(),
                sale_count: row.sale_count,
                amount: money(currency, row.amount),
                clawback: money(currency, row.clawback),
                net_amount: money(currency, row.amount - row.clawback),
            });
        }
        let funded_sales = if sources.is_empty() || cursor.is_some() {
            Vec::new()
        } else {
            let earned_by = scope.partner_scope().map(|_| partner_id);
            let counts = store::funded_sales(&self.pool, program_id, &sources, &period, earned_by).await?;
            let mut seen = HashSet::new();
            sources
                .iter()
                .filter(|source| seen.insert(**source))
                .filter(|source| earned_by.is_none() || counts.contains_key(source))
                .map(|source| pb::FundedSales {
                    source_partner_id: source.to_string(),
                    sale_count: counts.get(source).copied().unwrap_or(0),
                })
                .collect()
        };
        Ok(Response::new(pb::GetOverrideBreakdownResponse { sources: out, next_page_token, funded_sales }))
    }
}

/// ListSaleLines: the live (not VOIDED) CREDIT lines of 1..[`MAX_REPORT_IDS`]
/// sales, without breakdowns, by sale then posting order (SimulateProgram's
/// actuals, issue 16 item 2). INVALID_ARGUMENT (`program_id`, `sale_ids`)
/// for a malformed program, no sale or too many; an unknown sale has no lines.
pub(super) async fn list_sale_lines(
    api: &LedgerApi,
    scope: &Identity,
    request: pb::ListSaleLinesRequest,
) -> Result<pb::ListSaleLinesResponse, Status> {
    let mut violations = FieldViolations::new();
    let program_id = require_uuid("program_id", &request.program_id, &mut violations);
    if request.sale_ids.is_empty() {
        violations.add("sale_ids", "at least one sale is required");
    }
    check_sale_ids(&request.sale_ids, &mut violations);
    violations.into_result()?;
    let program_id = program_id.ok_or_else(|| invalid_field("program_id", "is required"))?;
    scope.require_program(program_id)?;
    let rows = store::sale_lines(&api.pool, program_id, &request.sale_ids).await.map_err(db_error)?;
    let lines = rows
        .into_iter()
        .map(|row| {
            let kind = EarningKind::from_name(&row.kind)
                .ok_or_else(|| internal(format!("stored entry kind {:?} is unknown", row.kind)))?;
            let currency = Currency::from_code(&row.currency)
                .map_err(|e| internal(format!("stored entry currency {:?}: {e}", row.currency)))?;
            Ok(pb::SaleLine {
                sale_id: row.sale_id,
                partner_id: row.partner_id.to_string(),
                kind: kind_to_proto(kind) as i32,
                level: row.level,
                amount: Some(amount_to_proto(currency, row.amount)),
                status: proto_from_stored(&row.status) as i32,
            })
        })
        .collect::<Result<Vec<_>, Status>>()?;
    Ok(pb::ListSaleLinesResponse { lines })
}
