//! The offboarding service's tables: the tenant directory, sagas, their progress, certificates.

use chrono::{DateTime, Utc};
pub use picket_platform::offboarding::Deleted;
use sqlx::types::Json;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TenantRow {
    pub tenant_id: String,
    pub partner_id: String,
    pub display_name: String,
    pub microsoft_tenant_id: String,
}

pub async fn tenant<'c>(
    executor: impl PgExecutor<'c>,
    tenant_id: &str,
) -> Result<Option<TenantRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT tenant_id, partner_id, display_name, microsoft_tenant_id FROM tenants WHERE tenant_id = $1",
    )
    .bind(tenant_id)
    .fetch_optional(executor)
    .await
}

pub async fn remember_tenant<'c>(
    executor: impl PgExecutor<'c>,
    tenant: &TenantRow,
    onboarded_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO tenants (tenant_id, partner_id, display_name, microsoft_tenant_id, onboarded_at)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (tenant_id) DO UPDATE SET display_name = EXCLUDED.display_name,
             microsoft_tenant_id = EXCLUDED.microsoft_tenant_id, onboarded_at = EXCLUDED.onboarded_at
         WHERE tenants.partner_id = EXCLUDED.partner_id",
    )
    .bind(&tenant.tenant_id)
    .bind(&tenant.partner_id)
    .bind(&tenant.display_name)
    .bind(&tenant.microsoft_tenant_id)
    .bind(onboarded_at)
    .execute(executor)
    .await?;
    Ok(())
}

pub async fn forget_tenant<'c>(
    executor: impl PgExecutor<'c>,
    tenant_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM tenants WHERE tenant_id = $1")
        .bind(tenant_id)
        .execute(executor)
        .await?;
    Ok(())
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OffboardingRow {
    pub offboarding_id: Uuid,
    pub partner_id: String,
    pub tenant_id: String,
    pub tenant_display_name: String,
    pub microsoft_tenant_id: String,
    pub reason: String,
    pub retention_seconds: i64,
    pub state: String,
    pub requested_by: String,
    pub requested_role: i32,
    pub requested_at: DateTime<Utc>,
    pub disconnected_at: Option<DateTime<Utc>>,
    pub tokens_dropped: bool,
    pub purge_due_at: DateTime<Utc>,
    pub purge_started_at: Option<DateTime<Utc>>,
    pub purge_attempt: i32,
    pub completed_at: Option<DateTime<Utc>>,
    pub cancelled_at: Option<DateTime<Utc>>,
    pub cancel_reason: String,
    pub cancelled_by: String,
    pub cancelled_role: i32,
    pub certificate_id: Option<Uuid>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str =
    "offboarding_id, partner_id, tenant_id, tenant_display_name, microsoft_tenant_id,
    reason, retention_seconds, state, requested_by, requested_role, requested_at, disconnected_at,
    tokens_dropped, purge_due_at, purge_started_at, purge_attempt, completed_at, cancelled_at,
    cancel_reason, cancelled_by, cancelled_role, certificate_id, updated_at";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ProgressRow {
    pub offboarding_id: Uuid,
    pub service: String,
    pub step: String,
    pub status: String,
    pub first_requested_at: Option<DateTime<Utc>>,
    pub last_requested_at: Option<DateTime<Utc>>,
    pub request_count: i32,
    pub next_request_at: Option<DateTime<Utc>>,
    pub confirmed_at: Option<DateTime<Utc>>,
    pub tables: Json<Vec<Deleted>>,
    pub confirmation_event_id: String,
}

/// A saga and its progress, locked.
pub async fn lock(
    connection: &mut PgConnection,
    offboarding_id: Uuid,
) -> Result<Option<(OffboardingRow, Vec<ProgressRow>)>, sqlx::Error> {
    let row: Option<OffboardingRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM offboardings WHERE offboarding_id = $1 FOR UPDATE"
    )))
    .bind(offboarding_id)
    .fetch_optional(&mut *connection)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let progress = progress(&mut *connection, &[offboarding_id]).await?;
    Ok(Some((row, progress)))
}

pub async fn get<'c>(
    executor: impl PgExecutor<'c>,
    offboarding_id: Uuid,
) -> Result<Option<OffboardingRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM offboardings WHERE offboarding_id = $1"
    )))
    .bind(offboarding_id)
    .fetch_optional(executor)
    .await
}

/// The offboarding in progress for a tenant.
pub async fn active<'c>(
    executor: impl PgExecutor<'c>,
    tenant_id: &str,
) -> Result<Option<OffboardingRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM offboardings
         WHERE tenant_id = $1 AND state IN ('disconnecting', 'scheduled', 'purging')"
    )))
    .bind(tenant_id)
    .fetch_optional(executor)
    .await
}

pub async fn progress<'c>(
    executor: impl PgExecutor<'c>,
    offboarding_ids: &[Uuid],
) -> Result<Vec<ProgressRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT offboarding_id, service, step, status, first_requested_at, last_requested_at,
             request_count, next_request_at, confirmed_at, tables, confirmation_event_id
         FROM progress WHERE offboarding_id = ANY($1) ORDER BY offboarding_id, step, service",
    )
    .bind(offboarding_ids)
    .fetch_all(executor)
    .await
}

/// Writes a saga and its progress as they now are.
pub async fn save(
    connection: &mut PgConnection,
    row: &OffboardingRow,
    progress: &[ProgressRow],
) -> Result<(), sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO offboardings ({COLUMNS})
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19,
             $20, $21, $22, $23)
         ON CONFLICT (offboarding_id) DO UPDATE SET state = EXCLUDED.state,
             disconnected_at = EXCLUDED.disconnected_at, tokens_dropped = EXCLUDED.tokens_dropped,
             purge_started_at = EXCLUDED.purge_started_at, purge_attempt = EXCLUDED.purge_attempt,
             completed_at = EXCLUDED.completed_at, cancelled_at = EXCLUDED.cancelled_at,
             cancel_reason = EXCLUDED.cancel_reason, cancelled_by = EXCLUDED.cancelled_by,
             cancelled_role = EXCLUDED.cancelled_role, certificate_id = EXCLUDED.certificate_id,
             updated_at = EXCLUDED.updated_at"
    )))
    .bind(row.offboarding_id)
    .bind(&row.partner_id)
    .bind(&row.tenant_id)
    .bind(&row.tenant_display_name)
    .bind(&row.microsoft_tenant_id)
    .bind(&row.reason)
    .bind(row.retention_seconds)
    .bind(&row.state)
    .bind(&row.requested_by)
    .bind(row.requested_role)
    .bind(row.requested_at)
    .bind(row.disconnected_at)
    .bind(row.tokens_dropped)
    .bind(row.purge_due_at)
    .bind(row.purge_started_at)
    .bind(row.purge_attempt)
    .bind(row.completed_at)
    .bind(row.cancelled_at)
    .bind(&row.cancel_reason)
    .bind(&row.cancelled_by)
    .bind(row.cancelled_role)
    .bind(row.certificate_id)
    .bind(row.updated_at)
    .execute(&mut *connection)
    .await?;
    for step in progress {
        sqlx::query(
            "INSERT INTO progress (offboarding_id, service, step, status, first_requested_at,
                 last_requested_at, request_count, next_request_at, confirmed_at, tables,
                 confirmation_event_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
             ON CONFLICT (offboarding_id, step, service) DO UPDATE SET status = EXCLUDED.status,
                 first_requested_at = EXCLUDED.first_requested_at,
                 last_requested_at = EXCLUDED.last_requested_at, request_count = EXCLUDED.request_count,
                 next_request_at = EXCLUDED.next_request_at, confirmed_at = EXCLUDED.confirmed_at,
                 tables = EXCLUDED.tables, confirmation_event_id = EXCLUDED.confirmation_event_id",
        )
        .bind(step.offboarding_id)
        .bind(&step.service)
        .bind(&step.step)
        .bind(&step.status)
        .bind(step.first_requested_at)
        .bind(step.last_requested_at)
        .bind(step.request_count)
        .bind(step.next_request_at)
        .bind(step.confirmed_at)
        .bind(&step.tables)
        .bind(&step.confirmation_event_id)
        .execute(&mut *connection)
        .await?;
    }
    Ok(())
}

/// Sagas with something due by `now`: a purge to start, or a confirmation to ask for again.
pub async fn due<'c>(
    executor: impl PgExecutor<'c>,
    now: DateTime<Utc>,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT offboarding_id FROM offboardings WHERE state = 'scheduled' AND purge_due_at <= $1
         UNION
         SELECT p.offboarding_id FROM progress p JOIN offboardings o USING (offboarding_id)
         WHERE p.status IN ('requested', 'overdue') AND p.next_request_at <= $1
           AND o.state IN ('disconnecting', 'purging')",
    )
    .bind(now)
    .fetch_all(executor)
    .await
}

/// Which offboardings to list: empty fields do not filter.
pub struct Filter<'a> {
    pub partner_id: &'a str,
    pub tenant_id: &'a str,
    pub states: &'a [&'a str],
}

/// A page of offboardings, newest first.
pub async fn list<'c>(
    executor: impl PgExecutor<'c>,
    filter: &Filter<'_>,
    offset: i64,
    limit: i64,
) -> Result<Vec<OffboardingRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM offboardings
         WHERE ($1 = '' OR partner_id = $1) AND ($2 = '' OR tenant_id = $2)
           AND (cardinality($3::text[]) = 0 OR state = ANY($3))
         ORDER BY requested_at DESC, offboarding_id DESC OFFSET $4 LIMIT $5"
    )))
    .bind(filter.partner_id)
    .bind(filter.tenant_id)
    .bind(filter.states)
    .bind(offset)
    .bind(limit)
    .fetch_all(executor)
    .await
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CertificateRow {
    pub certificate_id: Uuid,
    pub offboarding_id: Uuid,
    pub partner_id: String,
    pub tenant_id: String,
    pub body: Json<serde_json::Value>,
    pub sha256: String,
    pub issued_at: DateTime<Utc>,
}

pub async fn insert_certificate(
    connection: &mut PgConnection,
    certificate: &CertificateRow,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO certificates (certificate_id, offboarding_id, partner_id, tenant_id, body, sha256, issued_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(certificate.certificate_id)
    .bind(certificate.offboarding_id)
    .bind(&certificate.partner_id)
    .bind(&certificate.tenant_id)
    .bind(&certificate.body)
    .bind(&certificate.sha256)
    .bind(certificate.issued_at)
    .execute(connection)
    .await?;
    Ok(())
}

const CERTIFICATE_COLUMNS: &str =
    "certificate_id, offboarding_id, partner_id, tenant_id, body, sha256, issued_at";

/// A certificate by its id, or by its offboarding's.
pub async fn certificate<'c>(
    executor: impl PgExecutor<'c>,
    certificate_id: Option<Uuid>,
    offboarding_id: Option<Uuid>,
) -> Result<Option<CertificateRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {CERTIFICATE_COLUMNS} FROM certificates
         WHERE certificate_id = $1 OR ($1 IS NULL AND offboarding_id = $2)"
    )))
    .bind(certificate_id)
    .bind(offboarding_id)
    .fetch_optional(executor)
    .await
}

/// A page of certificates, newest first.
pub async fn certificates<'c>(
    executor: impl PgExecutor<'c>,
    partner_id: &str,
    tenant_id: &str,
    offset: i64,
    limit: i64,
) -> Result<Vec<CertificateRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {CERTIFICATE_COLUMNS} FROM certificates
         WHERE ($1 = '' OR partner_id = $1) AND ($2 = '' OR tenant_id = $2)
         ORDER BY issued_at DESC, certificate_id DESC OFFSET $3 LIMIT $4"
    )))
    .bind(partner_id)
    .bind(tenant_id)
    .bind(offset)
    .bind(limit)
    .fetch_all(executor)
    .await
}
