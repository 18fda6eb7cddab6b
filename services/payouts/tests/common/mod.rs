//! The payouts tests' harness: PayoutService over real gRPC with the real
//! hierarchy and ledger services on a fresh Postgres database per test, and
//! helpers that build programs, earnings, runs and payout moves.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, unreachable_pub)]

pub use accrue_kit::client::AuthChannel;
pub use accrue_proto::hierarchy::v1 as hpb;
pub use accrue_proto::hierarchy::v1::hierarchy_service_client::HierarchyServiceClient;
pub use accrue_proto::ledger::v1 as lpb;
pub use accrue_proto::ledger::v1::ledger_service_client::LedgerServiceClient;
pub use accrue_proto::payouts::v1 as pb;
pub use accrue_proto::payouts::v1::payout_service_client::PayoutServiceClient;
pub use accrue_proto::types::v1 as types;
pub use accrue_testkit::TestServices;
pub use sqlx::PgPool;
pub use tonic::Code;
pub use tonic_types::StatusExt;
pub use uuid::Uuid;

/// 2011-01-05T00:00:00Z.
pub const JAN_5: i64 = 1_294_185_600;
pub const DAY: i64 = 86_400;

pub struct Harness {
    pub payouts: PayoutServiceClient<AuthChannel>,
    pub ledger: LedgerServiceClient<AuthChannel>,
    pub hierarchy: HierarchyServiceClient<AuthChannel>,
    pub pool: PgPool,
    pub payouts_url: String,
    pub services: TestServices,
}

pub async fn start() -> Harness {
    let services = TestServices::new().await;
    let hierarchy_url = services.spawn::<accrue_hierarchy::Hierarchy>(accrue_hierarchy::Config::default()).await;
    let ledger_url = services
        .spawn::<accrue_ledger::Ledger>(accrue_ledger::Config {
            hierarchy_url: hierarchy_url.clone(),
            clear_matured_interval_seconds: 0,
        })
        .await;
    let payouts_config =
        accrue_payouts::Config { hierarchy_url: hierarchy_url.clone(), ledger_url: ledger_url.clone() };
    let payouts_url = services.spawn::<accrue_payouts::Payouts>(payouts_config).await;
    Harness {
        payouts: services.client(&payouts_url),
        ledger: services.client(&ledger_url),
        hierarchy: services.client(&hierarchy_url),
        pool: services.pool::<accrue_payouts::Payouts>(),
        payouts_url,
        services,
    }
}

pub fn gbp(amount: &str) -> Option<types::Money> {
    Some(types::Money { currency_code: "GBP".into(), amount: amount.into() })
}

pub fn ts(seconds: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds, nanos: 0 })
}

pub fn reason(status: &tonic::Status) -> String {
    status.get_details_error_info().map(|info| info.reason).unwrap_or_default()
}

impl Harness {
    pub async fn program(&mut self, minimum: &str) -> String {
        self.hierarchy
            .create_program(hpb::CreateProgramRequest {
                program: Some(hpb::Program {
                    display_name: "Payout test".into(),
                    default_currency: "GBP".into(),
                    auto_approve_cleared: true,
                    minimum_payout: gbp(minimum),
                    ..Default::default()
                }),
                request_id: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .id
    }

    pub async fn partner(&mut self, program: &str, name: &str) -> Uuid {
        let id = self
            .hierarchy
            .create_partner(hpb::CreatePartnerRequest {
                program_id: program.into(),
                partner: Some(hpb::Partner { display_name: name.into(), ..Default::default() }),
                request_id: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .id;
        Uuid::parse_str(&id).unwrap()
    }

    /// Posts one credit of `amount` for `partner`, clearing `clear_days` after 2011-01-05.
    pub async fn earn(&mut self, program: &str, key: &str, partner: Uuid, amount: &str, clear_days: i64) {
        let line = lpb::EntryInput {
            partner_id: partner.to_string(),
            kind: types::EarningKind::Direct as i32,
            amount: gbp(amount),
            level: 0,
            source_partner_id: partner.to_string(),
            occurred_at: ts(JAN_5),
            clears_at: ts(JAN_5 + clear_days * DAY),
            breakdown: Some(types::CommissionBreakdown {
                model: "FIXED".into(),
                formula: format!("fixed {amount}"),
                ..Default::default()
            }),
        };
        let results = self
            .ledger
            .post_entries(lpb::PostEntriesRequest {
                program_id: program.into(),
                postings: vec![lpb::SalePosting {
                    idempotency_key: key.into(),
                    sale_id: format!("sale-{key}"),
                    lines: vec![line],
                }],
            })
            .await
            .unwrap()
            .into_inner()
            .results;
        assert!(results[0].failure.is_none(), "{:?}", results[0].failure);
    }

    /// Turns on the program's maker-checker (`require_second_approver`).
    pub async fn require_second_approver(&mut self, program: &str) {
        self.hierarchy
            .update_program(hpb::UpdateProgramRequest {
                program: Some(hpb::Program { id: program.into(), require_second_approver: true, ..Default::default() }),
                update_mask: Some(prost_types::FieldMask { paths: vec!["require_second_approver".into()] }),
                request_id: String::new(),
            })
            .await
            .unwrap();
    }

    pub async fn clear_all(&mut self, program: &str) {
        self.ledger.clear_matured(lpb::ClearMaturedRequest { program_id: program.into(), as_of: None }).await.unwrap();
    }

    pub async fn run(
        &mut self,
        program: &str,
        period: &str,
        minimum: Option<&str>,
    ) -> Result<pb::PayoutRun, tonic::Status> {
        self.payouts
            .create_payout_run(pb::CreatePayoutRunRequest {
                program_id: program.into(),
                currency_code: "GBP".into(),
                period: period.into(),
                cutoff: None,
                minimum_amount: minimum.and_then(gbp),
                request_id: format!("run-{period}"),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn payouts(&mut self, program: &str, run_id: &str) -> Vec<pb::Payout> {
        self.payouts
            .list_payouts(pb::ListPayoutsRequest {
                program_id: program.into(),
                payout_run_id: run_id.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .payouts
    }

    pub async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }
}

/// A payout test world: one program, `n` partners earning `amount` each,
/// cleared and run for 2011-01; the payouts in partner-creation order.
pub async fn lifecycle_world(h: &mut Harness, n: usize, amount: &str) -> (String, Vec<Uuid>, Vec<pb::Payout>) {
    let program = h.program("1.00").await;
    let mut partners = Vec::with_capacity(n);
    for i in 0..n {
        let partner = h.partner(&program, &format!("P{i}")).await;
        h.earn(&program, &format!("e{i}"), partner, amount, 10).await;
        partners.push(partner);
    }
    h.clear_all(&program).await;
    let run = h.run(&program, "2011-01", None).await.unwrap();
    assert_eq!(run.payout_count, n as i64);
    let mut payouts = h.payouts(&program, &run.id).await;
    payouts.sort_by_key(|p| partners.iter().position(|partner| partner.to_string() == p.partner_id));
    (program, partners, payouts)
}

/// The RPC that moves a payout to `to` (PENDING_APPROVAL has none).
pub async fn move_to(
    payouts: &mut PayoutServiceClient<AuthChannel>,
    id: &str,
    to: pb::PayoutStatus,
    reference: &str,
) -> Result<pb::Payout, tonic::Status> {
    use pb::PayoutStatus as S;
    let id = id.to_string();
    let result = match to {
        S::Approved => payouts.approve_payout(pb::ApprovePayoutRequest { id, request_id: String::new() }).await,
        S::Rejected => {
            payouts
                .reject_payout(pb::RejectPayoutRequest {
                    id,
                    reason: "wrong bank details".into(),
                    request_id: String::new(),
                })
                .await
        }
        S::Processing => {
            payouts
                .mark_payout_processing(pb::MarkPayoutProcessingRequest {
                    id,
                    payment_reference: reference.into(),
                    request_id: String::new(),
                })
                .await
        }
        S::Paid => {
            payouts
                .mark_payout_paid(pb::MarkPayoutPaidRequest {
                    id,
                    payment_reference: reference.into(),
                    payment_method: "bank_transfer".into(),
                    paid_time: None,
                    request_id: String::new(),
                })
                .await
        }
        S::Failed => {
            payouts
                .mark_payout_failed(pb::MarkPayoutFailedRequest {
                    id,
                    reason: "bank bounced".into(),
                    request_id: String::new(),
                })
                .await
        }
        S::Deleted => {
            payouts
                .delete_payout(pb::DeletePayoutRequest {
                    id,
                    reason: "duplicate of a manual payout".into(),
                    request_id: String::new(),
                })
                .await
        }
        S::PendingApproval | S::Unspecified => panic!("no RPC moves a payout to {to:?}"),
    };
    result.map(tonic::Response::into_inner)
}

/// The moves that bring a new (PENDING_APPROVAL) payout to `status`.
pub fn path_to(status: pb::PayoutStatus) -> Vec<pb::PayoutStatus> {
    use pb::PayoutStatus as S;
    match status {
        S::PendingApproval | S::Unspecified => vec![],
        S::Approved => vec![S::Approved],
        S::Rejected => vec![S::Rejected],
        S::Deleted => vec![S::Deleted],
        S::Processing => vec![S::Approved, S::Processing],
        S::Paid => vec![S::Approved, S::Paid],
        S::Failed => vec![S::Approved, S::Processing, S::Failed],
    }
}

/// Everything stored about a payout, its audit events and its ledger entries.
pub async fn payout_state(
    h: &mut Harness,
    program: &str,
    payout: &pb::Payout,
) -> (pb::Payout, i64, Vec<(String, i32, String)>) {
    let now = h.payouts.get_payout(pb::GetPayoutRequest { id: payout.id.clone() }).await.unwrap().into_inner();
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM payout_audit_events WHERE payout_id = $1::uuid")
        .bind(&payout.id)
        .fetch_one(&h.pool)
        .await
        .unwrap();
    let entries = h
        .ledger
        .list_entries(lpb::ListEntriesRequest {
            program_id: program.into(),
            partner_id: payout.partner_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries
        .into_iter()
        .map(|e| (e.id, e.status, e.payout_id))
        .collect();
    (now, events, entries)
}
