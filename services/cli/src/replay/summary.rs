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
    /// Clawed back by refunds (Σ DEBIT entries), all kinds.
    pub clawback: Decimal,
    /// Clawback by the kind of the line it reverses.
    pub clawback_by_kind: ClawbackByKind,
    /// Net: direct + split + override + margin − clawback.
    pub total: Decimal,
}

/// Clawback by the kind of the line each debit reverses (GBP).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ClawbackByKind {
    /// Against link-owner shares.
    pub direct: Decimal,
    /// Against split shares.
    pub split: Decimal,
    /// Against overrides.
    pub r#override: Decimal,
    /// Against scheme margins.
    pub margin: Decimal,
}

/// What the credit invoices became (DESIGN §7; see `replay::refunds`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RefundTotals {
    /// Credit lines matched to a sale.
    pub credit_lines_matched: u64,
    /// Credit lines left unmatched, by reason.
    pub credit_lines_unmatched: BTreeMap<String, u64>,
    /// Matched values finer than pence, rounded half away from zero.
    pub values_rounded: u64,
    /// Refunds capped at the sale's unrefunded amount.
    pub refunds_capped: u64,
    /// (credit invoice, sale) pairs with nothing left to refund.
    pub refunds_dropped: u64,
    /// RecordRefund calls acknowledged by this run (new or replayed).
    pub refunds_recorded: u64,
    /// The program's refunds APPLIED.
    pub refunds_applied: u64,
    /// The program's refunds FAILED.
    pub refunds_failed: u64,
    /// The program's refunds still PENDING at the end (0 unless a saga is stuck).
    pub refunds_pending: u64,
    /// Σ refunded (GBP).
    pub refunded_amount: Decimal,
    /// Σ the refunds' clawback (GBP; equals `commission.clawback`).
    pub clawback_amount: Decimal,
    /// Partners whose payable balance is negative at the end (clawbacks not yet covered).
    pub partners_with_negative_balance: u64,
    /// Σ those negative balances (GBP, ≤ 0).
    pub negative_balance_total: Decimal,
    /// Seconds spent recording refunds and waiting for their clawback sagas.
    pub elapsed_seconds: Decimal,
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
    /// Refunds recorded in this month, before its run.
    pub refunds_recorded: u64,
    /// Σ payouts (GBP): each payout is the partner's net (credits − debits).
    pub amount: Decimal,
    /// Partners below the minimum, carried forward.
    pub carried_forward_count: i64,
    /// Σ carried forward (GBP).
    pub carried_forward_amount: Decimal,
}

/// Payouts in one final status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusTotal {
    /// How many.
    pub count: i64,
    /// Σ their amounts (GBP).
    pub amount: Decimal,
}

/// Where the payouts ended (issue 12 item 7).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PayoutSettlement {
    /// Payouts by final status ("PAID", "REJECTED"…).
    pub by_status: BTreeMap<String, StatusTotal>,
    /// Σ PAID payouts (GBP).
    pub paid_total: Decimal,
    /// Σ PAID ledger entries, credits − debits (GBP).
    pub ledger_paid_total: Decimal,
    /// Σ entries paid and later REVERSED by a full refund, credits − debits
    /// (GBP): `paid_total` = `ledger_paid_total` + this (DESIGN §4, §5).
    pub paid_then_reversed: Decimal,
    /// Payout rows in the exported CSV.
    pub exported: u64,
    /// Where the CSV was written.
    pub csv_path: String,
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
    /// Program sales settled (SETTLED, PARTIALLY_REFUNDED or REFUNDED).
    pub settled: i64,
    /// Of those, PARTIALLY_REFUNDED.
    pub partially_refunded: i64,
    /// Of those, REFUNDED in full.
    pub refunded: i64,
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
    /// Lines of credit invoices.
    pub credit_lines: u64,
    /// What the credit invoices became.
    pub refunds: RefundTotals,
    /// Commission by kind.
    pub commission: CommissionTotals,
    /// Payout runs, one per month.
    pub payouts: Vec<MonthPayouts>,
    /// Where the payouts ended, and the exported CSV.
    pub settlement: PayoutSettlement,
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
        writeln!(f, "      partly refunded  {:>10}", self.partially_refunded)?;
        writeln!(f, "      refunded in full {:>10}", self.refunded)?;
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
        let r = &self.refunds;
        writeln!(
            f,
            "  credit invoices      {:>10}   ({} lines: {} matched to a sale)",
            self.credit_invoices, self.credit_lines, r.credit_lines_matched
        )?;
        for (reason, count) in &r.credit_lines_unmatched {
            writeln!(f, "    unmatched: {:<38} {:>6} lines", reason, count)?;
        }
        writeln!(
            f,
            "  refunds recorded     {:>10}   ({} applied, {} failed, {} pending; {} capped, {} dropped, {} values rounded)",
            r.refunds_recorded,
            r.refunds_applied,
            r.refunds_failed,
            r.refunds_pending,
            r.refunds_capped,
            r.refunds_dropped,
            r.values_rounded
        )?;
        writeln!(f, "    refunded (GBP)     {:>14}", r.refunded_amount)?;
        writeln!(f, "    clawed back (GBP)  {:>14}   in {} s", r.clawback_amount, r.elapsed_seconds)?;
        writeln!(
            f,
            "    negative balances  {:>10}   partners ({} GBP carried forward)",
            r.partners_with_negative_balance, r.negative_balance_total
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
        let c = &self.commission.clawback_by_kind;
        writeln!(
            f,
            "    clawback           {:>14}   (direct {}, split {}, override {}, margin {})",
            self.commission.clawback, c.direct, c.split, c.r#override, c.margin
        )?;
        writeln!(f, "    total (net)        {:>14}", self.commission.total)?;
        writeln!(f, "  payouts by month")?;
        for month in &self.payouts {
            writeln!(
                f,
                "    {}  {:>5} payouts  {:>12} GBP net   ({} carried forward, {} GBP; {} refunds before the run)",
                month.period,
                month.payout_count,
                month.amount,
                month.carried_forward_count,
                month.carried_forward_amount,
                month.refunds_recorded
            )?;
        }
        let s = &self.settlement;
        writeln!(f, "  payouts by final status")?;
        for (status, total) in &s.by_status {
            writeln!(f, "    {status:<18} {:>5} payouts  {:>12} GBP", total.count, total.amount)?;
        }
        writeln!(
            f,
            "    paid total         {:>14} GBP   (Σ PAID ledger entries {} GBP + {} GBP paid, then reversed by a full refund)",
            s.paid_total, s.ledger_paid_total, s.paid_then_reversed
        )?;
        writeln!(f, "    exported           {:>5} rows to {}", s.exported, s.csv_path)?;
        writeln!(
            f,
            "  elapsed              {:>10} s   ({} sales settled by this run, {} settled sales/s)",
            self.elapsed_seconds, self.settled_this_run, self.settled_per_second
        )?;
        write!(f, "  configuration        {}", self.config_path)
    }
}
