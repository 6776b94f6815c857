//! Reading a tenant into a snapshot: only the sources the applicable checks need, one request (or
//! one JSON batch of per-mailbox and per-group reads) at a time per tenant (so nothing is in
//! flight when Graph answers 429), premium sources skipped for
//! tenants without the licence, sources the tenant has not granted the permission for left unread,
//! and each failed source recorded without stopping the scan. A source read mailbox by mailbox
//! records a failing mailbox against it and reads the others.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use picket_proto::tenants::v1 as tenants;
use serde_json::{Map, Value, json};

use crate::checks::directory::{PrincipalKind, privileged_holders};
use crate::checks::snapshot::{Missing, Snapshot, Source, with_dependencies};
use crate::graph::{GraphClient, GraphError, Meter, url_encode};
use crate::scans::access::DEFENDER;
use crate::scans::mailboxes::{self, Carried};
use crate::scans::users::{self, Synced, Tracked};

/// The time range of sign-in and audit logs a monitoring poll reads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// Where the previous poll's window ended (the start, for a first poll): what is new since.
    pub since: DateTime<Utc>,
}

/// The APIs whose application permissions reach every mailbox or file: Microsoft Graph and
/// Exchange Online (full_access_as_app).
const APP_PERMISSION_RESOURCES: [&str; 2] = [
    "00000003-0000-0000-c000-000000000000",
    "00000002-0000-0ff1-ce00-000000000000",
];

/// Service plans that include Entra ID P1 (conditional access, sign-in logs, signInActivity).
const P1: [&str; 2] = ["AAD_PREMIUM", "AAD_PREMIUM_P2"];
const P2: [&str; 1] = ["AAD_PREMIUM_P2"];
/// Well-known folders (Graph's documented names) where a rule hides mail from its owner.
const HIDING_FOLDERS: [&str; 3] = ["deleteditems", "junkemail", "conversationhistory"];
/// RSS Feeds has no well-known name: a rule's target folder whose display name says RSS (in
/// most locales it does: "RSS Feeds", "RSS-Feeds", "Flux RSS") hides mail too.
const RSS: &str = "rss";

fn holds(service_plans: &BTreeSet<String>, any_of: &[&str]) -> bool {
    any_of.iter().any(|plan| service_plans.contains(*plan))
}

/// Whether reading `sources` reads users' sign-in activity: where a check reads users itself and
/// the tenant has Entra ID P1. Users read only to find their mailboxes need none: without it Graph
/// answers 999 to a page instead of 120, and delta query (which does not track it) can read them.
pub fn reads_sign_in_activity(
    service_plans: &BTreeSet<String>,
    sources: &BTreeSet<Source>,
) -> bool {
    holds(service_plans, &P1) && sources.contains(&Source::Users)
}

/// The service plans in a `subscribedSkus` answer, of enabled subscriptions only.
pub fn service_plans(skus: &[Value]) -> BTreeSet<String> {
    skus.iter()
        .filter(|sku| sku["capabilityStatus"] == "Enabled")
        .flat_map(|sku| sku["servicePlans"].as_array().into_iter().flatten())
        .filter(|plan| plan["provisioningStatus"] == "Success")
        .filter_map(|plan| plan["servicePlanName"].as_str().map(str::to_owned))
        .collect()
}

fn scan_error(source: Source, error: &GraphError) -> tenants::ScanError {
    tenants::ScanError {
        check_id: String::new(),
        resource: source.describe().to_owned(),
        http_status: u32::from(error.status()),
        message: error.to_string(),
    }
}

/// One subject of a source (a mailbox, a group) that could not be read: the rest of the source is.
fn subject_error(source: Source, subject: &str, error: &GraphError) -> tenants::ScanError {
    tenants::ScanError {
        resource: format!("{} of {subject}", source.describe()),
        ..scan_error(source, error)
    }
}

/// A source this one is read from could not be read.
fn unread(missing: Missing) -> GraphError {
    GraphError::Malformed(missing.to_string())
}

fn graph_time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub struct Collector<'a> {
    pub graph: &'a GraphClient,
    pub microsoft_tenant_id: &'a str,
    pub service_plans: &'a BTreeSet<String>,
    pub meter: &'a Meter,
    /// Inbox rules as earlier polls read them, where a monitoring poll reads only the mailboxes
    /// due (`None`: every mailbox is read).
    pub carried: Option<&'a Carried>,
    /// How long the sweep of every mailbox takes.
    pub inbox_rule_sweep: Duration,
    /// Users as the last delta round left them, where a poll reads users by delta query when it
    /// needs no sign-in activity (`None`: users are listed in full).
    pub tracked: Option<&'a Tracked>,
}

/// What a collection met besides the snapshot.
#[derive(Debug, Default)]
pub struct Collected {
    pub errors: Vec<tenants::ScanError>,
    /// What a delta round of users learnt, to keep for the next poll.
    pub users: Option<Synced>,
}

impl Collector<'_> {
    /// Reads `sources` into `snapshot`; returns the errors met and what a users' delta round
    /// learnt.
    pub async fn collect(
        &self,
        snapshot: &mut Snapshot,
        sources: &BTreeSet<Source>,
        window: Option<Window>,
    ) -> Collected {
        let mut collected = Collected::default();
        let activity = reads_sign_in_activity(self.service_plans, sources);
        for source in with_dependencies(sources) {
            // Not granted the permission: the checks that need it are not evaluated.
            if source == Source::SignInHistory
                || !snapshot.missing_permissions(&[source]).is_empty()
            {
                continue;
            }
            let read = self
                .read(source, snapshot, window, activity, &mut collected)
                .await;
            let value = match read {
                Ok(Value::Array(users)) if source == Source::Users => {
                    self.graph
                        .count_users(self.microsoft_tenant_id, users.len())
                        .await;
                    Ok(Value::Array(users))
                }
                Ok(value) => Ok(value),
                Err(error) => {
                    tracing::warn!(tenant = self.microsoft_tenant_id, source = source.describe(), %error, "source could not be read");
                    collected.errors.push(scan_error(source, &error));
                    Err(error.to_string())
                }
            };
            snapshot.data.insert(source, value);
        }
        collected
    }

    async fn list(&self, path: &str) -> Result<Value, GraphError> {
        Ok(Value::Array(
            self.graph
                .get_all(self.microsoft_tenant_id, path, self.meter)
                .await?,
        ))
    }

    async fn object(&self, path: &str) -> Result<Value, GraphError> {
        let mut object = self
            .graph
            .get(self.microsoft_tenant_id, path, self.meter)
            .await?;
        if let Some(fields) = object.as_object_mut() {
            fields.retain(|key, _| !key.starts_with("@odata"));
        }
        Ok(object)
    }

    /// One source; a source read per mailbox adds each mailbox it could not read to the errors.
    async fn read(
        &self,
        source: Source,
        snapshot: &Snapshot,
        window: Option<Window>,
        // Whether users are read with their sign-in activity.
        activity: bool,
        collected: &mut Collected,
    ) -> Result<Value, GraphError> {
        let errors = &mut collected.errors;
        let premium = holds(self.service_plans, &P1);
        // A source the tenant's licences do not include holds nothing that could apply.
        let unlicensed = match source {
            Source::ConditionalAccessPolicies | Source::SignIns => !premium,
            Source::RiskyUsers | Source::RoleEligibilities => !holds(self.service_plans, &P2),
            Source::DefenderAlerts => !holds(self.service_plans, &DEFENDER),
            _ => false,
        };
        if unlicensed {
            return Ok(json!([]));
        }
        let log_filter = |property: &str| match window {
            Some(window) => format!(
                "&$filter={}",
                url_encode(&format!(
                    "{property} ge {} and {property} le {}",
                    graph_time(window.start),
                    graph_time(window.end)
                ))
            ),
            None => String::new(),
        };
        match source {
            Source::Users if activity => {
                self.list(&format!(
                    "/v1.0/users?$select={},signInActivity&$top=999",
                    users::SELECT
                ))
                .await
            }
            Source::Users => match self.tracked {
                Some(tracked) => {
                    let (users, synced) = self.users_delta(tracked).await?;
                    collected.users = Some(synced);
                    Ok(Value::Array(users))
                }
                None => {
                    self.list(&format!("/v1.0/users?$select={}&$top=999", users::SELECT))
                        .await
                }
            },
            Source::Domains => self.list("/v1.0/domains").await,
            Source::AuthorizationPolicy => self.object("/v1.0/policies/authorizationPolicy").await,
            Source::AuthenticationMethodsPolicy => {
                self.object("/v1.0/policies/authenticationMethodsPolicy")
                    .await
            }
            Source::AdminConsentPolicy => {
                self.object("/v1.0/policies/adminConsentRequestPolicy")
                    .await
            }
            Source::SecurityDefaults => {
                self.object("/v1.0/policies/identitySecurityDefaultsEnforcementPolicy")
                    .await
            }
            Source::AppManagementPolicy => {
                self.object("/v1.0/policies/defaultAppManagementPolicy")
                    .await
            }
            Source::ConditionalAccessPolicies => {
                self.list("/v1.0/identity/conditionalAccess/policies").await
            }
            // The principal comes expanded: its `@odata.type` says user, group or service principal.
            Source::RoleAssignments => {
                self.list("/v1.0/roleManagement/directory/roleAssignments?$expand=principal")
                    .await
            }
            Source::RoleEligibilities => {
                self.list(
                    "/v1.0/roleManagement/directory/roleEligibilityScheduleInstances?$expand=principal",
                )
                .await
            }
            Source::PrivilegedGroupMembers => self.group_members(snapshot, errors).await,
            Source::Applications => {
                self.list("/v1.0/applications?$select=id,appId,displayName,passwordCredentials,keyCredentials&$top=999").await
            }
            Source::ServicePrincipals => {
                self.list("/v1.0/servicePrincipals?$select=id,appId,displayName,appOwnerOrganizationId,accountEnabled,verifiedPublisher&$top=999").await
            }
            Source::Oauth2Grants => self.list("/v1.0/oauth2PermissionGrants").await,
            Source::AppRoleGrants => self.app_role_grants().await,
            Source::SignIns => {
                self.list(&format!(
                    "/v1.0/auditLogs/signIns?$top=999{}",
                    log_filter("createdDateTime")
                ))
                .await
            }
            Source::DirectoryAudits => {
                self.list(&format!(
                    "/v1.0/auditLogs/directoryAudits?$top=999{}",
                    log_filter("activityDateTime")
                ))
                .await
            }
            Source::RiskyUsers => {
                self.list(&format!(
                    "/v1.0/identityProtection/riskyUsers?$filter={}",
                    url_encode("riskState eq 'atRisk'")
                ))
                .await
            }
            Source::DefenderAlerts => {
                // Alerts not yet resolved. The documentation shows `$filter` on status with `eq`
                // only, so each open status is asked for on its own.
                let mut open = Vec::new();
                for status in ["new", "inProgress"] {
                    let filter = url_encode(&format!("status eq '{status}'"));
                    if let Value::Array(alerts) = self
                        .list(&format!("/v1.0/security/alerts_v2?$filter={filter}"))
                        .await?
                    {
                        open.extend(alerts);
                    }
                }
                Ok(Value::Array(open))
            }
            Source::InboxRules => self.inbox_rules(snapshot, window, errors).await,
            Source::MailFolders => self.mail_folders(snapshot, errors).await,
            Source::SignInHistory => Ok(json!({})),
        }
    }

    /// A delta round of users from the last round's link, or from the start where there is none
    /// or Graph refuses it.
    async fn users_delta(&self, tracked: &Tracked) -> Result<(Vec<Value>, Synced), GraphError> {
        let tenant = self.microsoft_tenant_id;
        if let Some(link) = &tracked.delta_link {
            match self.graph.get_delta(tenant, link, self.meter).await {
                Ok((answers, next)) => {
                    return Ok(users::apply(tracked, answers, next, false));
                }
                Err(error) if users::refused_link(&error) => {
                    tracing::info!(tenant, %error, "users delta link refused: reading every user afresh");
                }
                Err(error) => return Err(error),
            }
        }
        let (answers, next) = self
            .graph
            .get_delta(tenant, &users::initial(), self.meter)
            .await?;
        Ok(users::apply(tracked, answers, next, true))
    }

    /// The application permissions granted on Microsoft Graph and Exchange Online: each resource's
    /// `appRoleAssignedTo`, every assignment named with its app role's value.
    async fn app_role_grants(&self) -> Result<Value, GraphError> {
        let mut grants = Vec::new();
        for app_id in APP_PERMISSION_RESOURCES {
            let filter = url_encode(&format!("appId eq '{app_id}'"));
            let resources = self
                .graph
                .get_all(
                    self.microsoft_tenant_id,
                    &format!("/v1.0/servicePrincipals?$filter={filter}&$select=id,appId,displayName,appRoles"),
                    self.meter,
                )
                .await?;
            for resource in resources {
                let Some(id) = resource["id"].as_str() else {
                    continue;
                };
                let path = format!("/v1.0/servicePrincipals/{id}/appRoleAssignedTo?$top=999");
                for mut grant in self
                    .graph
                    .get_all(self.microsoft_tenant_id, &path, self.meter)
                    .await?
                {
                    let role = resource["appRoles"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find(|role| role["id"] == grant["appRoleId"]);
                    grant["permission"] = role.map_or(Value::Null, |role| role["value"].clone());
                    grants.push(grant);
                }
            }
        }
        Ok(Value::Array(grants))
    }

    /// The members of each group holding a privileged role, active or eligible, read in batches;
    /// a group whose members could not be read is recorded against it and left out.
    async fn group_members(
        &self,
        snapshot: &Snapshot,
        errors: &mut Vec<tenants::ScanError>,
    ) -> Result<Value, GraphError> {
        let holders = privileged_holders(snapshot).map_err(unread)?;
        let groups: Vec<(&String, &str)> = holders
            .iter()
            .filter(|(_, holder)| holder.kind == PrincipalKind::Group)
            .map(|(id, holder)| (id, holder.name.as_str()))
            .collect();
        let paths: Vec<String> = groups
            .iter()
            .map(|(id, _)| format!("/v1.0/groups/{id}/members?$select=id"))
            .collect();
        let answers = self
            .graph
            .get_all_many(self.microsoft_tenant_id, &paths, self.meter)
            .await;
        let mut read = Map::new();
        for ((group_id, name), answer) in groups.into_iter().zip(answers) {
            match answer {
                Ok(members) => {
                    read.insert(
                        group_id.clone(),
                        json!({"displayName": name, "members": members}),
                    );
                }
                Err(error) => {
                    tracing::warn!(tenant = self.microsoft_tenant_id, group = name, %error, "group members could not be read");
                    let group = format!("group {name}");
                    errors.push(subject_error(
                        Source::PrivilegedGroupMembers,
                        &group,
                        &error,
                    ));
                }
            }
        }
        Ok(Value::Object(read))
    }

    /// Every mailbox's inbox rules with their read time, keyed by user id (users without a mailbox
    /// are skipped), read in batches: the mailboxes due afresh, the others as carried.
    async fn inbox_rules(
        &self,
        snapshot: &Snapshot,
        window: Option<Window>,
        errors: &mut Vec<tenants::ScanError>,
    ) -> Result<Value, GraphError> {
        let due = match (self.carried, window) {
            (Some(_), Some(window)) => {
                mailboxes::due(snapshot, window.since, window.end, self.inbox_rule_sweep)
            }
            _ => None,
        };
        let users: Vec<(&str, &Value)> = snapshot
            .items(Source::Users)
            .map_err(unread)?
            .iter()
            .filter_map(|user| Some((user["id"].as_str()?, user)))
            .filter(|(id, _)| due.as_ref().is_none_or(|due| due.contains(*id)))
            .collect();
        let paths: Vec<String> = users
            .iter()
            .map(|(user_id, _)| format!("/v1.0/users/{user_id}/mailFolders/inbox/messageRules"))
            .collect();
        let answers = self
            .graph
            .get_all_many(self.microsoft_tenant_id, &paths, self.meter)
            .await;
        // A mailbox not read afresh, or that could not be, keeps its last rules.
        let mut mailboxes = self
            .carried
            .map(|carried| carried.mailboxes.clone())
            .unwrap_or_default();
        for ((user_id, user), answer) in users.into_iter().zip(answers) {
            let upn = user["userPrincipalName"].as_str().unwrap_or(user_id);
            match answer {
                Ok(rules) if rules.is_empty() => {
                    mailboxes.remove(user_id);
                }
                Ok(rules) => {
                    mailboxes.insert(
                        user_id.to_owned(),
                        json!({"userPrincipalName": user["userPrincipalName"], "rules": rules, "readAt": mailboxes::read_at(snapshot.now)}),
                    );
                }
                Err(error) if error.is_not_found() => {
                    mailboxes.remove(user_id);
                }
                Err(error) => {
                    tracing::warn!(tenant = self.microsoft_tenant_id, mailbox = upn, %error, "inbox rules could not be read");
                    errors.push(subject_error(Source::InboxRules, upn, &error));
                }
            }
        }
        Ok(Value::Object(mailboxes))
    }

    /// The folders mail hides in, by name, for mailboxes with rules that move mail: the hiding
    /// well-known folders, and the rules' target folders named RSS, read in batches.
    async fn mail_folders(
        &self,
        snapshot: &Snapshot,
        errors: &mut Vec<tenants::ScanError>,
    ) -> Result<Value, GraphError> {
        let mailboxes = snapshot.get(Source::InboxRules).map_err(unread)?;
        // Mailboxes carried from an earlier poll keep the folders read with them.
        let fresh = mailboxes::read_at(snapshot.now);
        let mut folders: Map<String, Value> = Map::new();
        // (mailbox, well-known name or None for a rule's target folder id, folder) per request.
        let mut asked: Vec<(&str, Option<&str>, String)> = Vec::new();
        for (user_id, mailbox) in mailboxes.as_object().into_iter().flatten() {
            if mailbox["readAt"] != fresh {
                if let Some(carried) = self
                    .carried
                    .and_then(|carried| carried.folders.get(user_id))
                {
                    folders.insert(user_id.clone(), carried.clone());
                }
                continue;
            }
            let targets: BTreeSet<&str> = mailbox["rules"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|rule| rule["actions"]["moveToFolder"].as_str())
                .collect();
            if targets.is_empty() {
                continue;
            }
            for name in HIDING_FOLDERS {
                asked.push((user_id, Some(name), name.to_owned()));
            }
            for target in targets {
                asked.push((user_id, None, target.to_owned()));
            }
        }
        let paths: Vec<String> = asked
            .iter()
            .map(|(user_id, name, folder)| {
                let select = if name.is_some() {
                    "id"
                } else {
                    "id,displayName"
                };
                format!(
                    "/v1.0/users/{user_id}/mailFolders/{}?$select={select}",
                    url_encode(folder)
                )
            })
            .collect();
        let answers = self
            .graph
            .get_many(self.microsoft_tenant_id, &paths, self.meter)
            .await;
        let mut failed: BTreeSet<&str> = BTreeSet::new();
        for ((user_id, name, folder), answer) in asked.iter().zip(answers) {
            let found = match answer {
                Ok(found) => found,
                // Not every mailbox has every folder (Conversation History comes with Teams),
                // and a rule's folder may have been deleted since: nothing hides there.
                Err(error) if error.is_not_found() => continue,
                Err(error) => {
                    if failed.insert(user_id) {
                        let upn = mailboxes[*user_id]["userPrincipalName"]
                            .as_str()
                            .unwrap_or(user_id);
                        tracing::warn!(tenant = self.microsoft_tenant_id, mailbox = upn, %error, "mail folders could not be read");
                        errors.push(subject_error(Source::MailFolders, upn, &error));
                    }
                    continue;
                }
            };
            let ids = folders
                .entry((*user_id).to_owned())
                .or_insert_with(|| json!({}));
            match name {
                Some(name) => {
                    if let Some(id) = found["id"].as_str() {
                        ids[*name] = json!(id);
                    }
                }
                None => {
                    let display = found["displayName"].as_str().unwrap_or_default();
                    if display.to_lowercase().contains(RSS) {
                        ids[display] = json!(folder);
                    }
                }
            }
        }
        folders.retain(|user_id, _| !failed.contains(user_id.as_str()));
        Ok(Value::Object(folders))
    }
}
