//! Clean run against chaos run: what was lost, duplicated, left stuck, or
//! came out different.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

use serde::Serialize;

use super::snapshot::Snapshot;

/// Saga states that have not finished.
const UNFINISHED: [&str; 2] = ["running", "unwinding"];

/// How the chaos run differs from the clean one; empty lists mean it does
/// not. Each item says what, under which key, and both sides.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Comparison {
    /// Rows the clean run has and the chaos run lacks (or has fewer of).
    pub lost: Vec<String>,
    /// Rows the chaos run has more of than the clean run.
    pub duplicated: Vec<String>,
    /// Sagas still running or unwinding, STUCK, or FAILED where the clean
    /// run's succeeded; sales and refunds PENDING where the clean run's are not.
    pub stuck: Vec<String>,
    /// Same key, same number of rows, other values (a state, an amount, a Σ
    /// per partner and kind).
    pub differing: Vec<String>,
    /// (partner, kind, CREDIT/DEBIT) groups whose Σ was compared.
    pub partner_kind_groups: usize,
}

impl Comparison {
    /// Whether the runs agree: nothing lost, duplicated, stuck or different.
    pub fn ok(&self) -> bool {
        self.lost.is_empty() && self.duplicated.is_empty() && self.stuck.is_empty() && self.differing.is_empty()
    }
}

/// Compares the chaos run's snapshot with the clean run's.
pub fn compare(clean: &Snapshot, chaos: &Snapshot) -> Comparison {
    let mut out = Comparison::default();
    rows("sale", &clean.sales, &chaos.sales, &mut out);
    rows("saga", &clean.sagas, &chaos.sagas, &mut out);
    rows("refund", &clean.refunds, &chaos.refunds, &mut out);
    rows("entry", &clean.entries, &chaos.entries, &mut out);
    rows("payout", &clean.payouts, &chaos.payouts, &mut out);

    let (clean_totals, chaos_totals) = (clean.partner_kind_totals(), chaos.partner_kind_totals());
    let groups: BTreeSet<&String> = clean_totals.keys().chain(chaos_totals.keys()).collect();
    out.partner_kind_groups = groups.len();
    for group in groups {
        let (a, b) = (
            clean_totals.get(group).copied().unwrap_or_default(),
            chaos_totals.get(group).copied().unwrap_or_default(),
        );
        if a != b {
            out.differing.push(format!("Σ {group}: clean {a}, chaos {b}"));
        }
    }

    // Events: none lost (a step re-run after a kill may write one again:
    // the feed is at least once, so more is not a fault) and every feed
    // numbered without gaps.
    for (key, count) in &clean.events {
        let after = chaos.events.get(key).copied().unwrap_or_default();
        if after < *count {
            out.lost.push(format!("events {key}: {count} in the clean run, {after} after chaos"));
        }
    }
    for gap in clean.feed_gaps.iter().chain(&chaos.feed_gaps) {
        out.differing.push(format!("event feed not numbered 1..n: {gap}"));
    }
    for (key, states) in &chaos.sagas {
        let clean_failed = clean.sagas.get(key).is_some_and(|s| s.iter().any(|state| state == "failed"));
        for state in states {
            let unfinished = UNFINISHED.contains(&state.as_str()) || state == "stuck";
            if unfinished || (state == "failed" && !clean_failed) {
                out.stuck.push(format!("saga {key}: {state}"));
            }
        }
    }
    for (key, rows) in &chaos.sales {
        let clean_pending = clean.sales.get(key).is_some_and(|r| r.iter().any(|row| row.state == "PENDING"));
        if !clean_pending && rows.iter().any(|row| row.state == "PENDING") {
            out.stuck.push(format!("sale {key}: PENDING"));
        }
    }
    for (key, rows) in &chaos.refunds {
        let clean_pending = clean.refunds.get(key).is_some_and(|r| r.iter().any(|row| row.state == "PENDING"));
        if !clean_pending && rows.iter().any(|row| row.state == "PENDING") {
            out.stuck.push(format!("refund {key}: PENDING"));
        }
    }
    out
}

/// Compares two keyed multisets of rows: fewer rows is lost, more is
/// duplicated, as many but other values is differing (values are compared
/// sorted: rows under one key have no order).
fn rows<V: Ord + Clone + Debug>(
    what: &str,
    clean: &BTreeMap<String, Vec<V>>,
    chaos: &BTreeMap<String, Vec<V>>,
    out: &mut Comparison,
) {
    let keys: BTreeSet<&String> = clean.keys().chain(chaos.keys()).collect();
    for key in keys {
        let mut a = clean.get(key).cloned().unwrap_or_default();
        let mut b = chaos.get(key).cloned().unwrap_or_default();
        a.sort();
        b.sort();
        if b.len() < a.len() {
            out.lost.push(format!("{what} {key}: {} row(s) in the clean run, {} after chaos", a.len(), b.len()));
        } else if b.len() > a.len() {
            out.duplicated.push(format!("{what} {key}: {} row(s) in the clean run, {} after chaos", a.len(), b.len()));
        } else if a != b {
            out.differing.push(format!("{what} {key}: clean {a:?}, chaos {b:?}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chaos::snapshot::{PayoutRow, SaleRow};
    use rust_decimal::Decimal;

    fn paid(amount: Decimal) -> PayoutRow {
        PayoutRow { amount, status: "PAID".into() }
    }

    fn snapshot() -> Snapshot {
        let mut s = Snapshot::default();
        let sale = SaleRow { state: "SETTLED".into(), amount: Decimal::new(1000, 2), refunded: Decimal::ZERO };
        s.sales.insert("online-retail:1".into(), vec![sale]);
        s.sagas.insert("SETTLE_SALE online-retail:1".into(), vec!["done".into()]);
        s.entries.insert("online-retail:1 | partner-001 | DIRECT | CREDIT | - | 0".into(), vec![Decimal::new(100, 2)]);
        s.entries.insert("online-retail:1 | partner-000 | OVERRIDE | CREDIT | - | 1".into(), vec![Decimal::new(10, 2)]);
        s.payouts.insert("2011-01 | partner-001".into(), vec![paid(Decimal::new(100, 2))]);
        s
    }

    #[test]
    fn equal_runs_agree() {
        let c = compare(&snapshot(), &snapshot());
        assert!(c.ok(), "{c:?}");
        assert_eq!(c.partner_kind_groups, 2);
    }

    #[test]
    fn a_lost_entry_is_reported_with_its_partner_and_kind_sum() {
        let mut chaos = snapshot();
        chaos.entries.remove("online-retail:1 | partner-000 | OVERRIDE | CREDIT | - | 1");
        let c = compare(&snapshot(), &chaos);
        assert!(!c.ok());
        assert_eq!(c.lost.len(), 1, "{c:?}");
        assert!(c.lost[0].contains("partner-000 | OVERRIDE"), "{}", c.lost[0]);
        assert_eq!(c.differing, vec!["Σ partner-000 | OVERRIDE | CREDIT: clean 0.10, chaos 0".to_string()]);
        assert!(c.duplicated.is_empty() && c.stuck.is_empty());
    }

    #[test]
    fn a_duplicated_entry_and_payout_are_reported() {
        let mut chaos = snapshot();
        if let Some(amounts) = chaos.entries.get_mut("online-retail:1 | partner-001 | DIRECT | CREDIT | - | 0") {
            amounts.push(Decimal::new(100, 2));
        }
        if let Some(rows) = chaos.payouts.get_mut("2011-01 | partner-001") {
            rows.push(paid(Decimal::new(100, 2)));
        }
        let c = compare(&snapshot(), &chaos);
        assert_eq!(c.duplicated.len(), 2, "{c:?}");
        assert!(c.lost.is_empty());
        assert_eq!(c.differing.len(), 1, "the partner's DIRECT Σ doubled: {c:?}");
    }

    #[test]
    fn a_stuck_or_newly_failed_saga_and_a_pending_sale_are_stuck() {
        let mut chaos = snapshot();
        chaos.sagas.insert("SETTLE_SALE online-retail:1".into(), vec!["running".into()]);
        if let Some(rows) = chaos.sales.get_mut("online-retail:1") {
            rows[0].state = "PENDING".into();
        }
        let c = compare(&snapshot(), &chaos);
        assert_eq!(c.stuck, vec!["saga SETTLE_SALE online-retail:1: running", "sale online-retail:1: PENDING"]);
        assert!(!c.ok());

        let mut chaos = snapshot();
        chaos.sagas.insert("SETTLE_SALE online-retail:1".into(), vec!["failed".into()]);
        let c = compare(&snapshot(), &chaos);
        assert_eq!(c.stuck, vec!["saga SETTLE_SALE online-retail:1: failed"]);

        // A saga that failed in the clean run too (a suspended partner) is no finding.
        let mut clean = snapshot();
        clean.sagas.insert("SETTLE_SALE online-retail:1".into(), vec!["failed".into()]);
        let c = compare(&clean, &chaos);
        assert!(c.ok(), "{c:?}");
    }

    #[test]
    fn a_different_amount_or_payout_status_is_differing() {
        let mut chaos = snapshot();
        if let Some(rows) = chaos.payouts.get_mut("2011-01 | partner-001") {
            rows[0].amount = Decimal::new(99, 2);
        }
        let c = compare(&snapshot(), &chaos);
        assert_eq!(c.differing.len(), 1, "{c:?}");
        assert!(c.lost.is_empty() && c.duplicated.is_empty() && c.stuck.is_empty());

        let mut chaos = snapshot();
        if let Some(rows) = chaos.payouts.get_mut("2011-01 | partner-001") {
            rows[0].status = "APPROVED".into();
        }
        assert_eq!(compare(&snapshot(), &chaos).differing.len(), 1);
    }

    /// Fewer events of a type is lost; more is the feed's at-least-once
    /// (a step re-run after a kill); a feed with a gap is differing.
    #[test]
    fn lost_events_and_gaps_are_reported_and_extra_events_are_not() {
        let mut clean = snapshot();
        clean.events.insert("attribution accrue.attribution.v1.refund.applied".into(), 3);
        let mut chaos = clean.clone();
        chaos.events.insert("attribution accrue.attribution.v1.refund.applied".into(), 4);
        assert!(compare(&clean, &chaos).ok());
        chaos.events.insert("attribution accrue.attribution.v1.refund.applied".into(), 2);
        assert_eq!(compare(&clean, &chaos).lost.len(), 1);
        let mut chaos = clean.clone();
        chaos.feed_gaps.push("ledger p: 9 numbered, highest 10, counter Some(10)".into());
        assert_eq!(compare(&clean, &chaos).differing.len(), 1);
    }
}
