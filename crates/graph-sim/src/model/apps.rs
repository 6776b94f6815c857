//! A tenant's applications: its own registrations, the service principals of Microsoft's APIs (with
//! the app roles they offer), the operator's app that consent created, third-party apps, and the
//! permissions each was given — delegated (oauth2PermissionGrants) or application (app role
//! assignments, listed under the resource's `appRoleAssignedTo`).

use rand::Rng;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{Builder, PRIVILEGED_AUTHENTICATION_ADMINISTRATOR, new_id};
use crate::profile::Weakness;

pub const MICROSOFT_GRAPH_APP_ID: &str = "00000003-0000-0000-c000-000000000000";
pub const EXCHANGE_ONLINE_APP_ID: &str = "00000002-0000-0ff1-ce00-000000000000";
/// The tenant owning Microsoft's first-party apps.
pub const MICROSOFT_TENANT: &str = "f8cdef31-a31e-4b4a-93e4-5f571e91255a";

/// Application permissions (app roles) of Microsoft Graph, as its service principal lists them.
const GRAPH_APP_ROLES: [(&str, &str); 9] = [
    ("810c84a8-4a9e-49e6-bf7d-12d183f40d01", "Mail.Read"),
    ("e2a3a72e-5f79-4c64-b1b1-878b674786c9", "Mail.ReadWrite"),
    ("b633e1c5-b582-4048-a93e-9f11b44c7e96", "Mail.Send"),
    (
        "75359482-378d-4052-8f01-80520e7db3cd",
        "Files.ReadWrite.All",
    ),
    ("df021288-bdef-4463-88db-98f22de89214", "User.Read.All"),
    ("7ab1d382-f21e-4acd-a863-ba3e13f7da61", "Directory.Read.All"),
    (
        "1bfefb4e-e0b5-418b-a88f-73c46d2cc8e9",
        "Application.ReadWrite.All",
    ),
    (
        "9e3f62cf-ca93-4989-b6ce-bf83c28f9fe8",
        "RoleManagement.ReadWrite.Directory",
    ),
    ("5b567255-7703-4780-807c-7be8301ae99b", "Group.Read.All"),
];
/// Exchange Online's application permission to every mailbox through EWS.
const FULL_ACCESS_AS_APP: (&str, &str) =
    ("dc890d15-9560-4a4c-9b7f-a736ec74ec40", "full_access_as_app");

/// A publisher verified through the Microsoft Partner Network, or none (all fields null).
fn publisher(verified: Option<&str>) -> Value {
    match verified {
        Some(name) => {
            json!({"displayName": name, "verifiedPublisherId": "6283710", "addedDateTime": "2023-05-02T09:00:00Z"})
        }
        None => json!({"displayName": null, "verifiedPublisherId": null, "addedDateTime": null}),
    }
}

fn app_roles(roles: &[(&str, &str)]) -> Value {
    roles
        .iter()
        .map(|(id, value)| {
            json!({"id": id, "value": value, "displayName": value, "description": value, "allowedMemberTypes": ["Application"], "isEnabled": true, "origin": "Application"})
        })
        .collect()
}

impl Builder {
    /// A service principal (and, for an app of this tenant, its registration); returns the
    /// service principal's id.
    fn application(
        &mut self,
        name: &str,
        credentials: Vec<Value>,
        owner_tenant: &str,
        verified_publisher: Option<&str>,
    ) -> String {
        let id = new_id(&mut self.rng);
        let app_id = new_id(&mut self.rng);
        if owner_tenant.is_empty() {
            let item = json!({
                "id": id,
                "appId": app_id,
                "displayName": name,
                "createdDateTime": self.ago(60 * 24 * 400),
                "signInAudience": "AzureADMyOrg",
                "passwordCredentials": credentials,
                "keyCredentials": [],
            });
            self.collection("/applications").push(item);
        }
        let sp_id = new_id(&mut self.rng);
        let item = json!({
            "id": sp_id,
            "appId": app_id,
            "displayName": name,
            "accountEnabled": true,
            "servicePrincipalType": "Application",
            "appOwnerOrganizationId": if owner_tenant.is_empty() { Value::Null } else { Value::String(owner_tenant.to_owned()) },
            "verifiedPublisher": publisher(verified_publisher),
            "passwordCredentials": [],
            "keyCredentials": [],
        });
        self.collection("/servicePrincipals").push(item);
        sp_id
    }

    /// The service principal of one of Microsoft's APIs, offering `roles`; returns its id.
    fn microsoft_api(&mut self, name: &str, app_id: &str, roles: &[(&str, &str)]) -> String {
        let id = new_id(&mut self.rng);
        let item = json!({
            "id": id,
            "appId": app_id,
            "displayName": name,
            "accountEnabled": true,
            "servicePrincipalType": "Application",
            "appOwnerOrganizationId": MICROSOFT_TENANT,
            "verifiedPublisher": publisher(None),
            "appRoles": app_roles(roles),
            "passwordCredentials": [],
            "keyCredentials": [],
        });
        self.collection("/servicePrincipals").push(item);
        self.collection(&format!("/servicePrincipals/{id}/appRoleAssignedTo"));
        id
    }

    fn service_principal_id(&self, app_id: &str) -> String {
        self.resources["/servicePrincipals"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|sp| sp["appId"] == app_id)
            .and_then(|sp| sp["id"].as_str())
            .unwrap_or_default()
            .to_owned()
    }

    /// A delegated permission grant of `scope` on `resource` to `client`, consented by `principal`
    /// for themselves, or by an administrator for everyone when `None`. `tag` makes its id.
    fn delegated_grant(
        &mut self,
        tag: (u64, &str),
        client: &str,
        principal: Option<&str>,
        resource: &str,
        scope: &str,
    ) {
        let grant = json!({
            "id": format!("{}{}", Uuid::from_u64_pair(self.rng.random(), tag.0).simple(), tag.1),
            "clientId": client,
            "consentType": if principal.is_some() { "Principal" } else { "AllPrincipals" },
            "principalId": principal,
            "resourceId": resource,
            "scope": scope,
        });
        self.collection("/oauth2PermissionGrants").push(grant);
    }

    /// Grants `client` (a service principal id) the application permission `role` of `resource`,
    /// `days_ago`.
    fn assign_app_role(
        &mut self,
        client: &str,
        name: &str,
        resource: &str,
        role: (&str, &str),
        days_ago: i64,
    ) {
        let id = format!(
            "{}{}",
            Uuid::from_u64_pair(self.rng.random(), 2).simple(),
            "CCCC"
        );
        let created = self.ago(60 * 24 * days_ago);
        let resource_name = self.resources["/servicePrincipals"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|sp| sp["id"] == resource)
            .map(|sp| sp["displayName"].clone())
            .unwrap_or(Value::Null);
        let item = json!({
            "id": id,
            "appRoleId": role.0,
            "createdDateTime": created,
            "deletedDateTime": null,
            "principalDisplayName": name,
            "principalId": client,
            "principalType": "ServicePrincipal",
            "resourceDisplayName": resource_name,
            "resourceId": resource,
        });
        self.collection(&format!("/servicePrincipals/{resource}/appRoleAssignedTo"))
            .push(item);
    }

    pub(super) fn applications(&mut self) {
        let graph_sp =
            self.microsoft_api("Microsoft Graph", MICROSOFT_GRAPH_APP_ID, &GRAPH_APP_ROLES);
        self.microsoft_api(
            "Office 365 Exchange Online",
            EXCHANGE_ONLINE_APP_ID,
            &[FULL_ACCESS_AS_APP],
        );
        // The operator's app, with the application permissions it was granted, and the directory
        // role that lets it act on administrators (unless the tenant never assigned it).
        let operator = new_id(&mut self.rng);
        let item = json!({
            "id": operator,
            "appId": self.operator_app_id,
            "displayName": "Picket",
            "accountEnabled": true,
            "servicePrincipalType": "Application",
            "appOwnerOrganizationId": "9d5c2a41-0000-4000-8000-00000000c11e",
            "verifiedPublisher": publisher(Some("Picket")),
            "passwordCredentials": [],
            "keyCredentials": [],
        });
        self.collection("/servicePrincipals").push(item);
        for role in [GRAPH_APP_ROLES[6], GRAPH_APP_ROLES[7]] {
            self.assign_app_role(&operator, "Picket", &graph_sp, role, 30);
        }
        if !self.profile.has(Weakness::OperatorWithoutAdminRole) {
            self.assign_role_to(&operator, PRIVILEGED_AUTHENTICATION_ADMINISTRATOR, "picket");
        }

        let payroll_secret = self.password_credential("prod", 30, 180);
        let payroll = self.application("Payroll Connector", vec![payroll_secret], "", None);
        let lifetime = if self.profile.has(Weakness::LongLivedAppSecret) {
            730
        } else {
            180
        };
        let reporting_secret = self.password_credential("reporting", 60, lifetime);
        self.application("Legacy Reporting", vec![reporting_secret], "", None);
        self.delegated_grant((0, "AAAA"), &payroll, None, &graph_sp, "User.Read");
        // A file-sync service from a verified publisher: offline access to files is its job.
        let sync = self.application(
            "Dropbox",
            Vec::new(),
            "3d6e2c1a-0000-4000-8000-0000000d0b0c",
            Some("Dropbox, Inc."),
        );
        let (user_id, _, _) = self.user(3);
        self.delegated_grant(
            (3, "DDDD"),
            &sync,
            Some(&user_id),
            &graph_sp,
            "offline_access Files.ReadWrite.All User.Read openid profile",
        );
        // A backup service with mailbox access, from a verified publisher, consented years ago.
        let backup = self.application(
            "Backupify",
            Vec::new(),
            "7c1f9b2e-0000-4000-8000-0000000bacc0",
            Some("Datto, Inc."),
        );
        self.assign_app_role(&backup, "Backupify", &graph_sp, GRAPH_APP_ROLES[0], 700);
    }

    /// A user consented to an unverified app asking for offline access to mail and files.
    pub(super) fn risky_oauth_consent(&mut self) {
        let graph_sp = self.service_principal_id(MICROSOFT_GRAPH_APP_ID);
        let sp = self.application(
            "Mail Sync Pro",
            Vec::new(),
            "5f2b1c7e-0000-4000-8000-00000000beef",
            None,
        );
        let (user_id, upn, _) = self.user(13);
        self.delegated_grant(
            (1, "BBBB"),
            &sp,
            Some(&user_id),
            &graph_sp,
            "offline_access Mail.Read Mail.Send Files.Read.All User.Read",
        );
        self.audit(
            35,
            "ApplicationManagement",
            "Consent to application",
            json!({"app": null, "user": {"id": user_id, "userPrincipalName": upn}}),
            json!([{"id": sp, "displayName": "Mail Sync Pro", "type": "ServicePrincipal", "modifiedProperties": [
                {"displayName": "ConsentAction.Permissions", "oldValue": null, "newValue": "\"[] => [[Id: x, ClientId: x, PrincipalId: x, ResourceId: x, ConsentType: Principal, Scope: offline_access Mail.Read Mail.Send Files.Read.All User.Read]]; \""}]}]),
        );
    }

    /// An administrator consented to an unverified app's application permissions: every mailbox
    /// through EWS, and mail through Graph. Neither shows in oauth2PermissionGrants.
    pub(super) fn app_permission_granted(&mut self) {
        let graph_sp = self.service_principal_id(MICROSOFT_GRAPH_APP_ID);
        let exchange_sp = self.service_principal_id(EXCHANGE_ONLINE_APP_ID);
        let name = "Mailbox Archiver";
        let sp = self.application(
            name,
            Vec::new(),
            "2a9e4d7c-0000-4000-8000-0000000a4c41",
            None,
        );
        self.assign_app_role(&sp, name, &exchange_sp, FULL_ACCESS_AS_APP, 0);
        self.assign_app_role(&sp, name, &graph_sp, GRAPH_APP_ROLES[1], 0);
        let by = self.by_admin();
        self.audit(
            25,
            "ApplicationManagement",
            "Add app role assignment to service principal",
            by,
            json!([{"id": sp, "displayName": name, "type": "ServicePrincipal", "modifiedProperties": [
                {"displayName": "AppRole.Value", "oldValue": null, "newValue": "\"full_access_as_app\""}]}]),
        );
    }
}
