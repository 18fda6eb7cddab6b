//! Link rules: the key format and the split config (seed 000).

use accrue_kit::FieldViolations;
use accrue_types::PartnerId;
use accrue_types::split::{SplitPoints, check_partners};
use serde::{Deserialize, Serialize};

/// Longest link key.
pub(crate) const MAX_KEY_LEN: usize = 64;
/// Longest destination URL.
pub(crate) const MAX_URL_LEN: usize = 2048;

/// One split partner and its share of the base commission (basis points).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Split {
    /// The split partner.
    pub(crate) partner_id: PartnerId,
    /// Share in basis points (1..9999).
    pub(crate) basis_points: i32,
}

/// Checks a link key: 1..64 characters of `[a-z0-9_-]`.
pub(crate) fn check_key(field: &str, key: &str, violations: &mut FieldViolations) {
    if key.is_empty() {
        violations.add(field, "is required");
    } else if key.len() > MAX_KEY_LEN {
        violations.add(field, format!("must be at most {MAX_KEY_LEN} characters"));
    } else if !key.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_') {
        violations.add(field, "may contain only a-z, 0-9, '-' and '_'");
    }
}

/// Checks a split config against the link split rule of [`accrue_types::split`]
/// (seed 000): every share 1..9999 bps, Σ ≤ 10000, no partner twice, the
/// owner not among the splits. `splits` holds each split's parsed partner
/// (None when the id was already reported as malformed) and basis points;
/// violations name `{prefix}[i].basis_points` / `.partner_id`, or `{prefix}`
/// for the sum.
pub(crate) fn check_splits(
    prefix: &str,
    owner: Option<PartnerId>,
    splits: &[(Option<PartnerId>, i32)],
    violations: &mut FieldViolations,
) {
    if let Err(errors) = SplitPoints::parse(splits.iter().map(|(_, bps)| i64::from(*bps))) {
        for error in errors {
            violations.add(error.field(prefix), error.to_string());
        }
    }
    let partners: Vec<Option<PartnerId>> = splits.iter().map(|(partner, _)| *partner).collect();
    for error in check_partners(owner.as_ref(), &partners) {
        violations.add(format!("{prefix}[{}].partner_id", error.index()), error.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(violations: FieldViolations) -> String {
        match violations.into_result() {
            Ok(()) => String::new(),
            Err(status) => status.message().to_string(),
        }
    }

    #[test]
    fn keys() {
        for good in ["summer-sale", "a", "x_1", &"a".repeat(64)] {
            let mut v = FieldViolations::new();
            check_key("link.key", good, &mut v);
            assert!(v.is_empty(), "{good}");
        }
        for bad in ["", "Summer", "a b", "é", &"a".repeat(65)] {
            let mut v = FieldViolations::new();
            check_key("link.key", bad, &mut v);
            assert!(!v.is_empty(), "{bad}");
        }
    }

    #[test]
    fn splits_rules() {
        let owner = PartnerId::new_v7();
        let a = PartnerId::new_v7();
        let b = PartnerId::new_v7();
        let mut v = FieldViolations::new();
        check_splits("link.splits", Some(owner), &[(Some(a), 3000), (Some(b), 2000)], &mut v);
        assert!(v.is_empty());

        let mut v = FieldViolations::new();
        check_splits("link.splits", Some(owner), &[(Some(a), 6000), (Some(b), 5000)], &mut v);
        assert!(fields(v).contains("sum to 11000"));

        let mut v = FieldViolations::new();
        check_splits("link.splits", Some(owner), &[(Some(a), 10), (Some(b), 0)], &mut v);
        assert!(fields(v).contains("link.splits[1].basis_points"));

        let mut v = FieldViolations::new();
        check_splits("link.splits", Some(owner), &[(Some(a), 10), (Some(a), 10), (Some(owner), 5)], &mut v);
        let message = fields(v);
        assert!(message.contains("link.splits[1].partner_id"), "{message}");
        assert!(message.contains("link.splits[2].partner_id"), "{message}");

        let mut v = FieldViolations::new();
        check_splits("link.splits", Some(owner), &[(Some(a), 10_000)], &mut v);
        assert!(fields(v).contains("link.splits[0].basis_points"));
    }
}
