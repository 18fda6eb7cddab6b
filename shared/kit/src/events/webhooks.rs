//! Signed webhooks over a service's event feed (issue 16 item 1;
//! docs/events.md "Webhooks"): `accrue.events.v1.WebhookService`, hosted by
//! every service beside its feed, over its own outbox.
//!
//! - [`api`]: the gRPC service (subscriptions, deliveries, redeliver).
//! - [`worker`]: one background task per service process that hands each
//!   ACTIVE subscription the sequenced events after its cursor (advancing
//!   the cursor in the same transaction) and POSTs the due deliveries, in
//!   sequence order per subscription, retrying with exponential backoff and
//!   dead-lettering after [`WebhookOptions::max_attempts`]. Never inline with
//!   the change; an advisory lock lets one replica at a time enqueue and
//!   claim.
//! - [`sign`] / [`payload`]: the Standard Webhooks signature and the JSON
//!   body.
//!
//! Every service's migrations create the same two tables:
//! `webhook_subscriptions` and `webhook_deliveries`.

pub mod api;
pub mod worker;

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, SecondsFormat, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;

pub use api::WebhookApi;

/// The prefix of a subscription's secret (Standard Webhooks).
pub const SECRET_PREFIX: &str = "whsec_";

/// Bytes of randomness in a secret.
pub const SECRET_BYTES: usize = 24;

/// How deliveries are made and retried; the `--webhook-*` flags of every
/// service (`ACCRUE_WEBHOOK_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookOptions {
    /// Attempts before a delivery is DEAD (default 8).
    pub max_attempts: u32,
    /// The wait after the first failed attempt; doubled after each further
    /// one (default 5 s).
    pub initial_backoff: Duration,
    /// The longest wait between attempts (default 1 h).
    pub max_backoff: Duration,
    /// How long one POST may take, connection included (default 10 s).
    pub timeout: Duration,
    /// How often the worker looks for due deliveries when nothing wakes it
    /// (default 1 s; a newly sequenced event or a redeliver wakes it at once).
    pub poll_interval: Duration,
    /// Most deliveries POSTed at once (each of another subscription).
    pub batch: i64,
}

impl Default for WebhookOptions {
    fn default() -> Self {
        WebhookOptions {
            max_attempts: 8,
            initial_backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(3600),
            timeout: Duration::from_secs(10),
            poll_interval: Duration::from_secs(1),
            batch: 32,
        }
    }
}

impl WebhookOptions {
    /// The wait before the attempt after the `attempts`-th failed one:
    /// `initial_backoff × 2^(attempts − 1)`, at most `max_backoff`.
    pub fn backoff(&self, attempts: u32) -> Duration {
        let doublings = attempts.saturating_sub(1).min(30);
        self.initial_backoff.saturating_mul(1u32 << doublings).min(self.max_backoff)
    }
}

/// A new secret: `whsec_` + base64 of [`SECRET_BYTES`] random bytes.
pub fn new_secret() -> String {
    let bytes: [u8; SECRET_BYTES] = rand::random();
    format!("{SECRET_PREFIX}{}", STANDARD.encode(bytes))
}

/// Why a secret cannot sign.
#[derive(Debug, thiserror::Error)]
#[error("a webhook secret is `whsec_` followed by base64")]
pub struct BadSecret;

/// The `webhook-signature` header (Standard Webhooks): `v1,` + base64 of
/// HMAC-SHA256 over `{id}.{timestamp}.{body}`, keyed with the base64-decoded
/// part of `secret` after `whsec_`.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Result<String, BadSecret> {
    let key = STANDARD.decode(secret.strip_prefix(SECRET_PREFIX).ok_or(BadSecret)?).map_err(|_| BadSecret)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|_| BadSecret)?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes())))
}

/// The descriptors of every Accrue message, to render an event's data as
/// JSON.
static DESCRIPTORS: LazyLock<Option<prost_reflect::DescriptorPool>> =
    LazyLock::new(|| prost_reflect::DescriptorPool::decode(accrue_proto::FILE_DESCRIPTOR_SET).ok());

/// One event as the worker POSTs it.
#[derive(Debug, Clone)]
pub struct Payload<'a> {
    /// Event id (UUID).
    pub id: &'a str,
    /// `//accrue/<service>`.
    pub source: &'a str,
    /// The event type.
    pub r#type: &'a str,
    /// When the change happened.
    pub time: DateTime<Utc>,
    /// `sales/{id}`, …
    pub subject: &'a str,
    /// The program (UUID).
    pub program_id: &'a str,
    /// Its sequence in the program's feed.
    pub sequence: i64,
    /// The data message's full name (`accrue.attribution.v1.Sale`).
    pub data_type: &'a str,
    /// The data message, protobuf-encoded.
    pub data: &'a [u8],
}

/// The JSON body of a webhook: `{"id", "source", "type", "time", "subject",
/// "program_id", "sequence", "data_type", "data"}` where `data` is the data
/// message in the proto3 JSON mapping with the proto field names
/// (snake_case; 64-bit integers as strings, enums by name, timestamps in
/// RFC 3339). Should the message not decode (it always does), `data` is
/// left out and `data_base64` carries the protobuf bytes.
pub fn payload(event: &Payload<'_>) -> Vec<u8> {
    let mut body = serde_json::json!({
        "id": event.id,
        "source": event.source,
        "type": event.r#type,
        "time": event.time.to_rfc3339_opts(SecondsFormat::Micros, true),
        "subject": event.subject,
        "program_id": event.program_id,
        "sequence": event.sequence,
        "data_type": event.data_type,
    });
    let data = DESCRIPTORS
        .as_ref()
        .and_then(|pool| pool.get_message_by_name(event.data_type))
        .and_then(|descriptor| prost_reflect::DynamicMessage::decode(descriptor, event.data).ok())
        .and_then(|message| {
            let options = prost_reflect::SerializeOptions::new().use_proto_field_name(true);
            message.serialize_with_options(serde_json::value::Serializer, &options).ok()
        });
    if let Some(object) = body.as_object_mut() {
        match data {
            Some(data) => object.insert("data".into(), data),
            None => object.insert("data_base64".into(), STANDARD.encode(event.data).into()),
        };
    }
    serde_json::to_vec(&body).unwrap_or_default()
}

/// The advisory lock key of a source's webhook worker: FNV-1a of
/// `accrue webhooks|<schema>` (distinct from the sequencer's).
pub fn lock_key(schema: &str) -> i64 {
    super::lock::key("webhooks", schema)
}

/// What wakes a worker beside its poll: the sequencer numbered events, or an
/// RPC queued a delivery.
#[derive(Debug, Clone, Default)]
pub struct Nudge(Arc<tokio::sync::Notify>);

impl Nudge {
    /// Wakes the worker (once, even if it is busy now).
    pub fn wake(&self) {
        self.0.notify_one();
    }

    /// Resolves at the next [`Nudge::wake`].
    pub async fn woken(&self) {
        self.0.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Standard Webhooks spec's own example.
    #[test]
    fn signs_the_spec_example() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;
        let signature = sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, body).unwrap();
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(sign("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "x", 1, b"").is_err());
    }

    #[test]
    fn secrets_are_24_random_bytes() {
        let secret = new_secret();
        let key = STANDARD.decode(secret.strip_prefix(SECRET_PREFIX).unwrap()).unwrap();
        assert_eq!(key.len(), SECRET_BYTES);
        assert_ne!(secret, new_secret());
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let options = WebhookOptions::default();
        assert_eq!(options.backoff(1), Duration::from_secs(5));
        assert_eq!(options.backoff(2), Duration::from_secs(10));
        assert_eq!(options.backoff(4), Duration::from_secs(40));
        assert_eq!(options.backoff(20), Duration::from_secs(3600));
        assert_eq!(options.backoff(u32::MAX), Duration::from_secs(3600));
    }

    #[test]
    fn data_is_rendered_as_proto_json() {
        use prost::Message;
        let sale = accrue_proto::attribution::v1::Sale {
            id: "s1".into(),
            external_id: "order-1".into(),
            ..Default::default()
        };
        let bytes = sale.encode_to_vec();
        let body = payload(&Payload {
            id: "e1",
            source: "//accrue/attribution",
            r#type: "accrue.attribution.v1.sale.recorded",
            time: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            subject: "sales/s1",
            program_id: "p1",
            sequence: 3,
            data_type: "accrue.attribution.v1.Sale",
            data: &bytes,
        });
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["sequence"], 3);
        assert_eq!(json["time"], "2023-11-14T22:13:20.000000Z");
        assert_eq!(json["data"]["external_id"], "order-1");
        assert_eq!(json["data_type"], "accrue.attribution.v1.Sale");
    }
}
