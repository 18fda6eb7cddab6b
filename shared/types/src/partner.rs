//! A partner's standing in its program (DESIGN §2). Hierarchy keeps it (the
//! `partners.status` column, by [`PartnerStatus::as_str`]); commission reads it
//! at settlement time to decide who earns. The wire form is
//! `accrue.type.v1.PartnerStatus`; each service's codec converts.

/// A partner's standing: ACTIVE earns and is paid; SUSPENDED accrues but is
/// not paid and forfeits override levels (unless compression); TERMINATED
/// earns nothing new.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PartnerStatus {
    /// Earns and is paid.
    Active,
    /// Still accrues, is not paid out, forfeits override levels unless compression is on.
    Suspended,
    /// Earns nothing new; a split share falls back to the link owner.
    Terminated,
}

impl PartnerStatus {
    /// Every status, in wire-number order.
    pub const ALL: [PartnerStatus; 3] = [PartnerStatus::Active, PartnerStatus::Suspended, PartnerStatus::Terminated];

    /// The stored and logged name ("ACTIVE"): the proto value name without
    /// its `PARTNER_STATUS_` prefix.
    pub fn as_str(self) -> &'static str {
        match self {
            PartnerStatus::Active => "ACTIVE",
            PartnerStatus::Suspended => "SUSPENDED",
            PartnerStatus::Terminated => "TERMINATED",
        }
    }

    /// Parses a name written by [`PartnerStatus::as_str`]; case-sensitive.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::PartnerStatus;

    #[test]
    fn names_round_trip() {
        for status in PartnerStatus::ALL {
            assert_eq!(PartnerStatus::from_name(status.as_str()), Some(status));
        }
        assert_eq!(PartnerStatus::from_name("active"), None);
        assert_eq!(PartnerStatus::from_name("PARTNER_STATUS_ACTIVE"), None);
    }
}
