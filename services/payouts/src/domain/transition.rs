//! The payout state machine (seed 001, DESIGN §5) — the one place its rule
//! lives: PENDING_APPROVAL → APPROVED → PROCESSING → PAID; APPROVED → PAID;
//! PENDING_APPROVAL → REJECTED; PROCESSING → FAILED → PROCESSING (a retry);
//! and PENDING_APPROVAL → DELETED (DeletePayout, issue 12 item 2). Every
//! other move, staying in place included, is refused. Also what each
//! move does to the payout's ledger reservation, and the maker-checker rule
//! (issue 12 item 4). Pure: no I/O, no protobuf.

use super::status::PayoutStatus;

/// A refused move (FAILED_PRECONDITION, reason INVALID_PAYOUT_TRANSITION).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("payout cannot move from {} to {}", from.as_str(), to.as_str())]
pub struct InvalidTransition {
    /// The payout's status.
    pub from: PayoutStatus,
    /// The requested status.
    pub to: PayoutStatus,
}

/// What a move does to the payout's entries in the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedgerEffect {
    /// Nothing: the entries stay reserved.
    None,
    /// ReleaseReservation: the entries go back to the partner's payable
    /// balance for a later run (REJECTED, DELETED).
    Release,
    /// SettleReservation: the reserved entries become PAID (PAID).
    Settle,
}

impl PayoutStatus {
    /// Whether `self → to` is a move of the state machine (seed 001).
    pub fn can_move_to(self, to: PayoutStatus) -> bool {
        use PayoutStatus::*;
        matches!(
            (self, to),
            (PendingApproval, Approved | Rejected | Deleted)
                | (Approved, Processing | Paid)
                | (Processing, Paid | Failed)
                | (Failed, Processing)
        )
    }
}

/// Checks `from → to` against the state machine and says what it does to
/// the ledger reservation: REJECTED and DELETED release it, PAID settles it, and every
/// other move keeps it — FAILED included, because a failed payment is
/// retried (FAILED → PROCESSING → PAID) and must still own its entries then;
/// releasing them at FAILED would let a later run reserve and pay them a
/// second time.
///
/// Errors: [`InvalidTransition`] naming `from` and `to`.
pub fn plan(from: PayoutStatus, to: PayoutStatus) -> Result<LedgerEffect, InvalidTransition> {
    if !from.can_move_to(to) {
        return Err(InvalidTransition { from, to });
    }
    Ok(match to {
        PayoutStatus::Rejected | PayoutStatus::Deleted => LedgerEffect::Release,
        PayoutStatus::Paid => LedgerEffect::Settle,
        _ => LedgerEffect::None,
    })
}

/// The maker-checker refusal (PERMISSION_DENIED, reason SAME_APPROVER).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{approver} created this payout's run; with require_second_approver another identity must approve it")]
pub struct SameApprover {
    /// The refused approver (token subject).
    pub approver: String,
}

/// Maker-checker (issue 12 item 4): when the program requires a second
/// approver, the identity that created the payout (its run) may not approve
/// it. A payout whose creator is unknown (created before creators were kept)
/// may be approved by anyone.
///
/// Errors: [`SameApprover`].
pub fn check_approver(
    require_second_approver: bool,
    creator: Option<&str>,
    approver: &str,
) -> Result<(), SameApprover> {
    if require_second_approver && creator == Some(approver) {
        return Err(SameApprover { approver: approver.to_string() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use PayoutStatus::*;

    #[test]
    fn seed_001_moves_and_nothing_else() {
        let allowed = [
            (PendingApproval, Approved),
            (Approved, Processing),
            (Processing, Paid),
            (Approved, Paid),
            (PendingApproval, Rejected),
            (PendingApproval, Deleted),
            (Processing, Failed),
            (Failed, Processing),
        ];
        for from in PayoutStatus::ALL {
            for to in PayoutStatus::ALL {
                let result = plan(from, to);
                if allowed.contains(&(from, to)) {
                    assert!(result.is_ok(), "{from:?} → {to:?}");
                } else {
                    assert_eq!(result, Err(InvalidTransition { from, to }), "{from:?} → {to:?}");
                }
            }
        }
    }

    #[test]
    fn reject_releases_paid_settles_failed_keeps() {
        assert_eq!(plan(PendingApproval, Rejected), Ok(LedgerEffect::Release));
        assert_eq!(plan(PendingApproval, Deleted), Ok(LedgerEffect::Release));
        assert_eq!(plan(Approved, Paid), Ok(LedgerEffect::Settle));
        assert_eq!(plan(Processing, Paid), Ok(LedgerEffect::Settle));
        assert_eq!(plan(Processing, Failed), Ok(LedgerEffect::None));
        assert_eq!(plan(Failed, Processing), Ok(LedgerEffect::None));
        assert_eq!(plan(PendingApproval, Approved), Ok(LedgerEffect::None));
    }

    #[test]
    fn the_error_names_from_and_to() {
        let error = plan(Paid, Approved).unwrap_err();
        assert_eq!(error.to_string(), "payout cannot move from PAID to APPROVED");
    }

    #[test]
    fn maker_checker() {
        assert!(check_approver(true, Some("alice"), "alice").is_err());
        assert!(check_approver(true, Some("alice"), "bob").is_ok());
        assert!(check_approver(false, Some("alice"), "alice").is_ok());
        assert!(check_approver(true, None, "alice").is_ok());
    }
}
