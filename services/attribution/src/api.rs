//! tonic implementation of `AttributionService`: decode and validate, call the
//! store (and hierarchy for link partners and for sellers' roles), encode.

use std::collections::{HashMap, HashSet};

use accrue_kit::FieldViolations;
use accrue_kit::convert::{EventWindow, amount_to_proto, parse_id, require_uuid, timestamp};
use accrue_kit::error::{already_exists, failed_precondition, internal, invalid_field, not_found};
use accrue_kit::{idempotency, page};
use accrue_money::Currency;
use accrue_proto::attribution::v1 as pb;
use accrue_proto::attribution::v1::attribution_service_server::AttributionService;
use accrue_proto::hierarchy::v1 as hpb;
use accrue_proto::types::v1 as types;
use accrue_types::{PartnerId, ProgramId};
use chrono::Utc;
use sqlx::PgPool;
use tonic::{Code, Request, Response, Status, Streaming};

use crate::domain::link::{MAX_URL_LEN, Split, check_key, check_splits};
use crate::domain::refund::{RefundState, SaleRef, parse_refund};
use crate::domain::sale::{MAX_ID_LEN, SaleInput, event_type_to_proto, parse_sale};
use crate::domain::state::{SaleState, saga_state_from_proto, saga_state_to_proto};
use crate::domain::touch::{Model, Rule};
use crate::peers::Peers;
use crate::saga::clawback_sale::ClawbackSale;
use crate::saga::settle_sale::SettleSale;
use crate::store::{
    self, Attributions, Cursor, LeadRow, LinkFilter, LinkInsert, LinkRow, NewLink, RecordOutcome, RefundOutcome,
    RefundRow, RetryOutcome, SagaRow, SaleRow,
};
use accrue_saga::SagaDef;

mod coalesce;
pub(crate) mod codec;
mod recording;
mod simulate;
mod stats;
mod touches;

use codec::*;
use recording::*;
use touches::{link_archived, settings_to_proto};

/// Most sales in one RecordSales message.
pub const MAX_SALES_PER_MESSAGE: usize = 1000;

/// The `AttributionService` implementation.
#[derive(Debug, Clone)]
pub struct AttributionApi {
    pool: PgPool,
    peers: Peers,
    wake: crate::saga::Wake,
    limits: Limits,
    /// Where RecordSale queues its sale to be recorded with the calls that
    /// arrive with it ([`coalesce`]); none in the recorders' own copy.
    coalescer: Option<coalesce::Coalescer>,
    /// Sellers' roles this process has been told (shared by every copy).
    seller_roles: SellerRoles,
}

/// The bounds the API holds callers to beyond each field's own rules.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// How far in the future a sale, lead or refund may say it happened.
    pub max_future_skew: std::time::Duration,
    /// How long a RecordSales stream may stay silent before it is closed.
    pub stream_idle_timeout: std::time::Duration,
}

impl AttributionApi {
    /// A new API over the service's pool, its peers, what wakes the local
    /// saga workers when sagas are started, and its limits.
    pub(crate) fn new(pool: PgPool, peers: Peers, wake: crate::saga::Wake, limits: Limits) -> Self {
        AttributionApi { pool, peers, wake, limits, coalescer: None, seller_roles: SellerRoles::default() }
    }

    /// This API with RecordSale calls recorded together, and the recorders
    /// to run beside it (they stop once every copy of the API is dropped).
    pub(crate) fn with_coalescing(self) -> (Self, coalesce::Recorders) {
        let (coalescer, recorders) = coalesce::Coalescer::new(self.clone());
        (AttributionApi { coalescer: Some(coalescer), ..self }, recorders)
    }

    /// The window event times of a request are judged by (now plus the
    /// allowed skew).
    fn events(&self) -> EventWindow {
        EventWindow::at(Utc::now(), self.limits.max_future_skew)
    }
}

#[tonic::async_trait]
impl AttributionService for AttributionApi {
    /// SimulateProgram (issue 16 item 2): see [`simulate`].
    async fn simulate_program(
        &self,
        request: Request<pb::SimulateProgramRequest>,
    ) -> Result<Response<pb::SimulateProgramResponse>, Status> {
        let scope = accrue_kit::auth::caller(&request)?.clone();
        self.simulate(&scope, request.into_inner()).await.map(Response::new)
    }

    /// Creates a link. INVALID_ARGUMENT for a bad key or split config (field
    /// violations such as `link.splits[1].basis_points`), NOT_FOUND for an
    /// unknown partner, FAILED_PRECONDITION PARTNER_NOT_ACTIVE (or the
    /// hierarchy's WRONG_PROGRAM), ALREADY_EXISTS LINK_KEY_TAKEN. Idempotent
    /// on `request_id`. Nothing is written on rejection.
    async fn create_link(&self, request: Request<pb::CreateLinkRequest>) -> Result<Response<pb::Link>, Status> {
        let scope = accrue_kit::auth::caller(&request)?.clone();
        let req = request.into_inner();
        let mut violations = FieldViolations::new();
        let program_id = require_uuid("program_id", &req.program_id, &mut violations);
        let link = req.link.unwrap_or_else(|| {
            violations.add("link", "is required");
            pb::Link::default()
        });
        let owner = require_uuid("link.owner_partner_id", &link.owner_partner_id, &mut violations);
        check_key("link.key", &link.key, &mut violations);
        if link.destination_url.len() > MAX_URL_LEN {
            violations.add("link.destination_url", format!("must be at most {MAX_URL_LEN} bytes"));
        }
        let parsed: Vec<(Option<PartnerId>, i32)> = link
            .splits
            .iter()
            .enumerate()
            .map(|(i, split)| {
                (
                    require_uuid(&format!("link.splits[{i}].partner_id"), &split.partner_id, &mut violations),
                    split.basis_points,
                )
            })
            .collect();
        check_splits("link.splits", owner, &parsed, &mut violations);
        let request_id = idempotency::request_id("request_id", &req.request_id, &mut violations);
        violations.into_result()?;
        let (Some(program_id), Some(owner)) = (program_id, owner) else {
            return Err(invalid_field("program_id", "is required"));
        };
        scope.require_program(program_id)?;
        let splits: Vec<Split> = parsed
            .iter()
            .filter_map(|(partner, bps)| partner.map(|partner_id| Split { partner_id, basis_points: *bps }))
            .collect();
        if let Some(request_id) = &request_id
            && let Some(existing) = store::link_by_request(&self.pool, program_id, request_id.as_str()).await?
        {
            let same = |row: &LinkRow| same_link(row, owner, &link.key, &link.destination_url, &splits);
            return Ok(Response::new(link_to_proto(idempotency::replay(request_id.as_str(), existing, same)?)));
        }
        let mut partners = vec![owner];
        partners.extend(splits.iter().map(|s| s.partner_id));
        self.check_partners(program_id, &partners).await?;
        let new = NewLink {
            program_id,
            owner_partner_id: owner,
            key: link.key.clone(),
            destination_url: link.destination_url,
            splits,
            request_id: request_id.as_ref().map(|id| id.as_str().to_string()),
        };
        match store::insert_link(&self.pool, &new).await? {
            LinkInsert::Stored(row) => Ok(Response::new(link_to_proto(row))),
            LinkInsert::Raced(row) => {
                let same =
                    |row: &LinkRow| same_link(row, new.owner_partner_id, &new.key, &new.destination_url, &new.splits);
                let request_id = request_id.ok_or_else(|| internal("a link insert raced without a request id"))?;
                Ok(Response::new(link_to_proto(idempotency::replay(request_id.as_str(), row, same)?)))
            }
            LinkInsert::KeyTaken => Err(already_exists(
                "LINK_KEY_TAKEN",
                format!("link key {:?} is already used in program {program_id}", link.key),
            )),
        }
    }

    /// Gets a link. NOT_FOUND when absent.
    async fn get_link(&self, request: Request<pb::GetLinkRequest>) -> Result<Response<pb::Link>, Status> {
        let id = parse_id("id", &request.get_ref().id)?;
        // Another program's link, and for a partner token a link it neither
        // owns nor shares in, is answered exactly as a missing one.
        let scope = accrue_kit::auth::caller(&request)?;
        let row = store::get_link(&self.pool, id)
            .await?
            .filter(|row| scope.may_see(row.program_id, &row.partners()))
            .ok_or_else(|| not_found("link", id))?;
        Ok(Response::new(link_to_proto(row)))
    }

    /// Lists a program's links, oldest first, optionally one owner's, only
    /// those a partner holds a split in (`split_partner_id`), only archived
    /// or only live ones. A partner token lists the links it owns; the links
    /// it shares in only when it names itself as `split_partner_id` (seed
    /// 000: split partners see earnings from a link, not the link in their
    /// list); naming another partner in either filter gives an empty page.
    async fn list_links(
        &self,
        request: Request<pb::ListLinksRequest>,
    ) -> Result<Response<pb::ListLinksResponse>, Status> {
        let scope = accrue_kit::auth::caller(&request)?.clone();
        let req = request.into_inner();
        let program_id = required_program(&req.program_id)?;
        scope.require_program(program_id)?;
        let mut violations = FieldViolations::new();
        let owner = accrue_kit::convert::optional_uuid("owner_partner_id", &req.owner_partner_id, &mut violations);
        let split = accrue_kit::convert::optional_uuid("split_partner_id", &req.split_partner_id, &mut violations);
        violations.into_result()?;
        let limit = page::page_size(req.page_size)?;
        let query = format!("links|{program_id}|{owner:?}|{split:?}|{:?}", req.archived);
        let cursor: Option<Cursor> = page::decode(&query, &req.page_token)?;
        let filter = match (scope.partner_scope(), split) {
            (None, _) => Some(LinkFilter { owner, split_partner: split, archived: req.archived }),
            // Its own links (another owner named: none).
            (Some(_), None) => scope.partner_filter(owner).map(|owner| LinkFilter {
                owner,
                split_partner: None,
                archived: req.archived,
            }),
            // The links it shares in, of any owner or the one named.
            (Some(own), Some(split)) => {
                (own == split).then_some(LinkFilter { owner, split_partner: Some(own), archived: req.archived })
            }
        };
        let Some(filter) = filter else {
            return Ok(Response::new(pb::ListLinksResponse::default()));
        };
        let mut rows = store::list_links(&self.pool, program_id, &filter, cursor, limit + 1).await?;
        let next = page::next_page(&mut rows, limit, &query, |row| Cursor { t: row.created_at, id: row.id.into() })?;
        Ok(Response::new(pb::ListLinksResponse {
            links: rows.into_iter().map(link_to_proto).collect(),
            next_page_token: next,
        }))
    }

    /// Credits a lead under the program's attribution model in force at its
    /// occurred_at (issue 14 item 2): first touch stores the lead unless the
    /// customer already has one; last touch credits this link (the lead is
    /// the customer's most recent touch). `created` tells whether this call
    /// credited the link. NOT_FOUND when the link is not in the program;
    /// FAILED_PRECONDITION LINK_ARCHIVED for an archived link.
    async fn track_lead(&self, request: Request<pb::TrackLeadRequest>) -> Result<Response<pb::Lead>, Status> {
        let scope = accrue_kit::auth::caller(&request)?.clone();
        let req = request.into_inner();
        let mut violations = FieldViolations::new();
        let program_id: Option<ProgramId> = require_uuid("program_id", &req.program_id, &mut violations);
        let link_id = require_uuid("link_id", &req.link_id, &mut violations);
        if req.customer_external_id.trim().is_empty() {
            violations.add("customer_external_id", "is required");
        } else if req.customer_external_id.len() > MAX_ID_LEN {
            violations.add("customer_external_id", format!("must be at most {MAX_ID_LEN} bytes"));
        }
        let occurred_at = self.events().optional("occurred_at", req.occurred_at.as_ref(), &mut violations);
        violations.into_result()?;
        let (Some(program_id), Some(link_id)) = (program_id, link_id) else {
            return Err(invalid_field("link_id", "is required"));
        };
        scope.require_program(program_id)?;
        let link = store::get_link(&self.pool, link_id)
            .await?
            .filter(|link| link.program_id == program_id)
            .ok_or_else(|| not_found("link", link_id))?;
        if link.archived_at.is_some() {
            return Err(link_archived(link_id));
        }
        let occurred_at = occurred_at.unwrap_or_else(Utc::now);
        let histories = store::settings_histories(&self.pool, &[program_id]).await?;
        let rule = store::rule_at(histories.get(&program_id).map_or(&[][..], Vec::as_slice), occurred_at);
        let (lead, created) =
            store::track_lead(&self.pool, &link, &req.customer_external_id, occurred_at, rule).await?;
        Ok(Response::new(lead_to_proto(lead, created, rule)))
    }

    /// Records one sale and starts its saga in the same transaction.
    /// INVALID_ARGUMENT for a bad sale; ALREADY_EXISTS when the external id was
    /// recorded with a different body (the same body returns the stored sale);
    /// FAILED_PRECONDITION ROLE_MAY_NOT_TRANSACT when the sale's seller (its
    /// link owner) has one of the program's non-transacting roles (seed 002),
    /// writing nothing; UNAVAILABLE when the hierarchy service cannot say.
    async fn record_sale(&self, request: Request<pb::RecordSaleRequest>) -> Result<Response<pb::Sale>, Status> {
        let scope = accrue_kit::auth::caller(&request)?.clone();
        let req = request.into_inner();
        let mut violations = FieldViolations::new();
        let sale = parse_sale("", &req, &self.events(), &mut violations);
        violations.into_result()?;
        let Some(sale) = sale else {
            return Err(invalid_field("sale", "is invalid"));
        };
        scope.require_program(sale.program_id)?;
        let row = match &self.coalescer {
            Some(coalescer) => coalescer.record(sale).await?,
            None => {
                let traces = [accrue_kit::telemetry::propagation::current_traceparent()];
                let mut rows =
                    self.record(std::slice::from_ref(&sale), &traces, &mut RoleCache::default(), None).await?;
                rows.pop().ok_or_else(|| accrue_kit::internal("record_sales returned no sale"))?
            }
        };
        Ok(Response::new(sale_to_proto(row)))
    }

    /// Records batches of sales (≤ 1000 per message), each message in one
    /// transaction; an invalid sale fails the call naming `sales[i].…` and
    /// nothing of its message is written (earlier messages stay recorded).
    /// A new sale whose seller may not transact fails the call the same way
    /// (FAILED_PRECONDITION ROLE_MAY_NOT_TRANSACT naming `sales[i]`). A
    /// program's non-transacting roles are read once per call (one
    /// hierarchy.GetUplines per program); sellers' roles at most once per
    /// message and program, and only for sellers this process has not
    /// looked up before (a role never changes).
    async fn record_sales(
        &self,
        request: Request<Streaming<pb::RecordSalesRequest>>,
    ) -> Result<Response<pb::RecordSalesResponse>, Status> {
        let scope = accrue_kit::auth::caller(&request)?.clone();
        let mut stream = request.into_inner();
        let mut out = Vec::new();
        let mut roles = RoleCache::default();
        let mut position = 0_usize;
        // A message is awaited without a database connection held, so a
        // silent stream costs a task, not a pool slot; the idle timeout
        // bounds even that.
        loop {
            let message = match tokio::time::timeout(self.limits.stream_idle_timeout, stream.message()).await {
                Ok(message) => message?,
                Err(_) => return Err(stream_idle(self.limits.stream_idle_timeout, position, out.len())),
            };
            let Some(message) = message else { break };
            let at = position;
            position += 1;
            if message.sales.is_empty() {
                continue;
            }
            if message.sales.len() > MAX_SALES_PER_MESSAGE {
                return Err(invalid_field(
                    "sales",
                    format!(
                        "stream message {at}: at most {MAX_SALES_PER_MESSAGE} sales per message (got {})",
                        message.sales.len()
                    ),
                ));
            }
            let window = self.events();
            let mut violations = FieldViolations::new();
            let parsed: Vec<Option<SaleInput>> = message
                .sales
                .iter()
                .enumerate()
                .map(|(i, sale)| parse_sale(&format!("sales[{i}]."), sale, &window, &mut violations))
                .collect();
            violations
                .within(&format!("stream message {at} (0-based; earlier messages are recorded)"))
                .into_result()?;
            let sales: Vec<SaleInput> = parsed.into_iter().flatten().collect();
            for sale in &sales {
                scope.require_program(sale.program_id)?;
            }
            let traces = vec![accrue_kit::telemetry::propagation::current_traceparent(); sales.len()];
            let rows = self.record(&sales, &traces, &mut roles, Some(at)).await?;
            out.extend(rows.into_iter().map(sale_to_proto));
        }
        Ok(Response::new(pb::RecordSalesResponse { sales: out }))
    }

    /// Gets a sale. NOT_FOUND when absent.
    async fn get_sale(&self, request: Request<pb::GetSaleRequest>) -> Result<Response<pb::Sale>, Status> {
        let id = parse_id("id", &request.get_ref().id)?;
        // Another program's sale is answered exactly as a missing one.
        let scope = accrue_kit::auth::caller(&request)?;
        let row = store::get_sale(&self.pool, id)
            .await?
            .filter(|row| scope.programs.contains(row.program_id))
            .ok_or_else(|| not_found("sale", id))?;
        Ok(Response::new(sale_to_proto(row)))
    }

    /// Lists a program's sales by (occurred_at, id), optionally in one state,
    /// with the total count.
    async fn list_sales(
        &self,
        request: Request<pb::ListSalesRequest>,
    ) -> Result<Response<pb::ListSalesResponse>, Status> {
        let scope = accrue_kit::auth::caller(&request)?.clone();
        let req = request.into_inner();
        let program_id = required_program(&req.program_id)?;
        scope.require_program(program_id)?;
        let state = pb::SaleState::try_from(req.state)
            .map_err(|_| invalid_field("state", format!("unknown sale state {}", req.state)))
            .map(SaleState::from_proto)?;
        let limit = page::page_size(req.page_size)?;
        let query = format!("sales|{program_id}|{}", req.state);
        let cursor: Option<Cursor> = page::decode(&query, &req.page_token)?;
        let (mut rows, total) = store::list_sales(&self.pool, program_id, state, cursor, limit + 1).await?;
        let next = page::next_page(&mut rows, limit, &query, |row| Cursor { t: row.occurred_at, id: row.id.into() })?;
        Ok(Response::new(pb::ListSalesResponse {
            sales: rows.into_iter().map(sale_to_proto).collect(),
            next_page_token: next,
            total_size: total,
        }))
    }

    /// Gets a saga with its step log (every run, oldest first; each event's
    /// detail carries its `run`). NOT_FOUND when absent.
    async fn get_saga(&self, request: Request<pb::GetSagaRequest>) -> Result<Response<pb::Saga>, Status> {
        let id = parse_id("id", &request.get_ref().id)?;
        // Another program's saga is answered exactly as a missing one.
        let scope = accrue_kit::auth::caller(&request)?;
        let row = store::get_saga(&self.pool, id)
            .await?
            .filter(|row| scope.programs.contains(row.program_id))
            .ok_or_else(|| not_found("saga", id))?;
        let events = store::saga_events(&self.pool, id).await?;
        Ok(Response::new(saga_to_proto(row, events)))
    }

    /// Lists a program's sagas, oldest first, optionally in one state and of
    /// one kind (SETTLE_SALE or CLAWBACK_SALE; any other kind is
    /// INVALID_ARGUMENT on `kind`), with the total count.
    async fn list_sagas(
        &self,
        request: Request<pb::ListSagasRequest>,
    ) -> Result<Response<pb::ListSagasResponse>, Status> {
        let scope = accrue_kit::auth::caller(&request)?.clone();
        let req = request.into_inner();
        let program_id = required_program(&req.program_id)?;
        scope.require_program(program_id)?;
        let state = pb::SagaState::try_from(req.state)
            .map_err(|_| invalid_field("state", format!("unknown saga state {}", req.state)))
            .map(saga_state_from_proto)?;
        let kind = match req.kind.as_str() {
            "" => None,
            kind if kind == SettleSale::KIND || kind == ClawbackSale::KIND => Some(kind),
            other => {
                return Err(invalid_field(
                    "kind",
                    format!("unknown saga kind {other:?} (expected {} or {})", SettleSale::KIND, ClawbackSale::KIND),
                ));
            }
        };
        let limit = page::page_size(req.page_size)?;
        let query = format!("sagas|{program_id}|{}|{}", req.state, req.kind);
        let cursor: Option<Cursor> = page::decode(&query, &req.page_token)?;
        let (mut rows, total) = store::list_sagas(&self.pool, program_id, state, kind, cursor, limit + 1).await?;
        let next = page::next_page(&mut rows, limit, &query, |row| Cursor { t: row.created_at, id: row.id.into() })?;
        Ok(Response::new(pb::ListSagasResponse {
            sagas: rows.into_iter().map(|row| saga_to_proto(row, Vec::new())).collect(),
            next_page_token: next,
            total_size: total,
        }))
    }

    /// Starts a FAILED saga again: a new run (its own log and ledger key),
    /// attempt 0, and what it drives back to PENDING (a SettleSale's sale, a
    /// ClawbackSale's refund). Resumes a STUCK saga whose step gave up after
    /// internal errors where it stopped (same run, attempt 0). FAILED_PRECONDITION
    /// SAGA_NOT_FAILED otherwise (a saga stuck on a failed undo included);
    /// NOT_FOUND when absent.
    async fn retry_saga(&self, request: Request<pb::RetrySagaRequest>) -> Result<Response<pb::Saga>, Status> {
        let id = parse_id("id", &request.get_ref().id)?;
        // Another program's saga is answered exactly as a missing one (a
        // saga never changes program, so reading first is enough).
        let scope = accrue_kit::auth::caller(&request)?;
        if !store::get_saga(&self.pool, id).await?.is_some_and(|row| scope.programs.contains(row.program_id)) {
            return Err(not_found("saga", id));
        }
        match store::retry_saga(&self.pool, id).await? {
            RetryOutcome::NotFound => Err(not_found("saga", id)),
            RetryOutcome::NotFailed(state) => Err(failed_precondition(
                "SAGA_NOT_FAILED",
                format!("saga {id} is {state}; only a failed saga, or one stuck after internal errors, can be retried"),
            )),
            RetryOutcome::Restarted(row) | RetryOutcome::Resumed(row) => {
                self.wake.kind(&row.kind);
                let events = store::saga_events(&self.pool, id).await?;
                Ok(Response::new(saga_to_proto(row, events)))
            }
        }
    }

    /// Records a refund and starts its ClawbackSale saga in one transaction
    /// (DESIGN §3, §4 "Refunds"), the sale row locked so that refunds of one
    /// sale serialize. Idempotent on (program, external_id): the same body
    /// returns the stored refund, another body is ALREADY_EXISTS
    /// REQUEST_ID_REUSED. INVALID_ARGUMENT with field violations for a bad
    /// refund (amount ≤ 0 or too precise, not the sale's currency, occurred_at
    /// missing or before the sale, not exactly one of sale_id /
    /// sale_external_id); NOT_FOUND SALE_NOT_FOUND for no such sale in the
    /// program; FAILED_PRECONDITION REFUND_EXCEEDS_SALE when the sale's
    /// refunds would total more than its amount. Nothing is written on any
    /// error. A refund of an unattributed sale (no saga) is APPLIED at once
    /// with a zero clawback.
    async fn record_refund(&self, request: Request<pb::RecordRefundRequest>) -> Result<Response<pb::Refund>, Status> {
        let refund = parse_refund(request.get_ref(), &self.events())?;
        accrue_kit::auth::caller(&request)?.require_program(refund.program_id)?;
        match store::record_refund(&self.pool, &refund).await? {
            RefundOutcome::Recorded { refund, saga_started } => {
                if saga_started {
                    self.wake.clawback();
                }
                Ok(Response::new(refund_to_proto(refund)))
            }
            RefundOutcome::Replayed(stored) => Ok(Response::new(refund_to_proto(stored))),
            RefundOutcome::Conflict => Err(already_exists(
                idempotency::REUSED_REASON,
                format!(
                    "refund external_id {:?} was already recorded in program {} with a different body",
                    refund.external_id, refund.program_id
                ),
            )),
            RefundOutcome::SaleNotFound => Err(match &refund.sale {
                SaleRef::Id(id) => not_found("sale", id),
                SaleRef::External(external_id) => not_found("sale", format!("with external_id {external_id:?}")),
            }),
            RefundOutcome::Invalid(status) => Err(status),
            RefundOutcome::ExceedsSale { sale_amount, refunded, requested, currency } => Err(failed_precondition(
                "REFUND_EXCEEDS_SALE",
                format!(
                    "a refund of {requested} {currency} would bring the sale's refunds to {} {currency}, above its \
                     amount {sale_amount} {currency} ({refunded} {currency} already refunded); nothing was recorded",
                    refunded + requested
                ),
            )),
        }
    }

    /// Gets a refund. NOT_FOUND when absent.
    async fn get_refund(&self, request: Request<pb::GetRefundRequest>) -> Result<Response<pb::Refund>, Status> {
        let id = parse_id("id", &request.get_ref().id)?;
        // Another program's refund is answered exactly as a missing one.
        let scope = accrue_kit::auth::caller(&request)?;
        let row = store::get_refund(&self.pool, id)
            .await?
            .filter(|row| scope.programs.contains(row.program_id))
            .ok_or_else(|| not_found("refund", id))?;
        Ok(Response::new(refund_to_proto(row)))
    }

    /// Lists a program's refunds by (occurred_at, id), optionally only one
    /// sale's (`sale_id`) and only in one state. INVALID_ARGUMENT for a bad
    /// id, state or page token.
    async fn list_refunds(
        &self,
        request: Request<pb::ListRefundsRequest>,
    ) -> Result<Response<pb::ListRefundsResponse>, Status> {
        let scope = accrue_kit::auth::caller(&request)?.clone();
        let req = request.into_inner();
        let program_id = required_program(&req.program_id)?;
        scope.require_program(program_id)?;
        let mut violations = FieldViolations::new();
        let sale_id = accrue_kit::convert::optional_uuid("sale_id", &req.sale_id, &mut violations);
        let state = match pb::RefundState::try_from(req.state) {
            Ok(state) => RefundState::from_proto(state),
            Err(_) => {
                violations.add("state", format!("unknown refund state {}", req.state));
                None
            }
        };
        violations.into_result()?;
        let limit = page::page_size(req.page_size)?;
        let query = format!("refunds|{program_id}|{sale_id:?}|{}", req.state);
        let cursor: Option<Cursor> = page::decode(&query, &req.page_token)?;
        let mut rows = store::list_refunds(&self.pool, program_id, sale_id, state, cursor, limit + 1).await?;
        let next = page::next_page(&mut rows, limit, &query, |row| Cursor { t: row.occurred_at, id: row.id.into() })?;
        Ok(Response::new(pb::ListRefundsResponse {
            refunds: rows.into_iter().map(refund_to_proto).collect(),
            next_page_token: next,
        }))
    }

    /// Records one click: see [`AttributionApi::track_clicks_of`].
    async fn track_click(
        &self,
        request: Request<pb::TrackClickRequest>,
    ) -> Result<Response<pb::TrackClickResponse>, Status> {
        let scope = accrue_kit::auth::caller(&request)?.clone();
        let req = request.into_inner();
        let click = req.click.unwrap_or_default();
        let (recorded, _) = self.track_clicks_of(&scope, &req.program_id, std::slice::from_ref(&click), true).await?;
        Ok(Response::new(pb::TrackClickResponse { recorded: recorded == 1 }))
    }

    /// Records up to 1000 clicks: see [`AttributionApi::track_clicks_of`].
    async fn track_clicks(
        &self,
        request: Request<pb::TrackClicksRequest>,
    ) -> Result<Response<pb::TrackClicksResponse>, Status> {
        let scope = accrue_kit::auth::caller(&request)?.clone();
        let req = request.into_inner();
        let (recorded, duplicates) = self.track_clicks_of(&scope, &req.program_id, &req.clicks, false).await?;
        Ok(Response::new(pb::TrackClicksResponse {
            recorded_count: i32::try_from(recorded).unwrap_or(i32::MAX),
            duplicate_count: i32::try_from(duplicates).unwrap_or(i32::MAX),
        }))
    }

    /// Archives a link (idempotent). NOT_FOUND when absent.
    async fn archive_link(&self, request: Request<pb::ArchiveLinkRequest>) -> Result<Response<pb::Link>, Status> {
        let scope = accrue_kit::auth::caller(&request)?.clone();
        let req = request.into_inner();
        self.set_archived(&scope, &req.id, &req.request_id, true).await.map(Response::new)
    }

    /// Unarchives a link (idempotent). NOT_FOUND when absent.
    async fn unarchive_link(&self, request: Request<pb::UnarchiveLinkRequest>) -> Result<Response<pb::Link>, Status> {
        let scope = accrue_kit::auth::caller(&request)?.clone();
        let req = request.into_inner();
        self.set_archived(&scope, &req.id, &req.request_id, false).await.map(Response::new)
    }

    /// The program's attribution settings: the model in force now and the
    /// history (empty: never set, first touch).
    async fn get_attribution_settings(
        &self,
        request: Request<pb::GetAttributionSettingsRequest>,
    ) -> Result<Response<pb::AttributionSettings>, Status> {
        let scope = accrue_kit::auth::caller(&request)?.clone();
        let program_id = required_program(&request.get_ref().program_id)?;
        scope.require_program(program_id)?;
        let histories = store::settings_histories(&self.pool, &[program_id]).await?;
        Ok(Response::new(settings_to_proto(program_id, histories.get(&program_id).map_or(&[][..], Vec::as_slice))))
    }

    /// Sets the program's model from now on: see
    /// [`AttributionApi::update_settings`].
    async fn update_attribution_settings(
        &self,
        request: Request<pb::UpdateAttributionSettingsRequest>,
    ) -> Result<Response<pb::AttributionSettings>, Status> {
        let scope = accrue_kit::auth::caller(&request)?.clone();
        self.update_settings(&scope, request.into_inner()).await.map(Response::new)
    }

    /// A link's stats: see [`AttributionApi::link_stats`].
    async fn get_link_stats(
        &self,
        request: Request<pb::GetLinkStatsRequest>,
    ) -> Result<Response<pb::LinkStats>, Status> {
        let scope = accrue_kit::auth::caller(&request)?.clone();
        self.link_stats(&scope, request.into_inner()).await.map(Response::new)
    }

    /// A partner's stats: see [`AttributionApi::partner_stats`].
    async fn get_partner_stats(
        &self,
        request: Request<pb::GetPartnerStatsRequest>,
    ) -> Result<Response<pb::PartnerStats>, Status> {
        let scope = accrue_kit::auth::caller(&request)?.clone();
        self.partner_stats(&scope, request.into_inner()).await.map(Response::new)
    }
}

/// True when a stored link is the one this request describes (a repeat of
/// its `request_id` with the same body).
fn same_link(row: &LinkRow, owner: PartnerId, key: &str, destination_url: &str, splits: &[Split]) -> bool {
    row.owner_partner_id == owner && row.key == key && row.destination_url == destination_url && row.splits.0 == splits
}
