//! `accrue payouts …` and `accrue audit list`: a finance operator's payout
//! work against a running stack (the calls and rendering are
//! [`accrue_cli::operator`]).

use accrue_cli::operator;
use accrue_kit::auth::Credential;
use accrue_proto::payouts::v1::payout_service_client::PayoutServiceClient;
use anyhow::Context;
use clap::{Args, Subcommand};
use std::path::PathBuf;

/// Where the payouts service is and who calls it.
#[derive(Debug, Args)]
pub(crate) struct Connection {
    /// Payouts service URL.
    #[arg(long, global = true, env = "ACCRUE_PAYOUTS_URL", default_value = "http://127.0.0.1:50055")]
    payouts_url: String,
    /// Bearer token (a finance or admin token; its subject is the audit actor).
    #[arg(long, global = true, env = "ACCRUE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print JSON (one object per line) instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

/// ListPayouts / ExportPayouts filters.
#[derive(Debug, Args)]
pub(crate) struct PayoutFilters {
    /// Program id.
    #[arg(long)]
    program: String,
    /// Only this status (pending_approval, approved, rejected, processing, paid, failed, deleted).
    #[arg(long)]
    status: Option<String>,
    /// Only this partner's.
    #[arg(long)]
    partner: Option<String>,
    /// Only this period ("YYYY-MM").
    #[arg(long)]
    period: Option<String>,
    /// Only this currency (ISO 4217).
    #[arg(long)]
    currency: Option<String>,
    /// Only this payout run's.
    #[arg(long)]
    run: Option<String>,
    /// Include deleted payouts.
    #[arg(long)]
    show_deleted: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum PayoutsCommand {
    /// List payouts, oldest first.
    List(PayoutFilters),
    /// Show one payout.
    Show {
        /// Payout id.
        id: String,
    },
    /// Approve payouts (several ids: one bulk call in --program; each approved or refused on its own).
    Approve {
        /// Payout ids.
        #[arg(required = true)]
        ids: Vec<String>,
        /// Program (required with several ids).
        #[arg(long)]
        program: Option<String>,
        /// Idempotency key: the same command again changes nothing.
        #[arg(long, default_value = "")]
        request_id: String,
    },
    /// Reject a payout awaiting approval (its entries return to the next run).
    Reject {
        /// Payout id.
        id: String,
        /// Why (required).
        #[arg(long)]
        reason: String,
        /// Idempotency key.
        #[arg(long, default_value = "")]
        request_id: String,
    },
    /// Create a manual payout of a partner's payable ledger entries (no minimum applies).
    Create {
        /// Program id.
        #[arg(long)]
        program: String,
        /// Partner id.
        #[arg(long)]
        partner: String,
        /// Currency of the entries to pay (ISO 4217).
        #[arg(long)]
        currency: String,
        /// Period the payout is reported under ("YYYY-MM"); entries cleared by its end are paid.
        #[arg(long)]
        period: String,
        /// Notes kept on the payout.
        #[arg(long, default_value = "")]
        notes: String,
        /// Idempotency key (required: the payout's id derives from it, so running the command again is safe).
        #[arg(long)]
        request_id: String,
    },
    /// Delete a payout awaiting approval (its entries return to the next run).
    Delete {
        /// Payout id.
        id: String,
        /// Why (required).
        #[arg(long)]
        reason: String,
        /// Idempotency key.
        #[arg(long, default_value = "")]
        request_id: String,
    },
    /// Mark an approved or processing payout paid (its ledger entries become PAID).
    MarkPaid {
        /// Payout id.
        id: String,
        /// The payment's reference.
        #[arg(long)]
        reference: String,
        /// How it was paid.
        #[arg(long, default_value = "bank_transfer")]
        method: String,
        /// When it was paid (RFC 3339; default now).
        #[arg(long)]
        paid_at: Option<String>,
        /// Idempotency key.
        #[arg(long, default_value = "")]
        request_id: String,
    },
    /// Export payouts as CSV (RFC 4180) to --out or stdout.
    Export {
        #[command(flatten)]
        filters: PayoutFilters,
        /// File to write (default stdout).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum AuditCommand {
    /// List payout audit events, oldest first.
    List {
        /// Program id.
        #[arg(long)]
        program: String,
        /// Only this payout's.
        #[arg(long)]
        payout: Option<String>,
        /// Only this actor's (token subject).
        #[arg(long)]
        actor: Option<String>,
    },
}

pub(crate) fn payouts_client(
    connection: &Connection,
) -> anyhow::Result<PayoutServiceClient<accrue_kit::client::AuthChannel>> {
    let token = connection.token.clone().context("--token or ACCRUE_TOKEN is required")?;
    Ok(accrue_kit::client::connect(
        &connection.payouts_url,
        accrue_kit::client::BULK_TIMEOUT,
        &Credential::token(token),
    )?)
}

pub(crate) fn list_filter(filters: &PayoutFilters) -> anyhow::Result<accrue_proto::payouts::v1::ListPayoutsRequest> {
    let status = match &filters.status {
        Some(status) => operator::parse_status(status)? as i32,
        None => 0,
    };
    Ok(accrue_proto::payouts::v1::ListPayoutsRequest {
        program_id: filters.program.clone(),
        partner_id: filters.partner.clone().unwrap_or_default(),
        payout_run_id: filters.run.clone().unwrap_or_default(),
        status,
        period: filters.period.clone().unwrap_or_default(),
        currency_code: filters.currency.clone().unwrap_or_default(),
        show_deleted: filters.show_deleted,
        ..Default::default()
    })
}

pub(crate) async fn payouts(connection: Connection, action: PayoutsCommand) -> anyhow::Result<()> {
    let mut client = payouts_client(&connection)?;
    let json = connection.json;
    let views = match action {
        PayoutsCommand::List(filters) => operator::list(&mut client, list_filter(&filters)?).await?,
        PayoutsCommand::Show { id } => vec![operator::show(&mut client, &id).await?],
        PayoutsCommand::Approve { ids, program, request_id } => {
            let (approved, failed) = operator::approve(&mut client, program.as_deref(), &ids, &request_id).await?;
            for (id, message) in &failed {
                eprintln!("not approved: {id}: {message}");
            }
            print!("{}", operator::render_payouts(&approved, json));
            if !failed.is_empty() {
                anyhow::bail!("{} of {} payouts not approved", failed.len(), ids.len());
            }
            return Ok(());
        }
        PayoutsCommand::Reject { id, reason, request_id } => {
            vec![operator::reject(&mut client, &id, &reason, &request_id).await?]
        }
        PayoutsCommand::Create { program, partner, currency, period, notes, request_id } => {
            let request = accrue_proto::payouts::v1::CreatePayoutRequest {
                program_id: program,
                partner_id: partner,
                currency_code: currency,
                period,
                cutoff: None,
                notes,
                request_id,
            };
            vec![operator::create(&mut client, request).await?]
        }
        PayoutsCommand::Delete { id, reason, request_id } => {
            vec![operator::delete(&mut client, &id, &reason, &request_id).await?]
        }
        PayoutsCommand::MarkPaid { id, reference, method, paid_at, request_id } => {
            vec![operator::mark_paid(&mut client, &id, &reference, &method, paid_at.as_deref(), &request_id).await?]
        }
        PayoutsCommand::Export { filters, out } => {
            let list = list_filter(&filters)?;
            let filter = accrue_proto::payouts::v1::ExportPayoutsRequest {
                program_id: list.program_id,
                partner_id: list.partner_id,
                payout_run_id: list.payout_run_id,
                status: list.status,
                period: list.period,
                currency_code: list.currency_code,
                show_deleted: list.show_deleted,
            };
            if let Some(path) = out {
                let mut file = std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
                let rows = operator::export(&mut client, filter, &mut file).await?;
                eprintln!("{rows} payouts written to {}", path.display());
            } else {
                operator::export(&mut client, filter, &mut std::io::stdout()).await?;
            }
            return Ok(());
        }
    };
    print!("{}", operator::render_payouts(&views, json));
    Ok(())
}

/// `accrue audit list`: every page of ListAuditEvents with the filters.
pub(crate) async fn audit(connection: Connection, action: AuditCommand) -> anyhow::Result<()> {
    let AuditCommand::List { program, payout, actor } = action;
    let mut client = payouts_client(&connection)?;
    let filter = accrue_proto::payouts::v1::ListAuditEventsRequest {
        program_id: program,
        payout_id: payout.unwrap_or_default(),
        actor: actor.unwrap_or_default(),
        ..Default::default()
    };
    let events = operator::audit(&mut client, filter).await?;
    print!("{}", operator::render_audit(&events, connection.json));
    Ok(())
}
