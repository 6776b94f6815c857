//! A tenant's snapshot: the Graph data a scan read, by source, plus what the scanner knows about
//! the tenant. Checks and detections are pure functions of it.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

/// Something a scan reads. Collections are JSON arrays; `InboxRules`, `MailFolders` and
/// `SignInHistory` are objects keyed by user id, `PrivilegedGroupMembers` by group id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Users,
    Domains,
    AuthorizationPolicy,
    AuthenticationMethodsPolicy,
    AdminConsentPolicy,
    SecurityDefaults,
    AppManagementPolicy,
    ConditionalAccessPolicies,
    RoleAssignments,
    /// Eligibility for roles through Privileged Identity Management (Entra ID P2).
    RoleEligibilities,
    /// The members of each group holding a privileged role, keyed by group id.
    PrivilegedGroupMembers,
    Applications,
    ServicePrincipals,
    /// The application permissions (app roles) of Microsoft Graph and Exchange Online granted to
    /// apps: each assignment with its permission's name.
    AppRoleGrants,
    Oauth2Grants,
    SignIns,
    DirectoryAudits,
    RiskyUsers,
    InboxRules,
    MailFolders,
    DefenderAlerts,
    /// Countries each user signed in from before, kept by the scanner (not read from Graph).
    SignInHistory,
}

impl Source {
    /// The Graph request behind the source, for people (CheckDefinition.reads, scan errors).
    pub fn describe(self) -> &'static str {
        match self {
            Source::Users => "GET /users",
            Source::Domains => "GET /domains",
            Source::AuthorizationPolicy => "GET /policies/authorizationPolicy",
            Source::AuthenticationMethodsPolicy => "GET /policies/authenticationMethodsPolicy",
            Source::AdminConsentPolicy => "GET /policies/adminConsentRequestPolicy",
            Source::SecurityDefaults => "GET /policies/identitySecurityDefaultsEnforcementPolicy",
            Source::AppManagementPolicy => "GET /policies/defaultAppManagementPolicy",
            Source::ConditionalAccessPolicies => "GET /identity/conditionalAccess/policies",
            Source::RoleAssignments => "GET /roleManagement/directory/roleAssignments",
            Source::RoleEligibilities => {
                "GET /roleManagement/directory/roleEligibilityScheduleInstances"
            }
            Source::PrivilegedGroupMembers => "GET /groups/{id}/members",
            Source::Applications => "GET /applications",
            Source::ServicePrincipals => "GET /servicePrincipals",
            Source::AppRoleGrants => "GET /servicePrincipals/{id}/appRoleAssignedTo",
            Source::Oauth2Grants => "GET /oauth2PermissionGrants",
            Source::SignIns => "GET /auditLogs/signIns",
            Source::DirectoryAudits => "GET /auditLogs/directoryAudits",
            Source::RiskyUsers => "GET /identityProtection/riskyUsers",
            Source::InboxRules => "GET /users/{id}/mailFolders/inbox/messageRules",
            Source::MailFolders => "GET /users/{id}/mailFolders/{wellKnownName or id}",
            Source::DefenderAlerts => "GET /security/alerts_v2",
            Source::SignInHistory => "sign-in countries seen by Picket",
        }
    }

    /// The sources this one is read from (rules mailbox by mailbox from the users, folders from
    /// the rules, members from the groups holding roles) or with (eligible role holders with the
    /// active ones, members of the groups holding roles with the roles).
    pub fn dependencies(self) -> &'static [Source] {
        match self {
            Source::MailFolders => &[Source::InboxRules],
            Source::InboxRules => &[Source::Users],
            Source::PrivilegedGroupMembers => &[Source::RoleAssignments],
            Source::RoleAssignments => &[Source::RoleEligibilities, Source::PrivilegedGroupMembers],
            _ => &[],
        }
    }

    /// Log sources read by time window.
    pub fn windowed(self) -> bool {
        matches!(self, Source::SignIns | Source::DirectoryAudits)
    }
}

/// `sources` and every source they are read from or with, in reading order (a source after the
/// ones it is read from).
pub fn with_dependencies(sources: &BTreeSet<Source>) -> BTreeSet<Source> {
    let mut all = sources.clone();
    let mut pending: Vec<Source> = sources.iter().copied().collect();
    while let Some(source) = pending.pop() {
        for dependency in source.dependencies() {
            if all.insert(*dependency) {
                pending.push(*dependency);
            }
        }
    }
    all
}

/// A source a check needs could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{} could not be read: {reason}", .read.describe())]
pub struct Missing {
    pub read: Source,
    pub reason: String,
}

/// Everything a scan knows about a tenant when it evaluates.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// When the scan read the tenant.
    pub now: DateTime<Utc>,
    pub tenant_name: String,
    /// Picket's own app (its client id): the app whose permissions Picket acts with.
    pub app_id: String,
    /// Words that mark a break-glass account in a user principal name or display name.
    pub break_glass_patterns: Vec<String>,
    pub data: BTreeMap<Source, Result<Value, String>>,
    /// Sources not read because the tenant has not granted the permissions they need (named).
    pub denied: BTreeMap<Source, Vec<String>>,
}

impl Snapshot {
    pub fn new(
        now: DateTime<Utc>,
        tenant_name: &str,
        app_id: &str,
        break_glass_patterns: &[String],
    ) -> Snapshot {
        Snapshot {
            now,
            tenant_name: tenant_name.to_owned(),
            app_id: app_id.to_owned(),
            break_glass_patterns: break_glass_patterns.to_vec(),
            data: BTreeMap::new(),
            denied: BTreeMap::new(),
        }
    }

    /// The permissions missing to read `sources` and what they are read from, if any.
    pub fn missing_permissions(&self, sources: &[Source]) -> Vec<String> {
        let mut missing: Vec<String> = Vec::new();
        for source in with_dependencies(&sources.iter().copied().collect()) {
            for name in self.denied.get(&source).into_iter().flatten() {
                if !missing.contains(name) {
                    missing.push(name.clone());
                }
            }
        }
        missing
    }

    pub fn get(&self, source: Source) -> Result<&Value, Missing> {
        match self.data.get(&source) {
            Some(Ok(value)) => Ok(value),
            Some(Err(reason)) => Err(Missing {
                read: source,
                reason: reason.clone(),
            }),
            None => Err(Missing {
                read: source,
                reason: "not read by this scan".into(),
            }),
        }
    }

    /// The items of a collection source.
    pub fn items(&self, source: Source) -> Result<&[Value], Missing> {
        Ok(self
            .get(source)?
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default())
    }

    /// A settings object by its Graph path, as setting rules name it.
    pub fn resource(&self, path: &str) -> Result<&Value, Missing> {
        const METHOD_CONFIGURATIONS: &str =
            "/policies/authenticationMethodsPolicy/authenticationMethodConfigurations/";
        if let Some(method) = path.strip_prefix(METHOD_CONFIGURATIONS) {
            let policy = self.get(Source::AuthenticationMethodsPolicy)?;
            return Ok(policy["authenticationMethodConfigurations"]
                .as_array()
                .and_then(|methods| methods.iter().find(|config| config["id"] == method))
                .unwrap_or(&Value::Null));
        }
        let source = match path {
            "/policies/authorizationPolicy" => Source::AuthorizationPolicy,
            "/policies/authenticationMethodsPolicy" => Source::AuthenticationMethodsPolicy,
            "/policies/adminConsentRequestPolicy" => Source::AdminConsentPolicy,
            "/policies/identitySecurityDefaultsEnforcementPolicy" => Source::SecurityDefaults,
            "/policies/defaultAppManagementPolicy" => Source::AppManagementPolicy,
            _ => {
                return Err(Missing {
                    read: Source::AuthorizationPolicy,
                    reason: format!("{path} is not a known settings object"),
                });
            }
        };
        self.get(source)
    }

    /// Whether a settings path names an object `resource` can find.
    pub fn knows_resource(path: &str) -> bool {
        path.starts_with(
            "/policies/authenticationMethodsPolicy/authenticationMethodConfigurations/",
        ) || [
            "/policies/authorizationPolicy",
            "/policies/authenticationMethodsPolicy",
            "/policies/adminConsentRequestPolicy",
            "/policies/identitySecurityDefaultsEnforcementPolicy",
            "/policies/defaultAppManagementPolicy",
        ]
        .contains(&path)
    }

    /// Whether a user is a break-glass account, by name.
    pub fn is_break_glass(&self, user: &Value) -> bool {
        is_break_glass(&self.break_glass_patterns, user)
    }

    /// Ids of the break-glass accounts.
    pub fn break_glass_ids(&self) -> Result<BTreeSet<String>, Missing> {
        Ok(self
            .items(Source::Users)?
            .iter()
            .filter(|user| self.is_break_glass(user))
            .filter_map(|user| user["id"].as_str().map(str::to_owned))
            .collect())
    }

    /// Users by id.
    pub fn users_by_id(&self) -> Result<BTreeMap<&str, &Value>, Missing> {
        Ok(self
            .items(Source::Users)?
            .iter()
            .filter_map(|user| Some((user["id"].as_str()?, user)))
            .collect())
    }
}

/// Whether a user is a break-glass account: one of `patterns` appears in its user principal name
/// (local part, with or without separators) or display name, ignoring case.
pub fn is_break_glass(patterns: &[String], user: &Value) -> bool {
    let names = [
        user["userPrincipalName"].as_str().unwrap_or_default(),
        user["displayName"].as_str().unwrap_or_default(),
    ];
    names.iter().any(|name| {
        let name = name.to_lowercase();
        let local = name.split('@').next().unwrap_or_default();
        let squashed: String = local.chars().filter(|c| c.is_alphanumeric()).collect();
        patterns.iter().any(|word| {
            let word = word.to_lowercase();
            let word_squashed: String = word.chars().filter(|c| c.is_alphanumeric()).collect();
            local.contains(word.as_str()) || squashed.contains(&word_squashed)
        })
    })
}

/// The strings of a JSON array (missing or null = empty).
pub fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .map(|items| items.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// A Graph timestamp.
pub fn timestamp(value: &Value) -> Option<DateTime<Utc>> {
    value.as_str()?.parse().ok()
}
