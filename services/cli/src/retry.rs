//! Retrying idempotent calls when a service is briefly away (issue 11 item 4):
//! a restarted service, a reset connection or a database restart must not end
//! the replay or any CLI command talking to a stack.
//!
//! Only calls that are safe to repeat go through [`idempotent`]: creates with
//! a request id (CreateProgram, CreatePartner, CreateLink, CreateAgreement,
//! SetOverridePlan, CreatePayoutRun), writes keyed by an external id
//! (RecordSales streams, RecordRefund), first-touch TrackLead, ClearMatured
//! (it only moves what has matured), the operator's payout changes (under a
//! request id, [`crate::operator`]), and every read. A retried RecordSales
//! stream is sent again from its first message: the service acknowledges the
//! sales it already has by external id and records the rest.

use std::future::Future;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use tonic::{Code, Status};

/// Longest total wait between attempts of one call before its last error is
/// returned: a service restart or a Postgres restart takes seconds.
pub const RETRY_BUDGET: Duration = Duration::from_secs(60);
/// First delay between attempts.
const FIRST_DELAY: Duration = Duration::from_millis(100);
/// Longest delay between attempts.
const MAX_DELAY: Duration = Duration::from_secs(5);

/// Whether a failed call may succeed when sent again unchanged: the service
/// was unreachable (UNAVAILABLE, which is also what a refused connection
/// becomes), the connection broke under the call (a killed server shows as
/// UNKNOWN, CANCELLED or an INTERNAL "h2 protocol error" from the transport,
/// never from the service), or the call ran out of time (DEADLINE_EXCEEDED;
/// only idempotent calls come here). A status the service itself chose
/// (INVALID_ARGUMENT, INTERNAL "internal error", …) is final.
pub fn is_transient(status: &Status) -> bool {
    match status.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => true,
        Code::Unknown | Code::Internal => accrue_kit::client::is_broken_connection(status),
        _ => false,
    }
}

/// Sends `request` with `call` on a clone of `client`, again with
/// exponential backoff (100 ms doubling to 5 s, jittered) while the failure
/// [`is_transient`], for at most [`RETRY_BUDGET`] of waiting; each retry is
/// logged (WARN) with `label`. Returns the response message or the last
/// status. Only for idempotent calls (see the module docs).
pub async fn idempotent<C, Req, Resp, F, Fut>(label: &str, client: &C, request: &Req, call: F) -> Result<Resp, Status>
where
    C: Clone,
    Req: Clone,
    F: Fn(C, Req) -> Fut,
    Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
{
    let attempt = || call(client.clone(), request.clone());
    let response = attempt
        .retry(backoff())
        .when(is_transient)
        .notify(|status: &Status, delay: Duration| {
            tracing::warn!(call = label, code = ?status.code(), message = status.message(), ?delay, "retrying");
        })
        .await?;
    Ok(response.into_inner())
}

fn backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(FIRST_DELAY)
        .with_max_delay(MAX_DELAY)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .with_total_delay(Some(RETRY_BUDGET))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn only_transport_failures_and_unavailability_are_transient() {
        assert!(is_transient(&Status::unavailable("tcp connect error")));
        assert!(is_transient(&Status::deadline_exceeded("timeout")));
        assert!(is_transient(&Status::unknown("h2 protocol error: connection reset")));
        assert!(is_transient(&Status::internal("h2 protocol error: error reading a body from connection")));
        assert!(!is_transient(&Status::internal("internal error")));
        assert!(!is_transient(&Status::invalid_argument("bad")));
        assert!(!is_transient(&Status::failed_precondition("no")));
        assert!(!is_transient(&Status::already_exists("conflicting request id")));
    }

    #[tokio::test]
    async fn a_transient_failure_is_retried_and_a_final_one_is_not() {
        let calls = AtomicU32::new(0);
        let answer =
            idempotent("test", &(), &7u32, |(), request| {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n < 2 { Err(Status::unavailable("restarting")) } else { Ok(tonic::Response::new(request * 2)) }
                }
            })
            .await;
        assert_eq!(answer.ok(), Some(14));
        assert_eq!(calls.load(Ordering::SeqCst), 3);

        let calls = AtomicU32::new(0);
        let answer: Result<u32, Status> = idempotent("test", &(), &(), |(), ()| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(Status::invalid_argument("no")) }
        })
        .await;
        assert_eq!(answer.map_err(|s| s.code()), Err(Code::InvalidArgument));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
