//! Checks and detections: the catalogue as data, and pure functions of a tenant snapshot that say
//! which subjects fail. Nothing here does I/O.

pub mod apps;
pub mod catalogue;
pub mod detections;
pub mod directory;
pub mod permissions;
pub mod rules;
pub mod snapshot;

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::checks::catalogue::{Action, Check, Plan, Setting, Severity};
use crate::checks::snapshot::{Missing, Snapshot};

/// A rule written as code: the failing subjects of a snapshot.
pub type Evaluator = fn(&Snapshot, &Check) -> Result<Vec<Failure>, Missing>;

/// One failing subject of a check: a user, a policy, a rule, or the tenant itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// Stable key of the subject within the check; the fingerprint is built from it.
    pub subject: String,
    pub target: String,
    pub target_type: String,
    pub target_id: String,
    pub evidence: BTreeMap<String, String>,
    pub fix_parameters: BTreeMap<String, String>,
    /// When the subject needs another action than the check's fix (a deleted policy cannot be
    /// re-enabled, for example).
    pub fix_action: Option<Action>,
    /// With `fix_action`: what that other action does, for people.
    pub fix_description: Option<String>,
    pub severity: Option<Severity>,
    /// For windowed detections: what happened (a sign-in id, an audit record id), published once.
    pub occurrence: Option<String>,
    pub activity_at: Option<DateTime<Utc>>,
}

impl Failure {
    pub fn on(subject: &str, target: &str, target_type: &str, target_id: &str) -> Failure {
        Failure {
            subject: subject.to_owned(),
            target: target.to_owned(),
            target_type: target_type.to_owned(),
            target_id: target_id.to_owned(),
            evidence: BTreeMap::new(),
            fix_parameters: BTreeMap::new(),
            fix_action: None,
            fix_description: None,
            severity: None,
            occurrence: None,
            activity_at: None,
        }
    }

    /// A failure of a tenant-wide setting.
    pub fn tenant_wide(snapshot: &Snapshot) -> Failure {
        Failure::on("tenant", &snapshot.tenant_name, "organization", "")
    }

    pub fn evidence(mut self, key: &str, value: impl ToString) -> Failure {
        self.evidence.insert(key.to_owned(), value.to_string());
        self
    }

    pub fn fix(mut self, key: &str, value: impl ToString) -> Failure {
        self.fix_parameters
            .insert(key.to_owned(), value.to_string());
        self
    }

    pub fn happened(mut self, occurrence: &str, at: Option<DateTime<Utc>>) -> Failure {
        self.occurrence = Some(occurrence.to_owned());
        self.activity_at = at;
        self
    }
}

/// The result of one check for one tenant.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Passed,
    Failed(Vec<Failure>),
    NotApplicable(String),
    /// The tenant has not granted the permissions the check's reads need.
    NotEvaluated(String),
    Error(Missing),
}

/// Evaluates one check over a snapshot, for a tenant on `plan` holding `service_plans`.
pub fn evaluate(
    check: &Check,
    snapshot: &Snapshot,
    plan: Plan,
    service_plans: &BTreeSet<String>,
) -> Outcome {
    if let Some(reason) = check.not_applicable(plan, service_plans) {
        return Outcome::NotApplicable(reason);
    }
    let missing = snapshot.missing_permissions(&check.reads);
    if !missing.is_empty() {
        return Outcome::NotEvaluated(format!("missing permission {}", missing.join(", ")));
    }
    let failures = match (&check.setting, check.evaluator()) {
        (Some(setting), _) => match inapplicable(setting, snapshot) {
            Ok(Some(reason)) => return Outcome::NotApplicable(reason),
            Ok(None) => evaluate_setting(setting, snapshot),
            Err(missing) => Err(missing),
        },
        (None, Some(evaluator)) => evaluator(snapshot, check),
        (None, None) => Ok(Vec::new()),
    };
    match failures {
        Ok(failures) if failures.is_empty() => Outcome::Passed,
        Ok(failures) => Outcome::Failed(failures),
        Err(missing) => Outcome::Error(missing),
    }
}

/// Why a declarative setting does not apply to this tenant's object, if it does not.
fn inapplicable(setting: &Setting, snapshot: &Snapshot) -> Result<Option<String>, Missing> {
    let Some(only_when) = &setting.only_when else {
        return Ok(None);
    };
    let object = snapshot.resource(&setting.resource)?;
    let actual = object.pointer(&only_when.pointer).unwrap_or(&Value::Null);
    Ok((!same_value(actual, &only_when.equals)).then(|| only_when.otherwise.clone()))
}

/// Microsoft's enumerations and names compare without regard to case.
fn same_value(actual: &Value, expected: &Value) -> bool {
    match (actual.as_str(), expected.as_str()) {
        (Some(actual), Some(expected)) => actual.eq_ignore_ascii_case(expected),
        _ => actual == expected,
    }
}

/// A declarative setting fails (once, tenant-wide) when any condition does not hold. An absent or
/// null value takes its documented meaning where the catalogue states one, and the evidence says
/// which.
fn evaluate_setting(setting: &Setting, snapshot: &Snapshot) -> Result<Vec<Failure>, Missing> {
    let object = snapshot.resource(&setting.resource)?;
    let mut failure = Failure::tenant_wide(snapshot).fix("path", &setting.resource);
    let mut failing = false;
    for condition in &setting.conditions {
        let actual = object.pointer(&condition.pointer).unwrap_or(&Value::Null);
        let (passes, shown) = match (actual, &condition.absent) {
            (Value::Null, Some(absent)) => (absent.passes, format!("null ({})", absent.meaning)),
            _ => (
                condition
                    .passes
                    .iter()
                    .any(|passing| same_value(actual, passing)),
                actual.to_string(),
            ),
        };
        if !passes {
            failing = true;
            failure = failure
                .evidence(&format!("currentValue{}", condition.pointer), shown)
                .evidence(
                    &format!("expectedValue{}", condition.pointer),
                    &condition.desired,
                );
        }
    }
    Ok(if failing { vec![failure] } else { Vec::new() })
}

/// The fingerprint of (tenant, check, subject): stable across scans, as it holds no volatile field.
pub fn fingerprint(tenant_id: &str, check_id: &str, subject: &str) -> String {
    let mut hasher = Sha256::new();
    for part in [tenant_id, check_id, subject] {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    hasher
        .finalize()
        .iter()
        .take(16)
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::checks::catalogue::Catalogue;
    use crate::checks::snapshot::Source;

    /// The verdict of `check_id` over a snapshot holding `data`.
    fn verdict(check_id: &str, data: &[(Source, Value)]) -> Outcome {
        let catalogue = Catalogue::builtin().expect("the shipped catalogue");
        let check = catalogue
            .checks()
            .iter()
            .find(|check| check.id == check_id)
            .expect("the check");
        let mut snapshot = Snapshot::new(Utc::now(), "Contoso", "picket-app", &[]);
        for (source, value) in data {
            snapshot.data.insert(*source, Ok(value.clone()));
        }
        let service_plans = ["AAD_PREMIUM", "AAD_PREMIUM_P2"]
            .into_iter()
            .map(str::to_owned)
            .collect();
        evaluate(check, &snapshot, Plan::Premium, &service_plans)
    }

    fn authenticator(state: &str, context: &str) -> (Source, Value) {
        let required = json!({"state": context});
        (
            Source::AuthenticationMethodsPolicy,
            json!({"authenticationMethodConfigurations": [{
                "@odata.type": "#microsoft.graph.microsoftAuthenticatorAuthenticationMethodConfiguration",
                "id": "MicrosoftAuthenticator",
                "state": state,
                "featureSettings": {
                    "displayAppInformationRequiredState": required,
                    "displayLocationInformationRequiredState": required,
                },
            }]}),
        )
    }

    #[test]
    fn sign_in_context_is_judged_only_where_authenticator_is_enabled() {
        let check = "aad.authenticator-shows-context";
        assert!(matches!(
            verdict(check, &[authenticator("disabled", "default")]),
            Outcome::NotApplicable(reason) if reason.contains("MS.AAD.3.3")
        ));
        assert!(matches!(
            verdict(check, &[authenticator("enabled", "default")]),
            Outcome::Failed(_)
        ));
        assert_eq!(
            verdict(check, &[authenticator("enabled", "enabled")]),
            Outcome::Passed
        );
    }

    fn authorization_policy(policy: Value) -> [(Source, Value); 1] {
        [(Source::AuthorizationPolicy, policy)]
    }

    #[test]
    fn self_consent_policies_are_recognised_in_either_spelling() {
        let check = "aad.user-consent-restricted";
        for assigned in [
            "ManagePermissionGrantsForSelf.microsoft-user-default-legacy",
            "managePermissionGrantsForSelf.microsoft-user-default-low",
        ] {
            let policy = json!({"defaultUserRolePermissions": {
                "permissionGrantPoliciesAssigned": [assigned],
            }});
            assert!(
                matches!(
                    verdict(check, &authorization_policy(policy)),
                    Outcome::Failed(_)
                ),
                "{assigned}"
            );
        }
        let owners_only = json!({"defaultUserRolePermissions": {
            "permissionGrantPoliciesAssigned": ["ManagePermissionGrantsForOwnedResource.microsoft-dynamically-managed-permissions-for-team"],
        }});
        assert_eq!(
            verdict(check, &authorization_policy(owners_only)),
            Outcome::Passed
        );
    }

    #[test]
    fn msonline_left_unset_passes_as_the_module_is_retired() {
        let check = "aad.msol-powershell-blocked";
        for unset in [json!({"blockMsolPowerShell": null}), json!({})] {
            assert_eq!(
                verdict(check, &authorization_policy(unset.clone())),
                Outcome::Passed,
                "{unset}"
            );
        }
        assert_eq!(
            verdict(
                check,
                &authorization_policy(json!({"blockMsolPowerShell": true}))
            ),
            Outcome::Passed
        );
        assert!(matches!(
            verdict(
                check,
                &authorization_policy(json!({"blockMsolPowerShell": false}))
            ),
            Outcome::Failed(_)
        ));
    }

    #[test]
    fn an_unset_password_lifetime_is_stated_as_the_90_day_default() {
        let domains = json!([{
            "id": "contoso.com", "isVerified": true, "authenticationType": "Managed",
            "passwordValidityPeriodInDays": null,
        }]);
        let Outcome::Failed(failures) =
            verdict("aad.passwords-never-expire", &[(Source::Domains, domains)])
        else {
            panic!("a domain whose passwords expire");
        };
        assert_eq!(
            failures[0].evidence["passwordValidityPeriodInDays"],
            "null (the default: passwords expire after 90 days)"
        );
    }
}
