//! The notifier's tables: webhook endpoints, deliveries and their attempts.

use chrono::{DateTime, Utc};
use picket_platform::time::to_timestamp;
use picket_proto::notifications::v1 as notifications;
use sqlx::AssertSqlSafe;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EndpointRow {
    pub endpoint_id: Uuid,
    pub partner_id: String,
    pub tenant_id: String,
    pub url: String,
    pub secret: String,
    pub previous_secret: Option<String>,
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    pub event_types: Vec<String>,
    pub description: String,
    pub enabled: bool,
    pub disabled_reason: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl EndpointRow {
    pub fn to_proto(&self) -> notifications::WebhookEndpoint {
        // Enough of the secret to tell two apart, never enough to use it.
        let secret_hint = self
            .secret
            .chars()
            .rev()
            .take(4)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        notifications::WebhookEndpoint {
            endpoint_id: self.endpoint_id.to_string(),
            partner_id: self.partner_id.clone(),
            tenant_id: self.tenant_id.clone(),
            url: self.url.clone(),
            event_types: self.event_types.clone(),
            enabled: self.enabled,
            created_at: Some(to_timestamp(self.created_at)),
            disabled_reason: self.disabled_reason.clone(),
            description: self.description.clone(),
            updated_at: Some(to_timestamp(self.updated_at)),
            secret_hint,
            previous_secret_expires_at: self.previous_secret_expires_at.map(to_timestamp),
            ..Default::default()
        }
    }
}

const ENDPOINT_COLUMNS: &str = "endpoint_id, partner_id, tenant_id, url, secret, previous_secret,
    previous_secret_expires_at, event_types, description, enabled, disabled_reason, created_at, updated_at";

pub struct NewEndpoint<'a> {
    pub partner_id: &'a str,
    pub tenant_id: &'a str,
    pub url: &'a str,
    pub secret: &'a str,
    pub event_types: &'a [String],
    pub description: &'a str,
}

pub async fn insert_endpoint(
    pool: &PgPool,
    endpoint: &NewEndpoint<'_>,
    now: DateTime<Utc>,
) -> Result<EndpointRow, sqlx::Error> {
    sqlx::query_as(AssertSqlSafe(format!(
        "INSERT INTO webhook_endpoints (endpoint_id, partner_id, tenant_id, url, secret, event_types, description,
             created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)
         RETURNING {ENDPOINT_COLUMNS}"
    )))
    .bind(Uuid::now_v7())
    .bind(endpoint.partner_id)
    .bind(endpoint.tenant_id)
    .bind(endpoint.url)
    .bind(endpoint.secret)
    .bind(endpoint.event_types)
    .bind(endpoint.description)
    .bind(now)
    .fetch_one(pool)
    .await
}

pub async fn get_endpoint(
    pool: &PgPool,
    endpoint_id: Uuid,
) -> Result<Option<EndpointRow>, sqlx::Error> {
    sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE endpoint_id = $1"
    )))
    .bind(endpoint_id)
    .fetch_optional(pool)
    .await
}

pub async fn get_endpoints(
    pool: &PgPool,
    endpoint_ids: &[Uuid],
) -> Result<Vec<EndpointRow>, sqlx::Error> {
    sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE endpoint_id = ANY($1)"
    )))
    .bind(endpoint_ids)
    .fetch_all(pool)
    .await
}

pub async fn list_endpoints(
    pool: &PgPool,
    partner_id: &str,
    tenant_id: Option<&str>,
    include_disabled: bool,
) -> Result<Vec<EndpointRow>, sqlx::Error> {
    sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints
         WHERE partner_id = $1 AND ($2::text IS NULL OR tenant_id = $2) AND (enabled OR $3)
         ORDER BY created_at, endpoint_id"
    )))
    .bind(partner_id)
    .bind(tenant_id)
    .bind(include_disabled)
    .fetch_all(pool)
    .await
}

pub async fn disable_endpoint(
    connection: &mut PgConnection,
    endpoint_id: Uuid,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE webhook_endpoints SET enabled = false, disabled_reason = $2, updated_at = $3 WHERE endpoint_id = $1",
    )
    .bind(endpoint_id)
    .bind(reason)
    .bind(now)
    .execute(connection)
    .await?;
    Ok(())
}

/// Creates one pending delivery of an event per enabled endpoint that subscribes to it. A
/// redelivered event creates none twice.
pub async fn fan_out(
    connection: &mut PgConnection,
    partner_id: &str,
    tenant_id: &str,
    event_id: &str,
    event_type: &str,
    body: &str,
    now: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    let created = sqlx::query(
        "INSERT INTO deliveries (delivery_id, partner_id, tenant_id, endpoint_id, event_id, event_type, body, status,
             created_at, next_attempt_at)
         SELECT gen_random_uuid(), $1, $2, endpoint_id, $3, $4, $5, 'pending', $6, $6
         FROM webhook_endpoints
         WHERE partner_id = $1 AND (tenant_id = '' OR tenant_id = $2) AND enabled
           AND (cardinality(event_types) = 0 OR $4 = ANY(event_types))
         ON CONFLICT (endpoint_id, event_id) DO NOTHING",
    )
    .bind(partner_id)
    .bind(tenant_id)
    .bind(event_id)
    .bind(event_type)
    .bind(body)
    .bind(now)
    .execute(&mut *connection)
    .await?;
    if created.rows_affected() > 0 {
        sqlx::query("SELECT pg_notify(current_schema() || '_deliveries', '')")
            .execute(&mut *connection)
            .await?;
    }
    Ok(created.rows_affected())
}

/// The notification topic that wakes the delivery worker.
pub const DELIVERIES_TOPIC: &str = "deliveries";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DueDelivery {
    pub delivery_id: Uuid,
    pub endpoint_id: Uuid,
    pub body: String,
    pub attempt_count: i32,
}

/// Claims up to `limit` due deliveries for `lease`: another worker takes one over only if this one
/// has not recorded its attempt by then (it crashed).
pub async fn claim_due(
    pool: &PgPool,
    limit: i64,
    lease: std::time::Duration,
) -> Result<Vec<DueDelivery>, sqlx::Error> {
    let lease_seconds = lease.as_secs_f64();
    sqlx::query_as(
        "UPDATE deliveries SET next_attempt_at = now() + make_interval(secs => $2)
         WHERE delivery_id IN (
             SELECT delivery_id FROM deliveries
             WHERE status IN ('pending', 'failed') AND next_attempt_at <= now()
             ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED)
         RETURNING delivery_id, endpoint_id, body, attempt_count",
    )
    .bind(limit)
    .bind(lease_seconds)
    .fetch_all(pool)
    .await
}

/// The result of one attempt, recorded with the delivery's new state.
pub struct AttemptRecord<'a> {
    pub delivery_id: Uuid,
    pub attempt_number: i32,
    pub started_at: DateTime<Utc>,
    pub latency_ms: i32,
    pub response_status: i32,
    pub error: &'a str,
    /// `succeeded`, `failed` (retried at `next_attempt_at`) or `dead`.
    pub status: &'static str,
    pub next_attempt_at: Option<DateTime<Utc>>,
}

pub async fn record_attempt(
    connection: &mut PgConnection,
    record: &AttemptRecord<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO delivery_attempts (attempt_id, delivery_id, attempt_number, started_at, latency_ms,
             response_status, error)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(Uuid::now_v7())
    .bind(record.delivery_id)
    .bind(record.attempt_number)
    .bind(record.started_at)
    .bind(record.latency_ms)
    .bind(record.response_status)
    .bind(record.error)
    .execute(&mut *connection)
    .await?;
    sqlx::query(
        "UPDATE deliveries SET status = $2, attempt_count = $3, last_attempt_at = $4, next_attempt_at = $5,
             last_error = $6
         WHERE delivery_id = $1",
    )
    .bind(record.delivery_id)
    .bind(record.status)
    .bind(record.attempt_number)
    .bind(record.started_at)
    .bind(record.next_attempt_at)
    .bind(record.error)
    .execute(&mut *connection)
    .await?;
    Ok(())
}
