//! The Graph writes that fix a failing configuration check, planned from a fresh snapshot so they
//! start from the tenant as it is now.

use serde_json::{Map, Value, json};

use crate::checks::Failure;
use crate::checks::catalogue::{Action, Check, Write as WriteMethod};
use crate::checks::directory::privileged_holders;
use crate::checks::rules::{NEVER_EXPIRES, ca_template};
use crate::checks::snapshot::{Snapshot, Source, strings};

/// One Graph request of a fix.
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    pub method: reqwest::Method,
    /// Path under `/v1.0`.
    pub path: String,
    pub body: Option<Value>,
}

impl Write {
    fn patch(path: &str, body: Value) -> Write {
        Write {
            method: reqwest::Method::PATCH,
            path: path.to_owned(),
            body: Some(body),
        }
    }
}

/// Why no write could be planned.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Missing(String),
}

/// Sets `value` at a JSON pointer, creating the objects on the way.
fn set_pointer(target: &mut Value, pointer: &str, value: Value) {
    let mut current = target;
    let parts: Vec<&str> = pointer.trim_start_matches('/').split('/').collect();
    for (index, part) in parts.iter().enumerate() {
        if !current.is_object() {
            *current = Value::Object(Map::new());
        }
        let Some(object) = current.as_object_mut() else {
            return;
        };
        if index + 1 == parts.len() {
            object.insert((*part).to_owned(), value);
            return;
        }
        current = object
            .entry((*part).to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
    }
}

/// A parameter of the failure's fix, empty when absent.
fn fix_parameter(failure: &Failure, name: &str) -> String {
    failure
        .fix_parameters
        .get(name)
        .cloned()
        .unwrap_or_default()
}

pub fn plan(
    check: &Check,
    snapshot: &Snapshot,
    failure: &Failure,
) -> Result<Vec<Write>, PlanError> {
    let missing = |error: crate::checks::snapshot::Missing| PlanError::Missing(error.to_string());
    if let Some(setting) = &check.setting {
        let mut body = match setting.write {
            WriteMethod::Patch => {
                let mut body = json!({});
                for condition in &setting.conditions {
                    set_pointer(&mut body, &condition.pointer, condition.desired.clone());
                }
                body
            }
            WriteMethod::Put => {
                let mut body = snapshot
                    .resource(&setting.resource)
                    .map_err(missing)?
                    .clone();
                for condition in &setting.conditions {
                    set_pointer(&mut body, &condition.pointer, condition.desired.clone());
                }
                body
            }
        };
        if let Some(odata_type) = &setting.odata_type {
            body["@odata.type"] = json!(odata_type);
        }
        let method = match setting.write {
            WriteMethod::Patch => reqwest::Method::PATCH,
            WriteMethod::Put => reqwest::Method::PUT,
        };
        return Ok(vec![Write {
            method,
            path: setting.resource.clone(),
            body: Some(body),
        }]);
    }
    let break_glass: Vec<String> = snapshot
        .break_glass_ids()
        .map_err(missing)?
        .into_iter()
        .collect();
    match (
        failure.fix_action.unwrap_or(check.fix.action),
        check.evaluator.as_deref().unwrap_or_default(),
    ) {
        (Action::EnableConditionalAccessPolicy, _) => {
            let policy_id = fix_parameter(failure, "policyId");
            Ok(vec![Write::patch(
                &format!("/identity/conditionalAccess/policies/{policy_id}"),
                json!({"state": "enabled"}),
            )])
        }
        (Action::CreateConditionalAccessPolicy, _) => {
            let template = check.fix.template.as_deref().unwrap_or_default();
            let body = ca_template(template, &break_glass).ok_or_else(|| {
                PlanError::Unsupported(format!("no conditional access template {template}"))
            })?;
            Ok(vec![Write {
                method: reqwest::Method::POST,
                path: "/identity/conditionalAccess/policies".into(),
                body: Some(body),
            }])
        }
        (_, "break_glass_excluded") => {
            let policy_id = fix_parameter(failure, "policyId");
            let policy = snapshot
                .items(Source::ConditionalAccessPolicies)
                .map_err(missing)?
                .iter()
                .find(|policy| policy["id"] == policy_id.as_str())
                .ok_or_else(|| PlanError::Missing(format!("policy {policy_id} is gone")))?;
            let mut conditions = policy["conditions"].clone();
            let mut excluded: Vec<String> = strings(&conditions["users"]["excludeUsers"])
                .into_iter()
                .map(str::to_owned)
                .collect();
            for id in &break_glass {
                if !excluded.contains(id) {
                    excluded.push(id.clone());
                }
            }
            set_pointer(&mut conditions, "/users/excludeUsers", json!(excluded));
            Ok(vec![Write::patch(
                &format!("/identity/conditionalAccess/policies/{policy_id}"),
                json!({"conditions": conditions}),
            )])
        }
        (_, "passwords_never_expire") => {
            let domain = fix_parameter(failure, "domainId");
            Ok(vec![Write::patch(
                &format!("/domains/{domain}"),
                json!({"passwordValidityPeriodInDays": NEVER_EXPIRES}),
            )])
        }
        (_, "security_defaults_or_ca") => Ok(vec![Write::patch(
            "/policies/identitySecurityDefaultsEnforcementPolicy",
            json!({"isEnabled": true}),
        )]),
        (_, "user_consent_restricted") => {
            let policy = snapshot.get(Source::AuthorizationPolicy).map_err(missing)?;
            let kept: Vec<&str> =
                strings(&policy["defaultUserRolePermissions"]["permissionGrantPoliciesAssigned"])
                    .into_iter()
                    .filter(|id| !id.starts_with("ManagePermissionGrantsForSelf."))
                    .collect();
            Ok(vec![Write::patch(
                "/policies/authorizationPolicy",
                json!({"defaultUserRolePermissions": {"permissionGrantPoliciesAssigned": kept}}),
            )])
        }
        (_, evaluator @ ("app_password_addition_restricted" | "app_secret_lifetime_limited")) => {
            let policy = snapshot.get(Source::AppManagementPolicy).map_err(missing)?;
            let (kind, restriction) = if evaluator == "app_password_addition_restricted" {
                (
                    "passwordAddition",
                    json!({"restrictionType": "passwordAddition", "state": "enabled", "maxLifetime": null, "restrictForAppsCreatedAfterDateTime": snapshot.now.to_rfc3339()}),
                )
            } else {
                (
                    "passwordLifetime",
                    json!({"restrictionType": "passwordLifetime", "state": "enabled", "maxLifetime": format!("P{}D", check.number("max_days", 180)), "restrictForAppsCreatedAfterDateTime": snapshot.now.to_rfc3339()}),
                )
            };
            let mut restrictions: Vec<Value> =
                policy["applicationRestrictions"]["passwordCredentials"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
            restrictions.retain(|existing| existing["restrictionType"] != kind);
            restrictions.push(restriction);
            let mut application = policy["applicationRestrictions"].clone();
            set_pointer(
                &mut application,
                "/passwordCredentials",
                json!(restrictions),
            );
            Ok(vec![Write::patch(
                "/policies/defaultAppManagementPolicy",
                json!({"isEnabled": true, "applicationRestrictions": application}),
            )])
        }
        (Action::RemoveRoleAssignment, _) => {
            let principal = fix_parameter(failure, "principalId");
            let holder = privileged_holders(snapshot)
                .map_err(missing)?
                .remove(&principal)
                .unwrap_or_default();
            if !holder.eligible.is_empty() {
                // An eligibility is removed by a PIM schedule request, which Picket does not
                // make: deleting the active assignments would leave the principal one
                // activation away from the role.
                return Err(PlanError::Unsupported(format!(
                    "{principal} is eligible for {} through Privileged Identity Management: remove the eligibility there",
                    holder.eligible.len()
                )));
            }
            if let Some((group, _)) = holder.through.first() {
                // Removing the group's role would take it from every member.
                return Err(PlanError::Unsupported(format!(
                    "{principal} holds its role through the group {group}: remove the account from the group"
                )));
            }
            Ok(snapshot
                .items(Source::RoleAssignments)
                .map_err(missing)?
                .iter()
                .filter(|assignment| assignment["principalId"] == principal.as_str())
                .filter(|assignment| {
                    assignment["roleDefinitionId"]
                        .as_str()
                        .is_some_and(|role| holder.direct.iter().any(|held| held == role))
                })
                .filter_map(|assignment| assignment["id"].as_str())
                .map(|id| Write {
                    method: reqwest::Method::DELETE,
                    path: format!("/roleManagement/directory/roleAssignments/{id}"),
                    body: None,
                })
                .collect())
        }
        _ => Err(PlanError::Unsupported(format!(
            "{} has no automated fix; {}",
            check.id, check.fix.description
        ))),
    }
}
