//! Checks and detections: the catalogue as data, and pure functions of a tenant snapshot that say
//! which subjects fail. Nothing here does I/O.

pub mod catalogue;
pub mod detections;
pub mod directory;
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
    let failures = match (&check.setting, check.evaluator()) {
        (Some(setting), _) => evaluate_setting(setting, snapshot),
        (None, Some(evaluator)) => evaluator(snapshot, check),
        (None, None) => Ok(Vec::new()),
    };
    match failures {
        Ok(failures) if failures.is_empty() => Outcome::Passed,
        Ok(failures) => Outcome::Failed(failures),
        Err(missing) => Outcome::Error(missing),
    }
}

/// A declarative setting fails (once, tenant-wide) when any condition does not hold.
fn evaluate_setting(setting: &Setting, snapshot: &Snapshot) -> Result<Vec<Failure>, Missing> {
    let object = snapshot.resource(&setting.resource)?;
    let mut failure = Failure::tenant_wide(snapshot).fix("path", &setting.resource);
    let mut failing = false;
    for condition in &setting.conditions {
        let actual = object.pointer(&condition.pointer).unwrap_or(&Value::Null);
        if !condition.passes.contains(actual) {
            failing = true;
            failure = failure
                .evidence(&format!("currentValue{}", condition.pointer), actual)
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
