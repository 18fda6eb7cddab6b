//! The codec every generated Accrue server and client uses: prost's, plus
//! two refusals a caller's bytes must get before any handler runs (issue 11
//! item 2, "refuse invalid text at decode time, in one shared place").
//!
//! - **Text Postgres cannot store.** Protobuf strings are UTF-8 and may hold
//!   U+0000; Postgres `text` may not, so a NUL that reached a handler used to
//!   fail at the INSERT as INTERNAL. The codec walks the message's wire bytes
//!   against its descriptor and answers INVALID_ARGUMENT with a field
//!   violation naming the field (`sales[2].customer_external_id`).
//! - **Bytes that do not decode.** tonic-prost answers INTERNAL for a
//!   malformed message (following grpc's status-code guide); a caller's
//!   malformed request is its mistake, so it is INVALID_ARGUMENT here.
//!
//! A first pass reads each length-delimited field once and allocates
//! nothing; only when it finds a NUL does the walk that names the field run,
//! so a clean message costs one pass over its bytes.

use std::collections::{HashMap, HashSet};
use std::marker::PhantomData;
use std::sync::LazyLock;

use prost::bytes::Buf;
use prost::{Message, Name};
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FileDescriptorSet};
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic_prost::ProstEncoder;
use tonic_types::{ErrorDetails, StatusExt};

/// [`tonic_prost::ProstCodec`] with the decoder's checks (module docs).
#[derive(Debug, Clone, Copy)]
pub struct CheckedCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for CheckedCodec<T, U> {
    fn default() -> Self {
        CheckedCodec(PhantomData)
    }
}

impl<T, U> Codec for CheckedCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Name + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = CheckedDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        CheckedDecoder { check_text: is_request(&U::full_name()), message: PhantomData }
    }
}

/// Decodes `U` after [`text_violation`] found nothing; INVALID_ARGUMENT
/// for a NUL in a string field or bytes that do not decode.
///
/// Only a request is walked for NUL: a client decoding a response reads
/// what another Accrue service wrote, and every string it serves came in
/// through a request this decoder checked (the walk of commission's
/// settlements was ~3 % of attribution's CPU while settling, issue 15).
#[derive(Debug, Clone, Copy)]
pub struct CheckedDecoder<U> {
    check_text: bool,
    message: PhantomData<U>,
}

/// True when `full_name` is the input of some Accrue RPC (what a server
/// decodes), from the compiled descriptor set; a message that is both an
/// input and an output counts as an input. Without a readable set every
/// message counts as one: the check is skipped only where it is known to be
/// redundant.
fn is_request(full_name: &str) -> bool {
    REQUESTS.as_ref().is_none_or(|requests| requests.contains(full_name))
}

/// The full names (`accrue.ledger.v1.PostEntriesRequest`) of every method's
/// input type; `None` if the compiled descriptor set does not decode.
static REQUESTS: LazyLock<Option<HashSet<String>>> = LazyLock::new(|| {
    let set = FileDescriptorSet::decode(crate::FILE_DESCRIPTOR_SET).ok()?;
    Some(
        set.file
            .iter()
            .flat_map(|file| &file.service)
            .flat_map(|service| &service.method)
            .map(|method| method.input_type().trim_start_matches('.').to_string())
            .collect(),
    )
});

impl<U: Message + Name + Default> Decoder for CheckedDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        if !self.check_text {
            return U::decode(buf).map(Some).map_err(malformed);
        }
        let violation = if buf.chunk().len() == buf.remaining() {
            text_violation(&U::full_name(), buf.chunk())
        } else {
            // Not contiguous (tonic buffers a whole message, so this is a
            // fallback): check a copy.
            let bytes = buf.copy_to_bytes(buf.remaining());
            if let Some(field) = text_violation(&U::full_name(), &bytes) {
                return Err(nul_in(&field));
            }
            return U::decode(bytes).map(Some).map_err(malformed);
        };
        if let Some(field) = violation {
            return Err(nul_in(&field));
        }
        U::decode(buf).map(Some).map_err(malformed)
    }
}

const NUL_DESCRIPTION: &str = "must not contain the NUL character (U+0000)";

fn nul_in(field: &str) -> Status {
    let mut details = ErrorDetails::new();
    details.add_bad_request_violation(field, NUL_DESCRIPTION);
    Status::with_error_details(
        tonic::Code::InvalidArgument,
        format!("invalid argument: {field}: {NUL_DESCRIPTION}"),
        details,
    )
}

fn malformed(error: prost::DecodeError) -> Status {
    Status::invalid_argument(format!("the request is not a valid protobuf message: {error}"))
}

/// A field as the walk needs it.
#[derive(Debug)]
struct Field {
    name: String,
    repeated: bool,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    /// A `string`: checked for NUL.
    Text,
    /// A message (maps are messages of key and value): walked into, by its
    /// full name without the leading dot.
    Message(String),
    /// Anything else: skipped.
    Other,
}

/// Every Accrue message's fields by number, keyed by full name
/// (`accrue.ledger.v1.GetEntryRequest`).
static MESSAGES: LazyLock<HashMap<String, HashMap<u32, Field>>> = LazyLock::new(|| {
    let mut messages = HashMap::new();
    // The set is compiled into this crate by build.rs; it decodes.
    if let Ok(set) = FileDescriptorSet::decode(crate::FILE_DESCRIPTOR_SET) {
        for file in &set.file {
            for message in &file.message_type {
                index(file.package(), message, &mut messages);
            }
        }
    }
    messages
});

fn index(scope: &str, message: &DescriptorProto, out: &mut HashMap<String, HashMap<u32, Field>>) {
    let full_name = format!("{scope}.{}", message.name());
    let fields = message
        .field
        .iter()
        .filter_map(|field| {
            let number = u32::try_from(field.number()).ok()?;
            let kind = match field.r#type() {
                Type::String => Kind::Text,
                Type::Message => Kind::Message(field.type_name().trim_start_matches('.').to_string()),
                _ => Kind::Other,
            };
            Some((number, Field { name: field.name().to_string(), repeated: field.label() == Label::Repeated, kind }))
        })
        .collect();
    for nested in &message.nested_type {
        index(&full_name, nested, out);
    }
    out.insert(full_name, fields);
}

/// The path of the first string field of message `full_name` in `bytes`
/// that holds a NUL (`sales[2].customer_external_id`), or None. Bytes that
/// are not well-formed stop the walk with None: decoding them fails next.
pub fn text_violation(full_name: &str, bytes: &[u8]) -> Option<String> {
    // Nearly every message is clean: a pass that allocates nothing tells
    // whether a NUL sits in any string field, and only then is the walk
    // that names the field run. (The naming walk on every message was about
    // a tenth of the services' CPU while settling, issue 15.)
    let message = *FAST.ids.get(full_name)?;
    if suspect(message, bytes, 0) { walk(full_name, bytes, "", 0) } else { None }
}

/// A field as the allocation-free pass needs it.
#[derive(Debug, Clone, Copy)]
enum FastKind {
    /// Not a string or a known message (or no field of that number).
    Skip,
    /// A `string`.
    Text,
    /// A message, by its index in [`Fast::fields`].
    Message(usize),
}

/// [`MESSAGES`] with names resolved to indices and each message's fields
/// indexed by number, for [`suspect`].
struct Fast {
    ids: HashMap<String, usize>,
    /// Per message, its fields by number (`Skip` where it has none).
    fields: Vec<Vec<FastKind>>,
}

/// Field numbers above this are not indexed by [`Fast`]; a message with
/// one is always walked in full (Accrue's numbers are far below it).
const MAX_FAST_NUMBER: u32 = 4096;

static FAST: LazyLock<Fast> = LazyLock::new(|| {
    let mut names: Vec<&String> = MESSAGES.keys().collect();
    names.sort();
    let ids: HashMap<String, usize> = names.iter().enumerate().map(|(i, name)| ((*name).clone(), i)).collect();
    let fields = names
        .iter()
        .map(|name| {
            let Some(message) = MESSAGES.get(*name) else { return Vec::new() };
            let top = message.keys().copied().max().unwrap_or(0);
            if top > MAX_FAST_NUMBER {
                return Vec::new();
            }
            let mut kinds = vec![FastKind::Skip; top as usize + 1];
            for (number, field) in message {
                kinds[*number as usize] = match &field.kind {
                    Kind::Text => FastKind::Text,
                    Kind::Message(inner) => ids.get(inner).map_or(FastKind::Skip, |&id| FastKind::Message(id)),
                    Kind::Other => FastKind::Skip,
                };
            }
            kinds
        })
        .collect();
    Fast { ids, fields }
});

/// True when a string field of message `message` (or of one nested in it)
/// in `bytes` may hold a NUL: [`walk`] then names it. Stops where `walk`
/// stops (malformed bytes, too deep), so it never misses what `walk` finds;
/// a message with numbers beyond [`MAX_FAST_NUMBER`] is always suspect.
fn suspect(message: usize, mut bytes: &[u8], depth: usize) -> bool {
    if depth > MAX_DEPTH {
        return false;
    }
    let Some(fields) = FAST.fields.get(message) else { return false };
    if fields.is_empty() {
        // Unindexed (a field number beyond MAX_FAST_NUMBER): the walk decides.
        return !bytes.is_empty();
    }
    while !bytes.is_empty() {
        let Ok(key) = prost::encoding::decode_varint(&mut bytes) else { return false };
        match key & 0b111 {
            0 => {
                if prost::encoding::decode_varint(&mut bytes).is_err() {
                    return false;
                }
            }
            1 => match bytes.get(8..) {
                Some(rest) => bytes = rest,
                None => return false,
            },
            5 => match bytes.get(4..) {
                Some(rest) => bytes = rest,
                None => return false,
            },
            2 => {
                let Ok(len) = prost::encoding::decode_varint(&mut bytes) else { return false };
                let Ok(len) = usize::try_from(len) else { return false };
                let Some(value) = bytes.get(..len) else { return false };
                bytes = &bytes[len..];
                let kind = usize::try_from(key >> 3).ok().and_then(|n| fields.get(n)).copied();
                match kind {
                    Some(FastKind::Text) if value.contains(&0) => return true,
                    Some(FastKind::Message(inner)) if suspect(inner, value, depth + 1) => return true,
                    _ => {}
                }
            }
            _ => return false,
        }
    }
    false
}

/// Deeper than any Accrue message nests; a deeper claim is malformed.
const MAX_DEPTH: usize = 32;

fn walk(full_name: &str, mut bytes: &[u8], path: &str, depth: usize) -> Option<String> {
    if depth > MAX_DEPTH {
        return None;
    }
    let fields = MESSAGES.get(full_name)?;
    let mut seen: HashMap<u32, usize> = HashMap::new();
    while !bytes.is_empty() {
        let key = prost::encoding::decode_varint(&mut bytes).ok()?;
        let number = u32::try_from(key >> 3).ok()?;
        match key & 0b111 {
            0 => {
                prost::encoding::decode_varint(&mut bytes).ok()?;
            }
            1 => bytes = bytes.get(8..)?,
            5 => bytes = bytes.get(4..)?,
            2 => {
                let len = usize::try_from(prost::encoding::decode_varint(&mut bytes).ok()?).ok()?;
                let value = bytes.get(..len)?;
                bytes = &bytes[len..];
                let Some(field) = fields.get(&number) else { continue };
                let index = seen.entry(number).or_default();
                let here = || {
                    let name = if path.is_empty() { field.name.clone() } else { format!("{path}.{}", field.name) };
                    if field.repeated { format!("{name}[{index}]") } else { name }
                };
                match &field.kind {
                    Kind::Text if value.contains(&0) => return Some(here()),
                    Kind::Message(inner) => {
                        if let Some(found) = walk(inner, value, &here(), depth + 1) {
                            return Some(found);
                        }
                    }
                    _ => {}
                }
                *index += 1;
            }
            _ => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribution::v1 as apb;
    use crate::types::v1 as types;

    fn sale(customer: &str) -> apb::RecordSaleRequest {
        apb::RecordSaleRequest {
            program_id: "p".into(),
            external_id: "s-1".into(),
            customer_external_id: customer.into(),
            amount: Some(types::Money { currency_code: "GBP".into(), amount: "1.00".into() }),
            ..Default::default()
        }
    }

    #[test]
    fn only_rpc_inputs_are_checked_for_nul() {
        assert!(is_request(&apb::RecordSaleRequest::full_name()));
        assert!(is_request(&crate::ledger::v1::PostEntriesRequest::full_name()));
        assert!(!is_request(&crate::commission::v1::ComputeSettlementsResponse::full_name()));
        assert!(!is_request(&apb::Sale::full_name()), "a resource a Get returns");
        // What a server decodes gets the walk; what a client decodes does not.
        let decoder = |codec: &mut CheckedCodec<apb::Sale, apb::RecordSaleRequest>| codec.decoder().check_text;
        assert!(decoder(&mut CheckedCodec::default()));
        let mut client = CheckedCodec::<apb::RecordSaleRequest, apb::Sale>::default();
        assert!(!client.decoder().check_text);
    }

    #[test]
    fn a_nul_anywhere_is_found_with_its_path() {
        let name = apb::RecordSaleRequest::full_name();
        assert_eq!(text_violation(&name, &sale("cust-1").encode_to_vec()), None);
        assert_eq!(text_violation(&name, &sale("cu\0st").encode_to_vec()).as_deref(), Some("customer_external_id"));
        let mut nested = sale("c");
        nested.amount = Some(types::Money { currency_code: "G\0B".into(), amount: "1".into() });
        assert_eq!(text_violation(&name, &nested.encode_to_vec()).as_deref(), Some("amount.currency_code"));
        // Repeated messages are indexed.
        let batch = apb::RecordSalesRequest { sales: vec![sale("a"), sale("b"), sale("\0")] };
        assert_eq!(
            text_violation(&apb::RecordSalesRequest::full_name(), &batch.encode_to_vec()).as_deref(),
            Some("sales[2].customer_external_id")
        );
    }

    #[test]
    fn a_nul_deep_in_a_map_value_is_found_and_a_clean_batch_is_not_flagged() {
        use crate::ledger::v1 as lpb;
        let line = |value: &str| lpb::EntryInput {
            breakdown: Some(types::CommissionBreakdown {
                inputs: [("rate".to_string(), value.to_string())].into_iter().collect(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let posting = |lines| lpb::SalePosting { lines, ..Default::default() };
        let name = lpb::PostEntriesRequest::full_name();
        let clean =
            lpb::PostEntriesRequest { postings: vec![posting(vec![line("0.1"); 50]); 20], ..Default::default() };
        assert_eq!(text_violation(&name, &clean.encode_to_vec()), None);
        let mut dirty = clean.clone();
        dirty.postings[3].lines[7] = line("0\0.1");
        assert_eq!(
            text_violation(&name, &dirty.encode_to_vec()).as_deref(),
            Some("postings[3].lines[7].breakdown.inputs[0].value")
        );
    }

    #[test]
    fn malformed_bytes_stop_the_walk_and_fail_to_decode() {
        let name = apb::RecordSaleRequest::full_name();
        let garbage = [0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x00];
        assert_eq!(text_violation(&name, &garbage), None);
        assert!(apb::RecordSaleRequest::decode(&garbage[..]).is_err());
        assert_eq!(text_violation(&name, &[]), None);
    }
}
