//! The one RPC × role table (DESIGN §6 "Identity"; issue 10 item 2), enforced
//! by [`super::AuthLayer`] for every service; docs/authorization.md is the
//! same table in prose. An RPC missing from [`TABLE`] is refused to everyone
//! (a test over the descriptor set keeps the table complete).
//!
//! Partner tokens reach only the [`Rule::PartnerRead`] RPCs, whose handlers
//! confine every answer to the token's partner (issue 10 item 3; the
//! [`Identity::may_see`], [`Identity::partner_filter`] and
//! [`Identity::partner_ids`] checks): a partner never sees another partner's
//! amounts or customers, and a parent sees its downline's partner records,
//! never a sub-partner's sales (seed 004 "Auth").

use super::{Identity, Role};

/// Who may call an RPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Reads of a whole program: admin, finance, viewer, and any Accrue
    /// service.
    Read,
    /// Reads a partner may also make, of its own data only: everyone
    /// [`Rule::Read`] admits, and partner tokens, which the handler scopes to
    /// their partner.
    PartnerRead,
    /// Configuration and recording: admin.
    Admin,
    /// Money movement (transitions, clearance, payout runs): admin, finance,
    /// and the services named (their `service:<schema>` subject).
    Finance(&'static [&'static str]),
    /// Calls only the saga and the other services make: admin and the
    /// services named.
    Service(&'static [&'static str]),
}

const ATTRIBUTION: &[&str] = &["service:attribution"];
const PAYOUTS: &[&str] = &["service:payouts"];

/// Every RPC of every Accrue service with its rule, by gRPC path.
pub const TABLE: &[(&str, Rule)] = &[
    ("/accrue.hierarchy.v1.HierarchyService/CreateProgram", Rule::Admin),
    ("/accrue.hierarchy.v1.HierarchyService/GetProgram", Rule::PartnerRead),
    ("/accrue.hierarchy.v1.HierarchyService/UpdateProgram", Rule::Admin),
    ("/accrue.hierarchy.v1.HierarchyService/CreatePartner", Rule::Admin),
    ("/accrue.hierarchy.v1.HierarchyService/GetPartner", Rule::PartnerRead),
    ("/accrue.hierarchy.v1.HierarchyService/ListPartners", Rule::Read),
    ("/accrue.hierarchy.v1.HierarchyService/UpdatePartnerStatus", Rule::Admin),
    ("/accrue.hierarchy.v1.HierarchyService/SetParent", Rule::Admin),
    ("/accrue.hierarchy.v1.HierarchyService/GetUplines", Rule::Read),
    ("/accrue.hierarchy.v1.HierarchyService/ListDownline", Rule::PartnerRead),
    ("/accrue.hierarchy.v1.HierarchyService/CountActiveDirectPartners", Rule::Read),
    ("/accrue.attribution.v1.AttributionService/CreateLink", Rule::Admin),
    ("/accrue.attribution.v1.AttributionService/GetLink", Rule::PartnerRead),
    ("/accrue.attribution.v1.AttributionService/ListLinks", Rule::PartnerRead),
    ("/accrue.attribution.v1.AttributionService/TrackLead", Rule::Admin),
    ("/accrue.attribution.v1.AttributionService/RecordSale", Rule::Admin),
    ("/accrue.attribution.v1.AttributionService/RecordSales", Rule::Admin),
    ("/accrue.attribution.v1.AttributionService/GetSale", Rule::Read),
    ("/accrue.attribution.v1.AttributionService/ListSales", Rule::Read),
    ("/accrue.attribution.v1.AttributionService/GetSaga", Rule::Read),
    ("/accrue.attribution.v1.AttributionService/ListSagas", Rule::Read),
    ("/accrue.attribution.v1.AttributionService/RetrySaga", Rule::Admin),
    ("/accrue.attribution.v1.AttributionService/RecordRefund", Rule::Admin),
    ("/accrue.attribution.v1.AttributionService/GetRefund", Rule::Read),
    ("/accrue.attribution.v1.AttributionService/ListRefunds", Rule::Read),
    ("/accrue.attribution.v1.AttributionService/TrackClick", Rule::Admin),
    ("/accrue.attribution.v1.AttributionService/TrackClicks", Rule::Admin),
    ("/accrue.attribution.v1.AttributionService/ArchiveLink", Rule::Admin),
    ("/accrue.attribution.v1.AttributionService/UnarchiveLink", Rule::Admin),
    ("/accrue.attribution.v1.AttributionService/GetAttributionSettings", Rule::Read),
    ("/accrue.attribution.v1.AttributionService/UpdateAttributionSettings", Rule::Admin),
    // A partner's own stats; a link's when it owns or shares in it (its
    // commission then only its own entries).
    ("/accrue.attribution.v1.AttributionService/GetLinkStats", Rule::PartnerRead),
    ("/accrue.attribution.v1.AttributionService/GetPartnerStats", Rule::PartnerRead),
    // A backtest writes nothing but reads every partner's amounts and costs a
    // scan of the period: the program's operators (admin, finance), never a
    // partner or a viewer (issue 16 item 2).
    ("/accrue.attribution.v1.AttributionService/SimulateProgram", Rule::Finance(&[])),
    ("/accrue.commission.v1.CommissionService/CreateAgreement", Rule::Admin),
    ("/accrue.commission.v1.CommissionService/ListAgreementVersions", Rule::Read),
    ("/accrue.commission.v1.CommissionService/GetAgreementInForce", Rule::Read),
    ("/accrue.commission.v1.CommissionService/SetOverridePlan", Rule::Admin),
    ("/accrue.commission.v1.CommissionService/ComputeSettlements", Rule::Service(ATTRIBUTION)),
    ("/accrue.commission.v1.CommissionService/QuoteSale", Rule::Read),
    ("/accrue.commission.v1.CommissionService/CreateScheme", Rule::Admin),
    ("/accrue.commission.v1.CommissionService/GetScheme", Rule::Read),
    ("/accrue.commission.v1.CommissionService/SetSchemeRates", Rule::Admin),
    ("/accrue.commission.v1.CommissionService/AssignScheme", Rule::Admin),
    ("/accrue.commission.v1.CommissionService/GetSchemeChain", Rule::Read),
    ("/accrue.ledger.v1.LedgerService/PostEntries", Rule::Service(ATTRIBUTION)),
    ("/accrue.ledger.v1.LedgerService/GetEntry", Rule::PartnerRead),
    ("/accrue.ledger.v1.LedgerService/ListEntries", Rule::PartnerRead),
    // Whole sales' lines (every partner's amounts): SimulateProgram's actuals.
    ("/accrue.ledger.v1.LedgerService/ListSaleLines", Rule::Read),
    ("/accrue.ledger.v1.LedgerService/TransitionEntries", Rule::Finance(ATTRIBUTION)),
    ("/accrue.ledger.v1.LedgerService/GetEarningsSummary", Rule::PartnerRead),
    ("/accrue.ledger.v1.LedgerService/ClearMatured", Rule::Finance(&[])),
    ("/accrue.ledger.v1.LedgerService/ReserveForPayout", Rule::Service(PAYOUTS)),
    ("/accrue.ledger.v1.LedgerService/ReleaseReservation", Rule::Service(PAYOUTS)),
    ("/accrue.ledger.v1.LedgerService/SettleReservation", Rule::Service(PAYOUTS)),
    ("/accrue.ledger.v1.LedgerService/ReverseSale", Rule::Service(ATTRIBUTION)),
    ("/accrue.ledger.v1.LedgerService/VoidReversal", Rule::Service(ATTRIBUTION)),
    ("/accrue.ledger.v1.LedgerService/GetBalances", Rule::PartnerRead),
    // A partner's own overrides by source (seed 004); the hierarchy reads
    // it for ListDownline as a service.
    ("/accrue.ledger.v1.LedgerService/GetOverrideBreakdown", Rule::PartnerRead),
    ("/accrue.payouts.v1.PayoutService/CreatePayoutRun", Rule::Finance(&[])),
    ("/accrue.payouts.v1.PayoutService/GetPayout", Rule::PartnerRead),
    ("/accrue.payouts.v1.PayoutService/ListPayouts", Rule::PartnerRead),
    ("/accrue.payouts.v1.PayoutService/ApprovePayout", Rule::Finance(&[])),
    ("/accrue.payouts.v1.PayoutService/BulkApprovePayouts", Rule::Finance(&[])),
    ("/accrue.payouts.v1.PayoutService/RejectPayout", Rule::Finance(&[])),
    ("/accrue.payouts.v1.PayoutService/MarkPayoutProcessing", Rule::Finance(&[])),
    ("/accrue.payouts.v1.PayoutService/MarkPayoutPaid", Rule::Finance(&[])),
    ("/accrue.payouts.v1.PayoutService/MarkPayoutFailed", Rule::Finance(&[])),
    ("/accrue.payouts.v1.PayoutService/ListAuditEvents", Rule::Read),
    ("/accrue.payouts.v1.PayoutService/GetPayoutStats", Rule::Read),
    ("/accrue.payouts.v1.PayoutService/ExportPayouts", Rule::Finance(&[])),
    ("/accrue.payouts.v1.PayoutService/GetPartnerPayoutSummary", Rule::PartnerRead),
    ("/accrue.payouts.v1.PayoutService/SetPartnerPayoutSettings", Rule::Finance(&[])),
    ("/accrue.payouts.v1.PayoutService/GetPartnerPayoutSettings", Rule::PartnerRead),
    ("/accrue.payouts.v1.PayoutService/UpdatePayout", Rule::Finance(&[])),
    ("/accrue.payouts.v1.PayoutService/CreatePayout", Rule::Finance(&[])),
    ("/accrue.payouts.v1.PayoutService/DeletePayout", Rule::Finance(&[])),
    // Every service hosts the event feed over its own outbox (issue 16 item
    // 1); a partner token sees only the events of its own partner.
    ("/accrue.events.v1.EventService/ListEvents", Rule::PartnerRead),
    ("/accrue.events.v1.EventService/WatchEvents", Rule::PartnerRead),
    // Webhook subscriptions carry a signing secret and send a program's
    // whole feed to a URL: program admins only, never a
    // partner, finance or a viewer.
    ("/accrue.events.v1.WebhookService/CreateWebhookSubscription", Rule::Admin),
    ("/accrue.events.v1.WebhookService/GetWebhookSubscription", Rule::Admin),
    ("/accrue.events.v1.WebhookService/ListWebhookSubscriptions", Rule::Admin),
    ("/accrue.events.v1.WebhookService/DeleteWebhookSubscription", Rule::Admin),
    ("/accrue.events.v1.WebhookService/ListWebhookDeliveries", Rule::Admin),
    ("/accrue.events.v1.WebhookService/RedeliverWebhook", Rule::Admin),
];

/// Health and reflection answer without a token (probes, grpcurl's
/// discovery).
pub fn is_exempt(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/") || path.starts_with("/grpc.reflection.")
}

/// The rule of the RPC at `path`, if it is an Accrue RPC.
pub fn rule(path: &str) -> Option<Rule> {
    TABLE.iter().find(|(p, _)| *p == path).map(|(_, rule)| *rule)
}

/// True when `identity` may call an RPC under `rule`.
pub fn allows(rule: Rule, identity: &Identity) -> bool {
    let service_named = |names: &[&str]| identity.has(Role::Service) && names.contains(&identity.subject.as_str());
    match rule {
        Rule::Read => identity.reads_whole_programs(),
        Rule::PartnerRead => identity.reads_whole_programs() || identity.has(Role::Partner),
        Rule::Admin => identity.has(Role::Admin),
        Rule::Finance(services) => identity.has(Role::Admin) || identity.has(Role::Finance) || service_named(services),
        Rule::Service(services) => identity.has(Role::Admin) || service_named(services),
    }
}

/// Ok when `identity` may call the RPC at `path`; else the PERMISSION_DENIED
/// message (names the RPC and the roles, nothing about any resource).
pub fn authorize(path: &str, identity: &Identity) -> Result<(), String> {
    match rule(path) {
        Some(rule) if allows(rule, identity) => Ok(()),
        Some(_) => Err(format!(
            "{path} is not allowed for roles [{}]",
            identity.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ")
        )),
        None => Err(format!("{path} is not an Accrue RPC")),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use prost::Message;
    use prost_types::FileDescriptorSet;

    use super::*;
    use crate::auth::Programs;

    fn identity(subject: &str, roles: &[Role]) -> Identity {
        Identity {
            subject: subject.into(),
            programs: Programs::All,
            roles: roles.iter().copied().collect(),
            partner_id: None,
        }
    }

    /// A new RPC cannot be forgotten: every method of every Accrue service in
    /// the descriptor set has exactly one row, and every row is a real method.
    #[test]
    fn the_table_covers_every_rpc_of_the_descriptor_set() {
        let set = FileDescriptorSet::decode(accrue_proto::FILE_DESCRIPTOR_SET).unwrap();
        let mut paths = BTreeSet::new();
        for file in &set.file {
            for service in &file.service {
                for method in &service.method {
                    paths.insert(format!("/{}.{}/{}", file.package(), service.name(), method.name()));
                }
            }
        }
        let rows: BTreeSet<String> = TABLE.iter().map(|(p, _)| p.to_string()).collect();
        assert_eq!(rows.len(), TABLE.len(), "a path listed twice");
        assert_eq!(rows, paths);
    }

    #[test]
    fn roles_map_to_rules() {
        let admin = identity("u", &[Role::Admin]);
        let finance = identity("u", &[Role::Finance]);
        let viewer = identity("u", &[Role::Viewer]);
        let saga = identity("service:attribution", &[Role::Service]);
        let payouts = identity("service:payouts", &[Role::Service]);
        let partner = identity("p", &[Role::Partner]);
        let post = "/accrue.ledger.v1.LedgerService/PostEntries";
        let run = "/accrue.payouts.v1.PayoutService/CreatePayoutRun";
        let read = "/accrue.ledger.v1.LedgerService/GetBalances";
        assert!(authorize(post, &admin).is_ok() && authorize(post, &saga).is_ok());
        assert!(authorize(post, &payouts).is_err() && authorize(post, &finance).is_err());
        assert!(authorize(run, &finance).is_ok() && authorize(run, &viewer).is_err() && authorize(run, &saga).is_err());
        assert!(authorize(read, &viewer).is_ok() && authorize(read, &payouts).is_ok());
        assert!(authorize(read, &partner).is_ok(), "a partner reads its own balances");
        assert!(authorize("/accrue.attribution.v1.AttributionService/GetSale", &partner).is_err(), "never raw sales");
        assert!(authorize("/accrue.hierarchy.v1.HierarchyService/ListPartners", &partner).is_err());
        assert!(authorize("/accrue.ledger.v1.LedgerService/Nope", &admin).is_err());
        assert!(is_exempt("/grpc.health.v1.Health/Check"));
        assert!(is_exempt("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"));
    }
}
