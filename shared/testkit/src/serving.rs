//! Waiting for an in-process service to report SERVING on grpc.health.v1
//! (it does once its migrations have run).

use std::time::Duration;

use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// How long [`wait_serving`] waits before giving up.
pub const SERVING_TIMEOUT: Duration = Duration::from_secs(30);

/// Polls `grpc.health.v1.Health/Check` for `service` on `channel` every
/// 100 ms until it answers SERVING; errors with the last answer after
/// [`SERVING_TIMEOUT`].
pub async fn wait_serving(channel: Channel, service: &str) -> Result<(), String> {
    let mut health = HealthClient::new(channel);
    let deadline = tokio::time::Instant::now() + SERVING_TIMEOUT;
    loop {
        let answer = health.check(HealthCheckRequest { service: service.into() }).await;
        match &answer {
            Ok(response) if response.get_ref().status == ServingStatus::Serving as i32 => return Ok(()),
            _ if tokio::time::Instant::now() >= deadline => {
                return Err(format!("{service} never became SERVING (last answer: {answer:?})"));
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
