//! Credit invoices → refunds (DESIGN §7, issue 9 item 7), with no I/O: each
//! credit line refunds, among the same customer's sales with an *earlier*
//! `occurred_at` that contain its StockCode with enough unrefunded quantity,
//! the most recent one (same instant: the later in file order). Its value is
//! |quantity| × the credit line's unit price, exact; a value with more decimals
//! than pence is rounded half away from zero and counted. One refund per
//! (credit invoice, matched sale), amount = Σ its matched values, in credit
//! invoice time order (ties by file order); a refund above the sale's
//! unrefunded amount is capped at what remains and counted. Unmatched lines
//! are counted by reason, never guessed.

use std::collections::{BTreeMap, HashMap};

use accrue_money::{Currency, RoundingMode};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;

use super::load::{Dataset, Invoice, InvoiceClass};

/// A credit line whose invoice names no customer.
pub const UNMATCHED_NO_CUSTOMER: &str = "no customer";
/// The customer has no sale before the credit invoice.
pub const UNMATCHED_NO_EARLIER_SALE: &str = "no earlier sale";
/// None of the customer's earlier sales has the line's StockCode.
pub const UNMATCHED_NO_STOCK_CODE: &str = "no earlier sale with that StockCode";
/// Earlier sales have the StockCode, none with enough unrefunded quantity left.
pub const UNMATCHED_NOT_ENOUGH_QUANTITY: &str = "not enough unrefunded quantity";

/// One credit line matched to a sale.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MatchedLine {
    /// StockCode.
    pub stock_code: String,
    /// The credit line's quantity (negative, as in the file).
    pub quantity: i64,
    /// The credit line's unit price, GBP, exact.
    pub unit_price: Decimal,
    /// |quantity| × unit price, rounded to pence half away from zero only when
    /// it has more decimals.
    pub value: Decimal,
}

/// One refund to record: a credit invoice's lines matched to one sale.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedRefund {
    /// The refund's external id: `online-retail:<credit invoice>:<sale invoice>`.
    pub external_id: String,
    /// The credit invoice ("C541433").
    pub credit_invoice: String,
    /// The refunded sale's invoice ("541431").
    pub sale_invoice: String,
    /// The refunded sale's external id (`online-retail:<invoice>`).
    pub sale_external_id: String,
    /// GBP, > 0: Σ the matched lines' values, capped at the sale's unrefunded amount.
    pub amount: Decimal,
    /// Σ the matched lines' values before the cap (equal to `amount` unless capped).
    pub matched_value: Decimal,
    /// The credit invoice's time.
    pub occurred_at: DateTime<Utc>,
    /// The matched credit lines, in file order.
    pub lines: Vec<MatchedLine>,
}

/// What the credit invoices come to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefundPlan {
    /// Refunds in the order they are applied (credit invoice time, then file order).
    pub refunds: Vec<PlannedRefund>,
    /// Credit lines matched to a sale.
    pub matched_lines: u64,
    /// Credit lines left unmatched, by reason.
    pub unmatched_lines: BTreeMap<&'static str, u64>,
    /// Matched values rounded to pence (they had more decimals).
    pub rounded_values: u64,
    /// Refunds capped at the sale's unrefunded amount.
    pub capped_refunds: u64,
    /// (credit invoice, sale) pairs dropped: nothing of the sale was left to refund,
    /// or the matched lines were worth 0.
    pub dropped_refunds: u64,
}

/// One sale as matching sees it: what is left to refund.
struct Candidate<'a> {
    invoice: &'a Invoice,
    /// File position (ties of `occurred_at` go to the later).
    position: usize,
    /// StockCode → quantity not yet refunded.
    quantity_left: HashMap<&'a str, i64>,
    /// GBP not yet refunded.
    amount_left: Decimal,
}

/// Plans every refund of `data`, whose amounts are in `gbp` (see the module
/// docs). Deterministic: the same data gives the same plan.
pub fn plan(data: &Dataset, gbp: Currency) -> RefundPlan {
    let mut by_customer: HashMap<&str, Vec<Candidate<'_>>> = HashMap::new();
    let mut credits: Vec<(usize, &Invoice)> = Vec::new();
    for (position, invoice) in data.invoices.iter().enumerate() {
        match (&invoice.class, invoice.customer.as_deref()) {
            (InvoiceClass::Sale, Some(customer)) => {
                let mut quantity_left: HashMap<&str, i64> = HashMap::new();
                for item in &invoice.items {
                    *quantity_left.entry(item.stock_code.as_str()).or_default() += item.quantity;
                }
                by_customer.entry(customer).or_default().push(Candidate {
                    invoice,
                    position,
                    quantity_left,
                    amount_left: invoice.total,
                });
            }
            (InvoiceClass::Credit, _) => credits.push((position, invoice)),
            _ => {}
        }
    }
    // Stable: same-instant credit invoices keep file order.
    credits.sort_by_key(|(position, invoice)| (invoice.occurred_at, *position));

    let mut out = RefundPlan::default();
    for (_, credit) in credits {
        let Some(customer) = credit.customer.as_deref() else {
            *out.unmatched_lines.entry(UNMATCHED_NO_CUSTOMER).or_default() += credit.items.len() as u64;
            continue;
        };
        let candidates = by_customer.get_mut(customer).map(Vec::as_mut_slice).unwrap_or_default();
        // (candidate index, lines) in order of each sale's first matched line.
        let mut groups: Vec<(usize, Vec<MatchedLine>)> = Vec::new();
        for item in &credit.items {
            let wanted = item.quantity.unsigned_abs();
            let chosen = match choose(candidates, credit, &item.stock_code, wanted) {
                Ok(index) => index,
                Err(reason) => {
                    *out.unmatched_lines.entry(reason).or_default() += 1;
                    continue;
                }
            };
            let candidate = &mut candidates[chosen];
            if let Some(left) = candidate.quantity_left.get_mut(item.stock_code.as_str()) {
                *left -= i64::try_from(wanted).unwrap_or(i64::MAX);
            }
            let exact = Decimal::from(wanted) * item.unit_price;
            let value = gbp.round(exact, RoundingMode::HalfAwayFromZero);
            if !gbp.is_exact(exact) {
                out.rounded_values += 1;
            }
            out.matched_lines += 1;
            let line = MatchedLine {
                stock_code: item.stock_code.clone(),
                quantity: item.quantity,
                unit_price: item.unit_price,
                value,
            };
            match groups.iter_mut().find(|(index, _)| *index == chosen) {
                Some((_, lines)) => lines.push(line),
                None => groups.push((chosen, vec![line])),
            }
        }
        for (index, lines) in groups {
            let candidate = &mut candidates[index];
            let matched_value: Decimal = lines.iter().map(|l| l.value).sum();
            let amount = matched_value.min(candidate.amount_left);
            if amount < matched_value {
                out.capped_refunds += 1;
            }
            if amount <= Decimal::ZERO {
                out.dropped_refunds += 1;
                continue;
            }
            candidate.amount_left -= amount;
            out.refunds.push(PlannedRefund {
                external_id: format!("online-retail:{}:{}", credit.invoice_no, candidate.invoice.invoice_no),
                credit_invoice: credit.invoice_no.clone(),
                sale_invoice: candidate.invoice.invoice_no.clone(),
                sale_external_id: candidate.invoice.external_id(),
                amount: gbp.rescale(amount),
                matched_value: gbp.rescale(matched_value),
                occurred_at: credit.occurred_at,
                lines,
            });
        }
    }
    out
}

/// The sale a credit line refunds, or why none.
fn choose(
    candidates: &[Candidate<'_>],
    credit: &Invoice,
    stock_code: &str,
    wanted: u64,
) -> Result<usize, &'static str> {
    let mut earlier = false;
    let mut has_code = false;
    let mut best: Option<usize> = None;
    for (index, candidate) in candidates.iter().enumerate() {
        if candidate.invoice.occurred_at >= credit.occurred_at {
            continue;
        }
        earlier = true;
        let Some(&left) = candidate.quantity_left.get(stock_code) else { continue };
        has_code = true;
        if u64::try_from(left).unwrap_or(0) < wanted {
            continue;
        }
        let newer = best.is_none_or(|b| {
            let current = &candidates[b];
            (candidate.invoice.occurred_at, candidate.position) > (current.invoice.occurred_at, current.position)
        });
        if newer {
            best = Some(index);
        }
    }
    match best {
        Some(index) => Ok(index),
        None if !earlier => Err(UNMATCHED_NO_EARLIER_SALE),
        None if !has_code => Err(UNMATCHED_NO_STOCK_CODE),
        None => Err(UNMATCHED_NOT_ENOUGH_QUANTITY),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::replay::load::load_reader;
    use rust_decimal_macros::dec;

    const HEADER: &str = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n";

    fn plan_of(rows: &str) -> RefundPlan {
        plan(&load_reader(format!("{HEADER}{rows}").as_bytes(), None).unwrap(), Currency::from_code("GBP").unwrap())
    }

    #[test]
    fn a_credit_line_refunds_the_most_recent_earlier_sale_with_enough_quantity() {
        let p = plan_of(
            "\
100,A,x,10,2011-01-01 10:00:00,1.00,1.0,UK
101,A,x,2,2011-01-02 10:00:00,1.00,1.0,UK
C200,A,x,-5,2011-01-03 10:00:00,1.10,1.0,UK
",
        );
        // 101 is the most recent but holds only 2: 100 takes it, at the credit line's price.
        assert_eq!(p.refunds.len(), 1);
        let r = &p.refunds[0];
        assert_eq!((r.sale_invoice.as_str(), r.amount), ("100", dec!(5.50)));
        assert_eq!(r.external_id, "online-retail:C200:100");
        assert_eq!(p.matched_lines, 1);
    }

    #[test]
    fn lines_of_one_credit_invoice_group_per_sale_and_quantities_are_used_up() {
        let p = plan_of(
            "\
100,A,x,3,2011-01-01 10:00:00,1.00,1.0,UK
100,B,x,1,2011-01-01 10:00:00,4.00,1.0,UK
101,A,x,3,2011-01-02 10:00:00,1.00,1.0,UK
C200,A,x,-3,2011-01-03 10:00:00,1.00,1.0,UK
C200,A,x,-3,2011-01-03 10:00:00,1.00,1.0,UK
C200,B,x,-1,2011-01-03 10:00:00,4.00,1.0,UK
C200,A,x,-1,2011-01-03 10:00:00,1.00,1.0,UK
",
        );
        // The first A line takes 101 (most recent), the second 100, B → 100; the last A has nothing left.
        let got: Vec<(&str, Decimal, usize)> =
            p.refunds.iter().map(|r| (r.sale_invoice.as_str(), r.amount, r.lines.len())).collect();
        assert_eq!(got, vec![("101", dec!(3.00), 1), ("100", dec!(7.00), 2)]);
        assert_eq!(p.unmatched_lines.get(UNMATCHED_NOT_ENOUGH_QUANTITY), Some(&1));
    }

    #[test]
    fn unmatched_lines_are_counted_by_reason() {
        let p = plan_of(
            "\
100,A,x,1,2011-01-02 10:00:00,1.00,1.0,UK
C199,A,x,-1,2011-01-01 10:00:00,1.00,1.0,UK
C200,Z,x,-1,2011-01-03 10:00:00,1.00,1.0,UK
C201,A,x,-1,2011-01-03 10:00:00,1.00,,UK
C202,A,x,-1,2011-01-03 10:00:00,1.00,2.0,UK
",
        );
        assert!(p.refunds.is_empty());
        assert_eq!(
            p.unmatched_lines.get(UNMATCHED_NO_EARLIER_SALE),
            Some(&2),
            "C199 before the sale; customer 2 has none"
        );
        assert_eq!(p.unmatched_lines.get(UNMATCHED_NO_STOCK_CODE), Some(&1));
        assert_eq!(p.unmatched_lines.get(UNMATCHED_NO_CUSTOMER), Some(&1));
    }

    #[test]
    fn same_instant_sales_go_to_the_later_in_file_order_and_a_sale_at_the_credit_time_is_not_earlier() {
        let p = plan_of(
            "\
100,A,x,1,2011-01-01 10:00:00,1.00,1.0,UK
101,A,x,1,2011-01-01 10:00:00,1.00,1.0,UK
102,A,x,1,2011-01-02 10:00:00,1.00,1.0,UK
C200,A,x,-1,2011-01-02 10:00:00,1.00,1.0,UK
",
        );
        assert_eq!(p.refunds[0].sale_invoice, "101");
    }

    #[test]
    fn values_with_more_decimals_round_half_away_from_zero_and_refunds_are_capped() {
        let p = plan_of(
            "\
100,A,x,1,2011-01-01 10:00:00,1.00,1.0,UK
C200,A,x,-1,2011-01-03 10:00:00,1.005,1.0,UK
101,B,x,1,2011-01-01 10:00:00,2.00,1.0,UK
C201,B,x,-1,2011-01-03 10:00:00,3.00,1.0,UK
",
        );
        let amounts: Vec<(Decimal, Decimal)> = p.refunds.iter().map(|r| (r.amount, r.matched_value)).collect();
        // 1.005 → 1.01 > the 1.00 sale: capped; 3.00 on a 2.00 sale: capped.
        assert_eq!(amounts, vec![(dec!(1.00), dec!(1.01)), (dec!(2.00), dec!(3.00))]);
        assert_eq!(p.rounded_values, 1);
        assert_eq!(p.capped_refunds, 2);
    }

    #[test]
    fn the_full_data_set_accounts_for_every_credit_line_and_never_over_refunds() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/uci_online_retail");
        let data = crate::replay::load::load_dir(&dir, None).unwrap();
        let p = plan(&data, Currency::from_code("GBP").unwrap());
        let unmatched: u64 = p.unmatched_lines.values().sum();
        assert_eq!(p.matched_lines + unmatched, data.credit_lines);
        let totals: HashMap<&str, Decimal> = data.invoices.iter().map(|i| (i.invoice_no.as_str(), i.total)).collect();
        let times: HashMap<&str, DateTime<Utc>> =
            data.invoices.iter().map(|i| (i.invoice_no.as_str(), i.occurred_at)).collect();
        let mut refunded: HashMap<&str, Decimal> = HashMap::new();
        for r in &p.refunds {
            assert!(r.amount > Decimal::ZERO && r.amount <= r.matched_value, "{r:?}");
            assert!(times[r.sale_invoice.as_str()] < r.occurred_at, "{r:?}");
            *refunded.entry(r.sale_invoice.as_str()).or_default() += r.amount;
        }
        for (sale, amount) in refunded {
            assert!(amount <= totals[sale], "sale {sale} refunded {amount} of {}", totals[sale]);
        }
        eprintln!(
            "refunds {} matched lines {} unmatched {:?} rounded {} capped {} dropped {}",
            p.refunds.len(),
            p.matched_lines,
            p.unmatched_lines,
            p.rounded_values,
            p.capped_refunds,
            p.dropped_refunds
        );
    }
}
