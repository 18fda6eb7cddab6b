//! Typed ids: one newtype per kind of thing Accrue names with a UUID, so
//! that a partner id passed where a program id is wanted does not compile.
//!
//! Every id is a `#[repr(transparent)]` wrapper of a [`Uuid`] and keeps its
//! forms: the wire and the logs carry the hyphenated text ([`Display`],
//! [`FromStr`] accepting what [`Uuid::parse_str`] accepts), serde (feature
//! `serde`) the same string, Postgres (feature `sqlx`) a `uuid` column and
//! `uuid[]` for a `Vec` of ids.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

/// A string that is not an id of the kind asked for: empty, or not a UUID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a {kind} id (a UUID)")]
pub struct ParseIdError {
    /// The kind of id that was expected ("partner").
    pub kind: &'static str,
    /// The text that did not parse.
    pub text: String,
}

/// Defines each id type. An entry ending in `v7` gets `new_v7`, for the ids
/// a service mints from the clock; the others are only derived or parsed.
macro_rules! ids {
    ($($(#[$meta:meta])* $name:ident: $kind:literal $(, $mint:ident)?;)*) => {
        $(
            $(#[$meta])*
            #[repr(transparent)]
            #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
            #[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize), serde(transparent))]
            #[cfg_attr(feature = "sqlx", derive(sqlx::Type), sqlx(transparent))]
            pub struct $name(Uuid);

            impl $name {
                /// What this id names, as errors say it.
                pub const KIND: &'static str = $kind;

                /// Wraps a UUID already known to name one of these.
                pub const fn from_uuid(id: Uuid) -> Self {
                    Self(id)
                }

                /// A fixed id (fixtures, tests).
                pub const fn from_u128(value: u128) -> Self {
                    Self(Uuid::from_u128(value))
                }

                /// The UUID.
                pub const fn as_uuid(&self) -> &Uuid {
                    &self.0
                }

                /// The UUID, by value.
                pub const fn into_uuid(self) -> Uuid {
                    self.0
                }
            }

            $(ids!(@$mint $name);)?

            impl From<$name> for Uuid {
                fn from(id: $name) -> Uuid {
                    id.0
                }
            }

            impl fmt::Display for $name {
                fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    fmt::Display::fmt(&self.0.hyphenated(), f)
                }
            }

            impl FromStr for $name {
                type Err = ParseIdError;

                fn from_str(text: &str) -> Result<Self, Self::Err> {
                    Uuid::parse_str(text)
                        .map(Self)
                        .map_err(|_| ParseIdError { kind: $kind, text: text.to_string() })
                }
            }
        )*
    };
    (@v7 $name:ident) => {
        impl $name {
            /// A new id, UUID v7 (time-ordered, so rows insert in key order).
            pub fn new_v7() -> Self {
                Self(Uuid::now_v7())
            }
        }
    };
}

ids! {
    /// A program (tenant): minted by hierarchy on CreateProgram, UUID v7.
    ProgramId: "program", v7;
    /// A partner of a program: minted by hierarchy on CreatePartner, UUID v7.
    PartnerId: "partner", v7;
    /// A tracking link: minted by attribution on CreateLink, UUID v7.
    LinkId: "link", v7;
    /// A sale: minted by attribution on RecordSale(s), UUID v7.
    SaleId: "sale", v7;
    /// A refund of a sale: minted by attribution on RecordRefund, UUID v7.
    /// The ledger's reversals and clawback debits refer to it.
    RefundId: "refund", v7;
    /// A saga (SettleSale or ClawbackSale): minted by attribution with the
    /// sale or refund it drives, UUID v7; run by `accrue-saga`.
    SagaId: "saga", v7;
    /// A ledger entry (credit or debit): minted by the ledger on
    /// PostEntries and ReverseSale, UUID v7.
    EntryId: "entry", v7;
    /// A payout: minted by payouts, UUID v5 of its partner's id in the
    /// namespace of its run's id, so a resumed run asks the ledger for the
    /// same reservation (`accrue_payouts::domain::run::payout_id`).
    PayoutId: "payout";
    /// A payout run: minted by payouts on CreatePayoutRun, UUID v7.
    PayoutRunId: "payout run", v7;
    /// An agreement (a partner's or the program default's series of
    /// versions): minted by commission on CreateAgreement, UUID v7; a
    /// QuoteSale draft with no agreement uses a v5 of the seller's id.
    AgreementId: "agreement", v7;
    /// One version of an agreement's rules: minted by commission on
    /// CreateAgreement, UUID v7; a QuoteSale draft's is the nil UUID.
    AgreementVersionId: "agreement version", v7;
    /// A commission scheme (role-rate table): minted by commission on
    /// CreateScheme, UUID v7.
    SchemeId: "scheme", v7;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_the_hyphenated_uuid_and_parses_back() {
        let uuid = Uuid::now_v7();
        let id = PartnerId::from_uuid(uuid);
        assert_eq!(id.to_string(), uuid.hyphenated().to_string());
        assert_eq!(id.to_string().parse::<PartnerId>(), Ok(id));
        assert_eq!(uuid.simple().to_string().parse::<PartnerId>(), Ok(id));
        assert_eq!((id.into_uuid(), *id.as_uuid(), Uuid::from(id)), (uuid, uuid, uuid));
    }

    #[test]
    fn minted_ids_are_v7() {
        assert_eq!(SaleId::new_v7().as_uuid().get_version_num(), 7);
        assert_ne!(SagaId::new_v7(), SagaId::new_v7());
    }

    #[test]
    fn a_bad_string_names_the_kind() {
        let error = "nope".parse::<PayoutRunId>().unwrap_err();
        assert_eq!(error, ParseIdError { kind: "payout run", text: "nope".into() });
        assert_eq!(error.to_string(), "\"nope\" is not a payout run id (a UUID)");
        assert_eq!("".parse::<ProgramId>().unwrap_err().kind, ProgramId::KIND);
    }

    #[cfg(feature = "serde")]
    #[test]
    fn serde_is_the_uuid_string() {
        let id = EntryId::from_u128(7);
        let json = serde_json::to_value(id).unwrap();
        assert_eq!(json, serde_json::json!("00000000-0000-0000-0000-000000000007"));
        assert_eq!(serde_json::from_value::<EntryId>(json).unwrap(), id);
        assert!(serde_json::from_value::<EntryId>(serde_json::json!("x")).is_err());
    }
}
