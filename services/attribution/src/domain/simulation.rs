//! SimulateProgram's comparison (issue 16 item 2), pure: each sale's actual
//! lines (what the ledger holds) next to its simulated lines (what the draft
//! gives through the settlement steps), tallied per partner, kind and
//! currency, with the sales whose lines changed most.

use std::collections::BTreeMap;

use accrue_money::{Currency, Money};
use accrue_types::settlement::EarningKind;
use accrue_types::{PartnerId, SaleId};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

/// Default number of most-changed sales a simulation returns.
pub(crate) const DEFAULT_TOP_K: usize = 10;
/// Most most-changed sales a simulation returns.
pub(crate) const MAX_TOP_K: usize = 100;

/// One line of a sale, actual or simulated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SimLine {
    /// Who earns it.
    pub(crate) partner_id: PartnerId,
    /// Its kind.
    pub(crate) kind: EarningKind,
    /// Override level (margin: position in the walk; 0 otherwise).
    pub(crate) level: u32,
    /// Amount (positive) and currency.
    pub(crate) amount: Money,
}

/// One sale compared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SaleComparison {
    /// The sale.
    pub(crate) sale_id: SaleId,
    /// When it occurred.
    pub(crate) occurred_at: DateTime<Utc>,
    /// Its currency.
    pub(crate) currency: Currency,
    /// Its live CREDIT lines in the ledger.
    pub(crate) actual: Vec<SimLine>,
    /// The lines the draft gives it (none when it fails).
    pub(crate) simulated: Vec<SimLine>,
    /// Why the draft could not settle it.
    pub(crate) failure: Option<String>,
}

/// A line's identity for comparison: who, what, which level, which currency (code).
type LineKey = (PartnerId, EarningKind, u32, &'static str);

impl SaleComparison {
    /// Σ |simulated − actual| over the sale's (partner, kind, level,
    /// currency) lines: everything that moved, redistributions included.
    pub(crate) fn change(&self) -> Decimal {
        let mut net: BTreeMap<LineKey, Decimal> = BTreeMap::new();
        for line in &self.simulated {
            *net.entry((line.partner_id, line.kind, line.level, line.amount.currency.code())).or_default() +=
                line.amount.amount;
        }
        for line in &self.actual {
            *net.entry((line.partner_id, line.kind, line.level, line.amount.currency.code())).or_default() -=
                line.amount.amount;
        }
        net.values().map(|d| d.abs()).sum()
    }

    /// Σ simulated − Σ actual.
    pub(crate) fn difference(&self) -> Decimal {
        let sum = |lines: &[SimLine]| lines.iter().map(|l| l.amount.amount).sum::<Decimal>();
        sum(&self.simulated) - sum(&self.actual)
    }
}

/// Actual and simulated totals of one (partner, kind, currency).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    /// Σ actual lines.
    pub(crate) actual: Decimal,
    /// Σ simulated lines.
    pub(crate) simulated: Decimal,
}

/// The running result of a simulation page.
#[derive(Debug, Clone)]
pub(crate) struct Tally {
    /// Per (partner, kind, currency code), ordered by partner then kind.
    pub(crate) totals: BTreeMap<(PartnerId, EarningKind, &'static str), Totals>,
    /// The `k` changed sales (see `changed`) with the greatest change,
    /// greatest first, ties by sale id.
    pub(crate) top: Vec<(Decimal, SaleComparison)>,
    k: usize,
    /// Sales compared.
    pub(crate) simulated: usize,
    /// Sales the draft could not settle.
    pub(crate) failed: usize,
    /// Sales whose lines changed (change > 0) or that the draft could not settle.
    pub(crate) changed: usize,
}

impl Tally {
    /// An empty tally keeping the `k` most-changed sales.
    pub(crate) fn new(k: usize) -> Self {
        Tally { totals: BTreeMap::new(), top: Vec::new(), k, simulated: 0, failed: 0, changed: 0 }
    }

    /// Adds one compared sale.
    pub(crate) fn add(&mut self, sale: SaleComparison) {
        self.simulated += 1;
        if sale.failure.is_some() {
            self.failed += 1;
        }
        for line in &sale.actual {
            self.totals.entry((line.partner_id, line.kind, line.amount.currency.code())).or_default().actual +=
                line.amount.amount;
        }
        for line in &sale.simulated {
            self.totals.entry((line.partner_id, line.kind, line.amount.currency.code())).or_default().simulated +=
                line.amount.amount;
        }
        let change = sale.change();
        if change.is_zero() && sale.failure.is_none() {
            return;
        }
        self.changed += 1;
        if self.k == 0 {
            return;
        }
        let rank = |c: &Decimal, s: &SaleComparison| (std::cmp::Reverse(*c), s.sale_id);
        let key = rank(&change, &sale);
        let at = self.top.partition_point(|(c, s)| rank(c, s) < key);
        if at < self.k {
            self.top.insert(at, (change, sale));
            self.top.truncate(self.k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(partner: u128, kind: EarningKind, amount: &str) -> SimLine {
        let gbp = Currency::from_code("GBP").unwrap();
        SimLine {
            partner_id: PartnerId::from_u128(partner),
            kind,
            level: 0,
            amount: Money { amount: gbp.parse_amount(amount).unwrap(), currency: gbp },
        }
    }

    fn sale(id: u128, actual: Vec<SimLine>, simulated: Vec<SimLine>) -> SaleComparison {
        let currency = Currency::from_code("GBP").unwrap();
        SaleComparison {
            sale_id: SaleId::from_u128(id),
            occurred_at: Utc::now(),
            currency,
            actual,
            simulated,
            failure: None,
        }
    }

    #[test]
    fn change_counts_redistribution_and_difference_the_net() {
        let s = sale(
            1,
            vec![line(1, EarningKind::Direct, "10.00"), line(2, EarningKind::Split, "5.00")],
            vec![line(1, EarningKind::Direct, "12.00"), line(2, EarningKind::Split, "3.00")],
        );
        assert_eq!(s.change(), Decimal::new(400, 2));
        assert_eq!(s.difference(), Decimal::ZERO);
    }

    #[test]
    fn tally_keeps_the_top_k_by_change_then_id_and_sums_per_partner_kind() {
        let mut tally = Tally::new(2);
        tally.add(sale(3, vec![line(1, EarningKind::Direct, "1.00")], vec![line(1, EarningKind::Direct, "2.00")]));
        tally.add(sale(2, vec![line(1, EarningKind::Direct, "1.00")], vec![line(1, EarningKind::Direct, "4.00")]));
        tally.add(sale(1, vec![line(1, EarningKind::Direct, "1.00")], vec![line(1, EarningKind::Direct, "2.00")]));
        tally.add(sale(4, vec![line(1, EarningKind::Direct, "1.00")], vec![line(1, EarningKind::Direct, "1.00")]));
        let ids: Vec<u128> = tally.top.iter().map(|(_, s)| s.sale_id.as_uuid().as_u128()).collect();
        assert_eq!(ids, vec![2, 1]);
        assert_eq!((tally.simulated, tally.changed, tally.failed), (4, 3, 0));
        let totals = tally.totals.values().next().unwrap();
        assert_eq!((totals.actual, totals.simulated), (Decimal::new(400, 2), Decimal::new(900, 2)));
    }
}
