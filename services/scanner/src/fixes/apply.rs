//! Applying a fix: re-read the state (it may have changed), refuse break-glass accounts and
//! on-premises-synced users, change the tenant through Graph (or Defender), read it back.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use picket_proto::fixes::v1::{self as fixes, FixAction, FixFailureReason};
use reqwest::Method;
use serde_json::{Value, json};

use crate::checks::apps::microsoft_owned;
use crate::checks::catalogue::{Check, Kind};
use crate::checks::directory::PrincipalKind;
use crate::checks::permissions::Granted;
use crate::checks::snapshot::{Snapshot, is_break_glass, timestamp};
use crate::checks::{Outcome, evaluate, fingerprint};
use crate::graph::{Api, GraphError, Meter, url_encode};
use crate::scans::access;
use crate::scans::collect::Collector;
use crate::scans::runner::{Scanning, plan_of};
use crate::tenants::store::TenantRow;

/// How a fix ended.
#[derive(Debug, Clone, PartialEq)]
pub enum FixOutcome {
    Applied {
        already_compliant: bool,
        verified: bool,
        summary: String,
        before: BTreeMap<String, String>,
        after: BTreeMap<String, String>,
    },
    Failed {
        reason: FixFailureReason,
        detail: String,
        retryable: bool,
        graph_status: u16,
    },
}

impl FixOutcome {
    fn applied(summary: impl Into<String>) -> FixOutcome {
        FixOutcome::Applied {
            already_compliant: false,
            verified: true,
            summary: summary.into(),
            before: BTreeMap::new(),
            after: BTreeMap::new(),
        }
    }

    fn compliant(summary: impl Into<String>) -> FixOutcome {
        FixOutcome::Applied {
            already_compliant: true,
            verified: true,
            summary: summary.into(),
            before: BTreeMap::new(),
            after: BTreeMap::new(),
        }
    }

    fn refused(reason: FixFailureReason, detail: impl Into<String>) -> FixOutcome {
        FixOutcome::Failed {
            reason,
            detail: detail.into(),
            retryable: false,
            graph_status: 0,
        }
    }

    fn from_graph(error: &GraphError) -> FixOutcome {
        let (reason, retryable) = match error.status() {
            401 | 403 => (FixFailureReason::PermissionDenied, false),
            404 => (FixFailureReason::TargetNotFound, false),
            // Graph refused the request itself: the same request is refused again. A timeout, a
            // conflict or a failed precondition may pass once the tenant is read afresh.
            status @ 400..=499 if !matches!(status, 408 | 409 | 412 | 429) => {
                (FixFailureReason::GraphError, false)
            }
            _ => (FixFailureReason::GraphError, true),
        };
        FixOutcome::Failed {
            reason,
            detail: error.to_string(),
            retryable,
            graph_status: error.status(),
        }
    }
}

/// Turns a Graph error into the fix's failure, for `?` in the steps below.
type Step<T> = Result<T, FixOutcome>;

fn graph<T>(result: Result<T, GraphError>) -> Step<T> {
    result.map_err(|error| FixOutcome::from_graph(&error))
}

pub struct FixRun<'a> {
    pub scanning: &'a Scanning,
    pub tenant: &'a TenantRow,
    pub meter: Meter,
}

impl FixRun<'_> {
    fn parameter<'r>(&self, request: &'r fixes::FixRequested, name: &str) -> Step<&'r str> {
        request
            .parameters
            .get(name)
            .map(String::as_str)
            .filter(|value| !value.is_empty())
            .ok_or_else(|| {
                FixOutcome::refused(
                    FixFailureReason::Unsupported,
                    format!("the fix needs the parameter {name}"),
                )
            })
    }

    async fn send(
        &self,
        api: Api,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Step<Value> {
        graph(
            self.scanning
                .graph
                .send(
                    &self.tenant.microsoft_tenant_id,
                    api,
                    method,
                    path,
                    body,
                    &self.meter,
                )
                .await,
        )
    }

    /// Sends a change to a user; a refusal names the directory role Picket's app needs to change
    /// an administrator, which application permissions alone do not give.
    async fn change_user(&self, method: Method, path: &str, body: Option<&Value>) -> Step<Value> {
        self.send(Api::Graph, method, path, body)
            .await
            .map_err(|outcome| match outcome {
                FixOutcome::Failed {
                    reason: FixFailureReason::PermissionDenied,
                    detail,
                    retryable,
                    graph_status,
                } => FixOutcome::Failed {
                    reason: FixFailureReason::PermissionDenied,
                    detail: format!(
                        "{detail}; to change an administrator, Picket's app needs the Privileged Authentication Administrator role"
                    ),
                    retryable,
                    graph_status,
                },
                other => other,
            })
    }

    async fn get(&self, path: &str) -> Result<Value, GraphError> {
        self.scanning
            .graph
            .get(
                &self.tenant.microsoft_tenant_id,
                &format!("/v1.0{path}"),
                &self.meter,
            )
            .await
    }

    /// A user that exists and that Picket may act on.
    async fn guarded_user(&self, user_id: &str, disabling: bool) -> Step<Value> {
        let user = match self
            .get(&format!(
                "/users/{user_id}?$select=id,displayName,userPrincipalName,accountEnabled,onPremisesSyncEnabled,signInSessionsValidFromDateTime"
            ))
            .await
        {
            Ok(user) => user,
            Err(error) => return Err(FixOutcome::from_graph(&error)),
        };
        let upn = user["userPrincipalName"].as_str().unwrap_or(user_id);
        if is_break_glass(&self.scanning.settings.break_glass_patterns, &user) {
            return Err(FixOutcome::refused(
                FixFailureReason::RefusedBreakGlass,
                format!("{upn} is a break-glass account; Picket never changes it"),
            ));
        }
        if disabling && user["onPremisesSyncEnabled"] == true {
            return Err(FixOutcome::refused(
                FixFailureReason::RefusedOnPremisesSynced,
                format!(
                    "{upn} is synchronised from on-premises Active Directory; disable it there, or the next sync enables it again"
                ),
            ));
        }
        Ok(user)
    }

    /// Applies the fix of `request`; never panics on what the tenant holds.
    pub async fn apply(&self, check: &Check, request: &fixes::FixRequested) -> FixOutcome {
        let result = match self.permitted(check).await {
            Err(refused) => Err(refused),
            Ok(()) if check.kind == Kind::Configuration => {
                self.fix_configuration(check, request).await
            }
            Ok(()) => self.fix_target(request).await,
        };
        result.unwrap_or_else(|failed| failed)
    }

    /// What the tenant granted Picket's app, for the APIs of `names`.
    async fn granted(&self, names: &[String]) -> Step<Granted> {
        let permissions = self.scanning.catalogue.permissions();
        let apis: BTreeSet<Api> = names
            .iter()
            .filter_map(|name| permissions.api_of(name))
            .collect();
        let apis: Vec<Api> = apis.into_iter().collect();
        graph(
            access::granted(
                &self.scanning.graph,
                &self.scanning.catalogue,
                &self.tenant.microsoft_tenant_id,
                &apis,
            )
            .await,
        )
    }

    /// Refuses, before anything is sent, a fix whose permissions the tenant has not granted.
    async fn permitted(&self, check: &Check) -> Step<()> {
        let needed = &check.fix.permissions;
        if needed.is_empty() {
            return Ok(());
        }
        let granted = self.granted(needed).await?;
        let missing = self
            .scanning
            .catalogue
            .permissions()
            .missing(needed, &granted);
        if missing.is_empty() {
            return Ok(());
        }
        Err(FixOutcome::refused(
            FixFailureReason::PermissionDenied,
            format!(
                "missing permission {}: the tenant has not granted it to Picket's app; an administrator must consent again before this fix can be applied",
                missing.join(", ")
            ),
        ))
    }

    /// Re-reads what the check reads and evaluates it: the subject's failure, if it still fails.
    async fn reevaluate(
        &self,
        check: &Check,
        fingerprint_wanted: &str,
    ) -> Step<(Snapshot, Option<crate::checks::Failure>)> {
        let service_plans: BTreeSet<String> = self.tenant.service_plans.iter().cloned().collect();
        let mut snapshot = Snapshot::new(
            Utc::now(),
            &self.tenant.display_name,
            &self.scanning.settings.client_id,
            &self.scanning.settings.break_glass_patterns,
        );
        let collector = Collector {
            graph: &self.scanning.graph,
            microsoft_tenant_id: &self.tenant.microsoft_tenant_id,
            service_plans: &service_plans,
            meter: &self.meter,
            carried: None,
            inbox_rule_sweep: self.scanning.settings.inbox_rule_sweep,
            tracked: None,
        };
        let sources = check.reads.iter().copied().collect();
        let granted = self
            .granted(&self.scanning.catalogue.needed_permissions())
            .await?;
        access::deny(&mut snapshot, &self.scanning.catalogue, &granted, &sources);
        let collected = collector.collect(&mut snapshot, &sources, None).await;
        if let Some(error) = collected.errors.first() {
            return Err(FixOutcome::Failed {
                reason: FixFailureReason::GraphError,
                detail: format!("{}: {}", error.resource, error.message),
                retryable: true,
                graph_status: u16::try_from(error.http_status).unwrap_or_default(),
            });
        }
        let tenant_id = self.tenant.tenant_id.to_string();
        match evaluate(check, &snapshot, plan_of(self.tenant), &service_plans) {
            Outcome::Failed(failures) => {
                let failure = failures.into_iter().find(|failure| {
                    fingerprint(&tenant_id, &check.id, &failure.subject) == fingerprint_wanted
                });
                Ok((snapshot, failure))
            }
            Outcome::Passed => Ok((snapshot, None)),
            Outcome::NotApplicable(reason) => Err(FixOutcome::refused(
                FixFailureReason::PermissionDenied,
                format!("the check no longer applies: {reason}"),
            )),
            Outcome::NotEvaluated(reason) => Err(FixOutcome::refused(
                FixFailureReason::PermissionDenied,
                format!("the state cannot be read again: {reason}"),
            )),
            Outcome::Error(missing) => Err(FixOutcome::Failed {
                reason: FixFailureReason::GraphError,
                detail: missing.to_string(),
                retryable: true,
                graph_status: 0,
            }),
        }
    }

    async fn fix_configuration(
        &self,
        check: &Check,
        request: &fixes::FixRequested,
    ) -> Step<FixOutcome> {
        let (snapshot, failure) = self.reevaluate(check, &request.fingerprint).await?;
        let Some(failure) = failure else {
            return Ok(FixOutcome::compliant(format!(
                "{}: already compliant, nothing changed",
                check.title
            )));
        };
        let writes = super::plan::plan(check, &snapshot, &failure).map_err(|error| {
            FixOutcome::refused(FixFailureReason::Unsupported, error.to_string())
        })?;
        for write in &writes {
            self.send(
                Api::Graph,
                write.method.clone(),
                &format!("/v1.0{}", write.path),
                write.body.as_ref(),
            )
            .await?;
        }
        let (_, still_failing) = self.reevaluate(check, &request.fingerprint).await?;
        if still_failing.is_some() {
            return Err(FixOutcome::Failed {
                reason: FixFailureReason::VerificationFailed,
                detail: format!("{} still fails after the change", check.id),
                retryable: true,
                graph_status: 0,
            });
        }
        let before = failure
            .evidence
            .iter()
            .filter(|(key, _)| !key.starts_with("expectedValue"))
            .map(|(key, value)| {
                (
                    key.trim_start_matches("currentValue").to_owned(),
                    value.clone(),
                )
            })
            .collect();
        let writes_text: Vec<String> = writes
            .iter()
            .map(|write| format!("{} {}", write.method, write.path))
            .collect();
        Ok(FixOutcome::Applied {
            already_compliant: false,
            verified: true,
            summary: format!("{}: fixed ({})", check.title, writes_text.join(", ")),
            before,
            after: BTreeMap::from([("check".to_owned(), "passes".to_owned())]),
        })
    }

    async fn fix_target(&self, request: &fixes::FixRequested) -> Step<FixOutcome> {
        let action = FixAction::try_from(request.action).unwrap_or(FixAction::Unspecified);
        match action {
            FixAction::DisableUser => self.disable_user(request).await,
            FixAction::RevokeSessions => self.revoke_sessions(request).await,
            FixAction::DeleteInboxRule => self.delete_inbox_rule(request).await,
            FixAction::RevokeOauthGrant => self.revoke_grant(request).await,
            FixAction::RemoveAppCredential => self.remove_credential(request).await,
            FixAction::RemoveRoleAssignment => self.remove_role(request).await,
            FixAction::EnableConditionalAccessPolicy => self.enable_policy(request).await,
            FixAction::ConfirmUserCompromised => self.confirm_compromised(request).await,
            FixAction::IsolateDevice => self.isolate(request).await,
            FixAction::DisableApp => self.disable_app(request).await,
            FixAction::Manual
            | FixAction::UpdateSetting
            | FixAction::CreateConditionalAccessPolicy
            | FixAction::Unspecified => Ok(FixOutcome::refused(
                FixFailureReason::Unsupported,
                format!(
                    "no automated {} for this finding; follow the recommended fix: {}",
                    action.as_str_name(),
                    request.recommended_fix
                ),
            )),
        }
    }

    fn user_id<'r>(&self, request: &'r fixes::FixRequested) -> Step<&'r str> {
        match request.parameters.get("userId").filter(|id| !id.is_empty()) {
            Some(user_id) => Ok(user_id),
            None if !request.target_id.is_empty() => Ok(&request.target_id),
            None => self.parameter(request, "userId"),
        }
    }

    async fn disable_user(&self, request: &fixes::FixRequested) -> Step<FixOutcome> {
        let user_id = self.user_id(request)?;
        let user = self.guarded_user(user_id, true).await?;
        let upn = user["userPrincipalName"]
            .as_str()
            .unwrap_or(user_id)
            .to_owned();
        if user["accountEnabled"] == false {
            return Ok(FixOutcome::compliant(format!(
                "{upn} was already blocked from signing in"
            )));
        }
        let path = format!("/users/{user_id}");
        self.change_user(
            Method::PATCH,
            &format!("/v1.0{path}"),
            Some(&json!({"accountEnabled": false})),
        )
        .await?;
        self.verify_disabled(&path, &upn, format!("blocked sign-in of {upn}"))
            .await
    }

    /// Reads `path` (a user or a service principal) back after its sign-in was blocked.
    async fn verify_disabled(&self, path: &str, name: &str, summary: String) -> Step<FixOutcome> {
        let after = graph(self.get(&format!("{path}?$select=accountEnabled")).await)?;
        if after["accountEnabled"] != false {
            return Err(verification_failed(format!("{name} is still enabled")));
        }
        Ok(changed(summary, "accountEnabled", "true", "false"))
    }

    async fn revoke_sessions(&self, request: &fixes::FixRequested) -> Step<FixOutcome> {
        let user_id = self.user_id(request)?;
        let user = self.guarded_user(user_id, false).await?;
        let upn = user["userPrincipalName"]
            .as_str()
            .unwrap_or(user_id)
            .to_owned();
        let requested_at = request
            .requested_at
            .as_ref()
            .and_then(picket_platform::time::from_timestamp);
        let valid_from = timestamp(&user["signInSessionsValidFromDateTime"]);
        if let (Some(requested_at), Some(valid_from)) = (requested_at, valid_from)
            && valid_from >= requested_at
        {
            return Ok(FixOutcome::compliant(format!(
                "sessions of {upn} were already revoked after the fix was requested"
            )));
        }
        let before: DateTime<Utc> = Utc::now() - chrono::Duration::minutes(1);
        self.change_user(
            Method::POST,
            &format!("/v1.0/users/{user_id}/revokeSignInSessions"),
            None,
        )
        .await?;
        let after = graph(
            self.get(&format!(
                "/users/{user_id}?$select=signInSessionsValidFromDateTime"
            ))
            .await,
        )?;
        if timestamp(&after["signInSessionsValidFromDateTime"]).is_none_or(|from| from < before) {
            return Err(verification_failed(format!(
                "the sessions of {upn} still date from before the revocation"
            )));
        }
        Ok(changed(
            format!("revoked every session of {upn}"),
            "signInSessionsValidFromDateTime",
            user["signInSessionsValidFromDateTime"]
                .as_str()
                .unwrap_or_default(),
            after["signInSessionsValidFromDateTime"]
                .as_str()
                .unwrap_or_default(),
        ))
    }

    /// Disables an app's service principal: it can no longer sign in, whatever it was granted.
    async fn disable_app(&self, request: &fixes::FixRequested) -> Step<FixOutcome> {
        let id = self.parameter(request, "servicePrincipalId")?;
        let app = graph(
            self.get(&format!(
                "/servicePrincipals/{id}?$select=id,appId,displayName,accountEnabled,appOwnerOrganizationId"
            ))
            .await,
        )?;
        let name = app["displayName"].as_str().unwrap_or(id).to_owned();
        if app["appId"] == self.scanning.settings.client_id.as_str() {
            return Err(FixOutcome::refused(
                FixFailureReason::Unsupported,
                format!("{name} is Picket's own app; Picket does not disable itself"),
            ));
        }
        if microsoft_owned(&app) {
            return Err(FixOutcome::refused(
                FixFailureReason::Unsupported,
                format!("{name} is one of Microsoft's apps; review its permissions in Entra ID"),
            ));
        }
        if app["accountEnabled"] == false {
            return Ok(FixOutcome::compliant(format!(
                "{name} was already disabled"
            )));
        }
        let path = format!("/servicePrincipals/{id}");
        self.send(
            Api::Graph,
            Method::PATCH,
            &format!("/v1.0{path}"),
            Some(&json!({"accountEnabled": false})),
        )
        .await?;
        self.verify_disabled(&path, &name, format!("disabled the app {name}"))
            .await
    }

    /// Deletes `path`, treating an object already gone as compliant, and checks it is gone.
    async fn delete_and_verify(&self, path: &str, what: &str) -> Step<FixOutcome> {
        match self.get(path).await {
            Err(error) if error.is_not_found() => {
                return Ok(FixOutcome::compliant(format!("{what} was already removed")));
            }
            Err(error) => return Err(FixOutcome::from_graph(&error)),
            Ok(_) => {}
        }
        self.send(Api::Graph, Method::DELETE, &format!("/v1.0{path}"), None)
            .await?;
        match self.get(path).await {
            Err(error) if error.is_not_found() => {
                Ok(FixOutcome::applied(format!("removed {what}")))
            }
            Err(error) => Err(FixOutcome::from_graph(&error)),
            Ok(_) => Err(verification_failed(format!("{what} is still there"))),
        }
    }

    async fn delete_inbox_rule(&self, request: &fixes::FixRequested) -> Step<FixOutcome> {
        let user_id = self.parameter(request, "userId")?;
        let rule_id = self.parameter(request, "ruleId")?;
        self.delete_and_verify(
            &format!("/users/{user_id}/mailFolders/inbox/messageRules/{rule_id}"),
            &format!("the inbox rule of {}", request.target),
        )
        .await
    }

    async fn revoke_grant(&self, request: &fixes::FixRequested) -> Step<FixOutcome> {
        let grant_id = self.parameter(request, "grantId")?;
        self.delete_and_verify(
            &format!("/oauth2PermissionGrants/{grant_id}"),
            &format!("the permission grant of {}", request.target),
        )
        .await
    }

    async fn remove_credential(&self, request: &fixes::FixRequested) -> Step<FixOutcome> {
        let collection = match self.parameter(request, "objectType")? {
            "servicePrincipal" => "servicePrincipals",
            _ => "applications",
        };
        let object_id = self.parameter(request, "objectId")?;
        let key_id = self.parameter(request, "keyId")?;
        let path =
            format!("/{collection}/{object_id}?$select=id,passwordCredentials,keyCredentials");
        let has_key = |object: &Value, field: &str| {
            object[field]
                .as_array()
                .is_some_and(|credentials| credentials.iter().any(|key| key["keyId"] == key_id))
        };
        let object = graph(self.get(&path).await)?;
        if has_key(&object, "keyCredentials") {
            return Ok(FixOutcome::refused(
                FixFailureReason::Unsupported,
                "removing a certificate needs a proof signed by the app's own key; remove it in the portal",
            ));
        }
        if !has_key(&object, "passwordCredentials") {
            return Ok(FixOutcome::compliant(format!(
                "the credential {key_id} of {} was already removed",
                request.target
            )));
        }
        self.send(
            Api::Graph,
            Method::POST,
            &format!("/v1.0/{collection}/{object_id}/removePassword"),
            Some(&json!({"keyId": key_id})),
        )
        .await?;
        let after = graph(self.get(&path).await)?;
        if has_key(&after, "passwordCredentials") {
            return Err(verification_failed(format!(
                "the credential {key_id} is still there"
            )));
        }
        Ok(FixOutcome::applied(format!(
            "removed the client secret {key_id} of {}",
            request.target
        )))
    }

    /// The assignments of `role` to `principal`, with the principal expanded.
    async fn role_assignments(&self, principal: &str, role: &str) -> Step<Vec<Value>> {
        let filter = format!("principalId eq '{principal}' and roleDefinitionId eq '{role}'");
        let encoded = url_encode(&filter);
        graph(
            self.scanning
                .graph
                .get_all(
                    &self.tenant.microsoft_tenant_id,
                    &format!(
                        "/v1.0/roleManagement/directory/roleAssignments?$filter={encoded}&$expand=principal"
                    ),
                    &self.meter,
                )
                .await,
        )
    }

    /// Whether Picket may take a role from `principal`: a user that is no break-glass account, a
    /// group, or an app other than Picket's own (which needs its role to act on administrators).
    async fn guarded_principal(&self, principal: &Value, id: &str) -> Step<()> {
        match PrincipalKind::of(principal) {
            PrincipalKind::User => self.guarded_user(id, false).await.map(drop),
            PrincipalKind::Group => Ok(()),
            PrincipalKind::ServicePrincipal
                if principal["appId"] == self.scanning.settings.client_id.as_str() =>
            {
                Err(FixOutcome::refused(
                    FixFailureReason::Unsupported,
                    "the role is held by Picket's own app, which needs it to act on administrators; remove it in Entra ID if that is meant",
                ))
            }
            PrincipalKind::ServicePrincipal => Ok(()),
        }
    }

    async fn remove_role(&self, request: &fixes::FixRequested) -> Step<FixOutcome> {
        let principal = self.parameter(request, "principalId")?;
        let role = self.parameter(request, "roleDefinitionId")?;
        let assignments = self.role_assignments(principal, role).await?;
        let Some(first) = assignments.first() else {
            return Ok(FixOutcome::compliant(format!(
                "{} no longer holds the role",
                request.target
            )));
        };
        self.guarded_principal(&first["principal"], principal)
            .await?;
        for id in assignments
            .iter()
            .filter_map(|assignment| assignment["id"].as_str())
        {
            self.send(
                Api::Graph,
                Method::DELETE,
                &format!("/v1.0/roleManagement/directory/roleAssignments/{id}"),
                None,
            )
            .await?;
        }
        if !self.role_assignments(principal, role).await?.is_empty() {
            return Err(verification_failed(format!(
                "{} still holds the role",
                request.target
            )));
        }
        Ok(FixOutcome::applied(format!(
            "removed the role from {}",
            request.target
        )))
    }

    async fn enable_policy(&self, request: &fixes::FixRequested) -> Step<FixOutcome> {
        let policy_id = self.parameter(request, "policyId")?;
        let path = format!("/identity/conditionalAccess/policies/{policy_id}");
        let policy = graph(self.get(&path).await)?;
        let previous = policy["state"].as_str().unwrap_or_default().to_owned();
        if previous == "enabled" {
            return Ok(FixOutcome::compliant(format!(
                "{} is already enabled",
                request.target
            )));
        }
        self.send(
            Api::Graph,
            Method::PATCH,
            &format!("/v1.0{path}"),
            Some(&json!({"state": "enabled"})),
        )
        .await?;
        let after = graph(self.get(&path).await)?;
        if after["state"] != "enabled" {
            return Err(verification_failed(format!(
                "{} is still {previous}",
                request.target
            )));
        }
        Ok(changed(
            format!("enabled the conditional access policy {}", request.target),
            "state",
            &previous,
            "enabled",
        ))
    }

    async fn confirm_compromised(&self, request: &fixes::FixRequested) -> Step<FixOutcome> {
        let user_id = self.user_id(request)?;
        self.guarded_user(user_id, false).await?;
        let path = format!("/identityProtection/riskyUsers/{user_id}");
        let risky = graph(self.get(&path).await)?;
        if risky["riskState"] == "confirmedCompromised" {
            return Ok(FixOutcome::compliant(format!(
                "{} was already confirmed compromised",
                request.target
            )));
        }
        self.send(
            Api::Graph,
            Method::POST,
            "/v1.0/identityProtection/riskyUsers/confirmCompromised",
            Some(&json!({"userIds": [user_id]})),
        )
        .await?;
        let after = graph(self.get(&path).await)?;
        if after["riskState"] != "confirmedCompromised" {
            return Err(verification_failed(format!(
                "{} is not confirmed compromised",
                request.target
            )));
        }
        Ok(FixOutcome::applied(format!(
            "confirmed {} compromised",
            request.target
        )))
    }

    /// The latest isolation action of a machine, if any.
    async fn isolation(&self, machine_id: &str) -> Step<Option<Value>> {
        let filter = url_encode(&format!("machineId eq '{machine_id}'"));
        let actions = self
            .send(
                Api::Defender,
                Method::GET,
                &format!("/api/machineactions?$filter={filter}"),
                None,
            )
            .await?;
        Ok(actions["value"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|action| matches!(action["type"].as_str(), Some("Isolate" | "Unisolate")))
            .max_by_key(|action| action["creationDateTimeUtc"].as_str().map(str::to_owned))
            .cloned())
    }

    async fn isolate(&self, request: &fixes::FixRequested) -> Step<FixOutcome> {
        let machine_id = self.parameter(request, "machineId")?;
        self.send(
            Api::Defender,
            Method::GET,
            &format!("/api/machines/{machine_id}"),
            None,
        )
        .await?;
        let isolated = |action: &Option<Value>| {
            action.as_ref().is_some_and(|action| {
                action["type"] == "Isolate"
                    && matches!(
                        action["status"].as_str(),
                        Some("Pending" | "InProgress" | "Succeeded")
                    )
            })
        };
        if isolated(&self.isolation(machine_id).await?) {
            return Ok(FixOutcome::compliant(format!(
                "{} is already isolated",
                request.target
            )));
        }
        let comment = format!(
            "Isolated by Picket for incident {} (approved fix {})",
            request.incident_id, request.fix_id
        );
        self.send(
            Api::Defender,
            Method::POST,
            &format!("/api/machines/{machine_id}/isolate"),
            Some(&json!({"Comment": comment, "IsolationType": "Full"})),
        )
        .await?;
        let latest = self.isolation(machine_id).await?;
        if !isolated(&latest) {
            return Err(verification_failed(format!(
                "{} shows no isolation",
                request.target
            )));
        }
        let status = latest
            .as_ref()
            .and_then(|action| action["status"].as_str())
            .unwrap_or_default()
            .to_owned();
        Ok(FixOutcome::Applied {
            already_compliant: false,
            verified: status == "Succeeded",
            summary: format!("isolated {} from the network ({status})", request.target),
            before: BTreeMap::new(),
            after: BTreeMap::from([("isolation".to_owned(), status)]),
        })
    }
}

fn verification_failed(detail: String) -> FixOutcome {
    FixOutcome::Failed {
        reason: FixFailureReason::VerificationFailed,
        detail,
        retryable: true,
        graph_status: 0,
    }
}

fn changed(summary: String, property: &str, before: &str, after: &str) -> FixOutcome {
    FixOutcome::Applied {
        already_compliant: false,
        verified: true,
        summary,
        before: BTreeMap::from([(property.to_owned(), before.to_owned())]),
        after: BTreeMap::from([(property.to_owned(), after.to_owned())]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16) -> GraphError {
        GraphError::Api {
            status,
            code: "Code".into(),
            message: "message".into(),
        }
    }

    #[test]
    fn a_request_graph_refused_is_not_retried_and_a_passing_failure_is() {
        let retryable = |status| match FixOutcome::from_graph(&api(status)) {
            FixOutcome::Failed { retryable, .. } => retryable,
            _ => unreachable!("a failure"),
        };
        for refused in [400, 401, 403, 404, 405, 422] {
            assert!(!retryable(refused), "{refused}");
        }
        for passing in [408, 409, 412, 429, 500, 503] {
            assert!(retryable(passing), "{passing}");
        }
    }
}
