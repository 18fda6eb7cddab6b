//! What a replay did: counts, commission by kind, payouts per month, speed.

use std::collections::BTreeMap;
use std::fmt;

use rust_decimal::Decimal;
use serde::Serialize;

use super::load::SkipCount;

/// Commission posted in the program, by kind (Σ of GetEarningsSummary over
/// every partner; GBP).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CommissionTotals {
    /// Link-owner shares.
    pub direct: Decimal,
    /// Split shares.
    pub split: Decimal,
    /// Overrides.
    pub r#override: Decimal,
    /// Scheme margins.
    pub margin: Decimal,
    /// Sum of the above.
    pub total: Decimal,
}

/// One month's payout run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MonthPayouts {
    /// "YYYY-MM".
    pub period: String,
    /// Payout run id.
    pub payout_run_id: String,
    /// Entries moved PENDING → CLEARED by this month's ClearMatured.
    pub cleared_entries: i64,
    /// Payouts created.
    pub payout_count: i64,
    /// Σ payouts (GBP).
    pub amount: Decimal,
    /// Partners below the minimum, carried forward.
    pub carried_forward_count: i64,
    /// Σ carried forward (GBP).
    pub carried_forward_amount: Decimal,
}

/// The outcome of a replay.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// The program replayed into.
    pub program_id: String,
    /// The seed of the configuration.
    pub seed: u64,
    /// Data rows read (of the invoices kept).
    pub rows_read: u64,
    /// Invoices read (after `--limit-invoices`).
    pub invoices_read: u64,
    /// Sales sent with RecordSales (attributed + unattributed).
    pub sales_recorded: u64,
    /// Of those, sent with a customer.
    pub sales_with_customer: u64,
    /// Program sales SETTLED.
    pub settled: i64,
    /// Program sales FAILED.
    pub failed: i64,
    /// Program sales UNATTRIBUTED.
    pub unattributed: i64,
    /// Program sales still PENDING at the end (0 unless sagas are stuck).
    pub pending: i64,
    /// Sagas STUCK (an undo failed).
    pub sagas_stuck: i64,
    /// Skipped invoices and lines by reason.
    pub skipped: BTreeMap<String, SkipCount>,
    /// Credit invoices read.
    pub credit_invoices: u64,
    /// Credit lines counted (not applied).
    pub credit_lines_counted: u64,
    /// Commission by kind.
    pub commission: CommissionTotals,
    /// Payout runs, one per month.
    pub payouts: Vec<MonthPayouts>,
    /// Settled sales by the model of the agreement they settled under
    /// (PERCENTAGE, FIXED, TIERED, HYBRID).
    pub settled_by_model: BTreeMap<String, i64>,
    /// Seconds from the first RecordSales until every saga finished (ms precision).
    pub elapsed_seconds: Decimal,
    /// Sales this run settled (0 when re-run into a program that has them all).
    pub settled_this_run: i64,
    /// `settled_this_run` per second over `elapsed_seconds`, to 0.1.
    pub settled_per_second: Decimal,
    /// Where the configuration was written.
    pub config_path: String,
}

impl Summary {
    /// Invoices accounted for: recorded + credit + skipped (should equal `invoices_read`).
    pub fn invoices_accounted(&self) -> u64 {
        self.sales_recorded + self.credit_invoices + self.skipped.values().map(|s| s.invoices).sum::<u64>()
    }

    /// The summary as one line of JSON.
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Online Retail replay (seed {}) into program {}", self.seed, self.program_id)?;
        writeln!(
            f,
            "  invoices read        {:>10}   ({} rows; {} accounted for)",
            self.invoices_read,
            self.rows_read,
            self.invoices_accounted()
        )?;
        writeln!(
            f,
            "  sales recorded       {:>10}   ({} with a customer)",
            self.sales_recorded, self.sales_with_customer
        )?;
        writeln!(f, "    settled            {:>10}", self.settled)?;
        writeln!(f, "    failed             {:>10}", self.failed)?;
        writeln!(f, "    unattributed       {:>10}", self.unattributed)?;
        if !self.settled_by_model.is_empty() {
            writeln!(f, "  settled by agreement model")?;
            for (model, count) in &self.settled_by_model {
                writeln!(f, "    {:<18} {:>10}", model, count)?;
            }
        }
        if self.pending > 0 || self.sagas_stuck > 0 {
            writeln!(f, "    pending            {:>10}   ({} sagas stuck)", self.pending, self.sagas_stuck)?;
        }
        writeln!(
            f,
            "  credit invoices      {:>10}   ({} lines counted, not applied)",
            self.credit_invoices, self.credit_lines_counted
        )?;
        writeln!(f, "  skipped")?;
        for (reason, count) in &self.skipped {
            writeln!(f, "    {:<18} {:>10}   invoices ({} lines)", reason, count.invoices, count.lines)?;
        }
        writeln!(f, "  commission (GBP)")?;
        writeln!(f, "    direct             {:>14}", self.commission.direct)?;
        writeln!(f, "    split              {:>14}", self.commission.split)?;
        writeln!(f, "    override           {:>14}", self.commission.r#override)?;
        writeln!(f, "    margin             {:>14}", self.commission.margin)?;
        writeln!(f, "    total              {:>14}", self.commission.total)?;
        writeln!(f, "  payouts by month")?;
        for month in &self.payouts {
            writeln!(
                f,
                "    {}  {:>5} payouts  {:>12} GBP   ({} carried forward, {} GBP)",
                month.period,
                month.payout_count,
                month.amount,
                month.carried_forward_count,
                month.carried_forward_amount
            )?;
        }
        writeln!(
            f,
            "  elapsed              {:>10} s   ({} sales settled by this run, {} settled sales/s)",
            self.elapsed_seconds, self.settled_this_run, self.settled_per_second
        )?;
        write!(f, "  configuration        {}", self.config_path)
    }
}
