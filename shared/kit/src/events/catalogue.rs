//! Every event type Accrue writes (docs/events.md has the same table):
//! `accrue.<context>.v1.<resource>.<past tense>`, the service that writes it,
//! the subject it names and the message its data carries (what a Get of the
//! resource returns, as it was after the change).

/// One event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventType {
    /// The CloudEvents `type` (`accrue.attribution.v1.sale.recorded`).
    pub name: &'static str,
    /// The fully qualified proto message of its data (`accrue.attribution.v1.Sale`).
    pub data: &'static str,
    /// The subject's shape (`sales/{id}`), for the docs.
    pub subject: &'static str,
}

/// A service as the source of events: its schema and the types it writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source {
    /// The service's schema (`attribution`); also the name of its outbox's
    /// notification channel's suffix and its sequencer lock.
    pub schema: &'static str,
    /// The CloudEvents `source`: `//accrue/<schema>`.
    pub uri: &'static str,
    /// The types this service writes.
    pub types: &'static [EventType],
}

impl Source {
    /// The type called `name`, if this source writes it.
    pub fn event_type(&self, name: &str) -> Option<&'static EventType> {
        self.types.iter().find(|t| t.name == name)
    }
}

macro_rules! event_types {
    ($($(#[$meta:meta])* $constant:ident = $name:literal, $data:literal, $subject:literal;)*) => {
        $(
            $(#[$meta])*
            pub const $constant: EventType = EventType { name: $name, data: $data, subject: $subject };
        )*
    };
}

event_types! {
    /// A partner was created (CreatePartner).
    PARTNER_CREATED = "accrue.hierarchy.v1.partner.created", "accrue.hierarchy.v1.Partner", "partners/{id}";
    /// A partner's status changed (UpdatePartnerStatus).
    PARTNER_STATUS_CHANGED = "accrue.hierarchy.v1.partner.status_changed", "accrue.hierarchy.v1.Partner", "partners/{id}";
    /// A sale was recorded (RecordSale, RecordSales).
    SALE_RECORDED = "accrue.attribution.v1.sale.recorded", "accrue.attribution.v1.Sale", "sales/{id}";
    /// A sale's lines were posted and it became SETTLED (the SettleSale saga's close).
    SALE_SETTLED = "accrue.attribution.v1.sale.settled", "accrue.attribution.v1.Sale", "sales/{id}";
    /// A sale's settlement failed for good (the saga gave up).
    SALE_FAILED = "accrue.attribution.v1.sale.failed", "accrue.attribution.v1.Sale", "sales/{id}";
    /// A refund was applied: clawed back from the sale's lines (the ClawbackSale
    /// saga's apply step), or at once when there is nothing to claw back (RecordRefund).
    REFUND_APPLIED = "accrue.attribution.v1.refund.applied", "accrue.attribution.v1.Refund", "refunds/{id}";
    /// A new agreement version was created (CreateAgreement).
    AGREEMENT_VERSION_CREATED = "accrue.commission.v1.agreement.version_created",
        "accrue.commission.v1.AgreementVersion", "agreements/{id}/versions/{version}";
    /// An entry was posted (a credit by settlement, a debit by a clawback).
    ENTRY_POSTED = "accrue.ledger.v1.entry.posted", "accrue.ledger.v1.Entry", "entries/{id}";
    /// An entry's status changed (cleared, approved, reversed, voided, paid,
    /// disputed, …); the data's `history` holds that one change.
    ENTRY_STATUS_CHANGED = "accrue.ledger.v1.entry.status_changed", "accrue.ledger.v1.Entry", "entries/{id}";
    /// A payout was created (by a payout run or CreatePayout).
    PAYOUT_CREATED = "accrue.payouts.v1.payout.created", "accrue.payouts.v1.Payout", "payouts/{id}";
    /// A payout was approved.
    PAYOUT_APPROVED = "accrue.payouts.v1.payout.approved", "accrue.payouts.v1.Payout", "payouts/{id}";
    /// A payout was rejected.
    PAYOUT_REJECTED = "accrue.payouts.v1.payout.rejected", "accrue.payouts.v1.Payout", "payouts/{id}";
    /// A payout was paid.
    PAYOUT_PAID = "accrue.payouts.v1.payout.paid", "accrue.payouts.v1.Payout", "payouts/{id}";
    /// A payout failed.
    PAYOUT_FAILED = "accrue.payouts.v1.payout.failed", "accrue.payouts.v1.Payout", "payouts/{id}";
}

/// The hierarchy service's feed.
pub static HIERARCHY: Source =
    Source { schema: "hierarchy", uri: "//accrue/hierarchy", types: &[PARTNER_CREATED, PARTNER_STATUS_CHANGED] };
/// The attribution service's feed.
pub static ATTRIBUTION: Source = Source {
    schema: "attribution",
    uri: "//accrue/attribution",
    types: &[SALE_RECORDED, SALE_SETTLED, SALE_FAILED, REFUND_APPLIED],
};
/// The commission service's feed.
pub static COMMISSION: Source =
    Source { schema: "commission", uri: "//accrue/commission", types: &[AGREEMENT_VERSION_CREATED] };
/// The ledger service's feed.
pub static LEDGER: Source =
    Source { schema: "ledger", uri: "//accrue/ledger", types: &[ENTRY_POSTED, ENTRY_STATUS_CHANGED] };
/// The payouts service's feed.
pub static PAYOUTS: Source = Source {
    schema: "payouts",
    uri: "//accrue/payouts",
    types: &[PAYOUT_CREATED, PAYOUT_APPROVED, PAYOUT_REJECTED, PAYOUT_PAID, PAYOUT_FAILED],
};

/// Every source.
pub static SOURCES: [&Source; 5] = [&HIERARCHY, &ATTRIBUTION, &COMMISSION, &LEDGER, &PAYOUTS];

#[cfg(test)]
mod tests {
    use super::*;

    /// Names follow `accrue.<context>.v1.<resource>.<past tense>` with the
    /// source's own context, and every data message exists in the
    /// descriptor set.
    #[test]
    fn types_are_named_after_their_source_and_carry_real_messages() {
        use prost::Message;
        let set = prost_types::FileDescriptorSet::decode(accrue_proto::FILE_DESCRIPTOR_SET).unwrap();
        let messages: std::collections::BTreeSet<String> = set
            .file
            .iter()
            .flat_map(|file| file.message_type.iter().map(move |m| format!("{}.{}", file.package(), m.name())))
            .collect();
        for source in SOURCES {
            assert_eq!(source.uri, format!("//accrue/{}", source.schema));
            for t in source.types {
                let context = if source.schema == "payouts" { "payouts" } else { source.schema };
                assert!(t.name.starts_with(&format!("accrue.{context}.v1.")), "{}", t.name);
                assert_eq!(t.name.split('.').count(), 5, "{}", t.name);
                assert!(messages.contains(t.data), "{} carries unknown {}", t.name, t.data);
                assert_eq!(source.event_type(t.name), Some(t));
            }
        }
    }
}
