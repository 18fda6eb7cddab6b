//! Clicks and attribution models (issue 14 items 1–2): what TrackClick
//! accepts, how a user agent is kept (salted SHA-256, never raw), and which
//! touch a lead or sale is credited to under first or last touch.

use accrue_kit::FieldViolations;
use accrue_kit::convert::{EventWindow, require_uuid};
use accrue_types::{LinkId, ProgramId};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::sale::MAX_ID_LEN;

/// Longest referrer kept.
pub(crate) const MAX_REFERRER_LEN: usize = 2048;
/// Longest user agent accepted (it is hashed, not kept).
pub(crate) const MAX_USER_AGENT_LEN: usize = 4096;
/// Dub's default last-touch window (issue 14 item 2).
pub(crate) const DEFAULT_WINDOW_DAYS: i32 = 90;
/// Longest last-touch window (ten years).
pub(crate) const MAX_WINDOW_DAYS: i32 = 3650;
/// Most clicks per TrackClicks call.
pub(crate) const MAX_CLICKS_PER_CALL: usize = 1000;

/// How a program credits leads and sales to links.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "SCREAMING_SNAKE_CASE")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum Model {
    /// The customer's first lead keeps it (the default, as before issue 14).
    FirstTouch,
    /// The customer's most recent click or lead within the window.
    LastTouch,
}

impl Model {
    /// The stored name ("FIRST_TOUCH").
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Model::FirstTouch => "FIRST_TOUCH",
            Model::LastTouch => "LAST_TOUCH",
        }
    }
}

/// The rule a lead or sale is judged under: a model and, for last touch,
/// its window in days (0 for first touch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct Rule {
    /// The model.
    pub(crate) model: Model,
    /// Last-touch window in days; 0 under first touch.
    pub(crate) window_days: i32,
}

impl Rule {
    /// First touch, the rule of a program that never chose one.
    pub(crate) const FIRST_TOUCH: Rule = Rule { model: Model::FirstTouch, window_days: 0 };

    /// The earliest touch time that counts for an event at `at`: touches in
    /// [`at` − window, `at`] count, both ends included (a click exactly
    /// `window_days` × 24 h before a sale still credits it). None under
    /// first touch (no window).
    pub(crate) fn window_start(self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self.model {
            Model::FirstTouch => None,
            Model::LastTouch => at.checked_sub_signed(Duration::days(i64::from(self.window_days))),
        }
    }
}

/// Checks an UpdateAttributionSettings input: the window (0 → 90) must be
/// 1..=3650 under last touch and 0 under first touch.
pub(crate) fn check_rule(model: Model, window_days: i32, violations: &mut FieldViolations) -> Option<Rule> {
    match model {
        Model::FirstTouch if window_days != 0 => {
            violations.add("attribution_window_days", "must be 0 (unset) for FIRST_TOUCH");
            None
        }
        Model::FirstTouch => Some(Rule::FIRST_TOUCH),
        Model::LastTouch => {
            let days = if window_days == 0 { DEFAULT_WINDOW_DAYS } else { window_days };
            if !(1..=MAX_WINDOW_DAYS).contains(&days) {
                violations.add("attribution_window_days", format!("must be 1..={MAX_WINDOW_DAYS} days"));
                return None;
            }
            Some(Rule { model, window_days: days })
        }
    }
}

/// A click as the wire carries it (borrowed).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawClick<'a> {
    pub(crate) click_id: &'a str,
    pub(crate) link_id: &'a str,
    pub(crate) occurred_at: Option<&'a prost_types::Timestamp>,
    pub(crate) customer_external_id: &'a str,
    pub(crate) referrer: &'a str,
    pub(crate) country_code: &'a str,
    pub(crate) user_agent: &'a str,
}

/// A validated click.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClickInput {
    pub(crate) click_id: String,
    pub(crate) link_id: LinkId,
    pub(crate) occurred_at: DateTime<Utc>,
    pub(crate) customer_external_id: Option<String>,
    pub(crate) referrer: String,
    /// Upper-case ISO 3166-1 alpha-2, or empty.
    pub(crate) country_code: String,
    /// [`user_agent_hash`] of the user agent, or empty.
    pub(crate) user_agent_hash: String,
    /// False when the wire left the time unset (it is then "now").
    pub(crate) time_given: bool,
}

/// Parses one click; violations name `{prefix}click_id`, …; `now` stands for
/// an unset time.
pub(crate) fn parse_click(
    prefix: &str,
    program_id: ProgramId,
    raw: RawClick<'_>,
    events: &EventWindow,
    now: DateTime<Utc>,
    violations: &mut FieldViolations,
) -> Option<ClickInput> {
    let field = |name: &str| format!("{prefix}{name}");
    let mut ok = true;
    if raw.click_id.trim().is_empty() {
        violations.add(field("click_id"), "is required");
        ok = false;
    } else if raw.click_id.len() > MAX_ID_LEN {
        violations.add(field("click_id"), format!("must be at most {MAX_ID_LEN} bytes"));
        ok = false;
    }
    let link_id = require_uuid(&field("link_id"), raw.link_id, violations);
    let occurred_at = match raw.occurred_at {
        None => Some(now),
        Some(_) => events.optional(&field("occurred_at"), raw.occurred_at, violations),
    };
    if raw.customer_external_id.len() > MAX_ID_LEN {
        violations.add(field("customer_external_id"), format!("must be at most {MAX_ID_LEN} bytes"));
        ok = false;
    }
    if raw.referrer.len() > MAX_REFERRER_LEN {
        violations.add(field("referrer"), format!("must be at most {MAX_REFERRER_LEN} bytes"));
        ok = false;
    }
    let country_code = raw.country_code.to_ascii_uppercase();
    if !(country_code.is_empty() || (country_code.len() == 2 && country_code.bytes().all(|b| b.is_ascii_uppercase()))) {
        violations.add(field("country_code"), "must be an ISO 3166-1 alpha-2 code such as \"GB\"");
        ok = false;
    }
    if raw.user_agent.len() > MAX_USER_AGENT_LEN {
        violations.add(field("user_agent"), format!("must be at most {MAX_USER_AGENT_LEN} bytes"));
        ok = false;
    }
    let (Some(link_id), Some(occurred_at), true) = (link_id, occurred_at, ok) else { return None };
    let customer = raw.customer_external_id.trim();
    Some(ClickInput {
        click_id: raw.click_id.to_string(),
        link_id,
        occurred_at,
        customer_external_id: (!customer.is_empty()).then(|| raw.customer_external_id.to_string()),
        referrer: raw.referrer.to_string(),
        country_code,
        user_agent_hash: user_agent_hash(program_id, raw.user_agent),
        time_given: raw.occurred_at.is_some(),
    })
}

/// The user agent as stored: hex SHA-256 of the program id, a NUL and the
/// user agent — salted per program so one browser is not linkable across
/// programs, and never kept raw (issue 14 item 1). Empty for no user agent.
pub(crate) fn user_agent_hash(program_id: ProgramId, user_agent: &str) -> String {
    if user_agent.is_empty() {
        return String::new();
    }
    let mut hasher = Sha256::new();
    hasher.update(program_id.to_string().as_bytes());
    hasher.update([0]);
    hasher.update(user_agent.as_bytes());
    hex::encode(hasher.finalize())
}

impl ClickInput {
    /// The click's request hash over every field but its time: a repeat of
    /// its click id with the same hash (and, when the repeat names a time,
    /// the same time — [`ClickInput::same_as`]) is a duplicate, anything
    /// else ALREADY_EXISTS. The time is left out because an unset time is
    /// "now" and differs on every retry.
    pub(crate) fn request_hash(&self) -> String {
        let fields: [&str; 6] = [
            &self.click_id,
            &self.link_id.to_string(),
            self.customer_external_id.as_deref().unwrap_or(""),
            &self.referrer,
            &self.country_code,
            &self.user_agent_hash,
        ];
        let mut hasher = Sha256::new();
        for field in fields {
            hasher.update((field.len() as u64).to_be_bytes());
            hasher.update(field.as_bytes());
        }
        hex::encode(hasher.finalize())
    }

    /// True when a stored click (its request hash and time) is this click
    /// again.
    pub(crate) fn same_as(&self, stored_hash: &str, stored_time: DateTime<Utc>) -> bool {
        stored_hash == self.request_hash() && (!self.time_given || stored_time == self.occurred_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).map(|t| t.with_timezone(&Utc)).unwrap_or_default()
    }

    #[test]
    fn the_window_includes_its_edge() {
        let rule = Rule { model: Model::LastTouch, window_days: 90 };
        assert_eq!(rule.window_start(t("2024-04-01T00:00:00Z")), Some(t("2024-01-02T00:00:00Z")));
        assert_eq!(Rule::FIRST_TOUCH.window_start(t("2024-04-01T00:00:00Z")), None);
    }

    #[test]
    fn rules() {
        let mut v = FieldViolations::new();
        assert_eq!(check_rule(Model::LastTouch, 0, &mut v).map(|r| r.window_days), Some(90));
        assert_eq!(check_rule(Model::LastTouch, 7, &mut v).map(|r| r.window_days), Some(7));
        assert_eq!(check_rule(Model::FirstTouch, 0, &mut v), Some(Rule::FIRST_TOUCH));
        assert!(v.is_empty());
        assert!(check_rule(Model::LastTouch, 3651, &mut v).is_none());
        assert!(check_rule(Model::LastTouch, -1, &mut v).is_none());
        assert!(check_rule(Model::FirstTouch, 30, &mut v).is_none());
        assert!(!v.is_empty());
    }

    #[test]
    fn user_agents_are_salted_hashes() {
        let (a, b) = (ProgramId::new_v7(), ProgramId::new_v7());
        let ua = "Mozilla/5.0";
        let hash = user_agent_hash(a, ua);
        assert_eq!(hash.len(), 64);
        assert!(!hash.contains("Mozilla"));
        assert_eq!(hash, user_agent_hash(a, ua));
        assert_ne!(hash, user_agent_hash(b, ua), "salted per program");
        assert_eq!(user_agent_hash(a, ""), "");
    }

    #[test]
    fn clicks_are_checked() {
        let program = ProgramId::new_v7();
        let now = t("2024-04-01T00:00:00Z");
        let window = EventWindow::at(now, std::time::Duration::from_secs(3600));
        let link = LinkId::new_v7().to_string();
        let raw = RawClick {
            click_id: "c1",
            link_id: &link,
            occurred_at: None,
            customer_external_id: "cust",
            referrer: "https://example.com/",
            country_code: "gb",
            user_agent: "UA",
        };
        let mut v = FieldViolations::new();
        let click = parse_click("clicks[0].", program, raw, &window, now, &mut v);
        assert!(v.is_empty());
        let click = click.unwrap_or_else(|| panic!("valid click"));
        assert_eq!((click.country_code.as_str(), click.occurred_at), ("GB", now));
        let bad = RawClick { click_id: "", link_id: "x", country_code: "GBR", ..raw };
        let mut v = FieldViolations::new();
        assert!(parse_click("clicks[3].", program, bad, &window, now, &mut v).is_none());
        let message = v.into_status().message().to_string();
        for field in ["clicks[3].click_id", "clicks[3].link_id", "clicks[3].country_code"] {
            assert!(message.contains(field), "{message}");
        }
    }
}
