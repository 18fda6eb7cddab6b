//! Scheme margins (seed 002; DESIGN §4 "Scheme margins"): the program's
//! scheme tree with its (service_code, role) → absolute rates, the effective
//! rate with NULL inheritance, the write rules (child ≤ parent, lower role ≤
//! higher role) and the book settlement reads. The MARGIN lines of a
//! scheme-managed sale are [`super::margins`]. Pure: no I/O.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use accrue_types::{PartnerId, SchemeId};
use rust_decimal::Decimal;

/// How a write-rule message shows a role whose rate no scheme up to the root
/// sets (issue 8 item 4).
pub const UNSET_RATE_TEXT: &str = "unset (inherits nothing, counts as 0)";

/// Longest accepted service code.
pub const MAX_SERVICE_CODE_LEN: usize = 64;

/// Whether `code` is a well-formed service code: 1..=64 characters of
/// `[A-Za-z0-9_.-]`.
pub fn valid_service_code(code: &str) -> bool {
    !code.is_empty()
        && code.len() <= MAX_SERVICE_CODE_LEN
        && code.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// The key of one scheme rate.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RateKey {
    /// Service the rate applies to ("RECHARGE").
    pub service_code: String,
    /// Role on the program's role ladder ("RETAILER").
    pub role: String,
}

impl RateKey {
    /// A key from its parts.
    pub fn new(service_code: impl Into<String>, role: impl Into<String>) -> Self {
        RateKey { service_code: service_code.into(), role: role.into() }
    }
}

/// One scheme of a program's tree with its own set rates (seed 002). A rate
/// absent from `rates` is NULL: it inherits from the parent scheme.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scheme {
    /// Scheme id.
    pub id: SchemeId,
    /// Parent scheme; `None` for the program's root.
    pub parent_id: Option<SchemeId>,
    /// Display name (used in messages).
    pub display_name: String,
    /// Days from a sale's `occurred_at` until its margin lines clear; the
    /// scheme used for the sale decides.
    pub clearance_days: u32,
    /// Own absolute rates in [0, 1], by (service_code, role).
    pub rates: BTreeMap<RateKey, Decimal>,
}

/// One write to a scheme's rate: `Some(rate)` sets it, `None` unsets it
/// (NULL: inherit from the parent scheme).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateChange {
    /// Which rate.
    pub key: RateKey,
    /// The new value; `None` deletes the scheme's own value.
    pub rate: Option<Decimal>,
}

/// An effective rate: the first set value walking scheme → parent → … → root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Effective {
    /// The absolute rate (0 when no scheme up to the root sets it).
    pub rate: Decimal,
    /// The scheme the value comes from; `None` when none sets it.
    pub source: Option<SchemeId>,
}

/// The schemes of one program, indexed by id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchemeTree {
    schemes: BTreeMap<SchemeId, Scheme>,
    root: Option<SchemeId>,
}

/// A place where the scheme tree breaks a write rule of seed 002.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateConflict {
    /// eff(scheme, role) > eff(parent, role): a child may not exceed its parent.
    AboveParent {
        /// The child scheme.
        scheme_id: SchemeId,
        /// Its parent.
        parent_id: SchemeId,
        /// Service.
        service_code: String,
        /// Role.
        role: String,
        /// The child's effective rate.
        rate: Decimal,
        /// The parent's effective rate.
        parent_rate: Decimal,
    },
    /// eff(scheme, lower role) > eff(scheme, higher role): a lower role may not
    /// earn more than a higher one.
    LowerRoleAbove {
        /// The scheme.
        scheme_id: SchemeId,
        /// Service.
        service_code: String,
        /// The role higher on the ladder.
        higher_role: String,
        /// Its effective rate: `source` `None` when no scheme up to the root
        /// sets it (it then counts as 0).
        higher: Effective,
        /// The role lower on the ladder.
        lower_role: String,
        /// Its effective rate.
        lower_rate: Decimal,
    },
}

impl RateConflict {
    fn scheme_id(&self) -> SchemeId {
        match self {
            RateConflict::AboveParent { scheme_id, .. } | RateConflict::LowerRoleAbove { scheme_id, .. } => *scheme_id,
        }
    }

    fn service_code(&self) -> &str {
        match self {
            RateConflict::AboveParent { service_code, .. } | RateConflict::LowerRoleAbove { service_code, .. } => {
                service_code
            }
        }
    }

    fn involves_role(&self, role: &str) -> bool {
        match self {
            RateConflict::AboveParent { role: own, .. } => own == role,
            RateConflict::LowerRoleAbove { higher_role, lower_role, .. } => higher_role == role || lower_role == role,
        }
    }

    /// A message naming the schemes, roles and values.
    pub fn describe(&self, tree: &SchemeTree) -> String {
        match self {
            RateConflict::AboveParent { scheme_id, parent_id, service_code, role, rate, parent_rate } => format!(
                "{service_code} {role} would be {rate} in scheme {} but {parent_rate} in its parent {}: a child \
                 scheme's rate may not exceed its parent's",
                tree.label(*scheme_id),
                tree.label(*parent_id)
            ),
            RateConflict::LowerRoleAbove { scheme_id, service_code, higher_role, higher, lower_role, lower_rate } => {
                // An unset rate prints as 0 would read as if someone had set it.
                let higher_text = match higher.source {
                    Some(_) => higher.rate.to_string(),
                    None => UNSET_RATE_TEXT.to_string(),
                };
                format!(
                    "{service_code} {lower_role} would be {lower_rate} but {higher_role} {higher_text} in scheme {}: \
                     a lower role's rate may not exceed a higher role's",
                    tree.label(*scheme_id)
                )
            }
        }
    }
}

/// Why a write was rejected: the index of the written rate it is about
/// (`None` when it matches none of them) and the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteViolation {
    /// Index into the written changes.
    pub index: Option<usize>,
    /// What breaks which rule.
    pub message: String,
}

impl SchemeTree {
    /// Indexes schemes; the root is the one without a parent.
    pub fn new(schemes: impl IntoIterator<Item = Scheme>) -> Self {
        let mut tree = SchemeTree::default();
        for scheme in schemes {
            tree.insert(scheme);
        }
        tree
    }

    /// Adds (or replaces) a scheme.
    pub fn insert(&mut self, scheme: Scheme) {
        if scheme.parent_id.is_none() {
            self.root = Some(scheme.id);
        }
        self.schemes.insert(scheme.id, scheme);
    }

    /// True when the program has no scheme.
    pub fn is_empty(&self) -> bool {
        self.schemes.is_empty()
    }

    /// Every scheme, by id.
    pub fn schemes(&self) -> impl Iterator<Item = &Scheme> {
        self.schemes.values()
    }

    /// One scheme.
    pub fn get(&self, id: SchemeId) -> Option<&Scheme> {
        self.schemes.get(&id)
    }

    /// The program's root scheme.
    pub fn root(&self) -> Option<&Scheme> {
        self.root.and_then(|id| self.schemes.get(&id))
    }

    fn label(&self, id: SchemeId) -> String {
        match self.schemes.get(&id) {
            Some(scheme) => format!("{id} ({:?})", scheme.display_name),
            None => id.to_string(),
        }
    }

    /// The scheme and its parents up to the root, starting scheme first
    /// (empty when `id` is unknown). Stops on a repeated id, so a corrupt
    /// parent edge cannot loop.
    pub fn chain(&self, id: SchemeId) -> Vec<&Scheme> {
        let mut chain: Vec<&Scheme> = Vec::new();
        let mut next = Some(id);
        while let Some(id) = next {
            let Some(scheme) = self.schemes.get(&id) else { break };
            if chain.iter().any(|seen| seen.id == id) {
                break;
            }
            chain.push(scheme);
            next = scheme.parent_id;
        }
        chain
    }

    /// eff(scheme, service, role): the first set value walking the scheme →
    /// parent → … → root (seed 002 "first non-null value wins"); 0 with no
    /// source when none sets it.
    pub fn effective(&self, scheme_id: SchemeId, service_code: &str, role: &str) -> Effective {
        let key = RateKey::new(service_code, role);
        self.chain(scheme_id)
            .into_iter()
            .find_map(|scheme| scheme.rates.get(&key).map(|rate| Effective { rate: *rate, source: Some(scheme.id) }))
            .unwrap_or(Effective { rate: Decimal::ZERO, source: None })
    }

    /// Every service code some scheme sets a rate for (the program's
    /// scheme-managed services), sorted.
    pub fn service_codes(&self) -> BTreeSet<String> {
        self.schemes.values().flat_map(|scheme| scheme.rates.keys().map(|key| key.service_code.clone())).collect()
    }

    /// Applies `changes` to one scheme's own rates (set or delete). False when
    /// the scheme is unknown.
    pub fn apply(&mut self, scheme_id: SchemeId, changes: &[RateChange]) -> bool {
        let Some(scheme) = self.schemes.get_mut(&scheme_id) else { return false };
        for change in changes {
            match change.rate {
                Some(rate) => {
                    scheme.rates.insert(change.key.clone(), rate);
                }
                None => {
                    scheme.rates.remove(&change.key);
                }
            }
        }
        true
    }

    /// Every place where, for one of `service_codes`, (a) a scheme's effective
    /// rate for a role exceeds its parent's, or (b) a role lower on `ladder`
    /// (highest first) has a higher effective rate than a role above it, in
    /// the same scheme (seed 002 "Child commissions cannot exceed parent
    /// limits", DESIGN §4 "a lower role's rate exceeds a higher role's").
    pub fn conflicts(&self, service_codes: &BTreeSet<String>, ladder: &[String]) -> Vec<RateConflict> {
        let mut conflicts = Vec::new();
        for scheme in self.schemes.values() {
            for service_code in service_codes {
                let rates: Vec<Effective> =
                    ladder.iter().map(|role| self.effective(scheme.id, service_code, role)).collect();
                if let Some(parent_id) = scheme.parent_id.filter(|parent| self.schemes.contains_key(parent)) {
                    for (role, effective) in ladder.iter().zip(&rates) {
                        let rate = &effective.rate;
                        let parent_rate = self.effective(parent_id, service_code, role).rate;
                        if *rate > parent_rate {
                            conflicts.push(RateConflict::AboveParent {
                                scheme_id: scheme.id,
                                parent_id,
                                service_code: service_code.clone(),
                                role: role.clone(),
                                rate: *rate,
                                parent_rate,
                            });
                        }
                    }
                }
                for (high, (higher_role, higher)) in ladder.iter().zip(&rates).enumerate() {
                    for (lower_role, lower) in ladder.iter().zip(&rates).skip(high + 1) {
                        if lower.rate > higher.rate {
                            conflicts.push(RateConflict::LowerRoleAbove {
                                scheme_id: scheme.id,
                                service_code: service_code.clone(),
                                higher_role: higher_role.clone(),
                                higher: *higher,
                                lower_role: lower_role.clone(),
                                lower_rate: lower.rate,
                            });
                        }
                    }
                }
            }
        }
        conflicts
    }

    /// Whether `candidate` is `scheme_id` or one of its parents.
    fn is_self_or_parent(&self, candidate: SchemeId, scheme_id: SchemeId) -> bool {
        self.chain(scheme_id).iter().any(|scheme| scheme.id == candidate)
    }

    /// Validates writing `changes` to `scheme_id` (seed 002, DESIGN §4): the
    /// changes are applied to a copy of the whole program tree, then every
    /// scheme is checked for every service code the changes touch. Only the
    /// written scheme and its descendants can change their effective rates,
    /// so a conflict is attributed to the written entries of its service code
    /// and role(s) when the written scheme is the conflicting scheme or one of
    /// its parents (this includes lowering a parent below a child's own
    /// value). Returns the updated tree, or every violation (nothing applied).
    pub fn check_write(
        &self,
        scheme_id: SchemeId,
        changes: &[RateChange],
        ladder: &[String],
    ) -> Result<SchemeTree, Vec<WriteViolation>> {
        let mut updated = self.clone();
        if !updated.apply(scheme_id, changes) {
            return Err(vec![WriteViolation { index: None, message: format!("scheme {scheme_id} is unknown") }]);
        }
        let touched: BTreeSet<String> = changes.iter().map(|change| change.key.service_code.clone()).collect();
        let mut by_index: BTreeMap<Option<usize>, Vec<String>> = BTreeMap::new();
        for conflict in updated.conflicts(&touched, ladder) {
            if !updated.is_self_or_parent(scheme_id, conflict.scheme_id()) {
                continue;
            }
            let message = conflict.describe(&updated);
            let mut matched = false;
            for (index, change) in changes.iter().enumerate() {
                if change.key.service_code == conflict.service_code() && conflict.involves_role(&change.key.role) {
                    by_index.entry(Some(index)).or_default().push(message.clone());
                    matched = true;
                }
            }
            if !matched {
                by_index.entry(None).or_default().push(message);
            }
        }
        if by_index.is_empty() {
            return Ok(updated);
        }
        Err(by_index
            .into_iter()
            .map(|(index, mut messages)| {
                messages.dedup();
                WriteViolation { index, message: messages.join("; ") }
            })
            .collect())
    }
}

/// The schemes of one program as settlement needs them: the tree, the
/// partners' assignments and the scheme-managed service codes.
#[derive(Debug, Clone, Default)]
pub struct SchemeBook {
    tree: SchemeTree,
    assignments: HashMap<PartnerId, SchemeId>,
    managed: BTreeSet<String>,
}

impl SchemeBook {
    /// A book over a program's tree and (some of) its partners' assignments
    /// (partner → scheme).
    pub fn new(tree: SchemeTree, assignments: HashMap<PartnerId, SchemeId>) -> Self {
        let managed = tree.service_codes();
        SchemeBook { tree, assignments, managed }
    }

    /// The tree.
    pub fn tree(&self) -> &SchemeTree {
        &self.tree
    }

    /// Whether a sale with this service code settles by scheme margins: some
    /// scheme of the program sets a rate for it (DESIGN §4 "a program may use
    /// schemes instead of agreements for a service_code").
    pub fn manages(&self, service_code: &str) -> bool {
        self.managed.contains(service_code)
    }

    /// The scheme a partner's sale uses: its assigned scheme, else the
    /// program's root (seed 002 "root scheme acts as the final fallback").
    /// The flag is true when the scheme was assigned.
    pub fn scheme_for(&self, partner: PartnerId) -> Option<(&Scheme, bool)> {
        match self.assignments.get(&partner).and_then(|id| self.tree.get(*id)) {
            Some(scheme) => Some((scheme, true)),
            None => self.tree.root().map(|root| (root, false)),
        }
    }
}
