//! Scheme rates on the wire ↔ [`RateChange`] and [`Scheme`] (seed 002).

use accrue_kit::FieldViolations;
use accrue_kit::convert::timestamp;
use accrue_proto::commission::v1 as pb;
use accrue_types::ProgramId;

use crate::domain::{MAX_SERVICE_CODE_LEN, RateChange, RateKey, Scheme, valid_service_code};

use crate::api::agreements::codec::bounded_rate;

/// Most rates one CreateScheme or SetSchemeRates call writes.
pub const MAX_RATES_PER_CALL: usize = 1000;

/// Longest scheme display name, in characters.
pub const MAX_DISPLAY_NAME_LEN: usize = 200;

/// Decodes the rates of a scheme write (field paths `{prefix}[i].…`, prefix
/// `rates` or `scheme.rates`; seed 002): `service_code` 1..=64 characters of
/// `[A-Za-z0-9_.-]`; `role` required (checked against the ladder by
/// [`check_rate_roles`] once the program is known); `rate` an absolute rate in
/// [0, 1] with at most [`MAX_RATE_DECIMALS`] decimals, or empty to unset
/// (NULL = inherit); one (service_code, role) at most once per request.
/// Returns one change per rate, in request order, when all are valid.
pub fn decode_rate_changes(
    prefix: &str,
    rates: &[pb::SchemeRate],
    violations: &mut FieldViolations,
) -> Option<Vec<RateChange>> {
    if rates.len() > MAX_RATES_PER_CALL {
        violations.add(prefix, format!("at most {MAX_RATES_PER_CALL} rates per call, got {}", rates.len()));
        return None;
    }
    let mut changes = Vec::with_capacity(rates.len());
    let mut seen: std::collections::HashMap<RateKey, usize> = std::collections::HashMap::new();
    let mut ok = true;
    for (index, rate) in rates.iter().enumerate() {
        let field = format!("{prefix}[{index}]");
        if !valid_service_code(&rate.service_code) {
            violations.add(
                format!("{field}.service_code"),
                format!(
                    "{:?} must be 1..{MAX_SERVICE_CODE_LEN} characters of A-Z, a-z, 0-9, '_', '.', '-'",
                    rate.service_code
                ),
            );
            ok = false;
        }
        if rate.role.is_empty() {
            violations.add(format!("{field}.role"), "is required (a role on the program's role ladder)");
            ok = false;
        }
        let value = if rate.rate.trim().is_empty() {
            None
        } else {
            match bounded_rate(&format!("{field}.rate"), &rate.rate, violations) {
                Some(value) => Some(value),
                None => {
                    ok = false;
                    None
                }
            }
        };
        let key = RateKey::new(rate.service_code.clone(), rate.role.clone());
        if let Some(first) = seen.get(&key) {
            violations
                .add(field, format!("sets {} {} again (first at {prefix}[{first}])", rate.service_code, rate.role));
            ok = false;
        } else {
            seen.insert(key.clone(), index);
        }
        changes.push(RateChange { key, rate: value });
    }
    ok.then_some(changes)
}

/// Records a violation on `{prefix}[i].role` for every rate whose role is
/// not on the program's role ladder (highest first).
pub fn check_rate_roles(prefix: &str, changes: &[RateChange], ladder: &[String], violations: &mut FieldViolations) {
    for (index, change) in changes.iter().enumerate() {
        if !ladder.contains(&change.key.role) {
            violations.add(
                format!("{prefix}[{index}].role"),
                format!("{:?} is not on the program's role ladder ({})", change.key.role, ladder.join(", ")),
            );
        }
    }
}

/// Encodes a scheme with its own set rates, by service_code then role.
pub fn encode_scheme(
    program_id: ProgramId,
    scheme: &Scheme,
    created_at: chrono::DateTime<chrono::Utc>,
    updated_at: chrono::DateTime<chrono::Utc>,
) -> pb::Scheme {
    pb::Scheme {
        id: scheme.id.to_string(),
        program_id: program_id.to_string(),
        parent_id: scheme.parent_id.map(|id| id.to_string()).unwrap_or_default(),
        display_name: scheme.display_name.clone(),
        clearance_days: i32::try_from(scheme.clearance_days).unwrap_or(i32::MAX),
        rates: scheme
            .rates
            .iter()
            .map(|(key, rate)| pb::SchemeRate {
                service_code: key.service_code.clone(),
                role: key.role.clone(),
                rate: rate.normalize().to_string(),
            })
            .collect(),
        create_time: Some(timestamp(created_at)),
        update_time: Some(timestamp(updated_at)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::Decimal;

    #[test]
    fn scheme_rates_decode_with_unset_and_every_violation() {
        let rate = |service_code: &str, role: &str, rate: &str| pb::SchemeRate {
            service_code: service_code.into(),
            role: role.into(),
            rate: rate.into(),
        };
        let mut violations = FieldViolations::new();
        let changes = decode_rate_changes(
            "rates",
            &[rate("RECHARGE", "ADMIN", "0.050"), rate("DTH", "RETAILER", "")],
            &mut violations,
        )
        .unwrap();
        assert_eq!(changes[0].rate, Some(Decimal::new(5, 2)));
        assert_eq!(changes[1].rate, None, "empty = unset (inherit)");
        check_rate_roles("rates", &changes, &["ADMIN".to_string()], &mut violations);
        let message = violations.into_status().message().to_string();
        assert!(message.contains("rates[1].role") && !message.contains("rates[0]"), "{message}");

        let mut violations = FieldViolations::new();
        let long = "X".repeat(MAX_SERVICE_CODE_LEN + 1);
        let wire = [
            rate("RE/CHARGE", "ADMIN", "0.1"),
            rate(&long, "ADMIN", "0.1"),
            rate("OK", "", "-0.1"),
            rate("OK", "ADMIN", "0.00000000001"),
            rate("OK", "ADMIN", "0.1"),
        ];
        assert!(decode_rate_changes("rates", &wire, &mut violations).is_none());
        let message = violations.into_status().message().to_string();
        for field in [
            "rates[0].service_code",
            "rates[1].service_code",
            "rates[2].role",
            "rates[2].rate",
            "rates[3].rate",
            "rates[4]: sets OK ADMIN again",
        ] {
            assert!(message.contains(field), "{field} missing from {message}");
        }
    }
}
