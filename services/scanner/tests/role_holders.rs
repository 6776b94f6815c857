//! Roles held by groups and apps, read as Graph documents them: a role-assignable group's members
//! hold its roles, a service principal is an app rather than a person, and each fix acts on the
//! principal the role is assigned to (never a 404 on `/users/{id}` for a group or an app).

mod common;

use common::directory::{ASSIGNMENTS, BACKUP_APP, GROUP, GROUP_NAME, picket_app, role_holders};
use common::fixing::{FixHarness, fix_for};
use graph_sim::{Licence, Profile};
use picket_proto::fixes::v1 as fixes;

const OUTSIDE_PIM: &str = "mon.privileged-role-outside-pim";

fn evidence<'f>(fixing: &'f FixHarness, check_id: &str, target: &str, key: &str) -> &'f str {
    fixing
        .findings
        .iter()
        .find(|finding| finding.check_id == check_id && finding.target.contains(target))
        .and_then(|finding| finding.evidence.get(key))
        .map(String::as_str)
        .unwrap_or_else(|| panic!("{check_id} on {target} with {key}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_and_apps_holding_roles_are_judged_and_fixed_as_what_they_are() {
    let mut fixing =
        FixHarness::start_prepared(Profile::hardened(Licence::P2), None, role_holders).await;

    // Three users directly and six through the group: nine people; the backup app is named but
    // is not a person.
    let count = "aad.global-admin-count";
    for (key, expected) in [
        ("globalAdministrators", "9"),
        ("ofWhichThroughGroups", "6"),
        ("servicePrincipalsNotCounted", "Backup Tool"),
    ] {
        assert_eq!(evidence(&fixing, count, "", key), expected, "{key}");
    }

    // The inactive member holds its role through the group: taking the group's role would take
    // it from every member, so the fix is refused with the way out.
    let inactive = fixing
        .findings
        .iter()
        .find(|finding| {
            finding.check_id == "aad.inactive-privileged-users"
                && finding.evidence.get("throughGroups").map(String::as_str) == Some(GROUP_NAME)
        })
        .expect("the inactive group member")
        .clone();
    let through_group = fix_for(&inactive, "00000000-0000-4000-8000-000000000101");
    fixing.request(&through_group).await;
    let refused = fixing.failed(&through_group.fix_id).await;
    assert_eq!(refused.reason(), fixes::FixFailureReason::Unsupported);
    assert!(
        refused.reason_detail.contains(GROUP_NAME),
        "{}",
        refused.reason_detail
    );

    // Assignments outside PIM name the kind of principal, and their fixes act on it.
    let of = |name: &str| {
        fixing
            .findings
            .iter()
            .find(|finding| finding.check_id == OUTSIDE_PIM && finding.target == name)
            .unwrap_or_else(|| panic!("{OUTSIDE_PIM} on {name}"))
            .clone()
    };
    let (group, backup, picket) = (of(GROUP_NAME), of("Backup Tool"), of("Picket"));
    assert_eq!(group.target_type, "group");
    assert_eq!(backup.target_type, "servicePrincipal");
    assert_eq!(picket.target_type, "servicePrincipal");
    let group_fix = fix_for(&group, "00000000-0000-4000-8000-000000000102");
    let backup_fix = fix_for(&backup, "00000000-0000-4000-8000-000000000103");
    let picket_fix = fix_for(&picket, "00000000-0000-4000-8000-000000000104");
    for fix in [&group_fix, &backup_fix, &picket_fix] {
        fixing.request(fix).await;
    }
    fixing.applied(&group_fix.fix_id).await;
    fixing.applied(&backup_fix.fix_id).await;
    // Picket's own app needs its role to act on administrators: never taken by Picket.
    let refused = fixing.failed(&picket_fix.fix_id).await;
    assert_eq!(refused.reason(), fixes::FixFailureReason::Unsupported);
    let left: Vec<String> = fixing
        .harness
        .sim
        .resource(&fixing.microsoft_tenant, ASSIGNMENTS)
        .expect("assignments")
        .as_array()
        .expect("a collection")
        .iter()
        .filter_map(|assignment| assignment["principalId"].as_str().map(str::to_owned))
        .collect();
    let picket_app = picket_app(&fixing.harness.sim, &fixing.microsoft_tenant);
    assert!(left.contains(&picket_app));
    assert!(
        !left
            .iter()
            .any(|principal| principal == GROUP || principal == BACKUP_APP)
    );

    // No request treated a group or an app as a user.
    let not_found: Vec<String> = fixing
        .harness
        .sim
        .requests()
        .into_iter()
        .filter(|request| request.status == 404 && request.path.contains("/users/"))
        .map(|request| request.path)
        .collect();
    assert!(not_found.is_empty(), "{not_found:?}");
    fixing.harness.finish().await;
}
