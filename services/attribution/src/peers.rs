//! gRPC clients of the services attribution calls (hierarchy, commission,
//! ledger), and how their errors are classified for the saga.

use accrue_kit::auth::Credential;
use accrue_kit::client::AuthChannel;
use accrue_kit::client::{ClientError, PEER_TIMEOUT, connect};
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
        Ok(Peers {
            hierarchy: connect(hierarchy, PEER_TIMEOUT, credential)?,
            commission: connect(commission, PEER_TIMEOUT, credential)?,
            ledger: connect(ledger, PEER_TIMEOUT, credential)?,
        })
    }
}

/// A peer's error as a saga step sees it: transient when worth retrying (see
/// [`is_transient`]), permanent when the request itself is wrong.
pub(crate) fn step_error(peer: &str, status: &tonic::Status) -> StepError {
    let message = format!("{peer}: {:?}: {}", status.code(), status.message());
    if is_transient(status.code()) { StepError::Transient(message) } else { StepError::Permanent(message) }
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
        let status = tonic::Status::unavailable("down");
        assert!(matches!(step_error("ledger", &status), StepError::Transient(_)));
        let status = tonic::Status::failed_precondition("no");
        assert!(
            matches!(step_error("ledger", &status), StepError::Permanent(m) if m.starts_with("ledger: FailedPrecondition"))
        );
    }
}
