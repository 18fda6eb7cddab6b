//! The five services as separate processes, started from the binaries next
//! to `accrue`, each on its own loopback port and connected as its own
//! database role; killed with SIGKILL and started again on the same port.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use super::ChaosError;
use crate::stack::{Endpoints, ServiceRole};

/// Pool size of each service process (five share one throwaway server).
const MAX_CONNECTIONS: &str = "8";
/// How long a stopping service may drain before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Sagas attribution claims at a time (the service's default is 500): a
/// short prefix then settles in several batches rather than one or two,
/// which keeps sagas in flight long enough to aim kills at, and gives each
/// kill more claim and commit boundaries to land between. Both runs use it.
const SAGA_BATCH_SIZE: &str = "100";
/// How often health is asked while waiting for SERVING.
const HEALTH_POLL: Duration = Duration::from_millis(50);

/// The service schemas with their gRPC service names, in start order.
pub const SERVICES: [(&str, &str); 5] = [
    ("hierarchy", <accrue_hierarchy::Hierarchy as accrue_kit::service::Service>::NAME),
    ("commission", <accrue_commission::Commission as accrue_kit::service::Service>::NAME),
    ("ledger", <accrue_ledger::Ledger as accrue_kit::service::Service>::NAME),
    ("payouts", <accrue_payouts::Payouts as accrue_kit::service::Service>::NAME),
    ("attribution", <accrue_attribution::Attribution as accrue_kit::service::Service>::NAME),
];

/// The directory holding the service binaries: the one `accrue` runs from
/// (`target/<profile>/`), checked to hold all five.
pub fn binaries_dir() -> Result<PathBuf, ChaosError> {
    let exe = std::env::current_exe().map_err(|e| ChaosError::Io("locating the accrue binary".into(), e))?;
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    let missing: Vec<String> = SERVICES
        .iter()
        .map(|(schema, _)| format!("accrue-{schema}"))
        .filter(|binary| !dir.join(binary).is_file())
        .collect();
    if missing.is_empty() {
        Ok(dir)
    } else {
        Err(ChaosError::MissingBinaries { dir: dir.display().to_string(), missing })
    }
}

/// One service process.
struct Process {
    schema: &'static str,
    name: &'static str,
    binary: PathBuf,
    env: Vec<(String, String)>,
    url: String,
    log: PathBuf,
    child: Option<Child>,
}

impl Process {
    fn spawn(&mut self) -> Result<(), ChaosError> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| ChaosError::Io(format!("opening {}", self.log.display()), e))?;
        let log_err = log.try_clone().map_err(|e| ChaosError::Io("duplicating a log handle".into(), e))?;
        let mut command = Command::new(&self.binary);
        // Settings of the caller's own stack must not leak into these.
        for name in ["DATABASE_URL", "ACCRUE_AUTH_JWKS_FILE", "ACCRUE_PAGE_TOKEN_KEY"] {
            command.env_remove(name);
        }
        command.envs(self.env.iter().map(|(k, v)| (k, v))).stdin(Stdio::null()).stdout(log).stderr(log_err);
        let child = command.spawn().map_err(|e| ChaosError::Io(format!("starting {}", self.binary.display()), e))?;
        self.child = Some(child);
        Ok(())
    }
}

/// The five running service processes.
pub struct Services {
    processes: Vec<Process>,
    /// Where each listens.
    pub endpoints: Endpoints,
}

fn free_port() -> Result<u16, ChaosError> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| ChaosError::Io("finding a free port".into(), e))?;
    Ok(listener.local_addr().map_err(|e| ChaosError::Io("finding a free port".into(), e))?.port())
}

impl Services {
    /// Starts the five services from `bin_dir`, service `s` connected with
    /// its role in `roles`, verifying tokens with `secret`, logging to
    /// `log_dir/<label>-<schema>.log`; returns once every one is SERVING.
    pub async fn start(
        bin_dir: &Path,
        roles: &[ServiceRole],
        secret: &str,
        log_dir: &Path,
        label: &str,
    ) -> Result<Services, ChaosError> {
        let mut ports = std::collections::HashMap::new();
        for (schema, _) in SERVICES {
            ports.insert(schema, free_port()?);
        }
        let url = |schema: &str| format!("http://127.0.0.1:{}", ports.get(schema).copied().unwrap_or_default());
        let endpoints = Endpoints {
            hierarchy: url("hierarchy"),
            attribution: url("attribution"),
            commission: url("commission"),
            ledger: url("ledger"),
            payouts: url("payouts"),
        };
        let mut processes = Vec::new();
        for (schema, name) in SERVICES {
            let role = roles
                .iter()
                .find(|role| role.schema == schema)
                .ok_or_else(|| ChaosError::Setup(format!("no database role for {schema}")))?;
            let upper = schema.to_uppercase();
            let port = ports.get(schema).copied().unwrap_or_default();
            let env = vec![
                (format!("ACCRUE_{upper}_LISTEN"), format!("127.0.0.1:{port}")),
                (role.env_var(), role.url.clone()),
                ("ACCRUE_AUTH_HS256_SECRET".to_string(), secret.to_string()),
                ("ACCRUE_DB_MAX_CONNECTIONS".to_string(), MAX_CONNECTIONS.to_string()),
                // Inside STOP_GRACE, so that a stop is the services' own drain, not a kill.
                ("ACCRUE_SHUTDOWN_GRACE".to_string(), (STOP_GRACE.as_secs() / 2).to_string()),
                ("ACCRUE_HIERARCHY_URL".to_string(), endpoints.hierarchy.clone()),
                ("ACCRUE_COMMISSION_URL".to_string(), endpoints.commission.clone()),
                ("ACCRUE_LEDGER_URL".to_string(), endpoints.ledger.clone()),
                ("RUST_LOG".to_string(), "warn".to_string()),
                ("ACCRUE_SAGA_BATCH_SIZE".to_string(), SAGA_BATCH_SIZE.to_string()),
            ];
            let mut process = Process {
                schema,
                name,
                binary: bin_dir.join(format!("accrue-{schema}")),
                env,
                url: url(schema),
                log: log_dir.join(format!("{label}-{schema}.log")),
                child: None,
            };
            process.spawn()?;
            processes.push(process);
        }
        let services = Services { processes, endpoints };
        for (schema, _) in SERVICES {
            services.wait_serving(schema, Duration::from_secs(60)).await?;
        }
        Ok(services)
    }

    fn process(&mut self, schema: &str) -> Result<&mut Process, ChaosError> {
        self.processes
            .iter_mut()
            .find(|p| p.schema == schema)
            .ok_or_else(|| ChaosError::Setup(format!("no service {schema}")))
    }

    /// Kills service `schema` with SIGKILL (no drain, no lease release) and
    /// reaps it.
    pub fn kill(&mut self, schema: &str) -> Result<(), ChaosError> {
        let process = self.process(schema)?;
        if let Some(mut child) = process.child.take() {
            // Child::kill is SIGKILL on Unix.
            child.kill().map_err(|e| ChaosError::Io(format!("killing {schema}"), e))?;
            child.wait().map_err(|e| ChaosError::Io(format!("reaping {schema}"), e))?;
        }
        Ok(())
    }

    /// Starts service `schema` again, same port and settings.
    pub fn restart(&mut self, schema: &str) -> Result<(), ChaosError> {
        let process = self.process(schema)?;
        if process.child.is_none() {
            process.spawn()?;
        }
        Ok(())
    }

    /// Waits until `schema` answers SERVING on grpc.health (its database
    /// answers and its migrations ran); returns how long that took.
    pub async fn wait_serving(&self, schema: &str, limit: Duration) -> Result<Duration, ChaosError> {
        let process = self
            .processes
            .iter()
            .find(|p| p.schema == schema)
            .ok_or_else(|| ChaosError::Setup(format!("no service {schema}")))?;
        let started = Instant::now();
        let endpoint = tonic::transport::Endpoint::from_shared(process.url.clone())
            .map_err(|e| ChaosError::Setup(format!("{}: {e}", process.url)))?
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(2));
        let mut health = HealthClient::new(endpoint.connect_lazy());
        loop {
            let answer = health.check(HealthCheckRequest { service: process.name.to_string() }).await;
            if matches!(&answer, Ok(response) if response.get_ref().status == ServingStatus::Serving as i32) {
                return Ok(started.elapsed());
            }
            if started.elapsed() > limit {
                let last = match answer {
                    Ok(response) => format!("{:?}", response.get_ref().status),
                    Err(status) => format!("{:?} {}", status.code(), status.message()),
                };
                return Err(ChaosError::NotServing {
                    service: schema.to_string(),
                    limit,
                    last,
                    log: log_tail(&process.log),
                });
            }
            tokio::time::sleep(HEALTH_POLL).await;
        }
    }

    /// Stops every service (SIGTERM: drain, release saga leases), killing
    /// any still running after 10 s.
    pub async fn stop(mut self) {
        for process in &self.processes {
            if let Some(child) = &process.child {
                let _ = Command::new("kill")
                    .arg("-TERM")
                    .arg(child.id().to_string())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
        let started = Instant::now();
        for process in &mut self.processes {
            if let Some(mut child) = process.child.take() {
                loop {
                    match child.try_wait() {
                        Ok(Some(_)) => break,
                        Ok(None) if started.elapsed() < STOP_GRACE => tokio::time::sleep(HEALTH_POLL).await,
                        _ => {
                            let _ = child.kill();
                            let _ = child.wait();
                            break;
                        }
                    }
                }
            }
        }
    }
}

impl Drop for Services {
    /// A campaign that ends early (an error, Ctrl-C) leaves no service behind.
    fn drop(&mut self) {
        for process in &mut self.processes {
            if let Some(mut child) = process.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// The last lines of a service's log, for an error message.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}
