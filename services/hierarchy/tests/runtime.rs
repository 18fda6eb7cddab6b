//! Running well under Kubernetes (issue 13 items 6 and 7), on the hierarchy
//! service as every service shares the scaffold: SIGTERM drains the real
//! binary within its grace and exits 0, `liveness` stays SERVING while the
//! database is away, a refused login (too many clients) reaches the caller
//! as UNAVAILABLE naming the cause, and reflection serves google.rpc's
//! error details.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use accrue_hierarchy::Hierarchy;
use accrue_kit::auth::{AuthConfig, Credential, Minter, Role};
use accrue_kit::client::{AuthChannel, PEER_TIMEOUT};
use accrue_kit::service::{Service, ServiceConfig};
use accrue_proto::hierarchy::v1 as pb;
use accrue_proto::hierarchy::v1::hierarchy_service_client::HierarchyServiceClient;
use accrue_testkit::{TEST_SECRET, TestDb, wait_serving};
use prost::Message;
use sqlx::{Connection, PgConnection};
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_types::StatusExt;

const BINARY: &str = env!("CARGO_BIN_EXE_accrue-hierarchy");

/// The service binary as a child process, killed if a test fails midway.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

impl Child {
    fn sigterm(&self) {
        let sent = Command::new("kill").arg("-TERM").arg(self.0.id().to_string()).status().unwrap();
        assert!(sent.success());
    }

    /// The exit status once the process has ended, if it does within `limit`.
    async fn exit_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Some(status) = self.0.try_wait().unwrap() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    fn running(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `accrue-hierarchy` on a free port over `database_url` with this shutdown
/// grace, once SERVING; and its URL.
async fn start_binary(database_url: &str, grace_seconds: u64) -> (Child, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let child = Command::new(BINARY)
        .args(["--listen", &addr, "--database-url", database_url, "--auth-hs256-secret", TEST_SECRET])
        .args(["--shutdown-grace", &grace_seconds.to_string()])
        .env_remove("DATABASE_URL")
        .env_remove("ACCRUE_SHUTDOWN_GRACE")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let child = Child(child);
    let url = format!("http://{addr}");
    wait_serving(accrue_kit::client::channel(&url).unwrap(), Hierarchy::NAME).await.unwrap();
    (child, url)
}

/// The service in this process over `database_url`, stopped by the token.
async fn start_in_process(database_url: &str) -> (CancellationToken, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let config = ServiceConfig::new(database_url, AuthConfig::hs256(TEST_SECRET), accrue_hierarchy::Config::default())
        .with_max_connections(2);
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    tokio::spawn(async move { accrue_kit::service::run::<Hierarchy>(config, listener, token).await });
    (shutdown, url)
}

fn admin_client(url: &str) -> HierarchyServiceClient<AuthChannel> {
    let minter =
        Minter::new(TEST_SECRET, accrue_kit::auth::DEFAULT_ISSUER, accrue_kit::auth::DEFAULT_AUDIENCE).unwrap();
    let token = minter.mint("test-admin", &[Role::Admin], &["*".to_string()], None, Duration::from_secs(600)).unwrap();
    accrue_kit::client::connect(url, PEER_TIMEOUT, &Credential::token(token)).unwrap()
}

fn create_program(request_id: &str) -> pb::CreateProgramRequest {
    pb::CreateProgramRequest {
        program: Some(pb::Program {
            display_name: "Drain".into(),
            default_currency: "GBP".into(),
            ..Default::default()
        }),
        request_id: request_id.into(),
    }
}

async fn check(url: &str, service: &str) -> i32 {
    let mut health = HealthClient::new(accrue_kit::client::channel(url).unwrap());
    health.check(HealthCheckRequest { service: service.into() }).await.unwrap().into_inner().status
}

async fn next_status(stream: &mut tonic::Streaming<HealthCheckResponse>) -> Option<i32> {
    tokio::time::timeout(Duration::from_secs(10), stream.message()).await.unwrap().ok().flatten().map(|r| r.status)
}

/// An open transaction holding `programs` exclusively, so that a
/// CreateProgram stays in flight until it commits.
async fn lock_programs(database_url: &str) -> PgConnection {
    let mut conn = PgConnection::connect(database_url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
    sqlx::query("LOCK TABLE hierarchy.programs IN ACCESS EXCLUSIVE MODE").execute(&mut conn).await.unwrap();
    conn
}

/// Waits until some session of `database_url`'s database waits on a lock.
async fn wait_for_lock_waiter(admin: &mut PgConnection) {
    let started = Instant::now();
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&mut *admin)
        .await
        .unwrap();
        if waiting > 0 {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "the call never reached the lock");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_flips_readiness_first_finishes_the_call_in_flight_and_exits_zero() {
    let db = TestDb::create().await.unwrap();
    let role_url = accrue_kit::db::provision_dev(&db.url, Hierarchy::SCHEMA).await.unwrap();
    let grace = 10;
    let (mut child, url) = start_binary(&role_url, grace).await;
    assert_eq!(check(&url, "liveness").await, ServingStatus::Serving as i32);

    let mut health = HealthClient::new(accrue_kit::client::channel(&url).unwrap());
    let mut watch = health.watch(HealthCheckRequest { service: Hierarchy::NAME.into() }).await.unwrap().into_inner();
    assert_eq!(next_status(&mut watch).await, Some(ServingStatus::Serving as i32));

    let mut lock = lock_programs(&db.url).await;
    let mut in_flight = admin_client(&url);
    let call = tokio::spawn(async move { in_flight.create_program(create_program("drain-1")).await });
    wait_for_lock_waiter(&mut lock).await;

    let signalled = Instant::now();
    child.sigterm();
    assert_eq!(next_status(&mut watch).await, Some(ServingStatus::NotServing as i32), "readiness flips first");
    assert_eq!(next_status(&mut watch).await, None, "then the Watch stream ends instead of holding the drain");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(child.running(), "the call in flight holds the process");

    sqlx::query("COMMIT").execute(&mut lock).await.unwrap();
    let program = call.await.unwrap().expect("the call in flight finishes").into_inner();
    assert!(!program.id.is_empty());
    let status = child.exit_within(Duration::from_secs(grace)).await.expect("exits once drained");
    assert!(status.success(), "{status:?}");
    assert!(signalled.elapsed() < Duration::from_secs(grace), "drained before the deadline: {:?}", signalled.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_still_running_at_the_deadline_does_not_hold_the_process() {
    let db = TestDb::create().await.unwrap();
    let role_url = accrue_kit::db::provision_dev(&db.url, Hierarchy::SCHEMA).await.unwrap();
    let grace = 2;
    let (mut child, url) = start_binary(&role_url, grace).await;
    let mut health = HealthClient::new(accrue_kit::client::channel(&url).unwrap());
    let mut liveness = health.watch(HealthCheckRequest { service: "liveness".into() }).await.unwrap().into_inner();
    assert_eq!(next_status(&mut liveness).await, Some(ServingStatus::Serving as i32));

    let mut lock = lock_programs(&db.url).await;
    let mut in_flight = admin_client(&url);
    let call = tokio::spawn(async move { in_flight.create_program(create_program("stuck-1")).await });
    wait_for_lock_waiter(&mut lock).await;

    let signalled = Instant::now();
    child.sigterm();
    let status = child.exit_within(Duration::from_secs(grace + 3)).await.expect("exits at the deadline");
    assert!(status.success(), "{status:?}");
    assert!(signalled.elapsed() >= Duration::from_secs(grace), "waited for the call until the deadline");
    assert!(call.await.unwrap().is_err(), "the stuck call was cut off");
    sqlx::query("ROLLBACK").execute(&mut lock).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveness_stays_serving_while_the_database_is_unreachable() {
    let db = TestDb::create().await.unwrap();
    let role_url = accrue_kit::db::provision_dev(&db.url, Hierarchy::SCHEMA).await.unwrap();
    let (shutdown, url) = start_in_process(&role_url).await;
    wait_serving(accrue_kit::client::channel(&url).unwrap(), Hierarchy::NAME).await.unwrap();
    assert_eq!(check(&url, "liveness").await, ServingStatus::Serving as i32);

    // The database refuses every session (without touching the shared
    // server): new connections are refused, existing ones are ended.
    let mut admin = PgConnection::connect(&accrue_testkit::admin_url()).await.unwrap();
    let name: String = {
        let mut conn = PgConnection::connect(&db.url).await.unwrap();
        let name = sqlx::query_scalar("SELECT current_database()").fetch_one(&mut conn).await.unwrap();
        conn.close().await.unwrap();
        name
    };
    sqlx::query(sqlx::AssertSqlSafe(format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false")))
        .execute(&mut admin)
        .await
        .unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(&name)
        .execute(&mut admin)
        .await
        .unwrap();

    let started = Instant::now();
    while check(&url, Hierarchy::NAME).await != ServingStatus::NotServing as i32 {
        assert!(started.elapsed() < Duration::from_secs(20), "readiness never noticed the outage");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(check(&url, "").await, ServingStatus::NotServing as i32);
    assert_eq!(check(&url, "liveness").await, ServingStatus::Serving as i32, "the process is alive");

    sqlx::query(sqlx::AssertSqlSafe(format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true")))
        .execute(&mut admin)
        .await
        .unwrap();
    wait_serving(accrue_kit::client::channel(&url).unwrap(), Hierarchy::NAME).await.unwrap();
    shutdown.cancel();
    admin.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_clients_is_unavailable_naming_the_cause_and_the_fix() {
    let db = TestDb::create().await.unwrap();
    // A throwaway role that may hold no connection at all: every login is
    // refused with 53300, as when the server's max_connections is used up.
    let schema = format!("rt_{}", uuid::Uuid::new_v4().simple());
    let role = accrue_kit::db::role_name(&schema);
    let mut admin = PgConnection::connect(&db.url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE ROLE {role} LOGIN CONNECTION LIMIT 0")))
        .execute(&mut admin)
        .await
        .unwrap();
    let limited = accrue_kit::db::role_url(&db.url, &schema, None).unwrap();

    let refused = PgConnection::connect(&limited).await.expect_err("the login is refused");
    let status = accrue_kit::error::db_error(refused);
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.message().contains("too many clients") && status.message().contains("--max-connections"));

    let (shutdown, url) = start_in_process(&limited).await;
    let mut client = admin_client(&url);
    // The pool only times out; the health probe learns why meanwhile.
    let started = Instant::now();
    let status = loop {
        let status = client.create_program(create_program("limited-1")).await.expect_err("no database");
        if status.message().contains("53300") || started.elapsed() > Duration::from_secs(60) {
            break status;
        }
    };
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("too many clients"), "{}", status.message());
    assert_eq!(status.get_details_error_info().map(|info| info.reason), Some("DATABASE_TOO_MANY_CLIENTS".into()));
    shutdown.cancel();

    drop(client);
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP ROLE {role}"))).execute(&mut admin).await.unwrap();
    admin.close().await.unwrap();
}

/// The file reflection returns for `symbol`.
async fn file_containing(
    reflection: &mut ServerReflectionClient<tonic::transport::Channel>,
    symbol: &str,
) -> prost_types::FileDescriptorProto {
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol(symbol.into())),
    };
    let mut responses = reflection.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
    let response = responses.message().await.unwrap().expect("an answer");
    let Some(MessageResponse::FileDescriptorResponse(files)) = response.message_response else {
        panic!("{symbol}: {:?}", response.message_response);
    };
    let first = files.file_descriptor_proto.first().expect("a file");
    prost_types::FileDescriptorProto::decode(first.as_slice()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_serves_the_google_rpc_error_details() {
    let db = TestDb::create().await.unwrap();
    let role_url = accrue_kit::db::provision_dev(&db.url, Hierarchy::SCHEMA).await.unwrap();
    let (shutdown, url) = start_in_process(&role_url).await;
    let mut reflection = ServerReflectionClient::new(accrue_kit::client::channel(&url).unwrap());
    for symbol in ["google.rpc.BadRequest", "google.rpc.ErrorInfo", "google.rpc.Status"] {
        let file = file_containing(&mut reflection, symbol).await;
        let name = symbol.trim_start_matches("google.rpc.");
        assert_eq!(file.package.as_deref(), Some("google.rpc"), "{symbol}");
        assert!(file.message_type.iter().any(|m| m.name.as_deref() == Some(name)), "{symbol} in {:?}", file.name);
    }
    let service = file_containing(&mut reflection, Hierarchy::NAME).await;
    assert_eq!(service.package.as_deref(), Some("accrue.hierarchy.v1"));
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_balanced_client_spreads_calls_over_every_resolved_replica() {
    // Two replicas of the service, each over its own database so that each
    // one's share of the calls can be counted there.
    let (first_db, second_db) = (TestDb::create().await.unwrap(), TestDb::create().await.unwrap());
    let mut replicas = Vec::new();
    for db in [&first_db, &second_db] {
        let role_url = accrue_kit::db::provision_dev(&db.url, Hierarchy::SCHEMA).await.unwrap();
        let (shutdown, url) = start_in_process(&role_url).await;
        wait_serving(accrue_kit::client::channel(&url).unwrap(), Hierarchy::NAME).await.unwrap();
        replicas.push((shutdown, url));
    }
    let addrs: Vec<std::net::SocketAddr> =
        replicas.iter().map(|(_, url)| url.trim_start_matches("http://").parse().unwrap()).collect();
    let resolver: accrue_kit::client::balance::Resolver = std::sync::Arc::new(move || {
        let addrs = addrs.clone();
        Box::pin(async move { Ok(addrs) })
    });
    let channel = accrue_kit::client::balanced_channel(
        "http://hierarchy-headless:50051",
        PEER_TIMEOUT,
        resolver,
        Duration::from_secs(1),
    )
    .unwrap();
    let minter =
        Minter::new(TEST_SECRET, accrue_kit::auth::DEFAULT_ISSUER, accrue_kit::auth::DEFAULT_AUDIENCE).unwrap();
    let token = minter.mint("test-admin", &[Role::Admin], &["*".to_string()], None, Duration::from_secs(600)).unwrap();
    let mut client: HierarchyServiceClient<AuthChannel> = accrue_kit::client::over(channel, &Credential::token(token));

    const CALLS: i64 = 30;
    for index in 0..CALLS {
        client.create_program(create_program(&format!("balanced-{index}"))).await.unwrap();
    }
    let mut counts = Vec::new();
    for db in [&first_db, &second_db] {
        let mut conn = PgConnection::connect(&db.url).await.unwrap();
        let count: i64 =
            sqlx::query_scalar("SELECT count(*) FROM hierarchy.programs").fetch_one(&mut conn).await.unwrap();
        conn.close().await.unwrap();
        counts.push(count);
    }
    assert_eq!(counts.iter().sum::<i64>(), CALLS);
    assert!(counts.iter().all(|&count| count > 0), "every replica got calls: {counts:?}");
    for (shutdown, _) in replicas {
        shutdown.cancel();
    }
}
