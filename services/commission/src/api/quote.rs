//! QuoteSale (what-if settlement, writes nothing) and GetAgreementInForce.
//!
//! Both answer from the same source settlement uses: GetAgreementInForce runs
//! [`AgreementBook::in_force`] over the stored versions, and QuoteSale builds
//! one domain [`Sale`] from the request and the hierarchy's current facts and
//! hands it to [`CommissionApi::settle_sales`], the path ComputeSettlements
//! takes, so a quote is exactly what settlement would post.

use std::collections::{BTreeMap, HashMap};

use accrue_kit::FieldViolations;
use accrue_kit::convert::{from_timestamp, optional_money, optional_uuid, require_money, require_uuid};
use accrue_kit::error::{failed_precondition, internal};
use accrue_money::Money;
use accrue_proto::commission::v1 as pb;
use accrue_proto::hierarchy::v1 as hpb;
use accrue_types::{PartnerId, ProgramId};
use chrono::{DateTime, Utc};
use tonic::{Code, Status};
use uuid::Uuid;

use super::agreements::codec::decode_rules;
use super::settle::codec::{
    self as settle_codec, decode_event_type, decode_facts, decode_history, decode_settings, encode_settlement,
};
use super::{CommissionApi, Draft, DraftAgreement, get_uplines};
use crate::domain::{
    AgreementBook, AgreementRules, PartnerRef, PriorEvent, ProgramSettings, QualificationFacts, Sale, SaleEventType,
    SplitShare, required_facts,
};
use crate::store;
use accrue_types::split::{SplitPoints, check_partners};

/// Most split partners a quoted sale may carry: the seller and its split
/// partners are looked up in one hierarchy GetUplines batch (at most 1000).
pub const MAX_QUOTE_SPLITS: usize = 999;

/// The sale id every quoted settlement carries.
pub const QUOTE_SALE_ID: &str = "quote";

/// The agreement version a partner's sale at a time is settled under
/// (DESIGN §4 "one version in force per scope"; seed 003 versioned agreements).
///
/// Request: `program_id` (UUID, required); `partner_id` (UUID, optional; empty
/// asks for the program default alone); `time` (optional; unset means now).
///
/// The answer is the rule settlement applies ([`AgreementBook::in_force`]): the
/// partner's own agreement's version with the greatest `effective_from ≤ time`
/// (equal `effective_from`: the higher version number), else the program
/// default's version in force at `time`. It is returned whole: scope, version
/// number, `effective_from`, rules and `create_time`. The partner is not looked
/// up in the hierarchy: an unknown partner has no own agreement and gets the
/// default, as its sale would.
///
/// Errors: INVALID_ARGUMENT with field violations (`program_id`, `partner_id`,
/// `time`) for malformed input; NOT_FOUND (reason `AGREEMENT_NOT_FOUND`) when
/// neither the partner's agreement nor the program default has a version in
/// force at `time` (including a program with no agreements at all); UNAVAILABLE
/// when the database is unreachable.
pub(super) async fn get_agreement_in_force(
    api: &CommissionApi,
    request: pb::GetAgreementInForceRequest,
) -> Result<pb::AgreementVersion, Status> {
    let mut violations = FieldViolations::new();
    let program_id = require_uuid("program_id", &request.program_id, &mut violations);
    let partner_id = optional_uuid("partner_id", &request.partner_id, &mut violations);
    let time = from_timestamp("time", request.time.as_ref(), &mut violations);
    violations.into_result()?;
    let Some(program_id) = program_id else {
        return Err(internal("validated GetAgreementInForce request lost program_id"));
    };
    let at = time.unwrap_or_else(Utc::now);
    let stored = store::scope_versions(&api.pool, program_id, partner_id).await?;
    let book = AgreementBook::new(stored.iter().map(|stored| stored.version.clone()));
    // Without a partner the book holds the default alone, so any seller id
    // falls through to it.
    let Some(chosen) = book.in_force(partner_id.unwrap_or(PartnerId::from_uuid(Uuid::nil())), at) else {
        let scope = match partner_id {
            Some(partner) => format!("partner {partner} (nor the program default)"),
            None => "the program default".to_string(),
        };
        return Err(accrue_kit::error::with_reason(
            Code::NotFound,
            "AGREEMENT_NOT_FOUND",
            format!("no agreement version of {scope} is in force in program {program_id} at {}", at.to_rfc3339()),
        ));
    };
    let stored = stored
        .iter()
        .find(|stored| stored.version.id == chosen.id)
        .ok_or_else(|| internal("the version in force is not among the loaded versions"))?;
    Ok(super::agreements::encode_version(stored))
}

/// The full settlement (every line, every breakdown) of a hypothetical sale by
/// a real partner, optionally under unsaved draft rules (DESIGN §4; seed 003
/// models, seed 000 splits, seed 004 overrides, seed 002 margins). Writes
/// nothing, ever.
///
/// Request: `program_id` (UUID); `sale.seller_partner_id` (UUID of a partner of
/// the program); `sale.event_type` (required); `sale.amount` (required, ≥ 0,
/// at most the currency's minor-unit decimals); `sale.occurred_at` (unset:
/// now; selects the agreement version and starts clearance);
/// `sale.splits[i]` (partner UUID of the program, not the seller, no
/// duplicates, `basis_points` 1..9999, Σ ≤ 10000, at most
/// [`MAX_QUOTE_SPLITS`]); `sale.seller_prior_volume` (optional, ≥ 0, in the
/// sale's currency; unset = 0); `sale.customer_history[i]` (`event_type`,
/// `seller_partner_id` UUID and `occurred_at` required, `sale_id` optional,
/// `service_code` optional — an earlier scheme-managed sale is not an event
/// under an agreement); `sale.ancestor_facts[i]` (optional; `partner_id` one
/// of the seller's ancestors, at most once; `facts` validated like
/// ComputeSettlements' — qualified overrides, issue 16 item 3: an unstated
/// personal volume is 0, an unstated ACTIVE direct sub-partner count is the
/// hierarchy's at `occurred_at`);
/// `draft_rules` (optional; validated exactly like CreateAgreement's `rules`,
/// violations named under `draft_rules.`).
///
/// The seller's ancestors (nearest first) and every partner's status and role
/// come from hierarchy GetUplines, as do the program's rounding mode, override
/// depth cap and compression. The sale settles as `sale_id` "quote" through the
/// same path as ComputeSettlements; with `draft_rules` the seller's sale uses
/// them in place of the version in force (the settlement's
/// `agreement_version_id` is then empty) and `draft_applied` is true.
///
/// Errors: INVALID_ARGUMENT with every field violation at once (paths such as
/// `sale.amount.amount`, `sale.splits[1].basis_points`, `draft_rules.rate`);
/// NOT_FOUND (reason `PROGRAM_NOT_FOUND` / `PARTNER_NOT_FOUND`) for an unknown
/// program, or a seller or split partner that is not in the program;
/// FAILED_PRECONDITION (reason `ROLE_MAY_NOT_TRANSACT`) when the seller's role
/// is one of the program's `non_transacting_roles` (seed 002: ADMIN);
/// UNAVAILABLE when the hierarchy service or the database cannot answer. A
/// sale that cannot be settled (e.g. CURRENCY_MISMATCH against the agreement)
/// is not an error: the settlement carries its `failure`, as in
/// ComputeSettlements.
pub(super) async fn quote_sale(
    api: &CommissionApi,
    request: pb::QuoteSaleRequest,
) -> Result<pb::QuoteSaleResponse, Status> {
    let quote = decode_quote(&request)?;
    let mut partners = vec![(quote.seller, "sale.seller_partner_id".to_string())];
    partners
        .extend(quote.splits.iter().enumerate().map(|(i, partner)| (*partner, format!("sale.splits[{i}].partner_id"))));
    let uplines = get_uplines(api, quote.program_id, &partners).await?;
    let program = uplines.program.ok_or_else(|| internal("hierarchy GetUplines returned no program"))?;
    let settings = program_settings(&program)?;
    let by_id: HashMap<&str, &hpb::Upline> = uplines
        .uplines
        .iter()
        .filter_map(|upline| upline.partner.as_ref().map(|partner| (partner.id.as_str(), upline)))
        .collect();
    let upline_of = |id: PartnerId| {
        by_id.get(id.to_string().as_str()).copied().ok_or_else(|| internal(format!("GetUplines left out {id}")))
    };
    let seller = upline_of(quote.seller)?;
    let seller_ref = partner_ref(seller.partner.as_ref())?;
    if let Some(role) = seller_ref.role.as_ref().filter(|role| program.non_transacting_roles.contains(role)) {
        return Err(failed_precondition(
            "ROLE_MAY_NOT_TRANSACT",
            format!(
                "partner {} has role {}, which may not transact in program {} (non-transacting roles: {})",
                quote.seller,
                role,
                quote.program_id,
                program.non_transacting_roles.join(", ")
            ),
        ));
    }
    let mut splits = Vec::with_capacity(quote.splits.len());
    for (partner, basis_points) in quote.splits.iter().zip(quote.points.shares()) {
        splits.push(SplitShare {
            partner: partner_ref(upline_of(*partner)?.partner.as_ref())?,
            basis_points: *basis_points,
        });
    }
    let ancestors =
        seller.ancestors.iter().map(|ancestor| partner_ref(Some(ancestor))).collect::<Result<Vec<_>, _>>()?;
    let ancestor_facts = stated_facts(&quote.ancestor_facts, &ancestors)?;
    let mut sale = Sale {
        sale_id: QUOTE_SALE_ID.to_string(),
        event_type: quote.event_type,
        amount: quote.amount,
        product_code: quote.product_code,
        service_code: quote.service_code,
        occurred_at: quote.occurred_at,
        seller: seller_ref,
        splits,
        ancestors,
        is_first_payment: quote.is_first_payment,
        seller_prior_volume: quote.prior_volume,
        customer_history: quote.customer_history,
        ancestor_facts,
    };
    complete_facts(api, quote.program_id, &mut sale).await?;
    let draft = quote.draft.map(|rules| Draft {
        agreements: vec![DraftAgreement { scope: Some(quote.seller), effective_from: None, rules }],
        ..Draft::default()
    });
    let settlement = api
        .settle_sales(quote.program_id, &settings, vec![Ok(sale)], draft.as_ref())
        .await?
        .pop()
        .ok_or_else(|| internal("settle_sales returned no settlement for the quoted sale"))?;
    let mut settlement = encode_settlement(settlement, true);
    if draft.is_some() {
        clear_draft_version_id(&mut settlement);
    }
    Ok(pb::QuoteSaleResponse { settlement: Some(settlement), draft_applied: draft.is_some() })
}

/// The stated qualification facts by ancestor (issue 16 item 3):
/// INVALID_ARGUMENT at `sale.ancestor_facts[i].partner_id` for a partner that
/// is not one of the seller's ancestors.
fn stated_facts(
    stated: &[(PartnerId, QualificationFacts)],
    ancestors: &[PartnerRef],
) -> Result<BTreeMap<PartnerId, QualificationFacts>, Status> {
    let mut violations = FieldViolations::new();
    for (i, (partner, _)) in stated.iter().enumerate() {
        if !ancestors.iter().any(|ancestor| ancestor.id == *partner) {
            violations.add(format!("sale.ancestor_facts[{i}].partner_id"), "is not an ancestor of the seller");
        }
    }
    violations.into_result()?;
    Ok(stated.iter().copied().collect())
}

/// Completes the facts a quoted sale's qualified override plans need, as
/// settlement would gather them (issue 16 item 3): a personal volume the
/// caller did not state is 0 over the plan's window (commission cannot read
/// attribution's sales; state it for a quote that matches settlement), a
/// stated one covers the plan's window; an ACTIVE direct sub-partner count
/// not stated is asked from hierarchy CountActiveDirectPartners at
/// `occurred_at`. Programs without qualified plans skip all of it.
async fn complete_facts(api: &CommissionApi, program_id: ProgramId, sale: &mut Sale) -> Result<(), Status> {
    let ancestors: Vec<PartnerId> = sale.ancestors.iter().map(|ancestor| ancestor.id).collect();
    let plans = store::load_plans(&api.pool, program_id, &ancestors).await?;
    let mut counts_needed = Vec::new();
    for needed in required_facts(&plans, sale) {
        let facts = sale.ancestor_facts.entry(needed.partner_id).or_default();
        if let Some(required) = needed.qualification.personal_volume {
            if facts.personal_volume.is_none() {
                facts.personal_volume = Some(Money::zero(required.minimum.currency));
            }
            if facts.volume_window_days == 0 {
                facts.volume_window_days = required.window_days;
            }
        }
        if needed.qualification.min_active_direct_partners > 0 && facts.active_direct_partners.is_none() {
            counts_needed.push(needed.partner_id);
        }
    }
    if counts_needed.is_empty() {
        return Ok(());
    }
    let request = hpb::CountActiveDirectPartnersRequest {
        program_id: program_id.to_string(),
        queries: counts_needed
            .iter()
            .map(|id| hpb::ActiveDirectPartnersQuery {
                partner_id: id.to_string(),
                as_of: Some(accrue_kit::convert::timestamp(sale.occurred_at)),
            })
            .collect(),
    };
    let counts = api.hierarchy.clone().count_active_direct_partners(request).await.map_err(|status| {
        tracing::warn!(code = ?status.code(), message = status.message(), "hierarchy CountActiveDirectPartners failed");
        Status::unavailable(format!(
            "hierarchy service could not answer CountActiveDirectPartners: {}",
            status.message()
        ))
    })?;
    let counts = counts.into_inner().counts;
    if counts.len() != counts_needed.len() {
        return Err(internal("hierarchy CountActiveDirectPartners answered another number of counts"));
    }
    for (id, count) in counts_needed.into_iter().zip(counts) {
        let count = u32::try_from(count).map_err(|_| internal("hierarchy returned a negative count"))?;
        sale.ancestor_facts.entry(id).or_default().active_direct_partners = Some(count);
    }
    Ok(())
}

/// The domain gives an unsaved draft the nil version id; on the wire a draft's
/// version id is empty (QuoteSaleResponse contract), in the settlement and in
/// every breakdown.
fn clear_draft_version_id(settlement: &mut pb::Settlement) {
    let nil = Uuid::nil().to_string();
    let clear = |id: &mut String| {
        if *id == nil {
            id.clear();
        }
    };
    clear(&mut settlement.agreement_version_id);
    let breakdowns = settlement
        .base_breakdown
        .iter_mut()
        .chain(settlement.lines.iter_mut().filter_map(|line| line.breakdown.as_mut()));
    for breakdown in breakdowns {
        clear(&mut breakdown.agreement_version_id);
    }
}

/// A validated QuoteSale request, in domain terms.
struct Quote {
    program_id: ProgramId,
    seller: PartnerId,
    event_type: SaleEventType,
    amount: Money,
    product_code: String,
    service_code: String,
    occurred_at: DateTime<Utc>,
    /// Split partners in split order; `points` holds their shares.
    splits: Vec<PartnerId>,
    points: SplitPoints,
    is_first_payment: bool,
    prior_volume: Option<Money>,
    customer_history: Vec<PriorEvent>,
    /// Stated qualification facts of ancestors, in request order.
    ancestor_facts: Vec<(PartnerId, QualificationFacts)>,
    draft: Option<AgreementRules>,
}

/// Validates the whole request, collecting every violation before failing.
fn decode_quote(request: &pb::QuoteSaleRequest) -> Result<Quote, Status> {
    let mut violations = FieldViolations::new();
    let program_id = require_uuid("program_id", &request.program_id, &mut violations);
    let draft =
        request.draft_rules.as_ref().and_then(|rules| decode_rules_under("draft_rules", rules, &mut violations));
    let Some(sale) = request.sale.as_ref() else {
        violations.add("sale", "is required");
        return Err(violations.into_status());
    };
    let seller = require_uuid("sale.seller_partner_id", &sale.seller_partner_id, &mut violations);
    let event_type = decode_event_type("sale.event_type", sale.event_type, &mut violations);
    let amount = require_money("sale.amount", sale.amount.as_ref(), &mut violations);
    if let Some(amount) = amount
        && amount.amount.is_sign_negative()
        && !amount.amount.is_zero()
    {
        violations.add("sale.amount.amount", "must not be negative");
    }
    let occurred_at = from_timestamp("sale.occurred_at", sale.occurred_at.as_ref(), &mut violations);
    let splits = decode_splits(&sale.splits, seller, &mut violations);
    let prior_volume = optional_money("sale.seller_prior_volume", sale.seller_prior_volume.as_ref(), &mut violations);
    if let Some(prior) = prior_volume {
        if prior.amount.is_sign_negative() && !prior.amount.is_zero() {
            violations.add("sale.seller_prior_volume.amount", "must not be negative");
        }
        if let Some(amount) = amount
            && amount.currency != prior.currency
        {
            violations.add(
                "sale.seller_prior_volume.currency_code",
                format!("is {} but the sale is in {}", prior.currency, amount.currency),
            );
        }
    }
    let history = decode_history("sale.customer_history", &sale.customer_history, &mut violations);
    let mut ancestor_facts = Vec::with_capacity(sale.ancestor_facts.len());
    for (i, stated) in sale.ancestor_facts.iter().enumerate() {
        let field = format!("sale.ancestor_facts[{i}]");
        let partner = require_uuid(&format!("{field}.partner_id"), &stated.partner_id, &mut violations);
        let facts = match stated.facts.as_ref() {
            Some(facts) => decode_facts(&format!("{field}.facts"), facts, &mut violations),
            None => {
                violations.add(format!("{field}.facts"), "is required");
                None
            }
        };
        if let (Some(partner), Some(facts)) = (partner, facts) {
            if ancestor_facts.iter().any(|(seen, _)| *seen == partner) {
                violations.add(format!("{field}.partner_id"), "is stated twice");
            }
            ancestor_facts.push((partner, facts));
        }
    }
    violations.into_result()?;
    let (Some(program_id), Some(seller), Some(event_type), Some(amount), Some((splits, points)), Some(history)) =
        (program_id, seller, event_type, amount, splits, history)
    else {
        return Err(internal("validated QuoteSale request lost a field"));
    };
    Ok(Quote {
        program_id,
        seller,
        event_type,
        amount,
        product_code: sale.product_code.clone(),
        service_code: sale.service_code.clone(),
        occurred_at: occurred_at.unwrap_or_else(Utc::now),
        splits,
        points,
        is_first_payment: sale.is_first_payment,
        prior_volume,
        customer_history: history,
        ancestor_facts,
        draft,
    })
}

/// Link split rules (seed 000, [`accrue_types::split`]) on the hypothetical
/// link, with the seller as its owner; `None` when any split is invalid.
fn decode_splits(
    splits: &[pb::QuoteSplit],
    seller: Option<PartnerId>,
    violations: &mut FieldViolations,
) -> Option<(Vec<PartnerId>, SplitPoints)> {
    if splits.len() > MAX_QUOTE_SPLITS {
        violations.add("sale.splits", format!("at most {MAX_QUOTE_SPLITS} splits, got {}", splits.len()));
    }
    let partners: Vec<Option<PartnerId>> = splits
        .iter()
        .enumerate()
        .map(|(i, split)| require_uuid(&format!("sale.splits[{i}].partner_id"), &split.partner_id, violations))
        .collect();
    for error in check_partners(seller.as_ref(), &partners) {
        violations.add(format!("sale.splits[{}].partner_id", error.index()), error.to_string());
    }
    let points = match SplitPoints::parse(splits.iter().map(|split| i64::from(split.basis_points))) {
        Ok(points) => Some(points),
        Err(errors) => {
            for error in errors {
                violations.add(error.field("sale.splits"), error.to_string());
            }
            None
        }
    };
    let partners: Option<Vec<PartnerId>> = partners.into_iter().collect();
    partners.zip(points)
}

/// Validates rules exactly as CreateAgreement does, naming violations under
/// `prefix` instead of `rules` (QuoteSale's `draft_rules`, a
/// ComputeSettlements draft's `draft.agreements[i].rules`).
pub(super) fn decode_rules_under(
    prefix: &str,
    rules: &pb::AgreementRules,
    violations: &mut FieldViolations,
) -> Option<AgreementRules> {
    // decode_rules refuses to decode while any violation is recorded, so the
    // draft gets its own collector.
    let mut own = FieldViolations::new();
    let decoded = decode_rules(Some(rules), &mut own);
    if !own.is_empty() {
        violations.absorb(own, |field| match field.strip_prefix("rules") {
            Some(rest) => format!("{prefix}{rest}"),
            None => format!("{prefix}.{field}"),
        });
        return None;
    }
    decoded
}

/// The program's current settings (a quote is a sale made now: the newest
/// settings version), decoded by the rules a ComputeSettlements
/// `ProgramContext` follows.
fn program_settings(program: &hpb::Program) -> Result<ProgramSettings, Status> {
    let mut violations = FieldViolations::new();
    let decoded = decode_settings(
        program.rounding_mode,
        program.override_depth_cap,
        program.compression_enabled,
        program.settings_history.last().map_or(0, |version| version.version),
        &mut violations,
    );
    if let Err(status) = violations.into_result() {
        return Err(internal(format!("hierarchy returned a program the calculation rejects: {}", status.message())));
    }
    decoded.ok_or_else(|| internal("decoded program lost its settings"))
}

fn partner_ref(partner: Option<&hpb::PartnerRef>) -> Result<PartnerRef, Status> {
    let partner = partner.ok_or_else(|| internal("hierarchy GetUplines returned an upline without its partner"))?;
    let id = partner
        .id
        .parse::<PartnerId>()
        .map_err(|_| internal(format!("hierarchy GetUplines returned partner id {:?}", partner.id)))?;
    Ok(settle_codec::partner_ref(id, partner.status, &partner.role))
}
