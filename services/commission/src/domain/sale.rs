//! What every rule of a settlement shares (DESIGN §4): the sale with its
//! facts, the program settings, the lines and breakdowns a settlement is made
//! of, its failures, and the exact arithmetic and formatting helpers. The rule
//! modules ([`super::base`], [`super::splits`], [`super::overrides`],
//! [`super::margins`]) import from here and never from each other's callers.

use accrue_money::{Currency, Money, RoundingMode};
use accrue_types::{AgreementVersionId, PartnerId};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use std::collections::BTreeMap;

use super::rules::{Qualification, QualificationFacts, SaleEventType};

/// Basis points in a whole (a link's splits share 10000), from the one split rule.
pub use accrue_types::split::BASIS_POINTS_WHOLE;

/// A partner's status at settlement time, shared with hierarchy (one
/// definition in accrue-types).
pub use accrue_types::partner::PartnerStatus;

/// A settlement line, what it pays for and why: one definition in
/// accrue-types, the same value the saga logs and the ledger stores (its
/// wire conversion is `accrue_kit::convert::settlement`).
pub use accrue_types::settlement::{Breakdown, EarningKind, Line};

/// A partner, its status and its role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartnerRef {
    /// Partner id.
    pub id: PartnerId,
    /// Status at settlement time (hierarchy's); `None` when the caller sent
    /// UNSPECIFIED or a number this build does not know, which counts as
    /// neither ACTIVE (no override level) nor TERMINATED (still earns).
    pub status: Option<PartnerStatus>,
    /// Role on the program's role ladder (`None` when the partner has none):
    /// scheme margins pay by role (seed 002); agreements and overrides ignore it.
    pub role: Option<String>,
}

impl PartnerRef {
    /// True when the partner is known to be in `status` (an unknown status is in none).
    pub fn is(&self, status: PartnerStatus) -> bool {
        self.status == Some(status)
    }

    /// The status name breakdown notes show ("UNSPECIFIED" for an unknown status).
    pub fn status_name(&self) -> &'static str {
        self.status.map_or("UNSPECIFIED", PartnerStatus::as_str)
    }
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
    pub seller_partner_id: PartnerId,
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
    /// Qualification facts of ancestors whose override plan has a
    /// qualification, by ancestor (issue 16 item 3); empty when the caller
    /// sent none (see [`super::overrides::required_facts`]).
    pub ancestor_facts: BTreeMap<PartnerId, QualificationFacts>,
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
    pub(super) fn record(&self, breakdown: &mut Breakdown) {
        if self.settings_version > 0 {
            breakdown.input("program.settings_version", self.settings_version);
        }
        breakdown.input("program.rounding_mode", self.rounding.as_str());
        breakdown.input("program.override_depth_cap", self.override_depth_cap);
        breakdown.input("program.compression_enabled", self.compression_enabled);
    }
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
    pub agreement_version_id: Option<AgreementVersionId>,
    /// DIRECT, SPLITs in split order, OVERRIDEs by level; for a scheme-managed
    /// sale only MARGINs in walk order. Empty on failure.
    pub lines: Vec<Line>,
    /// Set when the sale cannot be settled.
    pub failure: Option<Failure>,
    /// How C was computed.
    pub base_breakdown: Breakdown,
    /// With failure `QUALIFICATION_FACTS_REQUIRED`: the ancestors whose
    /// qualification facts the sale lacked, each with its plan's
    /// qualification (issue 16 item 3). Empty otherwise.
    pub required_facts: Vec<RequiredFacts>,
}

/// An ancestor whose qualification facts a settlement needs (issue 16 item 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequiredFacts {
    /// The ancestor.
    pub partner_id: PartnerId,
    /// Its plan's qualification: which facts to gather (personal volume over
    /// the window in the minimum's currency; ACTIVE direct sub-partners when
    /// a minimum is set).
    pub qualification: Qualification,
}

pub(super) fn mismatch(what: &str, theirs: Currency, sale: Currency) -> Failure {
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
