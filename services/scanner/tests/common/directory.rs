//! Directory objects a profile does not build, added to a simulated tenant before Picket
//! connects: role holders that are groups and apps.

use chrono::{SecondsFormat, Utc};
use graph_sim::{GLOBAL_ADMINISTRATOR, GraphSim, PRIVILEGED_ROLE_ADMINISTRATOR};
use serde_json::{Value, json};

pub const GROUP: &str = "5d0c6a3e-7f21-4b8e-9a1c-2e4f6a8b0c01";
pub const GROUP_NAME: &str = "Tier 0 admins";
pub const BACKUP_APP: &str = "5d0c6a3e-7f21-4b8e-9a1c-2e4f6a8b0c02";
pub const ASSIGNMENTS: &str = "/roleManagement/directory/roleAssignments";

/// The id of the service principal of Picket's app in `tenant` (consent created it).
pub fn picket_app(sim: &GraphSim, tenant: &str) -> String {
    let client_id = sim.config().client_id.clone();
    sim.resource(tenant, "/servicePrincipals")
        .and_then(|all| {
            all.as_array()?
                .iter()
                .find(|sp| sp["appId"] == client_id.as_str())?["id"]
                .as_str()
                .map(str::to_owned)
        })
        .expect("Picket's service principal")
}

pub fn push(sim: &GraphSim, tenant: &str, path: &str, items: Vec<Value>) {
    let mut all = sim
        .resource(tenant, path)
        .and_then(|value| value.as_array().cloned())
        .unwrap_or_default();
    all.extend(items);
    sim.set_resource(tenant, path, Value::Array(all));
}

/// Adds to a tenant (the hardened profile has three Global Administrators, users 0 to 2) a
/// role-assignable group of six users (6 to 11) holding Global Administrator, a backup app holding
/// it too, and Picket's own app holding Privileged Role Administrator, each assigned outside PIM
/// ten minutes ago. One group member (user 7) has not signed in for two years.
pub fn role_holders(sim: &GraphSim, tenant: &str) {
    let mut users = sim.resource(tenant, "/users").expect("users");
    users[7]["signInActivity"]["lastSignInDateTime"] = json!("2024-12-01T00:00:00Z");
    sim.set_resource(tenant, "/users", users.clone());
    let members: Vec<Value> = (6..12)
        .map(|number| {
            let user = &users[number];
            json!({"@odata.type": "#microsoft.graph.user", "id": user["id"], "displayName": user["displayName"], "userPrincipalName": user["userPrincipalName"]})
        })
        .collect();
    push(
        sim,
        tenant,
        "/groups",
        vec![
            json!({"id": GROUP, "displayName": GROUP_NAME, "isAssignableToRole": true, "securityEnabled": true, "mailEnabled": false}),
        ],
    );
    sim.set_resource(tenant, &format!("/groups/{GROUP}/members"), json!(members));
    push(
        sim,
        tenant,
        "/servicePrincipals",
        vec![
            json!({"id": BACKUP_APP, "appId": "7a1d2c3b-0000-4000-8000-0000000b4c4b", "displayName": "Backup Tool", "appOwnerOrganizationId": "0b0e1d1c-0000-4000-8000-0000000000aa", "accountEnabled": true, "verifiedPublisher": {"displayName": null, "verifiedPublisherId": null, "addedDateTime": null}}),
        ],
    );
    let picket = picket_app(sim, tenant);
    let ten_minutes_ago =
        (Utc::now() - chrono::Duration::minutes(10)).to_rfc3339_opts(SecondsFormat::Secs, true);
    let mut assignments = Vec::new();
    let mut audits = Vec::new();
    for (principal, kind, name, role) in [
        (GROUP, "Group", GROUP_NAME, GLOBAL_ADMINISTRATOR),
        (
            BACKUP_APP,
            "ServicePrincipal",
            "Backup Tool",
            GLOBAL_ADMINISTRATOR,
        ),
        (
            picket.as_str(),
            "ServicePrincipal",
            "Picket",
            PRIVILEGED_ROLE_ADMINISTRATOR,
        ),
    ] {
        assignments.push(json!({"id": format!("assignment-{principal}"), "principalId": principal, "roleDefinitionId": role, "directoryScopeId": "/"}));
        audits.push(json!({
            "id": format!("Directory_{principal}"),
            "category": "RoleManagement",
            "correlationId": principal,
            "result": "success",
            "resultReason": "",
            "activityDisplayName": "Add member to role",
            "activityDateTime": ten_minutes_ago,
            "loggedByService": "Core Directory",
            "operationType": "Assign",
            "initiatedBy": {"app": null, "user": {"id": users[2]["id"], "userPrincipalName": users[2]["userPrincipalName"]}},
            "targetResources": [{"id": principal, "displayName": name, "type": kind, "userPrincipalName": null, "modifiedProperties": [
                {"displayName": "Role.TemplateId", "oldValue": null, "newValue": format!("\"{role}\"")}]}],
            "additionalDetails": [],
        }));
    }
    push(sim, tenant, ASSIGNMENTS, assignments);
    push(sim, tenant, "/auditLogs/directoryAudits", audits);
}
