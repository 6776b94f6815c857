//! Configuration checks written as code, and the conditional access templates their fixes create.
//! Each is a pure function of the snapshot; thresholds come from the catalogue's parameters.

use chrono::Duration;
use serde_json::{Value, json};

use crate::checks::catalogue::{Action, Check};
use crate::checks::directory::{
    GLOBAL_ADMINISTRATOR, Holder, PRIVILEGED_ROLES, Policy, PrincipalKind, REPORT_ONLY, policies,
    privileged_holders, privileged_role_name,
};
use crate::checks::snapshot::{Missing, Snapshot, Source, strings, timestamp};
use crate::checks::{Evaluator, Failure};

/// `passwordValidityPeriodInDays` meaning "never expires".
pub const NEVER_EXPIRES: i64 = 2_147_483_647;

pub fn evaluator(name: &str) -> Option<Evaluator> {
    let evaluator: Evaluator = match name {
        "legacy_auth_blocked" => legacy_auth_blocked,
        "mfa_all_users" => mfa_all_users,
        "mfa_admins" => mfa_admins,
        "phishing_resistant_mfa_admins" => phishing_resistant_mfa_admins,
        "high_risk_users_blocked" => high_risk_users_blocked,
        "high_risk_sign_ins_blocked" => high_risk_sign_ins_blocked,
        "device_code_flow_blocked" => device_code_flow_blocked,
        "security_defaults_or_ca" => security_defaults_or_ca,
        "break_glass_excluded" => break_glass_excluded,
        "passwords_never_expire" => passwords_never_expire,
        "global_admin_count" => global_admin_count,
        "fine_grained_admin_roles" => fine_grained_admin_roles,
        "privileged_users_cloud_only" => privileged_users_cloud_only,
        "inactive_privileged_users" => inactive_privileged_users,
        "user_consent_restricted" => user_consent_restricted,
        "app_password_addition_restricted" => app_password_addition_restricted,
        "app_secret_lifetime_limited" => app_secret_lifetime_limited,
        "long_lived_app_secrets" => long_lived_app_secrets,
        _ => return None,
    };
    Some(evaluator)
}

/// Who an enforced policy must cover for a check to pass.
#[derive(Clone, Copy)]
enum Audience {
    /// All users, excluding at most the break-glass accounts.
    AllUsers,
    /// Every admin: all users, or every privileged role.
    Admins,
}

/// Fails tenant-wide unless an enforced policy for all apps covering `audience` satisfies `rule`.
/// Where a policy that would satisfy it waits in report-only mode (as Picket creates them),
/// enforcing it is the next step, recommended on its own.
fn enforced_policy_exists(
    snapshot: &Snapshot,
    check: &Check,
    audience: Audience,
    rule: impl Fn(&Policy) -> bool,
) -> Result<Vec<Failure>, Missing> {
    let break_glass = snapshot.break_glass_ids()?;
    let satisfies = |policy: &Policy| {
        let covered = match audience {
            Audience::AllUsers => policy.targets_all_users(&break_glass),
            Audience::Admins => {
                policy.targets_all_users(&break_glass) || policy.targets_privileged_roles()
            }
        };
        policy.targets_all_apps() && covered && rule(policy)
    };
    let policies = policies(snapshot)?;
    if policies
        .iter()
        .any(|policy| policy.enforced() && satisfies(policy))
    {
        return Ok(Vec::new());
    }
    Ok(vec![match policies
        .iter()
        .find(|policy| policy.report_only() && satisfies(policy))
    {
        Some(policy) => report_only_policy(policy),
        None => missing_policy(snapshot, check),
    }])
}

fn missing_policy(snapshot: &Snapshot, check: &Check) -> Failure {
    let failure = Failure::tenant_wide(snapshot).evidence("enforcedPolicy", "none");
    match &check.fix.template {
        Some(template) => failure.fix("template", template),
        None => failure,
    }
}

/// A policy that would pass, in report-only mode: its own subject, so enforcing it is a new
/// recommendation, approved apart from the one that created it.
fn report_only_policy(policy: &Policy) -> Failure {
    let mut failure = Failure::on(
        &format!("report-only/{}", policy.id()),
        policy.name(),
        "conditionalAccessPolicy",
        policy.id(),
    )
    .evidence("enforcedPolicy", "none")
    .evidence("reportOnlyPolicy", policy.name())
    .evidence(
        "reportOnlySince",
        policy.0["createdDateTime"].as_str().unwrap_or("unknown"),
    )
    .fix("policyId", policy.id());
    failure.fix_action = Some(Action::EnableConditionalAccessPolicy);
    failure.fix_description = Some(format!(
        "Enforce the conditional access policy \"{}\", in report-only mode now, once its results in the sign-in logs (the Report-only tab) show whom it would affect.",
        policy.name()
    ));
    failure
}

fn legacy_auth_blocked(snapshot: &Snapshot, check: &Check) -> Result<Vec<Failure>, Missing> {
    enforced_policy_exists(snapshot, check, Audience::AllUsers, |policy| {
        policy.grants("block")
            && policy.condition_includes("clientAppTypes", "exchangeActiveSync")
            && policy.condition_includes("clientAppTypes", "other")
    })
}

fn mfa_all_users(snapshot: &Snapshot, check: &Check) -> Result<Vec<Failure>, Missing> {
    enforced_policy_exists(snapshot, check, Audience::AllUsers, |policy| {
        policy.requires_mfa()
    })
}

fn mfa_admins(snapshot: &Snapshot, check: &Check) -> Result<Vec<Failure>, Missing> {
    enforced_policy_exists(snapshot, check, Audience::Admins, |policy| {
        policy.requires_mfa()
    })
}

fn phishing_resistant_mfa_admins(
    snapshot: &Snapshot,
    check: &Check,
) -> Result<Vec<Failure>, Missing> {
    enforced_policy_exists(snapshot, check, Audience::Admins, |policy| {
        policy.requires_phishing_resistant_mfa()
    })
}

fn high_risk_users_blocked(snapshot: &Snapshot, check: &Check) -> Result<Vec<Failure>, Missing> {
    enforced_policy_exists(snapshot, check, Audience::AllUsers, |policy| {
        policy.grants("block") && policy.condition_includes("userRiskLevels", "high")
    })
}

fn high_risk_sign_ins_blocked(snapshot: &Snapshot, check: &Check) -> Result<Vec<Failure>, Missing> {
    enforced_policy_exists(snapshot, check, Audience::AllUsers, |policy| {
        policy.grants("block") && policy.condition_includes("signInRiskLevels", "high")
    })
}

fn device_code_flow_blocked(snapshot: &Snapshot, check: &Check) -> Result<Vec<Failure>, Missing> {
    enforced_policy_exists(snapshot, check, Audience::AllUsers, |policy| {
        let methods = policy.0["conditions"]["authenticationFlows"]["transferMethods"]
            .as_str()
            .unwrap_or_default();
        policy.grants("block")
            && methods
                .split(',')
                .any(|method| method.trim() == "deviceCodeFlow")
    })
}

/// Conditional access is read as empty for tenants without Entra ID P1, where it cannot apply.
fn security_defaults_or_ca(snapshot: &Snapshot, _check: &Check) -> Result<Vec<Failure>, Missing> {
    let defaults_on = snapshot.get(Source::SecurityDefaults)?["isEnabled"] == true;
    let enforced = policies(snapshot)?
        .iter()
        .filter(|policy| policy.enforced())
        .count();
    Ok(if defaults_on || enforced > 0 {
        Vec::new()
    } else {
        vec![
            Failure::tenant_wide(snapshot)
                .evidence("securityDefaultsEnabled", false)
                .evidence("enforcedConditionalAccessPolicies", 0),
        ]
    })
}

fn break_glass_excluded(snapshot: &Snapshot, _check: &Check) -> Result<Vec<Failure>, Missing> {
    let break_glass = snapshot.break_glass_ids()?;
    let users = snapshot.users_by_id()?;
    let mut failures = Vec::new();
    for policy in policies(snapshot)? {
        let active = matches!(policy.0["state"].as_str(), Some("enabled" | REPORT_ONLY));
        let all_users = strings(&policy.0["conditions"]["users"]["includeUsers"]).contains(&"All");
        if !active || !all_users {
            continue;
        }
        let excluded = policy.excluded_users();
        let missing: Vec<&str> = break_glass
            .iter()
            .filter(|id| !excluded.contains(&id.as_str()))
            .map(|id| {
                users
                    .get(id.as_str())
                    .and_then(|user| user["userPrincipalName"].as_str())
                    .unwrap_or(id)
            })
            .collect();
        if !missing.is_empty() {
            failures.push(
                Failure::on(
                    policy.id(),
                    policy.name(),
                    "conditionalAccessPolicy",
                    policy.id(),
                )
                .evidence("notExcluded", missing.join(", "))
                .fix("policyId", policy.id()),
            );
        }
    }
    Ok(failures)
}

/// What an absent `passwordValidityPeriodInDays` means: Microsoft's default.
const DEFAULT_PASSWORD_VALIDITY: &str = "null (the default: passwords expire after 90 days)";
/// The prefix of the permission grant policies that let users consent for themselves.
const SELF_CONSENT: &str = "ManagePermissionGrantsForSelf.";

fn passwords_never_expire(snapshot: &Snapshot, _check: &Check) -> Result<Vec<Failure>, Missing> {
    Ok(snapshot
        .items(Source::Domains)?
        .iter()
        .filter(|domain| domain["isVerified"] == true && domain["authenticationType"] == "Managed")
        .filter(|domain| domain["passwordValidityPeriodInDays"].as_i64() != Some(NEVER_EXPIRES))
        .map(|domain| {
            let name = domain["id"].as_str().unwrap_or_default();
            Failure::on(name, name, "domain", name)
                .evidence(
                    "passwordValidityPeriodInDays",
                    match &domain["passwordValidityPeriodInDays"] {
                        Value::Null => DEFAULT_PASSWORD_VALIDITY.to_owned(),
                        days => days.to_string(),
                    },
                )
                .fix("domainId", name)
        })
        .collect())
}

/// The people holding privileged roles (users directly or through groups, and groups whose
/// members are unknown), and the apps (service principals) holding them.
fn people_and_apps(snapshot: &Snapshot) -> Result<(Vec<Holder>, Vec<Holder>), Missing> {
    Ok(privileged_holders(snapshot)?
        .into_values()
        .filter(|holder| holder.kind != PrincipalKind::Group || !holder.members_read)
        .partition(Holder::counts_as_person))
}

fn names(holders: &[&Holder]) -> String {
    holders
        .iter()
        .map(|holder| holder.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn global_admin_count(snapshot: &Snapshot, _check: &Check) -> Result<Vec<Failure>, Missing> {
    // CISA counts the people holding the role; apps holding it are named, not counted.
    let (people, apps) = people_and_apps(snapshot)?;
    let global: Vec<&Holder> = people
        .iter()
        .filter(|holder| holder.holds(GLOBAL_ADMINISTRATOR))
        .collect();
    let apps: Vec<&Holder> = apps
        .iter()
        .filter(|holder| holder.holds(GLOBAL_ADMINISTRATOR))
        .collect();
    if (2..=8).contains(&global.len()) {
        return Ok(Vec::new());
    }
    let count = |filter: &dyn Fn(&&Holder) -> bool| global.iter().filter(|h| filter(h)).count();
    let mut failure = Failure::tenant_wide(snapshot)
        .evidence("globalAdministrators", global.len())
        .evidence(
            "ofWhichEligibleThroughPim",
            count(&|holder| {
                holder
                    .eligible
                    .iter()
                    .any(|role| role == GLOBAL_ADMINISTRATOR)
            }),
        )
        .evidence(
            "ofWhichThroughGroups",
            count(&|holder| !holder.through.is_empty()),
        );
    let unread: Vec<&Holder> = global
        .iter()
        .copied()
        .filter(|holder| holder.kind == PrincipalKind::Group)
        .collect();
    if !unread.is_empty() {
        failure = failure.evidence("groupsWithUnreadMembers", names(&unread));
    }
    if !apps.is_empty() {
        failure = failure.evidence("servicePrincipalsNotCounted", names(&apps));
    }
    Ok(vec![failure])
}

fn fine_grained_admin_roles(snapshot: &Snapshot, _check: &Check) -> Result<Vec<Failure>, Missing> {
    let (people, _) = people_and_apps(snapshot)?;
    let global = people
        .iter()
        .filter(|holder| holder.holds(GLOBAL_ADMINISTRATOR))
        .count();
    let others = people
        .iter()
        .filter(|holder| {
            holder
                .roles()
                .iter()
                .any(|role| role != GLOBAL_ADMINISTRATOR)
        })
        .count();
    Ok(if global <= others {
        Vec::new()
    } else {
        vec![
            Failure::tenant_wide(snapshot)
                .evidence("globalAdministrators", global)
                .evidence("otherPrivilegedRoleHolders", others),
        ]
    })
}

fn role_names(roles: &[String]) -> String {
    roles
        .iter()
        .filter_map(|role| privileged_role_name(role))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A failure on a user holding privileged roles: which, and through which groups.
fn privileged_user(id: &str, upn: &str, holder: &Holder) -> Failure {
    let failure = Failure::on(id, upn, PrincipalKind::User.target_type(), id)
        .evidence("roles", role_names(&holder.roles()));
    if holder.through.is_empty() {
        return failure;
    }
    let groups: Vec<&str> = holder
        .through
        .iter()
        .map(|(group, _)| group.as_str())
        .collect();
    failure.evidence("throughGroups", groups.join(", "))
}

fn privileged_users_cloud_only(
    snapshot: &Snapshot,
    _check: &Check,
) -> Result<Vec<Failure>, Missing> {
    let users = snapshot.users_by_id()?;
    Ok(privileged_holders(snapshot)?
        .iter()
        .filter_map(|(principal, holder)| {
            let user = users.get(principal.as_str())?;
            let synced =
                user["onPremisesSyncEnabled"] == true || user["onPremisesImmutableId"].is_string();
            let upn = user["userPrincipalName"].as_str().unwrap_or(principal);
            synced.then(|| privileged_user(principal, upn, holder))
        })
        .collect())
}

fn inactive_privileged_users(snapshot: &Snapshot, check: &Check) -> Result<Vec<Failure>, Missing> {
    let users = snapshot.users_by_id()?;
    let cutoff = snapshot.now - Duration::days(check.number("inactive_days", 90));
    Ok(privileged_holders(snapshot)?
        .iter()
        .filter_map(|(principal, holder)| {
            let user = users.get(principal.as_str())?;
            if snapshot.is_break_glass(user) {
                // Break-glass accounts are meant to stay unused.
                return None;
            }
            let last = timestamp(&user["signInActivity"]["lastSignInDateTime"]);
            if last.is_some_and(|last| last >= cutoff) {
                return None;
            }
            let upn = user["userPrincipalName"].as_str().unwrap_or(principal);
            Some(
                privileged_user(principal, upn, holder)
                    .evidence(
                        "lastSignIn",
                        last.map(|at| at.to_rfc3339()).unwrap_or("never".into()),
                    )
                    .fix("principalId", principal),
            )
        })
        .collect())
}

fn user_consent_restricted(snapshot: &Snapshot, _check: &Check) -> Result<Vec<Failure>, Missing> {
    let policy = snapshot.get(Source::AuthorizationPolicy)?;
    let assigned =
        strings(&policy["defaultUserRolePermissions"]["permissionGrantPoliciesAssigned"]);
    let self_consent: Vec<&str> = assigned
        .into_iter()
        // Microsoft spells it managePermissionGrantsForSelf.{id} in the documentation and
        // ManagePermissionGrantsForSelf.{id} in tenants: the prefix compares without case.
        .filter(|id| {
            id.get(..SELF_CONSENT.len())
                .is_some_and(|prefix| prefix.eq_ignore_ascii_case(SELF_CONSENT))
        })
        .collect();
    Ok(if self_consent.is_empty() {
        Vec::new()
    } else {
        vec![
            Failure::tenant_wide(snapshot).evidence("userConsentPolicies", self_consent.join(", ")),
        ]
    })
}

/// The application password restriction of `kind` in the default app management policy, when the
/// policy is enabled and the restriction on.
fn password_restriction<'s>(policy: &'s Value, kind: &str) -> Option<&'s Value> {
    if policy["isEnabled"] != true {
        return None;
    }
    policy["applicationRestrictions"]["passwordCredentials"]
        .as_array()?
        .iter()
        .find(|restriction| {
            restriction["restrictionType"] == kind && restriction["state"] == "enabled"
        })
}

fn app_password_addition_restricted(
    snapshot: &Snapshot,
    _check: &Check,
) -> Result<Vec<Failure>, Missing> {
    let policy = snapshot.get(Source::AppManagementPolicy)?;
    Ok(match password_restriction(policy, "passwordAddition") {
        Some(_) => Vec::new(),
        None => vec![
            Failure::tenant_wide(snapshot)
                .evidence("policyEnabled", &policy["isEnabled"])
                .evidence("passwordAddition", "not restricted"),
        ],
    })
}

/// Days in an ISO 8601 duration such as `P180D` or `P1Y` (years as 365 days, months as 30).
pub fn duration_days(value: &str) -> Option<i64> {
    let body = value.strip_prefix('P')?;
    let mut days = 0;
    let mut number = String::new();
    for character in body.chars() {
        match character {
            '0'..='9' => number.push(character),
            'Y' | 'M' | 'W' | 'D' => {
                let count: i64 = number.parse().ok()?;
                number.clear();
                days += count
                    * match character {
                        'Y' => 365,
                        'M' => 30,
                        'W' => 7,
                        _ => 1,
                    };
            }
            'T' => break,
            _ => return None,
        }
    }
    Some(days)
}

fn app_secret_lifetime_limited(
    snapshot: &Snapshot,
    check: &Check,
) -> Result<Vec<Failure>, Missing> {
    let policy = snapshot.get(Source::AppManagementPolicy)?;
    let max_days = check.number("max_days", 180);
    let limit = password_restriction(policy, "passwordLifetime")
        .and_then(|restriction| restriction["maxLifetime"].as_str())
        .and_then(duration_days);
    Ok(match limit {
        Some(days) if days <= max_days => Vec::new(),
        _ => vec![
            Failure::tenant_wide(snapshot)
                .evidence(
                    "maxLifetimeDays",
                    limit
                        .map(|days| days.to_string())
                        .unwrap_or("unlimited".into()),
                )
                .evidence("expectedMaxLifetimeDays", max_days),
        ],
    })
}

fn long_lived_app_secrets(snapshot: &Snapshot, check: &Check) -> Result<Vec<Failure>, Missing> {
    let max_days = check.number("max_days", 180);
    let mut failures = Vec::new();
    for application in snapshot.items(Source::Applications)? {
        let app_id = application["id"].as_str().unwrap_or_default();
        let name = application["displayName"].as_str().unwrap_or(app_id);
        for secret in application["passwordCredentials"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let (Some(start), Some(end)) = (
                timestamp(&secret["startDateTime"]),
                timestamp(&secret["endDateTime"]),
            ) else {
                continue;
            };
            let days = (end - start).num_days();
            if end <= snapshot.now || days <= max_days {
                continue;
            }
            let key_id = secret["keyId"].as_str().unwrap_or_default();
            failures.push(
                Failure::on(&format!("{app_id}/{key_id}"), name, "application", app_id)
                    .evidence("secret", secret["displayName"].as_str().unwrap_or(key_id))
                    .evidence("lifetimeDays", days)
                    .evidence("expires", end.to_rfc3339())
                    .fix("applicationId", app_id)
                    .fix("keyId", key_id),
            );
        }
    }
    Ok(failures)
}

/// The conditional access policy a `create_conditional_access_policy` fix creates, excluding the
/// break-glass accounts. Created in report-only mode, as Microsoft advises for a new policy: its
/// effect shows in the sign-in logs first, and enforcing it is a second recommendation.
pub fn ca_template(name: &str, break_glass: &[String]) -> Option<Value> {
    let block = json!({"operator": "OR", "builtInControls": ["block"]});
    let mfa = json!({"operator": "OR", "builtInControls": ["mfa"]});
    let all_users = json!({"includeUsers": ["All"], "excludeUsers": break_glass});
    let admins = json!({
        "includeRoles": PRIVILEGED_ROLES.iter().map(|(role, _)| *role).collect::<Vec<_>>(),
        "excludeUsers": break_glass,
    });
    let (display_name, users, extra, grant) = match name {
        "block-legacy-authentication" => (
            "Block legacy authentication",
            all_users,
            json!({"clientAppTypes": ["exchangeActiveSync", "other"]}),
            block,
        ),
        "require-mfa-all-users" => ("Require MFA for all users", all_users, json!({}), mfa),
        "require-mfa-admins" => ("Require MFA for administrators", admins, json!({}), mfa),
        "phishing-resistant-mfa-admins" => (
            "Require phishing-resistant MFA for administrators",
            admins,
            json!({}),
            json!({"operator": "OR", "authenticationStrength": {"id": "00000000-0000-0000-0000-000000000004"}}),
        ),
        "block-high-risk-users" => (
            "Block high-risk users",
            all_users,
            json!({"userRiskLevels": ["high"]}),
            block,
        ),
        "block-high-risk-sign-ins" => (
            "Block high-risk sign-ins",
            all_users,
            json!({"signInRiskLevels": ["high"]}),
            block,
        ),
        "block-device-code-flow" => (
            "Block device code flow",
            all_users,
            json!({"authenticationFlows": {"transferMethods": "deviceCodeFlow"}}),
            block,
        ),
        _ => return None,
    };
    let mut conditions = json!({
        "users": users,
        "applications": {"includeApplications": ["All"]},
        "clientAppTypes": ["all"],
    });
    if let (Some(conditions), Some(extra)) = (conditions.as_object_mut(), extra.as_object()) {
        conditions.extend(extra.clone());
    }
    Some(json!({
        "displayName": format!("{display_name} (Picket)"),
        "state": REPORT_ONLY,
        "conditions": conditions,
        "grantControls": grant,
    }))
}
