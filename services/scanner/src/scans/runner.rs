//! Running one scan: read the licences, snapshot what the applicable checks need, evaluate every
//! check, then in one transaction publish only what changed (FindingObserved, FindingCleared),
//! store the results, the windows fetched and the tenant's health, and end the scan run.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use picket_platform::EventFactory;
use picket_platform::db::outbox;
use picket_platform::time::to_timestamp;
use picket_proto::findings::v1 as findings;
use picket_proto::tenants::v1 as tenants;
use sqlx::{PgConnection, PgPool};

use crate::checks::catalogue::{Catalogue, Check, Kind, Plan};
use crate::checks::snapshot::{Snapshot, Source, with_dependencies};
use crate::checks::{Failure, Outcome, evaluate, fingerprint};
use crate::graph::{Api, GraphClient, Meter};
use crate::scans::collect::{self, Collector, Window};
use crate::scans::results::{self, CheckResultRow, Learned};
use crate::scans::store::{self, ScanRow, Summary};
use crate::scans::{access, mailboxes, users};
use crate::settings::ScannerSettings;
use crate::tenants::store::{self as tenant_store, TenantRow};

/// At most this many errors are kept on a scan run.
const MAX_ERRORS: usize = 20;

pub struct Scanning {
    pub pool: PgPool,
    pub graph: Arc<GraphClient>,
    pub catalogue: Arc<Catalogue>,
    pub events: EventFactory,
    pub settings: ScannerSettings,
}

pub fn plan_of(tenant: &TenantRow) -> Plan {
    match tenant.plan.as_str() {
        "essentials" => Plan::Essentials,
        "premium" => Plan::Premium,
        _ => Plan::Standard,
    }
}

/// What one scan changed, to publish and count.
#[derive(Default)]
struct Changes {
    observed: Vec<findings::FindingObserved>,
    cleared: Vec<findings::FindingCleared>,
}

impl Scanning {
    /// Runs a claimed scan to its end. Storage errors leave it running; its lease then expires and
    /// it runs again.
    pub async fn run(&self, scan: ScanRow) -> Result<(), sqlx::Error> {
        let now = Utc::now();
        let Some(tenant) = tenant_store::get_tenant(&self.pool, scan.tenant_id).await? else {
            return Ok(());
        };
        let mut summary = Summary {
            state: "succeeded",
            ..Summary::default()
        };
        if !tenant.is_active() {
            summary.state = "cancelled";
            summary.errors.push(tenants::ScanError {
                message: format!("the tenant is {}", tenant.state),
                ..Default::default()
            });
            return self
                .end(&scan, &tenant, summary, &Learned::default(), now)
                .await;
        }
        let meter = Meter::default();
        let failed = |mut summary: Summary, resource: &str, status: u16, message: String| {
            summary.state = "failed";
            summary.errors.push(tenants::ScanError {
                resource: resource.to_owned(),
                http_status: u32::from(status),
                message,
                ..Default::default()
            });
            summary.graph_requests = meter.requests();
            summary.throttled_responses = meter.throttled();
            summary
        };
        let microsoft_tenant_id = tenant.microsoft_tenant_id.as_str();
        let granted = match access::granted(
            &self.graph,
            &self.catalogue,
            microsoft_tenant_id,
            &[Api::Graph],
        )
        .await
        {
            Ok(granted) => granted,
            Err(error) => {
                let summary = failed(summary, "token", error.status(), error.to_string());
                return self
                    .end(&scan, &tenant, summary, &Learned::default(), now)
                    .await;
            }
        };
        let permissions = self.catalogue.permissions();
        let unconnected = permissions.missing(permissions.connection(), &granted);
        if !unconnected.is_empty() {
            let message = format!("missing permission {}", unconnected.join(", "));
            let summary = failed(summary, "GET /subscribedSkus", 0, message);
            let learned = Learned {
                service_plans: None,
                missing_permissions: Some(access::missing(&self.catalogue, &granted)),
            };
            return self.end(&scan, &tenant, summary, &learned, now).await;
        }
        let skus = self
            .graph
            .get_all(microsoft_tenant_id, "/v1.0/subscribedSkus", &meter)
            .await;
        let service_plans = match skus {
            Ok(skus) => collect::service_plans(&skus),
            Err(error) => {
                let summary = failed(
                    summary,
                    "GET /subscribedSkus",
                    error.status(),
                    error.to_string(),
                );
                return self
                    .end(&scan, &tenant, summary, &Learned::default(), now)
                    .await;
            }
        };
        // Defender's permissions are read from its own token, where the tenant has Defender.
        let granted = match access::apis(&service_plans).as_slice() {
            [Api::Graph] => granted,
            apis => access::granted(&self.graph, &self.catalogue, microsoft_tenant_id, apis)
                .await
                .unwrap_or(granted),
        };
        let plan = plan_of(&tenant);
        let checks: Vec<&Check> = self
            .catalogue
            .checks()
            .iter()
            .filter(|check| match check.kind {
                Kind::Configuration => scan.includes_configuration(),
                Kind::Monitoring => scan.includes_monitoring(),
            })
            .collect();
        let sources: BTreeSet<Source> = checks
            .iter()
            .filter(|check| check.not_applicable(plan, &service_plans).is_none())
            .flat_map(|check| check.reads.iter().copied())
            .collect();
        let window = if scan.includes_monitoring() {
            Some(self.window(&tenant, now).await?)
        } else {
            None
        };
        let mut snapshot = Snapshot::new(
            now,
            &tenant.display_name,
            &self.settings.client_id,
            &self.settings.break_glass_patterns,
        );
        access::deny(&mut snapshot, &self.catalogue, &granted, &sources);
        if sources.contains(&Source::SignInHistory) {
            let history = results::known_countries(&self.pool, tenant.tenant_id).await?;
            snapshot.data.insert(Source::SignInHistory, Ok(history));
        }
        let carried = if with_dependencies(&sources).contains(&Source::InboxRules) {
            mailboxes::load(&self.pool, tenant.tenant_id).await?
        } else {
            mailboxes::Carried::default()
        };
        let tracked = if with_dependencies(&sources).contains(&Source::Users)
            && !collect::reads_sign_in_activity(&service_plans, &sources)
        {
            Some(users::load(&self.pool, tenant.tenant_id, now).await?)
        } else {
            None
        };
        let collector = Collector {
            graph: &self.graph,
            microsoft_tenant_id,
            service_plans: &service_plans,
            meter: &meter,
            carried: Some(&carried),
            inbox_rule_sweep: self.settings.inbox_rule_sweep,
            tracked: tracked.as_ref(),
        };
        let collected = collector.collect(&mut snapshot, &sources, window).await;
        summary.errors = collected.errors;
        summary.graph_requests = meter.requests();
        summary.throttled_responses = meter.throttled();
        summary.window_start = window.map(|window| window.start);
        summary.window_end = window.map(|window| window.end);
        let evaluations: Vec<(&Check, Outcome)> = checks
            .iter()
            .map(|check| (*check, evaluate(check, &snapshot, plan, &service_plans)))
            .collect();
        let mut transaction = self.pool.begin().await?;
        let changes = self
            .record(
                &mut transaction,
                &scan,
                &tenant,
                &evaluations,
                &mut summary,
                now,
            )
            .await?;
        self.record_logs(&mut transaction, &scan, &snapshot, window, now)
            .await?;
        mailboxes::save(&mut transaction, tenant.tenant_id, &snapshot).await?;
        if let Some(synced) = &collected.users {
            users::save(&mut transaction, tenant.tenant_id, synced, now).await?;
        }
        if summary.checks_errored > 0 {
            summary.state = "partial";
        }
        summary.errors.truncate(MAX_ERRORS);
        let learned = Learned {
            missing_permissions: Some(access::missing(&self.catalogue, &granted)),
            service_plans: Some(service_plans),
        };
        self.finish(transaction, &scan, &tenant, summary, &learned, changes, now)
            .await
    }

    /// The log window of a poll: from the previous window's end, less the late-arrival margin (or
    /// the initial lookback the first time), to now.
    async fn window(&self, tenant: &TenantRow, now: DateTime<Utc>) -> Result<Window, sqlx::Error> {
        let late = Duration::from_std(self.settings.late_arrival).unwrap_or_default();
        let lookback = Duration::from_std(self.settings.initial_lookback).unwrap_or_default();
        let previous = results::last_window_end(&self.pool, tenant.tenant_id).await?;
        let start = match previous {
            Some(end) => (end - late).max(now - lookback),
            None => now - lookback,
        };
        Ok(Window {
            start,
            end: now,
            since: previous.unwrap_or(start).max(start),
        })
    }

    /// Stores each check's result and works out what changed.
    async fn record(
        &self,
        connection: &mut PgConnection,
        scan: &ScanRow,
        tenant: &TenantRow,
        evaluations: &[(&Check, Outcome)],
        summary: &mut Summary,
        now: DateTime<Utc>,
    ) -> Result<Changes, sqlx::Error> {
        let tenant_id = tenant.tenant_id.to_string();
        let mut published: BTreeMap<String, results::FailingFinding> =
            results::failing(connection, tenant.tenant_id)
                .await?
                .into_iter()
                .map(|finding| (finding.fingerprint.clone(), finding))
                .collect();
        let mut changes = Changes::default();
        for (check, outcome) in evaluations {
            summary.checks_evaluated += 1;
            let mut failing_now = Vec::new();
            let (outcome_name, detail, clear_reason) = match outcome {
                Outcome::Passed => {
                    summary.checks_passed += 1;
                    ("passed", String::new(), Some(findings::ClearReason::Passed))
                }
                Outcome::Failed(failures) => {
                    summary.checks_failed += 1;
                    for failure in failures {
                        let print = fingerprint(&tenant_id, &check.id, &failure.subject);
                        let new = if check.windowed() {
                            let occurrence = failure.occurrence.as_deref().unwrap_or_default();
                            results::first_occurrence(
                                connection,
                                tenant.tenant_id,
                                &print,
                                occurrence,
                                now,
                            )
                            .await?
                        } else {
                            !published.contains_key(&print)
                        };
                        results::observe(
                            connection,
                            tenant.tenant_id,
                            &print,
                            &check.id,
                            &failure.subject,
                            &failure.target,
                            scan.scan_id,
                            now,
                        )
                        .await?;
                        if new {
                            changes
                                .observed
                                .push(observed(check, failure, &print, scan, now));
                        }
                        failing_now.push(print);
                    }
                    let reason = if check.kind == Kind::Monitoring {
                        findings::ClearReason::SubjectRemoved
                    } else {
                        findings::ClearReason::Passed
                    };
                    (
                        "failed",
                        format!("{} failing subject(s)", failures.len()),
                        Some(reason),
                    )
                }
                Outcome::NotApplicable(reason) => {
                    summary.checks_not_applicable += 1;
                    (
                        "not_applicable",
                        reason.clone(),
                        Some(findings::ClearReason::NotApplicable),
                    )
                }
                Outcome::NotEvaluated(reason) => {
                    summary.checks_not_evaluated += 1;
                    // What was failing stays failing until the check can be evaluated again.
                    ("not_evaluated", reason.clone(), None)
                }
                Outcome::Error(missing) => {
                    summary.checks_errored += 1;
                    summary.errors.push(tenants::ScanError {
                        check_id: check.id.clone(),
                        resource: missing.read.describe().to_owned(),
                        http_status: 0,
                        message: missing.reason.clone(),
                    });
                    // What was failing stays failing until the check can be evaluated again.
                    ("error", missing.to_string(), None)
                }
            };
            // Windowed detections do not clear by absence: the window moved on.
            if let Some(reason) = clear_reason.filter(|_| !check.windowed()) {
                let gone: Vec<String> = published
                    .values()
                    .filter(|finding| finding.check_id == check.id)
                    .filter(|finding| !failing_now.contains(&finding.fingerprint))
                    .map(|finding| finding.fingerprint.clone())
                    .collect();
                for print in gone {
                    let Some(finding) = published.remove(&print) else {
                        continue;
                    };
                    results::clear(connection, tenant.tenant_id, &print, scan.scan_id, now).await?;
                    changes.cleared.push(findings::FindingCleared {
                        partner_id: tenant.partner_id.clone(),
                        tenant_id: tenant_id.clone(),
                        fingerprint: print,
                        check_id: check.id.clone(),
                        target: finding.target,
                        cleared_at: Some(to_timestamp(now)),
                        scan_id: scan.scan_id.to_string(),
                        reason: reason.into(),
                    });
                }
            }
            let result = CheckResultRow {
                check_id: check.id.clone(),
                outcome: outcome_name.to_owned(),
                failing_subjects: i32::try_from(failing_now.len()).unwrap_or(i32::MAX),
                failing_fingerprints: failing_now.into_iter().take(50).collect(),
                evaluated_at: now,
                scan_id: scan.scan_id,
                detail,
            };
            results::save_result(connection, tenant.tenant_id, &result).await?;
        }
        summary.findings_observed = u32::try_from(changes.observed.len()).unwrap_or(u32::MAX);
        summary.findings_cleared = u32::try_from(changes.cleared.len()).unwrap_or(u32::MAX);
        Ok(changes)
    }

    /// Records the log windows fetched and the countries users signed in from.
    async fn record_logs(
        &self,
        connection: &mut PgConnection,
        scan: &ScanRow,
        snapshot: &Snapshot,
        window: Option<Window>,
        now: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        let Some(window) = window else {
            return Ok(());
        };
        for source in [Source::SignIns, Source::DirectoryAudits] {
            if let Some(Ok(records)) = snapshot.data.get(&source) {
                let count = records.as_array().map_or(0, Vec::len);
                results::record_window(
                    connection,
                    scan.tenant_id,
                    source.describe(),
                    window,
                    count,
                    scan.scan_id,
                    now,
                )
                .await?;
            }
        }
        let seen: BTreeSet<(String, String)> = snapshot
            .items(Source::SignIns)
            .unwrap_or_default()
            .iter()
            .filter(|sign_in| sign_in["status"]["errorCode"] == 0)
            .filter_map(|sign_in| {
                let user = sign_in["userId"].as_str()?;
                let country = sign_in["location"]["countryOrRegion"].as_str()?;
                (!country.is_empty()).then(|| (user.to_owned(), country.to_owned()))
            })
            .collect();
        if !seen.is_empty() {
            results::learn_countries(connection, scan.tenant_id, &seen, now).await?;
        }
        Ok(())
    }

    /// Ends a scan that stopped before it evaluated anything: no finding changes.
    async fn end(
        &self,
        scan: &ScanRow,
        tenant: &TenantRow,
        summary: Summary,
        learned: &Learned,
        now: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        let transaction = self.pool.begin().await?;
        let changes = Changes::default();
        self.finish(transaction, scan, tenant, summary, learned, changes, now)
            .await
    }

    /// Ends the scan run and publishes its events, all in one transaction; a scan cancelled
    /// meanwhile publishes nothing.
    #[allow(clippy::too_many_arguments)]
    async fn finish(
        &self,
        mut transaction: sqlx::Transaction<'_, sqlx::Postgres>,
        scan: &ScanRow,
        tenant: &TenantRow,
        summary: Summary,
        learned: &Learned,
        changes: Changes,
        now: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        let Some(finished) = store::finish(&mut transaction, scan.scan_id, &summary, now).await?
        else {
            tracing::info!(scan_id = %scan.scan_id, "scan was cancelled while running");
            return transaction.rollback().await;
        };
        let health = self.graph.health(&tenant.microsoft_tenant_id);
        let evaluated = summary.state != "failed" && summary.state != "cancelled";
        results::update_tenant(
            &mut transaction,
            tenant.tenant_id,
            learned,
            &health,
            evaluated && scan.includes_configuration(),
            evaluated && scan.includes_monitoring(),
            now,
        )
        .await?;
        for event in &changes.observed {
            self.publish(&mut transaction, event, now).await?;
        }
        for event in &changes.cleared {
            self.publish(&mut transaction, event, now).await?;
        }
        let completed = tenants::ScanCompleted {
            partner_id: tenant.partner_id.clone(),
            tenant_id: tenant.tenant_id.to_string(),
            scan: Some(finished.to_proto()),
        };
        self.publish(&mut transaction, &completed, now).await?;
        transaction.commit().await?;
        tracing::info!(
            scan_id = %scan.scan_id,
            tenant_id = %tenant.tenant_id,
            state = summary.state,
            observed = summary.findings_observed,
            cleared = summary.findings_cleared,
            requests = summary.graph_requests,
            "scan finished"
        );
        Ok(())
    }

    async fn publish<E: picket_proto::Event>(
        &self,
        connection: &mut PgConnection,
        event: &E,
        now: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        match self.events.event(event, now) {
            Ok(outgoing) => outbox::enqueue(connection, &outgoing).await,
            // Tenant and partner ids are validated at onboarding, so subjects always build.
            Err(error) => {
                tracing::error!(%error, "event subject does not build");
                Ok(())
            }
        }
    }
}

fn observed(
    check: &Check,
    failure: &Failure,
    print: &str,
    scan: &ScanRow,
    now: DateTime<Utc>,
) -> findings::FindingObserved {
    let severity = failure.severity.unwrap_or(check.severity);
    let action = failure.fix_action.unwrap_or(check.fix.action);
    findings::FindingObserved {
        partner_id: scan.partner_id.clone(),
        tenant_id: scan.tenant_id.to_string(),
        fingerprint: print.to_owned(),
        check_id: check.id.clone(),
        kind: check.proto_kind().into(),
        severity: severity.to_proto().into(),
        title: check.title.clone(),
        description: check.description.clone(),
        target: failure.target.clone(),
        theme: check.theme.clone(),
        recommended_fix: failure
            .fix_description
            .clone()
            .unwrap_or_else(|| check.fix.description.clone()),
        observed_at: Some(to_timestamp(now)),
        scan_id: scan.scan_id.to_string(),
        evidence: failure.evidence.clone().into_iter().collect(),
        target_type: failure.target_type.clone(),
        target_id: failure.target_id.clone(),
        fix_action: action.to_proto().into(),
        fix_parameters: failure.fix_parameters.clone().into_iter().collect(),
        references: check.proto_references(),
        activity_at: failure.activity_at.map(to_timestamp),
    }
}

/// When a tenant's next run is due: one interval on, moved by up to ± `jitter` of it.
pub fn next_run(now: DateTime<Utc>, interval: std::time::Duration, jitter: f64) -> DateTime<Utc> {
    use rand::Rng;
    let spread = if jitter > 0.0 {
        rand::rng().random_range(-jitter..=jitter)
    } else {
        0.0
    };
    let seconds = interval.as_secs_f64() * (1.0 + spread);
    now + Duration::milliseconds((seconds * 1000.0) as i64)
}
