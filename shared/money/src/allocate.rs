/// Why an allocation could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocationError {
    /// Every weight was zero.
    #[error("allocation weights sum to zero")]
    ZeroWeights,
    /// The total is negative.
    #[error("cannot allocate a negative total")]
    NegativeTotal,
}

/// Splits `total` minor units into parts proportional to `weights` by the
/// largest-remainder method (DESIGN §4 "Link splits"; Formance's allocation).
///
/// Each part is first `floor(total × weight / Σweights)`; the units left over
/// are then handed out one at a time to the parts with the largest fractional
/// remainders. Ties go to the lower index first, so callers order `weights`
/// by tie priority (the link owner first, then splits in their order). The
/// parts always sum to `total` exactly and a zero weight always gets zero.
pub fn allocate_largest_remainder(total: i128, weights: &[u64]) -> Result<Vec<i128>, AllocationError> {
    if total < 0 {
        return Err(AllocationError::NegativeTotal);
    }
    let denominator: i128 = weights.iter().map(|w| i128::from(*w)).sum();
    if denominator == 0 {
        return Err(AllocationError::ZeroWeights);
    }
    let mut parts = Vec::with_capacity(weights.len());
    let mut remainders = Vec::with_capacity(weights.len());
    for (index, weight) in weights.iter().enumerate() {
        let numerator = total * i128::from(*weight);
        parts.push(numerator / denominator);
        remainders.push((numerator % denominator, index));
    }
    let mut leftover = total - parts.iter().sum::<i128>();
    // Largest remainder first; equal remainders keep index order.
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for (remainder, index) in remainders {
        if leftover == 0 {
            break;
        }
        if remainder == 0 && weights[index] == 0 {
            continue;
        }
        parts[index] += 1;
        leftover -= 1;
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn seed_000_example() {
        // $10.00 split owner 50%, A 30%, B 20%.
        assert_eq!(allocate_largest_remainder(1000, &[5000, 3000, 2000]).unwrap(), vec![500, 300, 200]);
    }

    #[test]
    fn one_cent_over_three_goes_to_owner() {
        assert_eq!(allocate_largest_remainder(1, &[3334, 3333, 3333]).unwrap(), vec![1, 0, 0]);
        // Equal remainders: the owner (index 0) first, then split order.
        assert_eq!(allocate_largest_remainder(2, &[3333, 3333, 3334]).unwrap(), vec![1, 0, 1]);
    }

    #[test]
    fn one_basis_point_shares() {
        assert_eq!(allocate_largest_remainder(100, &[9998, 1, 1]).unwrap(), vec![100, 0, 0]);
        assert_eq!(allocate_largest_remainder(1_000_000, &[9998, 1, 1]).unwrap(), vec![999_800, 100, 100]);
    }

    #[test]
    fn zero_weight_gets_nothing() {
        assert_eq!(allocate_largest_remainder(7, &[0, 5000, 5000]).unwrap(), vec![0, 4, 3]);
    }

    proptest! {
        #[test]
        fn parts_sum_to_total(total in 0i128..10_000_000, weights in proptest::collection::vec(0u64..10_000, 1..6)) {
            prop_assume!(weights.iter().sum::<u64>() > 0);
            let parts = allocate_largest_remainder(total, &weights).unwrap();
            prop_assert_eq!(parts.iter().sum::<i128>(), total);
            let denominator: i128 = weights.iter().map(|w| i128::from(*w)).sum();
            for (part, weight) in parts.iter().zip(&weights) {
                let exact_floor = total * i128::from(*weight) / denominator;
                prop_assert!(*part == exact_floor || *part == exact_floor + 1);
                if *weight == 0 { prop_assert_eq!(*part, 0); }
            }
        }
    }
}
