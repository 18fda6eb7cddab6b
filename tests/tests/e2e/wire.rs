//! Raw calls to any RPC of the five services (encoded requests in, encoded
//! replies out, one helper for every path), and a digest of every row of the
//! five schemas — what the tests that walk the whole policy table share
//! (`tenancy`, `hostile_input`, `fuzz`).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::{BTreeMap, HashMap};

use accrue_cli::stack::Stack;
use prost::bytes::{Buf, BufMut};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// What a swapped id is shown as in compared messages and bodies (as long
/// as a UUID, so an encoded message stays well-formed).
pub const PLACEHOLDER: &str = "00000000-0000-0000-0000-000000000000";

/// Passes encoded messages through unchanged, so one call helper serves
/// every RPC.
#[derive(Debug, Default, Clone, Copy)]
pub struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;

    fn encoder(&mut self) -> Raw {
        Raw
    }

    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let mut bytes = vec![0; src.remaining()];
        src.copy_to_slice(&mut bytes);
        Ok(Some(bytes))
    }
}

/// One answer: the code, the message, and the encoded reply (Ok only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub code: Code,
    pub message: String,
    pub body: Vec<u8>,
}

impl Answer {
    /// The answer with `ids` shown as the placeholder (message and body).
    pub fn masked(&self, ids: &[&str]) -> Answer {
        let mut answer = self.clone();
        for id in ids {
            answer.message = answer.message.replace(id, "<id>");
            answer.body = replace(&answer.body, id, PLACEHOLDER);
        }
        answer
    }

    pub fn show(&self) -> String {
        format!("{:?} {:?} {}", self.code, self.message, String::from_utf8_lossy(&self.body).escape_debug())
    }
}

/// `haystack` with every occurrence of `from` replaced by `to`.
pub fn replace(haystack: &[u8], from: &str, to: &str) -> Vec<u8> {
    let from = from.as_bytes();
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(from) {
            out.extend_from_slice(to.as_bytes());
            i += from.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

pub fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle.as_bytes())
}

/// The five services' channels, by the service a path names.
pub struct Channels(HashMap<&'static str, Channel>);

impl Channels {
    pub async fn connect(stack: &Stack) -> Channels {
        let e = &stack.endpoints;
        let mut map = HashMap::new();
        for (service, url) in [
            ("hierarchy", &e.hierarchy),
            ("attribution", &e.attribution),
            ("commission", &e.commission),
            ("ledger", &e.ledger),
            ("payouts", &e.payouts),
        ] {
            map.insert(service, Channel::from_shared(url.clone()).unwrap().connect().await.unwrap());
        }
        // Every service hosts the event feed; the ledger's answers for it.
        let ledger = map.get("ledger").unwrap().clone();
        map.insert("events", ledger);
        Channels(map)
    }

    /// Calls `path` with the encoded request `body` and `token` (RecordSales
    /// as a stream of that one message; ExportPayouts' messages concatenated).
    pub async fn call(&self, path: &str, token: &str, body: &[u8]) -> Answer {
        let service = path.split('.').nth(1).unwrap_or_default();
        let channel = self.0.get(service).unwrap_or_else(|| panic!("no service for {path}")).clone();
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.unwrap();
        let path = PathAndQuery::try_from(path.to_string()).unwrap();
        let bearer = format!("Bearer {token}").parse().unwrap();
        let reply = if path.path().ends_with("/RecordSales") {
            let mut request = tonic::Request::new(futures::stream::iter(vec![body.to_vec()]));
            request.metadata_mut().insert("authorization", bearer);
            grpc.client_streaming(request, path, Raw).await
        } else if path.path().ends_with("/WatchEvents") {
            // A watch never ends by itself: what arrives within a moment, as OK.
            let mut request = tonic::Request::new(body.to_vec());
            request.metadata_mut().insert("authorization", bearer);
            match grpc.server_streaming(request, path, Raw).await {
                Ok(response) => {
                    let mut stream = response.into_inner();
                    let mut messages = Vec::new();
                    loop {
                        match tokio::time::timeout(std::time::Duration::from_millis(300), stream.message()).await {
                            Ok(Ok(Some(message))) => messages.extend(message),
                            Ok(Ok(None)) | Err(_) => break Ok(tonic::Response::new(messages)),
                            Ok(Err(status)) => break Err(status),
                        }
                    }
                }
                Err(status) => Err(status),
            }
        } else if path.path().ends_with("/ExportPayouts") {
            let mut request = tonic::Request::new(body.to_vec());
            request.metadata_mut().insert("authorization", bearer);
            match grpc.server_streaming(request, path, Raw).await {
                Ok(response) => {
                    let mut stream = response.into_inner();
                    let mut messages = Vec::new();
                    loop {
                        match stream.message().await {
                            Ok(Some(message)) => messages.extend(message),
                            Ok(None) => break Ok(tonic::Response::new(messages)),
                            Err(status) => break Err(status),
                        }
                    }
                }
                Err(status) => Err(status),
            }
        } else {
            let mut request = tonic::Request::new(body.to_vec());
            request.metadata_mut().insert("authorization", bearer);
            grpc.unary(request, path, Raw).await
        };
        match reply {
            Ok(response) => Answer { code: Code::Ok, message: String::new(), body: response.into_inner() },
            Err(status) => Answer { code: status.code(), message: status.message().to_string(), body: Vec::new() },
        }
    }
}

const SCHEMAS: [&str; 5] = ["hierarchy", "attribution", "commission", "ledger", "payouts"];

/// Row count and an md5 of every row (as text, sorted) of every table of the
/// five schemas.
pub async fn snapshot(pool: &sqlx::PgPool) -> BTreeMap<String, (i64, String)> {
    sequenced(pool).await;
    let schemas: Vec<String> = SCHEMAS.iter().map(|s| s.to_string()).collect();
    let tables: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_schema::text, table_name::text FROM information_schema.tables
         WHERE table_schema = ANY($1) AND table_type = 'BASE TABLE' ORDER BY 1, 2",
    )
    .bind(&schemas)
    .fetch_all(pool)
    .await
    .unwrap();
    let mut digest = BTreeMap::new();
    for (schema, table) in tables {
        let sql = format!(
            "SELECT count(*), coalesce(md5(string_agg(t::text, ',' ORDER BY t::text)), '') FROM \"{schema}\".\"{table}\" t"
        );
        let row: (i64, String) = sqlx::query_as(sqlx::AssertSqlSafe(sql)).fetch_one(pool).await.unwrap();
        digest.insert(format!("{schema}.{table}"), row);
    }
    digest
}

/// Waits (up to 10 s) until every service's outbox is sequenced: the
/// sequencer numbers events shortly after the write that made them commits,
/// so a digest taken earlier would change by itself.
async fn sequenced(pool: &sqlx::PgPool) {
    let mut conn = pool.acquire().await.unwrap();
    for _ in 0..200 {
        let mut pending = 0;
        for schema in SCHEMAS {
            pending += accrue_kit::events::sequencer::unsequenced(&mut conn, schema).await.unwrap();
        }
        if pending == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Every message of the descriptor set by full name (`accrue.x.v1.Foo`).
pub fn messages(set: &prost_types::FileDescriptorSet) -> HashMap<String, &prost_types::DescriptorProto> {
    fn add<'a>(
        scope: &str,
        message: &'a prost_types::DescriptorProto,
        out: &mut HashMap<String, &'a prost_types::DescriptorProto>,
    ) {
        let name = format!("{scope}.{}", message.name());
        for nested in &message.nested_type {
            add(&name, nested, out);
        }
        out.insert(name, message);
    }
    let mut out = HashMap::new();
    for file in &set.file {
        for message in &file.message_type {
            add(file.package(), message, &mut out);
        }
    }
    out
}

/// Every RPC's gRPC path → its input message's full name.
pub fn input_types(set: &prost_types::FileDescriptorSet) -> HashMap<String, String> {
    set.file
        .iter()
        .flat_map(|file| {
            file.service.iter().flat_map(move |service| {
                service.method.iter().map(move |method| {
                    let path = format!("/{}.{}/{}", file.package(), service.name(), method.name());
                    (path, method.input_type().trim_start_matches('.').to_string())
                })
            })
        })
        .collect()
}
