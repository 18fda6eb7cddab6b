//! Signed webhooks (issue 16 item 1; docs/events.md "Webhooks"): the
//! attribution service's `accrue.events.v1.WebhookService` POSTing its
//! events to a real HTTP receiver run by the test, on real gRPC and a real
//! Postgres.
//!
//! - a subscription receives the events of a recorded and settled sale in
//!   sequence order, each with the Standard Webhooks headers; every
//!   signature verifies with a reference implementation written here from
//!   the spec (HMAC-SHA256 over `id.timestamp.body` with the decoded
//!   secret), and a body with one byte changed does not;
//! - a receiver that fails the first two attempts gets the event on the
//!   third (short backoff), the attempts recorded;
//! - a delivery whose receiver keeps failing is DEAD after the last attempt,
//!   the next event is delivered after it, and RedeliverWebhook queues the
//!   dead one again, delivered once the receiver recovers;
//! - bad input is INVALID_ARGUMENT naming the field; a partner (or finance)
//!   token is PERMISSION_DENIED.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use accrue_cli::stack::{Stack, StackConfig};
use accrue_e2e::Clients;
use accrue_e2e::fixtures::{payment, record_and_settle};
use accrue_kit::auth::{AuthConfig, Credential, Minter, Role};
use accrue_kit::events::catalogue;
use accrue_kit::events::webhooks::WebhookOptions;
use accrue_proto::events::v1 as epb;
use accrue_proto::events::v1::webhook_service_client::WebhookServiceClient;
use accrue_testkit::TestDb;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tonic::Code;

use crate::world::{quick, setup};

const SECRET: &str = "accrue-e2e-webhooks-secret-0123456789abcdef";
const SALE_AT: &str = "2024-03-01T12:00:00Z";
/// How long a test waits for the worker.
const WAIT: Duration = Duration::from_secs(30);

type Hooks = WebhookServiceClient<accrue_kit::client::AuthChannel>;

fn minter() -> Minter {
    Minter::new(SECRET, accrue_kit::auth::DEFAULT_ISSUER, accrue_kit::auth::DEFAULT_AUDIENCE).unwrap()
}

fn token(roles: &[Role], program: &str, partner: Option<&str>) -> Credential {
    let token = minter().mint(
        "webhooks-test",
        roles,
        &[program.to_string()],
        partner.map(|p| p.parse().unwrap()),
        Duration::from_secs(3600),
    );
    Credential::token(token.unwrap())
}

fn hooks(url: &str, credential: &Credential) -> Hooks {
    accrue_kit::client::connect(url, Duration::from_secs(30), credential).unwrap()
}

/// The stack with a short webhook backoff (100 ms doubling, at most 400 ms)
/// and three attempts.
async fn start(db: &TestDb) -> (Stack, Clients) {
    let mut config = StackConfig::for_tests(db.url.clone());
    config.saga = quick();
    config.auth = AuthConfig::hs256(SECRET);
    config.webhooks = WebhookOptions {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(400),
        timeout: Duration::from_secs(5),
        poll_interval: Duration::from_millis(50),
        ..WebhookOptions::default()
    };
    let stack = Stack::start(config).await.expect("stack starts");
    let clients = Clients::connect(&stack.endpoints, &stack.admin).expect("clients");
    (stack, clients)
}

/// One request the receiver got, and what it answered.
#[derive(Debug, Clone)]
struct Received {
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
    status: u16,
}

impl Received {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    fn header(&self, name: &str) -> &str {
        self.headers.get(name).unwrap_or_else(|| panic!("no {name} header: {:?}", self.headers))
    }
}

/// How the receiver answers.
#[derive(Debug, Default)]
pub struct Behaviour {
    /// Answer 500 to this many requests first.
    pub fail_first: usize,
    /// Answer 500 to every event of this type.
    pub fail_type: Option<String>,
}

/// A minimal HTTP/1.1 server that records every request and answers 200,
/// or 500 as [`Behaviour`] says.
#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    received: Arc<Mutex<Vec<Received>>>,
    behaviour: Arc<Mutex<Behaviour>>,
}

impl Receiver {
    pub async fn start(behaviour: Behaviour) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks", listener.local_addr().unwrap());
        let receiver = Receiver { url, received: Arc::default(), behaviour: Arc::new(Mutex::new(behaviour)) };
        let serving = receiver.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let serving = serving.clone();
                tokio::spawn(async move { serving.serve(stream).await });
            }
        });
        receiver
    }

    /// Answers the requests of one connection.
    async fn serve(&self, mut stream: tokio::net::TcpStream) {
        let mut buffer = Vec::new();
        loop {
            let Some(end) = find(&buffer, b"\r\n\r\n") else {
                let mut chunk = [0u8; 4096];
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                }
                continue;
            };
            let head = String::from_utf8_lossy(&buffer[..end]).to_string();
            let mut lines = head.split("\r\n");
            let request_line = lines.next().unwrap_or_default().to_string();
            let headers: BTreeMap<String, String> = lines
                .filter_map(|line| line.split_once(':'))
                .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
                .collect();
            let length: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
            while buffer.len() < end + 4 + length {
                let mut chunk = [0u8; 4096];
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                }
            }
            let body = buffer[end + 4..end + 4 + length].to_vec();
            buffer.drain(..end + 4 + length);
            assert!(request_line.starts_with("POST /hooks "), "{request_line}");
            let status = {
                let mut behaviour = self.behaviour.lock().unwrap();
                let kind = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|json| json["type"].as_str().map(str::to_string));
                if behaviour.fail_first > 0 {
                    behaviour.fail_first -= 1;
                    500
                } else if behaviour.fail_type.is_some() && behaviour.fail_type == kind {
                    500
                } else {
                    200
                }
            };
            self.received.lock().unwrap().push(Received { headers, body, status });
            let reason = if status == 200 { "OK" } else { "Internal Server Error" };
            let answer = format!("HTTP/1.1 {status} {reason}\r\ncontent-length: 4\r\n\r\nnope");
            if stream.write_all(answer.as_bytes()).await.is_err() {
                return;
            }
        }
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// The requests answered 200, once there are `n` of them.
    async fn delivered(&self, n: usize) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let ok: Vec<Received> = self.received().into_iter().filter(|r| r.status == 200).collect();
            if ok.len() >= n {
                return ok;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {} of {n} delivered: {:#?}",
                ok.len(),
                self.received()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

/// The reference verifier, written from the Standard Webhooks spec
/// (standardwebhooks.com) and independent of the kit's signer: the key is
/// the base64 after `whsec_`; the signed content `{id}.{timestamp}.{body}`;
/// the header a space-separated list of `v1,<base64 HMAC-SHA256>`.
fn verify(secret: &str, id: &str, timestamp: &str, body: &[u8], header: &str) -> bool {
    let key = STANDARD.decode(secret.strip_prefix("whsec_").expect("whsec_ prefix")).expect("base64 key");
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).unwrap();
    let mut content = format!("{id}.{timestamp}.").into_bytes();
    content.extend_from_slice(body);
    mac.update(&content);
    let expected = mac.finalize().into_bytes();
    header.split(' ').any(|signature| {
        signature
            .strip_prefix("v1,")
            .and_then(|b64| STANDARD.decode(b64).ok())
            .is_some_and(|bytes| bytes[..] == expected[..])
    })
}

/// Every delivery of a subscription (one page of up to 1000), optionally in one state.
async fn deliveries(
    c: &mut Hooks,
    program: &str,
    subscription: &str,
    state: epb::WebhookDeliveryState,
) -> Vec<epb::WebhookDelivery> {
    c.list_webhook_deliveries(epb::ListWebhookDeliveriesRequest {
        program_id: program.into(),
        subscription_id: subscription.into(),
        state: state as i32,
        page_size: 1000,
        page_token: String::new(),
    })
    .await
    .unwrap()
    .into_inner()
    .deliveries
}

/// The deliveries once `ready` holds for them.
async fn deliveries_when(
    c: &mut Hooks,
    program: &str,
    subscription: &str,
    ready: impl Fn(&[epb::WebhookDelivery]) -> bool,
) -> Vec<epb::WebhookDelivery> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let list = deliveries(c, program, subscription, epb::WebhookDeliveryState::Unspecified).await;
        if ready(&list) {
            return list;
        }
        assert!(tokio::time::Instant::now() < deadline, "deliveries never got there: {list:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn subscribe(c: &mut Hooks, program: &str, url: &str, request_id: &str) -> epb::WebhookSubscription {
    c.create_webhook_subscription(epb::CreateWebhookSubscriptionRequest {
        program_id: program.into(),
        url: url.into(),
        types: vec![],
        request_id: request_id.into(),
    })
    .await
    .unwrap_or_else(|status| panic!("CreateWebhookSubscription: {status:?}"))
    .into_inner()
}

/// Signed, in order, at least once after two failures: the events of a
/// recorded and settled sale reach the receiver with valid signatures.
#[tokio::test]
async fn a_subscription_receives_signed_events_in_order_after_retries() {
    let db = TestDb::create().await.unwrap();
    let (stack, mut c) = start(&db).await;
    let w = setup(&mut c, "webhooks-signed").await;
    let program = w.program_id.clone();
    let admin = token(&[Role::Admin], &program, None);
    let mut hooks = hooks(&stack.endpoints.attribution, &admin);
    // The first two attempts fail: the first event arrives on the third.
    let receiver = Receiver::start(Behaviour { fail_first: 2, fail_type: None }).await;

    let subscription = subscribe(&mut hooks, &program, &receiver.url, "hook-1").await;
    assert!(subscription.secret.starts_with("whsec_"), "{subscription:?}");
    assert_eq!(STANDARD.decode(&subscription.secret["whsec_".len()..]).unwrap().len(), 24);
    assert_eq!(subscription.state, epb::WebhookSubscriptionState::Active as i32);
    // Idempotent create: the same body gives the same subscription, another
    // body with the same request id is ALREADY_EXISTS; Get never shows the secret.
    let again = subscribe(&mut hooks, &program, &receiver.url, "hook-1").await;
    assert_eq!((again.id.as_str(), again.secret.as_str()), (subscription.id.as_str(), subscription.secret.as_str()));
    let reused = hooks
        .create_webhook_subscription(epb::CreateWebhookSubscriptionRequest {
            program_id: program.clone(),
            url: "https://example.com/other".into(),
            types: vec![],
            request_id: "hook-1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(reused.code(), Code::AlreadyExists, "{reused:?}");
    let got = hooks
        .get_webhook_subscription(epb::GetWebhookSubscriptionRequest {
            program_id: program.clone(),
            subscription_id: subscription.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (got.id.as_str(), got.secret.as_str(), got.url.as_str()),
        (subscription.id.as_str(), "", receiver.url.as_str())
    );

    let (sale, _) = record_and_settle(&mut c, payment(&program, "s-1", "cust-1", "100.00", "", SALE_AT)).await;

    let delivered = receiver.delivered(2).await;
    let all = receiver.received();
    assert_eq!(all.iter().map(|r| r.status).collect::<Vec<_>>(), [500, 500, 200, 200], "{all:#?}");
    // Every request, failed or not, is signed and verifies.
    for request in &all {
        let (id, timestamp, signature) =
            (request.header("webhook-id"), request.header("webhook-timestamp"), request.header("webhook-signature"));
        assert_eq!(request.header("content-type"), "application/json");
        assert!(verify(&subscription.secret, id, timestamp, &request.body, signature), "{request:#?}");
        let age = chrono::Utc::now().timestamp() - timestamp.parse::<i64>().unwrap();
        assert!((0..120).contains(&age), "timestamp {timestamp} is now");
        assert_eq!(request.json()["id"], id);
        // One byte changed: the reference verification fails.
        let mut tampered = request.body.clone();
        let last = tampered.len() - 2;
        tampered[last] ^= 0x01;
        assert!(!verify(&subscription.secret, id, timestamp, &tampered, signature));
        assert!(!verify(
            &subscription.secret,
            id,
            &(timestamp.parse::<i64>().unwrap() + 1).to_string(),
            &request.body,
            signature
        ));
    }
    // The three attempts of the first event carry the same event.
    assert_eq!(all[0].body, all[2].body);
    assert_eq!(all[0].header("webhook-id"), all[1].header("webhook-id"));
    // In sequence order: recorded, then settled, with the sale as data.
    let bodies: Vec<serde_json::Value> = delivered.iter().map(Received::json).collect();
    let kinds: Vec<&str> = bodies.iter().map(|b| b["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, [catalogue::SALE_RECORDED.name, catalogue::SALE_SETTLED.name]);
    for (index, body) in bodies.iter().enumerate() {
        assert_eq!(body["sequence"], i64::try_from(index).unwrap() + 1, "{body:#}");
        assert_eq!(body["source"], "//accrue/attribution");
        assert_eq!(body["program_id"], program.as_str());
        assert_eq!(body["subject"], format!("sales/{}", sale.id));
        assert_eq!(body["data_type"], "accrue.attribution.v1.Sale");
        assert_eq!(body["data"]["id"], sale.id.as_str(), "{body:#}");
        assert!(body["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{body:#}");
    }
    assert_eq!(bodies[1]["data"]["state"], "SALE_STATE_SETTLED", "{:#}", bodies[1]);
    // The events are the feed's: same ids and sequences.
    let mut feed: accrue_proto::events::v1::event_service_client::EventServiceClient<accrue_kit::client::AuthChannel> =
        accrue_kit::client::connect(&stack.endpoints.attribution, Duration::from_secs(30), &admin).unwrap();
    let events = feed
        .list_events(epb::ListEventsRequest { program_id: program.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .events;
    let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    let sent: Vec<&str> = bodies.iter().map(|b| b["id"].as_str().unwrap()).collect();
    assert_eq!(ids, sent);

    // The attempts are recorded: three for the first event, one for the second.
    let list = deliveries_when(&mut hooks, &program, &subscription.id, |list| {
        list.len() == 2 && list.iter().all(|d| d.state == epb::WebhookDeliveryState::Delivered as i32)
    })
    .await;
    assert_eq!(list.iter().map(|d| d.attempts).collect::<Vec<_>>(), [3, 1], "{list:#?}");
    assert_eq!(list.iter().map(|d| d.sequence).collect::<Vec<_>>(), [1, 2]);
    assert!(list.iter().all(|d| d.last_status_code == 200 && d.last_error.is_empty() && d.deliver_time.is_some()));
    assert_eq!(list[0].event_id, sent[0]);
    let cursor = hooks
        .get_webhook_subscription(epb::GetWebhookSubscriptionRequest {
            program_id: program.clone(),
            subscription_id: subscription.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .cursor_sequence;
    assert_eq!(cursor, 2);
    stack.shutdown().await.unwrap();
}

/// The ledger writes a posted line's `entry.posted` by reference (its data
/// built on read): a webhook still carries the whole entry as it was posted.
#[tokio::test]
async fn entry_posted_webhooks_carry_the_whole_entry() {
    let db = TestDb::create().await.unwrap();
    let (stack, mut c) = start(&db).await;
    let w = setup(&mut c, "webhooks-entries").await;
    let program = w.program_id.clone();
    let admin = token(&[Role::Admin], &program, None);
    let mut hooks = hooks(&stack.endpoints.ledger, &admin);
    let receiver = Receiver::start(Behaviour { fail_first: 0, fail_type: None }).await;
    hooks
        .create_webhook_subscription(epb::CreateWebhookSubscriptionRequest {
            program_id: program.clone(),
            url: receiver.url.clone(),
            types: vec![catalogue::ENTRY_POSTED.name.into()],
            request_id: "entries".into(),
        })
        .await
        .unwrap();
    let (_, entries) = record_and_settle(&mut c, payment(&program, "s-1", "cust-1", "100.00", "", SALE_AT)).await;
    assert!(entries.len() >= 2, "{entries:#?}");
    let bodies: Vec<serde_json::Value> = receiver.delivered(entries.len()).await.iter().map(Received::json).collect();
    assert_eq!(bodies.len(), entries.len());
    for entry in &entries {
        let body = bodies
            .iter()
            .find(|b| b["subject"] == format!("entries/{}", entry.id))
            .unwrap_or_else(|| panic!("no webhook for {}: {bodies:#?}", entry.id));
        let data = &body["data"];
        assert_eq!(body["data_type"], "accrue.ledger.v1.Entry");
        assert_eq!(data["id"], entry.id.as_str(), "{body:#}");
        assert_eq!(data["partner_id"], entry.partner_id.as_str(), "{body:#}");
        assert_eq!(data["sale_id"], entry.sale_id.as_str(), "{body:#}");
        assert_eq!(data["amount"]["amount"], entry.amount.as_ref().unwrap().amount.as_str(), "{body:#}");
        assert_eq!(data["status"], "ENTRY_STATUS_PENDING", "{body:#}");
        assert_eq!(data["idempotency_key"], entry.idempotency_key.as_str(), "{body:#}");
        let formula = entry.breakdown.as_ref().map(|b| b.formula.as_str()).unwrap_or_default();
        assert!(!formula.is_empty(), "{entry:#?}");
        assert_eq!(data["breakdown"]["formula"], formula, "{body:#}");
        assert_eq!(data["history"][0]["to_status"], "ENTRY_STATUS_PENDING", "{body:#}");
        assert_eq!(data["history"][0]["reason"], "posted", "{body:#}");
    }
    stack.shutdown().await.unwrap();
}

/// A delivery that keeps failing is dead-lettered, the next event still
/// arrives, and RedeliverWebhook sends the dead one again.
#[tokio::test]
async fn a_dead_letter_does_not_block_the_next_event_and_can_be_redelivered() {
    let db = TestDb::create().await.unwrap();
    let (stack, mut c) = start(&db).await;
    let w = setup(&mut c, "webhooks-dead").await;
    let program = w.program_id.clone();
    let admin = token(&[Role::Admin], &program, None);
    let mut hooks = hooks(&stack.endpoints.attribution, &admin);
    let recorded = catalogue::SALE_RECORDED.name.to_string();
    let receiver = Receiver::start(Behaviour { fail_first: 0, fail_type: Some(recorded.clone()) }).await;
    let subscription = subscribe(&mut hooks, &program, &receiver.url, "").await;

    record_and_settle(&mut c, payment(&program, "s-1", "cust-1", "100.00", "", SALE_AT)).await;

    // sale.recorded fails three times (the maximum) and is DEAD; sale.settled
    // is delivered after it.
    let list = deliveries_when(&mut hooks, &program, &subscription.id, |list| {
        list.len() == 2 && list[1].state == epb::WebhookDeliveryState::Delivered as i32
    })
    .await;
    assert_eq!(list[0].state, epb::WebhookDeliveryState::Dead as i32, "{list:#?}");
    assert_eq!((list[0].attempts, list[0].last_status_code), (3, 500));
    assert!(list[0].last_error.contains("500"), "{:?}", list[0].last_error);
    assert!(list[0].deliver_time.is_none() && list[0].next_attempt_time.is_none());
    assert_eq!(list[0].event_type, recorded);
    let statuses: Vec<(String, u16)> =
        receiver.received().iter().map(|r| (r.json()["type"].as_str().unwrap().to_string(), r.status)).collect();
    let settled = catalogue::SALE_SETTLED.name.to_string();
    assert_eq!(
        statuses,
        [(recorded.clone(), 500), (recorded.clone(), 500), (recorded.clone(), 500), (settled.clone(), 200)],
    );
    let dead = deliveries(&mut hooks, &program, &subscription.id, epb::WebhookDeliveryState::Dead).await;
    assert_eq!(dead.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), [list[0].id.as_str()]);

    // The receiver recovers; the dead letter is queued again and delivered.
    receiver.behaviour.lock().unwrap().fail_type = None;
    let queued = hooks
        .redeliver_webhook(epb::RedeliverWebhookRequest {
            program_id: program.clone(),
            delivery_id: list[0].id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        queued.state == epb::WebhookDeliveryState::Pending as i32 && queued.attempts == 0
            || queued.state == epb::WebhookDeliveryState::Delivered as i32,
        "{queued:#?}"
    );
    let ok = receiver.delivered(2).await;
    assert_eq!(ok[1].json()["type"], recorded.as_str());
    assert_eq!(ok[1].header("webhook-id"), list[0].event_id);
    let list = deliveries_when(&mut hooks, &program, &subscription.id, |list| {
        list.iter().all(|d| d.state == epb::WebhookDeliveryState::Delivered as i32)
    })
    .await;
    assert_eq!(list[0].attempts, 1, "{list:#?}");

    // Deleted: nothing more is delivered, and a redeliver is refused.
    let deleted = hooks
        .delete_webhook_subscription(epb::DeleteWebhookSubscriptionRequest {
            program_id: program.clone(),
            subscription_id: subscription.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.state, epb::WebhookSubscriptionState::Deleted as i32);
    let refused = hooks
        .redeliver_webhook(epb::RedeliverWebhookRequest {
            program_id: program.clone(),
            delivery_id: list[0].id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    record_and_settle(&mut c, payment(&program, "s-2", "cust-1", "10.00", "", SALE_AT)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.received().len(), 5, "nothing after the delete");
    let listed = hooks
        .list_webhook_subscriptions(epb::ListWebhookSubscriptionsRequest {
            program_id: program.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.subscriptions.len(), 1);
    assert!(listed.subscriptions[0].secret.is_empty());
    stack.shutdown().await.unwrap();
}

/// Bad input names its field; only admins manage subscriptions.
#[tokio::test]
async fn bad_input_is_invalid_argument_and_partners_are_refused() {
    let db = TestDb::create().await.unwrap();
    let (stack, mut c) = start(&db).await;
    let w = setup(&mut c, "webhooks-input").await;
    let program = w.program_id.clone();
    let mut admin = hooks(&stack.endpoints.attribution, &token(&[Role::Admin], &program, None));
    let field_of = |status: &tonic::Status| {
        use tonic_types::StatusExt;
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        status.get_details_bad_request().expect("field violations").field_violations[0].field.clone()
    };
    let good = epb::CreateWebhookSubscriptionRequest {
        program_id: program.clone(),
        url: "https://example.com/hooks".into(),
        types: vec![catalogue::SALE_SETTLED.name.into()],
        request_id: String::new(),
    };
    for (request, field) in [
        (epb::CreateWebhookSubscriptionRequest { url: "ftp://example.com/x".into(), ..good.clone() }, "url"),
        (epb::CreateWebhookSubscriptionRequest { url: "not a url".into(), ..good.clone() }, "url"),
        (epb::CreateWebhookSubscriptionRequest { url: String::new(), ..good.clone() }, "url"),
        (epb::CreateWebhookSubscriptionRequest { program_id: "nope".into(), ..good.clone() }, "program_id"),
        (epb::CreateWebhookSubscriptionRequest { program_id: String::new(), ..good.clone() }, "program_id"),
        (
            epb::CreateWebhookSubscriptionRequest {
                types: vec![catalogue::SALE_SETTLED.name.into(), catalogue::ENTRY_POSTED.name.into()],
                ..good.clone()
            },
            "types[1]",
        ),
    ] {
        let status = admin.create_webhook_subscription(request.clone()).await.unwrap_err();
        assert_eq!(field_of(&status), field, "{request:?}");
    }
    let created = admin.create_webhook_subscription(good.clone()).await.unwrap().into_inner();
    assert_eq!(created.types, [catalogue::SALE_SETTLED.name]);
    let missing = admin
        .get_webhook_subscription(epb::GetWebhookSubscriptionRequest {
            program_id: program.clone(),
            subscription_id: uuid::Uuid::now_v7().to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
    let bad = admin
        .get_webhook_subscription(epb::GetWebhookSubscriptionRequest {
            program_id: program.clone(),
            subscription_id: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(field_of(&bad), "subscription_id");
    let bad = admin
        .redeliver_webhook(epb::RedeliverWebhookRequest { program_id: program.clone(), delivery_id: String::new() })
        .await
        .unwrap_err();
    assert_eq!(field_of(&bad), "delivery_id");
    let bad = admin
        .list_webhook_subscriptions(epb::ListWebhookSubscriptionsRequest {
            program_id: program.clone(),
            page_token: "garbage".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(field_of(&bad), "page_token");
    // Another program's token sees nothing of it.
    let other = uuid::Uuid::now_v7().to_string();
    let mut stranger = hooks(&stack.endpoints.attribution, &token(&[Role::Admin], &other, None));
    let hidden = stranger
        .get_webhook_subscription(epb::GetWebhookSubscriptionRequest {
            program_id: program.clone(),
            subscription_id: created.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(hidden.code(), Code::NotFound, "{hidden:?}");

    // Partners, finance and viewers may not manage webhooks, on any service.
    for (credential, who) in [
        (token(&[Role::Partner], &program, Some(&w.seller)), "partner"),
        (token(&[Role::Finance], &program, None), "finance"),
        (token(&[Role::Viewer], &program, None), "viewer"),
    ] {
        for url in [&stack.endpoints.attribution, &stack.endpoints.ledger] {
            let mut client = hooks(url, &credential);
            let denied = client.create_webhook_subscription(good.clone()).await.unwrap_err();
            assert_eq!(denied.code(), Code::PermissionDenied, "{who}: {denied:?}");
            let denied = client
                .list_webhook_subscriptions(epb::ListWebhookSubscriptionsRequest {
                    program_id: program.clone(),
                    ..Default::default()
                })
                .await
                .unwrap_err();
            assert_eq!(denied.code(), Code::PermissionDenied, "{who}: {denied:?}");
        }
    }
    stack.shutdown().await.unwrap();
}
