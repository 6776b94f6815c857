//! Apps and what they were given: delegated consents that keep offline access to mail or files,
//! application permissions that reach every mailbox without a user, and whether Picket's own app
//! holds the directory role it needs to act on administrators. Pure functions of the snapshot.

use std::collections::BTreeMap;

use chrono::Duration;
use serde_json::Value;

use crate::checks::catalogue::{Check, Severity};
use crate::checks::directory::{
    GLOBAL_ADMINISTRATOR, PRIVILEGED_AUTHENTICATION_ADMINISTRATOR, PrincipalKind,
    privileged_holders,
};
use crate::checks::snapshot::{Missing, Snapshot, Source, timestamp};
use crate::checks::{Evaluator, Failure};

/// The tenants owning Microsoft's first-party apps.
const MICROSOFT_TENANTS: [&str; 2] = [
    "f8cdef31-a31e-4b4a-93e4-5f571e91255a",
    "72f988bf-86f1-41af-91ab-2d7cd011db47",
];
/// Delegated scopes that read or act on mail or files. (`full_access_as_app` is an application
/// permission: it is never in a delegated grant.)
const SENSITIVE_SCOPES: [&str; 5] = ["Mail.", "Files.", "Sites.", "MailboxSettings.", "EWS."];
/// Application permissions that reach every mailbox, file or site, or that let an app grant
/// itself more.
const SENSITIVE_APP_PERMISSIONS: [&str; 16] = [
    "full_access_as_app",
    "Mail.Read",
    "Mail.ReadWrite",
    "Mail.Send",
    "MailboxSettings.ReadWrite",
    "Files.Read.All",
    "Files.ReadWrite.All",
    "Sites.Read.All",
    "Sites.ReadWrite.All",
    "Sites.FullControl.All",
    "Directory.ReadWrite.All",
    "RoleManagement.ReadWrite.Directory",
    "AppRoleAssignment.ReadWrite.All",
    "Application.ReadWrite.All",
    "User.ReadWrite.All",
    "Domain.ReadWrite.All",
];

pub fn evaluator(name: &str) -> Option<Evaluator> {
    let evaluator: Evaluator = match name {
        "risky_oauth_consent" => risky_oauth_consent,
        "app_permission_granted" => app_permission_granted,
        "picket_can_act_on_admins" => picket_can_act_on_admins,
        _ => return None,
    };
    Some(evaluator)
}

/// Whether a service principal is one of Microsoft's first-party apps.
pub fn microsoft_owned(service_principal: &Value) -> bool {
    service_principal["appOwnerOrganizationId"]
        .as_str()
        .is_some_and(|owner| MICROSOFT_TENANTS.contains(&owner))
}

/// An app's service principal, as the tenant lists it.
struct App<'s>(&'s Value);

impl App<'_> {
    fn name(&self) -> &str {
        self.0["displayName"].as_str().unwrap_or_default()
    }

    /// The publisher Microsoft verified, if any.
    fn verified_publisher(&self) -> Option<&str> {
        let publisher = &self.0["verifiedPublisher"];
        publisher["verifiedPublisherId"]
            .as_str()
            .and(publisher["displayName"].as_str())
    }

    fn publisher(&self) -> &str {
        self.verified_publisher().unwrap_or("unverified")
    }

    fn is_microsofts(&self) -> bool {
        microsoft_owned(self.0)
    }
}

fn apps(snapshot: &Snapshot) -> Result<BTreeMap<&str, App<'_>>, Missing> {
    Ok(snapshot
        .items(Source::ServicePrincipals)?
        .iter()
        .filter_map(|sp| Some((sp["id"].as_str()?, App(sp))))
        .collect())
}

/// Consent phishing: a delegated grant keeping offline access to mail or files, to an app whose
/// publisher Microsoft has not verified. Verified SaaS (file sync, scheduling, e-signature) asks
/// for the same scopes every day and is not flagged.
fn risky_oauth_consent(snapshot: &Snapshot, _check: &Check) -> Result<Vec<Failure>, Missing> {
    let apps = apps(snapshot)?;
    let mut failures = Vec::new();
    for grant in snapshot.items(Source::Oauth2Grants)? {
        let scopes: Vec<&str> = grant["scope"]
            .as_str()
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        let offline = scopes
            .iter()
            .any(|scope| scope.eq_ignore_ascii_case("offline_access"));
        let sensitive: Vec<&str> = scopes
            .iter()
            .copied()
            .filter(|scope| {
                SENSITIVE_SCOPES
                    .iter()
                    .any(|prefix| scope.starts_with(prefix))
                    || scope.eq_ignore_ascii_case("full_access_as_user")
            })
            .collect();
        let client = grant["clientId"].as_str().unwrap_or_default();
        let app = apps.get(client);
        let trusted =
            app.is_some_and(|app| app.verified_publisher().is_some() || app.is_microsofts());
        if !offline || sensitive.is_empty() || trusted {
            continue;
        }
        let grant_id = grant["id"].as_str().unwrap_or_default();
        let name = app.map_or(client, App::name);
        failures.push(
            Failure::on(grant_id, name, "oauth2PermissionGrant", grant_id)
                .evidence("scopes", sensitive.join(" "))
                .evidence("publisher", app.map_or("unknown", App::publisher))
                .evidence(
                    "consentType",
                    grant["consentType"].as_str().unwrap_or_default(),
                )
                .evidence(
                    "principalId",
                    grant["principalId"].as_str().unwrap_or("all users"),
                )
                .fix("grantId", grant_id),
        );
    }
    Ok(failures)
}

/// Application permissions to mail, files or the directory, held by an app other than Picket's or
/// Microsoft's: each unverified publisher's, and a verified publisher's granted within
/// `recent_days` (an established tool from a verified publisher is not news).
fn app_permission_granted(snapshot: &Snapshot, check: &Check) -> Result<Vec<Failure>, Missing> {
    let apps = apps(snapshot)?;
    let recent = snapshot.now - Duration::days(check.number("recent_days", 7));
    let mut failures = Vec::new();
    for grant in snapshot.items(Source::AppRoleGrants)? {
        let permission = grant["permission"].as_str().unwrap_or_default();
        if grant["principalType"] != "ServicePrincipal"
            || !SENSITIVE_APP_PERMISSIONS.contains(&permission)
        {
            continue;
        }
        let principal = grant["principalId"].as_str().unwrap_or_default();
        let app = apps.get(principal);
        if app.is_some_and(|app| app.is_microsofts() || app.0["appId"] == snapshot.app_id.as_str())
        {
            continue;
        }
        let granted_at = timestamp(&grant["createdDateTime"]);
        let verified = app.and_then(App::verified_publisher);
        if verified.is_some() && granted_at.is_some_and(|at| at < recent) {
            continue;
        }
        let grant_id = grant["id"].as_str().unwrap_or_default();
        let name = app.map_or_else(
            || grant["principalDisplayName"].as_str().unwrap_or(principal),
            App::name,
        );
        let mut failure = Failure::on(
            grant_id,
            name,
            PrincipalKind::ServicePrincipal.target_type(),
            principal,
        )
        .evidence("permission", permission)
        .evidence(
            "api",
            grant["resourceDisplayName"].as_str().unwrap_or_default(),
        )
        .evidence("publisher", verified.unwrap_or("unverified"))
        .evidence(
            "grantedAt",
            granted_at.map_or("unknown".to_owned(), |at| at.to_rfc3339()),
        )
        .fix("servicePrincipalId", principal);
        if verified.is_none() {
            failure.severity = Some(Severity::Critical);
        }
        failures.push(failure);
    }
    Ok(failures)
}

/// Graph lets an app disable an administrator or revoke their sessions only when the app holds
/// Privileged Authentication Administrator (or Global Administrator): application permissions are
/// not enough. Picket's containment of a compromised administrator needs it.
fn picket_can_act_on_admins(snapshot: &Snapshot, _check: &Check) -> Result<Vec<Failure>, Missing> {
    let apps = apps(snapshot)?;
    let Some((id, _)) = apps
        .iter()
        .find(|(_, app)| app.0["appId"] == snapshot.app_id.as_str())
    else {
        return Ok(vec![
            Failure::tenant_wide(snapshot).evidence("picketServicePrincipal", "not found"),
        ]);
    };
    let holders = privileged_holders(snapshot)?;
    let active = holders.get(*id).is_some_and(|holder| {
        holder.direct.iter().any(|role| {
            [
                PRIVILEGED_AUTHENTICATION_ADMINISTRATOR,
                GLOBAL_ADMINISTRATOR,
            ]
            .contains(&role.as_str())
                && !holder.eligible.contains(role)
        })
    });
    Ok(if active {
        Vec::new()
    } else {
        vec![
            Failure::tenant_wide(snapshot)
                .evidence("picketServicePrincipal", *id)
                .evidence("neededRole", "Privileged Authentication Administrator"),
        ]
    })
}
