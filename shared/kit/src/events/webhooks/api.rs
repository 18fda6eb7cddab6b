//! `accrue.events.v1.WebhookService` over one service's webhook tables.

use accrue_proto::events::v1 as pb;
use accrue_proto::events::v1::webhook_service_server::WebhookService;
use accrue_types::ProgramId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::Nudge;
use crate::FieldViolations;
use crate::auth::Identity;
use crate::convert::{require_uuid, timestamp};
use crate::error::{db_error, failed_precondition, invalid_field, not_found};
use crate::events::Source;
use crate::{idempotency, page};

/// Longest subscription URL accepted.
pub const MAX_URL_BYTES: usize = 2048;

/// The `WebhookService` of one service.
#[derive(Clone)]
pub struct WebhookApi {
    pool: PgPool,
    source: &'static Source,
    nudge: Nudge,
}

impl std::fmt::Debug for WebhookApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookApi").field("source", &self.source.uri).finish_non_exhaustive()
    }
}

/// One stored subscription.
#[derive(sqlx::FromRow)]
struct SubscriptionRow {
    id: Uuid,
    program_id: ProgramId,
    url: String,
    types: Vec<String>,
    secret: String,
    state: String,
    cursor_sequence: i64,
    created_at: DateTime<Utc>,
    request_hash: Option<Vec<u8>>,
}

const SUBSCRIPTION_COLUMNS: &str =
    "id, program_id, url, types, secret, state, cursor_sequence, created_at, request_hash";

impl SubscriptionRow {
    /// As the API shows it; the secret only when `with_secret`.
    fn into_proto(self, with_secret: bool) -> pb::WebhookSubscription {
        let state = match self.state.as_str() {
            "ACTIVE" => pb::WebhookSubscriptionState::Active,
            _ => pb::WebhookSubscriptionState::Deleted,
        };
        pb::WebhookSubscription {
            id: self.id.to_string(),
            program_id: self.program_id.to_string(),
            url: self.url,
            types: self.types,
            secret: if with_secret { self.secret } else { String::new() },
            state: state as i32,
            cursor_sequence: self.cursor_sequence,
            create_time: Some(timestamp(self.created_at)),
        }
    }
}

/// One stored delivery.
#[derive(sqlx::FromRow)]
struct DeliveryRow {
    id: Uuid,
    subscription_id: Uuid,
    event_id: Uuid,
    event_type: String,
    sequence: i64,
    state: String,
    attempts: i32,
    next_attempt_at: DateTime<Utc>,
    last_status_code: Option<i32>,
    last_error: Option<String>,
    delivered_at: Option<DateTime<Utc>>,
}

const DELIVERY_COLUMNS: &str = "id, subscription_id, event_id, event_type, sequence, state, attempts, \
                                next_attempt_at, last_status_code, last_error, delivered_at";

impl DeliveryRow {
    fn into_proto(self) -> pb::WebhookDelivery {
        let state = delivery_state(&self.state);
        pb::WebhookDelivery {
            id: self.id.to_string(),
            subscription_id: self.subscription_id.to_string(),
            event_id: self.event_id.to_string(),
            event_type: self.event_type,
            sequence: self.sequence,
            state: state as i32,
            attempts: self.attempts,
            next_attempt_time: (state == pb::WebhookDeliveryState::Pending).then(|| timestamp(self.next_attempt_at)),
            last_status_code: self.last_status_code.unwrap_or(0),
            last_error: self.last_error.unwrap_or_default(),
            deliver_time: self.delivered_at.map(timestamp),
        }
    }
}

fn delivery_state(state: &str) -> pb::WebhookDeliveryState {
    match state {
        "PENDING" => pb::WebhookDeliveryState::Pending,
        "DELIVERED" => pb::WebhookDeliveryState::Delivered,
        _ => pb::WebhookDeliveryState::Dead,
    }
}

/// ListWebhookSubscriptions' page cursor: the last subscription served.
#[derive(Serialize, Deserialize)]
struct SubscriptionCursor {
    t: DateTime<Utc>,
    i: Uuid,
}

/// ListWebhookDeliveries' page cursor: the last sequence served.
#[derive(Serialize, Deserialize)]
struct DeliveryCursor {
    s: i64,
}

/// Checks a subscription URL: an absolute http or https URL with a host.
fn check_url(url: &str, violations: &mut FieldViolations) {
    if url.is_empty() {
        violations.add("url", "is required");
        return;
    }
    if url.len() > MAX_URL_BYTES {
        violations.add("url", format!("must be at most {MAX_URL_BYTES} bytes"));
        return;
    }
    match url::Url::parse(url) {
        Ok(parsed)
            if matches!(parsed.scheme(), "http" | "https") && parsed.host_str().is_some_and(|h| !h.is_empty()) => {}
        Ok(_) => violations.add("url", "must be an absolute http or https URL"),
        Err(error) => violations.add("url", format!("is not a URL ({error})")),
    }
}

impl WebhookApi {
    /// The webhooks of `source` over `pool`; `nudge` wakes the worker.
    pub fn new(pool: PgPool, source: &'static Source, nudge: Nudge) -> Self {
        WebhookApi { pool, source, nudge }
    }

    /// The program of a request (checked against the token by the caller,
    /// once every field is valid).
    fn program(program_id: &str, violations: &mut FieldViolations) -> Option<ProgramId> {
        require_uuid::<ProgramId>("program_id", program_id, violations)
    }

    /// Validates program and an id field; NOT_FOUND for a program the token
    /// does not name.
    fn ids(scope: &Identity, program_id: &str, field: &str, id: &str) -> Result<(ProgramId, Uuid), Status> {
        let mut violations = FieldViolations::new();
        let program = Self::program(program_id, &mut violations);
        let id = require_uuid::<Uuid>(field, id, &mut violations);
        violations.into_result()?;
        let (Some(program), Some(id)) = (program, id) else {
            return Err(invalid_field(field, "is required"));
        };
        scope.require_program(program)?;
        Ok((program, id))
    }

    async fn subscription(&self, program: ProgramId, id: Uuid) -> Result<SubscriptionRow, Status> {
        let sql = format!("SELECT {SUBSCRIPTION_COLUMNS} FROM webhook_subscriptions WHERE id = $1 AND program_id = $2");
        sqlx::query_as::<_, SubscriptionRow>(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(program)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?
            .ok_or_else(|| not_found("webhook_subscription", id))
    }

    async fn by_request_id(&self, program: ProgramId, request_id: &str) -> Result<Option<SubscriptionRow>, Status> {
        let sql = format!(
            "SELECT {SUBSCRIPTION_COLUMNS} FROM webhook_subscriptions WHERE program_id = $1 AND request_id = $2"
        );
        sqlx::query_as::<_, SubscriptionRow>(sqlx::AssertSqlSafe(sql))
            .bind(program)
            .bind(request_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)
    }
}

#[tonic::async_trait]
impl WebhookService for WebhookApi {
    async fn create_webhook_subscription(
        &self,
        request: Request<pb::CreateWebhookSubscriptionRequest>,
    ) -> Result<Response<pb::WebhookSubscription>, Status> {
        let scope = crate::auth::caller(&request)?.clone();
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let program = Self::program(&request.program_id, &mut violations);
        check_url(&request.url, &mut violations);
        for (index, name) in request.types.iter().enumerate() {
            if self.source.event_type(name).is_none() {
                let known: Vec<&str> = self.source.types.iter().map(|t| t.name).collect();
                violations.add(
                    format!("types[{index}]"),
                    format!("{name:?} is not an event type of {} (one of {})", self.source.uri, known.join(", ")),
                );
            }
        }
        let request_id = idempotency::request_id("request_id", &request.request_id, &mut violations);
        violations.into_result()?;
        let program = program.ok_or_else(|| invalid_field("program_id", "is required"))?;
        scope.require_program(program)?;
        let fingerprint = idempotency::fingerprint_message(&pb::CreateWebhookSubscriptionRequest {
            request_id: String::new(),
            ..request.clone()
        });
        if let Some(request_id) = &request_id
            && let Some(stored) = self.by_request_id(program, request_id.as_str()).await?
        {
            let stored = idempotency::replay(request_id.as_str(), stored, |row| {
                row.request_hash.as_deref() == Some(fingerprint.as_slice())
            })?;
            return Ok(Response::new(stored.into_proto(true)));
        }
        let mut types = request.types;
        types.sort();
        types.dedup();
        // From the next event on: the cursor starts at the program's last
        // number (events committed but not yet numbered get larger ones).
        let sql = format!(
            "INSERT INTO webhook_subscriptions \
               (id, program_id, url, types, secret, state, cursor_sequence, created_at, request_id, request_hash) \
             VALUES ($1, $2, $3, $4, $5, 'ACTIVE', \
                     COALESCE((SELECT last_sequence FROM event_sequences WHERE program_id = $2), 0), \
                     now(), $6, $7) \
             ON CONFLICT (program_id, request_id) WHERE request_id IS NOT NULL DO NOTHING \
             RETURNING {SUBSCRIPTION_COLUMNS}"
        );
        let inserted = sqlx::query_as::<_, SubscriptionRow>(sqlx::AssertSqlSafe(sql))
            .bind(Uuid::now_v7())
            .bind(program)
            .bind(&request.url)
            .bind(&types)
            .bind(super::new_secret())
            .bind(request_id.as_ref().map(|id| id.as_str()))
            .bind(&fingerprint)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?;
        let row = match (inserted, &request_id) {
            (Some(row), _) => row,
            // A concurrent create with the same request id won.
            (None, Some(request_id)) => {
                let stored = self
                    .by_request_id(program, request_id.as_str())
                    .await?
                    .ok_or_else(|| crate::error::internal("request id conflict without a row"))?;
                idempotency::replay(request_id.as_str(), stored, |row| {
                    row.request_hash.as_deref() == Some(fingerprint.as_slice())
                })?
            }
            (None, None) => return Err(crate::error::internal("subscription insert returned nothing")),
        };
        Ok(Response::new(row.into_proto(true)))
    }

    async fn get_webhook_subscription(
        &self,
        request: Request<pb::GetWebhookSubscriptionRequest>,
    ) -> Result<Response<pb::WebhookSubscription>, Status> {
        let scope = crate::auth::caller(&request)?.clone();
        let request = request.into_inner();
        let (program, id) = Self::ids(&scope, &request.program_id, "subscription_id", &request.subscription_id)?;
        Ok(Response::new(self.subscription(program, id).await?.into_proto(false)))
    }

    async fn list_webhook_subscriptions(
        &self,
        request: Request<pb::ListWebhookSubscriptionsRequest>,
    ) -> Result<Response<pb::ListWebhookSubscriptionsResponse>, Status> {
        let scope = crate::auth::caller(&request)?.clone();
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let program = Self::program(&request.program_id, &mut violations);
        violations.into_result()?;
        let program = program.ok_or_else(|| invalid_field("program_id", "is required"))?;
        scope.require_program(program)?;
        let size = page::page_size(request.page_size)?;
        let description = format!("webhook_subscriptions|{program}");
        let cursor = page::decode::<SubscriptionCursor>(&description, &request.page_token)?;
        let mut sql = sqlx::QueryBuilder::new(format!(
            "SELECT {SUBSCRIPTION_COLUMNS} FROM webhook_subscriptions WHERE program_id = "
        ));
        sql.push_bind(program);
        if let Some(cursor) = cursor {
            sql.push(" AND (created_at, id) < (").push_bind(cursor.t).push(", ").push_bind(cursor.i).push(")");
        }
        sql.push(" ORDER BY created_at DESC, id DESC LIMIT ").push_bind(size + 1);
        let mut rows = sql.build_query_as::<SubscriptionRow>().fetch_all(&self.pool).await.map_err(db_error)?;
        let next_page_token =
            page::next_page(&mut rows, size, &description, |row| SubscriptionCursor { t: row.created_at, i: row.id })?;
        let subscriptions = rows.into_iter().map(|row| row.into_proto(false)).collect();
        Ok(Response::new(pb::ListWebhookSubscriptionsResponse { subscriptions, next_page_token }))
    }

    async fn delete_webhook_subscription(
        &self,
        request: Request<pb::DeleteWebhookSubscriptionRequest>,
    ) -> Result<Response<pb::WebhookSubscription>, Status> {
        let scope = crate::auth::caller(&request)?.clone();
        let request = request.into_inner();
        let (program, id) = Self::ids(&scope, &request.program_id, "subscription_id", &request.subscription_id)?;
        let sql = format!(
            "UPDATE webhook_subscriptions SET state = 'DELETED' WHERE id = $1 AND program_id = $2 \
             RETURNING {SUBSCRIPTION_COLUMNS}"
        );
        let row = sqlx::query_as::<_, SubscriptionRow>(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(program)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?
            .ok_or_else(|| not_found("webhook_subscription", id))?;
        Ok(Response::new(row.into_proto(false)))
    }

    async fn list_webhook_deliveries(
        &self,
        request: Request<pb::ListWebhookDeliveriesRequest>,
    ) -> Result<Response<pb::ListWebhookDeliveriesResponse>, Status> {
        let scope = crate::auth::caller(&request)?.clone();
        let request = request.into_inner();
        let (program, id) = Self::ids(&scope, &request.program_id, "subscription_id", &request.subscription_id)?;
        let state = match pb::WebhookDeliveryState::try_from(request.state) {
            Ok(pb::WebhookDeliveryState::Unspecified) => None,
            Ok(pb::WebhookDeliveryState::Pending) => Some("PENDING"),
            Ok(pb::WebhookDeliveryState::Delivered) => Some("DELIVERED"),
            Ok(pb::WebhookDeliveryState::Dead) => Some("DEAD"),
            Err(_) => return Err(invalid_field("state", "is not a delivery state")),
        };
        let size = page::page_size(request.page_size)?;
        self.subscription(program, id).await?;
        let description = format!("webhook_deliveries|{program}|{id}|{}", state.unwrap_or(""));
        let after = page::decode::<DeliveryCursor>(&description, &request.page_token)?.map_or(0, |c| c.s);
        let mut sql = sqlx::QueryBuilder::new(format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE subscription_id = "
        ));
        sql.push_bind(id).push(" AND sequence > ").push_bind(after);
        if let Some(state) = state {
            sql.push(" AND state = ").push_bind(state);
        }
        sql.push(" ORDER BY sequence LIMIT ").push_bind(size + 1);
        let mut rows = sql.build_query_as::<DeliveryRow>().fetch_all(&self.pool).await.map_err(db_error)?;
        let next_page_token = page::next_page(&mut rows, size, &description, |row| DeliveryCursor { s: row.sequence })?;
        let deliveries = rows.into_iter().map(DeliveryRow::into_proto).collect();
        Ok(Response::new(pb::ListWebhookDeliveriesResponse { deliveries, next_page_token }))
    }

    async fn redeliver_webhook(
        &self,
        request: Request<pb::RedeliverWebhookRequest>,
    ) -> Result<Response<pb::WebhookDelivery>, Status> {
        let scope = crate::auth::caller(&request)?.clone();
        let request = request.into_inner();
        let (program, id) = Self::ids(&scope, &request.program_id, "delivery_id", &request.delivery_id)?;
        let (subscription_state,): (String,) = sqlx::query_as(
            "SELECT s.state FROM webhook_deliveries d JOIN webhook_subscriptions s ON s.id = d.subscription_id \
             WHERE d.id = $1 AND s.program_id = $2",
        )
        .bind(id)
        .bind(program)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?
        .ok_or_else(|| not_found("webhook_delivery", id))?;
        if subscription_state != "ACTIVE" {
            return Err(failed_precondition(
                "SUBSCRIPTION_DELETED",
                format!("delivery {id} belongs to a deleted subscription"),
            ));
        }
        // A PENDING delivery is left as it is (the update matches nothing).
        sqlx::query(
            "UPDATE webhook_deliveries SET state = 'PENDING', attempts = 0, next_attempt_at = now(), \
             delivered_at = NULL WHERE id = $1 AND state <> 'PENDING'",
        )
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        self.nudge.wake();
        let sql = format!("SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE id = $1");
        let row = sqlx::query_as::<_, DeliveryRow>(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_one(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(Response::new(row.into_proto()))
    }
}
