//! Monitoring detections: suspicious behaviour in the sign-in and audit log windows a poll fetched,
//! and in current state (inbox rules, consent grants, risky users, Defender alerts). Pure functions
//! of the snapshot; thresholds come from the catalogue's parameters.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;

use crate::checks::catalogue::{Action, Check, Severity};
use crate::checks::directory::{GLOBAL_ADMINISTRATOR, PrincipalKind, privileged_role_name};
use crate::checks::snapshot::{Missing, Snapshot, Source, strings, timestamp};
use crate::checks::{Evaluator, Failure};

pub fn evaluator(name: &str) -> Option<Evaluator> {
    let evaluator: Evaluator = match name {
        "inbox_rule_external_forward" => inbox_rule_external_forward,
        "inbox_rule_hides_mail" => inbox_rule_hides_mail,
        "mfa_fatigue" => mfa_fatigue,
        "password_spray" => password_spray,
        "legacy_auth_sign_in" => legacy_auth_sign_in,
        "privileged_role_outside_pim" => privileged_role_outside_pim,
        "app_credential_added" => app_credential_added,
        "ca_policy_disabled" => ca_policy_disabled,
        "new_country_sign_in" => new_country_sign_in,
        "high_risk_user" => high_risk_user,
        "federation_changed" => federation_changed,
        "defender_device_alert" => defender_device_alert,
        _ => return None,
    };
    Some(evaluator)
}

/// Each user's inbox rules: (user id, user principal name, rule), enabled rules only.
fn enabled_rules(snapshot: &Snapshot) -> Result<Vec<(&str, &str, &Value)>, Missing> {
    let mailboxes = snapshot.get(Source::InboxRules)?;
    let mut rules = Vec::new();
    for (user_id, mailbox) in mailboxes.as_object().into_iter().flatten() {
        let upn = mailbox["userPrincipalName"].as_str().unwrap_or(user_id);
        for rule in mailbox["rules"].as_array().into_iter().flatten() {
            if rule["isEnabled"] != false {
                rules.push((user_id.as_str(), upn, rule));
            }
        }
    }
    Ok(rules)
}

fn rule_failure(user_id: &str, upn: &str, rule: &Value) -> Failure {
    let rule_id = rule["id"].as_str().unwrap_or_default();
    let name = rule["displayName"].as_str().unwrap_or_default();
    Failure::on(
        &format!("{user_id}/{rule_id}"),
        &format!("{upn}: inbox rule \"{name}\""),
        "inboxRule",
        rule_id,
    )
    .evidence("mailbox", upn)
    .evidence("ruleName", name)
    .fix("userId", user_id)
    .fix("ruleId", rule_id)
}

fn inbox_rule_external_forward(
    snapshot: &Snapshot,
    _check: &Check,
) -> Result<Vec<Failure>, Missing> {
    let own_domains: BTreeSet<String> = snapshot
        .items(Source::Domains)?
        .iter()
        .filter_map(|domain| domain["id"].as_str().map(str::to_lowercase))
        .collect();
    let mut failures = Vec::new();
    for (user_id, upn, rule) in enabled_rules(snapshot)? {
        let actions = &rule["actions"];
        let external: Vec<String> = ["forwardTo", "forwardAsAttachmentTo", "redirectTo"]
            .iter()
            .flat_map(|action| actions[action].as_array().into_iter().flatten())
            .filter_map(|recipient| recipient["emailAddress"]["address"].as_str())
            .map(str::to_lowercase)
            .filter(|address| {
                let domain = address.rsplit('@').next().unwrap_or_default();
                !own_domains.contains(domain)
            })
            .collect();
        if !external.is_empty() {
            failures
                .push(rule_failure(user_id, upn, rule).evidence("forwardTo", external.join(", ")));
        }
    }
    Ok(failures)
}

fn inbox_rule_hides_mail(snapshot: &Snapshot, _check: &Check) -> Result<Vec<Failure>, Missing> {
    let folders = snapshot.get(Source::MailFolders)?;
    let mut failures = Vec::new();
    for (user_id, upn, rule) in enabled_rules(snapshot)? {
        let actions = &rule["actions"];
        let deletes = actions["delete"] == true || actions["permanentDelete"] == true;
        let hiding_folder = actions["moveToFolder"].as_str().and_then(|target| {
            folders[user_id]
                .as_object()?
                .iter()
                .find(|(_, id)| id.as_str() == Some(target))
                .map(|(name, _)| name.clone())
        });
        if deletes || hiding_folder.is_some() {
            let action =
                hiding_folder.map_or("delete".to_owned(), |name| format!("move to {name}"));
            failures.push(rule_failure(user_id, upn, rule).evidence("action", action));
        }
    }
    Ok(failures)
}

/// A sign-in record, read once.
struct SignIn<'a> {
    record: &'a Value,
    at: DateTime<Utc>,
    user_id: &'a str,
    ip: &'a str,
    error_code: i64,
}

impl SignIn<'_> {
    fn id(&self) -> &str {
        self.record["id"].as_str().unwrap_or_default()
    }

    fn upn(&self) -> &str {
        self.record["userPrincipalName"]
            .as_str()
            .unwrap_or(self.user_id)
    }

    fn succeeded(&self) -> bool {
        self.error_code == 0
    }

    fn country(&self) -> &str {
        self.record["location"]["countryOrRegion"]
            .as_str()
            .unwrap_or_default()
    }
}

/// The window's sign-ins, oldest first.
fn sign_ins(snapshot: &Snapshot) -> Result<Vec<SignIn<'_>>, Missing> {
    let mut records: Vec<SignIn> = snapshot
        .items(Source::SignIns)?
        .iter()
        .filter_map(|record| {
            Some(SignIn {
                record,
                at: timestamp(&record["createdDateTime"])?,
                user_id: record["userId"].as_str()?,
                ip: record["ipAddress"].as_str().unwrap_or_default(),
                error_code: record["status"]["errorCode"].as_i64().unwrap_or_default(),
            })
        })
        .collect();
    records.sort_by_key(|sign_in| sign_in.at);
    Ok(records)
}

/// A failure whose subject is a user.
fn user_failure(user_id: &str, upn: &str) -> Failure {
    Failure::on(user_id, upn, "user", user_id)
        .fix("userId", user_id)
        .fix("userPrincipalName", upn)
}

fn mfa_fatigue(snapshot: &Snapshot, check: &Check) -> Result<Vec<Failure>, Missing> {
    let threshold = check.number("denied_prompts", 10);
    let window = Duration::minutes(check.number("window_minutes", 5));
    let records = sign_ins(snapshot)?;
    let denied = |sign_in: &SignIn| {
        let details = sign_in.record["status"]["additionalDetails"]
            .as_str()
            .unwrap_or_default()
            .to_lowercase();
        sign_in.error_code == 500121
            && (details.contains("denied")
                || details.contains("declined")
                || details.contains("did not respond"))
    };
    let mut failures = Vec::new();
    for success in records.iter().filter(|sign_in| sign_in.succeeded()) {
        let prompts = records
            .iter()
            .filter(|prompt| {
                prompt.user_id == success.user_id
                    && prompt.ip == success.ip
                    && prompt.at <= success.at
                    && prompt.at >= success.at - window
                    && denied(prompt)
            })
            .count() as i64;
        if prompts > threshold {
            failures.push(
                user_failure(success.user_id, success.upn())
                    .evidence("deniedPrompts", prompts)
                    .evidence("ipAddress", success.ip)
                    .evidence("approvedAt", success.at.to_rfc3339())
                    .happened(success.id(), Some(success.at)),
            );
        }
    }
    Ok(failures)
}

fn password_spray(snapshot: &Snapshot, check: &Check) -> Result<Vec<Failure>, Missing> {
    const BAD_PASSWORD: [i64; 3] = [50126, 50053, 50055];
    let accounts = check.number("accounts", 5) as usize;
    let window = Duration::minutes(check.number("window_minutes", 20));
    let records = sign_ins(snapshot)?;
    let mut by_ip: BTreeMap<&str, Vec<&SignIn>> = BTreeMap::new();
    for sign_in in &records {
        by_ip.entry(sign_in.ip).or_default().push(sign_in);
    }
    let mut failures = Vec::new();
    for (ip, attempts) in by_ip {
        let spray = attempts.iter().find_map(|first| {
            let in_window: Vec<&&SignIn> = attempts
                .iter()
                .filter(|attempt| attempt.at >= first.at && attempt.at < first.at + window)
                .collect();
            let failed: BTreeSet<&str> = in_window
                .iter()
                .filter(|attempt| BAD_PASSWORD.contains(&attempt.error_code))
                .map(|attempt| attempt.user_id)
                .collect();
            let succeeded: BTreeSet<&str> = in_window
                .iter()
                .filter(|attempt| attempt.succeeded())
                .map(|attempt| attempt.user_id)
                .collect();
            (failed.len() >= accounts && failed.len() > succeeded.len()).then_some((first, failed))
        });
        if let Some((first, failed)) = spray {
            failures.push(
                Failure::on(ip, ip, "ipAddress", "")
                    .evidence("ipAddress", ip)
                    .evidence("failedAccounts", failed.len())
                    .evidence("country", first.country())
                    .fix("ipAddress", ip)
                    .happened(first.id(), Some(first.at)),
            );
        }
    }
    Ok(failures)
}

fn legacy_auth_sign_in(snapshot: &Snapshot, _check: &Check) -> Result<Vec<Failure>, Missing> {
    const LEGACY: [&str; 12] = [
        "Exchange ActiveSync",
        "IMAP4",
        "POP3",
        "Authenticated SMTP",
        "Other clients",
        "MAPI Over HTTP",
        "Exchange Web Services",
        "AutoDiscover",
        "Exchange Online PowerShell",
        "Offline Address Book",
        "Outlook Anywhere (RPC over HTTP)",
        "Reporting Web Services",
    ];
    Ok(sign_ins(snapshot)?
        .iter()
        .filter(|sign_in| sign_in.succeeded())
        .filter_map(|sign_in| {
            let client = sign_in.record["clientAppUsed"].as_str()?;
            LEGACY.contains(&client).then(|| {
                user_failure(sign_in.user_id, sign_in.upn())
                    .evidence("clientAppUsed", client)
                    .evidence("ipAddress", sign_in.ip)
                    .happened(sign_in.id(), Some(sign_in.at))
            })
        })
        .collect())
}

fn new_country_sign_in(snapshot: &Snapshot, _check: &Check) -> Result<Vec<Failure>, Missing> {
    let history = snapshot.get(Source::SignInHistory)?;
    let mut known: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for (user_id, countries) in history.as_object().into_iter().flatten() {
        known
            .entry(user_id.as_str())
            .or_default()
            .extend(strings(countries).into_iter().map(str::to_owned));
    }
    let mut failures = Vec::new();
    for sign_in in sign_ins(snapshot)?
        .iter()
        .filter(|sign_in| sign_in.succeeded() && !sign_in.country().is_empty())
    {
        let seen = known.entry(sign_in.user_id).or_default();
        // A user with no earlier sign-in has no baseline yet: learn, do not alert.
        if !seen.is_empty() && !seen.contains(sign_in.country()) {
            failures.push(
                user_failure(sign_in.user_id, sign_in.upn())
                    .evidence("country", sign_in.country())
                    .evidence(
                        "city",
                        sign_in.record["location"]["city"]
                            .as_str()
                            .unwrap_or_default(),
                    )
                    .evidence("ipAddress", sign_in.ip)
                    .evidence(
                        "knownCountries",
                        seen.iter().cloned().collect::<Vec<_>>().join(", "),
                    )
                    .happened(sign_in.id(), Some(sign_in.at)),
            );
        }
        seen.insert(sign_in.country().to_owned());
    }
    Ok(failures)
}

/// A directory audit record, with its time.
type Audit<'s> = (&'s Value, Option<DateTime<Utc>>);

/// The successful audit records of `activities`.
fn audits<'s>(snapshot: &'s Snapshot, activities: &[&str]) -> Result<Vec<Audit<'s>>, Missing> {
    Ok(snapshot
        .items(Source::DirectoryAudits)?
        .iter()
        .filter(|record| record["result"] == "success")
        .filter(|record| {
            let activity = record["activityDisplayName"]
                .as_str()
                .unwrap_or_default()
                .trim();
            activities.contains(&activity)
        })
        .map(|record| (record, timestamp(&record["activityDateTime"])))
        .collect())
}

/// The new value of a modified property, with Graph's JSON string quoting removed.
fn modified<'v>(target: &'v Value, property: &str) -> Option<(&'v str, &'v str)> {
    let change = target["modifiedProperties"]
        .as_array()?
        .iter()
        .find(|change| change["displayName"] == property)?;
    let unquote = |value: &'v Value| value.as_str().unwrap_or_default().trim_matches('"');
    Some((unquote(&change["oldValue"]), unquote(&change["newValue"])))
}

fn audit_id(record: &Value) -> &str {
    record["id"].as_str().unwrap_or_default()
}

fn initiator(record: &Value) -> String {
    let by = &record["initiatedBy"];
    by["user"]["userPrincipalName"]
        .as_str()
        .or_else(|| by["app"]["displayName"].as_str())
        .unwrap_or("unknown")
        .to_owned()
}

fn privileged_role_outside_pim(
    snapshot: &Snapshot,
    _check: &Check,
) -> Result<Vec<Failure>, Missing> {
    let mut failures = Vec::new();
    for (record, at) in audits(snapshot, &["Add member to role"])? {
        if record["initiatedBy"]["app"]["displayName"] == "MS-PIM" {
            continue;
        }
        for target in record["targetResources"].as_array().into_iter().flatten() {
            let Some((_, role)) = modified(target, "Role.TemplateId") else {
                continue;
            };
            let Some(role_name) = privileged_role_name(role) else {
                continue;
            };
            let principal = target["id"].as_str().unwrap_or_default();
            let name = target["userPrincipalName"]
                .as_str()
                .or_else(|| target["displayName"].as_str())
                .unwrap_or(principal);
            // The audit record names the kind: "User", "Group" or "ServicePrincipal".
            let kind = match target["type"].as_str() {
                Some("Group") => PrincipalKind::Group,
                Some("ServicePrincipal") => PrincipalKind::ServicePrincipal,
                _ => PrincipalKind::User,
            };
            let subject = format!("{principal}/{role}");
            let mut failure = Failure::on(&subject, name, kind.target_type(), principal)
                .evidence("role", role_name)
                .evidence("initiatedBy", initiator(record))
                .fix("principalId", principal)
                .fix("roleDefinitionId", role)
                .happened(audit_id(record), at);
            if role == GLOBAL_ADMINISTRATOR {
                failure.severity = Some(Severity::Critical);
            } else {
                failure.severity = Some(Severity::High);
            }
            failures.push(failure);
        }
    }
    Ok(failures)
}

/// Key ids in a `KeyDescription` value such as
/// `["[KeyIdentifier=…,KeyType=Password,KeyUsage=Verify,DisplayName=…]"]`.
fn key_ids(description: &str) -> BTreeSet<String> {
    description
        .split("KeyIdentifier=")
        .skip(1)
        .filter_map(|rest| rest.split([',', ']']).next())
        .map(str::to_owned)
        .collect()
}

fn app_credential_added(snapshot: &Snapshot, _check: &Check) -> Result<Vec<Failure>, Missing> {
    let activities = [
        "Add service principal credentials",
        "Update application – Certificates and secrets management",
    ];
    let mut failures = Vec::new();
    for (record, at) in audits(snapshot, &activities)? {
        for target in record["targetResources"].as_array().into_iter().flatten() {
            let Some((old, new)) = modified(target, "KeyDescription") else {
                continue;
            };
            let object_type = match target["type"].as_str() {
                Some("ServicePrincipal") => "servicePrincipal",
                _ => "application",
            };
            let object_id = target["id"].as_str().unwrap_or_default();
            let name = target["displayName"].as_str().unwrap_or(object_id);
            let before = key_ids(old);
            for key_id in key_ids(new).difference(&before) {
                failures.push(
                    Failure::on(
                        &format!("{object_id}/{key_id}"),
                        name,
                        object_type,
                        object_id,
                    )
                    .evidence("keyId", key_id)
                    .evidence("initiatedBy", initiator(record))
                    .fix("objectType", object_type)
                    .fix("objectId", object_id)
                    .fix("keyId", key_id)
                    .happened(audit_id(record), at),
                );
            }
        }
    }
    Ok(failures)
}

fn ca_policy_disabled(snapshot: &Snapshot, _check: &Check) -> Result<Vec<Failure>, Missing> {
    let mut failures = Vec::new();
    let activities = [
        "Update conditional access policy",
        "Delete conditional access policy",
    ];
    for (record, at) in audits(snapshot, &activities)? {
        let deleted = record["activityDisplayName"] == "Delete conditional access policy";
        for target in record["targetResources"].as_array().into_iter().flatten() {
            let policy_id = target["id"].as_str().unwrap_or_default();
            let name = target["displayName"].as_str().unwrap_or(policy_id);
            if !deleted {
                let Some((old, new)) = modified(target, "ConditionalAccessPolicy") else {
                    continue;
                };
                let state = |text: &str| {
                    serde_json::from_str::<Value>(text)
                        .ok()
                        .and_then(|policy| policy["state"].as_str().map(str::to_owned))
                };
                if state(old).as_deref() != Some("enabled")
                    || state(new).as_deref() == Some("enabled")
                {
                    continue;
                }
            }
            let mut failure = Failure::on(policy_id, name, "conditionalAccessPolicy", policy_id)
                .evidence("change", if deleted { "deleted" } else { "disabled" })
                .evidence("initiatedBy", initiator(record))
                .fix("policyId", policy_id)
                .happened(audit_id(record), at);
            if deleted {
                failure.fix_action = Some(Action::Manual);
            }
            failures.push(failure);
        }
    }
    Ok(failures)
}

fn federation_changed(snapshot: &Snapshot, _check: &Check) -> Result<Vec<Failure>, Missing> {
    let activities = [
        "Set federation settings on domain",
        "Set domain authentication",
    ];
    let mut failures = Vec::new();
    for (record, at) in audits(snapshot, &activities)? {
        for target in record["targetResources"].as_array().into_iter().flatten() {
            let domain = target["displayName"].as_str().unwrap_or_default();
            let mut failure = Failure::on(domain, domain, "domain", domain)
                .evidence(
                    "activity",
                    record["activityDisplayName"].as_str().unwrap_or_default(),
                )
                .evidence("initiatedBy", initiator(record))
                .happened(audit_id(record), at);
            if let Some((_, issuer)) = modified(target, "IssuerUri") {
                failure = failure.evidence("issuerUri", issuer);
            }
            failures.push(failure);
        }
    }
    Ok(failures)
}

fn high_risk_user(snapshot: &Snapshot, _check: &Check) -> Result<Vec<Failure>, Missing> {
    Ok(snapshot
        .items(Source::RiskyUsers)?
        .iter()
        .filter(|user| user["riskLevel"] == "high" && user["riskState"] == "atRisk")
        .filter_map(|user| {
            let user_id = user["id"].as_str()?;
            let upn = user["userPrincipalName"].as_str().unwrap_or(user_id);
            Some(
                user_failure(user_id, upn)
                    .evidence("riskLevel", "high")
                    .evidence(
                        "riskDetail",
                        user["riskDetail"].as_str().unwrap_or_default(),
                    )
                    .evidence(
                        "riskLastUpdated",
                        user["riskLastUpdatedDateTime"].as_str().unwrap_or_default(),
                    ),
            )
        })
        .collect())
}

fn defender_device_alert(snapshot: &Snapshot, _check: &Check) -> Result<Vec<Failure>, Missing> {
    let mut devices: BTreeMap<&str, Failure> = BTreeMap::new();
    for alert in snapshot.items(Source::DefenderAlerts)? {
        if alert["severity"] != "high" || alert["status"] == "resolved" {
            continue;
        }
        for evidence in alert["evidence"].as_array().into_iter().flatten() {
            if evidence["@odata.type"] != "#microsoft.graph.security.deviceEvidence" {
                continue;
            }
            let Some(machine) = evidence["mdeDeviceId"].as_str() else {
                continue;
            };
            let device = evidence["deviceDnsName"].as_str().unwrap_or(machine);
            devices.entry(machine).or_insert_with(|| {
                Failure::on(machine, device, "device", machine)
                    .evidence("alert", alert["title"].as_str().unwrap_or_default())
                    .evidence("alertId", alert["id"].as_str().unwrap_or_default())
                    .fix("machineId", machine)
            });
        }
    }
    Ok(devices.into_values().collect())
}
