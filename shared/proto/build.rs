//! Compiles `proto/` with protox (no system protoc) and writes the descriptor set
//! that reflection serves.

use std::path::PathBuf;

use prost::Message;

const FILES: &[&str] = &[
    "accrue/type/v1/money.proto",
    "accrue/type/v1/earning.proto",
    "accrue/type/v1/failure.proto",
    "accrue/type/v1/partner.proto",
    "accrue/type/v1/rounding.proto",
    "accrue/type/v1/sale.proto",
    "accrue/hierarchy/v1/hierarchy.proto",
    "accrue/attribution/v1/attribution.proto",
    "accrue/commission/v1/commission.proto",
    "accrue/ledger/v1/ledger.proto",
    "accrue/payouts/v1/payouts.proto",
    "accrue/events/v1/events.proto",
    "accrue/events/v1/webhooks.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    println!("cargo:rerun-if-changed={}", root.display());
    let fds = protox::compile(FILES, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("accrue_descriptor.bin"), fds.encode_to_vec())?;
    // Every message names itself (prost::Name), so the codec can find its
    // descriptor and refuse text Postgres cannot store before any handler
    // sees the request (src/codec.rs).
    let mut config = prost_build::Config::new();
    config.enable_type_names();
    // Maps (a breakdown's `inputs`) as BTreeMap: no per-key SipHash on every
    // encode and decode of a settlement's lines (a measurable share of
    // settling, issue 15), and a deterministic order on the wire.
    config.btree_map(["."]);
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .codec_path("crate::codec::CheckedCodec")
        .compile_fds_with_config(fds, config)?;
    Ok(())
}
