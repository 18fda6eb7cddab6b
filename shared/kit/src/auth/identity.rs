//! Who a verified token says the caller is: roles, programs, the claims
//! they come from, and how handlers read the caller of a request.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use accrue_types::id::{PartnerId, ProgramId};
use serde::{Deserialize, Serialize};

/// What a token lets its holder do (DESIGN §6; the table is [`policy`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Everything in its programs.
    Admin,
    /// Payouts, approvals, entry transitions, exports; reads.
    Finance,
    /// A partner's own data, read-only (`partner_id` names it).
    Partner,
    /// An Accrue service calling its peers.
    Service,
    /// Reads only.
    Viewer,
}

impl Role {
    /// The claim's spelling ("admin").
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Finance => "finance",
            Role::Partner => "partner",
            Role::Service => "service",
            Role::Viewer => "viewer",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = Invalid;

    fn from_str(text: &str) -> Result<Self, Invalid> {
        match text {
            "admin" => Ok(Role::Admin),
            "finance" => Ok(Role::Finance),
            "partner" => Ok(Role::Partner),
            "service" => Ok(Role::Service),
            "viewer" => Ok(Role::Viewer),
            other => Err(Invalid(format!("unknown role {other:?}"))),
        }
    }
}

/// The programs a token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Programs {
    /// `"*"`: every program.
    All,
    /// These programs only.
    Only(BTreeSet<ProgramId>),
}

impl Programs {
    /// True when `program` is one of them.
    pub fn contains(&self, program: ProgramId) -> bool {
        match self {
            Programs::All => true,
            Programs::Only(ids) => ids.contains(&program),
        }
    }
}

/// A verified caller, as handlers find it in the request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The token's `sub`: a user, a backend, or `service:<schema>`; the actor
    /// audit records name.
    pub subject: String,
    /// The programs it may act in.
    pub programs: Programs,
    /// Its roles (at least one).
    pub roles: BTreeSet<Role>,
    /// The partner a partner token speaks for.
    pub partner_id: Option<PartnerId>,
}

impl Identity {
    /// True when the identity holds `role`.
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// The partner a partner token is confined to (issue 10 item 3): Some
    /// when the token holds the partner role and no role that reads a whole
    /// program (admin, finance, viewer, service); None otherwise.
    pub fn partner_scope(&self) -> Option<PartnerId> {
        if self.reads_whole_programs() { None } else { self.partner_id }
    }

    /// True when the token holds a role that reads all of its programs'
    /// data (admin, finance, viewer, service) rather than one partner's.
    pub fn reads_whole_programs(&self) -> bool {
        [Role::Admin, Role::Finance, Role::Viewer, Role::Service].iter().any(|r| self.has(*r))
    }

    /// True when the caller may see a resource of `program` that belongs to
    /// `partners` (an entry's or payout's partner, a link's owner and split
    /// partners, a partner's own id and its ancestors'): the token names the
    /// program and, for a partner token, its partner is one of them. Reads
    /// answer a resource the caller may not see exactly as a missing one
    /// (NOT_FOUND), so nothing about its existence leaks.
    pub fn may_see(&self, program: ProgramId, partners: &[PartnerId]) -> bool {
        self.programs.contains(program) && self.partner_scope().is_none_or(|own| partners.contains(&own))
    }

    /// The partner filter a list read runs with (issue 10 item 3):
    /// `Some(requested)` for a program-wide reader; for a partner token
    /// `Some(Some(own))` when it asked for itself or for no partner, and
    /// None when it asked for another partner — the handler then answers an
    /// empty page, exactly as for a partner without rows.
    pub fn partner_filter(&self, requested: Option<PartnerId>) -> Option<Option<PartnerId>> {
        match (self.partner_scope(), requested) {
            (None, requested) => Some(requested),
            (Some(own), None) => Some(Some(own)),
            (Some(own), Some(asked)) => (own == asked).then_some(Some(own)),
        }
    }

    /// The partner ids a batch read answers for (issue 10 item 3), where an
    /// empty list means every partner of the program: the request's list for
    /// a program-wide reader; for a partner token `[own]` when it asked for
    /// none or for itself among others, and None when it asked only for
    /// others — the handler then answers nothing, exactly as for partners
    /// without rows.
    pub fn partner_ids(&self, requested: Vec<PartnerId>) -> Option<Vec<PartnerId>> {
        match self.partner_scope() {
            None => Some(requested),
            Some(own) if requested.is_empty() || requested.contains(&own) => Some(vec![own]),
            Some(_) => None,
        }
    }

    /// Ok when the token names `program`; else NOT_FOUND PROGRAM_NOT_FOUND
    /// "program <id> not found" (issue 10 item 2). The answer does not depend
    /// on whether the program exists, so a token learns nothing about
    /// programs it does not name.
    pub fn require_program(&self, program: ProgramId) -> Result<(), tonic::Status> {
        if self.programs.contains(program) { Ok(()) } else { Err(crate::error::not_found("program", program)) }
    }
}

/// The verified caller of `request`, put there by [`AuthLayer`].
/// UNAUTHENTICATED when absent, which only a service hosted without the
/// layer would see.
pub fn caller<T>(request: &tonic::Request<T>) -> Result<&Identity, tonic::Status> {
    request.extensions().get::<Identity>().ok_or_else(|| tonic::Status::unauthenticated("invalid token"))
}

/// The audit actor of `request`: its caller's token subject (issue 10 item
/// 4: the actor comes from identity, never from a request field).
pub fn actor<T>(request: &tonic::Request<T>) -> Result<String, tonic::Status> {
    caller(request).map(|identity| identity.subject.clone())
}

/// The claims of an Accrue token (RFC 7519 registered claims plus
/// `programs`, `roles`, `partner_id`); `exp`, `nbf`, `iat` in Unix seconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// Subject.
    pub sub: String,
    /// Issuer.
    pub iss: String,
    /// Audience: one string or a list (RFC 7519 §4.1.3; identity providers
    /// send either). The token is valid when one of them is ours.
    pub aud: Audience,
    /// Expiry.
    pub exp: u64,
    /// Not before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Program ids, or `["*"]`.
    #[serde(default)]
    pub programs: Vec<String>,
    /// Role names.
    #[serde(default)]
    pub roles: Vec<String>,
    /// The partner of a partner token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partner_id: Option<String>,
}

/// A token's `aud`: one audience or several.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// `"aud": "accrue"`.
    One(String),
    /// `"aud": ["accrue", "billing"]`.
    Many(Vec<String>),
}

impl From<&str> for Audience {
    fn from(audience: &str) -> Self {
        Audience::One(audience.to_string())
    }
}

impl Claims {
    /// The identity these claims describe: every role known, every program
    /// a UUID or `*`, a partner token naming its partner, at least one role
    /// and one program.
    pub fn identity(&self) -> Result<Identity, Invalid> {
        if self.sub.is_empty() {
            return Err(Invalid("empty sub".into()));
        }
        let roles = self.roles.iter().map(|r| r.parse()).collect::<Result<BTreeSet<Role>, _>>()?;
        if roles.is_empty() {
            return Err(Invalid("no roles".into()));
        }
        let programs = if self.programs.iter().any(|p| p == "*") {
            Programs::All
        } else {
            let ids = self
                .programs
                .iter()
                .map(|p| p.parse::<ProgramId>().map_err(|e| Invalid(e.to_string())))
                .collect::<Result<BTreeSet<_>, _>>()?;
            if ids.is_empty() {
                return Err(Invalid("no programs".into()));
            }
            Programs::Only(ids)
        };
        let partner_id = match &self.partner_id {
            Some(text) if !text.is_empty() => Some(text.parse::<PartnerId>().map_err(|e| Invalid(e.to_string()))?),
            _ => None,
        };
        if roles.contains(&Role::Partner) && partner_id.is_none() {
            return Err(Invalid("a partner token without partner_id".into()));
        }
        let identity = Identity { subject: self.sub.clone(), programs, roles, partner_id };
        // A partner belongs to one program; `*` would let its token read
        // every program's settings and learn which program ids exist.
        if identity.partner_scope().is_some() && identity.programs == Programs::All {
            return Err(Invalid("a partner token must name its program, not *".into()));
        }
        Ok(identity)
    }
}

/// Why a token was refused; logged, never sent to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid token: {0}")]
pub struct Invalid(pub String);
