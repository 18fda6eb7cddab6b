//! Sale states, and how sale and saga states map to the wire. A saga's state
//! is the engine's ([`accrue_saga::SagaState`]).

use accrue_proto::attribution::v1 as pb;
use accrue_saga::SagaState;

/// A sale's lifecycle state (stored upper case). Written by the sale store alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum SaleState {
    /// Recorded; its saga is running.
    Pending,
    /// Every line posted.
    Settled,
    /// The saga failed and unwound.
    Failed,
    /// No customer or no lead.
    Unattributed,
    /// Settled, then partly refunded and clawed back.
    PartiallyRefunded,
    /// Settled, then refunded in full.
    Refunded,
}

impl SaleState {
    /// The stored name.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SaleState::Pending => "PENDING",
            SaleState::Settled => "SETTLED",
            SaleState::Failed => "FAILED",
            SaleState::Unattributed => "UNATTRIBUTED",
            SaleState::PartiallyRefunded => "PARTIALLY_REFUNDED",
            SaleState::Refunded => "REFUNDED",
        }
    }

    /// The wire enum.
    pub(crate) fn to_proto(self) -> pb::SaleState {
        match self {
            SaleState::Pending => pb::SaleState::Pending,
            SaleState::Settled => pb::SaleState::Settled,
            SaleState::Failed => pb::SaleState::Failed,
            SaleState::Unattributed => pb::SaleState::Unattributed,
            SaleState::PartiallyRefunded => pb::SaleState::PartiallyRefunded,
            SaleState::Refunded => pb::SaleState::Refunded,
        }
    }

    /// From the wire enum (UNSPECIFIED → None: no filter).
    pub(crate) fn from_proto(state: pb::SaleState) -> Option<Self> {
        match state {
            pb::SaleState::Unspecified => None,
            pb::SaleState::Pending => Some(SaleState::Pending),
            pb::SaleState::Settled => Some(SaleState::Settled),
            pb::SaleState::Failed => Some(SaleState::Failed),
            pb::SaleState::Unattributed => Some(SaleState::Unattributed),
            pb::SaleState::PartiallyRefunded => Some(SaleState::PartiallyRefunded),
            pb::SaleState::Refunded => Some(SaleState::Refunded),
        }
    }
}

/// A saga state on the wire.
pub(crate) fn saga_state_to_proto(state: SagaState) -> pb::SagaState {
    match state {
        SagaState::Running => pb::SagaState::Running,
        SagaState::Unwinding => pb::SagaState::Unwinding,
        SagaState::Done => pb::SagaState::Done,
        SagaState::Failed => pb::SagaState::Failed,
        SagaState::Stuck => pb::SagaState::Stuck,
    }
}

/// A saga state from the wire (UNSPECIFIED → None: no filter).
pub(crate) fn saga_state_from_proto(state: pb::SagaState) -> Option<SagaState> {
    match state {
        pb::SagaState::Unspecified => None,
        pb::SagaState::Running => Some(SagaState::Running),
        pb::SagaState::Unwinding => Some(SagaState::Unwinding),
        pb::SagaState::Done => Some(SagaState::Done),
        pb::SagaState::Failed => Some(SagaState::Failed),
        pb::SagaState::Stuck => Some(SagaState::Stuck),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_round_trip() {
        for s in [
            SaleState::Pending,
            SaleState::Settled,
            SaleState::Failed,
            SaleState::Unattributed,
            SaleState::PartiallyRefunded,
            SaleState::Refunded,
        ] {
            assert_eq!(SaleState::from_proto(s.to_proto()), Some(s));
        }
        for s in SagaState::ALL {
            assert_eq!(saga_state_from_proto(saga_state_to_proto(s)), Some(s));
        }
    }
}
