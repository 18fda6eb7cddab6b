//! The replay's program: partners, links, agreements and the override plan
//! created over the API, first-touch leads, and the configuration file.

// The replay's shared vocabulary (clients, errors, money helpers).
use super::*;

/// Creates (or, on a re-run, finds by request id) the program, partners,
/// links, agreements and override plan, then suspends the chosen partners.
pub(crate) async fn configure(clients: &Clients, plan: &Plan, mode: ProgressMode) -> Result<Created, ReplayError> {
    let hierarchy_client = clients.hierarchy.clone();
    let spec = &plan.program;
    let request = hierarchy::CreateProgramRequest {
        program: Some(hierarchy::Program {
            display_name: spec.display_name.clone(),
            default_currency: spec.default_currency.clone(),
            rounding_mode: types::RoundingMode::HalfAwayFromZero as i32,
            override_depth_cap: spec.override_depth_cap,
            compression_enabled: spec.compression_enabled,
            auto_approve_cleared: spec.auto_approve_cleared,
            minimum_payout: Some(gbp(spec.minimum_payout)),
            ..Default::default()
        }),
        request_id: spec.request_id.clone(),
    };
    let program =
        retry::idempotent(
            "CreateProgram",
            &hierarchy_client,
            &request,
            |mut c, r| async move { c.create_program(r).await },
        )
        .await
        .map_err(rpc("CreateProgram"))?;
    let program_id = program.id.clone();
    note(mode, &format!("program {program_id} ({})", spec.display_name));

    let suspensions = plan.partners.iter().filter(|p| p.suspended).count();
    let total = (plan.partners.len() + plan.links.len() + plan.agreements.len() + 1 + suspensions) as u64;
    let phase = Phase::start(mode, "configuring", total);
    let mut done = 0u64;
    let mut partners: Vec<hierarchy::Partner> = Vec::with_capacity(plan.partners.len());
    for spec in &plan.partners {
        let parent_id = spec.parent.and_then(|p| partners.get(p)).map(|p| p.id.clone()).unwrap_or_default();
        let request = hierarchy::CreatePartnerRequest {
            program_id: program_id.clone(),
            partner: Some(hierarchy::Partner {
                display_name: spec.display_name.clone(),
                external_id: spec.external_id.clone(),
                parent_id,
                ..Default::default()
            }),
            request_id: spec.request_id.clone(),
        };
        let partner = retry::idempotent("CreatePartner", &hierarchy_client, &request, |mut c, r| async move {
            c.create_partner(r).await
        })
        .await
        .map_err(rpc(format!("CreatePartner {}", spec.external_id)))?;
        partners.push(partner);
        done += 1;
        phase.set(done);
    }

    let attribution_client = clients.attribution.clone();
    let mut links = Vec::with_capacity(plan.links.len());
    for spec in &plan.links {
        let owner = &partners[spec.owner];
        let splits = spec
            .splits
            .iter()
            .map(|s| attribution::LinkSplit {
                partner_id: partners[s.partner].id.clone(),
                basis_points: s.basis_points,
            })
            .collect();
        let request = attribution::CreateLinkRequest {
            program_id: program_id.clone(),
            link: Some(attribution::Link {
                owner_partner_id: owner.id.clone(),
                key: spec.key.clone(),
                destination_url: format!("https://shop.example/?via={}", spec.key),
                splits,
                ..Default::default()
            }),
            request_id: spec.request_id.clone(),
        };
        let link =
            retry::idempotent(
                "CreateLink",
                &attribution_client,
                &request,
                |mut c, r| async move { c.create_link(r).await },
            )
            .await
            .map_err(rpc(format!("CreateLink {}", spec.key)))?;
        links.push(link);
        done += 1;
        phase.set(done);
    }

    let commission_client = clients.commission.clone();
    let mut agreements = Vec::with_capacity(plan.agreements.len());
    for spec in &plan.agreements {
        let partner_id = spec.partner.map(|p| partners[p].id.clone()).unwrap_or_default();
        let effective_from = DateTime::parse_from_rfc3339(&spec.effective_from)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| ReplayError::Task(format!("effective_from {:?}: {e}", spec.effective_from)))?;
        let request = commission::CreateAgreementRequest {
            program_id: program_id.clone(),
            partner_id,
            effective_from: Some(timestamp(effective_from)),
            rules: Some(rules_to_proto(&spec.rules)),
            request_id: spec.request_id.clone(),
        };
        let version = retry::idempotent("CreateAgreement", &commission_client, &request, |mut c, r| async move {
            c.create_agreement(r).await
        })
        .await
        .map_err(rpc(format!("CreateAgreement {}", spec.request_id)))?;
        agreements.push(version);
        done += 1;
        phase.set(done);
    }

    let override_spec = &plan.override_plan;
    let request = commission::SetOverridePlanRequest {
        plan: Some(commission::OverridePlan {
            program_id: program_id.clone(),
            partner_id: String::new(),
            mode: commission::OverrideMode::Percentage as i32,
            basis: commission::OverrideBasis::BaseCommission as i32,
            rates_by_level: override_spec
                .rates_by_level
                .iter()
                .map(|r| commission::OverrideLevel { rate: r.to_string(), flat_amount: None })
                .collect(),
            update_time: None,
            qualification: None,
        }),
        request_id: override_spec.request_id.clone(),
    };
    retry::idempotent("SetOverridePlan", &commission_client, &request, |mut c, r| async move {
        c.set_override_plan(r).await
    })
    .await
    .map_err(rpc("SetOverridePlan"))?;
    done += 1;
    phase.set(done);

    for spec in plan.partners.iter().filter(|p| p.suspended) {
        let suspended = types::PartnerStatus::Suspended as i32;
        let id = partners[spec.index].id.clone();
        let request = hierarchy::GetPartnerRequest { id: id.clone() };
        let current =
            retry::idempotent(
                "GetPartner",
                &hierarchy_client,
                &request,
                |mut c, r| async move { c.get_partner(r).await },
            )
            .await
            .map_err(rpc(format!("GetPartner {}", spec.external_id)))?;
        let partner = if current.status == suspended {
            current
        } else {
            // Setting the status a partner already has changes nothing, so a retry is safe.
            let request = hierarchy::UpdatePartnerStatusRequest {
                id,
                status: suspended,
                reason: format!("replay seed {}: generated suspension", plan.seed),
            };
            retry::idempotent("UpdatePartnerStatus", &hierarchy_client, &request, |mut c, r| async move {
                c.update_partner_status(r).await
            })
            .await
            .map_err(rpc(format!("UpdatePartnerStatus {}", spec.external_id)))?
        };
        partners[spec.index] = partner;
        done += 1;
        phase.set(done);
    }
    phase.finish(&format!(
        "{} partners, {} links, {} agreement versions",
        partners.len(),
        links.len(),
        agreements.len()
    ));
    Ok(Created { program_id, partners, links, agreements })
}

pub(super) fn model_to_proto(model: Model) -> commission::CommissionModel {
    match model {
        Model::Percentage => commission::CommissionModel::Percentage,
        Model::Fixed => commission::CommissionModel::Fixed,
        Model::Tiered => commission::CommissionModel::Tiered,
        Model::Hybrid => commission::CommissionModel::Hybrid,
    }
}

pub(super) fn tiers_to_proto(tiers: &[TierSpec]) -> Vec<commission::Tier> {
    tiers
        .iter()
        .map(|tier| commission::Tier {
            min_volume: tier.min_volume.to_string(),
            max_volume: tier.max_volume.map(|max| max.to_string()).unwrap_or_default(),
            rate: tier.rate.map(|rate| rate.to_string()).unwrap_or_default(),
            fixed_amount: tier.fixed_amount.map(gbp),
        })
        .collect()
}

pub(super) fn condition_to_proto(condition: &ConditionSpec) -> commission::Condition {
    let field = commission::ConditionField::from_str_name(&format!("CONDITION_FIELD_{}", condition.field))
        .unwrap_or(commission::ConditionField::Unspecified);
    let operator = commission::ConditionOperator::from_str_name(&format!("CONDITION_OPERATOR_{}", condition.operator))
        .unwrap_or(commission::ConditionOperator::Unspecified);
    commission::Condition {
        field: field as i32,
        operator: operator as i32,
        value: condition.value.clone().unwrap_or_default(),
        values: condition.values.clone(),
    }
}

pub(super) fn rules_to_proto(rules: &RulesSpec) -> commission::AgreementRules {
    commission::AgreementRules {
        model: model_to_proto(rules.model) as i32,
        trigger: commission::CommissionTrigger::OnPayment as i32,
        rate: rules.rate.map(|r| r.to_string()).unwrap_or_default(),
        fixed_amount: rules.fixed_amount.map(gbp),
        setup_fee: rules.setup_fee.map(gbp),
        min_commission: rules.min_commission.map(gbp),
        max_commission: rules.max_commission.map(gbp),
        clearance_days: rules.clearance_days,
        tiers: tiers_to_proto(&rules.tiers),
        rules: rules
            .rules
            .iter()
            .map(|rule| commission::HybridRule {
                condition: Some(condition_to_proto(&rule.condition)),
                model: model_to_proto(rule.model) as i32,
                rate: rule.rate.map(|r| r.to_string()).unwrap_or_default(),
                fixed_amount: rule.fixed_amount.map(gbp),
                tiers: tiers_to_proto(&rule.tiers),
            })
            .collect(),
        ..Default::default()
    }
}

/// Attributes each customer (first touch) to its seeded link at its first
/// sale's time. Returns customer → (link index, lead time).
pub(super) async fn track_leads(
    clients: &Clients,
    plan: &Plan,
    created: &Created,
    sales: &[&Invoice],
    mode: ProgressMode,
) -> Result<BTreeMap<String, (usize, DateTime<Utc>)>, ReplayError> {
    let mut customers: BTreeMap<String, (usize, DateTime<Utc>)> = BTreeMap::new();
    for sale in sales {
        if let Some(customer) = &sale.customer {
            customers
                .entry(customer.clone())
                .or_insert_with(|| (config::customer_link(plan.seed, customer, created.links.len()), sale.occurred_at));
        }
    }
    let requests: Vec<attribution::TrackLeadRequest> = customers
        .iter()
        .map(|(customer, (link, time))| attribution::TrackLeadRequest {
            program_id: created.program_id.clone(),
            link_id: created.links[*link].id.clone(),
            customer_external_id: customer.clone(),
            occurred_at: Some(timestamp(*time)),
        })
        .collect();
    let phase = Phase::start(mode, "tracking leads", customers.len() as u64);
    track_lead_requests(clients, requests, &phase).await?;
    phase.finish(&format!("{} customers attributed", customers.len()));
    Ok(customers)
}

/// Sends every TrackLead of `requests`, [`LEAD_CONCURRENCY`] at a time;
/// `phase` counts the ones done.
pub(crate) async fn track_lead_requests(
    clients: &Clients,
    requests: Vec<attribution::TrackLeadRequest>,
    phase: &Phase,
) -> Result<(), ReplayError> {
    let done = Arc::new(AtomicU64::new(0));
    futures::stream::iter(requests)
        .map(|request| {
            let client = clients.attribution.clone();
            let done = done.clone();
            let phase = phase.clone();
            async move {
                let customer = request.customer_external_id.clone();
                // First touch: tracking a customer again keeps the lead it has.
                retry::idempotent("TrackLead", &client, &request, |mut c, r| async move { c.track_lead(r).await })
                    .await
                    .map_err(rpc(format!("TrackLead {customer}")))?;
                phase.set(done.fetch_add(1, Ordering::Relaxed) + 1);
                Ok::<(), ReplayError>(())
            }
        })
        .buffer_unordered(LEAD_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

pub(super) fn write_config(
    options: &ReplayOptions,
    plan: &Plan,
    created: &Created,
    customers: BTreeMap<String, (usize, DateTime<Utc>)>,
    refund_plan: &RefundPlan,
) -> Result<String, ReplayError> {
    let partner = |index: usize| &created.partners[index];
    let file = ConfigFile {
        generator: config::GeneratorInfo {
            seed: plan.seed,
            data_dir: options.data_dir.display().to_string(),
            limit_invoices: options.limit_invoices,
        },
        program: config::ProgramOut { id: created.program_id.clone(), settings: plan.program.clone() },
        partners: plan
            .partners
            .iter()
            .map(|spec| {
                let p = partner(spec.index);
                config::PartnerOut {
                    id: p.id.clone(),
                    external_id: spec.external_id.clone(),
                    display_name: spec.display_name.clone(),
                    parent_id: spec.parent.map(|i| partner(i).id.clone()),
                    parent_external_id: spec.parent.map(|i| plan.partners[i].external_id.clone()),
                    depth: spec.depth,
                    status: status_name(p.status),
                }
            })
            .collect(),
        links: plan
            .links
            .iter()
            .zip(&created.links)
            .map(|(spec, link)| config::LinkOut {
                id: link.id.clone(),
                key: spec.key.clone(),
                owner_partner_id: partner(spec.owner).id.clone(),
                owner_external_id: plan.partners[spec.owner].external_id.clone(),
                splits: spec
                    .splits
                    .iter()
                    .map(|s| config::SplitOut {
                        partner_id: partner(s.partner).id.clone(),
                        partner_external_id: plan.partners[s.partner].external_id.clone(),
                        basis_points: s.basis_points,
                    })
                    .collect(),
            })
            .collect(),
        agreements: plan
            .agreements
            .iter()
            .zip(&created.agreements)
            .map(|(spec, version)| config::AgreementOut {
                version_id: version.id.clone(),
                agreement_id: version.agreement_id.clone(),
                scope: if spec.partner.is_some() { "partner".into() } else { "program".into() },
                partner_id: spec.partner.map(|i| partner(i).id.clone()),
                partner_external_id: spec.partner.map(|i| plan.partners[i].external_id.clone()),
                version: version.version,
                variant: spec.variant.clone(),
                effective_from: spec.effective_from.clone(),
                description: spec.rules.describe(),
                rules: spec.rules.clone(),
            })
            .collect(),
        agreement_variants: config::variants(plan),
        override_plan: plan.override_plan.clone(),
        customers: customers
            .into_iter()
            .map(|(customer, (link, time))| {
                let out = config::CustomerOut {
                    link_id: created.links[link].id.clone(),
                    link_key: plan.links[link].key.clone(),
                    partner_id: created.links[link].owner_partner_id.clone(),
                    lead_time: time.to_rfc3339(),
                };
                (customer, out)
            })
            .collect(),
        rules: config::rules_summary(),
        refunds: refund_plan.refunds.clone(),
    };
    let path = options.config_out.display().to_string();
    let json = serde_json::to_vec_pretty(&file)
        .map_err(|e| ReplayError::Config { path: path.clone(), message: e.to_string() })?;
    std::fs::write(&options.config_out, json)
        .map_err(|e| ReplayError::Config { path: path.clone(), message: e.to_string() })?;
    Ok(path)
}
