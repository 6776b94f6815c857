//! What scans leave behind: the latest result of each check, the findings published (so only
//! changes are published), occurrences of windowed detections, the log windows fetched, the
//! countries users signed in from, and each tenant's licences and access health.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::graph::AccessHealth;
use crate::scans::collect::Window;

/// A finding currently published as failing.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FailingFinding {
    pub fingerprint: String,
    pub check_id: String,
    pub target: String,
}

pub async fn failing(
    connection: &mut PgConnection,
    tenant_id: Uuid,
) -> Result<Vec<FailingFinding>, sqlx::Error> {
    sqlx::query_as(
        "SELECT fingerprint, check_id, target FROM findings WHERE tenant_id = $1 AND failing
         FOR UPDATE",
    )
    .bind(tenant_id)
    .fetch_all(&mut *connection)
    .await
}

/// Marks a finding failing (inserting it the first time).
#[allow(clippy::too_many_arguments)]
pub async fn observe(
    connection: &mut PgConnection,
    tenant_id: Uuid,
    fingerprint: &str,
    check_id: &str,
    subject: &str,
    target: &str,
    scan_id: Uuid,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO findings (tenant_id, fingerprint, check_id, subject, target, failing,
             first_observed_at, last_observed_at, last_scan_id)
         VALUES ($1, $2, $3, $4, $5, true, $6, $6, $7)
         ON CONFLICT (tenant_id, fingerprint) DO UPDATE
         SET failing = true, target = $5, last_observed_at = $6, last_scan_id = $7, cleared_at = NULL",
    )
    .bind(tenant_id)
    .bind(fingerprint)
    .bind(check_id)
    .bind(subject)
    .bind(target)
    .bind(now)
    .bind(scan_id)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

pub async fn clear(
    connection: &mut PgConnection,
    tenant_id: Uuid,
    fingerprint: &str,
    scan_id: Uuid,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE findings SET failing = false, cleared_at = $3, last_scan_id = $4
         WHERE tenant_id = $1 AND fingerprint = $2",
    )
    .bind(tenant_id)
    .bind(fingerprint)
    .bind(now)
    .bind(scan_id)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// Records an occurrence of a windowed detection; false when it was already published.
pub async fn first_occurrence(
    connection: &mut PgConnection,
    tenant_id: Uuid,
    fingerprint: &str,
    occurrence: &str,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO finding_occurrences (tenant_id, fingerprint, occurrence, observed_at)
         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
    )
    .bind(tenant_id)
    .bind(fingerprint)
    .bind(occurrence)
    .bind(now)
    .execute(&mut *connection)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// The latest result of one check.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CheckResultRow {
    pub check_id: String,
    pub outcome: String,
    pub failing_subjects: i32,
    pub failing_fingerprints: Vec<String>,
    pub evaluated_at: DateTime<Utc>,
    pub scan_id: Uuid,
    pub detail: String,
}

pub async fn save_result(
    connection: &mut PgConnection,
    tenant_id: Uuid,
    result: &CheckResultRow,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO check_results (tenant_id, check_id, outcome, failing_subjects,
             failing_fingerprints, evaluated_at, scan_id, detail)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (tenant_id, check_id) DO UPDATE
         SET outcome = $3, failing_subjects = $4, failing_fingerprints = $5, evaluated_at = $6,
             scan_id = $7, detail = $8",
    )
    .bind(tenant_id)
    .bind(&result.check_id)
    .bind(&result.outcome)
    .bind(result.failing_subjects)
    .bind(&result.failing_fingerprints)
    .bind(result.evaluated_at)
    .bind(result.scan_id)
    .bind(&result.detail)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

pub async fn results(pool: &PgPool, tenant_id: Uuid) -> Result<Vec<CheckResultRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT check_id, outcome, failing_subjects, failing_fingerprints, evaluated_at, scan_id, detail
         FROM check_results WHERE tenant_id = $1",
    )
    .bind(tenant_id)
    .fetch_all(pool)
    .await
}

/// End of the last log window a poll fetched for a tenant.
pub async fn last_window_end(
    pool: &PgPool,
    tenant_id: Uuid,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar("SELECT max(window_end) FROM monitoring_windows WHERE tenant_id = $1")
        .bind(tenant_id)
        .fetch_one(pool)
        .await
}

pub async fn record_window(
    connection: &mut PgConnection,
    tenant_id: Uuid,
    source: &str,
    window: Window,
    records: usize,
    scan_id: Uuid,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO monitoring_windows (tenant_id, source, window_start, window_end, records, scan_id, fetched_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
    )
    .bind(tenant_id)
    .bind(source)
    .bind(window.start)
    .bind(window.end)
    .bind(i32::try_from(records).unwrap_or(i32::MAX))
    .bind(scan_id)
    .bind(now)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// Countries each user signed in from, as `{userId: [country]}`.
pub async fn known_countries(pool: &PgPool, tenant_id: Uuid) -> Result<Value, sqlx::Error> {
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT user_id, country FROM sign_in_countries WHERE tenant_id = $1")
            .bind(tenant_id)
            .fetch_all(pool)
            .await?;
    let mut countries: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (user_id, country) in rows {
        countries.entry(user_id).or_default().push(country);
    }
    Ok(json!(countries))
}

pub async fn learn_countries(
    connection: &mut PgConnection,
    tenant_id: Uuid,
    seen: &BTreeSet<(String, String)>,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let (users, countries): (Vec<String>, Vec<String>) = seen.iter().cloned().unzip();
    sqlx::query(
        "INSERT INTO sign_in_countries (tenant_id, user_id, country, first_seen_at)
         SELECT $1, user_id, country, $4 FROM unnest($2::text[], $3::text[]) AS seen(user_id, country)
         ON CONFLICT DO NOTHING",
    )
    .bind(tenant_id)
    .bind(&users)
    .bind(&countries)
    .bind(now)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// What a scan learnt of the tenant, where it got that far: its licences, and the catalogue's
/// permissions it has not granted.
#[derive(Default)]
pub struct Learned {
    pub service_plans: Option<BTreeSet<String>>,
    pub missing_permissions: Option<Vec<String>>,
}

/// Records what a scan learnt about the tenant: its licences, the permissions it lacks, access
/// health and last runs.
pub async fn update_tenant(
    connection: &mut PgConnection,
    tenant_id: Uuid,
    learned: &Learned,
    health: &AccessHealth,
    configuration_done: bool,
    monitoring_done: bool,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let plans: Option<Vec<String>> = learned
        .service_plans
        .as_ref()
        .map(|plans| plans.iter().cloned().collect());
    sqlx::query(
        "UPDATE tenants SET
             service_plans = coalesce($2, service_plans),
             access_last_success_at = coalesce($3, access_last_success_at),
             access_last_error = coalesce($4, access_last_error),
             access_last_error_at = coalesce($5, access_last_error_at),
             access_consecutive_failures = $6,
             access_throttled_until = coalesce($7, access_throttled_until),
             last_configuration_scan_at = CASE WHEN $8 THEN $10 ELSE last_configuration_scan_at END,
             last_monitoring_poll_at = CASE WHEN $9 THEN $10 ELSE last_monitoring_poll_at END,
             missing_permissions = coalesce($11, missing_permissions),
             updated_at = $10
         WHERE tenant_id = $1",
    )
    .bind(tenant_id)
    .bind(plans)
    .bind(health.last_success_at)
    .bind(&health.last_error)
    .bind(health.last_error_at)
    .bind(i32::try_from(health.consecutive_failures).unwrap_or(i32::MAX))
    .bind(health.throttled_until)
    .bind(configuration_done)
    .bind(monitoring_done)
    .bind(now)
    .bind(&learned.missing_permissions)
    .execute(&mut *connection)
    .await?;
    Ok(())
}
