//! The prioritization rules, decisions and escalations against real NATS and PostgreSQL, with the
//! prioritizer's clock moved by the test.

mod common;

use chrono::Duration;
use common::{PARTNER, TENANT, cleared, harness, recommendation, suspicion};
use picket_proto::common::v1::{ActorKind, Severity};
use picket_proto::fixes::v1::{FixApplied, FixFailed, FixFailureReason, FixRequested};
use picket_proto::incidents::v1 as incidents;
use picket_proto::incidents::v1::{IncidentState as State, RecommendationState as Rec};
use picket_testkit::eventually;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn theme_tuesday_launches_the_next_theme_in_the_partners_time_zone() {
    let harness = harness().await;
    // Theme 2 is not launched for a new tenant: its recommendation waits, theme 1's opens.
    harness
        .publish(&recommendation("admins", Severity::High, "admin-accounts"))
        .await;
    harness
        .publish(&recommendation("mfa", Severity::High, "identity-mfa"))
        .await;
    harness.incident("mfa", State::Open).await;
    let waiting = harness
        .recommendation("admins", Rec::ThemeNotLaunched)
        .await;
    assert!(waiting.incident_id.is_empty());
    harness
        .event::<incidents::ThemeLaunched>("the first theme", |launched| launched.theme_order == 1)
        .await;

    // The partner launches on Tuesdays at 07:00 in Amsterdam.
    let update = incidents::UpdatePartnerPolicyRequest {
        partner_id: PARTNER.into(),
        time_zone: Some("Europe/Amsterdam".into()),
        theme_launch_hour: Some(7),
        ..Default::default()
    };
    harness
        .policies
        .clone()
        .update_partner_policy(harness.env.request(&harness.partner(), update))
        .await
        .expect("policy updated");
    let launches = harness
        .policies
        .clone()
        .list_theme_launches(harness.env.request(
            &harness.partner(),
            incidents::ListThemeLaunchesRequest {
                partner_id: PARTNER.into(),
                tenant_id: TENANT.into(),
            },
        ))
        .await
        .expect("launches")
        .into_inner()
        .launches;
    assert!(launches[0].launched_at.is_some());
    let scheduled = launches[1]
        .scheduled_at
        .expect("the second theme is scheduled");
    let zone: chrono_tz::Tz = "Europe/Amsterdam".parse().expect("zone");
    let due = prioritizer::themes::next_launch(harness.clock.now(), zone, 7);
    assert_eq!(scheduled.seconds, due.timestamp());

    // Just before the launch nothing happens; just after, theme 2 goes live and its recommendation opens.
    harness
        .advance(due - harness.clock.now() - Duration::minutes(1))
        .await;
    assert!(
        harness
            .events::<incidents::ThemeLaunched>(|launched| launched.theme_order == 2)
            .is_empty()
    );
    harness.advance(Duration::minutes(2)).await;
    let launched = harness
        .event::<incidents::ThemeLaunched>("the second theme", |launched| launched.theme_order == 2)
        .await;
    assert_eq!(launched.theme_id, "admin-accounts");
    assert_eq!(launched.recommendations_eligible, 1);
    let opened = harness.incident("admins", State::Open).await;
    assert_eq!(
        opened.origin,
        i32::from(incidents::IncidentOrigin::Dequeued)
    );
    // One theme per Tuesday: the timers running again launch nothing more.
    harness.advance(Duration::hours(1)).await;
    assert!(
        harness
            .events::<incidents::ThemeLaunched>(|launched| launched.theme_order == 3)
            .is_empty()
    );
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recommendations_beyond_the_cap_queue_by_severity_then_age_and_open_as_incidents_close() {
    let harness = harness().await;
    for (fingerprint, severity) in [
        ("a", Severity::Low),
        ("b", Severity::Medium),
        ("c", Severity::Low),
        ("d", Severity::Low),
        ("e", Severity::Critical),
    ] {
        harness
            .publish(&recommendation(fingerprint, severity, "identity-mfa"))
            .await;
    }
    harness.recommendation("e", Rec::Queued).await;
    let queue = harness
        .incidents
        .clone()
        .list_queue(harness.env.request(
            &harness.partner(),
            incidents::ListQueueRequest {
                partner_id: PARTNER.into(),
                ..Default::default()
            },
        ))
        .await
        .expect("queue")
        .into_inner()
        .recommendations;
    let order: Vec<(&str, u32)> = queue
        .iter()
        .map(|r| (r.fingerprint.as_str(), r.queue_position))
        .collect();
    assert_eq!(
        order,
        vec![("e", 1), ("d", 2)],
        "critical first, then the oldest"
    );
    assert_eq!(
        harness
            .events::<incidents::RecommendationQueued>(|queued| queued
                .max_open_configuration_incidents
                == 3)
            .len(),
        2
    );

    // A cleared finding resolves its incident by verification and the head of the queue opens.
    harness.publish(&cleared("a")).await;
    let resolved = harness.incident("a", State::Resolved).await;
    assert_eq!(
        resolved.resolution,
        i32::from(incidents::IncidentResolution::Cleared)
    );
    harness.incident("e", State::Open).await;
    harness.recommendation("d", Rec::Queued).await;

    // A larger cap for the partner lets the queue drain at the tenant's next change.
    let update = incidents::UpdatePartnerPolicyRequest {
        partner_id: PARTNER.into(),
        max_open_configuration_incidents: Some(5),
        ..Default::default()
    };
    harness
        .policies
        .clone()
        .update_partner_policy(harness.env.request(&harness.partner(), update))
        .await
        .expect("cap raised");
    harness
        .publish(&recommendation("f", Severity::Low, "identity-mfa"))
        .await;
    harness.incident("d", State::Open).await;
    harness.incident("f", State::Open).await;
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspicious_behaviour_opens_past_theme_and_cap_and_repeats_join_or_reopen() {
    let harness = harness().await;
    let cap = incidents::UpdatePartnerPolicyRequest {
        partner_id: PARTNER.into(),
        max_open_configuration_incidents: Some(1),
        ..Default::default()
    };
    harness
        .policies
        .clone()
        .update_partner_policy(harness.env.request(&harness.partner(), cap))
        .await
        .expect("cap of one");
    harness
        .publish(&recommendation("config", Severity::High, "identity-mfa"))
        .await;
    harness.incident("config", State::Open).await;
    harness.publish(&suspicion("signin", Severity::High)).await;
    let opened = harness.incident("signin", State::Open).await;
    assert_eq!(opened.occurrence_count, 1);

    harness.publish(&suspicion("signin", Severity::High)).await;
    eventually(common::WAIT, "the repeat joined", || async {
        let incident = harness.incident("signin", State::Open).await;
        (incident.occurrence_count == 2).then_some(incident)
    })
    .await;
    assert_eq!(harness.incident_count("signin").await, 1);

    // Resolved, then seen again within the correlation window: the same incident reopens.
    harness.publish(&cleared("signin")).await;
    harness.incident("signin", State::Resolved).await;
    harness.advance(Duration::hours(2)).await;
    harness.publish(&suspicion("signin", Severity::High)).await;
    let reopened = harness.incident("signin", State::Open).await;
    assert_eq!(reopened.incident_id, opened.incident_id);
    harness
        .event::<incidents::IncidentReopened>("the reopening", |event| {
            event
                .incident
                .as_ref()
                .is_some_and(|incident| incident.incident_id == opened.incident_id)
        })
        .await;

    // Past the window a repeat is a new incident.
    harness.publish(&cleared("signin")).await;
    harness.incident("signin", State::Resolved).await;
    harness.advance(Duration::hours(25)).await;
    harness.publish(&suspicion("signin", Severity::High)).await;
    eventually(common::WAIT, "a second incident", || async {
        (harness.incident_count("signin").await == 2).then_some(())
    })
    .await;
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mute_holds_for_four_weeks_and_an_ignore_until_lifted() {
    let harness = harness().await;
    harness
        .publish(&recommendation("muted", Severity::High, "identity-mfa"))
        .await;
    harness
        .publish(&recommendation("ignored", Severity::High, "identity-mfa"))
        .await;
    let muted = harness.incident("muted", State::Open).await;
    let ignored = harness.incident("ignored", State::Open).await;

    let mute = incidents::MuteIncidentRequest {
        incident_id: muted.incident_id.clone(),
        comment: "planned for next quarter".into(),
        expected_version: muted.version,
    };
    let decided = harness
        .incidents
        .clone()
        .mute_incident(harness.env.request(&harness.partner(), mute))
        .await
        .expect("muted")
        .into_inner();
    let incident = decided.incident.expect("incident");
    assert_eq!(incident.state, i32::from(State::Muted));
    let decision = decided.decision.expect("decision");
    let actor = decision.actor.expect("actor");
    assert_eq!(actor.kind, i32::from(ActorKind::Principal));
    assert_eq!(actor.principal.expect("principal").subject, "staff@p1");
    let until = decision.muted_until.expect("mute end").seconds
        - decision.decided_at.expect("when").seconds;
    assert_eq!(until, 28 * 86_400);
    harness.recommendation("muted", Rec::Muted).await;

    let ignore = incidents::IgnoreIncidentRequest {
        incident_id: ignored.incident_id.clone(),
        comment: "accepted risk".into(),
        expected_version: 0,
    };
    harness
        .incidents
        .clone()
        .ignore_incident(harness.env.request(&harness.partner(), ignore))
        .await
        .expect("ignored");
    harness.recommendation("ignored", Rec::Ignored).await;

    // Observed again: neither opens on its own.
    harness
        .publish(&recommendation("muted", Severity::High, "identity-mfa"))
        .await;
    harness
        .publish(&recommendation("ignored", Severity::High, "identity-mfa"))
        .await;
    harness.advance(Duration::days(27)).await;
    assert_eq!(harness.incident_count("muted").await, 1);
    assert_eq!(harness.incident_count("ignored").await, 1);

    // After 28 days the mute ends and the recommendation opens again; the ignore holds.
    harness.advance(Duration::days(2)).await;
    let reopened = eventually(common::WAIT, "a new incident after the mute", || async {
        harness.all_incidents().await.into_iter().find(|incident| {
            incident.fingerprint == "muted" && incident.state == i32::from(State::Open)
        })
    })
    .await;
    assert_ne!(reopened.incident_id, muted.incident_id);
    let kinds: Vec<i32> = harness
        .timeline(&muted.incident_id)
        .await
        .iter()
        .map(|entry| entry.kind)
        .collect();
    assert!(
        kinds.contains(&i32::from(incidents::TimelineEntryKind::MuteExpired)),
        "{kinds:?}"
    );
    assert_eq!(harness.incident_count("ignored").await, 1);

    // Lifting the ignore makes it eligible: it opens as a new incident.
    let unignore = incidents::UnignoreIncidentRequest {
        incident_id: ignored.incident_id.clone(),
        comment: "revisit".into(),
        expected_version: 0,
    };
    let lifted = harness
        .incidents
        .clone()
        .unignore_incident(harness.env.request(&harness.partner(), unignore))
        .await
        .expect("unignored")
        .into_inner();
    assert_eq!(
        lifted.recommendation.expect("recommendation").state,
        i32::from(Rec::InIncident)
    );
    harness.incident("ignored", State::Open).await;
    assert_eq!(harness.incident_count("ignored").await, 2);
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_requests_the_fix_a_failure_reopens_and_an_applied_fix_resolves() {
    let harness = harness().await;
    harness
        .publish(&recommendation("legacy", Severity::High, "identity-mfa"))
        .await;
    let open = harness.incident("legacy", State::Open).await;

    // A stale version is refused.
    let stale = incidents::ApproveIncidentRequest {
        incident_id: open.incident_id.clone(),
        comment: String::new(),
        expected_version: open.version + 7,
    };
    let status = harness
        .incidents
        .clone()
        .approve_incident(harness.env.request(&harness.partner(), stale))
        .await
        .expect_err("stale version");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().starts_with("expected_version"),
        "{}",
        status.message()
    );

    let approve = |comment: &str| incidents::ApproveIncidentRequest {
        incident_id: open.incident_id.clone(),
        comment: comment.into(),
        expected_version: 0,
    };
    let approved = harness
        .incidents
        .clone()
        .approve_incident(harness.env.request(&harness.partner(), approve("go")))
        .await
        .expect("approved")
        .into_inner();
    assert_eq!(
        approved.incident.expect("incident").state,
        i32::from(State::AwaitingFix)
    );
    let request = harness
        .event::<FixRequested>("the fix request", |request| {
            request.incident_id == open.incident_id
        })
        .await;
    assert_eq!(
        request.decision_id,
        approved.decision.expect("decision").decision_id
    );
    assert_eq!(
        request.parameters.get("settingPath").map(String::as_str),
        Some("/policy")
    );

    // Approving again while the fix is pending is refused.
    let again = harness
        .incidents
        .clone()
        .approve_incident(harness.env.request(&harness.partner(), approve("again")))
        .await
        .expect_err("not open");
    assert_eq!(again.code(), Code::FailedPrecondition);

    let failed = FixFailed {
        partner_id: PARTNER.into(),
        tenant_id: TENANT.into(),
        fix_id: request.fix_id.clone(),
        incident_id: open.incident_id.clone(),
        fingerprint: "legacy".into(),
        reason: FixFailureReason::GraphError.into(),
        reason_detail: "Graph answered 503".into(),
        ..Default::default()
    };
    harness.env.publish("scanner", &failed).await;
    let reopened = harness.incident("legacy", State::Open).await;
    assert_eq!(reopened.last_fix_error, "Graph answered 503");

    harness
        .incidents
        .clone()
        .approve_incident(harness.env.request(&harness.partner(), approve("retry")))
        .await
        .expect("approved again");
    let second = harness
        .event::<FixRequested>("the second fix request", |second| {
            second.incident_id == open.incident_id && second.fix_id != request.fix_id
        })
        .await;
    // The first request's late result no longer applies.
    harness
        .env
        .publish(
            "scanner",
            &FixApplied {
                fix_id: request.fix_id.clone(),
                ..applied(&open, &second)
            },
        )
        .await;
    harness
        .env
        .publish("scanner", &applied(&open, &second))
        .await;
    let resolved = harness.incident("legacy", State::Resolved).await;
    assert_eq!(
        resolved.resolution,
        i32::from(incidents::IncidentResolution::Fixed)
    );
    assert_eq!(resolved.fix_id, second.fix_id);

    let kinds: Vec<incidents::TimelineEntryKind> = harness
        .timeline(&open.incident_id)
        .await
        .iter()
        .map(|entry| incidents::TimelineEntryKind::try_from(entry.kind).expect("kind"))
        .collect();
    use incidents::TimelineEntryKind as K;
    assert_eq!(
        kinds,
        vec![
            K::Opened,
            K::Decided,
            K::FixRequested,
            K::FixFailed,
            K::Decided,
            K::FixRequested,
            K::FixApplied,
            K::Resolved
        ]
    );
    harness.stop().await;
}

fn applied(open: &incidents::Incident, request: &FixRequested) -> FixApplied {
    FixApplied {
        partner_id: PARTNER.into(),
        tenant_id: TENANT.into(),
        fix_id: request.fix_id.clone(),
        incident_id: open.incident_id.clone(),
        fingerprint: open.fingerprint.clone(),
        verified: true,
        summary: "legacy authentication blocked".into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_are_refused_to_customers_other_partners_and_bad_requests() {
    let harness = harness().await;
    harness.publish(&suspicion("signin", Severity::High)).await;
    let open = harness.incident("signin", State::Open).await;
    let approve = incidents::ApproveIncidentRequest {
        incident_id: open.incident_id.clone(),
        ..Default::default()
    };
    let customer = harness.env.token(&picket_platform::Principal {
        subject: "contact@customer".into(),
        role: picket_platform::auth::Role::Customer,
        partner_id: Some(PARTNER.into()),
        tenant_ids: vec![TENANT.into()],
    });
    let refused = harness
        .incidents
        .clone()
        .approve_incident(harness.env.request(&customer, approve.clone()))
        .await
        .expect_err("customer without a grant");
    // Without a grant the customer does not even see the incident.
    assert_eq!(refused.code(), Code::NotFound);
    let other = harness
        .incidents
        .clone()
        .approve_incident(
            harness
                .env
                .request(&harness.env.partner_token("p2"), approve),
        )
        .await
        .expect_err("another partner");
    assert_eq!(other.code(), Code::NotFound);
    let malformed = harness
        .incidents
        .clone()
        .mute_incident(harness.env.request(
            &harness.partner(),
            incidents::MuteIncidentRequest {
                incident_id: "nope".into(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("bad id");
    assert!(
        malformed.message().starts_with("incident_id"),
        "{}",
        malformed.message()
    );
    let ignore_suspicion = harness
        .incidents
        .clone()
        .ignore_incident(harness.env.request(
            &harness.partner(),
            incidents::IgnoreIncidentRequest {
                incident_id: open.incident_id.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("suspicious behaviour is never ignored");
    assert_eq!(ignore_suspicion.code(), Code::FailedPrecondition);
    // Nothing was recorded for the refused calls.
    assert_eq!(harness.timeline(&open.incident_id).await.len(), 1);
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partner_opens_by_hand_past_theme_and_cap_and_overrides_a_mute_with_a_reason() {
    let harness = harness().await;
    harness
        .publish(&recommendation("later", Severity::Medium, "admin-accounts"))
        .await;
    harness.recommendation("later", Rec::ThemeNotLaunched).await;
    let open = |fingerprint: &str, override_reason: Option<&str>| incidents::OpenIncidentRequest {
        partner_id: PARTNER.into(),
        tenant_id: TENANT.into(),
        fingerprint: fingerprint.into(),
        override_mute_or_ignore: override_reason.is_some(),
        override_reason: override_reason.unwrap_or_default().into(),
    };
    let opened = harness
        .incidents
        .clone()
        .open_incident(harness.env.request(&harness.partner(), open("later", None)))
        .await
        .expect("opened by hand")
        .into_inner();
    assert!(opened.created);
    let incident = opened.incident.expect("incident");
    assert_eq!(
        incident.origin,
        i32::from(incidents::IncidentOrigin::Manual)
    );
    let again = harness
        .incidents
        .clone()
        .open_incident(harness.env.request(&harness.partner(), open("later", None)))
        .await
        .expect("already open")
        .into_inner();
    assert!(!again.created);
    assert_eq!(
        again.incident.expect("incident").incident_id,
        incident.incident_id
    );

    let mute = incidents::MuteIncidentRequest {
        incident_id: incident.incident_id.clone(),
        ..Default::default()
    };
    harness
        .incidents
        .clone()
        .mute_incident(harness.env.request(&harness.partner(), mute))
        .await
        .expect("muted");
    let refused = harness
        .incidents
        .clone()
        .open_incident(harness.env.request(&harness.partner(), open("later", None)))
        .await
        .expect_err("muted needs an override");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    let mut no_reason = open("later", Some(""));
    no_reason.override_mute_or_ignore = true;
    let invalid = harness
        .incidents
        .clone()
        .open_incident(harness.env.request(&harness.partner(), no_reason))
        .await
        .expect_err("an override needs a reason");
    assert!(
        invalid.message().starts_with("override_reason"),
        "{}",
        invalid.message()
    );
    let overridden = harness
        .incidents
        .clone()
        .open_incident(
            harness
                .env
                .request(&harness.partner(), open("later", Some("auditor asked"))),
        )
        .await
        .expect("overridden")
        .into_inner()
        .incident
        .expect("incident");
    assert_eq!(overridden.override_reason, "auditor asked");
    let unknown = harness
        .incidents
        .clone()
        .open_incident(
            harness
                .env
                .request(&harness.partner(), open("nothing-like-it", None)),
        )
        .await
        .expect_err("unknown fingerprint");
    assert_eq!(unknown.code(), Code::NotFound);
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auto_approve_rule_approves_later_and_open_incidents_of_its_check() {
    let harness = harness().await;
    harness
        .publish(&recommendation("first", Severity::High, "identity-mfa"))
        .await;
    let first = harness.incident("first", State::Open).await;
    let create = incidents::CreateAutoApproveRuleRequest {
        partner_id: PARTNER.into(),
        check_id: "aad.check-first".into(),
        scope: incidents::AutoApproveScope::Tenants.into(),
        tenant_ids: vec![TENANT.into()],
        description: "always block legacy auth".into(),
        apply_to_open_incidents: true,
    };
    let created = harness
        .policies
        .clone()
        .create_auto_approve_rule(harness.env.request(&harness.partner(), create.clone()))
        .await
        .expect("rule created")
        .into_inner();
    let rule = created.rule.expect("rule");
    assert_eq!(
        created.approved_incident_ids,
        vec![first.incident_id.clone()]
    );
    // The partner's rules and policy are its own: a customer contact of its reads neither.
    let customer = harness.env.token(&picket_platform::Principal {
        subject: "contact@customer".into(),
        role: picket_platform::auth::Role::Customer,
        partner_id: Some(PARTNER.into()),
        tenant_ids: vec![TENANT.into()],
    });
    let rules = harness
        .policies
        .clone()
        .list_auto_approve_rules(harness.env.request(
            &customer,
            incidents::ListAutoApproveRulesRequest {
                partner_id: PARTNER.into(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("a customer reads no rules");
    assert_eq!(rules.code(), Code::PermissionDenied);
    let one_rule = harness
        .policies
        .clone()
        .get_auto_approve_rule(harness.env.request(
            &customer,
            incidents::GetAutoApproveRuleRequest {
                rule_id: rule.rule_id.clone(),
            },
        ))
        .await
        .expect_err("nor one of them");
    assert_eq!(one_rule.code(), Code::PermissionDenied);
    let policy = harness
        .policies
        .clone()
        .get_partner_policy(harness.env.request(
            &customer,
            incidents::GetPartnerPolicyRequest {
                partner_id: PARTNER.into(),
            },
        ))
        .await
        .expect_err("nor the partner's policy");
    assert_eq!(policy.code(), Code::PermissionDenied);
    let awaiting = harness.incident("first", State::AwaitingFix).await;
    let decision = awaiting.last_decision.expect("decision");
    assert_eq!(decision.auto_approve_rule_id, rule.rule_id);
    assert_eq!(
        decision.actor.expect("actor").kind,
        i32::from(ActorKind::Rule)
    );

    // A later incident of the check (after the first is fixed and the check fails again) is
    // approved as it opens.
    harness
        .env
        .publish(
            "scanner",
            &applied(
                &first,
                &harness
                    .event::<FixRequested>("first fix", |request| {
                        request.incident_id == first.incident_id
                    })
                    .await,
            ),
        )
        .await;
    harness.incident("first", State::Resolved).await;
    harness
        .publish(&recommendation("first", Severity::High, "identity-mfa"))
        .await;
    let later = harness.incident("first", State::AwaitingFix).await;
    assert_ne!(later.incident_id, first.incident_id);
    harness
        .event::<FixRequested>("the later fix request", |request| {
            request.incident_id == later.incident_id && request.auto_approve_rule_id == rule.rule_id
        })
        .await;
    let read = harness
        .policies
        .clone()
        .get_auto_approve_rule(harness.env.request(
            &harness.partner(),
            incidents::GetAutoApproveRuleRequest {
                rule_id: rule.rule_id.clone(),
            },
        ))
        .await
        .expect("rule")
        .into_inner()
        .rule
        .expect("rule");
    assert_eq!(read.approvals, 2);

    // Listed, hidden from other partners, removed.
    let list = |token: String| {
        let mut policies = harness.policies.clone();
        let request = harness.env.request(
            &token,
            incidents::ListAutoApproveRulesRequest {
                partner_id: PARTNER.into(),
                ..Default::default()
            },
        );
        async move { policies.list_auto_approve_rules(request).await }
    };
    assert_eq!(
        list(harness.partner())
            .await
            .expect("list")
            .into_inner()
            .rules
            .len(),
        1
    );
    assert_eq!(
        list(harness.env.partner_token("p2"))
            .await
            .expect_err("other partner")
            .code(),
        Code::PermissionDenied
    );
    harness
        .policies
        .clone()
        .delete_auto_approve_rule(harness.env.request(
            &harness.partner(),
            incidents::DeleteAutoApproveRuleRequest {
                rule_id: rule.rule_id.clone(),
            },
        ))
        .await
        .expect("removed");
    assert!(
        list(harness.partner())
            .await
            .expect("list")
            .into_inner()
            .rules
            .is_empty()
    );
    let bad = incidents::CreateAutoApproveRuleRequest {
        tenant_ids: Vec::new(),
        ..create
    };
    let status = harness
        .policies
        .clone()
        .create_auto_approve_rule(harness.env.request(&harness.partner(), bad))
        .await
        .expect_err("no tenants");
    assert!(
        status.message().starts_with("tenant_ids"),
        "{}",
        status.message()
    );
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecided_incident_escalates_along_the_order_until_decided() {
    let harness = harness().await;
    harness
        .publish(&suspicion("critical", Severity::Critical))
        .await;
    let open = harness.incident("critical", State::Open).await;
    harness.advance(Duration::minutes(29)).await;
    assert!(
        harness
            .events::<incidents::IncidentEscalated>(|_| true)
            .is_empty()
    );

    harness.advance(Duration::minutes(2)).await;
    let first = harness
        .event::<incidents::IncidentEscalated>("the first step", |event| event.level == 1)
        .await;
    assert_eq!(first.owner.expect("owner").owner_id, "msp-soc-analyst");
    assert!(first.next_escalation_at.is_some());
    harness.advance(Duration::minutes(31)).await;
    let second = harness
        .event::<incidents::IncidentEscalated>("the second step", |event| event.level == 2)
        .await;
    assert_eq!(
        second.owner.expect("owner").owner_id,
        "msp-security-manager"
    );
    assert!(second.next_escalation_at.is_none(), "the last step");
    let escalated = harness.incident("critical", State::Open).await;
    assert_eq!(escalated.escalation_level, 2);

    // A decided incident escalates no further.
    harness
        .incidents
        .clone()
        .approve_incident(harness.env.request(
            &harness.partner(),
            incidents::ApproveIncidentRequest {
                incident_id: open.incident_id.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("approved");
    harness.advance(Duration::hours(3)).await;
    assert_eq!(
        harness
            .events::<incidents::IncidentEscalated>(|_| true)
            .len(),
        2
    );
    harness.stop().await;
}
