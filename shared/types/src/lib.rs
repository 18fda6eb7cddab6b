//! Domain values more than one Accrue service relies on, so that each rule and
//! each shared concept is written once: the typed ids ([`id`]: [`ProgramId`],
//! [`PartnerId`], [`SaleId`], [`SagaId`], …), the link split rule ([`split`], seed
//! 000), the program defaults ([`program`], DESIGN §4), a partner's status
//! ([`partner`]), a sale's event type ([`sale`]) and a settlement line with its
//! breakdown ([`settlement`], from commission to the ledger row). Pure and
//! dependency-light on purpose: every service crate may depend on it, it
//! depends on no service and on no protobuf (only accrue-money for amounts);
//! storage and serialization derives are opt-in features (`sqlx`, `serde`).

pub mod id;
pub mod partner;
pub mod program;
pub mod sale;
pub mod settlement;
pub mod split;

pub use id::{
    AgreementId, AgreementVersionId, EntryId, LinkId, ParseIdError, PartnerId, PayoutId, PayoutRunId, ProgramId,
    RefundId, SagaId, SaleId, SchemeId,
};
