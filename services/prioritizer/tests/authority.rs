//! The authority map through the prioritizer's API on real PostgreSQL and NATS: the standard map
//! and its gaps, a partner's deviation with its history, decisions refused and accepted by the
//! map, customer grants, and the worksheet.

use picket_platform::auth::{Principal, Role};
use picket_proto::common::v1::Severity;
use picket_proto::incidents::v1 as incidents;
use picket_proto::incidents::v1::IncidentState as State;
use picket_proto::incidents::v1::authority_service_client::AuthorityServiceClient;
use tonic::Code;
use tonic::transport::Channel;

mod common;
use common::{PARTNER, TENANT, harness, suspicion};

async fn authority(harness: &common::Harness) -> AuthorityServiceClient<Channel> {
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", harness.app.grpc_address()))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
    AuthorityServiceClient::new(channel)
}

fn person(role: Role, subject: &str) -> Principal {
    Principal {
        subject: subject.into(),
        role,
        partner_id: Some(PARTNER.into()),
        tenant_ids: if role == Role::Customer {
            vec![TENANT.into()]
        } else {
            Vec::new()
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_follow_the_partners_map_and_its_grants() {
    let harness = harness().await;
    let mut client = authority(&harness).await;
    let partner = harness.partner();

    // The standard map applies: its gaps are the MSP contacts to fill in.
    let standard = client
        .get_authority_map(harness.env.request(
            &partner,
            incidents::GetAuthorityMapRequest {
                partner_id: PARTNER.into(),
                tenant_id: TENANT.into(),
            },
        ))
        .await
        .expect("map")
        .into_inner();
    let mut map = standard.map.expect("map");
    assert!(map.standard);
    assert!(!standard.tenant_deviation);
    let gaps = client
        .validate_authority_map(harness.env.request(
            &partner,
            incidents::ValidateAuthorityMapRequest {
                partner_id: PARTNER.into(),
                ..Default::default()
            },
        ))
        .await
        .expect("validated")
        .into_inner()
        .gaps;
    assert!(
        gaps.iter()
            .any(|gap| gap.kind() == incidents::GapKind::UnreachableOwner)
    );

    // The partner reserves critical approvals to its CISO.
    map.owners.push(incidents::AuthorityOwner {
        owner_id: "msp-ciso".into(),
        party: incidents::Party::Msp.into(),
        role_name: "CISO".into(),
        display_name: "MSP CISO".into(),
        contacts: vec![incidents::Contact {
            contact_id: "ciso-phone".into(),
            channel: incidents::ContactChannel::Phone.into(),
            address: "+4930123456".into(),
            principal_subject: "ciso@p1".into(),
            ..Default::default()
        }],
        ..Default::default()
    });
    map.decision_rules = vec![
        incidents::DecisionRule {
            rule_id: "msp-below-critical".into(),
            parties: vec![incidents::Party::Msp.into()],
            severities: vec![
                Severity::Low.into(),
                Severity::Medium.into(),
                Severity::High.into(),
            ],
            ..Default::default()
        },
        incidents::DecisionRule {
            rule_id: "ciso-critical".into(),
            owner_ids: vec!["msp-ciso".into()],
            severities: vec![Severity::Critical.into()],
            ..Default::default()
        },
        incidents::DecisionRule {
            rule_id: "customer-with-grant".into(),
            parties: vec![incidents::Party::Customer.into()],
            ..Default::default()
        },
    ];
    let update = |map: incidents::AuthorityMap, expected_version: u64| {
        harness.env.request(
            &partner,
            incidents::UpdateAuthorityMapRequest {
                partner_id: PARTNER.into(),
                map: Some(map),
                expected_version,
                comment: "critical approvals are the CISO's".into(),
                ..Default::default()
            },
        )
    };
    let saved = client
        .update_authority_map(update(map.clone(), 0))
        .await
        .expect("saved")
        .into_inner()
        .map
        .expect("map");
    assert_eq!(saved.version, 1);
    assert!(!saved.standard);
    let stale = client
        .update_authority_map(update(map.clone(), 0))
        .await
        .expect_err("stale version");
    assert_eq!(stale.code(), Code::Aborted);
    let history = client
        .list_authority_map_history(harness.env.request(
            &partner,
            incidents::ListAuthorityMapHistoryRequest {
                partner_id: PARTNER.into(),
                ..Default::default()
            },
        ))
        .await
        .expect("history")
        .into_inner()
        .changes;
    assert_eq!(history.len(), 1);
    assert!(
        history[0]
            .differences
            .iter()
            .any(|line| line.contains("msp-ciso added"))
    );
    let actor = history[0].changed_by.as_ref().expect("who");
    assert_eq!(
        actor.principal.as_ref().expect("principal").subject,
        "staff@p1"
    );

    // A critical incident: the analyst may not approve it, the CISO may.
    harness
        .publish(&suspicion("token-theft", Severity::Critical))
        .await;
    let incident = harness.incident("token-theft", State::Open).await;
    let approve = || incidents::ApproveIncidentRequest {
        incident_id: incident.incident_id.clone(),
        comment: "contain".into(),
        expected_version: incident.version,
    };
    let analyst = harness.env.token(&person(Role::Partner, "soc@p1"));
    let refused = harness
        .incidents
        .clone()
        .approve_incident(harness.env.request(&analyst, approve()))
        .await
        .expect_err("not the CISO");
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(
        refused.message().contains("version 1"),
        "{}",
        refused.message()
    );
    // A customer contact needs a grant first.
    let customer = harness.env.token(&person(Role::Customer, "it@contoso"));
    let check = |principal: &Principal| incidents::CheckDecisionAuthorityRequest {
        incident_id: incident.incident_id.clone(),
        decision: incidents::DecisionKind::Approve.into(),
        principal: Some(principal.to_proto()),
    };
    let before = client
        .check_decision_authority(
            harness
                .env
                .request(&partner, check(&person(Role::Customer, "it@contoso"))),
        )
        .await
        .expect("checked")
        .into_inner();
    assert!(!before.allowed, "{}", before.reason);
    let grant = client
        .grant_customer_access(harness.env.request(
            &partner,
            incidents::GrantCustomerAccessRequest {
                partner_id: PARTNER.into(),
                tenant_id: TENANT.into(),
                customer_subject: "it@contoso".into(),
                email: "it@contoso.example".into(),
                severities: vec![Severity::Critical.into()],
                ..Default::default()
            },
        ))
        .await
        .expect("granted")
        .into_inner()
        .grant
        .expect("grant");
    let after = client
        .check_decision_authority(
            harness
                .env
                .request(&partner, check(&person(Role::Customer, "it@contoso"))),
        )
        .await
        .expect("checked")
        .into_inner();
    assert!(after.allowed, "{}", after.reason);
    assert!(after.authority_basis.contains(&grant.grant_id));
    let read = |token: &str| {
        let mut incidents = harness.incidents.clone();
        let request = harness.env.request(
            token,
            incidents::GetIncidentRequest {
                incident_id: incident.incident_id.clone(),
            },
        );
        async move { incidents.get_incident(request).await }
    };
    read(&customer)
        .await
        .expect("the granted customer reads it");
    client
        .revoke_customer_access(harness.env.request(
            &partner,
            incidents::RevokeCustomerAccessRequest {
                grant_id: grant.grant_id.clone(),
                reason: "left the company".into(),
            },
        ))
        .await
        .expect("revoked");
    // The revocation ends access at once, though the customer's token still names the tenant.
    let unread = read(&customer).await.expect_err("the grant was revoked");
    assert_eq!(unread.code(), Code::NotFound);
    let unchecked = client
        .check_decision_authority(harness.env.request(
            &customer,
            incidents::CheckDecisionAuthorityRequest {
                incident_id: incident.incident_id.clone(),
                decision: incidents::DecisionKind::Approve.into(),
                principal: None,
            },
        ))
        .await
        .expect_err("nor asks about it");
    assert_eq!(unchecked.code(), Code::NotFound);
    let refused = harness
        .incidents
        .clone()
        .approve_incident(harness.env.request(&customer, approve()))
        .await
        .expect_err("the grant was revoked");
    assert_eq!(refused.code(), Code::NotFound);
    let ciso = harness.env.token(&person(Role::Partner, "ciso@p1"));
    let approved = harness
        .incidents
        .clone()
        .approve_incident(harness.env.request(&ciso, approve()))
        .await
        .expect("the CISO approves")
        .into_inner();
    let decision = approved.decision.expect("decision");
    assert!(
        decision.authority_basis.contains("ciso-critical"),
        "{}",
        decision.authority_basis
    );

    // An auto-approve rule approves in its creator's name: staff whom the map does not let approve
    // this critical check cannot set one up for it; the CISO can.
    let rule = incidents::CreateAutoApproveRuleRequest {
        partner_id: PARTNER.into(),
        check_id: incident.check_id.clone(),
        scope: incidents::AutoApproveScope::Tenants.into(),
        tenant_ids: vec![TENANT.into()],
        description: "approve it always".into(),
        apply_to_open_incidents: false,
    };
    let bypass = harness
        .policies
        .clone()
        .create_auto_approve_rule(harness.env.request(&partner, rule.clone()))
        .await
        .expect_err("staff may not approve critical incidents");
    assert_eq!(bypass.code(), Code::PermissionDenied);
    assert!(
        bypass
            .message()
            .starts_with("an auto-approve rule approves in its creator's name"),
        "{}",
        bypass.message()
    );
    harness
        .policies
        .clone()
        .create_auto_approve_rule(harness.env.request(&ciso, rule))
        .await
        .expect("the CISO may");

    // Another partner can neither read nor change the map; a bad map names its field.
    let stranger = client
        .get_authority_map(harness.env.request(
            &harness.env.partner_token("p2"),
            incidents::GetAuthorityMapRequest {
                partner_id: PARTNER.into(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("not p2's");
    assert_eq!(stranger.code(), Code::PermissionDenied);
    let mut bad = map.clone();
    bad.owners.push(incidents::AuthorityOwner {
        owner_id: "msp-ciso".into(),
        party: incidents::Party::Msp.into(),
        ..Default::default()
    });
    let invalid = client
        .update_authority_map(update(bad, 1))
        .await
        .expect_err("defined twice");
    assert_eq!(invalid.code(), Code::InvalidArgument);
    assert!(
        invalid.message().starts_with("map.owners["),
        "{}",
        invalid.message()
    );

    // The worksheet of the partner's map, and back to the standard.
    let worksheet = client
        .export_authority_worksheet(harness.env.request(
            &partner,
            incidents::ExportAuthorityWorksheetRequest {
                partner_id: PARTNER.into(),
                format: incidents::WorksheetFormat::Csv.into(),
                ..Default::default()
            },
        ))
        .await
        .expect("exported")
        .into_inner();
    assert_eq!(worksheet.content_type, "text/csv");
    let csv = String::from_utf8(worksheet.content).expect("UTF-8");
    assert_eq!(
        csv.lines().count(),
        6,
        "a header and one row per stage: {csv}"
    );
    let reset = client
        .reset_authority_map(harness.env.request(
            &partner,
            incidents::ResetAuthorityMapRequest {
                partner_id: PARTNER.into(),
                comment: "back to the standard".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("reset")
        .into_inner()
        .map
        .expect("map");
    assert!(reset.standard);
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escalation_follows_the_maps_order_and_times() {
    let harness = harness().await;
    let mut client = authority(&harness).await;
    let partner = harness.partner();
    let mut map = client
        .get_standard_authority_map(
            harness
                .env
                .request(&partner, incidents::GetStandardAuthorityMapRequest {}),
        )
        .await
        .expect("standard")
        .into_inner()
        .map
        .expect("map");
    // Critical incidents: the security manager after 10 minutes, then the vendor IR firm after 25.
    map.owners.push(incidents::AuthorityOwner {
        owner_id: "vendor-ir".into(),
        party: incidents::Party::Vendor.into(),
        role_name: "Incident response".into(),
        display_name: "IR firm hotline".into(),
        vendor_name: "Example IR".into(),
        contacts: vec![incidents::Contact {
            contact_id: "ir-hotline".into(),
            channel: incidents::ContactChannel::Phone.into(),
            address: "+4930999999".into(),
            ..Default::default()
        }],
    });
    let step = |order: u32, owner_id: &str, minutes: u64| incidents::EscalationStep {
        order,
        owner_id: owner_id.into(),
        channels: Vec::new(),
        after: Some(picket_platform::time::to_duration(
            std::time::Duration::from_secs(minutes * 60),
        )),
    };
    for policy in map
        .escalations
        .iter_mut()
        .filter(|policy| policy.severity() == Severity::Critical)
    {
        policy.steps = vec![
            step(1, "msp-security-manager", 10),
            step(2, "vendor-ir", 25),
        ];
    }
    client
        .update_authority_map(harness.env.request(
            &partner,
            incidents::UpdateAuthorityMapRequest {
                partner_id: PARTNER.into(),
                tenant_id: TENANT.into(),
                map: Some(map),
                comment: "critical incidents go to the IR firm".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("saved");

    harness
        .publish(&suspicion("ransomware", Severity::Critical))
        .await;
    harness.incident("ransomware", State::Open).await;
    harness.advance(chrono::Duration::minutes(9)).await;
    assert!(
        harness
            .events::<incidents::IncidentEscalated>(|_| true)
            .is_empty(),
        "not before the map's first time"
    );
    harness.advance(chrono::Duration::minutes(2)).await;
    let first = harness
        .event::<incidents::IncidentEscalated>("the first step", |event| event.level == 1)
        .await;
    assert_eq!(first.owner.expect("owner").owner_id, "msp-security-manager");
    assert_eq!(first.authority_map_version, 1);
    harness.advance(chrono::Duration::minutes(10)).await;
    assert!(
        harness
            .events::<incidents::IncidentEscalated>(|event| event.level == 2)
            .is_empty(),
        "the second step fires 25 minutes after the opening"
    );
    harness.advance(chrono::Duration::minutes(5)).await;
    let second = harness
        .event::<incidents::IncidentEscalated>("the second step", |event| event.level == 2)
        .await;
    let owner = second.owner.expect("owner");
    assert_eq!(owner.owner_id, "vendor-ir");
    assert_eq!(owner.vendor_name, "Example IR");
    harness.stop().await;
}
