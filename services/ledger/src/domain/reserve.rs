//! Payout reservation decisions (DESIGN §5: payable = approved credits cleared
//! by the cutoff minus debits; reserve at or above the minimum, else carry
//! forward).

use rust_decimal::Decimal;

use super::posting::EntryType;

/// An entry's signed contribution to a balance: CREDIT adds, DEBIT subtracts.
pub fn signed(entry_type: EntryType, amount: Decimal) -> Decimal {
    match entry_type {
        EntryType::Credit => amount,
        EntryType::Debit => -amount,
    }
}

/// Whether a payable `sum` is reserved for a payout: it must be positive and
/// at or above `minimum` (else it carries forward to a later run).
pub fn should_reserve(sum: Decimal, minimum: Decimal) -> bool {
    sum > Decimal::ZERO && sum >= minimum
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn debits_subtract() {
        let sum = signed(EntryType::Credit, dec!(10.00)) + signed(EntryType::Debit, dec!(3.50));
        assert_eq!(sum, dec!(6.50));
    }

    #[test]
    fn threshold_is_inclusive_and_sum_must_be_positive() {
        assert!(should_reserve(dec!(50.00), dec!(50.00)));
        assert!(!should_reserve(dec!(49.99), dec!(50.00)));
        assert!(should_reserve(dec!(0.01), Decimal::ZERO));
        assert!(!should_reserve(Decimal::ZERO, Decimal::ZERO));
        assert!(!should_reserve(dec!(-5.00), dec!(-10.00)));
    }
}
