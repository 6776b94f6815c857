//! Reading a tenant into a snapshot: only the sources the applicable checks need, one request at a
//! time per tenant (so nothing is in flight when Graph answers 429), premium sources skipped for
//! tenants without the licence, and each failed source recorded without stopping the scan.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, SecondsFormat, Utc};
use picket_proto::tenants::v1 as tenants;
use serde_json::{Map, Value, json};

use crate::checks::snapshot::{Snapshot, Source};
use crate::graph::{GraphClient, GraphError, Meter, url_encode};

/// The time range of sign-in and audit logs a monitoring poll reads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// Service plans that include Entra ID P1 (conditional access, sign-in logs, signInActivity).
const P1: [&str; 2] = ["AAD_PREMIUM", "AAD_PREMIUM_P2"];
const P2: [&str; 1] = ["AAD_PREMIUM_P2"];
const DEFENDER: [&str; 2] = ["WINDEFATP", "MDE_SMB"];
const HIDING_FOLDERS: [&str; 3] = ["deleteditems", "rssfeeds", "junkemail"];

fn holds(service_plans: &BTreeSet<String>, any_of: &[&str]) -> bool {
    any_of.iter().any(|plan| service_plans.contains(*plan))
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

/// Adds the sources a source is read from.
pub fn with_dependencies(sources: &BTreeSet<Source>) -> BTreeSet<Source> {
    let mut all = sources.clone();
    if all.contains(&Source::MailFolders) {
        all.insert(Source::InboxRules);
    }
    if all.contains(&Source::InboxRules) {
        all.insert(Source::Users);
    }
    all
}

fn scan_error(source: Source, error: &GraphError) -> tenants::ScanError {
    tenants::ScanError {
        check_id: String::new(),
        resource: source.describe().to_owned(),
        http_status: u32::from(error.status()),
        message: error.to_string(),
    }
}

fn graph_time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub struct Collector<'a> {
    pub graph: &'a GraphClient,
    pub microsoft_tenant_id: &'a str,
    pub service_plans: &'a BTreeSet<String>,
    pub meter: &'a Meter,
}

impl Collector<'_> {
    /// Reads `sources` into `snapshot`; returns the errors met.
    pub async fn collect(
        &self,
        snapshot: &mut Snapshot,
        sources: &BTreeSet<Source>,
        window: Option<Window>,
    ) -> Vec<tenants::ScanError> {
        let mut errors = Vec::new();
        for source in with_dependencies(sources) {
            if source == Source::SignInHistory {
                continue;
            }
            let read = self.read(source, snapshot, window).await;
            let value = match read {
                Ok(value) => Ok(value),
                Err(error) => {
                    tracing::warn!(tenant = self.microsoft_tenant_id, source = source.describe(), %error, "source could not be read");
                    errors.push(scan_error(source, &error));
                    Err(error.to_string())
                }
            };
            snapshot.data.insert(source, value);
        }
        errors
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

    async fn read(
        &self,
        source: Source,
        snapshot: &Snapshot,
        window: Option<Window>,
    ) -> Result<Value, GraphError> {
        let premium = holds(self.service_plans, &P1);
        // A source the tenant's licences do not include holds nothing that could apply.
        let unlicensed = match source {
            Source::ConditionalAccessPolicies | Source::SignIns => !premium,
            Source::RiskyUsers => !holds(self.service_plans, &P2),
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
            Source::Users => {
                let activity = if premium { ",signInActivity" } else { "" };
                self.list(&format!("/v1.0/users?$select=id,displayName,userPrincipalName,accountEnabled,userType,onPremisesSyncEnabled,onPremisesImmutableId{activity}&$top=999")).await
            }
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
            Source::RoleAssignments => {
                self.list("/v1.0/roleManagement/directory/roleAssignments")
                    .await
            }
            Source::Applications => {
                self.list("/v1.0/applications?$select=id,appId,displayName,passwordCredentials,keyCredentials&$top=999").await
            }
            Source::ServicePrincipals => {
                self.list("/v1.0/servicePrincipals?$select=id,appId,displayName,appOwnerOrganizationId,accountEnabled&$top=999").await
            }
            Source::Oauth2Grants => self.list("/v1.0/oauth2PermissionGrants").await,
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
                self.list(&format!(
                    "/v1.0/security/alerts_v2?$filter={}",
                    url_encode("status ne 'resolved'")
                ))
                .await
            }
            Source::InboxRules => self.inbox_rules(snapshot).await,
            Source::MailFolders => self.mail_folders(snapshot).await,
            Source::SignInHistory => Ok(json!({})),
        }
    }

    /// Every mailbox's inbox rules, keyed by user id (users without a mailbox are skipped).
    async fn inbox_rules(&self, snapshot: &Snapshot) -> Result<Value, GraphError> {
        let users = snapshot
            .items(Source::Users)
            .map_err(|missing| GraphError::Malformed(missing.to_string()))?;
        let mut mailboxes = Map::new();
        for user in users {
            let Some(user_id) = user["id"].as_str() else {
                continue;
            };
            let path = format!("/v1.0/users/{user_id}/mailFolders/inbox/messageRules");
            let rules = match self
                .graph
                .get_all(self.microsoft_tenant_id, &path, self.meter)
                .await
            {
                Ok(rules) => rules,
                Err(error) if error.is_not_found() => continue,
                Err(error) => return Err(error),
            };
            if !rules.is_empty() {
                mailboxes.insert(
                    user_id.to_owned(),
                    json!({"userPrincipalName": user["userPrincipalName"], "rules": rules}),
                );
            }
        }
        Ok(Value::Object(mailboxes))
    }

    /// The ids of the folders mail hides in, for mailboxes with rules that move mail.
    async fn mail_folders(&self, snapshot: &Snapshot) -> Result<Value, GraphError> {
        let mailboxes = snapshot
            .get(Source::InboxRules)
            .map_err(|missing| GraphError::Malformed(missing.to_string()))?;
        let mut folders = Map::new();
        for (user_id, mailbox) in mailboxes.as_object().into_iter().flatten() {
            let moves = mailbox["rules"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|rule| rule["actions"]["moveToFolder"].is_string());
            if !moves {
                continue;
            }
            let mut ids = BTreeMap::new();
            for name in HIDING_FOLDERS {
                let path = format!("/v1.0/users/{user_id}/mailFolders/{name}?$select=id");
                let folder = self
                    .graph
                    .get(self.microsoft_tenant_id, &path, self.meter)
                    .await?;
                if let Some(id) = folder["id"].as_str() {
                    ids.insert(name.to_owned(), json!(id));
                }
            }
            folders.insert(user_id.clone(), json!(ids));
        }
        Ok(Value::Object(folders))
    }
}
