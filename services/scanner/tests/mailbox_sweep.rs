//! Inbox rules without reading every mailbox on every poll: a monitoring poll reads the mailboxes
//! of users who signed in since the previous poll (and a sweep that reaches every mailbox once
//! per `inbox_rule_sweep`), and carries the rules of the others, so a rule found earlier is not
//! cleared because its mailbox was not read this time.

mod common;

use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use common::directory::push;
use common::fixing::{Events, FixHarness, PARTNER};
use graph_sim::{Licence, Profile};
use picket_proto::findings::v1 as findings;
use picket_proto::tenants::v1 as tenants;
use serde_json::json;

const FORWARD: &str = "mon.inbox-rule-external-forward";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_reads_the_mailboxes_that_signed_in_and_keeps_the_others_rules() {
    let mut fixing = FixHarness::start(Profile::weak(Licence::P2)).await;
    let tenant = fixing.microsoft_tenant.clone();
    let sim = &fixing.harness.sim;
    // The onboarding scan read every mailbox and found user 11's forwarding rule.
    let earlier = fixing.finding(FORWARD, "");
    let users = sim.resource(&tenant, "/users").expect("users");
    let user_count = users.as_array().map_or(0, Vec::len);
    let rule_reads = || {
        fixing
            .harness
            .sim
            .requests()
            .into_iter()
            .filter(|request| request.path.ends_with("/mailFolders/inbox/messageRules"))
            .count()
    };
    assert!(
        rule_reads() >= user_count,
        "the onboarding scan read every mailbox"
    );

    // Since then, user 9 signed in and made a rule forwarding mail out.
    let user = users[9]["id"].as_str().expect("id").to_owned();
    sim.set_resource(
        &tenant,
        &format!("/users/{user}/mailFolders/inbox/messageRules"),
        json!([{"id": "AQAAAsweep=", "displayName": "fwd", "sequence": 1, "isEnabled": true, "hasError": false, "isReadOnly": false,
            "conditions": {}, "actions": {"forwardTo": [{"emailAddress": {"name": "Out", "address": "drop@exfil.example"}}], "stopProcessingRules": false}}]),
    );
    let mut sign_in = sim
        .resource(&tenant, "/auditLogs/signIns")
        .and_then(|all| all.as_array()?.first().cloned())
        .expect("a sign-in to copy");
    sign_in["id"] = json!("sweep-sign-in");
    sign_in["userId"] = json!(user);
    sign_in["userPrincipalName"] = users[9]["userPrincipalName"].clone();
    sign_in["createdDateTime"] = json!(Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true));
    sign_in["status"] =
        json!({"errorCode": 0, "failureReason": "Other.", "additionalDetails": null});
    push(sim, &tenant, "/auditLogs/signIns", vec![sign_in]);
    let mut cleared = Events::<findings::FindingCleared>::subscribe(
        &fixing.harness,
        "findings.v1.finding_cleared",
    )
    .await;
    let before = rule_reads();
    let requests_before = fixing.harness.sim.requests().len();

    let poll = fixing
        .harness
        .scan_now(PARTNER, &fixing.tenant_id, tenants::ScanKind::Monitoring)
        .await;

    assert_eq!(poll.state(), tenants::ScanState::Succeeded, "{poll:?}");
    // Users are read only to find their mailboxes: by delta query, without sign-in activity.
    let user_reads: Vec<_> = fixing
        .harness
        .sim
        .requests()
        .into_iter()
        .skip(requests_before)
        .filter(|request| {
            request.path.starts_with("/v1.0/users") && !request.path.contains("/mailFolders")
        })
        .collect();
    assert!(!user_reads.is_empty());
    for request in &user_reads {
        assert_eq!(request.path, "/v1.0/users/delta");
        assert!(
            !request.query["$select"].contains("signInActivity"),
            "{:?}",
            request.query
        );
    }
    let read = rule_reads() - before;
    assert!(
        (1..=2).contains(&read),
        "the poll read {read} of {user_count} mailboxes"
    );
    let mailboxes: Vec<String> = fixing
        .observed
        .drain(Duration::from_secs(2))
        .await
        .iter()
        .filter(|finding| finding.check_id == FORWARD)
        .map(|finding| finding.evidence["mailbox"].clone())
        .collect();
    assert!(
        mailboxes
            .iter()
            .any(|mailbox| Some(mailbox.as_str()) == users[9]["userPrincipalName"].as_str()),
        "{mailboxes:?}"
    );
    let gone: Vec<String> = cleared
        .drain(Duration::from_secs(1))
        .await
        .iter()
        .map(|event| event.fingerprint.clone())
        .collect();
    assert!(
        !gone.contains(&earlier.fingerprint),
        "the rule of a mailbox not read this poll stays found"
    );
    fixing.harness.finish().await;
}
