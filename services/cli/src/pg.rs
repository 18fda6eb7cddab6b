//! A throwaway Postgres for `accrue dev` and `accrue replay --dev` (DESIGN §6
//! "Dev"): when no `DATABASE_URL` is given, `initdb` a temporary directory
//! with trust auth, start `postgres` on a free port (its Unix socket in that
//! directory) with durability off, create the `accrue` database, and on
//! [`ThrowawayPostgres::stop`] (or drop) stop the server with SIGINT (fast
//! shutdown) and delete the directory. Never a database on whatever server
//! happens to listen on 5432: a given URL is checked first, and its refusal
//! explained ([`check_given`]).
//!
//! The benchmark's runs use the same servers with full durability, one
//! database per run ([`drop_database`], [`with_database`]).
//!
//! The server binaries come from `pg_config --bindir`, else the newest
//! `/usr/lib/postgresql/*/bin`. As root, `initdb` and `postgres` refuse to run,
//! so they run as the `postgres` user through `setpriv` (or `runuser`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};

mod url;

pub use url::{redact, with_database};

/// The database `accrue dev` creates and uses.
pub const DATABASE_NAME: &str = "accrue";

/// Why a dev database could not be provided.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// No PostgreSQL server binaries were found.
    #[error(
        "no PostgreSQL server binaries (initdb, postgres) found for a throwaway database (tried `pg_config --bindir` \
         and /usr/lib/postgresql/*/bin). Install them (Debian/Ubuntu: `sudo apt-get install postgresql`; Fedora: \
         `sudo dnf install postgresql-server`; macOS: `brew install postgresql`), or use an existing server with \
         --database-url / DATABASE_URL"
    )]
    NoBinaries,
    /// A given database URL cannot be used; the refusal says why and what to do.
    #[error("cannot use the database at {url}: {refusal}")]
    Refused {
        /// The URL, password redacted.
        url: String,
        /// Why, and what to do.
        refusal: accrue_kit::db::Refusal,
    },
    /// A helper command could not be run or failed.
    #[error("{command} failed: {detail}")]
    Command {
        /// The command line.
        command: String,
        /// Its stderr or the spawn error.
        detail: String,
    },
    /// The server did not accept connections in time.
    #[error("postgres did not accept connections within {0:?}; log: {1}")]
    NotReady(Duration, String),
    /// A filesystem operation failed.
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    /// A SQL statement failed.
    #[error("{0}: {1}")]
    Sql(String, #[source] sqlx::Error),
}

/// Where the dev database lives.
#[derive(Debug)]
pub enum DevDatabase {
    /// A URL the user gave (flag or `DATABASE_URL`), used as is.
    Given(String),
    /// A throwaway server started for this process.
    Throwaway(ThrowawayPostgres),
}

impl DevDatabase {
    /// The URL the services connect with.
    pub fn url(&self) -> &str {
        match self {
            DevDatabase::Given(url) => url,
            DevDatabase::Throwaway(pg) => pg.url(),
        }
    }

    /// A one-line human description ("throwaway Postgres in /tmp/… on port 40123").
    pub fn describe(&self) -> String {
        match self {
            DevDatabase::Given(url) => format!("given database {}", redact(url)),
            DevDatabase::Throwaway(pg) => {
                format!("throwaway Postgres in {} on port {} ({})", pg.dir().display(), pg.port(), pg.url())
            }
        }
    }

    /// Stops a throwaway server (and deletes its directory); a no-op otherwise.
    pub async fn stop(self) -> Result<(), PgError> {
        match self {
            DevDatabase::Throwaway(pg) => pg.stop().await,
            DevDatabase::Given(_) => Ok(()),
        }
    }
}

/// Picks the dev database: `url` when given (after [`check_given`]), else
/// a fresh [`ThrowawayPostgres`]. Never a server that merely happens to
/// listen on 127.0.0.1:5432: the user's own database there is not ours to
/// fill.
pub async fn dev_database(url: Option<String>) -> Result<DevDatabase, PgError> {
    if let Some(url) = url.filter(|u| !u.trim().is_empty()) {
        check_given(&url).await?;
        return Ok(DevDatabase::Given(url));
    }
    Ok(DevDatabase::Throwaway(ThrowawayPostgres::start().await?))
}

/// Connects once to a user's `url` (within ten seconds), so that a URL the
/// server refuses fails here, with why and what to do
/// ([`PgError::Refused`]: wrong password, unknown role or database, too many
/// clients, nothing listening), not later inside a service as a bare
/// "pool timed out".
pub async fn check_given(url: &str) -> Result<(), PgError> {
    let attempt = tokio::time::timeout(Duration::from_secs(10), PgConnection::connect(url)).await;
    match attempt {
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            Ok(())
        }
        Ok(Err(error)) => Err(match accrue_kit::db::Refusal::of(&error) {
            Some(refusal) => PgError::Refused { url: redact(url), refusal },
            None => PgError::Sql(format!("connecting to {}", redact(url)), error),
        }),
        Err(_) => Err(PgError::NotReady(Duration::from_secs(10), format!("no answer from {}", redact(url)))),
    }
}

/// Creates database `name` through `admin_url` unless it exists.
pub async fn ensure_database(admin_url: &str, name: &str) -> Result<(), PgError> {
    let mut conn = PgConnection::connect(admin_url)
        .await
        .map_err(|e| PgError::Sql(format!("connecting to {}", redact(admin_url)), e))?;
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_optional(&mut conn)
        .await
        .map_err(|e| PgError::Sql("looking up the database".into(), e))?;
    if exists.is_none() {
        let statement = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
        if let Err(error) = sqlx::query(sqlx::AssertSqlSafe(statement)).execute(&mut conn).await {
            // Another process may have created it meanwhile (42P04 duplicate_database).
            let duplicate = error.as_database_error().and_then(|e| e.code()).is_some_and(|code| code == "42P04");
            if !duplicate {
                return Err(PgError::Sql(format!("CREATE DATABASE {name}"), error));
            }
        }
    }
    let _ = conn.close().await;
    Ok(())
}

/// Drops database `name` through `admin_url` if it exists, ending any
/// session still connected to it (`WITH (FORCE)`, PostgreSQL 13 and later).
pub async fn drop_database(admin_url: &str, name: &str) -> Result<(), PgError> {
    let mut conn = PgConnection::connect(admin_url)
        .await
        .map_err(|e| PgError::Sql(format!("connecting to {}", redact(admin_url)), e))?;
    let statement = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", name.replace('"', "\"\""));
    let dropped = sqlx::query(sqlx::AssertSqlSafe(statement)).execute(&mut conn).await;
    let _ = conn.close().await;
    dropped.map(|_| ()).map_err(|e| PgError::Sql(format!("DROP DATABASE {name}"), e))
}

/// The directory holding `initdb` and `postgres`.
pub fn find_bindir() -> Result<PathBuf, PgError> {
    if let Ok(output) = Command::new("pg_config").arg("--bindir").output()
        && output.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if dir.join("initdb").is_file() && dir.join("postgres").is_file() {
            return Ok(dir);
        }
    }
    let mut candidates: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_string_lossy().split('.').next()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("postgres").is_file()).then_some((version, bin))
        })
        .collect();
    candidates.sort();
    candidates.pop().map(|(_, bin)| bin).ok_or(PgError::NoBinaries)
}

/// Whether this process runs as root (`id -u` prints 0).
pub fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A command that runs `program` as the `postgres` user when we are root.
fn server_command(program: &Path, as_postgres: bool) -> Command {
    if !as_postgres {
        return Command::new(program);
    }
    if Path::new("/usr/bin/setpriv").exists() || which("setpriv") {
        let mut command = Command::new("setpriv");
        command.args(["--reuid=postgres", "--regid=postgres", "--init-groups", "--"]).arg(program);
        command
    } else {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    }
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
}

fn run(mut command: Command) -> Result<(), PgError> {
    let label = format!("{command:?}");
    let output = command.output().map_err(|e| PgError::Command { command: label.clone(), detail: e.to_string() })?;
    if output.status.success() {
        Ok(())
    } else {
        let mut detail = String::from_utf8_lossy(&output.stderr).trim().to_string();
        if detail.is_empty() {
            detail = String::from_utf8_lossy(&output.stdout).trim().to_string();
        }
        Err(PgError::Command { command: label, detail: format!("{} ({detail})", output.status) })
    }
}

/// How much of its durability a throwaway server keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// fsync, synchronous_commit and full_page_writes off: fastest, and a
    /// crash of the server may lose the last acknowledged commits (`accrue
    /// dev`, the tests).
    #[default]
    Off,
    /// fsync and full_page_writes off, synchronous_commit on: every
    /// acknowledged commit's WAL has been written to the operating system
    /// before the client hears of it, so it survives the server being killed
    /// (an immediate shutdown) though not the machine losing power. What the
    /// crash campaign needs: it kills processes, never the OS.
    ProcessCrashSafe,
    /// The server's own defaults: fsync, synchronous_commit and
    /// full_page_writes on, so an acknowledged commit survives the machine
    /// losing power — what a production server does, and so what the
    /// benchmark (`accrue bench`) measures against.
    Full,
}

impl Durability {
    fn settings(self) -> [&'static str; 3] {
        match self {
            Durability::Off => ["fsync=off", "synchronous_commit=off", "full_page_writes=off"],
            Durability::ProcessCrashSafe => ["fsync=off", "synchronous_commit=on", "full_page_writes=off"],
            Durability::Full => ["fsync=on", "synchronous_commit=on", "full_page_writes=on"],
        }
    }
}

/// A Postgres server in a temporary directory, owned by this process.
#[derive(Debug)]
pub struct ThrowawayPostgres {
    dir: Option<tempfile::TempDir>,
    child: Option<Child>,
    port: u16,
    url: String,
    bindir: PathBuf,
    as_postgres: bool,
    durability: Durability,
}

impl ThrowawayPostgres {
    /// Initializes a cluster in a new temporary directory (trust auth, user
    /// `postgres`), starts it on a free loopback port with fsync,
    /// synchronous_commit and full_page_writes off, waits until it accepts
    /// connections (up to 30 s) and creates database [`DATABASE_NAME`].
    pub async fn start() -> Result<Self, PgError> {
        Self::start_with(Durability::Off).await
    }

    /// Like [`ThrowawayPostgres::start`], with the given [`Durability`].
    pub async fn start_with(durability: Durability) -> Result<Self, PgError> {
        let bindir = find_bindir()?;
        let as_postgres = running_as_root();
        let dir = tempfile::Builder::new()
            .prefix("accrue-pg-")
            .tempdir()
            .map_err(|e| PgError::Io("creating a temporary directory".into(), e))?;
        let root = dir.path().to_path_buf();
        let data = root.join("data");
        if as_postgres {
            let mut chown = Command::new("chown");
            chown.args(["-R", "postgres:postgres"]).arg(&root);
            run(chown)?;
        }
        let mut initdb = server_command(&bindir.join("initdb"), as_postgres);
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync"])
            .current_dir(&root);
        run(initdb)?;

        let port = crate::procs::free_port().map_err(|e| PgError::Io("finding a free port".into(), e))?;
        let url = format!("postgres://postgres@127.0.0.1:{port}/{DATABASE_NAME}");
        let mut server = ThrowawayPostgres { dir: Some(dir), child: None, port, url, bindir, as_postgres, durability };
        server.spawn_server().await?;
        ensure_database(&server.admin_url(), DATABASE_NAME).await?;
        Ok(server)
    }

    /// Starts `postgres` on the cluster and port of this server and waits (up
    /// to 30 s) until it accepts connections.
    async fn spawn_server(&mut self) -> Result<(), PgError> {
        let root = self.dir().to_path_buf();
        let data = root.join("data");
        let log_path = root.join("postgres.log");
        // Appended to: a restarted server's log follows the first one's.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| PgError::Io(format!("opening {}", log_path.display()), e))?;
        let log_err = log.try_clone().map_err(|e| PgError::Io("duplicating the log handle".into(), e))?;
        let mut postgres = server_command(&self.bindir.join("postgres"), self.as_postgres);
        postgres.arg("-D").arg(&data).arg("-p").arg(self.port.to_string()).arg("-k").arg(&root);
        postgres.args(["-c", "listen_addresses=127.0.0.1"]);
        for setting in self.durability.settings() {
            postgres.args(["-c", setting]);
        }
        postgres.current_dir(&root).stdin(Stdio::null()).stdout(Stdio::from(log)).stderr(Stdio::from(log_err));
        // Own process group: a terminal's Ctrl-C reaches us, not the server, so
        // the services drain before the database stops.
        std::os::unix::process::CommandExt::process_group(&mut postgres, 0);
        let child = postgres
            .spawn()
            .map_err(|e| PgError::Command { command: format!("{postgres:?}"), detail: e.to_string() })?;
        self.child = Some(child);

        let admin = self.admin_url();
        let limit = Duration::from_secs(30);
        let started = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                self.child = None;
                return Err(PgError::Command {
                    command: "postgres".into(),
                    detail: format!("exited with {status}: {log}"),
                });
            }
            if let Ok(conn) = PgConnection::connect(&admin).await {
                let _ = conn.close().await;
                return Ok(());
            }
            if started.elapsed() > limit {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                return Err(PgError::NotReady(limit, log));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the server in immediate mode (`pg_ctl stop -m immediate`: every
    /// backend quits at once, no checkpoint, as after a crash) and starts it
    /// again on the same directory and port; returns once it accepts
    /// connections again (after crash recovery from the WAL).
    pub async fn restart_immediate(&mut self) -> Result<(), PgError> {
        let mut pg_ctl = server_command(&self.bindir.join("pg_ctl"), self.as_postgres);
        pg_ctl.arg("-D").arg(self.dir().join("data")).args(["-m", "immediate", "-w", "stop"]);
        tokio::task::spawn_blocking(move || run(pg_ctl))
            .await
            .map_err(|e| PgError::Command { command: "pg_ctl stop".into(), detail: e.to_string() })??;
        if let Some(mut child) = self.child.take() {
            // pg_ctl waited for the postmaster to exit; reap it.
            let _ = tokio::task::spawn_blocking(move || child.wait()).await;
        }
        self.spawn_server().await
    }

    /// URL of the `postgres` maintenance database as superuser `postgres`.
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// URL of database `name` on this server as superuser `postgres`.
    pub fn database_url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// URL of database [`DATABASE_NAME`] on this server.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The temporary directory (data directory is `data/` inside it).
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().map_or(Path::new(""), |d| d.path())
    }

    /// Stops the server (SIGINT: fast shutdown, up to 10 s, then SIGKILL) and
    /// deletes its directory.
    pub async fn stop(mut self) -> Result<(), PgError> {
        if let Some(mut child) = self.child.take() {
            interrupt(&child);
            let started = Instant::now();
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if started.elapsed() < Duration::from_secs(10) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
        if let Some(dir) = self.dir.take() {
            let path = dir.path().display().to_string();
            dir.close().map_err(|e| PgError::Io(format!("removing {path}"), e))?;
        }
        Ok(())
    }
}

fn interrupt(child: &Child) {
    let _ = Command::new("kill")
        .arg("-INT")
        .arg(child.id().to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

impl Drop for ThrowawayPostgres {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            interrupt(&child);
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        // `dir` (a TempDir) deletes itself when dropped after this.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn throwaway_postgres_starts_accepts_sql_and_cleans_up() {
        if find_bindir().is_err() {
            eprintln!("skipping: no PostgreSQL server binaries");
            return;
        }
        let pg = ThrowawayPostgres::start().await.expect("start");
        let dir = pg.dir().to_path_buf();
        let mut conn = PgConnection::connect(pg.url()).await.expect("connect");
        let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&mut conn).await.expect("select");
        assert_eq!(one, 1);
        conn.close().await.expect("close");
        pg.stop().await.expect("stop");
        assert!(!dir.exists(), "temporary directory removed");
    }

    /// Without a URL the dev database is always a throwaway server, even
    /// though the shared test server listens on 127.0.0.1:5432; stopping it
    /// leaves neither a process nor a directory behind.
    #[tokio::test]
    async fn without_a_url_the_dev_database_is_throwaway_and_leaves_nothing_behind() {
        if find_bindir().is_err() {
            eprintln!("skipping: no PostgreSQL server binaries");
            return;
        }
        let database = dev_database(None).await.expect("a throwaway database");
        let DevDatabase::Throwaway(pg) = &database else { panic!("{}", database.describe()) };
        assert_ne!(pg.port(), 5432);
        let (dir, pid) = (pg.dir().to_path_buf(), pg.pid().expect("running"));
        assert!(pg.dir().starts_with(std::env::temp_dir()), "{}", pg.dir().display());
        let conn = PgConnection::connect(database.url()).await.expect("connect");
        conn.close().await.expect("close");
        database.stop().await.expect("stop");
        assert!(!dir.exists(), "temporary directory removed");
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "postgres {pid} stopped");
    }

    /// The shared test server's admin URL with `database` as the database.
    fn shared_url(database: &str) -> String {
        let admin = std::env::var("ACCRUE_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string());
        with_database(admin.split('?').next().unwrap_or(&admin), database)
    }

    #[tokio::test]
    async fn a_given_url_that_is_refused_says_why_and_what_to_do() {
        if PgConnection::connect(&shared_url("postgres")).await.is_err() {
            eprintln!("skipping: no test server");
            return;
        }
        let unknown = shared_url(&format!("accrue_missing_{}", std::process::id()));
        let error = check_given(&unknown).await.expect_err("no such database");
        assert!(matches!(error, PgError::Refused { refusal: accrue_kit::db::Refusal::UnknownDatabase, .. }), "{error}");
        assert!(error.to_string().contains("3D000") && error.to_string().contains("create it"), "{error}");

        // A role that may hold no connection: 53300, as when max_connections is used up.
        let schema = format!("cli_{}", uuid::Uuid::new_v4().simple());
        let role = accrue_kit::db::role_name(&schema);
        let mut admin = PgConnection::connect(&shared_url("postgres")).await.expect("admin");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE ROLE {role} LOGIN CONNECTION LIMIT 0")))
            .execute(&mut admin)
            .await
            .expect("create role");
        let limited = accrue_kit::db::role_url(&shared_url("postgres"), &schema, Some("pw")).expect("role url");
        let outcome = check_given(&limited).await;
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP ROLE {role}"))).execute(&mut admin).await.expect("drop role");
        admin.close().await.expect("close");
        let error = outcome.expect_err("no connection allowed");
        assert!(matches!(error, PgError::Refused { refusal: accrue_kit::db::Refusal::TooManyClients, .. }), "{error}");
        let text = error.to_string();
        assert!(text.contains("53300") && text.contains("--max-connections") && text.contains(":***@"), "{text}");

        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let error = check_given(&format!("postgres://postgres@127.0.0.1:{closed}/x")).await.expect_err("refused");
        assert!(
            matches!(error, PgError::Refused { refusal: accrue_kit::db::Refusal::ConnectionRefused, .. }),
            "{error}"
        );
    }

    #[tokio::test]
    async fn an_acknowledged_commit_survives_an_immediate_restart_on_the_same_port() {
        if find_bindir().is_err() {
            eprintln!("skipping: no PostgreSQL server binaries");
            return;
        }
        let mut pg = ThrowawayPostgres::start_with(Durability::ProcessCrashSafe).await.expect("start");
        let port = pg.port();
        let mut conn = PgConnection::connect(pg.url()).await.expect("connect");
        sqlx::query("CREATE TABLE t (n int)").execute(&mut conn).await.expect("create");
        sqlx::query("INSERT INTO t VALUES (42)").execute(&mut conn).await.expect("insert");
        pg.restart_immediate().await.expect("restart");
        assert!(sqlx::query("SELECT 1").execute(&mut conn).await.is_err(), "the old session died with the server");
        assert_eq!(pg.port(), port);
        let mut conn = PgConnection::connect(pg.url()).await.expect("reconnect");
        let n: i32 = sqlx::query_scalar("SELECT n FROM t").fetch_one(&mut conn).await.expect("select");
        assert_eq!(n, 42);
        conn.close().await.expect("close");
        pg.stop().await.expect("stop");
    }
}
