//! The scans table and the scheduling columns of tenants.

use chrono::{DateTime, Utc};
use picket_platform::time::to_timestamp;
use picket_proto::common::v1 as common;
use picket_proto::tenants::v1 as tenants;
use sqlx::{AssertSqlSafe, PgConnection, PgPool};
use uuid::Uuid;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ScanRow {
    pub scan_id: Uuid,
    pub partner_id: String,
    pub tenant_id: Uuid,
    pub kind: String,
    pub trigger: String,
    pub state: String,
    pub requested_by: Option<serde_json::Value>,
    pub queued_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub checks_evaluated: i32,
    pub checks_passed: i32,
    pub checks_failed: i32,
    pub checks_not_applicable: i32,
    pub checks_not_evaluated: i32,
    pub checks_errored: i32,
    pub findings_observed: i32,
    pub findings_cleared: i32,
    pub graph_requests: i32,
    pub throttled_responses: i32,
    pub errors: serde_json::Value,
    pub window_start: Option<DateTime<Utc>>,
    pub window_end: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "scan_id, partner_id, tenant_id, kind, trigger, state, requested_by, queued_at,
    started_at, finished_at, checks_evaluated, checks_passed, checks_failed, checks_not_applicable,
    checks_not_evaluated, checks_errored, findings_observed, findings_cleared, graph_requests, throttled_responses, errors,
    window_start, window_end";

pub fn kind_to_db(kind: tenants::ScanKind) -> &'static str {
    match kind {
        tenants::ScanKind::Configuration => "configuration",
        tenants::ScanKind::Monitoring => "monitoring",
        tenants::ScanKind::Full | tenants::ScanKind::Unspecified => "full",
    }
}

pub fn state_to_db(state: tenants::ScanState) -> Option<&'static str> {
    Some(match state {
        tenants::ScanState::Queued => "queued",
        tenants::ScanState::Running => "running",
        tenants::ScanState::Succeeded => "succeeded",
        tenants::ScanState::Partial => "partial",
        tenants::ScanState::Failed => "failed",
        tenants::ScanState::Cancelled => "cancelled",
        tenants::ScanState::Unspecified => return None,
    })
}

impl ScanRow {
    pub fn kind(&self) -> tenants::ScanKind {
        match self.kind.as_str() {
            "configuration" => tenants::ScanKind::Configuration,
            "monitoring" => tenants::ScanKind::Monitoring,
            _ => tenants::ScanKind::Full,
        }
    }

    pub fn includes_configuration(&self) -> bool {
        self.kind() != tenants::ScanKind::Monitoring
    }

    pub fn includes_monitoring(&self) -> bool {
        self.kind() != tenants::ScanKind::Configuration
    }

    pub fn to_proto(&self) -> tenants::ScanRun {
        let trigger = match self.trigger.as_str() {
            "schedule" => tenants::ScanTrigger::Schedule,
            "on_demand" => tenants::ScanTrigger::OnDemand,
            _ => tenants::ScanTrigger::Onboarding,
        };
        let state = [
            tenants::ScanState::Queued,
            tenants::ScanState::Running,
            tenants::ScanState::Succeeded,
            tenants::ScanState::Partial,
            tenants::ScanState::Failed,
            tenants::ScanState::Cancelled,
        ]
        .into_iter()
        .find(|state| state_to_db(*state) == Some(self.state.as_str()))
        .unwrap_or_default();
        let count = |value: i32| u32::try_from(value).unwrap_or_default();
        tenants::ScanRun {
            scan_id: self.scan_id.to_string(),
            partner_id: self.partner_id.clone(),
            tenant_id: self.tenant_id.to_string(),
            kind: self.kind().into(),
            trigger: trigger.into(),
            state: state.into(),
            requested_by: self
                .requested_by
                .clone()
                .and_then(|value| serde_json::from_value::<common::Principal>(value).ok()),
            queued_at: Some(to_timestamp(self.queued_at)),
            started_at: self.started_at.map(to_timestamp),
            finished_at: self.finished_at.map(to_timestamp),
            checks_evaluated: count(self.checks_evaluated),
            checks_passed: count(self.checks_passed),
            checks_failed: count(self.checks_failed),
            checks_not_applicable: count(self.checks_not_applicable),
            checks_not_evaluated: count(self.checks_not_evaluated),
            checks_errored: count(self.checks_errored),
            findings_observed: count(self.findings_observed),
            findings_cleared: count(self.findings_cleared),
            graph_requests: count(self.graph_requests),
            throttled_responses: count(self.throttled_responses),
            errors: serde_json::from_value(self.errors.clone()).unwrap_or_default(),
            window_start: self.window_start.map(to_timestamp),
            window_end: self.window_end.map(to_timestamp),
        }
    }
}

/// Queues a scan unless one of the same kind is already queued or running for the tenant; returns
/// the queued scan, new or existing.
#[allow(clippy::too_many_arguments)]
pub async fn queue(
    connection: &mut PgConnection,
    partner_id: &str,
    tenant_id: Uuid,
    kind: tenants::ScanKind,
    trigger: &str,
    requested_by: Option<serde_json::Value>,
    now: DateTime<Utc>,
) -> Result<ScanRow, sqlx::Error> {
    let inserted: Option<ScanRow> = sqlx::query_as(AssertSqlSafe(format!(
        "INSERT INTO scans (scan_id, partner_id, tenant_id, kind, trigger, state, requested_by, queued_at)
         VALUES ($1, $2, $3, $4, $5, 'queued', $6, $7)
         ON CONFLICT (tenant_id, kind) WHERE state IN ('queued', 'running') DO NOTHING
         RETURNING {COLUMNS}"
    )))
    .bind(Uuid::new_v4())
    .bind(partner_id)
    .bind(tenant_id)
    .bind(kind_to_db(kind))
    .bind(trigger)
    .bind(requested_by)
    .bind(now)
    .fetch_optional(&mut *connection)
    .await?;
    if let Some(scan) = inserted {
        return Ok(scan);
    }
    sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM scans WHERE tenant_id = $1 AND kind = $2 AND state IN ('queued', 'running')"
    )))
    .bind(tenant_id)
    .bind(kind_to_db(kind))
    .fetch_one(&mut *connection)
    .await
}

/// Takes the oldest queued scan of a tenant with no running scan, and leases it.
pub async fn claim(
    pool: &PgPool,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
) -> Result<Option<ScanRow>, sqlx::Error> {
    sqlx::query_as(AssertSqlSafe(format!(
        "UPDATE scans SET state = 'running', started_at = $1, lease_until = $2
         WHERE scan_id = (
             SELECT queued.scan_id FROM scans queued
             WHERE queued.state = 'queued'
               AND NOT EXISTS (SELECT 1 FROM scans running
                               WHERE running.tenant_id = queued.tenant_id AND running.state = 'running')
             ORDER BY queued.queued_at
             LIMIT 1
             FOR UPDATE SKIP LOCKED)
         RETURNING {COLUMNS}"
    )))
    .bind(now)
    .bind(lease_until)
    .fetch_optional(pool)
    .await
}

/// Extends the lease of a scan this worker still holds (running, and started when this worker
/// claimed it); false when the claim was lost, to a requeue and another worker.
pub async fn renew(
    pool: &PgPool,
    scan_id: Uuid,
    claimed_at: DateTime<Utc>,
    lease_until: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let result = sqlx::query(
        "UPDATE scans SET lease_until = $3
         WHERE scan_id = $1 AND state = 'running' AND started_at = $2",
    )
    .bind(scan_id)
    .bind(claimed_at)
    .bind(lease_until)
    .execute(pool)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// Queues again the scans whose worker stopped (crash) before finishing them.
pub async fn requeue_stale(pool: &PgPool, now: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    let result = sqlx::query(
        "UPDATE scans SET state = 'queued', started_at = NULL, lease_until = NULL
         WHERE state = 'running' AND lease_until < $1",
    )
    .bind(now)
    .execute(pool)
    .await?;
    Ok(result.rows_affected())
}

pub async fn get(pool: &PgPool, scan_id: Uuid) -> Result<Option<ScanRow>, sqlx::Error> {
    sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM scans WHERE scan_id = $1"
    )))
    .bind(scan_id)
    .fetch_optional(pool)
    .await
}

/// The result of a scan, written when it ends.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub state: &'static str,
    pub checks_evaluated: u32,
    pub checks_passed: u32,
    pub checks_failed: u32,
    pub checks_not_applicable: u32,
    pub checks_not_evaluated: u32,
    pub checks_errored: u32,
    pub findings_observed: u32,
    pub findings_cleared: u32,
    pub graph_requests: u32,
    pub throttled_responses: u32,
    pub errors: Vec<tenants::ScanError>,
    pub window_start: Option<DateTime<Utc>>,
    pub window_end: Option<DateTime<Utc>>,
}

/// Ends a running scan; `None` when it is no longer running (cancelled meanwhile).
pub async fn finish(
    connection: &mut PgConnection,
    scan_id: Uuid,
    summary: &Summary,
    now: DateTime<Utc>,
) -> Result<Option<ScanRow>, sqlx::Error> {
    let number = |value: u32| i32::try_from(value).unwrap_or(i32::MAX);
    let errors = serde_json::to_value(&summary.errors).unwrap_or_default();
    sqlx::query_as(AssertSqlSafe(format!(
        "UPDATE scans SET state = $2, finished_at = $3, lease_until = NULL,
             checks_evaluated = $4, checks_passed = $5, checks_failed = $6, checks_not_applicable = $7,
             checks_errored = $8, findings_observed = $9, findings_cleared = $10, graph_requests = $11,
             throttled_responses = $12, errors = $13, window_start = $14, window_end = $15,
             checks_not_evaluated = $16
         WHERE scan_id = $1 AND state = 'running'
         RETURNING {COLUMNS}"
    )))
    .bind(scan_id)
    .bind(summary.state)
    .bind(now)
    .bind(number(summary.checks_evaluated))
    .bind(number(summary.checks_passed))
    .bind(number(summary.checks_failed))
    .bind(number(summary.checks_not_applicable))
    .bind(number(summary.checks_errored))
    .bind(number(summary.findings_observed))
    .bind(number(summary.findings_cleared))
    .bind(number(summary.graph_requests))
    .bind(number(summary.throttled_responses))
    .bind(errors)
    .bind(summary.window_start)
    .bind(summary.window_end)
    .bind(number(summary.checks_not_evaluated))
    .fetch_optional(&mut *connection)
    .await
}

/// Cancels a queued or running scan; returns it as it is afterwards.
pub async fn cancel(
    pool: &PgPool,
    scan_id: Uuid,
    now: DateTime<Utc>,
) -> Result<Option<ScanRow>, sqlx::Error> {
    sqlx::query(
        "UPDATE scans SET state = 'cancelled', finished_at = $2, lease_until = NULL
         WHERE scan_id = $1 AND state IN ('queued', 'running')",
    )
    .bind(scan_id)
    .bind(now)
    .execute(pool)
    .await?;
    get(pool, scan_id).await
}

/// Filters of ListScans.
#[derive(Debug, Clone, Default)]
pub struct ScanFilter {
    pub partner_id: Option<String>,
    pub tenant_id: Option<Uuid>,
    pub kinds: Vec<String>,
    pub states: Vec<String>,
    pub queued_from: Option<DateTime<Utc>>,
    pub queued_to: Option<DateTime<Utc>>,
    /// Keyset position: (queued_at, scan_id) of the last row of the previous page.
    pub after: Option<(DateTime<Utc>, Uuid)>,
    pub limit: i64,
}

pub async fn list(pool: &PgPool, filter: &ScanFilter) -> Result<Vec<ScanRow>, sqlx::Error> {
    let (after_at, after_id) = filter.after.unzip();
    sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM scans
         WHERE ($1::text IS NULL OR partner_id = $1)
           AND ($2::uuid IS NULL OR tenant_id = $2)
           AND (cardinality($3::text[]) = 0 OR kind = ANY($3))
           AND (cardinality($4::text[]) = 0 OR state = ANY($4))
           AND ($5::timestamptz IS NULL OR queued_at >= $5)
           AND ($6::timestamptz IS NULL OR queued_at < $6)
           AND ($7::timestamptz IS NULL OR (queued_at, scan_id) < ($7, $8))
         ORDER BY queued_at DESC, scan_id DESC
         LIMIT $9"
    )))
    .bind(&filter.partner_id)
    .bind(filter.tenant_id)
    .bind(&filter.kinds)
    .bind(&filter.states)
    .bind(filter.queued_from)
    .bind(filter.queued_to)
    .bind(after_at)
    .bind(after_id)
    .bind(filter.limit)
    .fetch_all(pool)
    .await
}

/// A tenant due for a scheduled scan.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DueTenant {
    pub tenant_id: Uuid,
    pub partner_id: String,
}

/// Active tenants whose next run of `kind` is due (monitoring only on plans that include it).
pub async fn due(
    pool: &PgPool,
    kind: tenants::ScanKind,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<DueTenant>, sqlx::Error> {
    let query = match kind {
        tenants::ScanKind::Monitoring => {
            "SELECT tenant_id, partner_id FROM tenants
             WHERE state = 'active' AND plan IN ('standard', 'premium')
               AND coalesce(next_monitoring_poll_at, '-infinity') <= $1
             ORDER BY next_monitoring_poll_at NULLS FIRST LIMIT $2"
        }
        _ => {
            "SELECT tenant_id, partner_id FROM tenants
             WHERE state = 'active' AND coalesce(next_configuration_scan_at, '-infinity') <= $1
             ORDER BY next_configuration_scan_at NULLS FIRST LIMIT $2"
        }
    };
    sqlx::query_as(query)
        .bind(now)
        .bind(limit)
        .fetch_all(pool)
        .await
}

/// Sets when a tenant's next run of `kind` is due.
pub async fn schedule_next(
    connection: &mut PgConnection,
    tenant_id: Uuid,
    kind: tenants::ScanKind,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let query = match kind {
        tenants::ScanKind::Monitoring => {
            "UPDATE tenants SET next_monitoring_poll_at = $2 WHERE tenant_id = $1"
        }
        _ => "UPDATE tenants SET next_configuration_scan_at = $2 WHERE tenant_id = $1",
    };
    sqlx::query(query)
        .bind(tenant_id)
        .bind(at)
        .execute(&mut *connection)
        .await?;
    Ok(())
}
