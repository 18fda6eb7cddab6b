//! Partner statuses and partner input validation.

use accrue_kit::FieldViolations;
use accrue_kit::convert::{optional_uuid, require_uuid};
use accrue_proto::hierarchy::v1 as pb;
use accrue_proto::types::v1 as types;
use accrue_types::{PartnerId, ProgramId};

use super::program::{optional_key, required_name};

/// A partner's standing, shared with commission (one definition in accrue-types).
pub use accrue_types::partner::PartnerStatus;

/// The status a wire value names; `None` for UNSPECIFIED or an unknown value
/// (the callers turn both into INVALID_ARGUMENT or "no filter").
pub fn status_from_proto(value: i32) -> Option<PartnerStatus> {
    match types::PartnerStatus::try_from(value).ok()? {
        types::PartnerStatus::Unspecified => None,
        types::PartnerStatus::Active => Some(PartnerStatus::Active),
        types::PartnerStatus::Suspended => Some(PartnerStatus::Suspended),
        types::PartnerStatus::Terminated => Some(PartnerStatus::Terminated),
    }
}

/// The wire value of a status.
pub fn status_to_proto(status: PartnerStatus) -> types::PartnerStatus {
    match status {
        PartnerStatus::Active => types::PartnerStatus::Active,
        PartnerStatus::Suspended => types::PartnerStatus::Suspended,
        PartnerStatus::Terminated => types::PartnerStatus::Terminated,
    }
}

/// Why a status change is refused (FAILED_PRECONDITION, reason PARTNER_TERMINATED).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("partner is TERMINATED; a terminated partner cannot become {to}")]
pub struct TerminatedError {
    /// The refused target status.
    pub to: &'static str,
}

/// Checks a status change: TERMINATED is final; any other change is allowed.
/// Returns whether anything changes (`false` when `from == to`).
///
/// Errors: [`TerminatedError`] when leaving TERMINATED.
pub fn check_status_change(from: PartnerStatus, to: PartnerStatus) -> Result<bool, TerminatedError> {
    if from == to {
        return Ok(false);
    }
    if from == PartnerStatus::Terminated {
        return Err(TerminatedError { to: to.as_str() });
    }
    Ok(true)
}

/// A validated CreatePartner request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPartner {
    /// Program to create the partner in.
    pub program_id: ProgramId,
    /// Display name (trimmed).
    pub display_name: String,
    /// Caller's id, unique per program when set.
    pub external_id: Option<String>,
    /// Role (must be on the program's ladder; checked against the program).
    pub role: Option<String>,
    /// Parent, when not a root.
    pub parent_id: Option<PartnerId>,
    /// Idempotency key.
    pub request_id: Option<String>,
}

/// Validates the shape of a CreatePartner request (ids parse, name present).
/// Whether the program and parent exist, the depth cap and the role ladder
/// are checked against stored state by the caller.
///
/// Errors: INVALID_ARGUMENT listing every field violation.
pub fn validate_new_partner(request: &pb::CreatePartnerRequest) -> Result<NewPartner, tonic::Status> {
    let mut violations = FieldViolations::new();
    let program_id = require_uuid("program_id", &request.program_id, &mut violations);
    let request_id = accrue_kit::idempotency::request_id("request_id", &request.request_id, &mut violations)
        .map(|id| id.as_str().to_string());
    let Some(partner) = request.partner.as_ref() else {
        violations.add("partner", "is required");
        return Err(violations.into_status());
    };
    let display_name = required_name("partner.display_name", &partner.display_name, &mut violations);
    let external_id = optional_key("partner.external_id", &partner.external_id, &mut violations);
    let role = optional_key("partner.role", &partner.role, &mut violations);
    let parent_id = optional_uuid("partner.parent_id", &partner.parent_id, &mut violations);
    violations.into_result()?;
    let Some(program_id) = program_id else {
        return Err(accrue_kit::error::invalid_field("program_id", "is required"));
    };
    Ok(NewPartner { program_id, display_name, external_id, role, parent_id, request_id })
}

/// Records a violation when `role` is set and not on `ladder`.
pub fn check_role_on_ladder(field: &str, role: Option<&str>, ladder: &[String], violations: &mut FieldViolations) {
    if let Some(role) = role
        && !ladder.iter().any(|rung| rung == role)
    {
        violations.add(field, format!("role {role:?} is not on the program's role ladder ({})", ladder.join(", ")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_round_trip() {
        for status in [PartnerStatus::Active, PartnerStatus::Suspended, PartnerStatus::Terminated] {
            assert_eq!(PartnerStatus::from_name(status.as_str()), Some(status));
            assert_eq!(status_from_proto(status_to_proto(status) as i32), Some(status));
        }
        assert_eq!(status_from_proto(0), None);
        assert_eq!(status_from_proto(42), None);
    }

    #[test]
    fn terminated_is_final() {
        use PartnerStatus::*;
        assert_eq!(check_status_change(Active, Suspended), Ok(true));
        assert_eq!(check_status_change(Suspended, Active), Ok(true));
        assert_eq!(check_status_change(Active, Terminated), Ok(true));
        assert_eq!(check_status_change(Active, Active), Ok(false));
        assert_eq!(check_status_change(Terminated, Terminated), Ok(false));
        assert!(check_status_change(Terminated, Active).is_err());
    }

    #[test]
    fn validates_shape() {
        let program_id = ProgramId::new_v7();
        let request = pb::CreatePartnerRequest {
            program_id: program_id.to_string(),
            partner: Some(pb::Partner {
                display_name: " Ann ".into(),
                role: "RETAILER".into(),
                external_id: "ext-1".into(),
                ..Default::default()
            }),
            request_id: "r1".into(),
        };
        let partner = validate_new_partner(&request).unwrap();
        assert_eq!(partner.program_id, program_id);
        assert_eq!(partner.display_name, "Ann");
        assert_eq!(partner.role.as_deref(), Some("RETAILER"));
        assert_eq!(partner.parent_id, None);
        assert_eq!(partner.request_id.as_deref(), Some("r1"));
    }

    #[test]
    fn collects_violations() {
        let request = pb::CreatePartnerRequest {
            program_id: "nope".into(),
            partner: Some(pb::Partner { parent_id: "bad".into(), ..Default::default() }),
            request_id: String::new(),
        };
        let status = validate_new_partner(&request).unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        for field in ["program_id", "partner.display_name", "partner.parent_id"] {
            assert!(status.message().contains(field), "{field}: {}", status.message());
        }
    }

    #[test]
    fn role_must_be_on_ladder() {
        let ladder = vec!["GOLD".to_string(), "SILVER".to_string()];
        let mut violations = FieldViolations::new();
        check_role_on_ladder("partner.role", Some("SILVER"), &ladder, &mut violations);
        check_role_on_ladder("partner.role", None, &ladder, &mut violations);
        assert!(violations.is_empty());
        check_role_on_ladder("partner.role", Some("BRONZE"), &ladder, &mut violations);
        assert!(!violations.is_empty());
    }
}
