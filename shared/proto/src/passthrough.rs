//! Wire-compatible views of the messages that carry a commission breakdown
//! from commission through attribution to the ledger, with the breakdown
//! kept as the bytes of its encoded `accrue.type.v1.CommissionBreakdown`
//! (issue 15).
//!
//! Attribution forwards each settlement line's breakdown from
//! ComputeSettlements to PostEntries without reading it. Decoded, a
//! breakdown is a map of 15–20 strings; decoding it, copying it into the
//! posting, encoding it again and dropping all three was over a third of
//! attribution's CPU while settling. A length-delimited field has the same
//! encoding whether it is declared `bytes` or a message, so each view here
//! decodes exactly what its generated message encodes and encodes exactly
//! what that message decodes: the same field numbers and types, the
//! breakdown `optional bytes` so that an empty breakdown stays present. The
//! tests below hold every view to its generated message. Never registered
//! as a service's types: only a client sends or reads them
//! ([`crate::codec::CheckedCodec`] over a raw `tonic::client::Grpc`).

use bytes::Bytes;

use crate::accrue::commission::v1 as commission;
use crate::accrue::r#type::v1 as types;

/// The method whose answer [`ComputeSettlementsResponse`] reads: service, method.
pub const COMPUTE_SETTLEMENTS: (&str, &str) = ("accrue.commission.v1.CommissionService", "ComputeSettlements");

/// The method [`PostEntriesRequest`] calls: service, method.
pub const POST_ENTRIES: (&str, &str) = ("accrue.ledger.v1.LedgerService", "PostEntries");

/// `accrue.commission.v1.SettlementLine`, the breakdown encoded.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct SettlementLine {
    #[prost(string, tag = "1")]
    pub partner_id: String,
    #[prost(enumeration = "types::EarningKind", tag = "2")]
    pub kind: i32,
    #[prost(message, optional, tag = "3")]
    pub amount: Option<types::Money>,
    #[prost(int32, tag = "4")]
    pub level: i32,
    #[prost(string, tag = "5")]
    pub source_partner_id: String,
    #[prost(message, optional, tag = "6")]
    pub clears_at: Option<::prost_types::Timestamp>,
    /// An encoded `accrue.type.v1.CommissionBreakdown`.
    #[prost(bytes = "bytes", optional, tag = "7")]
    pub breakdown: Option<Bytes>,
}

/// `accrue.commission.v1.Settlement`, its lines' breakdowns encoded. Field
/// 6 (`base_breakdown`) is not read: the saga asks for none
/// (`omit_base_breakdown`), and a view skips a field it does not declare.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Settlement {
    #[prost(string, tag = "1")]
    pub sale_id: String,
    #[prost(message, optional, tag = "2")]
    pub base_commission: Option<types::Money>,
    #[prost(string, tag = "3")]
    pub agreement_version_id: String,
    #[prost(message, repeated, tag = "4")]
    pub lines: Vec<SettlementLine>,
    #[prost(message, optional, tag = "5")]
    pub failure: Option<types::ItemFailure>,
    #[prost(message, repeated, tag = "7")]
    pub required_facts: Vec<commission::RequiredQualificationFacts>,
}

/// `accrue.commission.v1.ComputeSettlementsResponse`, its lines' breakdowns encoded.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ComputeSettlementsResponse {
    #[prost(message, repeated, tag = "1")]
    pub settlements: Vec<Settlement>,
}

impl ::prost::Name for ComputeSettlementsResponse {
    const NAME: &'static str = "ComputeSettlementsResponse";
    const PACKAGE: &'static str = "accrue.commission.v1";
}

/// `accrue.ledger.v1.EntryInput`, the breakdown encoded.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct EntryInput {
    #[prost(string, tag = "1")]
    pub partner_id: String,
    #[prost(enumeration = "types::EarningKind", tag = "2")]
    pub kind: i32,
    #[prost(message, optional, tag = "3")]
    pub amount: Option<types::Money>,
    #[prost(int32, tag = "4")]
    pub level: i32,
    #[prost(string, tag = "5")]
    pub source_partner_id: String,
    #[prost(message, optional, tag = "6")]
    pub occurred_at: Option<::prost_types::Timestamp>,
    #[prost(message, optional, tag = "7")]
    pub clears_at: Option<::prost_types::Timestamp>,
    /// An encoded `accrue.type.v1.CommissionBreakdown`.
    #[prost(bytes = "bytes", optional, tag = "8")]
    pub breakdown: Option<Bytes>,
}

/// `accrue.ledger.v1.SalePosting`, its lines' breakdowns encoded.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct SalePosting {
    #[prost(string, tag = "1")]
    pub idempotency_key: String,
    #[prost(string, tag = "2")]
    pub sale_id: String,
    #[prost(message, repeated, tag = "3")]
    pub lines: Vec<EntryInput>,
}

/// `accrue.ledger.v1.PostEntriesRequest`, its lines' breakdowns encoded.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct PostEntriesRequest {
    #[prost(string, tag = "1")]
    pub program_id: String,
    #[prost(message, repeated, tag = "2")]
    pub postings: Vec<SalePosting>,
}

impl ::prost::Name for PostEntriesRequest {
    const NAME: &'static str = "PostEntriesRequest";
    const PACKAGE: &'static str = "accrue.ledger.v1";
}

/// `inputs` as the encoded map entries of a `CommissionBreakdown`: appended
/// to an encoded breakdown, they set those inputs on it (a later entry of a
/// map wins over an earlier one with the same key, protobuf's merge).
pub fn breakdown_inputs(inputs: std::collections::BTreeMap<String, String>) -> Vec<u8> {
    ::prost::Message::encode_to_vec(&types::CommissionBreakdown { inputs, ..Default::default() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accrue::ledger::v1 as ledger;
    use prost::Message;

    /// `message` re-read as `T`.
    fn transcode<T: Message + Default>(message: &impl Message) -> Result<T, prost::DecodeError> {
        T::decode(message.encode_to_vec().as_slice())
    }

    fn breakdown() -> types::CommissionBreakdown {
        types::CommissionBreakdown {
            model: "TIERED".into(),
            formula: "C: 119.68 × 0.08 = 9.5744 → 9.57".into(),
            inputs: [("rate", "0.08"), ("tier", "[0, 5000)")].into_iter().map(|(k, v)| (k.into(), v.into())).collect(),
            rule: "tier[0]".into(),
            agreement_version_id: "01a25165-bb29-768b-8def-0b1cd16eadd6".into(),
            rounding: "HALF_AWAY_FROM_ZERO".into(),
            note: String::new(),
        }
    }

    fn money(amount: &str) -> Option<types::Money> {
        Some(types::Money { currency_code: "GBP".into(), amount: amount.into() })
    }

    fn timestamp(seconds: i64) -> Option<::prost_types::Timestamp> {
        Some(::prost_types::Timestamp { seconds, nanos: 7 })
    }

    /// A breakdown with content, an empty one (present) and none.
    fn breakdowns() -> [Option<types::CommissionBreakdown>; 3] {
        [Some(breakdown()), Some(types::CommissionBreakdown::default()), None]
    }

    #[test]
    fn a_compute_response_reads_the_same_through_its_view() {
        let response = commission::ComputeSettlementsResponse {
            settlements: vec![commission::Settlement {
                sale_id: "s-1".into(),
                base_commission: money("9.57"),
                agreement_version_id: "v".into(),
                lines: breakdowns()
                    .into_iter()
                    .enumerate()
                    .map(|(level, breakdown)| commission::SettlementLine {
                        partner_id: format!("p-{level}"),
                        kind: types::EarningKind::Override as i32,
                        amount: money("0.96"),
                        level: level as i32,
                        source_partner_id: "seller".into(),
                        clears_at: timestamp(1_700_000_000),
                        breakdown,
                    })
                    .collect(),
                failure: Some(types::ItemFailure { code: "c".into(), reason: "r".into(), message: "m".into() }),
                base_breakdown: None,
                required_facts: vec![commission::RequiredQualificationFacts {
                    partner_id: "p-1".into(),
                    ..Default::default()
                }],
            }],
        };
        let view: ComputeSettlementsResponse = transcode(&response).unwrap();
        let line = &view.settlements[0].lines[0];
        assert_eq!(line.breakdown.as_deref(), Some(breakdown().encode_to_vec().as_slice()));
        assert_eq!(view.settlements[0].lines[1].breakdown.as_deref(), Some(&[][..]), "empty, and present");
        assert_eq!(view.settlements[0].lines[2].breakdown, None);
        let back: commission::ComputeSettlementsResponse = transcode(&view).unwrap();
        assert_eq!(back, response);
    }

    #[test]
    fn a_posting_request_reads_the_same_through_its_view() {
        let request = ledger::PostEntriesRequest {
            program_id: "prog".into(),
            postings: vec![ledger::SalePosting {
                idempotency_key: "saga:x:run:1:post".into(),
                sale_id: "sale".into(),
                lines: breakdowns()
                    .into_iter()
                    .enumerate()
                    .map(|(level, breakdown)| ledger::EntryInput {
                        partner_id: format!("p-{level}"),
                        kind: types::EarningKind::Direct as i32,
                        amount: money("9.57"),
                        level: level as i32,
                        source_partner_id: "seller".into(),
                        occurred_at: timestamp(1_600_000_000),
                        clears_at: timestamp(1_700_000_000),
                        breakdown,
                    })
                    .collect(),
            }],
        };
        let view: PostEntriesRequest = transcode(&request).unwrap();
        assert_eq!(view.encode_to_vec(), request.encode_to_vec(), "the same bytes");
        let back: ledger::PostEntriesRequest = transcode(&view).unwrap();
        assert_eq!(back, request);
    }

    /// Each method is in the compiled API with the message its view stands for.
    #[test]
    fn the_methods_are_the_apis_own() {
        let set = prost_types::FileDescriptorSet::decode(crate::FILE_DESCRIPTOR_SET).unwrap();
        let method = |(service, method): (&str, &str)| {
            set.file
                .iter()
                .flat_map(|file| file.service.iter().map(move |s| (file.package(), s)))
                .filter(|(package, s)| format!("{package}.{}", s.name()) == service)
                .flat_map(|(_, s)| s.method.iter())
                .find(|m| m.name() == method)
                .map(|m| (m.input_type().to_string(), m.output_type().to_string()))
        };
        let (_, output) = method(COMPUTE_SETTLEMENTS).unwrap();
        assert_eq!(output, format!(".{}", <ComputeSettlementsResponse as prost::Name>::full_name()));
        let (input, _) = method(POST_ENTRIES).unwrap();
        assert_eq!(input, format!(".{}", <PostEntriesRequest as prost::Name>::full_name()));
    }

    #[test]
    fn appended_inputs_set_those_inputs_of_an_encoded_breakdown() {
        let mut encoded = breakdown().encode_to_vec();
        let extra = [("rate", "0.10"), ("attribution_model", "FIRST_TOUCH")];
        encoded.extend(breakdown_inputs(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()));
        let mut expected = breakdown();
        for (key, value) in extra {
            expected.inputs.insert(key.into(), value.into());
        }
        assert_eq!(types::CommissionBreakdown::decode(encoded.as_slice()).unwrap(), expected);
    }
}
