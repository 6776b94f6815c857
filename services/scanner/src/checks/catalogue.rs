//! The check catalogue, loaded from `catalogue.toml`: themes, checks and detections with their
//! framework references, sources, licences, fixes and rules, validated at start.

use std::collections::{BTreeMap, BTreeSet};

use picket_proto::common::v1 as common;
use picket_proto::findings::v1 as findings;
use picket_proto::fixes::v1 as fixes;
use serde::Deserialize;
use serde_json::Value;

use crate::checks::permissions::{
    Connection, Permission, Permissions, ResourceApp, SourcePermissions,
};
use crate::checks::snapshot::{Snapshot, Source, with_dependencies};
use crate::checks::{Evaluator, apps, detections, rules};

const BUILTIN: &str = include_str!("../../catalogue.toml");

#[derive(Debug, Clone, Deserialize)]
pub struct Theme {
    pub id: String,
    pub title: String,
    pub description: String,
    pub order: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Configuration,
    Monitoring,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Framework {
    Cisa,
    Cis,
    Mitre,
    Microsoft,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Reference {
    pub framework: Framework,
    pub control: String,
    pub title: String,
}

/// The change a fix makes, as `fixes.v1.FixAction`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    UpdateSetting,
    CreateConditionalAccessPolicy,
    EnableConditionalAccessPolicy,
    DisableUser,
    RevokeSessions,
    DeleteInboxRule,
    RevokeOauthGrant,
    RemoveAppCredential,
    RemoveRoleAssignment,
    ConfirmUserCompromised,
    IsolateDevice,
    DisableApp,
    Manual,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Fix {
    pub action: Action,
    /// The conditional access template a `create_conditional_access_policy` fix creates.
    #[serde(default)]
    pub template: Option<String>,
    pub description: String,
    #[serde(default)]
    pub writes: Vec<String>,
    #[serde(default)]
    pub permissions: Vec<String>,
    #[serde(default)]
    pub impact: String,
    #[serde(default)]
    pub reversible: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Write {
    Patch,
    Put,
}

/// One property of a settings object: the values that pass and the one the fix writes.
#[derive(Debug, Clone, Deserialize)]
pub struct Condition {
    pub pointer: String,
    pub passes: Vec<Value>,
    pub desired: Value,
    /// What Microsoft documents an absent or null value to mean, where it says.
    #[serde(default)]
    pub absent: Option<Absent>,
}

/// The documented meaning of an absent or null property: whether it passes, and why.
#[derive(Debug, Clone, Deserialize)]
pub struct Absent {
    pub passes: bool,
    pub meaning: String,
}

/// A setting that applies only while another property of its object has a value (CISA's
/// MS.AAD.3.3 only where Microsoft Authenticator is enabled); otherwise not applicable, for the
/// reason given.
#[derive(Debug, Clone, Deserialize)]
pub struct OnlyWhen {
    pub pointer: String,
    pub equals: Value,
    pub otherwise: String,
}

/// A declarative rule over one settings object.
#[derive(Debug, Clone, Deserialize)]
pub struct Setting {
    pub resource: String,
    pub write: Write,
    pub conditions: Vec<Condition>,
    #[serde(default)]
    pub only_when: Option<OnlyWhen>,
    /// The resource's derived type, which a write to a resource of an abstract type must name
    /// (`@odata.type`, such as `#microsoft.graph.smsAuthenticationMethodConfiguration`).
    #[serde(default)]
    pub odata_type: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Plan {
    Essentials,
    Standard,
    Premium,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Check {
    pub id: String,
    pub title: String,
    pub description: String,
    pub theme: String,
    pub kind: Kind,
    pub severity: Severity,
    pub references: Vec<Reference>,
    pub reads: Vec<Source>,
    pub rule: String,
    #[serde(default)]
    pub service_plans: Vec<String>,
    #[serde(default)]
    pub plans: Vec<Plan>,
    #[serde(default)]
    pub evaluator: Option<String>,
    #[serde(default)]
    pub setting: Option<Setting>,
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
    #[serde(default)]
    pub window_seconds: u32,
    #[serde(default = "first_version")]
    pub version: u32,
    pub fix: Fix,
}

fn first_version() -> u32 {
    1
}

impl Check {
    /// A numeric parameter of the rule (thresholds live in the catalogue, not the code).
    pub fn number(&self, name: &str, default: i64) -> i64 {
        self.parameters
            .get(name)
            .and_then(|value| value.parse().ok())
            .unwrap_or(default)
    }

    /// Why the check does not apply to a tenant, if it does not.
    pub fn not_applicable(&self, plan: Plan, service_plans: &BTreeSet<String>) -> Option<String> {
        if !self.plans.is_empty() && !self.plans.contains(&plan) {
            return Some(format!(
                "the {} plan does not include this check",
                format!("{plan:?}").to_lowercase()
            ));
        }
        if !self.service_plans.is_empty()
            && !self
                .service_plans
                .iter()
                .any(|needed| service_plans.contains(needed))
        {
            return Some(format!(
                "needs a licence with one of {}",
                self.service_plans.join(", ")
            ));
        }
        None
    }

    pub fn evaluator(&self) -> Option<Evaluator> {
        let name = self.evaluator.as_deref()?;
        rules::evaluator(name)
            .or_else(|| detections::evaluator(name))
            .or_else(|| apps::evaluator(name))
    }

    /// Windowed detections publish each occurrence once and never clear by absence.
    pub fn windowed(&self) -> bool {
        self.window_seconds > 0
    }

    pub fn proto_kind(&self) -> common::FindingKind {
        match self.kind {
            Kind::Configuration => common::FindingKind::Configuration,
            Kind::Monitoring => common::FindingKind::Monitoring,
        }
    }

    pub fn proto_references(&self) -> Vec<findings::FrameworkReference> {
        self.references
            .iter()
            .map(|reference| findings::FrameworkReference {
                framework: reference.framework.to_proto().into(),
                control_id: reference.control.clone(),
                title: reference.title.clone(),
                url: reference.framework.url(&reference.control),
            })
            .collect()
    }

    pub fn to_proto(&self) -> findings::CheckDefinition {
        findings::CheckDefinition {
            check_id: self.id.clone(),
            title: self.title.clone(),
            description: self.description.clone(),
            theme: self.theme.clone(),
            kind: self.proto_kind().into(),
            severity: self.severity.to_proto().into(),
            references: self.proto_references(),
            reads: self
                .reads
                .iter()
                .map(|source| source.describe().to_owned())
                .collect(),
            rule: self.rule.clone(),
            required_service_plans: self.service_plans.clone(),
            fix: Some(findings::FixDefinition {
                action: self.fix.action.to_proto().into(),
                description: self.fix.description.clone(),
                writes: self.fix.writes.clone(),
                permissions: self.fix.permissions.clone(),
                impact: self.fix.impact.clone(),
                reversible: self.fix.reversible,
            }),
            version: self.version,
            window_seconds: self.window_seconds,
        }
    }
}

impl Severity {
    pub fn to_proto(self) -> common::Severity {
        match self {
            Severity::Low => common::Severity::Low,
            Severity::Medium => common::Severity::Medium,
            Severity::High => common::Severity::High,
            Severity::Critical => common::Severity::Critical,
        }
    }
}

impl Framework {
    fn to_proto(self) -> findings::Framework {
        match self {
            Framework::Cisa => findings::Framework::CisaScubagear,
            Framework::Cis => findings::Framework::CisM365,
            Framework::Mitre => findings::Framework::MitreAttack,
            Framework::Microsoft => findings::Framework::Microsoft,
        }
    }

    fn url(self, control: &str) -> String {
        match self {
            Framework::Cisa => {
                "https://github.com/cisagov/ScubaGear/blob/main/PowerShell/ScubaGear/baselines/aad.md"
                    .to_owned()
            }
            Framework::Cis => "https://www.cisecurity.org/benchmark/microsoft_365".to_owned(),
            Framework::Mitre => format!(
                "https://attack.mitre.org/techniques/{}/",
                control.replace('.', "/")
            ),
            Framework::Microsoft => String::new(),
        }
    }
}

impl Action {
    pub fn to_proto(self) -> fixes::FixAction {
        match self {
            Action::UpdateSetting => fixes::FixAction::UpdateSetting,
            Action::CreateConditionalAccessPolicy => {
                fixes::FixAction::CreateConditionalAccessPolicy
            }
            Action::EnableConditionalAccessPolicy => {
                fixes::FixAction::EnableConditionalAccessPolicy
            }
            Action::DisableUser => fixes::FixAction::DisableUser,
            Action::RevokeSessions => fixes::FixAction::RevokeSessions,
            Action::DeleteInboxRule => fixes::FixAction::DeleteInboxRule,
            Action::RevokeOauthGrant => fixes::FixAction::RevokeOauthGrant,
            Action::RemoveAppCredential => fixes::FixAction::RemoveAppCredential,
            Action::RemoveRoleAssignment => fixes::FixAction::RemoveRoleAssignment,
            Action::ConfirmUserCompromised => fixes::FixAction::ConfirmUserCompromised,
            Action::IsolateDevice => fixes::FixAction::IsolateDevice,
            Action::DisableApp => fixes::FixAction::DisableApp,
            Action::Manual => fixes::FixAction::Manual,
        }
    }
}

#[derive(Debug, Deserialize)]
struct CatalogueFile {
    api: Vec<ResourceApp>,
    permission: Vec<Permission>,
    connection: Connection,
    source: Vec<SourcePermissions>,
    theme: Vec<Theme>,
    check: Vec<Check>,
}

#[derive(Debug, Clone)]
pub struct Catalogue {
    themes: Vec<Theme>,
    checks: Vec<Check>,
    permissions: Permissions,
}

#[derive(Debug, thiserror::Error)]
#[error("check catalogue: {0}")]
pub struct CatalogueError(String);

impl Catalogue {
    /// The catalogue shipped with the scanner.
    pub fn builtin() -> Result<Catalogue, CatalogueError> {
        Catalogue::parse(BUILTIN)
    }

    pub fn parse(text: &str) -> Result<Catalogue, CatalogueError> {
        let file: CatalogueFile =
            toml::from_str(text).map_err(|error| CatalogueError(error.to_string()))?;
        let permissions = Permissions::new(file.api, file.permission, file.connection, file.source)
            .map_err(CatalogueError)?;
        let mut themes = file.theme;
        themes.sort_by_key(|theme| theme.order);
        let theme_order: BTreeMap<&str, u32> = themes
            .iter()
            .map(|theme| (theme.id.as_str(), theme.order))
            .collect();
        let mut seen = BTreeSet::new();
        for check in &file.check {
            let fail = |reason: &str| Err(CatalogueError(format!("{}: {reason}", check.id)));
            if !seen.insert(check.id.as_str()) {
                return fail("appears twice");
            }
            if !theme_order.contains_key(check.theme.as_str()) {
                return fail("names an unknown theme");
            }
            let reads = with_dependencies(&check.reads.iter().copied().collect());
            if let Some(unknown) = reads.iter().find(|source| !permissions.knows(**source)) {
                return fail(&format!(
                    "reads {}, whose permissions the catalogue does not name",
                    unknown.describe()
                ));
            }
            if let Err(error) = permissions.validate(&check.fix.permissions, "its fix") {
                return fail(&error);
            }
            match (&check.evaluator, &check.setting) {
                (Some(_), None) if check.evaluator().is_none() => {
                    return fail("names an unknown evaluator");
                }
                (Some(_), None) => {}
                (None, Some(setting)) if !Snapshot::knows_resource(&setting.resource) => {
                    return fail("names an unknown settings object");
                }
                (None, Some(_)) => {}
                _ => return fail("needs exactly one of evaluator and setting"),
            }
            if check.fix.action == Action::CreateConditionalAccessPolicy
                && check
                    .fix
                    .template
                    .as_deref()
                    .is_none_or(|template| rules::ca_template(template, &[]).is_none())
            {
                return fail("names no known conditional access template");
            }
        }
        let mut checks = file.check;
        checks.sort_by(|a, b| {
            (theme_order[a.theme.as_str()], &a.id).cmp(&(theme_order[b.theme.as_str()], &b.id))
        });
        Ok(Catalogue {
            themes,
            checks,
            permissions,
        })
    }

    pub fn permissions(&self) -> &Permissions {
        &self.permissions
    }

    /// Every permission Picket's app needs in a tenant.
    pub fn needed_permissions(&self) -> Vec<String> {
        self.permissions.needed(&self.fix_permissions())
    }

    /// Each check's fix and the permissions it needs, for the permission documents.
    pub fn fix_permissions(&self) -> Vec<(&str, &[String])> {
        self.checks
            .iter()
            .filter(|check| !check.fix.permissions.is_empty())
            .map(|check| (check.id.as_str(), check.fix.permissions.as_slice()))
            .collect()
    }

    pub fn themes(&self) -> &[Theme] {
        &self.themes
    }

    /// Checks ordered by theme order then id.
    pub fn checks(&self) -> &[Check] {
        &self.checks
    }

    pub fn check(&self, check_id: &str) -> Option<&Check> {
        self.checks.iter().find(|check| check.id == check_id)
    }

    pub fn theme_order(&self, theme_id: &str) -> u32 {
        self.themes
            .iter()
            .find(|theme| theme.id == theme_id)
            .map(|theme| theme.order)
            .unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_catalogue_loads_with_enough_checks_and_detections() {
        let catalogue = Catalogue::builtin().expect("the shipped catalogue is valid");
        let count = |kind: Kind| {
            catalogue
                .checks()
                .iter()
                .filter(|check| check.kind == kind)
                .count()
        };
        assert!(count(Kind::Configuration) >= 25);
        assert!(count(Kind::Monitoring) >= 10);
        assert!(
            catalogue
                .checks()
                .iter()
                .all(|check| !check.references.is_empty())
        );
    }

    #[test]
    fn a_check_naming_an_unknown_rule_is_refused() {
        let text = BUILTIN.replace(
            "evaluator = \"legacy_auth_blocked\"",
            "evaluator = \"no_such_rule\"",
        );
        let error = Catalogue::parse(&text).expect_err("unknown evaluator");
        assert!(
            error.to_string().contains("aad.legacy-auth-blocked"),
            "{error}"
        );
    }
}
