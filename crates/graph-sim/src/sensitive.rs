//! Sensitive actions on administrators. Graph lets an app disable an administrator or revoke their
//! sessions only when the app itself holds a directory role allowed to act on them ("Who can
//! perform sensitive actions"): for any administrator, Privileged Authentication Administrator or
//! Global Administrator. Application permissions alone are not enough.

use axum::http::Method;
use serde_json::Value;

use crate::model::{GLOBAL_ADMINISTRATOR, PRIVILEGED_AUTHENTICATION_ADMINISTRATOR, Tenant};

const ACTS_ON_ADMINISTRATORS: [&str; 2] = [
    PRIVILEGED_AUTHENTICATION_ADMINISTRATOR,
    GLOBAL_ADMINISTRATOR,
];

fn items<'t>(tenant: &'t Tenant, path: &str) -> impl Iterator<Item = &'t Value> {
    tenant
        .resources
        .get(path)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn roles_of<'t>(tenant: &'t Tenant, principal: &'t str) -> impl Iterator<Item = &'t str> {
    items(tenant, "/roleManagement/directory/roleAssignments")
        .filter(move |assignment| assignment["principalId"] == principal)
        .filter_map(|assignment| assignment["roleDefinitionId"].as_str())
}

/// Whether the operator's app (`operator_app_id`) is refused `method` on `path` because the path
/// acts on an administrator and the app holds no role allowed to.
pub fn refused(tenant: &Tenant, operator_app_id: &str, method: &Method, path: &str) -> bool {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let user = match (method, segments.as_slice()) {
        (&Method::PATCH, ["users", user]) => *user,
        (&Method::POST, ["users", user, "revokeSignInSessions"]) => *user,
        _ => return false,
    };
    let Some(user_id) = items(tenant, "/users")
        .find(|candidate| candidate["id"] == user || candidate["userPrincipalName"] == user)
        .and_then(|found| found["id"].as_str())
    else {
        return false;
    };
    if roles_of(tenant, user_id).next().is_none() {
        return false;
    }
    let operator = items(tenant, "/servicePrincipals")
        .find(|sp| sp["appId"] == operator_app_id)
        .and_then(|sp| sp["id"].as_str())
        .unwrap_or_default();
    !roles_of(tenant, operator).any(|role| ACTS_ON_ADMINISTRATORS.contains(&role))
}
