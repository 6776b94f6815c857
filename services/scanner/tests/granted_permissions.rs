//! What a tenant granted Picket's app decides what Picket reads and writes there. graph-sim's
//! tenants grant a set of application permissions, their tokens' `roles` carry it, and a request
//! without a permission its endpoint's documentation lists gets Graph's 403: a tenant that granted
//! exactly the generated manifest is scanned and fixed without one refusal, and one that granted
//! less has the checks it cannot run marked *not evaluated* and the fixes refused, before any
//! request Graph would refuse.

mod common;

use std::time::Duration;

use common::fixing::{FixHarness, PARTNER, fix_for, outcome};
use graph_sim::{Licence, Profile, Weakness};
use picket_proto::fixes::v1 as fixes;
use picket_proto::tenants::v1 as tenants;
use scanner::checks::catalogue::Catalogue;

/// What Picket's app registration asks for (`deploy/entra/app-manifest.json`), by name: what a
/// tenant consenting to it grants.
fn requested() -> Vec<String> {
    let catalogue = Catalogue::builtin().expect("the shipped catalogue is valid");
    catalogue
        .permissions()
        .requested(&catalogue.fix_permissions())
}

/// The requests graph-sim answered with 403, as `METHOD path`.
fn refused(fixing: &FixHarness) -> Vec<String> {
    fixing
        .harness
        .sim
        .requests()
        .into_iter()
        .filter(|request| request.status == 403)
        .map(|request| format!("{} {}", request.method, request.path))
        .collect()
}

/// The tenant's onboarding scan, once it has ended; it must have succeeded.
async fn onboarding_scan(fixing: &FixHarness) -> tenants::ScanRun {
    let scans = fixing
        .harness
        .settled_scans(PARTNER, &fixing.tenant_id)
        .await;
    let first = scans.last().expect("the onboarding scan").clone();
    assert_eq!(
        first.state(),
        tenants::ScanState::Succeeded,
        "{:?}",
        first.errors
    );
    first
}

/// The end of a requested fix: applied, or failed with its reason.
async fn settled(
    fixing: &mut FixHarness,
    fix_id: &str,
) -> Result<fixes::FixApplied, Box<fixes::FixFailed>> {
    let wait = async {
        loop {
            let applied = fixing.applied.drain(Duration::from_millis(200)).await;
            if let Some(done) = applied.iter().find(|event| event.fix_id == fix_id) {
                return Ok(done.clone());
            }
            let failed = fixing.failed.drain(Duration::from_millis(10)).await;
            if let Some(failure) = failed.iter().find(|event| event.fix_id == fix_id) {
                return Err(Box::new(failure.clone()));
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), wait)
        .await
        .unwrap_or_else(|_| panic!("fix {fix_id} neither applied nor failed"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_that_granted_the_manifest_is_scanned_and_fixed_without_a_refusal() {
    let granted = requested();
    // The directory role Picket's app needs to act on administrators is not an application
    // permission: the tenant assigned it (tests/app_consent.rs covers a tenant that did not).
    let mut profile = Profile::weak(Licence::P2);
    profile
        .weaknesses
        .retain(|weakness| *weakness != Weakness::OperatorWithoutAdminRole);
    let mut fixing = FixHarness::start_granting(profile, Some(&granted)).await;
    let tenant_id = fixing.tenant_id.clone();
    let first = onboarding_scan(&fixing).await;
    assert_eq!(first.checks_not_evaluated, 0);
    let tenant = fixing.harness.tenant(PARTNER, &tenant_id).await;
    assert_eq!(tenant.missing_permissions, Vec::<String>::new());
    for (check_id, result) in fixing.harness.results(PARTNER, &tenant_id).await {
        assert_ne!(
            outcome(&result),
            tenants::CheckOutcome::NotEvaluated,
            "{check_id}: {}",
            result.detail
        );
    }

    // One fix of every check that has one: each write permission the manifest asks for is used.
    let catalogue = Catalogue::builtin().expect("catalogue");
    let mut requested_fixes = Vec::new();
    for check in catalogue.checks() {
        if check.fix.permissions.is_empty() {
            continue;
        }
        let Some(finding) = fixing
            .findings
            .iter()
            .find(|finding| finding.check_id == check.id)
            .cloned()
        else {
            panic!("the weak tenant has a finding of {}", check.id);
        };
        let fix = fix_for(
            &finding,
            &format!("00000000-0000-4000-8000-{:012}", requested_fixes.len()),
        );
        fixing.request(&fix).await;
        requested_fixes.push(fix);
    }
    for fix in &requested_fixes {
        if let Err(failure) = settled(&mut fixing, &fix.fix_id).await {
            assert_ne!(
                failure.reason(),
                fixes::FixFailureReason::PermissionDenied,
                "{}: {}",
                fix.check_id,
                failure.reason_detail
            );
        }
    }
    assert!(
        requested_fixes.len() >= 20,
        "{} fixes",
        requested_fixes.len()
    );
    assert_eq!(
        refused(&fixing),
        Vec::<String>::new(),
        "Graph refused these"
    );
    fixing.harness.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_tenant_did_not_grant_is_not_evaluated_and_not_attempted() {
    let withheld = [
        "Policy.Read.All",
        "MailboxSettings.ReadWrite",
        "User.EnableDisableAccount.All",
    ];
    let granted: Vec<String> = requested()
        .into_iter()
        .filter(|name| !withheld.contains(&name.as_str()))
        .collect();
    let mut fixing = FixHarness::start_granting(Profile::weak(Licence::P2), Some(&granted)).await;
    let tenant_id = fixing.tenant_id.clone();

    // The scan succeeds: a permission not granted is not a failing source.
    let first = onboarding_scan(&fixing).await;
    assert!(first.checks_not_evaluated > 0);
    let tenant = fixing.harness.tenant(PARTNER, &tenant_id).await;
    for name in [
        "Policy.Read.All",
        "MailboxSettings.Read",
        "MailboxSettings.ReadWrite",
        "User.EnableDisableAccount.All",
    ] {
        assert!(
            tenant
                .missing_permissions
                .iter()
                .any(|missing| missing == name),
            "{name} in {:?}",
            tenant.missing_permissions
        );
    }

    let results = fixing.harness.results(PARTNER, &tenant_id).await;
    for (check_id, permission) in [
        ("aad.users-cannot-register-apps", "Policy.Read.All"),
        ("aad.legacy-auth-blocked", "Policy.Read.All"),
        ("mon.inbox-rule-external-forward", "MailboxSettings.Read"),
    ] {
        let result = &results[check_id];
        assert_eq!(
            outcome(result),
            tenants::CheckOutcome::NotEvaluated,
            "{check_id}"
        );
        assert!(
            result
                .detail
                .contains(&format!("missing permission {permission}")),
            "{check_id}: {}",
            result.detail
        );
    }
    // What a permission granted still covers is evaluated: the authentication methods policy is
    // read with Policy.ReadWrite.AuthenticationMethod.
    assert_eq!(
        outcome(&results["aad.sms-sign-in-disabled"]),
        tenants::CheckOutcome::Failed
    );

    // A fix needing a permission not granted is refused with its name, and nothing is sent.
    let risky = fixing.finding("mon.high-risk-user", "");
    let fix = fix_for(&risky, "00000000-0000-4000-8000-000000000099");
    fixing.request(&fix).await;
    let failure = settled(&mut fixing, &fix.fix_id)
        .await
        .expect_err("the fix is refused");
    assert_eq!(failure.reason(), fixes::FixFailureReason::PermissionDenied);
    assert!(
        failure
            .reason_detail
            .contains("missing permission User.EnableDisableAccount.All"),
        "{}",
        failure.reason_detail
    );

    let requests = fixing.harness.sim.requests();
    let sent: Vec<String> = requests
        .iter()
        .filter(|request| {
            request.method != "GET"
                || request.path.ends_with("/authorizationPolicy")
                || request.path.ends_with("/messageRules")
                || request.path.contains("/conditionalAccess/")
        })
        .map(|request| format!("{} {}", request.method, request.path))
        .collect();
    assert_eq!(
        sent,
        Vec::<String>::new(),
        "requests needing what was withheld"
    );
    assert_eq!(
        refused(&fixing),
        Vec::<String>::new(),
        "Graph refused these"
    );
    fixing.harness.finish().await;
}
