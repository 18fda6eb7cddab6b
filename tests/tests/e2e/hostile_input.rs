//! Bad bytes are refused before any handler runs (issue 11 item 2): for
//! every RPC of the policy table, a request whose first string field (found
//! through the descriptor set, nested messages included) holds a NUL is
//! INVALID_ARGUMENT with a field violation naming that field — Postgres text
//! cannot hold U+0000, and before the shared codec refused it every service
//! answered INTERNAL after its handler had accepted it — and bytes that are
//! not a protobuf message are INVALID_ARGUMENT, not INTERNAL. Nothing is
//! written by any of these calls.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashMap;

use accrue_e2e::TestStack;
use accrue_e2e::fixtures::program;
use accrue_kit::auth::policy::TABLE;
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint};
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FileDescriptorSet};
use tonic::Code;
use tonic_types::StatusExt;

use crate::wire::{Channels, input_types, messages, snapshot};

/// An encoded `name` whose first string field, depth first, is "\0", with
/// that field's path as a field violation names it.
fn nul_request(all: &HashMap<String, &DescriptorProto>, name: &str) -> Option<(Vec<u8>, String)> {
    let message = all.get(name)?;
    for field in &message.field {
        let index = if field.label() == Label::Repeated { "[0]" } else { "" };
        let number = u32::try_from(field.number()).unwrap();
        let (inner, path) = match field.r#type() {
            Type::String => (vec![0u8], format!("{}{index}", field.name())),
            Type::Message => match nul_request(all, field.type_name().trim_start_matches('.')) {
                Some((inner, path)) => (inner, format!("{}{index}.{path}", field.name())),
                None => continue,
            },
            _ => continue,
        };
        let mut bytes = Vec::new();
        encode_key(number, WireType::LengthDelimited, &mut bytes);
        encode_varint(inner.len() as u64, &mut bytes);
        bytes.extend_from_slice(&inner);
        return Some((bytes, path));
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_nul_in_any_string_field_or_a_malformed_message_is_invalid_argument_in_every_rpc() {
    let mut t = TestStack::start().await.unwrap();
    let program_id = program(&mut t.clients).await;
    let channels = Channels::connect(&t.stack).await;
    let set = FileDescriptorSet::decode(accrue_proto::FILE_DESCRIPTOR_SET).unwrap();
    let all = messages(&set);
    let inputs = input_types(&set);
    let pool = sqlx::PgPool::connect(&t.db.url).await.unwrap();
    let before = snapshot(&pool).await;

    for (path, _) in TABLE {
        let input = &inputs[*path];
        let (body, field) = nul_request(&all, input).unwrap_or_else(|| panic!("{input} has no string field"));
        let answer = channels.call(path, &t.stack.admin_token, &body).await;
        assert_eq!(answer.code, Code::InvalidArgument, "{path} with a NUL in {field}: {}", answer.show());
        assert_eq!(
            answer.message,
            format!("invalid argument: {field}: must not contain the NUL character (U+0000)"),
            "{path}"
        );

        // A length prefix that runs past the end is not a message.
        let malformed = channels.call(path, &t.stack.admin_token, &[0x0a, 0xff, 0xff, 0x03]).await;
        assert_eq!(malformed.code, Code::InvalidArgument, "{path} malformed: {}", malformed.show());
        assert!(malformed.message.starts_with("the request is not a valid protobuf message"), "{path}");
    }
    // The violation is machine-readable too (google.rpc.BadRequest).
    let refused = t
        .clients
        .attribution
        .record_sale(accrue_proto::attribution::v1::RecordSaleRequest {
            program_id: program_id.clone(),
            external_id: "sale\0one".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    let violations = refused.get_details_bad_request().expect("BadRequest details").field_violations;
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert_eq!(violations[0].field, "external_id");
    assert_eq!(snapshot(&pool).await, before, "refused requests wrote nothing");
    pool.close().await;
    t.shutdown().await.unwrap();
}
