//! Facts about Entra ID the rules share: privileged roles, role holders, and how to read a
//! conditional access policy.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::checks::snapshot::{Missing, Snapshot, Source, strings};

/// Built-in role template ids (a built-in role's roleDefinitionId).
pub const GLOBAL_ADMINISTRATOR: &str = "62e90394-69f5-4237-9190-012177145e10";

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
        "7be44c8a-adaf-4e2a-84d6-ab2649e08a13",
        "Privileged Authentication Administrator",
    ),
];

pub fn privileged_role_name(role_id: &str) -> Option<&'static str> {
    PRIVILEGED_ROLES
        .iter()
        .find(|(id, _)| *id == role_id)
        .map(|(_, name)| *name)
}

/// Privileged role ids each principal holds tenant-wide in `source`'s records.
fn holders_in(
    snapshot: &Snapshot,
    source: Source,
) -> Result<BTreeMap<String, Vec<String>>, Missing> {
    let mut holders: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for record in snapshot.items(source)? {
        let role = record["roleDefinitionId"].as_str().unwrap_or_default();
        let scope = record["directoryScopeId"].as_str().unwrap_or("/");
        if scope != "/" || privileged_role_name(role).is_none() {
            continue;
        }
        if let Some(principal) = record["principalId"].as_str() {
            let roles = holders.entry(principal.to_owned()).or_default();
            if !roles.iter().any(|held| held == role) {
                roles.push(role.to_owned());
            }
        }
    }
    Ok(holders)
}

/// Privileged role ids held by each principal tenant-wide: active assignments, and eligibility
/// through Privileged Identity Management (an eligible Global Administrator is one activation
/// away, and counts as one).
pub fn privileged_holders(snapshot: &Snapshot) -> Result<BTreeMap<String, Vec<String>>, Missing> {
    let mut holders = holders_in(snapshot, Source::RoleAssignments)?;
    for (principal, roles) in eligible_holders(snapshot)? {
        let held = holders.entry(principal).or_default();
        for role in roles {
            if !held.contains(&role) {
                held.push(role);
            }
        }
    }
    Ok(holders)
}

/// Privileged role ids each principal is eligible for through PIM.
pub fn eligible_holders(snapshot: &Snapshot) -> Result<BTreeMap<String, Vec<String>>, Missing> {
    holders_in(snapshot, Source::RoleEligibilities)
}

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
