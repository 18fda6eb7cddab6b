//! Generated protobuf types, tonic clients and servers for the Accrue APIs
//! (`proto/accrue/<context>/v1`), and the encoded descriptor set that every
//! service registers with gRPC reflection.
#![allow(missing_docs, clippy::all, clippy::unwrap_used, clippy::expect_used)]

pub mod codec;
pub mod passthrough;

/// The `accrue.*` protobuf packages.
pub mod accrue {
    /// `accrue.type.v1`: types shared by several contexts (Money, breakdowns,
    /// item failures, partner status, rounding mode, sale event type, earning kind).
    pub mod r#type {
        /// Version 1.
        pub mod v1 {
            tonic::include_proto!("accrue.r#type.v1");
        }
    }
    /// `accrue.hierarchy.v1`.
    pub mod hierarchy {
        /// Version 1.
        pub mod v1 {
            tonic::include_proto!("accrue.hierarchy.v1");
        }
    }
    /// `accrue.attribution.v1`.
    pub mod attribution {
        /// Version 1.
        pub mod v1 {
            tonic::include_proto!("accrue.attribution.v1");
        }
    }
    /// `accrue.commission.v1`.
    pub mod commission {
        /// Version 1.
        pub mod v1 {
            tonic::include_proto!("accrue.commission.v1");
        }
    }
    /// `accrue.ledger.v1`.
    pub mod ledger {
        /// Version 1.
        pub mod v1 {
            tonic::include_proto!("accrue.ledger.v1");
        }
    }
    /// `accrue.payouts.v1`.
    pub mod payouts {
        /// Version 1.
        pub mod v1 {
            tonic::include_proto!("accrue.payouts.v1");
        }
    }
    /// `accrue.events.v1`: the event feed every service hosts over its own outbox.
    pub mod events {
        /// Version 1.
        pub mod v1 {
            tonic::include_proto!("accrue.events.v1");
        }
    }
}

pub use accrue::{attribution, commission, events, hierarchy, ledger, payouts, r#type as types};

/// Encoded `FileDescriptorSet` of every Accrue proto, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/accrue_descriptor.bin"));
