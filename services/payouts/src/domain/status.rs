//! Payout states (seed 001): PENDING_APPROVAL → APPROVED → PROCESSING → PAID;
//! APPROVED → PAID; PENDING_APPROVAL → REJECTED; PROCESSING → FAILED →
//! PROCESSING (retry); PENDING_APPROVAL → DELETED (DeletePayout).

use accrue_proto::payouts::v1 as pb;

/// A payout's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PayoutStatus {
    /// Awaiting approval (every payout a run creates starts here).
    PendingApproval,
    /// Approved.
    Approved,
    /// Rejected; its reservation is released.
    Rejected,
    /// Being paid.
    Processing,
    /// Paid; its entries are settled.
    Paid,
    /// Payment failed; may be retried.
    Failed,
    /// Deleted while awaiting approval (DeletePayout, AIP-164 soft delete);
    /// its reservation is released.
    Deleted,
}

impl PayoutStatus {
    /// Every state.
    pub const ALL: [PayoutStatus; 7] = [
        PayoutStatus::PendingApproval,
        PayoutStatus::Approved,
        PayoutStatus::Rejected,
        PayoutStatus::Processing,
        PayoutStatus::Paid,
        PayoutStatus::Failed,
        PayoutStatus::Deleted,
    ];

    /// The stored name ("PENDING_APPROVAL").
    pub fn as_str(self) -> &'static str {
        match self {
            PayoutStatus::PendingApproval => "PENDING_APPROVAL",
            PayoutStatus::Approved => "APPROVED",
            PayoutStatus::Rejected => "REJECTED",
            PayoutStatus::Processing => "PROCESSING",
            PayoutStatus::Paid => "PAID",
            PayoutStatus::Failed => "FAILED",
            PayoutStatus::Deleted => "DELETED",
        }
    }

    /// Parses a stored name.
    pub fn from_str_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == name)
    }

    /// The state a wire value names; `None` for UNSPECIFIED or unknown values.
    pub fn from_proto(value: i32) -> Option<Self> {
        match pb::PayoutStatus::try_from(value).ok()? {
            pb::PayoutStatus::Unspecified => None,
            pb::PayoutStatus::PendingApproval => Some(PayoutStatus::PendingApproval),
            pb::PayoutStatus::Approved => Some(PayoutStatus::Approved),
            pb::PayoutStatus::Rejected => Some(PayoutStatus::Rejected),
            pb::PayoutStatus::Processing => Some(PayoutStatus::Processing),
            pb::PayoutStatus::Paid => Some(PayoutStatus::Paid),
            pb::PayoutStatus::Failed => Some(PayoutStatus::Failed),
            pb::PayoutStatus::Deleted => Some(PayoutStatus::Deleted),
        }
    }

    /// The wire value.
    pub fn to_proto(self) -> pb::PayoutStatus {
        match self {
            PayoutStatus::PendingApproval => pb::PayoutStatus::PendingApproval,
            PayoutStatus::Approved => pb::PayoutStatus::Approved,
            PayoutStatus::Rejected => pb::PayoutStatus::Rejected,
            PayoutStatus::Processing => pb::PayoutStatus::Processing,
            PayoutStatus::Paid => pb::PayoutStatus::Paid,
            PayoutStatus::Failed => pb::PayoutStatus::Failed,
            PayoutStatus::Deleted => pb::PayoutStatus::Deleted,
        }
    }
}

/// The name an audit event uses for "no state yet" (a payout's creation).
pub const CREATED_FROM: &str = "UNSPECIFIED";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for status in PayoutStatus::ALL {
            assert_eq!(PayoutStatus::from_str_name(status.as_str()), Some(status));
            assert_eq!(PayoutStatus::from_proto(status.to_proto() as i32), Some(status));
        }
        assert_eq!(PayoutStatus::from_proto(0), None);
        assert_eq!(PayoutStatus::from_proto(99), None);
        assert_eq!(PayoutStatus::from_str_name("SENT"), None);
    }
}
