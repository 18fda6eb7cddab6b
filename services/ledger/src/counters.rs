//! The ledger's business metrics (the `metrics` crate; free without a
//! recorder; served by [`accrue_kit::scrape`]), counted once the writing
//! transaction committed, never for a replayed request:
//!
//! - `accrue_ledger_entries_posted_total{service, kind, entry_type}`: entries
//!   written, by earning kind (`DIRECT`, `OVERRIDE`, …) and `CREDIT` /
//!   `DEBIT` (a clawback's debits included);
//! - `accrue_clawbacks_total{service}`: ReverseSale requests applied (one
//!   per refund clawed back).

/// The `service` label of the ledger's series.
const SERVICE: &str = "ledger";

/// Counts entries written, one `(kind, entry_type)` per entry.
pub(crate) fn entries_posted<K: AsRef<str>>(entries: impl IntoIterator<Item = (K, &'static str)>) {
    let mut counts: std::collections::HashMap<(String, &'static str), u64> = std::collections::HashMap::new();
    for (kind, entry_type) in entries {
        *counts.entry((kind.as_ref().to_string(), entry_type)).or_default() += 1;
    }
    for ((kind, entry_type), n) in counts {
        metrics::counter!(
            "accrue_ledger_entries_posted_total",
            "service" => SERVICE, "kind" => kind, "entry_type" => entry_type
        )
        .increment(n);
    }
}

/// Counts one applied clawback (ReverseSale).
pub(crate) fn clawback_applied() {
    metrics::counter!("accrue_clawbacks_total", "service" => SERVICE).increment(1);
}
