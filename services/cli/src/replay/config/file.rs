//! The configuration file a third party recomputes every ledger line from:
//! the generator, program, partners, links, agreements and customers.

// The configuration module's types and imports.
use super::*;

/// DESIGN §4 in short, written into the configuration file so a third party
/// can recompute every ledger line.
pub fn rules_summary() -> Vec<&'static str> {
    vec![
        "Money: exact decimals in GBP; every line amount is rounded once to pence with the program's rounding mode (HALF_AWAY_FROM_ZERO).",
        "Sale: one UCI invoice with a CustomerID and a positive total (Σ quantity × unit price, exact, rounded once to pence); event PAYMENT; occurred_at = the first line's InvoiceDate in Europe/London; the customer's first PAYMENT is its activation.",
        "Attribution: each customer is attributed (first touch, TrackLead at its first sale) to the link in `customers`; the link owner is the seller.",
        "Agreement: the seller's own agreement version in force at occurred_at, else the program default (`agreements`: scope, effective_from, rules in full; every version here takes force at 2010-01-01T00:00:00Z and none is ever replaced). Trigger ON_PAYMENT fires on every replayed sale (all are PAYMENT). PERCENTAGE: amount × rate; FIXED: fixed_amount per event; TIERED and HYBRID below; setup_fee added on the customer's first firing event under that agreement; min/max clamp a commission > 0. The raw amount (+ setup fee), rounded once, is the base commission C.",
        "TIERED: the seller's prior volume = Σ gross amounts of the seller's earlier attributed sales in the program (the seller is the link owner; sales ordered by occurred_at, ties by sale id, a UUIDv7 that follows recording order = data-file order; unattributed sales and credit invoices do not count). The tier [min_volume, max_volume) holding it (max_volume null = open-ended) pays rate × the whole sale amount (seed 003, example 5).",
        "HYBRID: rules in order, the first whose condition matches decides with its own model (PERCENTAGE / FIXED / TIERED as above); no match earns 0. Fields: is_first_payment (the customer's first PAYMENT in the program, same ordering as above), gross_amount (the sale amount), product_code (the invoice's first counted line's StockCode), event_type (PAYMENT). Operators: EQUALS, IN (values), GT, GTE, LT, LTE (numbers).",
        "Splits: C is allocated over the owner and the link's split partners by basis points (owner keeps 10000 − Σ split bps) with largest remainder over pence: floor each share, hand leftover pence to the largest fractional parts, ties to the owner first, then split order. Σ shares = C. Zero shares post nothing. A SUSPENDED split partner still accrues; a TERMINATED one is allocated its configured points like any other, then the amount allocated to it moves to the owner (an active partner's share never depends on another's status).",
        "Overrides: walk the seller's ancestors (level 1 = parent) up to min(plan levels, override_depth_cap); line = round(C × rates_by_level[level−1]) (basis BASE_COMMISSION, paid on top of C). With compression enabled, levels count ACTIVE ancestors only (non-active ones are skipped and the next active one takes the level).",
        "Clearance: entries clear at occurred_at + clearance_days; ClearMatured(as_of = month end) clears them, and auto_approve_cleared approves them at once.",
        "Payouts: for each month, CreatePayoutRun(GBP, \"YYYY-MM\", cutoff = month end) pays each ACTIVE partner's approved entries cleared by the cutoff when they total at least minimum_payout; smaller balances carry forward. SUSPENDED partners accrue but are not paid.",
        "Credit invoices (C…): each credit line refunds, among the same customer's sales with an earlier occurred_at that contain its StockCode with enough unrefunded quantity (the sale's lines of that StockCode summed, less what earlier credit lines took), the most recent one (same instant: the later in file order); its value is |quantity| × the credit line's unit price, exact (finer than pence: rounded half away from zero). One RecordRefund per (credit invoice, matched sale), amount = Σ its matched values capped at the sale's unrefunded amount, occurred_at = the credit invoice's time, applied in credit-invoice time order (ties by file order); `refunds` lists every one with its lines. Unmatched lines are counted by reason (no customer; no earlier sale; no earlier sale with that StockCode; not enough unrefunded quantity).",
        "Clawback (DESIGN §4): after refunds totalling T on a sale of amount A, the sale's total clawback is round(Σ its lines × T / A) (the program's rounding mode); a refund posts Δ = that total − what the sale's earlier refunds clawed back, as DEBIT entries over the sale's lines by largest remainder weighted by each line's amount not yet clawed back (ties in line order: DIRECT, SPLIT in split order, OVERRIDE by level). A debit against a line neither paid nor reserved travels with it (same clears_at and status); against a paid or reserved line it is APPROVED at once with clears_at = the refund's time and nets against the next payout run.",
        "Timeline: every sale is recorded and settled first (a later month's sales never clear before their month); then month by month: that month's refunds (RecordRefund, in time order), ClearMatured(as_of = month end), CreatePayoutRun(cutoff = month end). A payout's amount is the net: approved credits − approved debits cleared by the cutoff; a net ≤ 0 or below the minimum carries forward.",
        "A… adjustments, stock write-offs (price 0, negative quantity, no customer) and non-positive totals are skipped and counted; invoices without a CustomerID are recorded as unattributed sales and earn nothing.",
    ]
}

/// The configuration file `--config-out` (default `accrue-replay-config.json`):
/// everything a third party needs, with the server-assigned ids, to recompute
/// every ledger line from the data set.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigFile {
    /// How it was generated.
    pub generator: GeneratorInfo,
    /// The program (id and settings).
    pub program: ProgramOut,
    /// Every partner, parents first.
    pub partners: Vec<PartnerOut>,
    /// Every link with its splits.
    pub links: Vec<LinkOut>,
    /// Every agreement version (the program default first).
    pub agreements: Vec<AgreementOut>,
    /// The agreement variants in use: model, rules in prose, and which
    /// partners hold each (every other partner sells under the program default).
    pub agreement_variants: Vec<VariantOut>,
    /// The program override plan.
    pub override_plan: OverridePlanSpec,
    /// Customer external id → the link it is attributed to.
    pub customers: std::collections::BTreeMap<String, CustomerOut>,
    /// The rules of DESIGN §4 in short.
    pub rules: Vec<&'static str>,
    /// Every refund the credit invoices make, in the order they are applied.
    pub refunds: Vec<crate::replay::refunds::PlannedRefund>,
}

/// Generator inputs.
#[derive(Debug, Clone, Serialize)]
pub struct GeneratorInfo {
    /// The seed.
    pub seed: u64,
    /// The data directory read.
    pub data_dir: String,
    /// `--limit-invoices`, when given.
    pub limit_invoices: Option<usize>,
}

/// The program as created.
#[derive(Debug, Clone, Serialize)]
pub struct ProgramOut {
    /// Program id.
    pub id: String,
    /// The settings sent.
    #[serde(flatten)]
    pub settings: ProgramSpec,
}

/// A partner as created.
#[derive(Debug, Clone, Serialize)]
pub struct PartnerOut {
    /// Partner id.
    pub id: String,
    /// External id.
    pub external_id: String,
    /// Display name.
    pub display_name: String,
    /// Parent id (`None` for roots).
    pub parent_id: Option<String>,
    /// Parent external id.
    pub parent_external_id: Option<String>,
    /// Depth (0 for roots).
    pub depth: u32,
    /// Final status (ACTIVE or SUSPENDED).
    pub status: String,
}

/// A link split as created.
#[derive(Debug, Clone, Serialize)]
pub struct SplitOut {
    /// Split partner id.
    pub partner_id: String,
    /// Its external id.
    pub partner_external_id: String,
    /// Basis points of the base commission.
    pub basis_points: i32,
}

/// A link as created.
#[derive(Debug, Clone, Serialize)]
pub struct LinkOut {
    /// Link id.
    pub id: String,
    /// Link key.
    pub key: String,
    /// Owner partner id (the seller).
    pub owner_partner_id: String,
    /// Owner external id.
    pub owner_external_id: String,
    /// Splits in order (the owner keeps 10000 − Σ basis points).
    pub splits: Vec<SplitOut>,
}

/// An agreement version as created.
#[derive(Debug, Clone, Serialize)]
pub struct AgreementOut {
    /// Version id.
    pub version_id: String,
    /// Agreement (scope) id.
    pub agreement_id: String,
    /// "program" (the default) or "partner".
    pub scope: String,
    /// Partner id for a partner scope.
    pub partner_id: Option<String>,
    /// Partner external id for a partner scope.
    pub partner_external_id: Option<String>,
    /// Version number within the scope.
    pub version: i32,
    /// Variant label.
    pub variant: String,
    /// effective_from (RFC 3339).
    pub effective_from: String,
    /// The rules in one line of prose (the `rules` object is authoritative).
    pub description: String,
    /// The rules.
    pub rules: RulesSpec,
}

/// One agreement variant and the partners holding it.
#[derive(Debug, Clone, Serialize)]
pub struct VariantOut {
    /// Variant label ("default", "tiered", …).
    pub variant: String,
    /// PERCENTAGE, FIXED, TIERED or HYBRID.
    pub model: Model,
    /// "program" for the default, else "partner".
    pub scope: String,
    /// The rules in one line of prose.
    pub description: String,
    /// External ids of the partners with a version of this variant (empty
    /// for the program default).
    pub partner_external_ids: Vec<String>,
}

/// The variants of `plan`'s agreements in first-appearance order (the
/// program default first), each with its partners in index order.
pub fn variants(plan: &Plan) -> Vec<VariantOut> {
    let mut out: Vec<VariantOut> = Vec::new();
    for agreement in &plan.agreements {
        let position = match out.iter().position(|v| v.variant == agreement.variant) {
            Some(position) => position,
            None => {
                out.push(VariantOut {
                    variant: agreement.variant.clone(),
                    model: agreement.rules.model,
                    scope: if agreement.partner.is_some() { "partner".into() } else { "program".into() },
                    description: agreement.rules.describe(),
                    partner_external_ids: Vec::new(),
                });
                out.len() - 1
            }
        };
        if let Some(partner) = agreement.partner.and_then(|index| plan.partners.get(index)) {
            out[position].partner_external_ids.push(partner.external_id.clone());
        }
    }
    out
}

/// A customer's attribution.
#[derive(Debug, Clone, Serialize)]
pub struct CustomerOut {
    /// Link id.
    pub link_id: String,
    /// Link key.
    pub link_key: String,
    /// The link owner (seller).
    pub partner_id: String,
    /// When the lead was tracked (the customer's first sale).
    pub lead_time: String,
}
