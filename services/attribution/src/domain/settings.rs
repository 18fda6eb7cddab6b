//! Which program settings a sale is settled under (DESIGN §2; issue 8 item 3):
//! a settings change applies to sales that occur at or after it, so each sale
//! uses the version in force at its `occurred_at`.

use chrono::{DateTime, Utc};

/// The version of `history` (oldest first, by `effective_from`) in force at
/// `at`: the newest whose `effective_from` ≤ `at`. A sale that occurred
/// before the first version — a backfill of sales older than the program —
/// uses the first, the settings the program was created with. `None` only
/// for an empty history.
pub(crate) fn version_in_force<T>(
    history: &[T],
    at: DateTime<Utc>,
    effective_from: impl Fn(&T) -> DateTime<Utc>,
) -> Option<&T> {
    history.iter().rev().find(|version| effective_from(version) <= at).or_else(|| history.first())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(day: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 3, day, 0, 0, 0).single().unwrap_or_default()
    }

    #[test]
    fn picks_the_newest_version_not_after_the_sale() {
        let history = [(1, t(10)), (2, t(20)), (3, t(25))];
        let at = |day| version_in_force(&history, t(day), |v| v.1).map(|v| v.0);
        assert_eq!(at(10), Some(1), "a version applies from its effective_from on");
        assert_eq!(at(19), Some(1));
        assert_eq!(at(20), Some(2));
        assert_eq!(at(31), Some(3));
        assert_eq!(at(1), Some(1), "a sale older than the program uses the first settings");
        assert_eq!(version_in_force(&[] as &[(i32, DateTime<Utc>)], t(1), |v| v.1), None);
    }
}
