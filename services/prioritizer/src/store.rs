//! The prioritizer's tables: findings, incidents and their timeline.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use picket_platform::time::to_timestamp;
use picket_proto::incidents::v1 as incidents;
use sqlx::AssertSqlSafe;
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::model::{IncidentState, Kind, Resolution, Severity};

/// A finding as observed by the scanner, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub partner_id: String,
    pub tenant_id: String,
    pub fingerprint: String,
    pub check_id: String,
    pub kind: Kind,
    pub severity: Severity,
    pub title: String,
    pub description: String,
    pub target: String,
    pub theme: String,
    pub recommended_fix: String,
    pub evidence: HashMap<String, String>,
    pub scan_id: String,
    pub observed_at: DateTime<Utc>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct IncidentRow {
    pub incident_id: Uuid,
    pub partner_id: String,
    pub tenant_id: String,
    pub fingerprint: String,
    pub check_id: String,
    pub kind: String,
    pub severity: String,
    pub title: String,
    pub description: String,
    pub target: String,
    pub theme: String,
    pub recommended_fix: String,
    pub evidence: Json<HashMap<String, String>>,
    pub state: String,
    pub resolution: Option<String>,
    pub scan_id: String,
    pub occurrence_count: i32,
    pub opened_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub version: i64,
}

impl IncidentRow {
    pub fn to_proto(&self) -> incidents::Incident {
        let kind = Kind::from_db(&self.kind)
            .map(Kind::to_proto)
            .unwrap_or_default();
        let severity = Severity::from_db(&self.severity)
            .map(Severity::to_proto)
            .unwrap_or_default();
        let state = IncidentState::from_db(&self.state)
            .map(IncidentState::to_proto)
            .unwrap_or_default();
        let resolution = self
            .resolution
            .as_deref()
            .and_then(Resolution::from_db)
            .map(Resolution::to_proto)
            .unwrap_or_default();
        incidents::Incident {
            incident_id: self.incident_id.to_string(),
            partner_id: self.partner_id.clone(),
            tenant_id: self.tenant_id.clone(),
            fingerprint: self.fingerprint.clone(),
            check_id: self.check_id.clone(),
            kind: kind.into(),
            severity: severity.into(),
            title: self.title.clone(),
            description: self.description.clone(),
            target: self.target.clone(),
            recommended_fix: self.recommended_fix.clone(),
            state: state.into(),
            opened_at: Some(to_timestamp(self.opened_at)),
            updated_at: Some(to_timestamp(self.updated_at)),
            resolved_at: self.resolved_at.map(to_timestamp),
            occurrence_count: u32::try_from(self.occurrence_count).unwrap_or_default(),
            last_seen_at: Some(to_timestamp(self.last_seen_at)),
            theme: self.theme.clone(),
            evidence: self.evidence.0.clone(),
            origin: incidents::IncidentOrigin::Automatic.into(),
            resolution: resolution.into(),
            scan_id: self.scan_id.clone(),
            version: u64::try_from(self.version).unwrap_or_default(),
            ..Default::default()
        }
    }
}

const INCIDENT_COLUMNS: &str = "incident_id, partner_id, tenant_id, fingerprint, check_id, kind, severity, title,
    description, target, theme, recommended_fix, evidence, state, resolution, scan_id, occurrence_count,
    opened_at, updated_at, last_seen_at, resolved_at, version";

/// Records the latest observation of a finding.
pub async fn upsert_finding(
    connection: &mut PgConnection,
    finding: &Finding,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO findings (partner_id, tenant_id, fingerprint, check_id, kind, severity, title, description,
             target, theme, recommended_fix, evidence, scan_id, first_observed_at, last_observed_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14)
         ON CONFLICT (partner_id, tenant_id, fingerprint) DO UPDATE SET
             check_id = EXCLUDED.check_id, kind = EXCLUDED.kind, severity = EXCLUDED.severity,
             title = EXCLUDED.title, description = EXCLUDED.description, target = EXCLUDED.target,
             theme = EXCLUDED.theme, recommended_fix = EXCLUDED.recommended_fix, evidence = EXCLUDED.evidence,
             scan_id = EXCLUDED.scan_id, last_observed_at = GREATEST(findings.last_observed_at, EXCLUDED.last_observed_at),
             cleared_at = NULL",
    )
    .bind(&finding.partner_id)
    .bind(&finding.tenant_id)
    .bind(&finding.fingerprint)
    .bind(&finding.check_id)
    .bind(finding.kind.as_db())
    .bind(finding.severity.as_db())
    .bind(&finding.title)
    .bind(&finding.description)
    .bind(&finding.target)
    .bind(&finding.theme)
    .bind(&finding.recommended_fix)
    .bind(Json(&finding.evidence))
    .bind(&finding.scan_id)
    .bind(finding.observed_at)
    .execute(connection)
    .await?;
    Ok(())
}

pub async fn mark_finding_cleared(
    connection: &mut PgConnection,
    partner_id: &str,
    tenant_id: &str,
    fingerprint: &str,
    cleared_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE findings SET cleared_at = $4 WHERE partner_id = $1 AND tenant_id = $2 AND fingerprint = $3",
    )
    .bind(partner_id)
    .bind(tenant_id)
    .bind(fingerprint)
    .bind(cleared_at)
    .execute(connection)
    .await?;
    Ok(())
}

/// The incident active for a fingerprint, locked for the rest of the transaction.
pub async fn lock_active_incident(
    connection: &mut PgConnection,
    partner_id: &str,
    tenant_id: &str,
    fingerprint: &str,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT incident_id FROM incidents
         WHERE partner_id = $1 AND tenant_id = $2 AND fingerprint = $3 AND state NOT IN ('resolved', 'offboarded')
         FOR UPDATE",
    )
    .bind(partner_id)
    .bind(tenant_id)
    .bind(fingerprint)
    .fetch_optional(connection)
    .await
}

pub async fn insert_incident(
    connection: &mut PgConnection,
    finding: &Finding,
    now: DateTime<Utc>,
) -> Result<IncidentRow, sqlx::Error> {
    sqlx::query_as(AssertSqlSafe(format!(
        "INSERT INTO incidents (incident_id, partner_id, tenant_id, fingerprint, check_id, kind, severity, title,
             description, target, theme, recommended_fix, evidence, state, scan_id, opened_at, updated_at, last_seen_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 'open', $14, $15, $15, $16)
         RETURNING {INCIDENT_COLUMNS}"
    )))
    .bind(Uuid::now_v7())
    .bind(&finding.partner_id)
    .bind(&finding.tenant_id)
    .bind(&finding.fingerprint)
    .bind(&finding.check_id)
    .bind(finding.kind.as_db())
    .bind(finding.severity.as_db())
    .bind(&finding.title)
    .bind(&finding.description)
    .bind(&finding.target)
    .bind(&finding.theme)
    .bind(&finding.recommended_fix)
    .bind(Json(&finding.evidence))
    .bind(&finding.scan_id)
    .bind(now)
    .bind(finding.observed_at)
    .fetch_one(connection)
    .await
}

/// Counts one more occurrence of an active incident's finding.
pub async fn record_occurrence(
    connection: &mut PgConnection,
    incident_id: Uuid,
    seen_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE incidents SET occurrence_count = occurrence_count + 1,
             last_seen_at = GREATEST(last_seen_at, $2), updated_at = $3, version = version + 1
         WHERE incident_id = $1",
    )
    .bind(incident_id)
    .bind(seen_at)
    .bind(now)
    .execute(connection)
    .await?;
    Ok(())
}

pub async fn resolve_incident(
    connection: &mut PgConnection,
    incident_id: Uuid,
    resolution: Resolution,
    now: DateTime<Utc>,
) -> Result<IncidentRow, sqlx::Error> {
    sqlx::query_as(AssertSqlSafe(format!(
        "UPDATE incidents SET state = 'resolved', resolution = $2, resolved_at = $3, updated_at = $3,
             version = version + 1
         WHERE incident_id = $1
         RETURNING {INCIDENT_COLUMNS}"
    )))
    .bind(incident_id)
    .bind(resolution.as_db())
    .bind(now)
    .fetch_one(connection)
    .await
}

pub async fn add_timeline_entry(
    connection: &mut PgConnection,
    incident_id: Uuid,
    at: DateTime<Utc>,
    kind: incidents::TimelineEntryKind,
    actor: &str,
    detail: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO incident_timeline (incident_id, at, kind, actor, detail) VALUES ($1, $2, $3, $4, $5)")
        .bind(incident_id)
        .bind(at)
        .bind(kind.as_str_name())
        .bind(actor)
        .bind(detail)
        .execute(connection)
        .await?;
    Ok(())
}

pub async fn get_incident(
    pool: &PgPool,
    incident_id: Uuid,
) -> Result<Option<IncidentRow>, sqlx::Error> {
    sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {INCIDENT_COLUMNS} FROM incidents WHERE incident_id = $1"
    )))
    .bind(incident_id)
    .fetch_optional(pool)
    .await
}

/// Which incidents a listing returns, newest first.
#[derive(Debug, Clone, Default)]
pub struct IncidentFilter {
    pub partner_id: Option<String>,
    /// Tenants the caller may see; `None` means all of the partner's.
    pub tenant_ids: Option<Vec<String>>,
    pub states: Vec<&'static str>,
    /// Keyset cursor: incidents strictly older than this (opened_at, incident_id).
    pub before: Option<(DateTime<Utc>, Uuid)>,
    pub limit: i64,
}

pub async fn list_incidents(
    pool: &PgPool,
    filter: &IncidentFilter,
) -> Result<Vec<IncidentRow>, sqlx::Error> {
    sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {INCIDENT_COLUMNS} FROM incidents
         WHERE ($1::text IS NULL OR partner_id = $1)
           AND ($2::text[] IS NULL OR tenant_id = ANY($2))
           AND (cardinality($3::text[]) = 0 OR state = ANY($3))
           AND ($4::timestamptz IS NULL OR (opened_at, incident_id) < ($4, $5))
         ORDER BY opened_at DESC, incident_id DESC
         LIMIT $6"
    )))
    .bind(&filter.partner_id)
    .bind(&filter.tenant_ids)
    .bind(&filter.states)
    .bind(filter.before.map(|(opened_at, _)| opened_at))
    .bind(filter.before.map(|(_, incident_id)| incident_id))
    .bind(filter.limit)
    .fetch_all(pool)
    .await
}
