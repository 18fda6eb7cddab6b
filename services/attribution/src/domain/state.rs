//! Sale and saga states and their names in the database and on the wire.

use accrue_proto::attribution::v1 as pb;

/// A sale's lifecycle state (stored upper case).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SaleState {
    /// Recorded; its saga is running.
    Pending,
    /// Every line posted.
    Settled,
    /// The saga failed and unwound.
    Failed,
    /// No customer or no lead.
    Unattributed,
}

impl SaleState {
    /// The database name.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SaleState::Pending => "PENDING",
            SaleState::Settled => "SETTLED",
            SaleState::Failed => "FAILED",
            SaleState::Unattributed => "UNATTRIBUTED",
        }
    }

    /// From the database name.
    pub(crate) fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "PENDING" => SaleState::Pending,
            "SETTLED" => SaleState::Settled,
            "FAILED" => SaleState::Failed,
            "UNATTRIBUTED" => SaleState::Unattributed,
            _ => return None,
        })
    }

    /// The wire enum.
    pub(crate) fn to_proto(self) -> pb::SaleState {
        match self {
            SaleState::Pending => pb::SaleState::Pending,
            SaleState::Settled => pb::SaleState::Settled,
            SaleState::Failed => pb::SaleState::Failed,
            SaleState::Unattributed => pb::SaleState::Unattributed,
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
        }
    }
}

/// A saga's state (stored lower case, as steno names them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SagaState {
    /// Running its actions.
    Running,
    /// Running undo actions.
    Unwinding,
    /// Finished.
    Done,
    /// Unwound.
    Failed,
    /// An undo failed; an operator must look.
    Stuck,
}

impl SagaState {
    /// The database name.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SagaState::Running => "running",
            SagaState::Unwinding => "unwinding",
            SagaState::Done => "done",
            SagaState::Failed => "failed",
            SagaState::Stuck => "stuck",
        }
    }

    /// From the database name.
    pub(crate) fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "running" => SagaState::Running,
            "unwinding" => SagaState::Unwinding,
            "done" => SagaState::Done,
            "failed" => SagaState::Failed,
            "stuck" => SagaState::Stuck,
            _ => return None,
        })
    }

    /// The wire enum.
    pub(crate) fn to_proto(self) -> pb::SagaState {
        match self {
            SagaState::Running => pb::SagaState::Running,
            SagaState::Unwinding => pb::SagaState::Unwinding,
            SagaState::Done => pb::SagaState::Done,
            SagaState::Failed => pb::SagaState::Failed,
            SagaState::Stuck => pb::SagaState::Stuck,
        }
    }

    /// From the wire enum (UNSPECIFIED → None: no filter).
    pub(crate) fn from_proto(state: pb::SagaState) -> Option<Self> {
        match state {
            pb::SagaState::Unspecified => None,
            pb::SagaState::Running => Some(SagaState::Running),
            pb::SagaState::Unwinding => Some(SagaState::Unwinding),
            pb::SagaState::Done => Some(SagaState::Done),
            pb::SagaState::Failed => Some(SagaState::Failed),
            pb::SagaState::Stuck => Some(SagaState::Stuck),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in [SaleState::Pending, SaleState::Settled, SaleState::Failed, SaleState::Unattributed] {
            assert_eq!(SaleState::parse(s.as_str()), Some(s));
            assert_eq!(SaleState::from_proto(s.to_proto()), Some(s));
        }
        for s in [SagaState::Running, SagaState::Unwinding, SagaState::Done, SagaState::Failed, SagaState::Stuck] {
            assert_eq!(SagaState::parse(s.as_str()), Some(s));
            assert_eq!(SagaState::from_proto(s.to_proto()), Some(s));
        }
        assert_eq!(SaleState::parse("nope"), None);
    }
}
