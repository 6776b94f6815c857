//! Scans against graph-sim and the real NATS and PostgreSQL: every check and detection passes on a
//! hardened tenant and fails on a weak one, licences gate checks, only changes are published, and
//! fixes are applied once, verified, or refused with the reason.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::fixing::{Events, FixHarness, PARTNER, connect_with_profile, fix_for, outcome};
use common::{Harness, harness, harness_with};
use futures::StreamExt;
use graph_sim::{Licence, Profile, SimConfig};
use picket_proto::findings::v1 as findings;
use picket_proto::fixes::v1 as fixes;
use picket_proto::tenants::v1 as tenants;
use picket_testkit::eventually;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_check_passes_on_a_hardened_tenant_and_fails_on_a_weak_one() {
    let mut harness = harness().await;
    let hardened = connect_with_profile(
        &mut harness,
        0,
        Profile::hardened(Licence::P2),
        tenants::SubscriptionPlan::Premium,
    )
    .await;
    let weak = connect_with_profile(
        &mut harness,
        1,
        Profile::weak(Licence::P2),
        tenants::SubscriptionPlan::Premium,
    )
    .await;

    for tenant_id in [&hardened, &weak] {
        let scans = harness.settled_scans(PARTNER, tenant_id).await;
        let first = scans.last().expect("the onboarding scan");
        assert_eq!(first.trigger(), tenants::ScanTrigger::Onboarding);
        assert_eq!(first.kind(), tenants::ScanKind::Full);
        assert_eq!(
            first.state(),
            tenants::ScanState::Succeeded,
            "{:?}",
            first.errors
        );
    }
    let passing = harness.results(PARTNER, &hardened).await;
    let failing = harness.results(PARTNER, &weak).await;
    assert!(passing.len() >= 25 + 10, "{} checks", passing.len());
    for (check_id, result) in &passing {
        assert_eq!(
            outcome(result),
            tenants::CheckOutcome::Passed,
            "{check_id} on the hardened tenant: {}",
            result.detail
        );
    }
    for (check_id, result) in &failing {
        assert_eq!(
            outcome(result),
            tenants::CheckOutcome::Failed,
            "{check_id} on the weak tenant: {}",
            result.detail
        );
    }
    harness.finish().await;
}

/// Users of `microsoft_tenant` with an inbox rule whose actions hold `action`.
fn users_with_rule(
    harness: &Harness,
    microsoft_tenant: &str,
    action: &str,
) -> Vec<(String, String)> {
    let users = harness
        .sim
        .resource(microsoft_tenant, "/users")
        .expect("users");
    users
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|user| {
            let id = user["id"].as_str()?;
            let rules = harness.sim.resource(
                microsoft_tenant,
                &format!("/users/{id}/mailFolders/inbox/messageRules"),
            )?;
            let upn = user["userPrincipalName"].as_str()?;
            rules
                .as_array()?
                .iter()
                .any(|rule| !rule["actions"][action].is_null())
                .then(|| (id.to_owned(), upn.to_owned()))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mailbox_the_app_may_not_read_is_named_and_the_others_are_still_read() {
    let mut harness = harness().await;
    let microsoft_tenant = harness.sim.tenant_ids()[0].clone();
    harness
        .sim
        .reset_tenant(&microsoft_tenant, Profile::weak(Licence::P2));
    // An application access policy keeps Picket from the mailbox that forwards mail outside.
    let [(forwarder, forwarder_upn)] = users_with_rule(&harness, &microsoft_tenant, "forwardTo")
        .try_into()
        .expect("one forwarding mailbox");
    harness.sim.deny_mailbox(&microsoft_tenant, &forwarder);
    let mut observed =
        Events::<findings::FindingObserved>::subscribe(&harness, "findings.v1.finding_observed")
            .await;
    let tenant_id = harness
        .connect(
            PARTNER,
            &microsoft_tenant,
            tenants::SubscriptionPlan::Premium,
        )
        .await;
    let scans = harness.settled_scans(PARTNER, &tenant_id).await;
    let scan = scans.last().expect("the onboarding scan");
    assert_eq!(
        scan.errors
            .iter()
            .map(|error| (error.resource.as_str(), error.http_status))
            .collect::<Vec<_>>(),
        [(
            format!("GET /users/{{id}}/mailFolders/inbox/messageRules of {forwarder_upn}").as_str(),
            403
        )],
        "the one mailbox is named, nothing else failed"
    );
    let results = harness.results(PARTNER, &tenant_id).await;
    // The mail-hiding rule of another mailbox, moving mail to RSS Feeds (a folder with no
    // well-known name, found by the rule's target id), is still found.
    let hiding = &results["mon.inbox-rule-hides-mail"];
    assert_eq!(
        outcome(hiding),
        tenants::CheckOutcome::Failed,
        "{}",
        hiding.detail
    );
    assert_eq!(
        observed
            .evidence("mon.inbox-rule-hides-mail", "action")
            .await,
        ["move to RSS Feeds"]
    );
    // No request named a folder Graph does not know by name.
    let malformed: Vec<_> = harness
        .sim
        .requests()
        .into_iter()
        .filter(|request| request.status == 400)
        .map(|request| request.path)
        .collect();
    assert!(malformed.is_empty(), "{malformed:?}");
    harness.finish().await;
}

/// A Global Administrator through PIM is one activation away from the role: eligibility counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_administrators_eligible_through_pim_are_counted() {
    let mut harness = harness().await;
    let microsoft_tenant = harness.sim.tenant_ids()[0].clone();
    harness
        .sim
        .reset_tenant(&microsoft_tenant, Profile::hardened(Licence::P2));
    // Three active Global Administrators, and six more eligible: nine in all.
    let users = harness
        .sim
        .resource(&microsoft_tenant, "/users")
        .expect("users");
    let eligible: Vec<serde_json::Value> = (6..12)
        .map(|user| {
            serde_json::json!({
                "id": format!("eligibility-{user}"),
                "principalId": users[user]["id"],
                "roleDefinitionId": graph_sim::GLOBAL_ADMINISTRATOR,
                "directoryScopeId": "/",
                "appScopeId": null,
                "startDateTime": "2026-01-01T00:00:00Z",
                "endDateTime": null,
                "memberType": "Direct",
                "roleEligibilityScheduleId": format!("schedule-{user}"),
            })
        })
        .collect();
    harness.sim.set_resource(
        &microsoft_tenant,
        "/roleManagement/directory/roleEligibilityScheduleInstances",
        serde_json::Value::Array(eligible),
    );
    let mut observed =
        Events::<findings::FindingObserved>::subscribe(&harness, "findings.v1.finding_observed")
            .await;
    let tenant_id = harness
        .connect(
            PARTNER,
            &microsoft_tenant,
            tenants::SubscriptionPlan::Premium,
        )
        .await;
    harness.settled_scans(PARTNER, &tenant_id).await;
    let results = harness.results(PARTNER, &tenant_id).await;
    let count = &results["aad.global-admin-count"];
    assert_eq!(
        outcome(count),
        tenants::CheckOutcome::Failed,
        "{}",
        count.detail
    );
    for (key, expected) in [
        ("globalAdministrators", "9"),
        ("ofWhichEligibleThroughPim", "6"),
    ] {
        assert_eq!(
            observed.evidence("aad.global-admin-count", key).await,
            [expected],
            "{key}"
        );
    }
    harness.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_needing_a_licence_the_tenant_lacks_are_not_applicable() {
    let mut harness = harness().await;
    let tenant_id = connect_with_profile(
        &mut harness,
        0,
        Profile::weak(Licence::Free),
        tenants::SubscriptionPlan::Standard,
    )
    .await;
    harness.settled_scans(PARTNER, &tenant_id).await;
    let results = harness.results(PARTNER, &tenant_id).await;

    for check_id in [
        "aad.legacy-auth-blocked",
        "aad.high-risk-users-blocked",
        "mon.mfa-fatigue",
        "mon.high-risk-user",
        "mon.defender-device-alert",
    ] {
        assert_eq!(
            outcome(&results[check_id]),
            tenants::CheckOutcome::NotApplicable,
            "{check_id}"
        );
    }
    // Without conditional access, security defaults are the only protection left.
    assert_eq!(
        outcome(&results["aad.security-defaults-or-ca"]),
        tenants::CheckOutcome::Failed
    );
    let premium_reads = harness
        .sim
        .requests()
        .into_iter()
        .filter(|request| {
            request.path.contains("/auditLogs/signIns")
                || request.path.contains("/identity/conditionalAccess")
                || request.path.contains("/identityProtection")
        })
        .count();
    assert_eq!(
        premium_reads, 0,
        "no premium endpoint is read for a free tenant"
    );
    harness.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rescan_publishes_only_changes_and_clears_what_was_fixed() {
    let mut harness = harness().await;
    let mut observed =
        Events::<findings::FindingObserved>::subscribe(&harness, "findings.v1.finding_observed")
            .await;
    let mut cleared =
        Events::<findings::FindingCleared>::subscribe(&harness, "findings.v1.finding_cleared")
            .await;
    let microsoft_tenant = harness.sim.tenant_ids()[0].clone();
    let tenant_id = connect_with_profile(
        &mut harness,
        0,
        Profile::weak(Licence::P1),
        tenants::SubscriptionPlan::Standard,
    )
    .await;
    harness.settled_scans(PARTNER, &tenant_id).await;
    let first: Vec<findings::FindingObserved> =
        observed.drain(Duration::from_secs(3)).await.to_vec();
    assert!(first.len() >= 20, "{} findings", first.len());
    let fingerprints: BTreeMap<&str, &str> = first
        .iter()
        .map(|finding| (finding.check_id.as_str(), finding.fingerprint.as_str()))
        .collect();

    // The customer's admin fixes one setting by hand, then a scan runs on demand.
    let mut policy = harness
        .sim
        .resource(&microsoft_tenant, "/policies/authorizationPolicy")
        .expect("policy");
    policy["defaultUserRolePermissions"]["allowedToCreateApps"] = false.into();
    harness
        .sim
        .set_resource(&microsoft_tenant, "/policies/authorizationPolicy", policy);
    let rescan = harness.rescan(PARTNER, &tenant_id).await;
    assert_eq!(rescan.trigger(), tenants::ScanTrigger::OnDemand);
    assert_eq!(rescan.findings_observed, 0, "nothing new failed");
    assert_eq!(rescan.findings_cleared, 1);
    assert_eq!(
        observed.drain(Duration::from_secs(2)).await.len(),
        first.len()
    );
    let cleared = cleared.drain(Duration::from_secs(2)).await;
    assert_eq!(cleared.len(), 1);
    assert_eq!(cleared[0].check_id, "aad.users-cannot-register-apps");
    assert_eq!(
        cleared[0].fingerprint, fingerprints["aad.users-cannot-register-apps"],
        "the fingerprint is stable across scans"
    );
    harness.finish().await;
}

/// A FixRequested for the finding of `check_id`, as the prioritizer sends after an approval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_setting_fix_is_applied_once_and_verified() {
    let mut fixing = FixHarness::start(Profile::weak(Licence::P2)).await;
    let finding = fixing.finding("aad.users-cannot-register-apps", "");
    let fix = fix_for(&finding, "00000000-0000-4000-8000-000000000001");

    fixing.request(&fix).await;
    let applied = fixing.applied(&fix.fix_id).await;
    assert!(applied.verified);
    assert!(!applied.already_compliant);
    let policy = fixing
        .harness
        .sim
        .resource(&fixing.microsoft_tenant, "/policies/authorizationPolicy")
        .expect("policy");
    assert_eq!(
        policy["defaultUserRolePermissions"]["allowedToCreateApps"],
        false
    );

    // The same fix requested again (a retry upstream) changes nothing and answers nothing new.
    let writes_before = fixing
        .harness
        .sim
        .requests()
        .iter()
        .filter(|request| request.method != "GET")
        .count();
    fixing.request(&fix).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let answers = fixing.applied.drain(Duration::from_secs(1)).await;
    assert_eq!(
        answers
            .iter()
            .filter(|event| event.fix_id == fix.fix_id)
            .count(),
        1
    );
    let writes_after = fixing
        .harness
        .sim
        .requests()
        .iter()
        .filter(|request| request.method != "GET")
        .count();
    assert_eq!(writes_before, writes_after, "nothing was written twice");
    fixing.harness.finish().await;
}

/// An authentication method configuration is of an abstract type: Graph takes a write only with
/// the derived type named in `@odata.type`, and graph-sim refuses one without it as Graph does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_method_fixes_name_the_configurations_type() {
    let mut fixing = FixHarness::start(Profile::weak(Licence::P2)).await;
    let configurations = "/policies/authenticationMethodsPolicy/authenticationMethodConfigurations";
    for (index, (check_id, method, odata_type)) in [
        (
            "aad.sms-sign-in-disabled",
            "Sms",
            "smsAuthenticationMethodConfiguration",
        ),
        (
            "aad.voice-call-disabled",
            "Voice",
            "voiceAuthenticationMethodConfiguration",
        ),
        (
            "aad.email-otp-disabled",
            "Email",
            "emailAuthenticationMethodConfiguration",
        ),
        (
            "aad.authenticator-shows-context",
            "MicrosoftAuthenticator",
            "microsoftAuthenticatorAuthenticationMethodConfiguration",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let fix = fix_for(
            &fixing.finding(check_id, ""),
            &format!("00000000-0000-4000-8000-00000000010{index}"),
        );
        fixing.request(&fix).await;
        let applied = fixing.applied(&fix.fix_id).await;
        assert!(applied.verified, "{check_id}");
        let configuration = fixing
            .harness
            .sim
            .resource(&fixing.microsoft_tenant, configurations)
            .and_then(|all| {
                all.as_array()?
                    .iter()
                    .find(|configuration| configuration["id"] == method)
                    .cloned()
            })
            .expect("the configuration");
        assert_eq!(
            configuration["@odata.type"],
            format!("#microsoft.graph.{odata_type}"),
            "{check_id}"
        );
    }
    // Without the type, graph-sim answers as Graph does.
    let refused = fixing
        .harness
        .sim
        .requests()
        .into_iter()
        .filter(|request| request.method == "PATCH" && request.status == 400)
        .count();
    assert_eq!(refused, 0, "every write named its type");
    fixing.harness.finish().await;
}

/// A new conditional access policy is created in report-only mode; enforcing it is a second
/// recommendation, with its own fingerprint, approved on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_policy_is_created_report_only_and_enforced_as_a_second_step() {
    let mut fixing = FixHarness::start(Profile::weak(Licence::P2)).await;
    let check_id = "aad.legacy-auth-blocked";
    let name = "Block legacy authentication (Picket)";
    let finding = fixing.finding(check_id, "");
    let create = fix_for(&finding, "00000000-0000-4000-8000-000000000002");
    let policy = |fixing: &FixHarness| {
        fixing
            .harness
            .sim
            .resource(
                &fixing.microsoft_tenant,
                "/identity/conditionalAccess/policies",
            )
            .expect("policies")
            .as_array()
            .expect("a collection")
            .iter()
            .find(|policy| policy["displayName"] == name)
            .cloned()
    };

    fixing.request(&create).await;
    let applied = fixing.applied(&create.fix_id).await;
    assert!(applied.verified, "{}", applied.summary);
    let created = policy(&fixing).expect("the policy was created");
    assert_eq!(created["state"], "enabledForReportingButNotEnforced");
    assert_eq!(
        created["conditions"]["users"]["excludeUsers"]
            .as_array()
            .map(Vec::len),
        Some(2),
        "the break-glass accounts are excluded"
    );

    // The next scan clears the first recommendation and makes the second.
    let rescan = fixing.harness.rescan(PARTNER, &fixing.tenant_id).await;
    assert_eq!(rescan.findings_cleared, 1, "{rescan:?}");
    let enforce = fixing
        .observed
        .drain(Duration::from_secs(2))
        .await
        .iter()
        .find(|observed| observed.check_id == check_id && observed.target == name)
        .expect("the recommendation to enforce")
        .clone();
    assert_ne!(enforce.fingerprint, finding.fingerprint);
    assert_eq!(
        enforce.fix_action(),
        fixes::FixAction::EnableConditionalAccessPolicy
    );
    assert!(
        enforce.recommended_fix.starts_with("Enforce"),
        "{}",
        enforce.recommended_fix
    );
    assert_eq!(enforce.evidence["reportOnlyPolicy"], name);

    let enforcing = fix_for(&enforce, "00000000-0000-4000-8000-000000000003");
    fixing.request(&enforcing).await;
    let applied = fixing.applied(&enforcing.fix_id).await;
    assert!(applied.verified, "{}", applied.summary);
    assert_eq!(policy(&fixing).expect("the policy")["state"], "enabled");
    fixing.harness.rescan(PARTNER, &fixing.tenant_id).await;
    let results = fixing.harness.results(PARTNER, &fixing.tenant_id).await;
    assert_eq!(
        outcome(&results[check_id]),
        tenants::CheckOutcome::Passed,
        "{}",
        results[check_id].detail
    );
    fixing.harness.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containment_fixes_remove_the_rule_and_isolate_the_device() {
    let mut fixing = FixHarness::start(Profile::weak(Licence::P2)).await;
    let rule = fixing.finding("mon.inbox-rule-external-forward", "");
    let device = fixing.finding("mon.defender-device-alert", "");
    let delete = fix_for(&rule, "00000000-0000-4000-8000-000000000003");
    let isolate = fix_for(&device, "00000000-0000-4000-8000-000000000004");

    fixing.request(&delete).await;
    fixing.request(&isolate).await;
    let deleted = fixing.applied(&delete.fix_id).await;
    let isolated = fixing.applied(&isolate.fix_id).await;

    assert!(deleted.verified && isolated.verified);
    let user_id = &rule.fix_parameters["userId"];
    let rules = fixing.harness.sim.resource(
        &fixing.microsoft_tenant,
        &format!("/users/{user_id}/mailFolders/inbox/messageRules"),
    );
    assert!(
        rules
            .and_then(|rules| rules.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .all(|existing| existing["id"].as_str() != Some(&rule.fix_parameters["ruleId"]))
    );
    let actions = fixing
        .harness
        .sim
        .resource(&fixing.microsoft_tenant, "/api/machineactions")
        .expect("machine actions");
    assert_eq!(actions[0]["type"], "Isolate");
    fixing.harness.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabling_a_break_glass_or_synced_account_is_refused_with_the_reason() {
    let mut fixing = FixHarness::start(Profile::weak(Licence::P2)).await;
    let risky = fixing.finding("mon.high-risk-user", "");
    let users = fixing
        .harness
        .sim
        .resource(&fixing.microsoft_tenant, "/users")
        .expect("users");
    let user_id = |number: usize| users[number]["id"].as_str().expect("id").to_owned();
    let mut break_glass = fix_for(&risky, "00000000-0000-4000-8000-000000000005");
    break_glass.parameters.insert("userId".into(), user_id(0));
    // The weak profile synchronises user 5 from on-premises.
    let mut synced = fix_for(&risky, "00000000-0000-4000-8000-000000000006");
    synced.parameters.insert("userId".into(), user_id(5));

    fixing.request(&break_glass).await;
    fixing.request(&synced).await;
    let refused_break_glass = fixing.failed(&break_glass.fix_id).await;
    let refused_synced = fixing.failed(&synced.fix_id).await;

    assert_eq!(
        refused_break_glass.reason(),
        fixes::FixFailureReason::RefusedBreakGlass
    );
    assert_eq!(
        refused_synced.reason(),
        fixes::FixFailureReason::RefusedOnPremisesSynced
    );
    assert!(!refused_synced.retryable);
    let users_after = fixing
        .harness
        .sim
        .resource(&fixing.microsoft_tenant, "/users")
        .expect("users");
    assert_eq!(users_after[0]["accountEnabled"], true);
    assert_eq!(users_after[5]["accountEnabled"], true);
    fixing.harness.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitoring_polls_run_on_schedule_and_read_overlapping_windows() {
    let mut harness = harness_with(
        SimConfig::default(),
        "monitoring_interval = \"1s\"\nschedule_tick = \"200ms\"\nschedule_jitter = 0.0\nlate_arrival = \"1h\"\n",
    )
    .await;
    let tenant_id = connect_with_profile(
        &mut harness,
        0,
        Profile::hardened(Licence::P1),
        tenants::SubscriptionPlan::Standard,
    )
    .await;
    let token = harness.env.partner_token(PARTNER);
    let polls = eventually(Duration::from_secs(30), "two scheduled polls", || {
        let request = harness.env.request(
            &token,
            tenants::ListScansRequest {
                tenant_id: tenant_id.clone(),
                kinds: vec![tenants::ScanKind::Monitoring.into()],
                states: vec![tenants::ScanState::Succeeded.into()],
                ..Default::default()
            },
        );
        let mut client = harness.scans.clone();
        async move {
            let scans = client.list_scans(request).await.ok()?.into_inner().scans;
            (scans.len() >= 2).then_some(scans)
        }
    })
    .await;

    let (newer, older) = (&polls[0], &polls[1]);
    assert_eq!(newer.trigger(), tenants::ScanTrigger::Schedule);
    let start = newer.window_start.expect("window start").seconds;
    let previous_end = older.window_end.expect("window end").seconds;
    assert!(
        start <= previous_end - 3500,
        "a poll reads again an hour before the previous window's end, for late records"
    );
    harness.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fix_request_that_names_no_fix_goes_to_the_dead_letters_with_the_reason() {
    let harness = harness().await;
    let mut dead_letters = harness
        .env
        .nats
        .subscribe(harness.env.subjects.dead_letter_subject(scanner::SERVICE))
        .await
        .expect("subscribe");
    let request = fixes::FixRequested {
        partner_id: PARTNER.into(),
        tenant_id: "5f0c6a1e-0000-4000-8000-000000000001".into(),
        fix_id: "not-a-uuid".into(),
        check_id: "aad.users-cannot-register-apps".into(),
        ..Default::default()
    };

    harness.env.publish("prioritizer", &request).await;

    let dead = tokio::time::timeout(Duration::from_secs(20), dead_letters.next())
        .await
        .expect("a dead letter arrives")
        .expect("subscription open");
    let reason = dead
        .headers
        .as_ref()
        .and_then(|headers| headers.get(picket_platform::nats::consumer::DLQ_REASON))
        .map(|value| value.as_str().to_owned())
        .unwrap_or_default();
    assert!(reason.contains("fix_id"), "{reason}");
    harness.finish().await;
}
