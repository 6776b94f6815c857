//! What apps were given, read as Graph shows it: delegated consents judged by their publisher (a
//! verified file-sync service is not consent phishing), application permissions read from each
//! API's `appRoleAssignedTo` (they never appear among delegated grants), the app disabled as the
//! fix, and Picket's own directory role, without which Graph refuses its changes to administrators.

mod common;

use std::collections::BTreeSet;

use common::directory::{picket_app, push};
use common::fixing::{FixHarness, PARTNER, fix_for, outcome};
use graph_sim::{Licence, PRIVILEGED_AUTHENTICATION_ADMINISTRATOR, Profile};
use picket_proto::findings::v1 as findings;
use picket_proto::fixes::v1 as fixes;
use picket_proto::tenants::v1 as tenants;
use serde_json::json;

fn of<'f>(fixing: &'f FixHarness, check_id: &str) -> Vec<&'f findings::FindingObserved> {
    fixing
        .findings
        .iter()
        .filter(|finding| finding.check_id == check_id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_are_judged_by_what_they_hold_and_who_published_them() {
    let mut fixing = FixHarness::start(Profile::weak(Licence::P2)).await;

    // Delegated: the unverified mail app, not the verified file-sync service with the same kind
    // of offline access.
    let consents: Vec<&str> = of(&fixing, "mon.risky-oauth-consent")
        .iter()
        .map(|finding| finding.target.as_str())
        .collect();
    assert_eq!(consents, ["Mail Sync Pro"]);

    // Application permissions: the unverified archiver's two, critical; neither the verified
    // backup service granted two years ago nor Picket's own app.
    let granted = of(&fixing, "mon.app-permission-granted");
    let permissions: BTreeSet<&str> = granted
        .iter()
        .map(|finding| finding.evidence["permission"].as_str())
        .collect();
    assert_eq!(
        permissions,
        BTreeSet::from(["full_access_as_app", "Mail.ReadWrite"])
    );
    for finding in &granted {
        assert_eq!(finding.target, "Mailbox Archiver");
        assert_eq!(finding.target_type, "servicePrincipal");
        assert_eq!(
            finding.severity(),
            picket_proto::common::v1::Severity::Critical
        );
        assert_eq!(finding.evidence["publisher"], "unverified");
    }
    let archiver = granted[0].clone();

    // The fix disables the app; Picket's own app is never disabled.
    let disable = fix_for(&archiver, "00000000-0000-4000-8000-000000000201");
    fixing.request(&disable).await;
    fixing.applied(&disable.fix_id).await;
    let apps = fixing
        .harness
        .sim
        .resource(&fixing.microsoft_tenant, "/servicePrincipals")
        .expect("service principals");
    let enabled = |id: &str| {
        apps.as_array()
            .expect("a collection")
            .iter()
            .find(|sp| sp["id"] == id)
            .map(|sp| sp["accountEnabled"].clone())
    };
    assert_eq!(enabled(&archiver.target_id), Some(json!(false)));
    let picket = picket_app(&fixing.harness.sim, &fixing.microsoft_tenant);
    let mut itself = fix_for(&archiver, "00000000-0000-4000-8000-000000000202");
    itself
        .parameters
        .insert("servicePrincipalId".into(), picket.clone());
    fixing.request(&itself).await;
    let refused = fixing.failed(&itself.fix_id).await;
    assert_eq!(refused.reason(), fixes::FixFailureReason::Unsupported);
    assert_eq!(enabled(&picket), Some(json!(true)));
    fixing.harness.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acting_on_an_administrator_needs_a_directory_role_on_picket_s_app() {
    let mut fixing = FixHarness::start(Profile::weak(Licence::P2)).await;
    let role_check = of(&fixing, "aad.picket-can-act-on-admins");
    assert_eq!(
        role_check.len(),
        1,
        "the weak tenant never gave Picket a role"
    );
    assert_eq!(
        role_check[0].evidence["neededRole"],
        "Privileged Authentication Administrator"
    );

    // Blocking an administrator (user 3, an Application Administrator) is refused by Graph, and
    // the refusal says what is missing.
    let risky = of(&fixing, "mon.high-risk-user")[0].clone();
    let users = fixing
        .harness
        .sim
        .resource(&fixing.microsoft_tenant, "/users")
        .expect("users");
    let admin = users[3]["id"].as_str().expect("id").to_owned();
    let mut block = fix_for(&risky, "00000000-0000-4000-8000-000000000203");
    block.action = fixes::FixAction::DisableUser.into();
    block.parameters.insert("userId".into(), admin.clone());
    fixing.request(&block).await;
    let refused = fixing.failed(&block.fix_id).await;
    assert_eq!(refused.reason(), fixes::FixFailureReason::PermissionDenied);
    assert!(
        refused
            .reason_detail
            .contains("Privileged Authentication Administrator"),
        "{}",
        refused.reason_detail
    );

    // Once the tenant assigns the role, the same containment goes through.
    let picket = picket_app(&fixing.harness.sim, &fixing.microsoft_tenant);
    push(
        &fixing.harness.sim,
        &fixing.microsoft_tenant,
        "/roleManagement/directory/roleAssignments",
        vec![
            json!({"id": "assignment-picket-paa", "principalId": picket, "roleDefinitionId": PRIVILEGED_AUTHENTICATION_ADMINISTRATOR, "directoryScopeId": "/"}),
        ],
    );
    let mut again = block.clone();
    again.fix_id = "00000000-0000-4000-8000-000000000204".into();
    fixing.request(&again).await;
    fixing.applied(&again.fix_id).await;
    let users = fixing
        .harness
        .sim
        .resource(&fixing.microsoft_tenant, "/users")
        .expect("users");
    assert_eq!(users[3]["accountEnabled"], false);
    fixing.harness.rescan(PARTNER, &fixing.tenant_id).await;
    let results = fixing.harness.results(PARTNER, &fixing.tenant_id).await;
    assert_eq!(
        outcome(&results["aad.picket-can-act-on-admins"]),
        tenants::CheckOutcome::Passed
    );
    fixing.harness.finish().await;
}
