//! Random requests against every RPC (issue 11 item 5): for each RPC of the
//! policy table, well-typed requests generated from its input type's
//! descriptor (every field present or not, strings from a pool of hostile
//! and plausible values, extreme numbers and timestamps, unknown enum values,
//! nested and repeated messages) and raw random bytes, sent with an admin
//! token over real gRPC. No answer may be INTERNAL, UNKNOWN or UNIMPLEMENTED
//! (a caller's bad input is never the server's error, and no request may
//! panic a handler), a refused write changes nothing (the first requests
//! of every writing RPC are checked against a digest of every table), and
//! every service still answers afterwards. The
//! generator is seeded (`ACCRUE_FUZZ_SEED`, default fixed) and its size set
//! by `ACCRUE_FUZZ_CASES` (requests per RPC, default 40), so a failure
//! replays exactly.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashMap;

use accrue_e2e::TestStack;
use accrue_e2e::fixtures::program;
use accrue_kit::auth::policy::{Rule, TABLE};
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint};
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FileDescriptorSet};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::Code;

use crate::wire::{Channels, input_types, messages, snapshot};

/// Strings a caller might send: empty, blank, ids (real-looking and not),
/// codes, amounts and rates at the edges, periods, masks, long and odd text.
fn text(rng: &mut StdRng, known: &[String]) -> String {
    let pool: [&str; 24] = [
        "",
        " ",
        "GBP",
        "XXX",
        "gbp",
        "0",
        "-1",
        "1.001",
        "0.10",
        "1e9",
        "99999999999999999999999999999999.99",
        "NaN",
        "2011-13",
        "2024-01",
        "*",
        "ROUNDING_MODE_HALF_EVEN",
        "rounding_mode,max_tree_depth",
        "RECHARGE",
        "../../etc/passwd",
        "'; DROP TABLE entries; --",
        "\u{1F600}\u{200B}",
        "00000000-0000-0000-0000-000000000000",
        "not-a-uuid",
        "ADMIN",
    ];
    match rng.random_range(0..10) {
        0 => uuid::Uuid::now_v7().to_string(),
        1 if !known.is_empty() => known[rng.random_range(0..known.len())].clone(),
        2 => "x".repeat(rng.random_range(200..2000)),
        _ => pool[rng.random_range(0..pool.len())].to_string(),
    }
}

fn varint(rng: &mut StdRng) -> u64 {
    let edges =
        [0u64, 1, 2, u64::MAX, i64::MAX as u64, i64::MIN as u64, u32::MAX as u64, i32::MIN as i64 as u64, 1000, 1001];
    if rng.random_bool(0.7) { edges[rng.random_range(0..edges.len())] } else { rng.random() }
}

/// A random encoding of message `name`: each field present with
/// probability one half, repeated ones 0–3 times, nesting at most `depth`.
fn message(
    rng: &mut StdRng,
    all: &HashMap<String, &DescriptorProto>,
    name: &str,
    depth: usize,
    known: &[String],
) -> Vec<u8> {
    let mut out = Vec::new();
    if name == "google.protobuf.Timestamp" {
        let seconds = [0i64, -62_135_596_801, 253_402_300_800, 1_704_067_200, i64::MAX, i64::MIN, -1];
        encode_key(1, WireType::Varint, &mut out);
        encode_varint(seconds[rng.random_range(0..seconds.len())] as u64, &mut out);
        encode_key(2, WireType::Varint, &mut out);
        encode_varint([0i64, -1, 999_999_999, 1_000_000_000][rng.random_range(0..4)] as u64, &mut out);
        return out;
    }
    let Some(descriptor) = all.get(name) else { return out };
    for field in &descriptor.field {
        if !rng.random_bool(0.5) {
            continue;
        }
        let times = if field.label() == Label::Repeated { rng.random_range(0..4) } else { 1 };
        let number = u32::try_from(field.number()).unwrap();
        for _ in 0..times {
            match field.r#type() {
                Type::String | Type::Bytes => {
                    let value = text(rng, known);
                    encode_key(number, WireType::LengthDelimited, &mut out);
                    encode_varint(value.len() as u64, &mut out);
                    out.extend_from_slice(value.as_bytes());
                }
                Type::Message if depth > 0 => {
                    let inner = message(rng, all, field.type_name().trim_start_matches('.'), depth - 1, known);
                    encode_key(number, WireType::LengthDelimited, &mut out);
                    encode_varint(inner.len() as u64, &mut out);
                    out.extend_from_slice(&inner);
                }
                Type::Message => {}
                Type::Bool => {
                    encode_key(number, WireType::Varint, &mut out);
                    encode_varint(rng.random_range(0..3), &mut out);
                }
                Type::Enum => {
                    encode_key(number, WireType::Varint, &mut out);
                    encode_varint(rng.random_range(-2i64..12) as u64, &mut out);
                }
                Type::Double | Type::Fixed64 | Type::Sfixed64 => {
                    encode_key(number, WireType::SixtyFourBit, &mut out);
                    out.extend_from_slice(&rng.random::<u64>().to_le_bytes());
                }
                Type::Float | Type::Fixed32 | Type::Sfixed32 => {
                    encode_key(number, WireType::ThirtyTwoBit, &mut out);
                    out.extend_from_slice(&rng.random::<u32>().to_le_bytes());
                }
                _ => {
                    encode_key(number, WireType::Varint, &mut out);
                    encode_varint(varint(rng), &mut out);
                }
            }
        }
    }
    out
}

/// True once no saga is running or unwinding (within 10 s): a saga an
/// earlier accepted request started writes on its own, which a digest taken
/// around one call must not mistake for that call's writes.
async fn quiet(pool: &sqlx::PgPool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let busy: i64 =
            sqlx::query_scalar("SELECT count(*) FROM attribution.sagas WHERE state IN ('running', 'unwinding')")
                .fetch_one(pool)
                .await
                .unwrap();
        if busy == 0 {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// How many requests per writing RPC are checked to change nothing when
/// refused.
const CHECKED_WRITES: u64 = 8;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|value| value.parse().ok()).unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_requests_to_every_rpc_are_never_a_server_error() {
    let seed = env_number("ACCRUE_FUZZ_SEED", 20_261_206);
    let cases = env_number("ACCRUE_FUZZ_CASES", 40);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut t = TestStack::start().await.unwrap();
    // One real program, so that some generated ids name something.
    let known = vec![program(&mut t.clients).await];
    let channels = Channels::connect(&t.stack).await;
    let set = FileDescriptorSet::decode(accrue_proto::FILE_DESCRIPTOR_SET).unwrap();
    let all = messages(&set);
    let inputs = input_types(&set);

    let pool = sqlx::PgPool::connect(&t.db.url).await.unwrap();
    let mut codes: HashMap<Code, usize> = HashMap::new();
    let mut compared = 0;
    for (path, rule) in TABLE {
        let reads = matches!(rule, Rule::Read | Rule::PartnerRead);
        for case in 0..cases {
            let body = if case % 4 == 3 {
                (0..rng.random_range(0..48)).map(|_| rng.random::<u8>()).collect()
            } else {
                message(&mut rng, &all, &inputs[*path], 3, &known)
            };
            // A refused write must change nothing: the first cases of every
            // writing RPC are checked against a digest of every table (reads
            // cannot write; the digest costs a query per table).
            let check = !reads && case < CHECKED_WRITES && quiet(&pool).await;
            let before = if check { Some(snapshot(&pool).await) } else { None };
            let answer = channels.call(path, &t.stack.admin_token, &body).await;
            if let Some(before) = before
                && answer.code != Code::Ok
            {
                assert_eq!(snapshot(&pool).await, before, "{path} case {case} (seed {seed}) refused but wrote");
                compared += 1;
            }
            assert!(
                !matches!(answer.code, Code::Internal | Code::Unknown | Code::Unimplemented),
                "{path} case {case} (seed {seed}) answered {:?} {:?} to {:02x?}",
                answer.code,
                answer.message,
                body
            );
            *codes.entry(answer.code).or_default() += 1;
        }
    }
    eprintln!(
        "fuzz seed {seed}: {} requests, codes {codes:?}, {compared} refused writes shown to change nothing",
        TABLE.len() as u64 * cases
    );
    assert!(compared > 0, "no refused write was checked");
    pool.close().await;
    // Every service still answers.
    for (service, url) in t.stack.endpoints.list() {
        accrue_testkit::wait_serving(accrue_kit::client::channel(url).unwrap(), service).await.unwrap();
    }
    t.shutdown().await.unwrap();
}
