//! The settlement of one sale (DESIGN §4): agreement version in force, trigger,
//! raw commission by model, per-customer limits and setup fee, rounding and
//! caps, link splits by largest remainder (seed 000) and upline overrides
//! (seed 004). Pure and deterministic: the same inputs always give the same
//! settlement.

use std::collections::{BTreeMap, HashMap};

use accrue_money::{Currency, Money, RoundingMode, allocate_largest_remainder};
use chrono::{DateTime, Months, TimeDelta, Utc};
use rust_decimal::Decimal;
use uuid::Uuid;

use super::rules::{
    AgreementRules, ConditionFacts, Model, OverrideBasis, OverrideMode, OverridePlan, SaleEventType, TierPays,
};
use super::scheme::{self, SchemeBook};

/// Basis points in a whole (a link's splits share 10000).
pub const BASIS_POINTS_WHOLE: u32 = 10_000;

/// A partner's status at settlement time (accrue.hierarchy.v1.PartnerStatus).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PartnerStatus {
    /// Not set (treated as not ACTIVE, not TERMINATED).
    Unspecified,
    /// Earns and is paid.
    Active,
    /// Still accrues; forfeits override levels unless compression is on.
    Suspended,
    /// Earns nothing new; a split share falls back to the link owner.
    Terminated,
}

impl PartnerStatus {
    /// From the hierarchy enum number (1 ACTIVE, 2 SUSPENDED, 3 TERMINATED;
    /// anything else is `Unspecified`).
    pub fn from_number(number: i32) -> Self {
        match number {
            1 => PartnerStatus::Active,
            2 => PartnerStatus::Suspended,
            3 => PartnerStatus::Terminated,
            _ => PartnerStatus::Unspecified,
        }
    }

    /// The status name ("SUSPENDED").
    pub fn as_str(self) -> &'static str {
        match self {
            PartnerStatus::Unspecified => "UNSPECIFIED",
            PartnerStatus::Active => "ACTIVE",
            PartnerStatus::Suspended => "SUSPENDED",
            PartnerStatus::Terminated => "TERMINATED",
        }
    }
}

/// A partner, its status and its role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartnerRef {
    /// Partner id.
    pub id: Uuid,
    /// Status at settlement time.
    pub status: PartnerStatus,
    /// Role on the program's role ladder (`None` when the partner has none):
    /// scheme margins pay by role (seed 002); agreements and overrides ignore it.
    pub role: Option<String>,
}

/// A split partner of the sale's link with its share of C.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitShare {
    /// The split partner.
    pub partner: PartnerRef,
    /// Share of C in basis points (1..=9999; the splits of a link sum to ≤ 10000).
    pub basis_points: u32,
}

/// An earlier event of the same customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriorEvent {
    /// Its sale id.
    pub sale_id: String,
    /// Its event type.
    pub event_type: SaleEventType,
    /// Its selling partner.
    pub seller_partner_id: Uuid,
    /// When it occurred.
    pub occurred_at: DateTime<Utc>,
    /// Its service code (empty when it had none). When the program's schemes
    /// manage it, the earlier sale settled under no agreement and is left out
    /// of the events under an agreement (DESIGN §4 "setup_fee", issue 8).
    pub service_code: String,
}

/// One sale with every fact the rules need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sale {
    /// Sale id (echoed).
    pub sale_id: String,
    /// Event type.
    pub event_type: SaleEventType,
    /// Gross amount (≥ 0); its currency is the sale currency.
    pub amount: Money,
    /// Product code (HYBRID conditions).
    pub product_code: String,
    /// Service code: a sale whose service code any scheme of the program sets
    /// a rate for settles by scheme margins instead of agreements (seed 002).
    pub service_code: String,
    /// When it occurred: selects the agreement version and starts clearance.
    pub occurred_at: DateTime<Utc>,
    /// The selling partner (the link owner).
    pub seller: PartnerRef,
    /// The link's split partners, in split order.
    pub splits: Vec<SplitShare>,
    /// The seller's ancestors, nearest first.
    pub ancestors: Vec<PartnerRef>,
    /// Whether this is the customer's first PAYMENT/RENEWAL in the program.
    pub is_first_payment: bool,
    /// Σ gross of the seller's earlier sales (`None` = 0).
    pub seller_prior_volume: Option<Money>,
    /// The customer's earlier events, oldest first.
    pub customer_history: Vec<PriorEvent>,
}

/// Program settings the calculation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgramSettings {
    /// Rounding of every computed amount.
    pub rounding: RoundingMode,
    /// Highest override level paid.
    pub override_depth_cap: u32,
    /// Count only ACTIVE ancestors as levels (dynamic compression).
    pub compression_enabled: bool,
    /// The hierarchy's settings version these are (0: not named).
    pub settings_version: u32,
}

impl ProgramSettings {
    /// Writes the settings a sale was settled under into a breakdown
    /// (issue 8 item 3: a settings change applies to later sales only, so
    /// every line says which settings it used).
    fn record(&self, breakdown: &mut Breakdown) {
        if self.settings_version > 0 {
            breakdown.input("program.settings_version", self.settings_version);
        }
        breakdown.input("program.rounding_mode", self.rounding.as_str());
        breakdown.input("program.override_depth_cap", self.override_depth_cap);
        breakdown.input("program.compression_enabled", self.compression_enabled);
    }
}

/// An immutable agreement version as the calculation sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgreementVersion {
    /// Version id.
    pub id: Uuid,
    /// The agreement (scope series) it belongs to.
    pub agreement_id: Uuid,
    /// Partner scope; `None` for the program default.
    pub partner_id: Option<Uuid>,
    /// 1, 2, 3… within the agreement.
    pub version: i32,
    /// When it takes force.
    pub effective_from: DateTime<Utc>,
    /// Its rules.
    pub rules: AgreementRules,
}

/// Every agreement version of one program, indexed by scope.
#[derive(Debug, Clone, Default)]
pub struct AgreementBook {
    default: Vec<AgreementVersion>,
    partners: HashMap<Uuid, Vec<AgreementVersion>>,
}

impl AgreementBook {
    /// Indexes versions by scope.
    pub fn new(versions: impl IntoIterator<Item = AgreementVersion>) -> Self {
        let mut book = AgreementBook::default();
        for version in versions {
            match version.partner_id {
                None => book.default.push(version),
                Some(partner) => book.partners.entry(partner).or_default().push(version),
            }
        }
        book
    }

    /// The book with `rules` as `seller`'s agreement at every time (QuoteSale's
    /// unsaved draft): the what-if "had the seller been on these rules". The
    /// draft keeps the seller's agreement id when it has one (it is the next
    /// version of that agreement), so the customer's earlier events by this
    /// seller count for the setup fee and per-customer limits as they would;
    /// its version id is the nil UUID (never stored).
    pub fn with_draft(mut self, seller: Uuid, rules: AgreementRules) -> Self {
        let agreement_id = self
            .partners
            .get(&seller)
            .and_then(|versions| versions.first())
            .map_or_else(|| Uuid::new_v5(&Uuid::NAMESPACE_OID, seller.as_bytes()), |version| version.agreement_id);
        let draft = AgreementVersion {
            id: Uuid::nil(),
            agreement_id,
            partner_id: Some(seller),
            version: 0,
            effective_from: DateTime::<Utc>::MIN_UTC,
            rules,
        };
        self.partners.insert(seller, vec![draft]);
        self
    }

    fn in_force_of(versions: &[AgreementVersion], at: DateTime<Utc>) -> Option<&AgreementVersion> {
        versions.iter().filter(|v| v.effective_from <= at).max_by_key(|v| (v.effective_from, v.version))
    }

    /// The version that applies to a sale by `seller` at `at`: the seller's
    /// own agreement's version with the greatest `effective_from ≤ at` (equal
    /// `effective_from`: the higher version number), else the program
    /// default's version in force, else none.
    pub fn in_force(&self, seller: Uuid, at: DateTime<Utc>) -> Option<&AgreementVersion> {
        self.partners
            .get(&seller)
            .and_then(|versions| Self::in_force_of(versions, at))
            .or_else(|| Self::in_force_of(&self.default, at))
    }
}

/// The override plans of one program.
#[derive(Debug, Clone, Default)]
pub struct OverridePlans {
    /// The program's plan.
    pub program: Option<OverridePlan>,
    /// Upline partners' own plans.
    pub partners: HashMap<Uuid, OverridePlan>,
}

/// What a line pays for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LineKind {
    /// The link owner's (seller's) share of C.
    Direct,
    /// A split partner's share of C (seed 000).
    Split,
    /// An upline's override (seed 004).
    Override,
    /// A scheme margin: a partner's role's absolute rate minus that of the
    /// partner just below it (seed 002).
    Margin,
}

/// Why a line (or the base commission) earned what it earned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Breakdown {
    /// PERCENTAGE, FIXED, TIERED, HYBRID (C, and the DIRECT/SPLIT shares of C),
    /// NONE, SCHEME (base of a scheme-managed sale), OVERRIDE_PERCENTAGE,
    /// OVERRIDE_FLAT, MARGIN.
    pub model: String,
    /// The formula with its numbers.
    pub formula: String,
    /// Inputs by name.
    pub inputs: BTreeMap<String, String>,
    /// Rule, tier or level chosen.
    pub rule: String,
    /// The agreement version applied.
    pub agreement_version_id: Option<Uuid>,
    /// The rounding applied.
    pub rounding: String,
    /// Notes (why nothing was paid, why a share fell back), "; "-separated.
    pub note: String,
}

impl Breakdown {
    pub(super) fn input(&mut self, name: &str, value: impl ToString) {
        self.inputs.insert(name.to_string(), value.to_string());
    }

    pub(super) fn add_note(&mut self, note: impl AsRef<str>) {
        if !self.note.is_empty() {
            self.note.push_str("; ");
        }
        self.note.push_str(note.as_ref());
    }
}

/// One line of a settlement (amount > 0, exact in the minor unit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// Who earns it.
    pub partner_id: Uuid,
    /// What for.
    pub kind: LineKind,
    /// Amount.
    pub amount: Money,
    /// OVERRIDE: level (1 = parent). MARGIN: position in the upline walk (0 =
    /// the seller, 1 = its parent, …). 0 for DIRECT and SPLIT.
    pub level: u32,
    /// The seller.
    pub source_partner_id: Uuid,
    /// `occurred_at + clearance_days`.
    pub clears_at: DateTime<Utc>,
    /// Why.
    pub breakdown: Breakdown,
}

/// The gRPC code a per-sale failure carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureCode {
    /// The sale's facts are malformed.
    InvalidArgument,
    /// The sale cannot be settled under the current configuration.
    FailedPrecondition,
}

impl FailureCode {
    /// The gRPC code name ("FAILED_PRECONDITION").
    pub fn as_str(self) -> &'static str {
        match self {
            FailureCode::InvalidArgument => "INVALID_ARGUMENT",
            FailureCode::FailedPrecondition => "FAILED_PRECONDITION",
        }
    }
}

/// Why one sale could not be settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Code.
    pub code: FailureCode,
    /// UPPER_SNAKE reason ("CURRENCY_MISMATCH").
    pub reason: String,
    /// Human-readable message.
    pub message: String,
}

impl Failure {
    /// An INVALID_ARGUMENT failure.
    pub fn invalid(reason: &str, message: impl Into<String>) -> Self {
        Failure { code: FailureCode::InvalidArgument, reason: reason.to_string(), message: message.into() }
    }

    /// A FAILED_PRECONDITION failure.
    pub fn precondition(reason: &str, message: impl Into<String>) -> Self {
        Failure { code: FailureCode::FailedPrecondition, reason: reason.to_string(), message: message.into() }
    }
}

/// The settlement of one sale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    /// Sale id.
    pub sale_id: String,
    /// Base commission C (zero when nothing fired); `None` on failure.
    pub base_commission: Option<Money>,
    /// The agreement version applied (also set on a failure under a version).
    pub agreement_version_id: Option<Uuid>,
    /// DIRECT, SPLITs in split order, OVERRIDEs by level; for a scheme-managed
    /// sale only MARGINs in walk order. Empty on failure.
    pub lines: Vec<Line>,
    /// Set when the sale cannot be settled.
    pub failure: Option<Failure>,
    /// How C was computed.
    pub base_breakdown: Breakdown,
}

fn mismatch(what: &str, theirs: Currency, sale: Currency) -> Failure {
    Failure::precondition(
        "CURRENCY_MISMATCH",
        format!("{what} is in {theirs} but the sale is in {sale}; an agreement or plan pays in the sale's currency"),
    )
}

pub(super) fn out_of_range() -> Failure {
    Failure::invalid("AMOUNT_OUT_OF_RANGE", "an amount in this sale is too large to compute with")
}

/// Exact `a × b`: fails rather than let `Decimal` drop digits (its product
/// keeps at most 28 decimals and 96 bits of mantissa).
pub(super) fn mul(a: Decimal, b: Decimal) -> Result<Decimal, Failure> {
    let product = a.checked_mul(b).ok_or_else(out_of_range)?;
    // A zero product comes back as plain 0 (scale 0): exact.
    if !product.is_zero() && product.scale() != a.scale() + b.scale() {
        return Err(out_of_range());
    }
    Ok(product)
}

/// `value` written with at least the currency's minor-unit decimals.
pub(super) fn show(currency: Currency, value: Decimal) -> String {
    if value.scale() < currency.minor_unit() { currency.rescale(value).to_string() } else { value.to_string() }
}

/// The rounding text of a breakdown: "HALF_AWAY_FROM_ZERO to 2 dp: 10.005 → 10.01".
pub fn rounding_text(currency: Currency, mode: RoundingMode, unrounded: Decimal, rounded: Decimal) -> String {
    format!("{} to {} dp: {} → {}", mode.as_str(), currency.minor_unit(), show(currency, unrounded), rounded)
}

/// The raw (unrounded) commission of a model.
struct Raw {
    amount: Decimal,
    formula: String,
    rule: String,
    note: Option<String>,
    inputs: Vec<(String, String)>,
}

fn tier_volume(sale: &Sale) -> Result<Decimal, Failure> {
    match sale.seller_prior_volume {
        None => Ok(Decimal::ZERO),
        Some(volume) if volume.currency == sale.amount.currency => Ok(volume.amount),
        Some(volume) => Err(mismatch("seller_prior_volume", volume.currency, sale.amount.currency)),
    }
}

fn raw_commission(model: &Model, sale: &Sale) -> Result<Raw, Failure> {
    let currency = sale.amount.currency;
    let gross = sale.amount.amount;
    match model {
        Model::Percentage { rate } => {
            let amount = mul(gross, *rate)?;
            Ok(Raw {
                amount,
                formula: format!("{} × {} = {}", show(currency, gross), rate, show(currency, amount)),
                rule: String::new(),
                note: None,
                inputs: vec![("rate".into(), rate.to_string())],
            })
        }
        Model::Fixed { fixed_amount } => {
            if fixed_amount.currency != currency {
                return Err(mismatch("fixed_amount", fixed_amount.currency, currency));
            }
            Ok(Raw {
                amount: fixed_amount.amount,
                formula: format!("fixed {}", fixed_amount.amount_string()),
                rule: String::new(),
                note: None,
                inputs: vec![("fixed_amount".into(), fixed_amount.amount_string())],
            })
        }
        Model::Tiered { tiers } => {
            let volume = tier_volume(sale)?;
            let mut inputs = vec![("seller_prior_volume".into(), show(currency, volume))];
            let Some((index, tier)) = tiers.iter().enumerate().find(|(_, tier)| tier.contains(volume)) else {
                return Ok(Raw {
                    amount: Decimal::ZERO,
                    formula: "no tier holds the prior volume = 0".into(),
                    rule: "no tier".into(),
                    note: Some(format!("no tier holds seller prior volume {}", show(currency, volume))),
                    inputs,
                });
            };
            let bounds = format!(
                "[{}, {})",
                tier.min_volume,
                tier.max_volume.map_or_else(|| "∞".to_string(), |max| max.to_string())
            );
            inputs.push(("tier".into(), bounds.clone()));
            let (amount, formula) = match &tier.pays {
                TierPays::Rate(rate) => {
                    inputs.push(("rate".into(), rate.to_string()));
                    let amount = mul(gross, *rate)?;
                    (
                        amount,
                        format!(
                            "tier[{index}] {bounds}: {} × {} = {}",
                            show(currency, gross),
                            rate,
                            show(currency, amount)
                        ),
                    )
                }
                TierPays::FixedAmount(fixed) => {
                    if fixed.currency != currency {
                        return Err(mismatch(&format!("tier[{index}].fixed_amount"), fixed.currency, currency));
                    }
                    inputs.push(("fixed_amount".into(), fixed.amount_string()));
                    (fixed.amount, format!("tier[{index}] {bounds}: fixed {}", fixed.amount_string()))
                }
            };
            Ok(Raw { amount, formula, rule: format!("tier[{index}]"), note: None, inputs })
        }
        Model::Hybrid { rules } => {
            let facts = ConditionFacts {
                event_type: sale.event_type,
                gross_amount: gross,
                product_code: &sale.product_code,
                is_first_payment: sale.is_first_payment,
            };
            let Some((index, rule)) = rules.iter().enumerate().find(|(_, rule)| rule.condition.matches(&facts)) else {
                return Ok(Raw {
                    amount: Decimal::ZERO,
                    formula: "no rule matched = 0".into(),
                    rule: "no rule".into(),
                    note: Some("no HYBRID rule matched the sale".into()),
                    inputs: Vec::new(),
                });
            };
            if matches!(rule.model, Model::Hybrid { .. }) {
                return Err(Failure::precondition("INVALID_AGREEMENT", format!("HYBRID rule[{index}] nests HYBRID")));
            }
            let inner = raw_commission(&rule.model, sale)?;
            let chosen =
                if inner.rule.is_empty() { format!("rule[{index}]") } else { format!("rule[{index}] {}", inner.rule) };
            let mut inputs = inner.inputs;
            inputs.push(("condition".into(), rule.condition.describe()));
            inputs.push(("rule_model".into(), rule.model.as_str().into()));
            Ok(Raw {
                amount: inner.amount,
                formula: format!(
                    "rule[{index}] ({}) {}: {}",
                    rule.condition.describe(),
                    rule.model.as_str(),
                    inner.formula
                ),
                rule: chosen,
                note: inner.note,
                inputs,
            })
        }
    }
}

/// The prior events of the customer that fired the trigger of a version of
/// agreement `agreement_id` (the set F of DESIGN §4): for each earlier event,
/// the version that applied to it is its seller's agreement in force at its
/// `occurred_at`, else the program default's; for ON_ACTIVATION an earlier
/// event is a first payment when no PAYMENT/RENEWAL precedes it in the history.
/// An earlier event whose service code `schemes` manages applied no agreement
/// and is never in F, though it still is a payment for the first-payment test.
pub(super) fn prior_firing_events<'a>(
    book: &AgreementBook,
    schemes: &SchemeBook,
    agreement_id: Uuid,
    sale: &'a Sale,
) -> Vec<&'a PriorEvent> {
    let mut seen_payment = false;
    let mut firing = Vec::new();
    for event in &sale.customer_history {
        if event.sale_id == sale.sale_id {
            continue;
        }
        let is_first_payment = event.event_type.is_payment() && !seen_payment;
        seen_payment |= event.event_type.is_payment();
        // A scheme-managed sale consulted no agreement; it still was a payment
        // (counted just above) but fired nothing.
        if schemes.manages(&event.service_code) {
            continue;
        }
        let Some(version) = book.in_force(event.seller_partner_id, event.occurred_at) else {
            continue;
        };
        if version.agreement_id == agreement_id && version.rules.trigger.fires(event.event_type, is_first_payment) {
            firing.push(event);
        }
    }
    firing
}

/// Checks the sale's own facts (amount ≥ 0, split shares).
fn check_sale(sale: &Sale) -> Result<(), Failure> {
    if sale.amount.amount.is_sign_negative() && !sale.amount.amount.is_zero() {
        return Err(Failure::invalid("NEGATIVE_AMOUNT", "the sale amount must not be negative"));
    }
    let mut total: u32 = 0;
    for (index, split) in sale.splits.iter().enumerate() {
        if !(1..BASIS_POINTS_WHOLE).contains(&split.basis_points) {
            return Err(Failure::invalid(
                "INVALID_SPLITS",
                format!("splits[{index}].basis_points must be 1..9999, got {}", split.basis_points),
            ));
        }
        total = total.saturating_add(split.basis_points);
    }
    if total > BASIS_POINTS_WHOLE {
        return Err(Failure::invalid("INVALID_SPLITS", format!("split basis points sum to {total}, more than 10000")));
    }
    Ok(())
}

/// Settles one sale (DESIGN §4, steps 1–9 of the commission brief):
///
/// 1. the agreement version in force at `occurred_at` (seller's scope, else
///    the program default; none → C = 0 and no lines);
/// 2. the trigger must fire (else C = 0, no lines);
/// 3. a TERMINATED seller earns nothing (no lines);
/// 4. the raw commission by model (FIXED in another currency fails with
///    FAILED_PRECONDITION `CURRENCY_MISMATCH`);
/// 5. per-customer facts: setup fee on the first firing event under the
///    agreement, `max_commissions`, `max_duration_months` (calendar months in UTC,
///    clamped to the month's end);
/// 6. C = round(raw + setup fee) once with the program mode, then clamped to
///    [min, max] when C > 0;
/// 7. C is split over the owner and the link's split partners by largest
///    remainder over minor units (seed 000);
/// 8. overrides up the ancestors (seed 004), on top of C;
/// 9. every line clears at `occurred_at + clearance_days`.
///
/// A sale whose `service_code` is scheme-managed (some scheme of the program
/// sets a rate for it) skips all of the above: DESIGN §4 "a program may use
/// schemes instead of agreements for a service_code", so C = 0 (base model
/// SCHEME), no agreement, split or override applies, and the lines are the
/// MARGINs of [`scheme::settle_margins`] (seed 002).
pub fn settle(
    program: &ProgramSettings,
    book: &AgreementBook,
    plans: &OverridePlans,
    schemes: &SchemeBook,
    sale: &Sale,
) -> Settlement {
    let mut settlement = Settlement {
        sale_id: sale.sale_id.clone(),
        base_commission: Some(Money::zero(sale.amount.currency)),
        agreement_version_id: None,
        lines: Vec::new(),
        failure: None,
        base_breakdown: Breakdown::default(),
    };
    let result = if schemes.manages(&sale.service_code) {
        check_sale(sale).and_then(|()| scheme::settle_margins(program, schemes, sale, &mut settlement))
    } else {
        compute(program, book, plans, schemes, sale, &mut settlement)
    };
    if let Err(failure) = result {
        settlement.base_commission = None;
        settlement.lines.clear();
        settlement.base_breakdown.add_note(format!("failed: {}", failure.message));
        settlement.failure = Some(failure);
    }
    program.record(&mut settlement.base_breakdown);
    for line in &mut settlement.lines {
        program.record(&mut line.breakdown);
    }
    settlement
}

fn compute(
    program: &ProgramSettings,
    book: &AgreementBook,
    plans: &OverridePlans,
    schemes: &SchemeBook,
    sale: &Sale,
    out: &mut Settlement,
) -> Result<(), Failure> {
    check_sale(sale)?;
    let currency = sale.amount.currency;
    let mode = program.rounding;
    let gross = sale.amount.amount;
    let base = &mut out.base_breakdown;
    base.input("gross_amount", sale.amount.amount_string());
    base.input("currency", currency.code());
    base.input("event_type", sale.event_type.as_str());
    base.input("is_first_payment", sale.is_first_payment);

    // 1. The agreement version in force.
    let Some(version) = book.in_force(sale.seller.id, sale.occurred_at) else {
        base.model = "NONE".into();
        base.formula = "no agreement = 0".into();
        base.add_note("no agreement in force");
        return Ok(());
    };
    let rules = &version.rules;
    out.agreement_version_id = Some(version.id);
    base.agreement_version_id = Some(version.id);
    base.model = rules.model.as_str().into();
    base.input("trigger", rules.trigger.as_str());
    base.input("agreement_id", version.agreement_id);
    base.input("agreement_version", version.version);
    base.input("agreement_scope", if version.partner_id.is_some() { "partner" } else { "program default" });

    // 2. The trigger.
    if !rules.trigger.fires(sale.event_type, sale.is_first_payment) {
        base.formula = "trigger not fired = 0".into();
        base.add_note(format!(
            "trigger {} does not fire for a {} event{}",
            rules.trigger.as_str(),
            sale.event_type.as_str(),
            if sale.event_type.is_payment() && !sale.is_first_payment { " that is not the first payment" } else { "" }
        ));
        return Ok(());
    }

    // 3. A terminated seller earns nothing new.
    if sale.seller.status == PartnerStatus::Terminated {
        base.formula = "seller terminated = 0".into();
        base.add_note(format!("seller {} is TERMINATED: no lines", sale.seller.id));
        return Ok(());
    }

    // 4. The raw commission.
    let raw = raw_commission(&rules.model, sale)?;
    for (name, value) in &raw.inputs {
        base.input(name, value);
    }
    base.rule = raw.rule.clone();
    if let Some(note) = &raw.note {
        base.add_note(note);
    }

    // 5. Per-customer facts.
    let firing = prior_firing_events(book, schemes, version.agreement_id, sale);
    base.input("prior_firing_events", firing.len());
    let mut limited = None;
    if rules.max_commissions > 0 && firing.len() >= rules.max_commissions as usize {
        base.input("max_commissions", rules.max_commissions);
        limited = Some(format!(
            "max_commissions {} reached ({} earlier commissioned events for this customer)",
            rules.max_commissions,
            firing.len()
        ));
    } else if rules.max_duration_months > 0
        && let Some(first) = firing.iter().map(|event| event.occurred_at).min()
    {
        base.input("max_duration_months", rules.max_duration_months);
        base.input("first_commissioned_at", first.to_rfc3339());
        if let Some(end) = first.checked_add_months(Months::new(rules.max_duration_months))
            && sale.occurred_at >= end
        {
            limited = Some(format!(
                "max_duration_months {} passed: first commissioned event {} + {} months = {}",
                rules.max_duration_months,
                first.to_rfc3339(),
                rules.max_duration_months,
                end.to_rfc3339()
            ));
        }
    }
    let setup_fee = match (&rules.setup_fee, firing.is_empty()) {
        (Some(fee), true) => {
            if fee.currency != currency {
                return Err(mismatch("setup_fee", fee.currency, currency));
            }
            base.input("setup_fee", fee.amount_string());
            Some(fee.amount)
        }
        _ => None,
    };

    // 6. C = round(raw + setup fee), then caps.
    let commission = if let Some(reason) = limited {
        base.formula = format!("{}; limited = 0", raw.formula);
        base.add_note(reason);
        Decimal::ZERO
    } else {
        let unrounded = raw.amount.checked_add(setup_fee.unwrap_or(Decimal::ZERO)).ok_or_else(out_of_range)?;
        let rounded = currency.round(unrounded, mode);
        base.rounding = rounding_text(currency, mode, unrounded, rounded);
        let mut formula = raw.formula.clone();
        if let Some(fee) = setup_fee {
            formula.push_str(&format!(" + setup_fee {} = {}", show(currency, fee), show(currency, unrounded)));
        }
        formula.push_str(&format!(" → {rounded}"));
        let mut commission = rounded;
        if commission > Decimal::ZERO {
            if let Some(min) = rules.min_commission {
                if min.currency != currency {
                    return Err(mismatch("min_commission", min.currency, currency));
                }
                base.input("min_commission", min.amount_string());
                if commission < min.amount {
                    commission = min.amount;
                    formula.push_str(&format!("; raised to min_commission {}", min.amount_string()));
                }
            }
            if let Some(max) = rules.max_commission {
                if max.currency != currency {
                    return Err(mismatch("max_commission", max.currency, currency));
                }
                base.input("max_commission", max.amount_string());
                if commission > max.amount {
                    commission = max.amount;
                    formula.push_str(&format!("; capped at max_commission {}", max.amount_string()));
                }
            }
        }
        base.formula = formula;
        currency.rescale(commission)
    };
    out.base_commission = Some(Money { amount: commission, currency });

    let clears_at = sale
        .occurred_at
        .checked_add_signed(TimeDelta::days(i64::from(rules.clearance_days)))
        .ok_or_else(|| Failure::invalid("TIME_OUT_OF_RANGE", "occurred_at + clearance_days is out of range"))?;
    let line_breakdown = |model: &str, rule: String| Breakdown {
        model: model.into(),
        rule,
        agreement_version_id: Some(version.id),
        ..Breakdown::default()
    };

    // 7. Splits: allocate over the configured points first, so an active
    // partner's share never depends on another's status; only then does a
    // TERMINATED partner's allocation move to the owner (DESIGN §4, issue 8).
    let units = currency.to_minor_units(commission).ok_or_else(out_of_range)?;
    let split_total: u32 = sale.splits.iter().map(|split| split.basis_points).sum();
    let weights: Vec<u64> = std::iter::once(BASIS_POINTS_WHOLE - split_total)
        .chain(sale.splits.iter().map(|split| split.basis_points))
        .map(u64::from)
        .collect();
    let mut parts = if units > 0 {
        allocate_largest_remainder(units, &weights)
            .map_err(|error| Failure::invalid("INVALID_SPLITS", error.to_string()))?
    } else {
        vec![0; weights.len()]
    };
    let mut fallbacks = Vec::new();
    let mut moved_to_owner: i128 = 0;
    for (index, split) in sale.splits.iter().enumerate() {
        if split.partner.status != PartnerStatus::Terminated {
            continue;
        }
        let moved = std::mem::take(&mut parts[index + 1]);
        moved_to_owner += moved;
        let moved_amount = currency.from_minor_units(moved).ok_or_else(out_of_range)?;
        fallbacks.push(format!(
            "split[{index}] partner {} is TERMINATED: the {moved_amount} allocated to its {} bp fall back to the \
             owner",
            split.partner.id, split.basis_points
        ));
    }
    parts[0] += moved_to_owner;
    for note in &fallbacks {
        out.base_breakdown.add_note(note);
    }
    let moved_to_owner = currency.from_minor_units(moved_to_owner).ok_or_else(out_of_range)?;
    let mut lines = Vec::new();
    for (index, (part, weight)) in parts.iter().zip(&weights).enumerate() {
        if *part == 0 {
            continue;
        }
        let amount = currency.from_minor_units(*part).ok_or_else(out_of_range)?;
        let (partner_id, kind, rule) = if index == 0 {
            (sale.seller.id, LineKind::Direct, "owner".to_string())
        } else {
            (sale.splits[index - 1].partner.id, LineKind::Split, format!("split[{}]", index - 1))
        };
        // A share line explains C itself (model, tier or rule chosen,
        // inputs, rounding) and then its share of C, so a partner reading
        // one ledger entry sees the whole derivation.
        let base = &out.base_breakdown;
        let mut breakdown = base.clone();
        breakdown.rule = if base.rule.is_empty() { rule.clone() } else { format!("{}; {rule}", base.rule) };
        breakdown.formula = if index == 0 && !fallbacks.is_empty() {
            format!(
                "C: {}; {rule} share: {commission} × {weight}/{BASIS_POINTS_WHOLE} + {moved_to_owner} from \
                 TERMINATED splits → {amount}",
                base.formula
            )
        } else {
            format!("C: {}; {rule} share: {commission} × {weight}/{BASIS_POINTS_WHOLE} → {amount}", base.formula)
        };
        breakdown.input("share", &rule);
        breakdown.input("base_commission", commission);
        breakdown.input("basis_points", weight);
        breakdown.input("total_basis_points", BASIS_POINTS_WHOLE);
        breakdown.rounding = format!(
            "C: {}; shares of C by largest remainder over {units} minor units (Σ shares = C)",
            if base.rounding.is_empty() { "none" } else { base.rounding.as_str() }
        );
        breakdown.note = String::new();
        if index == 0 {
            for note in &fallbacks {
                breakdown.add_note(note);
            }
        }
        lines.push(Line {
            partner_id,
            kind,
            amount: Money { amount, currency },
            level: 0,
            source_partner_id: sale.seller.id,
            clears_at,
            breakdown,
        });
    }

    // 8. Overrides, on top of C.
    let cap = program.override_depth_cap;
    let mut level: u32 = 0;
    for (position, ancestor) in sale.ancestors.iter().enumerate() {
        let active = ancestor.status == PartnerStatus::Active;
        if program.compression_enabled {
            if !active {
                out.base_breakdown.add_note(format!(
                    "ancestor {} is {}: skipped (compression)",
                    ancestor.id,
                    ancestor.status.as_str()
                ));
                continue;
            }
            level += 1;
        } else {
            level = u32::try_from(position + 1).unwrap_or(u32::MAX);
        }
        if level > cap {
            break;
        }
        if !active {
            out.base_breakdown.add_note(format!(
                "level {level}: ancestor {} is {} and forfeits the level",
                ancestor.id,
                ancestor.status.as_str()
            ));
            continue;
        }
        let (plan, plan_scope) = match plans.partners.get(&ancestor.id) {
            Some(plan) => (plan, "partner"),
            None => match &plans.program {
                Some(plan) => (plan, "program"),
                None => {
                    out.base_breakdown.add_note(format!(
                        "level {level}: no override plan for ancestor {} or the program",
                        ancestor.id
                    ));
                    continue;
                }
            },
        };
        let entry = plan.levels.get(level as usize - 1);
        let mut breakdown = line_breakdown(
            match plan.mode {
                OverrideMode::Percentage => "OVERRIDE_PERCENTAGE",
                OverrideMode::Flat => "OVERRIDE_FLAT",
            },
            format!("level {level}"),
        );
        breakdown.input("plan", plan_scope);
        breakdown.input("ancestor_position", position + 1);
        let amount = match plan.mode {
            OverrideMode::Percentage => {
                let Some(rate) = entry.and_then(|entry| entry.rate) else {
                    tracing::debug!(ancestor = %ancestor.id, level, plan = plan_scope, "no override rate for level");
                    out.base_breakdown.add_note(format!(
                        "level {level}: the {plan_scope} plan of ancestor {} has no rate for level {level}",
                        ancestor.id
                    ));
                    continue;
                };
                let basis = match plan.basis {
                    OverrideBasis::DealAmount => gross,
                    OverrideBasis::BaseCommission => commission,
                };
                let unrounded = mul(basis, rate)?;
                let rounded = currency.round(unrounded, mode);
                breakdown.formula = format!(
                    "{} {} × {} = {} → {}",
                    plan.basis.as_str(),
                    show(currency, basis),
                    rate,
                    show(currency, unrounded),
                    rounded
                );
                breakdown.input("basis", plan.basis.as_str());
                breakdown.input("basis_amount", show(currency, basis));
                breakdown.input("rate", rate);
                breakdown.rounding = rounding_text(currency, mode, unrounded, rounded);
                rounded
            }
            OverrideMode::Flat => {
                let Some(flat) = entry.and_then(|entry| entry.flat_amount) else {
                    tracing::debug!(ancestor = %ancestor.id, level, plan = plan_scope, "no override flat amount for level");
                    out.base_breakdown.add_note(format!(
                        "level {level}: the {plan_scope} plan of ancestor {} has no flat amount for level {level}",
                        ancestor.id
                    ));
                    continue;
                };
                if flat.currency != currency {
                    return Err(mismatch(&format!("override flat_amount (level {level})"), flat.currency, currency));
                }
                breakdown.formula = format!("flat {}", flat.amount_string());
                breakdown.input("flat_amount", flat.amount_string());
                breakdown.rounding = "none (exact flat amount)".into();
                flat.amount
            }
        };
        if amount > Decimal::ZERO {
            lines.push(Line {
                partner_id: ancestor.id,
                kind: LineKind::Override,
                amount: Money { amount: currency.rescale(amount), currency },
                level,
                source_partner_id: sale.seller.id,
                clears_at,
                breakdown,
            });
        } else {
            out.base_breakdown.add_note(format!("level {level}: override is 0, no line"));
        }
    }
    out.lines = lines;
    Ok(())
}
