//! gRPC clients of the services attribution calls (hierarchy, commission,
//! ledger), and how their errors are classified for the saga.

use accrue_kit::auth::Credential;
use accrue_kit::client::{AuthChannel, RawClient};
use accrue_kit::client::{ClientError, PEER_TIMEOUT, channel_with_timeout, connect, over};
use accrue_proto::commission::v1::commission_service_client::CommissionServiceClient;
use accrue_proto::hierarchy::v1::hierarchy_service_client::HierarchyServiceClient;
use accrue_proto::ledger::v1::ledger_service_client::LedgerServiceClient;
use accrue_saga::StepError;
use tonic::Code;

/// Lazily connected clients of the peer services (cheap to clone).
#[derive(Debug, Clone)]
pub(crate) struct Peers {
    pub(crate) hierarchy: HierarchyServiceClient<AuthChannel>,
    pub(crate) commission: CommissionServiceClient<AuthChannel>,
    pub(crate) ledger: LedgerServiceClient<AuthChannel>,
    /// Commission's ComputeSettlements and the ledger's PostEntries with
    /// the breakdowns kept encoded ([`accrue_proto::passthrough`]), over
    /// the same connections as the clients above.
    pub(crate) commission_raw: RawClient,
    pub(crate) ledger_raw: RawClient,
}

impl Peers {
    /// Channels to the three peers, every call carrying `credential`;
    /// nothing connects until the first call.
    pub(crate) fn connect(
        hierarchy: &str,
        commission: &str,
        ledger: &str,
        credential: &Credential,
    ) -> Result<Self, ClientError> {
        let commission = channel_with_timeout(commission, PEER_TIMEOUT)?;
        let ledger = channel_with_timeout(ledger, PEER_TIMEOUT)?;
        Ok(Peers {
            hierarchy: connect(hierarchy, PEER_TIMEOUT, credential)?,
            commission: over(commission.clone(), credential),
            ledger: over(ledger.clone(), credential),
            commission_raw: over(commission, credential),
            ledger_raw: over(ledger, credential),
        })
    }
}

/// A peer's error as a saga step sees it: permanent when the request itself
/// is wrong, internal when the peer answered INTERNAL (a bug or an input it
/// cannot digest: retried a bounded number of times, then the saga is STUCK
/// for an operator), transient otherwise (the peer or the network is having
/// trouble: retried without bound, which is what recovery is for).
pub(crate) fn step_error(peer: &str, status: &tonic::Status) -> StepError {
    let message = format!("{peer}: {:?}: {}", status.code(), status.message());
    if !is_transient(status.code()) {
        StepError::Permanent(message)
    } else if status.code() == Code::Internal && !is_transport_error(status) {
        StepError::Internal(message)
    } else {
        StepError::Transient(message)
    }
}

/// True for an INTERNAL that tonic made up on this side from an HTTP/2 error
/// (a connection reset with NO_ERROR, a GOAWAY while a peer restarts), not
/// one the peer answered: that is the network, so transient. tonic names
/// every such status "h2 protocol error: …".
fn is_transport_error(status: &tonic::Status) -> bool {
    status.message().starts_with("h2 protocol error")
}

/// True when a peer's status is worth retrying (the peer or the network is
/// having trouble); false when the request itself is wrong (retrying gives the
/// same answer).
fn is_transient(code: Code) -> bool {
    !matches!(
        code,
        Code::InvalidArgument
            | Code::FailedPrecondition
            | Code::NotFound
            | Code::AlreadyExists
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::OutOfRange
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_codes() {
        for code in [Code::Unavailable, Code::DeadlineExceeded, Code::Aborted, Code::ResourceExhausted, Code::Internal]
        {
            assert!(is_transient(code), "{code:?}");
        }
        for code in [Code::InvalidArgument, Code::FailedPrecondition, Code::NotFound, Code::AlreadyExists] {
            assert!(!is_transient(code), "{code:?}");
        }
    }

    #[test]
    fn classifies_peer_errors() {
        for status in [
            tonic::Status::unavailable("down"),
            tonic::Status::deadline_exceeded("slow"),
            tonic::Status::aborted("busy"),
            tonic::Status::unknown("transport error"),
            tonic::Status::internal("h2 protocol error: stream no longer needed"),
        ] {
            assert!(matches!(step_error("ledger", &status), StepError::Transient(_)), "{status:?}");
        }
        let status = tonic::Status::internal("internal error");
        assert!(
            matches!(step_error("ledger", &status), StepError::Internal(m) if m == "ledger: Internal: internal error")
        );
        let status = tonic::Status::failed_precondition("no");
        assert!(
            matches!(step_error("ledger", &status), StepError::Permanent(m) if m.starts_with("ledger: FailedPrecondition"))
        );
    }
}
