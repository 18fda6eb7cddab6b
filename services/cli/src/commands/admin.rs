//! `accrue db provision`, `accrue migrate` and `accrue token mint`: the
//! database roles, the migration job and development tokens.

use accrue_cli::pg::redact;
use accrue_cli::stack::provision_all;
use accrue_kit::auth::{Minter, Role};
use accrue_types::id::{PartnerId, ProgramId};
use anyhow::Context;
use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub(crate) enum DbCommand {
    /// Create (or bring up to date) one login role per service, `accrue_<schema>`, owning its schema and nothing
    /// else, and print the URL each service should connect with. Idempotent; run it with an admin URL before the
    /// services start (they apply their own migrations as their roles). A database migrated before roles existed
    /// is handed over to the roles.
    Provision(ProvisionArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ProvisionArgs {
    /// Admin Postgres URL: a superuser, or a role with CREATEROLE that may create schemas in the database.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// Set each role's password from ACCRUE_<SCHEMA>_DB_PASSWORD (all five must be set); without it, new roles
    /// get no password (trust, peer or certificate auth) and existing ones keep theirs.
    #[arg(long)]
    password_env: bool,
}

#[derive(Debug, Args)]
pub(crate) struct MigrateArgs {
    /// Postgres URL: the admin URL with --provision, else the URL of every schema without its own
    /// ACCRUE_<SCHEMA>_DATABASE_URL.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Make or update the service roles first (as `accrue db provision`) and migrate acting as each role.
    #[arg(long)]
    provision: bool,
    /// With --provision: set each role's password from ACCRUE_<SCHEMA>_DB_PASSWORD (all five must be set).
    #[arg(long, requires = "provision")]
    password_env: bool,
    /// How long to wait for the database to accept connections (s, m, h or d).
    #[arg(long, env = "ACCRUE_MIGRATE_WAIT", default_value = "60s", value_parser = parse_wait)]
    wait: std::time::Duration,
}

#[derive(Debug, Subcommand)]
pub(crate) enum TokenCommand {
    /// Print a token signed with the development HS256 secret.
    Mint(MintArgs),
}

#[derive(Debug, Args)]
pub(crate) struct MintArgs {
    /// The HS256 secret the services verify with (what `accrue dev` prints).
    #[arg(long, env = "ACCRUE_AUTH_HS256_SECRET", hide_env_values = true)]
    secret: String,
    /// A role: admin, finance, partner, service or viewer (repeat for several).
    #[arg(long = "role", required = true)]
    roles: Vec<String>,
    /// A program id, or `*` for every program (repeat for several).
    #[arg(long = "program", required = true)]
    programs: Vec<String>,
    /// The partner a partner token speaks for.
    #[arg(long)]
    partner: Option<String>,
    /// Subject (`sub`): who the audit trail names.
    #[arg(long, default_value = "dev-user")]
    subject: String,
    /// Lifetime: a number with s, m, h or d (`90m`, `1h`, `7d`).
    #[arg(long, default_value = "1h", value_parser = parse_ttl)]
    ttl: std::time::Duration,
    /// Expected issuer.
    #[arg(long, env = "ACCRUE_AUTH_ISSUER", default_value = accrue_kit::auth::DEFAULT_ISSUER)]
    issuer: String,
    /// Expected audience.
    #[arg(long, env = "ACCRUE_AUTH_AUDIENCE", default_value = accrue_kit::auth::DEFAULT_AUDIENCE)]
    audience: String,
}

/// `90m` → 90 minutes; units s, m, h, d; at least one second.
pub(crate) fn parse_ttl(text: &str) -> Result<std::time::Duration, String> {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let count: u64 = digits.parse().map_err(|_| format!("{text:?}: want a number and a unit (s, m, h, d)"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: the unit must be s, m, h or d")),
    };
    match count.checked_mul(seconds) {
        Some(total) if total > 0 => Ok(std::time::Duration::from_secs(total)),
        _ => Err(format!("{text:?}: out of range")),
    }
}

/// The variable `accrue db provision --password-env` reads the password of
/// `schema`'s role from.
pub(crate) fn password_env(schema: &str) -> String {
    format!("ACCRUE_{}_DB_PASSWORD", schema.to_uppercase())
}

/// Each role's password from its [`password_env`] variable (all five must
/// be set), or none when `from_env` is false.
pub(crate) fn role_passwords(from_env: bool) -> anyhow::Result<std::collections::HashMap<&'static str, String>> {
    let mut passwords = std::collections::HashMap::new();
    if from_env {
        for schema in accrue_cli::stack::SCHEMAS {
            let name = password_env(schema);
            let password = std::env::var(&name).ok().filter(|p| !p.is_empty());
            passwords.insert(schema, password.with_context(|| format!("--password-env: {name} is not set"))?);
        }
    }
    Ok(passwords)
}

/// `--wait`: like a token lifetime, but zero (do not wait) is allowed.
pub(crate) fn parse_wait(text: &str) -> Result<std::time::Duration, String> {
    if text.trim_end_matches(|c: char| c.is_ascii_alphabetic()).parse::<u64>() == Ok(0) {
        return Ok(std::time::Duration::ZERO);
    }
    parse_ttl(text)
}

pub(crate) async fn migrate(args: MigrateArgs) -> anyhow::Result<()> {
    let options = accrue_cli::migrate::MigrateOptions {
        database_url: args.database_url,
        provision: args.provision,
        passwords: role_passwords(args.password_env)?,
        wait: args.wait,
    };
    let reports = accrue_cli::migrate::run(&options).await?;
    for report in &reports {
        println!("{report}");
    }
    let applied: usize = reports.iter().map(|report| report.applied).sum();
    println!("{applied} migrations applied; every schema is up to date.");
    Ok(())
}

pub(crate) async fn provision(args: ProvisionArgs) -> anyhow::Result<()> {
    let passwords = role_passwords(args.password_env)?;
    let roles = provision_all(&args.database_url, |schema| passwords.get(schema).cloned()).await?;
    println!("Provisioned one role per service in {}.", redact(&args.database_url));
    println!("Connect each service as its own role (passwords shown as ***):");
    for role in &roles {
        println!("  {:<12} role {}", role.schema, role.role);
        println!("    {}={}", role.env_var(), redact(&role.url));
    }
    Ok(())
}

pub(crate) fn mint(args: MintArgs) -> anyhow::Result<()> {
    let roles = args.roles.iter().map(|r| r.parse::<Role>()).collect::<Result<Vec<_>, _>>()?;
    let partner = args.partner.as_deref().map(str::parse::<PartnerId>).transpose()?;
    if roles.contains(&Role::Partner) && partner.is_none() {
        anyhow::bail!("a partner token needs --partner");
    }
    for program in args.programs.iter().filter(|p| p.as_str() != "*") {
        program.parse::<ProgramId>()?;
    }
    let minter = Minter::new(&args.secret, &args.issuer, &args.audience)?;
    println!("{}", minter.mint(&args.subject, &roles, &args.programs, partner, args.ttl)?);
    Ok(())
}
