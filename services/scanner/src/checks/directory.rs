//! Facts about Entra ID the rules share: privileged roles, role holders, and how to read a
//! conditional access policy.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::checks::snapshot::{Missing, Snapshot, Source, strings};

/// Built-in role template ids (a built-in role's roleDefinitionId).
pub const GLOBAL_ADMINISTRATOR: &str = "62e90394-69f5-4237-9190-012177145e10";
/// Can change the sensitive properties of any user, administrators included.
pub const PRIVILEGED_AUTHENTICATION_ADMINISTRATOR: &str = "7be44c8a-adaf-4e2a-84d6-ab2649e08a13";

/// The highly privileged roles of CISA ScubaGear's AAD baseline, with their names.
pub const PRIVILEGED_ROLES: [(&str, &str); 9] = [
    (GLOBAL_ADMINISTRATOR, "Global Administrator"),
    (
        "e8611ab8-c189-46e8-94e1-60213ab1f814",
        "Privileged Role Administrator",
    ),
    ("fe930be7-5e62-47db-91af-98c3a49a38b1", "User Administrator"),
    (
        "f28a1f50-f6e7-4571-818b-6a12f2af6b6c",
        "SharePoint Administrator",
    ),
    (
        "29232cdf-9323-42fd-ade2-1d097af3e4de",
        "Exchange Administrator",
    ),
    (
        "8ac3fc64-6eca-42ea-9e69-59f4c7b60eb2",
        "Hybrid Identity Administrator",
    ),
    (
        "9b895d92-2cd3-44c7-9d02-a6ac2d5ea5c3",
        "Application Administrator",
    ),
    (
        "158c047a-c907-4556-b7ef-446551a6b5f7",
        "Cloud Application Administrator",
    ),
    (
        PRIVILEGED_AUTHENTICATION_ADMINISTRATOR,
        "Privileged Authentication Administrator",
    ),
];

pub fn privileged_role_name(role_id: &str) -> Option<&'static str> {
    PRIVILEGED_ROLES
        .iter()
        .find(|(id, _)| *id == role_id)
        .map(|(_, name)| *name)
}

/// What kind of directory object holds a role: the `@odata.type` of the assignment's expanded
/// principal (an assignment read without it is taken for a user's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PrincipalKind {
    #[default]
    User,
    Group,
    ServicePrincipal,
}

impl PrincipalKind {
    pub fn of(principal: &Value) -> PrincipalKind {
        match principal["@odata.type"].as_str() {
            Some("#microsoft.graph.group") => PrincipalKind::Group,
            Some("#microsoft.graph.servicePrincipal") => PrincipalKind::ServicePrincipal,
            _ => PrincipalKind::User,
        }
    }

    /// The kind as a finding's target type.
    pub fn target_type(self) -> &'static str {
        match self {
            PrincipalKind::User => "user",
            PrincipalKind::Group => "group",
            PrincipalKind::ServicePrincipal => "servicePrincipal",
        }
    }
}

/// A principal holding privileged roles tenant-wide.
#[derive(Debug, Clone, Default)]
pub struct Holder {
    pub kind: PrincipalKind,
    /// The principal's user principal name or display name, or its id when unknown.
    pub name: String,
    /// Role ids assigned to the principal itself, active or eligible.
    pub direct: Vec<String>,
    /// Of `direct`, the role ids the principal is eligible for through PIM.
    pub eligible: Vec<String>,
    /// For a member of role-holding groups: each group's name and the role ids it holds.
    pub through: Vec<(String, Vec<String>)>,
    /// For a group: whether its members were read (they hold its roles).
    pub members_read: bool,
}

impl Holder {
    /// Every privileged role id held, directly or through a group.
    pub fn roles(&self) -> Vec<String> {
        let mut roles = self.direct.clone();
        for role in self.through.iter().flat_map(|(_, roles)| roles) {
            if !roles.contains(role) {
                roles.push(role.clone());
            }
        }
        roles
    }

    pub fn holds(&self, role: &str) -> bool {
        self.roles().iter().any(|held| held == role)
    }

    /// A person (or a group whose members are unknown) rather than an app.
    pub fn counts_as_person(&self) -> bool {
        match self.kind {
            PrincipalKind::User => true,
            PrincipalKind::Group => !self.members_read,
            PrincipalKind::ServicePrincipal => false,
        }
    }
}

fn push_new(list: &mut Vec<String>, value: &str) {
    if !list.iter().any(|held| held == value) {
        list.push(value.to_owned());
    }
}

/// Every principal holding a privileged role tenant-wide: active assignments, eligibility through
/// Privileged Identity Management (an eligible Global Administrator is one activation away, and
/// counts as one), and the members of role-holding groups once their members are read.
pub fn privileged_holders(snapshot: &Snapshot) -> Result<BTreeMap<String, Holder>, Missing> {
    let mut holders: BTreeMap<String, Holder> = BTreeMap::new();
    for (source, eligible) in [
        (Source::RoleAssignments, false),
        (Source::RoleEligibilities, true),
    ] {
        for record in snapshot.items(source)? {
            let role = record["roleDefinitionId"].as_str().unwrap_or_default();
            let scope = record["directoryScopeId"].as_str().unwrap_or("/");
            let Some(id) = record["principalId"].as_str() else {
                continue;
            };
            if scope != "/" || privileged_role_name(role).is_none() {
                continue;
            }
            let principal = &record["principal"];
            let holder = holders.entry(id.to_owned()).or_insert_with(|| Holder {
                kind: PrincipalKind::of(principal),
                name: principal["userPrincipalName"]
                    .as_str()
                    .or_else(|| principal["displayName"].as_str())
                    .unwrap_or(id)
                    .to_owned(),
                ..Holder::default()
            });
            push_new(&mut holder.direct, role);
            if eligible {
                push_new(&mut holder.eligible, role);
            }
        }
    }
    // Read after the roles: until then the groups' members are unknown.
    let Ok(members) = snapshot.get(Source::PrivilegedGroupMembers) else {
        return Ok(holders);
    };
    let groups: Vec<(String, String, Vec<String>)> = holders
        .iter()
        .filter(|(_, holder)| holder.kind == PrincipalKind::Group)
        .map(|(id, group)| (id.clone(), group.name.clone(), group.direct.clone()))
        .collect();
    for (group_id, name, roles) in groups {
        let Some(read) = members.get(&group_id) else {
            continue;
        };
        for member in read["members"].as_array().into_iter().flatten() {
            let Some(id) = member["id"].as_str() else {
                continue;
            };
            holders
                .entry(id.to_owned())
                .or_insert_with(|| Holder {
                    kind: PrincipalKind::of(member),
                    name: id.to_owned(),
                    ..Holder::default()
                })
                .through
                .push((name.clone(), roles.clone()));
        }
        if let Some(group) = holders.get_mut(&group_id) {
            group.members_read = true;
        }
    }
    Ok(holders)
}

/// A conditional access policy's state when it is evaluated but not enforced.
pub const REPORT_ONLY: &str = "enabledForReportingButNotEnforced";

/// A conditional access policy, read the way CISA's "common CA conditions" read it.
pub struct Policy<'a>(pub &'a Value);

impl Policy<'_> {
    pub fn id(&self) -> &str {
        self.0["id"].as_str().unwrap_or_default()
    }

    pub fn name(&self) -> &str {
        self.0["displayName"].as_str().unwrap_or_default()
    }

    pub fn enforced(&self) -> bool {
        self.0["state"] == "enabled"
    }

    pub fn report_only(&self) -> bool {
        self.0["state"] == REPORT_ONLY
    }

    fn users(&self) -> &Value {
        &self.0["conditions"]["users"]
    }

    /// Includes all users, excluding no role or group and at most the break-glass accounts.
    pub fn targets_all_users(&self, break_glass: &BTreeSet<String>) -> bool {
        let users = self.users();
        strings(&users["includeUsers"]).contains(&"All")
            && strings(&users["excludeRoles"]).is_empty()
            && strings(&users["excludeGroups"]).is_empty()
            && strings(&users["excludeUsers"])
                .iter()
                .all(|user| break_glass.contains(*user))
    }

    /// Includes every privileged role.
    pub fn targets_privileged_roles(&self) -> bool {
        let included = strings(&self.users()["includeRoles"]);
        PRIVILEGED_ROLES
            .iter()
            .all(|(role, _)| included.contains(role))
    }

    pub fn targets_all_apps(&self) -> bool {
        let applications = &self.0["conditions"]["applications"];
        strings(&applications["includeApplications"]).contains(&"All")
            && strings(&applications["excludeApplications"]).is_empty()
    }

    pub fn grants(&self, control: &str) -> bool {
        strings(&self.0["grantControls"]["builtInControls"]).contains(&control)
    }

    pub fn requires_mfa(&self) -> bool {
        self.grants("mfa") || self.0["grantControls"]["authenticationStrength"].is_object()
    }

    /// Requires an authentication strength whose combinations are all phishing-resistant.
    pub fn requires_phishing_resistant_mfa(&self) -> bool {
        const RESISTANT: [&str; 3] = [
            "windowsHelloForBusiness",
            "fido2",
            "x509CertificateMultiFactor",
        ];
        let combinations =
            strings(&self.0["grantControls"]["authenticationStrength"]["allowedCombinations"]);
        !combinations.is_empty()
            && combinations
                .iter()
                .all(|combination| RESISTANT.contains(combination))
    }

    pub fn condition_includes(&self, condition: &str, value: &str) -> bool {
        strings(&self.0["conditions"][condition]).contains(&value)
    }

    pub fn excluded_users(&self) -> Vec<&str> {
        strings(&self.users()["excludeUsers"])
    }
}

/// The conditional access policies of the snapshot.
pub fn policies(snapshot: &Snapshot) -> Result<Vec<Policy<'_>>, Missing> {
    Ok(snapshot
        .items(Source::ConditionalAccessPolicies)?
        .iter()
        .map(Policy)
        .collect())
}
