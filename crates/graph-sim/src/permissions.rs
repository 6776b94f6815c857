//! The application permissions each endpoint accepts, transcribed from the "Permissions" table
//! of its Microsoft documentation (Graph v1.0 API reference; Defender for Endpoint's API
//! reference): a request is admitted when the token's `roles` hold, for every requirement, one of
//! the permissions it lists (least privileged first). A tenant grants every permission named here
//! unless a test grants it fewer, as an administrator consenting to an older app registration
//! would.

use std::collections::BTreeSet;

use axum::http::Method;

use crate::state::Audience;

/// One requirement: any one of these permissions meets it.
type AnyOf = &'static [&'static str];

const ORGANIZATION: AnyOf = &[
    "Organization.Read.All",
    "Organization.ReadWrite.All",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
];
const USERS: AnyOf = &[
    "User.Read.All",
    "User.ReadWrite.All",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
];
const AUDIT_LOGS: AnyOf = &["AuditLog.Read.All"];
const DOMAINS: AnyOf = &[
    "Domain.Read.All",
    "Domain.ReadWrite.All",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
];
const POLICIES: AnyOf = &["Policy.Read.All"];
const AUTHENTICATION_METHODS: AnyOf = &[
    "Policy.Read.AuthenticationMethod",
    "Policy.ReadWrite.AuthenticationMethod",
    "Policy.Read.All",
];
const ROLE_ASSIGNMENTS: AnyOf = &[
    "RoleManagement.Read.Directory",
    "RoleManagement.Read.All",
    "RoleManagement.ReadWrite.Directory",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
];
const ROLE_ELIGIBILITIES: AnyOf = &[
    "RoleEligibilitySchedule.Read.Directory",
    "RoleEligibilitySchedule.ReadWrite.Directory",
    "RoleManagement.Read.All",
    "RoleManagement.Read.Directory",
    "RoleManagement.ReadWrite.Directory",
];
const APPLICATIONS: AnyOf = &[
    "Application.Read.All",
    "Application.ReadWrite.All",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
];
const GROUP_MEMBERS: AnyOf = &[
    "GroupMember.Read.All",
    "Group.Read.All",
    "Directory.Read.All",
    "GroupMember.ReadWrite.All",
    "Group.ReadWrite.All",
    "Directory.ReadWrite.All",
];
const GRANTS: AnyOf = &[
    "Directory.Read.All",
    "DelegatedPermissionGrant.ReadWrite.All",
    "Directory.ReadWrite.All",
];
const RISKY_USERS: AnyOf = &[
    "IdentityRiskyUser.Read.All",
    "IdentityRiskyUser.ReadWrite.All",
];
const ALERTS: AnyOf = &["SecurityAlert.Read.All", "SecurityAlert.ReadWrite.All"];
const MAILBOX_SETTINGS: AnyOf = &["MailboxSettings.Read", "MailboxSettings.ReadWrite"];
const MAIL_FOLDERS: AnyOf = &["Mail.ReadBasic.All", "Mail.Read", "Mail.ReadWrite"];
const MACHINES: AnyOf = &["Machine.Read.All", "Machine.ReadWrite.All"];
const MACHINE_ISOLATE: AnyOf = &["Machine.Isolate"];

/// Every permission this table names: what a tenant grants by default.
pub fn all() -> BTreeSet<String> {
    [
        ORGANIZATION,
        USERS,
        AUDIT_LOGS,
        DOMAINS,
        POLICIES,
        AUTHENTICATION_METHODS,
        ROLE_ASSIGNMENTS,
        ROLE_ELIGIBILITIES,
        APPLICATIONS,
        GROUP_MEMBERS,
        GRANTS,
        RISKY_USERS,
        ALERTS,
        MAILBOX_SETTINGS,
        MAIL_FOLDERS,
        MACHINES,
        &[
            "User.EnableDisableAccount.All",
            "User.RevokeSessions.All",
            "Domain.ReadWrite.All",
            "Policy.ReadWrite.Authorization",
            "Policy.ReadWrite.AuthenticationMethod",
            "Policy.ReadWrite.ConsentRequest",
            "Policy.ReadWrite.ConditionalAccess",
            "Policy.ReadWrite.ApplicationConfiguration",
            "RoleManagement.ReadWrite.Directory",
            "Application.ReadWrite.All",
            "DelegatedPermissionGrant.ReadWrite.All",
            "IdentityRiskyUser.ReadWrite.All",
            "MailboxSettings.ReadWrite",
        ],
        MACHINE_ISOLATE,
    ]
    .iter()
    .flat_map(|names| names.iter().map(|name| (*name).to_owned()))
    .collect()
}

/// The permissions of `granted` that are app roles of `audience`'s API: what a token for it
/// carries (Entra puts only the roles of the resource a token is for in its `roles`).
pub fn of_audience(audience: Audience, granted: &BTreeSet<String>) -> BTreeSet<String> {
    let defender = |name: &String| {
        [MACHINES, MACHINE_ISOLATE]
            .iter()
            .any(|names| names.contains(&name.as_str()))
    };
    granted
        .iter()
        .filter(|name| defender(name) == (audience == Audience::Defender))
        .cloned()
        .collect()
}

/// What a request needs: every requirement met by one of its permissions. `path` is without
/// `/v1.0`; `selects_activity` when `$select` names `signInActivity`.
fn requirements(
    audience: Audience,
    method: &Method,
    path: &str,
    selects_activity: bool,
) -> Vec<AnyOf> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let read = method == Method::GET;
    if audience == Audience::Defender {
        return match (segments.as_slice(), read) {
            (["api", "machines", _, "isolate" | "unisolate"], false) => vec![MACHINE_ISOLATE],
            (["api", "machines" | "machineactions", ..], true) => vec![MACHINES],
            _ => Vec::new(),
        };
    }
    match (segments.as_slice(), read) {
        (["organization"] | ["subscribedSkus"], true) => vec![ORGANIZATION],
        (["users"] | ["users", _], true) if selects_activity => vec![USERS, AUDIT_LOGS],
        (["users"] | ["users", _], true) => vec![USERS],
        (["users", _], false) => vec![
            &[
                "User.EnableDisableAccount.All",
                "User.ReadWrite.All",
                "Directory.ReadWrite.All",
            ],
            USERS,
        ],
        (["users", _, "revokeSignInSessions"], false) => vec![&[
            "User.RevokeSessions.All",
            "User.ReadWrite.All",
            "Directory.ReadWrite.All",
        ]],
        (["users", _, "mailFolders", "inbox", "messageRules", ..], true) => {
            vec![MAILBOX_SETTINGS]
        }
        (["users", _, "mailFolders", "inbox", "messageRules", ..], false) => {
            vec![&["MailboxSettings.ReadWrite"]]
        }
        (["users", _, "mailFolders", ..], true) => vec![MAIL_FOLDERS],
        (["domains", ..], true) => vec![DOMAINS],
        (["domains", ..], false) => vec![&["Domain.ReadWrite.All", "Directory.ReadWrite.All"]],
        (["policies", "authenticationMethodsPolicy", ..], true) => vec![AUTHENTICATION_METHODS],
        (["policies", "authenticationMethodsPolicy", ..], false) => {
            vec![&["Policy.ReadWrite.AuthenticationMethod"]]
        }
        (["policies", "authorizationPolicy"], true) => {
            vec![&["Policy.Read.All", "Policy.ReadWrite.Authorization"]]
        }
        (["policies", "authorizationPolicy"], false) => vec![&["Policy.ReadWrite.Authorization"]],
        (["policies", "adminConsentRequestPolicy"], true) => {
            vec![&["Policy.Read.All", "Policy.ReadWrite.ConsentRequest"]]
        }
        (["policies", "adminConsentRequestPolicy"], false) => {
            vec![&["Policy.ReadWrite.ConsentRequest"]]
        }
        (["policies", "identitySecurityDefaultsEnforcementPolicy"], true) => {
            vec![&["Policy.Read.All", "Policy.ReadWrite.ConditionalAccess"]]
        }
        (["policies", "identitySecurityDefaultsEnforcementPolicy"], false) => {
            vec![&["Policy.ReadWrite.ConditionalAccess"]]
        }
        (["policies", "defaultAppManagementPolicy"], true) => {
            vec![&[
                "Policy.Read.All",
                "Policy.ReadWrite.ApplicationConfiguration",
            ]]
        }
        (["policies", "defaultAppManagementPolicy"], false) => {
            vec![&["Policy.ReadWrite.ApplicationConfiguration"]]
        }
        (["identity", "conditionalAccess", ..], true) => {
            vec![&["Policy.Read.All", "Policy.ReadWrite.ConditionalAccess"]]
        }
        // Creating or changing a policy needs both (the documentation lists them together).
        (["identity", "conditionalAccess", ..], false) => {
            vec![&["Policy.ReadWrite.ConditionalAccess"], POLICIES]
        }
        (["roleManagement", "directory", "roleAssignments", ..], true) => vec![ROLE_ASSIGNMENTS],
        (["roleManagement", "directory", "roleAssignments", ..], false) => {
            vec![&["RoleManagement.ReadWrite.Directory"]]
        }
        (
            [
                "roleManagement",
                "directory",
                "roleEligibilityScheduleInstances",
                ..,
            ],
            true,
        ) => {
            vec![ROLE_ELIGIBILITIES]
        }
        (["applications" | "servicePrincipals", ..], true) => vec![APPLICATIONS],
        (["applications" | "servicePrincipals", ..], false) => vec![&[
            "Application.ReadWrite.All",
            "Application.ReadWrite.OwnedBy",
            "Directory.ReadWrite.All",
        ]],
        (["groups", _, "members"], true) => vec![GROUP_MEMBERS],
        (["oauth2PermissionGrants", ..], true) => vec![GRANTS],
        (["oauth2PermissionGrants", ..], false) => vec![&[
            "DelegatedPermissionGrant.ReadWrite.All",
            "Directory.ReadWrite.All",
        ]],
        (["auditLogs", ..], true) => vec![AUDIT_LOGS],
        (["identityProtection", "riskyUsers", ..], true) => vec![RISKY_USERS],
        (["identityProtection", "riskyUsers", ..], false) => {
            vec![&["IdentityRiskyUser.ReadWrite.All"]]
        }
        (["security", "alerts_v2", ..], true) => vec![ALERTS],
        _ => Vec::new(),
    }
}

/// The requirements of a request that `roles` do not meet, each as the permissions that would.
pub fn unmet(
    audience: Audience,
    method: &Method,
    path: &str,
    selects_activity: bool,
    roles: &BTreeSet<String>,
) -> Vec<AnyOf> {
    requirements(audience, method, path, selects_activity)
        .into_iter()
        .filter(|any_of| !any_of.iter().any(|name| roles.contains(*name)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roles(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    #[test]
    fn a_request_needs_each_documented_permission_and_a_higher_one_serves() {
        let get = Method::GET;
        let path = "/users/u1/mailFolders/inbox/messageRules";
        assert!(
            unmet(
                Audience::Graph,
                &get,
                path,
                false,
                &roles(&["MailboxSettings.Read"])
            )
            .is_empty()
        );
        assert!(
            unmet(
                Audience::Graph,
                &get,
                path,
                false,
                &roles(&["MailboxSettings.ReadWrite"])
            )
            .is_empty()
        );
        assert_eq!(
            unmet(Audience::Graph, &get, path, false, &roles(&["Mail.Read"])).len(),
            1
        );
        // signInActivity needs the audit log permission besides the users one.
        let users = roles(&["User.Read.All"]);
        assert!(unmet(Audience::Graph, &get, "/users", false, &users).is_empty());
        assert_eq!(
            unmet(Audience::Graph, &get, "/users", true, &users),
            vec![AUDIT_LOGS]
        );
        // Creating a conditional access policy needs both permissions.
        let post = Method::POST;
        let ca = "/identity/conditionalAccess/policies";
        assert_eq!(
            unmet(
                Audience::Graph,
                &post,
                ca,
                false,
                &roles(&["Policy.ReadWrite.ConditionalAccess"])
            ),
            vec![POLICIES]
        );
        assert_eq!(
            unmet(
                Audience::Defender,
                &post,
                "/api/machines/m1/isolate",
                false,
                &roles(&["Machine.Read.All"])
            )
            .len(),
            1
        );
    }

    #[test]
    fn a_default_grant_meets_every_requirement() {
        let all = all();
        for (method, path) in [
            (Method::GET, "/organization"),
            (Method::PATCH, "/users/u1"),
            (
                Method::DELETE,
                "/roleManagement/directory/roleAssignments/a1",
            ),
            (Method::POST, "/applications/a1/removePassword"),
        ] {
            assert!(
                unmet(Audience::Graph, &method, path, true, &all).is_empty(),
                "{path}"
            );
        }
    }
}
