//! QuoteSale (what-if settlement, writes nothing) and GetAgreementInForce.

use accrue_proto::commission::v1 as pb;
use tonic::Status;

use super::CommissionApi;

/// The version a partner's sale at a time is settled under.
pub(super) async fn get_agreement_in_force(
    _api: &CommissionApi,
    _request: pb::GetAgreementInForceRequest,
) -> Result<pb::AgreementVersion, Status> {
    Err(Status::unimplemented("GetAgreementInForce is being built"))
}

/// The settlement of a hypothetical sale.
pub(super) async fn quote_sale(
    _api: &CommissionApi,
    _request: pb::QuoteSaleRequest,
) -> Result<pb::QuoteSaleResponse, Status> {
    Err(Status::unimplemented("QuoteSale is being built"))
}
