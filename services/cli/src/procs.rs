//! The five services as separate processes, started from the binaries next
//! to `accrue`, each on its own loopback port and connected as its own
//! database role: the crash campaign (`accrue chaos`) kills them with SIGKILL
//! and starts them again on the same port; the benchmark (`accrue bench`)
//! runs them with their production defaults and reads each one's peak RSS
//! (`VmHWM`) before stopping them. What a caller changes in their settings is
//! its own list of extra environment variables ([`Settings`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use accrue_kit::auth::{Credential, Minter, Role};

use crate::stack::{ADMIN_TOKEN_TTL, Endpoints, ServiceRole};

/// How long a stopping service may drain before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// The variable whose value, when set, becomes the started services'
/// `RUST_LOG` (e.g. `ACCRUE_SERVICES_LOG=accrue_saga=debug,warn`); their
/// logs are the files named in the run's output.
pub const SERVICES_LOG: &str = "ACCRUE_SERVICES_LOG";
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

/// Why the service processes could not be started, watched or measured.
#[derive(Debug, thiserror::Error)]
pub enum ProcsError {
    /// The service binaries are not next to `accrue`.
    #[error(
        "missing {missing:?} in {dir}: build them with `cargo build -p accrue-hierarchy -p accrue-attribution \
         -p accrue-commission -p accrue-ledger -p accrue-payouts` (same profile as accrue)"
    )]
    MissingBinaries {
        /// Where they were looked for.
        dir: String,
        /// The missing binaries.
        missing: Vec<String>,
    },
    /// A file or process operation failed.
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    /// Something the services need is missing or malformed (a role, a token).
    #[error("setup: {0}")]
    Setup(String),
    /// A service did not answer SERVING in time.
    #[error("{service} not SERVING within {limit:?} (last answer: {last}); its log ends with:\n{log}")]
    NotServing {
        /// The service.
        service: String,
        /// How long it was given.
        limit: Duration,
        /// Its last health answer.
        last: String,
        /// The end of its log.
        log: String,
    },
}

/// What the service processes run with beyond their endpoints, database
/// roles and token secret: environment variables overriding the services'
/// own defaults (none: production defaults).
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// `(name, value)` pairs set on every service process.
    pub env: Vec<(String, String)>,
}

/// The directory holding the service binaries: the one `accrue` runs from
/// (`target/<profile>/`), checked to hold all five.
pub fn binaries_dir() -> Result<PathBuf, ProcsError> {
    let exe = std::env::current_exe().map_err(|e| ProcsError::Io("locating the accrue binary".into(), e))?;
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    let missing: Vec<String> = SERVICES
        .iter()
        .map(|(schema, _)| format!("accrue-{schema}"))
        .filter(|binary| !dir.join(binary).is_file())
        .collect();
    if missing.is_empty() {
        Ok(dir)
    } else {
        Err(ProcsError::MissingBinaries { dir: dir.display().to_string(), missing })
    }
}

/// An admin credential for the services started with `secret` (HS256,
/// every program), its subject `subject`.
pub fn admin_credential(secret: &str, subject: &str) -> Result<Credential, ProcsError> {
    let minter = Minter::new(secret, accrue_kit::auth::DEFAULT_ISSUER, accrue_kit::auth::DEFAULT_AUDIENCE)
        .map_err(|e| ProcsError::Setup(e.to_string()))?;
    let token = minter
        .mint(subject, &[Role::Admin], &["*".to_string()], None, ADMIN_TOKEN_TTL)
        .map_err(|e| ProcsError::Setup(e.to_string()))?;
    Ok(Credential::token(token))
}

/// The peak resident set size (`VmHWM`) of process `pid`, in bytes, from
/// `/proc/<pid>/status` (Linux).
pub fn peak_rss_bytes(pid: u32) -> Result<u64, ProcsError> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).map_err(|e| ProcsError::Io(format!("reading {path}"), e))?;
    parse_vm_hwm(&status).ok_or_else(|| ProcsError::Setup(format!("no VmHWM line in {path}")))
}

/// The machine's 1-minute load average (`/proc/loadavg`): how many
/// processes were running or waiting for a CPU, on average — beside
/// [`std::thread::available_parallelism`], whether something else competed
/// with what was measured. `None` where it cannot be read.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

/// CPU time (user + system) process `pid` has used since it started, all
/// its threads, in seconds (`/proc/<pid>/stat`, Linux). `None` when the
/// process is gone or its line does not parse.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let ticks = parse_cpu_ticks(&stat)?;
    Some(ticks as f64 / rustix::param::clock_ticks_per_second() as f64)
}

/// The Postgres backends on this machine that serve `database` (their
/// process title reads `postgres: <user> <database> <client> …`), each with
/// the CPU seconds it has used so far ([`cpu_seconds`]). Empty when the
/// server runs elsewhere.
pub fn backend_cpu_seconds(database: &str) -> BTreeMap<u32, f64> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return BTreeMap::new() };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|title| backend_database(&String::from_utf8_lossy(&title)) == Some(database))
        })
        .filter_map(|pid| Some((pid, cpu_seconds(pid)?)))
        .collect()
}

/// The database of a Postgres backend's process title, `None` for any
/// other process (an auxiliary Postgres process has no database). The
/// title is `postgres: [<cluster_name>: ]<user> <database> <client> <activity>`.
fn backend_database(title: &str) -> Option<&str> {
    let mut words = title.split(|c: char| c.is_whitespace() || c == '\0').filter(|word| !word.is_empty()).peekable();
    (words.next()? == "postgres:").then_some(())?;
    if words.peek().is_some_and(|word| word.ends_with(':')) {
        words.next();
    }
    let (_user, database, client) = (words.next()?, words.next()?, words.next()?);
    // A backend's third word is its client (`127.0.0.1(5432)`, `[local]`).
    (client.ends_with(')') || client == "[local]").then_some(database)
}

/// utime + stime, in clock ticks, of a `/proc/<pid>/stat` line. The command
/// name (field 2) is in parentheses and may hold spaces, so the fields are
/// counted after its closing one: state is the first, utime the 12th.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    utime.checked_add(stime)
}

/// The `VmHWM:   123456 kB` line of a `/proc/<pid>/status` text, in bytes.
fn parse_vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|line| line.strip_prefix("VmHWM:"))?;
    let mut fields = line.split_whitespace();
    let value: u64 = fields.next()?.parse().ok()?;
    match fields.next() {
        Some("kB") => value.checked_mul(1024),
        _ => None,
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
    fn spawn(&mut self) -> Result<(), ProcsError> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| ProcsError::Io(format!("opening {}", self.log.display()), e))?;
        let log_err = log.try_clone().map_err(|e| ProcsError::Io("duplicating a log handle".into(), e))?;
        let mut command = Command::new(&self.binary);
        // Settings of the caller's own stack must not leak into these.
        for name in ["DATABASE_URL", "ACCRUE_AUTH_JWKS_FILE", "ACCRUE_PAGE_TOKEN_KEY"] {
            command.env_remove(name);
        }
        command.envs(self.env.iter().map(|(k, v)| (k, v))).stdin(Stdio::null()).stdout(log).stderr(log_err);
        let child = command.spawn().map_err(|e| ProcsError::Io(format!("starting {}", self.binary.display()), e))?;
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

/// The kernel's ephemeral port range (`ip_local_port_range`): the source
/// ports of outgoing connections come from here.
fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut bounds = text.split_whitespace().map(str::parse::<u16>);
            Some((bounds.next()?.ok()?, bounds.next()?.ok()?))
        })
        .unwrap_or((32768, 60999))
}

/// `n` distinct loopback ports that are free now, for servers started next.
///
/// They are taken below the ephemeral range where there is room (from
/// 10000), so that an outgoing connection of a process started meanwhile
/// (a service's database pool) cannot take one as its source port before its
/// server binds it; every listener is held until all `n` are chosen, so no
/// port is handed out twice. Where the range leaves no room, the kernel
/// chooses (port 0).
pub(crate) fn free_ports(n: usize) -> std::io::Result<Vec<u16>> {
    use rand::Rng;
    const LOWEST: u16 = 10000;
    let (ephemeral_low, _) = ephemeral_range();
    let mut held = Vec::with_capacity(n);
    let mut rng = rand::rng();
    let mut tries = 0;
    while held.len() < n {
        let port = if ephemeral_low > LOWEST + 1000 && tries < 1000 {
            tries += 1;
            rng.random_range(LOWEST..ephemeral_low)
        } else {
            0
        };
        match std::net::TcpListener::bind(("127.0.0.1", port)) {
            Ok(listener) => held.push(listener),
            Err(error) if port == 0 => return Err(error),
            Err(_) => {}
        }
    }
    held.iter().map(|listener| Ok(listener.local_addr()?.port())).collect()
}

/// One loopback port that is free now; see [`free_ports`].
pub(crate) fn free_port() -> std::io::Result<u16> {
    free_ports(1)?.pop().ok_or_else(|| std::io::Error::other("no free port was chosen"))
}

/// How many times [`Services::start`] chooses new ports when one of them was
/// taken before its service could bind it.
const START_ATTEMPTS: usize = 3;

impl Services {
    /// Starts the five services from `bin_dir`, service `s` connected with
    /// its role in `roles`, verifying tokens with `secret`, with `settings`,
    /// logging to `log_dir/<label>-<schema>.log`; returns once every one is
    /// SERVING.
    pub async fn start(
        bin_dir: &Path,
        roles: &[ServiceRole],
        secret: &str,
        settings: &Settings,
        log_dir: &Path,
        label: &str,
    ) -> Result<Services, ProcsError> {
        let mut attempt = 1;
        loop {
            match Self::start_once(bin_dir, roles, secret, settings, log_dir, label).await {
                Err(ProcsError::NotServing { log, .. })
                    if attempt < START_ATTEMPTS && log.contains("Address already in use") =>
                {
                    eprintln!("a service port was taken before its service bound it: choosing new ports");
                    attempt += 1;
                }
                outcome => return outcome,
            }
        }
    }

    async fn start_once(
        bin_dir: &Path,
        roles: &[ServiceRole],
        secret: &str,
        settings: &Settings,
        log_dir: &Path,
        label: &str,
    ) -> Result<Services, ProcsError> {
        let chosen = free_ports(SERVICES.len()).map_err(|e| ProcsError::Io("finding free ports".into(), e))?;
        let ports: std::collections::HashMap<&str, u16> =
            SERVICES.iter().map(|(schema, _)| *schema).zip(chosen).collect();
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
                .ok_or_else(|| ProcsError::Setup(format!("no database role for {schema}")))?;
            let upper = schema.to_uppercase();
            let port = ports.get(schema).copied().unwrap_or_default();
            let mut env = vec![
                (format!("ACCRUE_{upper}_LISTEN"), format!("127.0.0.1:{port}")),
                (role.env_var(), role.url.clone()),
                ("ACCRUE_AUTH_HS256_SECRET".to_string(), secret.to_string()),
                // Inside STOP_GRACE, so that a stop is the services' own drain, not a kill.
                ("ACCRUE_SHUTDOWN_GRACE".to_string(), (STOP_GRACE.as_secs() / 2).to_string()),
                ("ACCRUE_HIERARCHY_URL".to_string(), endpoints.hierarchy.clone()),
                ("ACCRUE_COMMISSION_URL".to_string(), endpoints.commission.clone()),
                ("ACCRUE_LEDGER_URL".to_string(), endpoints.ledger.clone()),
                // Their own RUST_LOG when the caller gives one (to see what
                // a bench or chaos run's services did); else warnings only.
                ("RUST_LOG".to_string(), std::env::var(SERVICES_LOG).unwrap_or_else(|_| "warn".to_string())),
            ];
            env.extend(settings.env.iter().cloned());
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

    fn process(&mut self, schema: &str) -> Result<&mut Process, ProcsError> {
        self.processes
            .iter_mut()
            .find(|p| p.schema == schema)
            .ok_or_else(|| ProcsError::Setup(format!("no service {schema}")))
    }

    /// Kills service `schema` with SIGKILL (no drain, no lease release) and
    /// reaps it.
    pub fn kill(&mut self, schema: &str) -> Result<(), ProcsError> {
        let process = self.process(schema)?;
        if let Some(mut child) = process.child.take() {
            // Child::kill is SIGKILL on Unix.
            child.kill().map_err(|e| ProcsError::Io(format!("killing {schema}"), e))?;
            child.wait().map_err(|e| ProcsError::Io(format!("reaping {schema}"), e))?;
        }
        Ok(())
    }

    /// Each running service's schema and process id, in start order.
    pub fn pids(&self) -> Vec<(&'static str, u32)> {
        self.processes.iter().filter_map(|p| p.child.as_ref().map(|child| (p.schema, child.id()))).collect()
    }

    /// Each running service's schema and peak resident set size in bytes
    /// (`VmHWM`: the most it held at any moment since it started), in start
    /// order.
    pub fn peak_rss(&self) -> Result<Vec<(&'static str, u64)>, ProcsError> {
        self.pids().into_iter().map(|(schema, pid)| Ok((schema, peak_rss_bytes(pid)?))).collect()
    }

    /// Starts service `schema` again, same port and settings.
    pub fn restart(&mut self, schema: &str) -> Result<(), ProcsError> {
        let process = self.process(schema)?;
        if process.child.is_none() {
            process.spawn()?;
        }
        Ok(())
    }

    /// Waits until `schema` answers SERVING on grpc.health (its database
    /// answers and its migrations ran); returns how long that took.
    pub async fn wait_serving(&self, schema: &str, limit: Duration) -> Result<Duration, ProcsError> {
        let process = self
            .processes
            .iter()
            .find(|p| p.schema == schema)
            .ok_or_else(|| ProcsError::Setup(format!("no service {schema}")))?;
        let started = Instant::now();
        let endpoint = tonic::transport::Endpoint::from_shared(process.url.clone())
            .map_err(|e| ProcsError::Setup(format!("{}: {e}", process.url)))?
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
                return Err(ProcsError::NotServing {
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
    /// A campaign or benchmark that ends early (an error, Ctrl-C) leaves no
    /// service behind.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_counted_after_the_command_name_however_it_is_spelled() {
        let stat = "4242 (tokio (worker) 1) S 1 4242 4242 0 -1 4194560 900 0 0 0 153 47 0 0 20 0 9 0 1000 1 1";
        assert_eq!(parse_cpu_ticks(stat), Some(200));
        assert_eq!(parse_cpu_ticks("4242 (short) S 1 2"), None);
        // This process's own line parses; a process that does not exist has none.
        assert!(cpu_seconds(std::process::id()).is_some_and(|seconds| seconds >= 0.0));
        assert_eq!(cpu_seconds(u32::MAX), None);
    }

    #[test]
    fn a_backend_is_known_by_the_database_in_its_title() {
        let pad = "\0".repeat(8);
        assert_eq!(
            backend_database(&format!("postgres: accrue_ledger bench_1 127.0.0.1(50100) idle{pad}")),
            Some("bench_1")
        );
        assert_eq!(backend_database("postgres: 15/main: postgres bench_1 [local] SELECT"), Some("bench_1"));
        assert_eq!(backend_database("postgres: 15/main: checkpointer   "), None);
        assert_eq!(backend_database("postgres: autovacuum launcher"), None);
        assert_eq!(backend_database("/usr/lib/postgresql/15/bin/postgres -D /var/lib/x"), None);
    }

    #[test]
    fn ports_chosen_together_are_distinct_bindable_and_outside_the_ephemeral_range() {
        let (ephemeral_low, ephemeral_high) = ephemeral_range();
        for _ in 0..20 {
            // A released port may be taken by a test running beside this one
            // before it is bound again; the choice is retried as
            // Services::start retries it (START_ATTEMPTS).
            let mut bound = false;
            for _ in 0..START_ATTEMPTS {
                let ports = free_ports(SERVICES.len()).expect("ports");
                let distinct: std::collections::HashSet<u16> = ports.iter().copied().collect();
                assert_eq!(distinct.len(), SERVICES.len(), "{ports:?}");
                // Only where the range leaves room below it does the choice avoid it.
                if ephemeral_low > 11000 {
                    for port in &ports {
                        assert!(!(ephemeral_low..=ephemeral_high).contains(port), "{port} is ephemeral");
                    }
                }
                let listeners: Vec<_> =
                    ports.iter().filter_map(|&port| std::net::TcpListener::bind(("127.0.0.1", port)).ok()).collect();
                if listeners.len() == ports.len() {
                    bound = true;
                    break;
                }
            }
            assert!(bound, "the chosen ports did not bind in {START_ATTEMPTS} choices");
        }
    }

    #[test]
    fn vm_hwm_is_read_in_bytes() {
        let status = "Name:\taccrue-ledger\nVmPeak:\t  900000 kB\nVmHWM:\t   51200 kB\nVmRSS:\t   40000 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(51200 * 1024));
        assert_eq!(parse_vm_hwm("VmRSS:\t 1 kB\n"), None);
        assert_eq!(parse_vm_hwm("VmHWM:\t 1 MB\n"), None);
    }

    #[test]
    fn this_process_has_a_peak_rss_and_the_machine_a_load() {
        assert!(peak_rss_bytes(std::process::id()).unwrap() > 0);
        assert!(load_average().is_some_and(|load| load >= 0.0));
    }
}
