//! Scheme RPCs (seed 002): CreateScheme, GetScheme, SetSchemeRates,
//! AssignScheme, GetSchemeChain.

use accrue_proto::commission::v1 as pb;
use tonic::Status;

use super::CommissionApi;

/// Creates a scheme.
pub(super) async fn create_scheme(
    _api: &CommissionApi,
    _request: pb::CreateSchemeRequest,
) -> Result<pb::Scheme, Status> {
    Err(Status::unimplemented("CreateScheme is being built"))
}

/// Returns a scheme.
pub(super) async fn get_scheme(_api: &CommissionApi, _request: pb::GetSchemeRequest) -> Result<pb::Scheme, Status> {
    Err(Status::unimplemented("GetScheme is being built"))
}

/// Sets a scheme's rates.
pub(super) async fn set_scheme_rates(
    _api: &CommissionApi,
    _request: pb::SetSchemeRatesRequest,
) -> Result<pb::Scheme, Status> {
    Err(Status::unimplemented("SetSchemeRates is being built"))
}

/// Assigns a partner to a scheme.
pub(super) async fn assign_scheme(
    _api: &CommissionApi,
    _request: pb::AssignSchemeRequest,
) -> Result<pb::SchemeAssignment, Status> {
    Err(Status::unimplemented("AssignScheme is being built"))
}

/// A scheme chain.
pub(super) async fn get_scheme_chain(
    _api: &CommissionApi,
    _request: pb::GetSchemeChainRequest,
) -> Result<pb::GetSchemeChainResponse, Status> {
    Err(Status::unimplemented("GetSchemeChain is being built"))
}
