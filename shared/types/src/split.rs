//! The link split rule (seed 000, DESIGN §4 "Link splits"): each split
//! partner's share of the base commission is 1..=9999 basis points, the shares
//! sum to at most 10000, and the link owner keeps the rest. A link names each
//! split partner once and never its owner.
//!
//! [`SplitPoints::parse`] is the one place the points rule is checked; a value
//! of the type is proof that it holds, so the allocation that follows needs no
//! check of its own.

/// Basis points in a whole: 10000 bp = 100 % of the base commission.
pub const BASIS_POINTS_WHOLE: u32 = 10_000;

/// Why a split configuration breaks the points rule; `index` is the split's
/// position in split order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    /// A share outside 1..=9999 basis points.
    #[error("must be between 1 and 9999 (got {basis_points})")]
    OutOfRange {
        /// The split's position.
        index: usize,
        /// The share as given.
        basis_points: i64,
    },
    /// The shares, negative ones counted as 0, add up to more than 10000.
    #[error("basis points sum to {total}, more than {BASIS_POINTS_WHOLE}")]
    OverWhole {
        /// Σ of the shares given.
        total: i64,
    },
}

impl SplitError {
    /// The offending split's position; `None` when the error is about the sum.
    pub fn index(&self) -> Option<usize> {
        match self {
            SplitError::OutOfRange { index, .. } => Some(*index),
            SplitError::OverWhole { .. } => None,
        }
    }

    /// The request field the error is about, for splits listed at `prefix`
    /// (`link.splits` → `link.splits[1].basis_points`, or `link.splits` for
    /// the sum).
    pub fn field(&self, prefix: &str) -> String {
        match self.index() {
            Some(index) => format!("{prefix}[{index}].basis_points"),
            None => prefix.to_string(),
        }
    }
}

/// Split shares that obey the points rule, in split order (basis points).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SplitPoints(Vec<u32>);

impl SplitPoints {
    /// Parses shares in split order. Every problem is reported (an
    /// out-of-range share per index, then the sum), none short-circuits.
    pub fn parse(points: impl IntoIterator<Item = i64>) -> Result<Self, Vec<SplitError>> {
        let mut errors = Vec::new();
        let mut shares = Vec::new();
        let mut total: i64 = 0;
        for (index, basis_points) in points.into_iter().enumerate() {
            total = total.saturating_add(basis_points.max(0));
            match u32::try_from(basis_points).ok().filter(|bp| (1..BASIS_POINTS_WHOLE).contains(bp)) {
                Some(bp) => shares.push(bp),
                None => errors.push(SplitError::OutOfRange { index, basis_points }),
            }
        }
        if total > i64::from(BASIS_POINTS_WHOLE) {
            errors.push(SplitError::OverWhole { total });
        }
        if errors.is_empty() { Ok(SplitPoints(shares)) } else { Err(errors) }
    }

    /// The split partners' shares in split order (each 1..=9999 bp).
    pub fn shares(&self) -> &[u32] {
        &self.0
    }

    /// What the owner keeps: 10000 − Σ shares (0..=10000 bp).
    pub fn owner_points(&self) -> u32 {
        BASIS_POINTS_WHOLE - self.0.iter().sum::<u32>()
    }

    /// The allocation weights: the owner first, then every share in split
    /// order; they always sum to [`BASIS_POINTS_WHOLE`].
    pub fn weights(&self) -> Vec<u64> {
        std::iter::once(self.owner_points()).chain(self.0.iter().copied()).map(u64::from).collect()
    }
}

/// Why a split partner may not be on the link.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartnerError<P> {
    /// The owner keeps what the splits leave; it is not a split partner.
    #[error("is the link owner, who keeps what the splits leave")]
    IsOwner {
        /// The split's position.
        index: usize,
    },
    /// A partner is named twice.
    #[error("names the same partner as split {first}")]
    Repeated {
        /// The split's position.
        index: usize,
        /// Where the partner first appears.
        first: usize,
        /// The partner.
        partner: P,
    },
}

impl<P> PartnerError<P> {
    /// The offending split's position.
    pub fn index(&self) -> usize {
        match self {
            PartnerError::IsOwner { index } | PartnerError::Repeated { index, .. } => *index,
        }
    }
}

/// Checks that each split partner appears once and is not the owner.
/// `partners[i]` is `None` when split `i`'s partner could not be read (its
/// own error is reported elsewhere); such splits are skipped.
pub fn check_partners<P: PartialEq + Clone>(owner: Option<&P>, partners: &[Option<P>]) -> Vec<PartnerError<P>> {
    let mut errors = Vec::new();
    for (index, partner) in partners.iter().enumerate() {
        let Some(partner) = partner else { continue };
        if Some(partner) == owner {
            errors.push(PartnerError::IsOwner { index });
        } else if let Some(first) = partners[..index].iter().position(|seen| seen.as_ref() == Some(partner)) {
            errors.push(PartnerError::Repeated { index, first, partner: partner.clone() });
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_points_leave_the_owner_the_rest() {
        let points = SplitPoints::parse([3000, 2000]).unwrap();
        assert_eq!(points.shares(), &[3000, 2000]);
        assert_eq!(points.owner_points(), 5000);
        assert_eq!(points.weights(), vec![5000, 3000, 2000]);
        assert_eq!(SplitPoints::parse([6000, 4000]).unwrap().owner_points(), 0);
        assert_eq!(SplitPoints::parse([]).unwrap().weights(), vec![10_000]);
    }

    #[test]
    fn every_offending_index_and_the_sum_are_named() {
        let errors = SplitPoints::parse([0, 6000, 10_000, -5, 5000]).unwrap_err();
        assert_eq!(
            errors,
            vec![
                SplitError::OutOfRange { index: 0, basis_points: 0 },
                SplitError::OutOfRange { index: 2, basis_points: 10_000 },
                SplitError::OutOfRange { index: 3, basis_points: -5 },
                SplitError::OverWhole { total: 21_000 },
            ]
        );
        assert_eq!(errors.iter().map(SplitError::index).collect::<Vec<_>>(), vec![Some(0), Some(2), Some(3), None]);
        assert_eq!(errors[3].to_string(), "basis points sum to 21000, more than 10000");
        assert_eq!(
            (errors[0].field("link.splits"), errors[3].field("link.splits")),
            ("link.splits[0].basis_points".to_string(), "link.splits".to_string())
        );
    }

    #[test]
    fn partners_appear_once_and_never_as_the_owner() {
        let errors = check_partners(Some(&1), &[Some(2), Some(1), None, Some(2), Some(3)]);
        assert_eq!(
            errors,
            vec![PartnerError::IsOwner { index: 1 }, PartnerError::Repeated { index: 3, first: 0, partner: 2 }]
        );
        assert!(check_partners(None, &[Some(1), Some(2)]).is_empty());
    }
}
