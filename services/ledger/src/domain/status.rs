//! The entry status state machine (seed 003; DESIGN §5).

use std::fmt;

use accrue_proto::ledger::v1 as pb;
use accrue_types::EntryId;

/// An entry's status, as stored (`entry_states.status`, `entry_status_events`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// In its clearance period.
    Pending,
    /// Clearance passed.
    Cleared,
    /// Approved for payout.
    Approved,
    /// Paid.
    Paid,
    /// Under review.
    Disputed,
    /// Reversed (terminal).
    Reversed,
    /// Voided (terminal).
    Voided,
}

impl Status {
    /// Every status.
    pub const ALL: [Status; 7] = [
        Status::Pending,
        Status::Cleared,
        Status::Approved,
        Status::Paid,
        Status::Disputed,
        Status::Reversed,
        Status::Voided,
    ];

    /// The stored name ("PENDING").
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "PENDING",
            Status::Cleared => "CLEARED",
            Status::Approved => "APPROVED",
            Status::Paid => "PAID",
            Status::Disputed => "DISPUTED",
            Status::Reversed => "REVERSED",
            Status::Voided => "VOIDED",
        }
    }

    /// Parses a stored name.
    pub fn parse(name: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|status| status.as_str() == name)
    }

    /// From the wire; `None` for UNSPECIFIED or unknown values.
    pub fn from_proto(value: i32) -> Option<Status> {
        match pb::EntryStatus::try_from(value).ok()? {
            pb::EntryStatus::Unspecified => None,
            pb::EntryStatus::Pending => Some(Status::Pending),
            pb::EntryStatus::Cleared => Some(Status::Cleared),
            pb::EntryStatus::Approved => Some(Status::Approved),
            pb::EntryStatus::Paid => Some(Status::Paid),
            pb::EntryStatus::Disputed => Some(Status::Disputed),
            pb::EntryStatus::Reversed => Some(Status::Reversed),
            pb::EntryStatus::Voided => Some(Status::Voided),
        }
    }

    /// To the wire.
    pub fn to_proto(self) -> pb::EntryStatus {
        match self {
            Status::Pending => pb::EntryStatus::Pending,
            Status::Cleared => pb::EntryStatus::Cleared,
            Status::Approved => pb::EntryStatus::Approved,
            Status::Paid => pb::EntryStatus::Paid,
            Status::Disputed => pb::EntryStatus::Disputed,
            Status::Reversed => pb::EntryStatus::Reversed,
            Status::Voided => pb::EntryStatus::Voided,
        }
    }

    /// Whether `self → to` is a legal move (seed 003): PENDING → CLEARED |
    /// VOIDED | DISPUTED | REVERSED; CLEARED → APPROVED | DISPUTED | REVERSED;
    /// APPROVED → PAID | DISPUTED | REVERSED; PAID → DISPUTED | REVERSED;
    /// DISPUTED → CLEARED | REVERSED | VOIDED. REVERSED and VOIDED are terminal.
    /// A refund reversing a line in full needs exactly "any non-terminal →
    /// REVERSED" (PAID included, seed 003); the one way out of REVERSED, and
    /// voiding a CLEARED or APPROVED debit, belong to the compensation of a
    /// reversal only (`reversal::plan_void`), never to this machine.
    pub fn can_move_to(self, to: Status) -> bool {
        use Status::*;
        matches!(
            (self, to),
            (Pending, Cleared | Voided | Disputed | Reversed)
                | (Cleared, Approved | Disputed | Reversed)
                | (Approved, Paid | Disputed | Reversed)
                | (Paid, Disputed | Reversed)
                | (Disputed, Cleared | Reversed | Voided)
        )
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name of a stored status for the wire, UNSPECIFIED when it is empty or
/// unknown (the creation event's `from_status`).
pub fn proto_from_stored(name: &str) -> pb::EntryStatus {
    Status::parse(name).map(Status::to_proto).unwrap_or(pb::EntryStatus::Unspecified)
}

/// One entry's current state, as read (locked) before a transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Current {
    /// Entry id.
    pub id: EntryId,
    /// Its status now.
    pub status: Status,
    /// Whether a payout holds a reservation on it.
    pub reserved: bool,
}

/// Why a batch transition is refused (nothing of it is applied).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    /// The move is not in the state machine.
    #[error("entry {id} cannot move from {from} to {to}")]
    Invalid {
        /// The entry.
        id: EntryId,
        /// Its status.
        from: Status,
        /// The requested status.
        to: Status,
    },
    /// The entry is reserved for a payout, so it cannot be voided.
    #[error("entry {id} is reserved for a payout and cannot be voided")]
    Reserved {
        /// The entry.
        id: EntryId,
    },
}

/// Plans an all-or-nothing transition of `entries` to `to`: entries already
/// in `to` are skipped (so an undo that voids twice is harmless); any illegal
/// move, or voiding a reserved entry, refuses the whole batch. Returns the
/// `(id, from)` pairs that change, in input order.
pub fn plan_transition(entries: &[Current], to: Status) -> Result<Vec<(EntryId, Status)>, TransitionError> {
    let mut moves = Vec::with_capacity(entries.len());
    for entry in entries {
        if entry.status == to {
            continue;
        }
        if !entry.status.can_move_to(to) {
            return Err(TransitionError::Invalid { id: entry.id, from: entry.status, to });
        }
        if to == Status::Voided && entry.reserved {
            return Err(TransitionError::Reserved { id: entry.id });
        }
        moves.push((entry.id, entry.status));
    }
    Ok(moves)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_003_transitions() {
        use Status::*;
        let legal = [
            (Pending, Cleared),
            (Pending, Voided),
            (Pending, Disputed),
            (Pending, Reversed),
            (Cleared, Approved),
            (Cleared, Disputed),
            (Cleared, Reversed),
            (Approved, Paid),
            (Approved, Disputed),
            (Approved, Reversed),
            (Paid, Disputed),
            (Paid, Reversed),
            (Disputed, Cleared),
            (Disputed, Reversed),
            (Disputed, Voided),
        ];
        for from in Status::ALL {
            for to in Status::ALL {
                assert_eq!(from.can_move_to(to), legal.contains(&(from, to)), "{from} → {to}");
            }
        }
    }

    #[test]
    fn names_round_trip() {
        for status in Status::ALL {
            assert_eq!(Status::parse(status.as_str()), Some(status));
            assert_eq!(Status::from_proto(status.to_proto() as i32), Some(status));
        }
        assert_eq!(Status::from_proto(0), None);
        assert_eq!(proto_from_stored("UNSPECIFIED"), pb::EntryStatus::Unspecified);
    }

    #[test]
    fn plan_skips_entries_already_there_and_refuses_illegal_moves() {
        let a = EntryId::from_u128(1);
        let b = EntryId::from_u128(2);
        let c = EntryId::from_u128(3);
        let entries = [
            Current { id: a, status: Status::Pending, reserved: false },
            Current { id: b, status: Status::Voided, reserved: false },
        ];
        assert_eq!(plan_transition(&entries, Status::Voided), Ok(vec![(a, Status::Pending)]));
        let with_paid = [entries[0], Current { id: c, status: Status::Paid, reserved: false }];
        assert_eq!(
            plan_transition(&with_paid, Status::Voided),
            Err(TransitionError::Invalid { id: c, from: Status::Paid, to: Status::Voided })
        );
    }

    #[test]
    fn reserved_entries_cannot_be_voided() {
        let a = EntryId::from_u128(1);
        let entries = [Current { id: a, status: Status::Disputed, reserved: true }];
        assert!(matches!(plan_transition(&entries, Status::Voided), Err(TransitionError::Reserved { .. })));
        assert_eq!(plan_transition(&entries, Status::Cleared), Ok(vec![(a, Status::Disputed)]));
    }
}
