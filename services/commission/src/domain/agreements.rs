//! The agreement versions of a program and the one in force for a sale
//! (DESIGN §4 "one version in force per scope at a time"; seed 003).

use std::collections::HashMap;

use accrue_types::{AgreementId, AgreementVersionId, PartnerId};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::rules::AgreementRules;

/// An immutable agreement version as the calculation sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgreementVersion {
    /// Version id.
    pub id: AgreementVersionId,
    /// The agreement (scope series) it belongs to.
    pub agreement_id: AgreementId,
    /// Partner scope; `None` for the program default.
    pub partner_id: Option<PartnerId>,
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
    partners: HashMap<PartnerId, Vec<AgreementVersion>>,
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
    pub fn with_draft(self, seller: PartnerId, rules: AgreementRules) -> Self {
        self.with_draft_version(Some(seller), None, rules)
    }

    /// The book with an unsaved draft version of the agreement of `scope`
    /// (a partner, or `None` for the program default; SimulateProgram's
    /// drafts, issue 16 item 2, and QuoteSale's). With `effective_from` the
    /// draft is the scope's next version, in force from then on; without, it
    /// replaces every version of the scope (in force at every time). It keeps
    /// the scope's agreement id when the scope has one, so the customer's
    /// earlier events under that agreement count for the setup fee and the
    /// per-customer limits; its version id is the nil UUID (never stored).
    pub fn with_draft_version(
        mut self,
        scope: Option<PartnerId>,
        effective_from: Option<DateTime<Utc>>,
        rules: AgreementRules,
    ) -> Self {
        let versions = match scope {
            Some(partner) => self.partners.entry(partner).or_default(),
            None => &mut self.default,
        };
        let agreement_id = versions.first().map_or_else(
            || {
                let seed = scope.map_or(Uuid::nil(), |partner| *partner.as_uuid());
                AgreementId::from_uuid(Uuid::new_v5(&Uuid::NAMESPACE_OID, seed.as_bytes()))
            },
            |version| version.agreement_id,
        );
        let draft = AgreementVersion {
            id: AgreementVersionId::from_uuid(Uuid::nil()),
            agreement_id,
            partner_id: scope,
            // A replacing draft is version 0 (as QuoteSale's always was).
            version: match effective_from {
                Some(_) => versions.iter().map(|v| v.version).max().map_or(1, |v| v + 1),
                None => 0,
            },
            effective_from: effective_from.unwrap_or(DateTime::<Utc>::MIN_UTC),
            rules,
        };
        if effective_from.is_none() {
            versions.clear();
        }
        versions.push(draft);
        self
    }

    fn in_force_of(versions: &[AgreementVersion], at: DateTime<Utc>) -> Option<&AgreementVersion> {
        versions.iter().filter(|v| v.effective_from <= at).max_by_key(|v| (v.effective_from, v.version))
    }

    /// The version that applies to a sale by `seller` at `at`: the seller's
    /// own agreement's version with the greatest `effective_from ≤ at` (equal
    /// `effective_from`: the higher version number), else the program
    /// default's version in force, else none.
    pub fn in_force(&self, seller: PartnerId, at: DateTime<Utc>) -> Option<&AgreementVersion> {
        self.partners
            .get(&seller)
            .and_then(|versions| Self::in_force_of(versions, at))
            .or_else(|| Self::in_force_of(&self.default, at))
    }
}
