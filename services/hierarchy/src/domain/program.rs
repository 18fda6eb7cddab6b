//! Program settings and their validation (DESIGN §2 hierarchy, §4 money).

use accrue_kit::FieldViolations;
use accrue_kit::convert::optional_money;
use accrue_money::{Currency, Decimal, RoundingMode};
use accrue_proto::hierarchy::v1 as pb;
use accrue_proto::types::v1 as types;
use accrue_types::ProgramId;

/// The one default override depth cap (accrue-types), as the i32 that the
/// `programs.override_depth_cap` column and the proto field carry.
const DEFAULT_OVERRIDE_DEPTH_CAP: i32 = accrue_types::program::DEFAULT_OVERRIDE_DEPTH_CAP as i32;
/// Smallest allowed override depth cap.
pub const MIN_OVERRIDE_DEPTH_CAP: i32 = 1;
/// Largest allowed override depth cap.
pub const MAX_OVERRIDE_DEPTH_CAP: i32 = 32;
/// Maximum tree depth used when a program does not set one (DESIGN §2: a
/// limit of its own, not the override depth cap).
pub const DEFAULT_MAX_TREE_DEPTH: i32 = 32;
/// Largest allowed maximum tree depth (ancestor paths are stored per partner,
/// so a path stays a few kilobytes at most).
pub const MAX_MAX_TREE_DEPTH: i32 = 1024;
/// Longest display name accepted (characters).
pub const MAX_NAME_CHARS: usize = 200;
/// Longest idempotency key / external id accepted (characters).
pub const MAX_KEY_CHARS: usize = 200;

/// The role ladder of seed 002, highest first; the default for a program that
/// does not name its own.
pub const DEFAULT_ROLE_LADDER: [&str; 6] =
    ["ADMIN", "WHITE_LABEL", "MASTER_DISTRIBUTOR", "DISTRIBUTOR", "RETAILER", "CUSTOMER"];

/// The role that may not transact when a program names none, if it is on the
/// program's ladder (seed 002: "Admin & SuperAdmin cannot initiate
/// transactions"; the default ladder has no SuperAdmin rung).
pub const DEFAULT_NON_TRANSACTING_ROLE: &str = "ADMIN";

/// A validated program, ready to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramSpec {
    /// Display name (trimmed, non-empty).
    pub display_name: String,
    /// Default currency.
    pub default_currency: Currency,
    /// Rounding mode for every line amount.
    pub rounding_mode: RoundingMode,
    /// Override levels paid at most, 1..=32.
    pub override_depth_cap: i32,
    /// Deepest depth a partner may sit at, 1..=1024.
    pub max_tree_depth: i32,
    /// Dynamic compression of override levels.
    pub compression_enabled: bool,
    /// Whether cleared entries are approved at once.
    pub auto_approve_cleared: bool,
    /// Maker-checker for payout approvals (issue 12 item 4).
    pub require_second_approver: bool,
    /// Minimum payout in the default currency (≥ 0, exact in its minor unit).
    pub minimum_payout: Decimal,
    /// Role ladder, highest first.
    pub role_ladder: Vec<String>,
    /// Roles whose partners may not transact; each on `role_ladder`, distinct.
    pub non_transacting_roles: Vec<String>,
    /// Idempotency key, when given.
    pub request_id: Option<String>,
}

/// The rounding mode a wire value names: UNSPECIFIED means the default
/// ([`RoundingMode::default`], half away from zero); `None` for a value
/// outside the enum.
pub fn rounding_mode_from_proto(value: i32) -> Option<RoundingMode> {
    match types::RoundingMode::try_from(value).ok()? {
        types::RoundingMode::Unspecified => Some(RoundingMode::default()),
        types::RoundingMode::HalfAwayFromZero => Some(RoundingMode::HalfAwayFromZero),
        types::RoundingMode::HalfEven => Some(RoundingMode::HalfEven),
    }
}

/// The wire value of a rounding mode.
pub fn rounding_mode_to_proto(mode: RoundingMode) -> types::RoundingMode {
    match mode {
        RoundingMode::HalfAwayFromZero => types::RoundingMode::HalfAwayFromZero,
        RoundingMode::HalfEven => types::RoundingMode::HalfEven,
    }
}

/// Parses a stored rounding mode name ("HALF_EVEN").
pub fn rounding_mode_from_str(name: &str) -> Option<RoundingMode> {
    match name {
        "HALF_AWAY_FROM_ZERO" => Some(RoundingMode::HalfAwayFromZero),
        "HALF_EVEN" => Some(RoundingMode::HalfEven),
        _ => None,
    }
}

/// Records a violation when an optional key is too long; returns it trimmed,
/// or `None` when empty.
pub fn optional_key(field: &str, value: &str, violations: &mut FieldViolations) -> Option<String> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return None;
    }
    if trimmed.chars().count() > MAX_KEY_CHARS {
        violations.add(field, format!("must be at most {MAX_KEY_CHARS} characters"));
    }
    Some(trimmed.to_string())
}

/// Records a violation when a required display name is empty or too long.
pub fn required_name(field: &str, value: &str, violations: &mut FieldViolations) -> String {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        violations.add(field, "is required");
    } else if trimmed.chars().count() > MAX_NAME_CHARS {
        violations.add(field, format!("must be at most {MAX_NAME_CHARS} characters"));
    }
    trimmed.to_string()
}

/// Validates a CreateProgram request, collecting every violation.
///
/// Rules: `program.display_name` required; `program.default_currency` an ISO
/// 4217 code; `override_depth_cap` 0 (→ 8) or 1..=32; `minimum_payout`
/// optional, in the default currency, ≥ 0 and exact in its minor unit;
/// `role_ladder` empty (→ seed 002's ladder) or distinct non-empty names;
/// `non_transacting_roles` empty (→ ADMIN when it is on the ladder, else none)
/// or distinct roles on the ladder; `rounding_mode` UNSPECIFIED →
/// HALF_AWAY_FROM_ZERO.
///
/// Errors: INVALID_ARGUMENT with one field violation per problem.
pub fn validate_new_program(request: &pb::CreateProgramRequest) -> Result<ProgramSpec, tonic::Status> {
    let mut violations = FieldViolations::new();
    let request_id = accrue_kit::idempotency::request_id("request_id", &request.request_id, &mut violations)
        .map(|id| id.as_str().to_string());
    let Some(program) = request.program.as_ref() else {
        violations.add("program", "is required");
        return Err(violations.into_status());
    };
    let display_name = required_name("program.display_name", &program.display_name, &mut violations);
    let default_currency = match Currency::from_code(&program.default_currency) {
        Ok(currency) => Some(currency),
        Err(error) => {
            violations.add("program.default_currency", error.to_string());
            None
        }
    };
    let rounding_mode = rounding_mode_from_proto(program.rounding_mode);
    if rounding_mode.is_none() {
        violations.add("program.rounding_mode", format!("unknown rounding mode {}", program.rounding_mode));
    }
    let override_depth_cap = match program.override_depth_cap {
        0 => DEFAULT_OVERRIDE_DEPTH_CAP,
        cap => checked_override_depth_cap(
            cap,
            &format!("0 means the default {DEFAULT_OVERRIDE_DEPTH_CAP}"),
            &mut violations,
        ),
    };
    let max_tree_depth = match program.max_tree_depth {
        0 => DEFAULT_MAX_TREE_DEPTH,
        depth => checked_max_tree_depth(depth, "0 means the default 32", &mut violations),
    };
    let mut minimum_payout = Decimal::ZERO;
    if let Some(minimum) = optional_money("program.minimum_payout", program.minimum_payout.as_ref(), &mut violations) {
        if let Some(currency) = default_currency
            && minimum.currency != currency
        {
            violations.add(
                "program.minimum_payout.currency_code",
                format!("must be the program's default currency {currency}, not {}", minimum.currency),
            );
        }
        if minimum.amount < Decimal::ZERO {
            violations.add("program.minimum_payout.amount", "must not be negative");
        }
        minimum_payout = minimum.amount;
    }
    let role_ladder = validate_ladder(&program.role_ladder, &mut violations);
    let non_transacting_roles = validate_non_transacting(&program.non_transacting_roles, &role_ladder, &mut violations);
    violations.into_result()?;
    let (Some(default_currency), Some(rounding_mode)) = (default_currency, rounding_mode) else {
        // Unreachable: both record a violation when absent.
        return Err(accrue_kit::error::invalid_field("program", "is invalid"));
    };
    Ok(ProgramSpec {
        display_name,
        default_currency,
        rounding_mode,
        override_depth_cap,
        max_tree_depth,
        compression_enabled: program.compression_enabled,
        auto_approve_cleared: program.auto_approve_cleared,
        require_second_approver: program.require_second_approver,
        minimum_payout: default_currency.rescale(minimum_payout),
        role_ladder,
        non_transacting_roles,
        request_id,
    })
}

/// `cap` when it is in 1..=32, else a violation of `program.override_depth_cap`
/// (`hint` says what 0 means in this request) and the default.
fn checked_override_depth_cap(cap: i32, hint: &str, violations: &mut FieldViolations) -> i32 {
    if (MIN_OVERRIDE_DEPTH_CAP..=MAX_OVERRIDE_DEPTH_CAP).contains(&cap) {
        return cap;
    }
    violations.add(
        "program.override_depth_cap",
        format!("{cap} is out of range {MIN_OVERRIDE_DEPTH_CAP}..={MAX_OVERRIDE_DEPTH_CAP} ({hint})"),
    );
    DEFAULT_OVERRIDE_DEPTH_CAP
}

/// `depth` when it is in 1..=1024, else a violation of `program.max_tree_depth`
/// (`hint` says what 0 means in this request) and the default.
fn checked_max_tree_depth(depth: i32, hint: &str, violations: &mut FieldViolations) -> i32 {
    if (1..=MAX_MAX_TREE_DEPTH).contains(&depth) {
        return depth;
    }
    violations.add("program.max_tree_depth", format!("{depth} is out of range 1..={MAX_MAX_TREE_DEPTH} ({hint})"));
    DEFAULT_MAX_TREE_DEPTH
}

/// The settings an UpdateProgram changes: `Some` for each field its mask names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramUpdate {
    /// The program.
    pub id: ProgramId,
    /// New display name.
    pub display_name: Option<String>,
    /// New rounding mode (settlement setting).
    pub rounding_mode: Option<RoundingMode>,
    /// New override depth cap, 1..=32 (settlement setting).
    pub override_depth_cap: Option<i32>,
    /// New maximum tree depth, 1..=1024.
    pub max_tree_depth: Option<i32>,
    /// New compression flag (settlement setting).
    pub compression_enabled: Option<bool>,
    /// New non-transacting roles (checked against the stored ladder by
    /// [`check_non_transacting_roles`]); empty means no role is barred.
    pub non_transacting_roles: Option<Vec<String>>,
    /// New auto-approve flag.
    pub auto_approve_cleared: Option<bool>,
    /// New maker-checker flag.
    pub require_second_approver: Option<bool>,
    /// Idempotency key, when given.
    pub request_id: Option<String>,
}

/// The fields UpdateProgram may change (AIP-134 mask paths).
pub const MUTABLE_PROGRAM_FIELDS: [&str; 8] = [
    "display_name",
    "rounding_mode",
    "override_depth_cap",
    "max_tree_depth",
    "compression_enabled",
    "non_transacting_roles",
    "auto_approve_cleared",
    "require_second_approver",
];

/// Fields of a program that exist but never change after creation.
const IMMUTABLE_PROGRAM_FIELDS: [&str; 6] =
    ["id", "default_currency", "minimum_payout", "role_ladder", "create_time", "update_time"];

/// Validates an UpdateProgram request (AIP-134), collecting every violation.
///
/// Rules: `program.id` a UUID; `update_mask` non-empty, each path one of
/// [`MUTABLE_PROGRAM_FIELDS`] (an immutable or unknown path is named in its
/// violation), none twice; a named field is set to the request's value, zero
/// values included: `display_name` required, `rounding_mode` not UNSPECIFIED,
/// `override_depth_cap` 1..=32, `max_tree_depth` 1..=1024,
/// `non_transacting_roles` distinct (their place on the ladder is checked
/// against the stored program).
///
/// Errors: INVALID_ARGUMENT with one field violation per problem.
pub fn validate_program_update(request: &pb::UpdateProgramRequest) -> Result<ProgramUpdate, tonic::Status> {
    let mut violations = FieldViolations::new();
    let request_id = accrue_kit::idempotency::request_id("request_id", &request.request_id, &mut violations)
        .map(|key| key.as_str().to_string());
    let Some(program) = request.program.as_ref() else {
        violations.add("program", "is required");
        return Err(violations.into_status());
    };
    let id = accrue_kit::convert::require_uuid("program.id", &program.id, &mut violations);
    let paths = request.update_mask.as_ref().map(|mask| mask.paths.as_slice()).unwrap_or_default();
    if paths.is_empty() {
        violations.add(
            "update_mask",
            format!("is required: name the fields to change among {}", MUTABLE_PROGRAM_FIELDS.join(", ")),
        );
    }
    // The id is set once every field has been checked (the request may lack it).
    let mut update = ProgramUpdate {
        id: ProgramId::from_uuid(uuid::Uuid::nil()),
        display_name: None,
        rounding_mode: None,
        override_depth_cap: None,
        max_tree_depth: None,
        compression_enabled: None,
        non_transacting_roles: None,
        auto_approve_cleared: None,
        require_second_approver: None,
        request_id: None,
    };
    let mut seen: Vec<&str> = Vec::with_capacity(paths.len());
    for (index, path) in paths.iter().enumerate() {
        let field = format!("update_mask.paths[{index}]");
        let path = path.trim();
        if seen.contains(&path) {
            violations.add(field, format!("{path:?} appears twice"));
            continue;
        }
        seen.push(path);
        match path {
            "display_name" => {
                update.display_name =
                    Some(required_name("program.display_name", &program.display_name, &mut violations));
            }
            "rounding_mode" => match types::RoundingMode::try_from(program.rounding_mode) {
                Ok(types::RoundingMode::Unspecified) => {
                    violations.add("program.rounding_mode", "must be HALF_AWAY_FROM_ZERO or HALF_EVEN");
                }
                _ => match rounding_mode_from_proto(program.rounding_mode) {
                    Some(mode) => update.rounding_mode = Some(mode),
                    None => violations
                        .add("program.rounding_mode", format!("unknown rounding mode {}", program.rounding_mode)),
                },
            },
            "override_depth_cap" => {
                update.override_depth_cap = Some(checked_override_depth_cap(
                    program.override_depth_cap,
                    "required in an update",
                    &mut violations,
                ));
            }
            "max_tree_depth" => {
                update.max_tree_depth =
                    Some(checked_max_tree_depth(program.max_tree_depth, "required in an update", &mut violations));
            }
            "compression_enabled" => update.compression_enabled = Some(program.compression_enabled),
            "auto_approve_cleared" => update.auto_approve_cleared = Some(program.auto_approve_cleared),
            "require_second_approver" => update.require_second_approver = Some(program.require_second_approver),
            "non_transacting_roles" => {
                let mut kept: Vec<String> = Vec::with_capacity(program.non_transacting_roles.len());
                for (index, role) in program.non_transacting_roles.iter().enumerate() {
                    let role = role.trim();
                    let field = format!("program.non_transacting_roles[{index}]");
                    if role.is_empty() {
                        violations.add(field, "must not be empty");
                    } else if kept.iter().any(|seen| seen == role) {
                        violations.add(field, format!("role {role:?} appears twice"));
                    } else {
                        kept.push(role.to_string());
                    }
                }
                update.non_transacting_roles = Some(kept);
            }
            other if IMMUTABLE_PROGRAM_FIELDS.contains(&other) => {
                violations.add(field, format!("{other:?} cannot change after the program is created"));
            }
            other => violations.add(
                field,
                format!("unknown field {other:?}; updatable fields are {}", MUTABLE_PROGRAM_FIELDS.join(", ")),
            ),
        }
    }
    violations.into_result()?;
    update.id = id.ok_or_else(|| accrue_kit::error::invalid_field("program.id", "is required"))?;
    update.request_id = request_id;
    Ok(update)
}

/// Checks an update's non-transacting roles against the program's stored
/// ladder (violations name `program.non_transacting_roles[i]`).
pub fn check_non_transacting_roles(roles: &[String], ladder: &[String]) -> Result<(), tonic::Status> {
    let mut violations = FieldViolations::new();
    for (index, role) in roles.iter().enumerate() {
        if !ladder.iter().any(|rung| rung == role) {
            violations.add(
                format!("program.non_transacting_roles[{index}]"),
                format!("role {role:?} is not on the program's role ladder ({})", ladder.join(", ")),
            );
        }
    }
    violations.into_result()
}

fn validate_ladder(ladder: &[String], violations: &mut FieldViolations) -> Vec<String> {
    if ladder.is_empty() {
        return DEFAULT_ROLE_LADDER.iter().map(|role| (*role).to_string()).collect();
    }
    let mut roles: Vec<String> = Vec::with_capacity(ladder.len());
    for (index, role) in ladder.iter().enumerate() {
        let role = role.trim();
        let field = format!("program.role_ladder[{index}]");
        if role.is_empty() {
            violations.add(field, "must not be empty");
        } else if role.chars().count() > MAX_KEY_CHARS {
            violations.add(field, format!("must be at most {MAX_KEY_CHARS} characters"));
        } else if roles.iter().any(|seen| seen == role) {
            violations.add(field, format!("role {role:?} appears twice"));
        } else {
            roles.push(role.to_string());
        }
    }
    roles
}

/// The roles that may not transact: the given ones (each on the ladder, none
/// twice; violations name `program.non_transacting_roles[i]`), or, when none
/// is given, ADMIN if the ladder has it.
fn validate_non_transacting(roles: &[String], ladder: &[String], violations: &mut FieldViolations) -> Vec<String> {
    if roles.is_empty() {
        return ladder.iter().filter(|rung| *rung == DEFAULT_NON_TRANSACTING_ROLE).cloned().collect();
    }
    let mut kept: Vec<String> = Vec::with_capacity(roles.len());
    for (index, role) in roles.iter().enumerate() {
        let role = role.trim();
        let field = format!("program.non_transacting_roles[{index}]");
        if role.is_empty() {
            violations.add(field, "must not be empty");
        } else if !ladder.iter().any(|rung| rung == role) {
            violations.add(field, format!("role {role:?} is not on the program's role ladder ({})", ladder.join(", ")));
        } else if kept.iter().any(|seen| seen == role) {
            violations.add(field, format!("role {role:?} appears twice"));
        } else {
            kept.push(role.to_string());
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use accrue_proto::types::v1::Money;
    use rust_decimal_macros::dec;

    fn request(program: pb::Program) -> pb::CreateProgramRequest {
        pb::CreateProgramRequest { program: Some(program), request_id: String::new() }
    }

    fn gbp_program() -> pb::Program {
        pb::Program { display_name: "Acme".into(), default_currency: "GBP".into(), ..Default::default() }
    }

    #[test]
    fn defaults_apply() {
        let spec = validate_new_program(&request(gbp_program())).unwrap();
        assert_eq!(spec.override_depth_cap, 8);
        assert_eq!(spec.rounding_mode, RoundingMode::HalfAwayFromZero);
        assert_eq!(spec.role_ladder, DEFAULT_ROLE_LADDER.to_vec());
        assert_eq!(spec.minimum_payout, dec!(0.00));
        assert_eq!(spec.non_transacting_roles, vec!["ADMIN".to_string()]);
        assert_eq!(spec.request_id, None);
    }

    #[test]
    fn non_transacting_roles_default_to_admin_only_when_it_is_on_the_ladder() {
        let own_ladder = pb::Program { role_ladder: vec!["GOLD".into(), "SILVER".into()], ..gbp_program() };
        assert!(validate_new_program(&request(own_ladder)).unwrap().non_transacting_roles.is_empty());
        let custom =
            pb::Program { non_transacting_roles: vec![" WHITE_LABEL ".into(), "ADMIN".into()], ..gbp_program() };
        let spec = validate_new_program(&request(custom)).unwrap();
        assert_eq!(spec.non_transacting_roles, vec!["WHITE_LABEL".to_string(), "ADMIN".to_string()]);
    }

    #[test]
    fn non_transacting_roles_must_be_distinct_rungs_of_the_ladder() {
        let program = pb::Program {
            non_transacting_roles: vec!["ADMIN".into(), "EMPEROR".into(), "ADMIN".into(), " ".into()],
            ..gbp_program()
        };
        let status = validate_new_program(&request(program)).unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        let message = status.message();
        assert!(!message.contains("non_transacting_roles[0]"), "{message}");
        for field in
            ["program.non_transacting_roles[1]", "program.non_transacting_roles[2]", "program.non_transacting_roles[3]"]
        {
            assert!(message.contains(field), "{field} missing in {message}");
        }
    }

    #[test]
    fn explicit_settings_are_kept() {
        let program = pb::Program {
            rounding_mode: types::RoundingMode::HalfEven as i32,
            override_depth_cap: 3,
            minimum_payout: Some(Money { currency_code: "GBP".into(), amount: "50".into() }),
            role_ladder: vec!["GOLD".into(), "SILVER".into()],
            compression_enabled: true,
            ..gbp_program()
        };
        let spec = validate_new_program(&request(program)).unwrap();
        assert_eq!(spec.rounding_mode, RoundingMode::HalfEven);
        assert_eq!(spec.override_depth_cap, 3);
        assert_eq!(spec.minimum_payout.to_string(), "50.00");
        assert_eq!(spec.role_ladder, vec!["GOLD".to_string(), "SILVER".to_string()]);
        assert!(spec.compression_enabled);
    }

    #[test]
    fn collects_every_violation() {
        let program = pb::Program {
            display_name: " ".into(),
            default_currency: "XXQ".into(),
            override_depth_cap: 33,
            rounding_mode: 9,
            role_ladder: vec!["A".into(), "A".into(), "".into()],
            ..Default::default()
        };
        let status = validate_new_program(&request(program)).unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        for field in [
            "program.display_name",
            "program.default_currency",
            "program.override_depth_cap",
            "program.rounding_mode",
            "program.role_ladder[1]",
            "program.role_ladder[2]",
        ] {
            assert!(status.message().contains(field), "{field} missing in {}", status.message());
        }
    }

    #[test]
    fn minimum_payout_must_match_currency_and_be_exact() {
        let wrong_currency = pb::Program {
            minimum_payout: Some(Money { currency_code: "USD".into(), amount: "5".into() }),
            ..gbp_program()
        };
        let status = validate_new_program(&request(wrong_currency)).unwrap_err();
        assert!(status.message().contains("program.minimum_payout.currency_code"));

        let too_precise = pb::Program {
            minimum_payout: Some(Money { currency_code: "GBP".into(), amount: "5.001".into() }),
            ..gbp_program()
        };
        let status = validate_new_program(&request(too_precise)).unwrap_err();
        assert!(status.message().contains("program.minimum_payout.amount"));

        let negative = pb::Program {
            minimum_payout: Some(Money { currency_code: "GBP".into(), amount: "-1".into() }),
            ..gbp_program()
        };
        assert!(validate_new_program(&request(negative)).is_err());
    }

    #[test]
    fn missing_program_is_invalid() {
        let status = validate_new_program(&pb::CreateProgramRequest::default()).unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains("program"));
    }

    #[test]
    fn rounding_mode_names_round_trip() {
        for mode in [RoundingMode::HalfAwayFromZero, RoundingMode::HalfEven] {
            assert_eq!(rounding_mode_from_str(mode.as_str()), Some(mode));
            assert_eq!(rounding_mode_from_proto(rounding_mode_to_proto(mode) as i32), Some(mode));
        }
        assert_eq!(rounding_mode_from_str("UP"), None);
    }
}
