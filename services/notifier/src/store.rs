//! The notifier's tables: webhook endpoints, deliveries and their attempts.

use chrono::{DateTime, Utc};
use picket_platform::time::{to_duration, to_timestamp};
use picket_proto::common::v1 as common;
use picket_proto::notifications::v1 as notifications;
use sqlx::AssertSqlSafe;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::catalog::Webhook;
use crate::secrets::SealedSecret;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EndpointRow {
    pub endpoint_id: Uuid,
    pub partner_id: String,
    pub tenant_id: String,
    pub url: String,
    /// The signing secrets, sealed (src/secrets.rs): never in the clear outside a send.
    pub secret_sealed: Option<Vec<u8>>,
    pub previous_secret_sealed: Option<Vec<u8>>,
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    /// The last characters of the current secret, to tell two apart.
    pub secret_hint: String,
    pub event_types: Vec<String>,
    pub description: String,
    pub enabled: bool,
    pub disabled_reason: String,
    pub disabled_at: Option<DateTime<Utc>>,
    pub failing_since: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl EndpointRow {
    pub fn to_proto(&self) -> notifications::WebhookEndpoint {
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
            secret_hint: self.secret_hint.clone(),
            previous_secret_expires_at: self.previous_secret_expires_at.map(to_timestamp),
            disabled_at: self.disabled_at.map(to_timestamp),
            failing_since: self.failing_since.map(to_timestamp),
        }
    }
}

const ENDPOINT_COLUMNS: &str = "endpoint_id, partner_id, tenant_id, url, secret_sealed,
    previous_secret_sealed, previous_secret_expires_at, secret_hint, event_types, description, enabled,
    disabled_reason, disabled_at, failing_since, created_at, updated_at";

pub struct NewEndpoint<'a> {
    pub endpoint_id: Uuid,
    pub partner_id: &'a str,
    pub tenant_id: &'a str,
    pub url: &'a str,
    pub secret: &'a SealedSecret,
    pub event_types: &'a [String],
    pub description: &'a str,
}

pub async fn insert_endpoint(
    pool: &PgPool,
    endpoint: &NewEndpoint<'_>,
    now: DateTime<Utc>,
) -> Result<EndpointRow, sqlx::Error> {
    sqlx::query_as(AssertSqlSafe(format!(
        "INSERT INTO webhook_endpoints (endpoint_id, partner_id, tenant_id, url, secret_sealed,
             secret_key_id, secret_hint, event_types, description, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)
         RETURNING {ENDPOINT_COLUMNS}"
    )))
    .bind(endpoint.endpoint_id)
    .bind(endpoint.partner_id)
    .bind(endpoint.tenant_id)
    .bind(endpoint.url)
    .bind(&endpoint.secret.sealed)
    .bind(&endpoint.secret.key_id)
    .bind(&endpoint.secret.hint)
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

pub async fn get_endpoints<'c>(
    executor: impl sqlx::PgExecutor<'c>,
    endpoint_ids: &[Uuid],
) -> Result<Vec<EndpointRow>, sqlx::Error> {
    sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE endpoint_id = ANY($1)"
    )))
    .bind(endpoint_ids)
    .fetch_all(executor)
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

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RecipientRow {
    pub recipient_id: Uuid,
    pub partner_id: String,
    pub tenant_id: String,
    pub email: String,
    pub display_name: String,
    pub event_types: Vec<String>,
    pub enabled: bool,
    pub minimum_severity: i32,
    pub authority_owner_id: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl RecipientRow {
    pub fn to_proto(&self) -> notifications::EmailRecipient {
        notifications::EmailRecipient {
            recipient_id: self.recipient_id.to_string(),
            partner_id: self.partner_id.clone(),
            tenant_id: self.tenant_id.clone(),
            email: self.email.clone(),
            display_name: self.display_name.clone(),
            event_types: self.event_types.clone(),
            enabled: self.enabled,
            minimum_severity: self.minimum_severity,
            authority_owner_id: self.authority_owner_id.clone(),
            created_at: Some(to_timestamp(self.created_at)),
            updated_at: Some(to_timestamp(self.updated_at)),
        }
    }
}

const RECIPIENT_COLUMNS: &str =
    "recipient_id, partner_id, tenant_id, email, display_name, event_types,
    enabled, minimum_severity, authority_owner_id, created_at, updated_at";

/// A recipient's fields as a partner sets them.
pub struct RecipientFields<'a> {
    pub email: &'a str,
    pub display_name: &'a str,
    pub event_types: &'a [String],
    pub enabled: bool,
    pub minimum_severity: i32,
    pub authority_owner_id: &'a str,
}

/// Adds a recipient; `None` when the partner has this address for this tenant already.
pub async fn insert_recipient(
    pool: &PgPool,
    partner_id: &str,
    tenant_id: &str,
    fields: &RecipientFields<'_>,
    now: DateTime<Utc>,
) -> Result<Option<RecipientRow>, sqlx::Error> {
    sqlx::query_as(AssertSqlSafe(format!(
        "INSERT INTO email_recipients (recipient_id, partner_id, tenant_id, email, display_name, event_types,
             enabled, minimum_severity, authority_owner_id, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)
         ON CONFLICT (partner_id, tenant_id, lower(email)) DO NOTHING
         RETURNING {RECIPIENT_COLUMNS}"
    )))
    .bind(Uuid::now_v7())
    .bind(partner_id)
    .bind(tenant_id)
    .bind(fields.email)
    .bind(fields.display_name)
    .bind(fields.event_types)
    .bind(fields.enabled)
    .bind(fields.minimum_severity)
    .bind(fields.authority_owner_id)
    .bind(now)
    .fetch_optional(pool)
    .await
}

/// Replaces a recipient's fields; `None` when it is gone.
pub async fn update_recipient(
    pool: &PgPool,
    recipient_id: Uuid,
    fields: &RecipientFields<'_>,
    now: DateTime<Utc>,
) -> Result<Option<RecipientRow>, sqlx::Error> {
    sqlx::query_as(AssertSqlSafe(format!(
        "UPDATE email_recipients SET email = $2, display_name = $3, event_types = $4, enabled = $5,
             minimum_severity = $6, authority_owner_id = $7, updated_at = $8
         WHERE recipient_id = $1 RETURNING {RECIPIENT_COLUMNS}"
    )))
    .bind(recipient_id)
    .bind(fields.email)
    .bind(fields.display_name)
    .bind(fields.event_types)
    .bind(fields.enabled)
    .bind(fields.minimum_severity)
    .bind(fields.authority_owner_id)
    .bind(now)
    .fetch_optional(pool)
    .await
}

pub async fn get_recipients<'c>(
    executor: impl sqlx::PgExecutor<'c>,
    recipient_ids: &[Uuid],
) -> Result<Vec<RecipientRow>, sqlx::Error> {
    sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {RECIPIENT_COLUMNS} FROM email_recipients WHERE recipient_id = ANY($1)"
    )))
    .bind(recipient_ids)
    .fetch_all(executor)
    .await
}

/// A page of a partner's recipients (of one tenant when `tenant_id` is set), by address.
pub async fn list_recipients(
    pool: &PgPool,
    partner_id: &str,
    tenant_id: Option<&str>,
    offset: i64,
    limit: i64,
) -> Result<Vec<RecipientRow>, sqlx::Error> {
    sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {RECIPIENT_COLUMNS} FROM email_recipients
         WHERE partner_id = $1 AND ($2::text IS NULL OR tenant_id = $2)
         ORDER BY lower(email), tenant_id, recipient_id OFFSET $3 LIMIT $4"
    )))
    .bind(partner_id)
    .bind(tenant_id)
    .bind(offset)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Removes a recipient with its deliveries; returns it as it was.
pub async fn delete_recipient(
    pool: &PgPool,
    recipient_id: Uuid,
) -> Result<Option<RecipientRow>, sqlx::Error> {
    let mut transaction = pool.begin().await?;
    abandon(
        &mut transaction,
        Destination::Recipient(recipient_id),
        "recipient was removed",
    )
    .await?;
    let recipient = sqlx::query_as(AssertSqlSafe(format!(
        "DELETE FROM email_recipients WHERE recipient_id = $1 RETURNING {RECIPIENT_COLUMNS}"
    )))
    .bind(recipient_id)
    .fetch_optional(&mut *transaction)
    .await?;
    transaction.commit().await?;
    Ok(recipient)
}

/// Where deliveries go.
#[derive(Debug, Clone, Copy)]
pub enum Destination {
    Endpoint(Uuid),
    Recipient(Uuid),
}

/// Makes the waiting (pending or failed) deliveries to `destination` dead, saying why; returns
/// how many.
pub async fn abandon(
    connection: &mut PgConnection,
    destination: Destination,
    reason: &str,
) -> Result<i64, sqlx::Error> {
    let (endpoint_id, recipient_id) = match destination {
        Destination::Endpoint(id) => (Some(id), None),
        Destination::Recipient(id) => (None, Some(id)),
    };
    let abandoned = sqlx::query(
        "UPDATE deliveries SET status = 'dead', next_attempt_at = NULL, last_error = $3
         WHERE (endpoint_id = $1 OR recipient_id = $2) AND status IN ('pending', 'failed')",
    )
    .bind(endpoint_id)
    .bind(recipient_id)
    .bind(reason)
    .execute(connection)
    .await?
    .rows_affected();
    Ok(i64::try_from(abandoned).unwrap_or(i64::MAX))
}

/// Changes an endpoint's URL, event types and description; `None` when it is gone.
pub async fn update_endpoint(
    connection: &mut PgConnection,
    endpoint_id: Uuid,
    url: &str,
    event_types: &[String],
    description: &str,
    now: DateTime<Utc>,
) -> Result<Option<EndpointRow>, sqlx::Error> {
    sqlx::query_as(AssertSqlSafe(format!(
        "UPDATE webhook_endpoints SET url = $2, event_types = $3, description = $4, updated_at = $5
         WHERE endpoint_id = $1 RETURNING {ENDPOINT_COLUMNS}"
    )))
    .bind(endpoint_id)
    .bind(url)
    .bind(event_types)
    .bind(description)
    .bind(now)
    .fetch_optional(connection)
    .await
}

/// Enables an endpoint again, clearing why it was disabled and its failure streak.
pub async fn enable_endpoint(
    connection: &mut PgConnection,
    endpoint_id: Uuid,
    now: DateTime<Utc>,
) -> Result<Option<EndpointRow>, sqlx::Error> {
    sqlx::query_as(AssertSqlSafe(format!(
        "UPDATE webhook_endpoints SET enabled = true, disabled_reason = '', disabled_at = NULL,
             failing_since = NULL, updated_at = $2
         WHERE endpoint_id = $1 RETURNING {ENDPOINT_COLUMNS}"
    )))
    .bind(endpoint_id)
    .bind(now)
    .fetch_optional(connection)
    .await
}

/// Deletes an endpoint; its waiting deliveries become dead and its log stays. Returns it as it
/// was and how many deliveries it abandoned.
pub async fn delete_endpoint(
    pool: &PgPool,
    endpoint_id: Uuid,
) -> Result<Option<(EndpointRow, i64)>, sqlx::Error> {
    let mut transaction = pool.begin().await?;
    let abandoned = abandon(
        &mut transaction,
        Destination::Endpoint(endpoint_id),
        "endpoint was deleted",
    )
    .await?;
    let endpoint: Option<EndpointRow> = sqlx::query_as(AssertSqlSafe(format!(
        "DELETE FROM webhook_endpoints WHERE endpoint_id = $1 RETURNING {ENDPOINT_COLUMNS}"
    )))
    .bind(endpoint_id)
    .fetch_optional(&mut *transaction)
    .await?;
    transaction.commit().await?;
    Ok(endpoint.map(|endpoint| (endpoint, abandoned)))
}

/// Replaces an endpoint's secret; the current one keeps signing until `previous_expires_at`
/// (`None`: it stops at once).
pub async fn rotate_secret(
    pool: &PgPool,
    endpoint_id: Uuid,
    secret: &SealedSecret,
    previous_expires_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<Option<EndpointRow>, sqlx::Error> {
    sqlx::query_as(AssertSqlSafe(format!(
        "UPDATE webhook_endpoints SET
             previous_secret_sealed = CASE WHEN $3::timestamptz IS NULL THEN NULL ELSE secret_sealed END,
             previous_secret_expires_at = $3, secret_sealed = $2, secret_key_id = $5,
             secret_hint = $6, updated_at = $4
         WHERE endpoint_id = $1 RETURNING {ENDPOINT_COLUMNS}"
    )))
    .bind(endpoint_id)
    .bind(&secret.sealed)
    .bind(previous_expires_at)
    .bind(now)
    .bind(&secret.key_id)
    .bind(&secret.hint)
    .fetch_optional(pool)
    .await
}

/// The columns a worker needs to attempt a delivery.
const DUE_COLUMNS: &str =
    "delivery_id, partner_id, tenant_id, channel, endpoint_id, recipient_id, destination, event_id,
             event_type, body, direct, attempt_count, next_attempt_at, next_trigger, next_requested_by,
             next_requested_role, next_replay_id, created_at";

/// Creates one delivery of each event (webhook body with its event id) per enabled endpoint and
/// per enabled e-mail recipient that subscribes to it (e-mail recipients also by severity), leased
/// until `leased_until` to the caller's worker; returns them. A redelivered event creates none
/// twice.
pub async fn fan_out(
    connection: &mut PgConnection,
    webhooks: &[(&str, &Webhook)],
    now: DateTime<Utc>,
    leased_until: DateTime<Utc>,
) -> Result<Vec<DueDelivery>, sqlx::Error> {
    if webhooks.is_empty() {
        return Ok(Vec::new());
    }
    let event_ids: Vec<&str> = webhooks.iter().map(|(event_id, _)| *event_id).collect();
    let partner_ids: Vec<&str> = webhooks
        .iter()
        .map(|(_, w)| w.partner_id.as_str())
        .collect();
    let tenant_ids: Vec<&str> = webhooks.iter().map(|(_, w)| w.tenant_id.as_str()).collect();
    let event_types: Vec<&str> = webhooks.iter().map(|(_, w)| w.event_type).collect();
    let bodies: Vec<&str> = webhooks.iter().map(|(_, w)| w.body.as_str()).collect();
    let severities: Vec<i32> = webhooks.iter().map(|(_, w)| w.severity).collect();
    let change_keys: Vec<&str> = webhooks
        .iter()
        .map(|(_, w)| w.change_key.as_str())
        .collect();
    // Each event's addresses travel as a JSON array (arrays of arrays do not unnest).
    let direct_emails: Vec<String> = webhooks
        .iter()
        .map(|(_, w)| serde_json::Value::from(w.direct_emails.clone()).to_string())
        .collect();
    sqlx::query_as(AssertSqlSafe(format!(
        "WITH events AS (
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int4[],
                 $9::text[], $10::text[])
                 AS e(event_id, partner_id, tenant_id, event_type, body, severity, direct_emails,
                     change_key)),
         webhooks AS (
             INSERT INTO deliveries (delivery_id, partner_id, tenant_id, channel, endpoint_id, event_id,
                 event_type, body, status, created_at, next_attempt_at, destination, change_key)
             SELECT gen_random_uuid(), e.partner_id, e.tenant_id, 'webhook', w.endpoint_id, e.event_id,
                 e.event_type, e.body, 'pending', $7, $8, w.url, e.change_key
             FROM events e JOIN webhook_endpoints w
                 ON w.partner_id = e.partner_id AND (w.tenant_id = '' OR w.tenant_id = e.tenant_id)
                    AND w.enabled AND (cardinality(w.event_types) = 0 OR e.event_type = ANY(w.event_types))
             ON CONFLICT DO NOTHING
             RETURNING {DUE_COLUMNS}),
         emails AS (
             INSERT INTO deliveries (delivery_id, partner_id, tenant_id, channel, recipient_id, event_id,
                 event_type, body, status, created_at, next_attempt_at, destination, change_key)
             SELECT gen_random_uuid(), e.partner_id, e.tenant_id, 'email', r.recipient_id, e.event_id,
                 e.event_type, e.body, 'pending', $7, $8, r.email, e.change_key
             FROM events e JOIN email_recipients r
                 ON r.partner_id = e.partner_id AND (r.tenant_id = '' OR r.tenant_id = e.tenant_id)
                    AND r.enabled AND (cardinality(r.event_types) = 0 OR e.event_type = ANY(r.event_types))
                    AND (e.severity = 0 OR e.severity >= r.minimum_severity)
             ON CONFLICT DO NOTHING
             RETURNING {DUE_COLUMNS}),
         directs AS (
             INSERT INTO deliveries (delivery_id, partner_id, tenant_id, channel, direct, event_id,
                 event_type, body, status, created_at, next_attempt_at, destination, change_key)
             SELECT gen_random_uuid(), e.partner_id, e.tenant_id, 'email', true, e.event_id,
                 e.event_type, e.body, 'pending', $7, $8, d.address, e.change_key
             FROM events e, jsonb_array_elements_text(e.direct_emails::jsonb) AS d(address)
             ON CONFLICT DO NOTHING
             RETURNING {DUE_COLUMNS}),
         -- The authority map's routes: the tenant's deviation when it has one, else the partner's.
         mapped AS (
             SELECT e.*, r.channel AS route_channel, r.address
             FROM events e JOIN authority_routes r
                 ON r.partner_id = e.partner_id AND r.event_type = e.event_type
                    AND r.tenant_id = CASE WHEN EXISTS (
                        SELECT 1 FROM authority_scopes s
                        WHERE s.partner_id = e.partner_id AND s.tenant_id = e.tenant_id AND e.tenant_id <> '')
                        THEN e.tenant_id ELSE '' END),
         map_emails AS (
             INSERT INTO deliveries (delivery_id, partner_id, tenant_id, channel, direct, event_id,
                 event_type, body, status, created_at, next_attempt_at, destination, change_key)
             SELECT DISTINCT ON (m.event_id, m.address) gen_random_uuid(), m.partner_id, m.tenant_id,
                 'email', true, m.event_id, m.event_type, m.body, 'pending', $7, $8, m.address, m.change_key
             FROM mapped m WHERE m.route_channel = 'email'
             ON CONFLICT DO NOTHING
             RETURNING {DUE_COLUMNS}),
         map_webhooks AS (
             INSERT INTO deliveries (delivery_id, partner_id, tenant_id, channel, endpoint_id, event_id,
                 event_type, body, status, created_at, next_attempt_at, destination, change_key)
             SELECT DISTINCT ON (m.event_id, w.endpoint_id) gen_random_uuid(), m.partner_id, m.tenant_id,
                 'webhook', w.endpoint_id, m.event_id, m.event_type, m.body, 'pending', $7, $8, w.url,
                 m.change_key
             FROM mapped m JOIN webhook_endpoints w
                 ON m.route_channel = 'webhook' AND w.endpoint_id::text = m.address
                    AND w.partner_id = m.partner_id AND w.enabled
             ON CONFLICT DO NOTHING
             RETURNING {DUE_COLUMNS})
         SELECT * FROM webhooks UNION ALL SELECT * FROM emails UNION ALL SELECT * FROM directs
         UNION ALL SELECT * FROM map_emails UNION ALL SELECT * FROM map_webhooks"
    )))
    .bind(&event_ids)
    .bind(&partner_ids)
    .bind(&tenant_ids)
    .bind(&event_types)
    .bind(&bodies)
    .bind(&severities)
    .bind(now)
    .bind(leased_until)
    .bind(&direct_emails)
    .bind(&change_keys)
    .fetch_all(connection)
    .await
}

/// The notification topic that wakes the delivery worker.
pub const DELIVERIES_TOPIC: &str = "deliveries";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DueDelivery {
    pub delivery_id: Uuid,
    pub partner_id: String,
    pub tenant_id: String,
    /// `webhook` (to `endpoint_id`) or `email` (to `recipient_id`).
    pub channel: String,
    pub endpoint_id: Option<Uuid>,
    pub recipient_id: Option<Uuid>,
    /// The endpoint URL or e-mail address, as at creation.
    pub destination: String,
    /// An e-mail to the address the event named, not to a recipient.
    pub direct: bool,
    pub event_id: String,
    pub event_type: String,
    pub body: String,
    pub attempt_count: i32,
    /// When the lease of whoever took it ends.
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub next_trigger: String,
    pub next_requested_by: Option<String>,
    pub next_requested_role: Option<i32>,
    pub next_replay_id: Option<Uuid>,
    /// When the event was routed to this destination.
    pub created_at: DateTime<Utc>,
}

/// Claims up to `limit` due deliveries for `lease`: another worker takes one over only if this one
/// has not recorded its attempt by then (it crashed).
pub async fn claim_due(
    pool: &PgPool,
    limit: i64,
    lease: std::time::Duration,
) -> Result<Vec<DueDelivery>, sqlx::Error> {
    let lease_seconds = lease.as_secs_f64();
    sqlx::query_as(AssertSqlSafe(format!(
        "UPDATE deliveries SET next_attempt_at = now() + make_interval(secs => $2)
         WHERE delivery_id IN (
             SELECT delivery_id FROM deliveries
             WHERE status IN ('pending', 'failed') AND next_attempt_at <= now()
             ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED)
         RETURNING {DUE_COLUMNS}"
    )))
    .bind(limit)
    .bind(lease_seconds)
    .fetch_all(pool)
    .await
}

/// The result of one attempt, recorded with the delivery's new state.
pub struct AttemptRecord<'a> {
    pub delivery: &'a DueDelivery,
    pub attempt_number: i32,
    pub started_at: DateTime<Utc>,
    pub latency_ms: i32,
    pub response_status: i32,
    pub error: &'a str,
    pub retry_after: Option<std::time::Duration>,
    pub response_excerpt: &'a str,
    /// `succeeded`, `failed` (retried at `next_attempt_at`) or `dead`.
    pub status: &'static str,
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// Records attempts with what caused each, and their deliveries' new states, in one statement;
/// each delivery's next attempt is a scheduled one again.
pub async fn record_attempts(
    connection: &mut PgConnection,
    records: &[AttemptRecord<'_>],
) -> Result<(), sqlx::Error> {
    if records.is_empty() {
        return Ok(());
    }
    let attempt_ids: Vec<Uuid> = records.iter().map(|_| Uuid::now_v7()).collect();
    let delivery_ids: Vec<Uuid> = records.iter().map(|r| r.delivery.delivery_id).collect();
    let numbers: Vec<i32> = records.iter().map(|r| r.attempt_number).collect();
    let started: Vec<DateTime<Utc>> = records.iter().map(|r| r.started_at).collect();
    let latencies: Vec<i32> = records.iter().map(|r| r.latency_ms).collect();
    let responses: Vec<i32> = records.iter().map(|r| r.response_status).collect();
    let errors: Vec<&str> = records.iter().map(|r| r.error).collect();
    let triggers: Vec<&str> = records
        .iter()
        .map(|r| r.delivery.next_trigger.as_str())
        .collect();
    let requested_by: Vec<Option<&str>> = records
        .iter()
        .map(|r| r.delivery.next_requested_by.as_deref())
        .collect();
    let requested_roles: Vec<Option<i32>> = records
        .iter()
        .map(|r| r.delivery.next_requested_role)
        .collect();
    let replay_ids: Vec<Option<Uuid>> = records.iter().map(|r| r.delivery.next_replay_id).collect();
    let retry_after_ms: Vec<Option<i64>> = records
        .iter()
        .map(|r| {
            r.retry_after
                .map(|wait| i64::try_from(wait.as_millis()).unwrap_or(i64::MAX))
        })
        .collect();
    let excerpts: Vec<&str> = records.iter().map(|r| r.response_excerpt).collect();
    let statuses: Vec<&str> = records.iter().map(|r| r.status).collect();
    let next_attempts: Vec<Option<DateTime<Utc>>> =
        records.iter().map(|r| r.next_attempt_at).collect();
    sqlx::query(
        "WITH a AS (
             SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::int4[], $4::timestamptz[], $5::int4[],
                 $6::int4[], $7::text[], $8::text[], $9::text[], $10::int4[], $11::uuid[], $12::int8[],
                 $13::text[], $14::text[], $15::timestamptz[])
             AS a(attempt_id, delivery_id, attempt_number, started_at, latency_ms, response_status, error,
                 trigger, requested_by, requested_role, replay_id, retry_after_ms, response_excerpt, status,
                 next_attempt_at)),
         attempts AS (
             INSERT INTO delivery_attempts (attempt_id, delivery_id, attempt_number, started_at, latency_ms,
                 response_status, error, trigger, requested_by, requested_role, replay_id, retry_after_ms,
                 response_excerpt)
             SELECT attempt_id, delivery_id, attempt_number, started_at, latency_ms, response_status, error,
                 trigger, requested_by, requested_role, replay_id, retry_after_ms, response_excerpt
             FROM a)
         UPDATE deliveries d SET status = a.status, attempt_count = a.attempt_number,
             last_attempt_at = a.started_at, next_attempt_at = a.next_attempt_at, last_error = a.error,
             last_response_status = a.response_status,
             succeeded_at = CASE WHEN a.status = 'succeeded'
                 THEN a.started_at + make_interval(secs => a.latency_ms / 1000.0) ELSE d.succeeded_at END,
             next_trigger = 'scheduled', next_requested_by = NULL, next_requested_role = NULL,
             next_replay_id = NULL
         FROM a WHERE d.delivery_id = a.delivery_id",
    )
    .bind(&attempt_ids)
    .bind(&delivery_ids)
    .bind(&numbers)
    .bind(&started)
    .bind(&latencies)
    .bind(&responses)
    .bind(&errors)
    .bind(&triggers)
    .bind(&requested_by)
    .bind(&requested_roles)
    .bind(&replay_ids)
    .bind(&retry_after_ms)
    .bind(&excerpts)
    .bind(&statuses)
    .bind(&next_attempts)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// Ends the failure streaks of endpoints that just succeeded.
pub async fn clear_failing(
    connection: &mut PgConnection,
    endpoint_ids: &[Uuid],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE webhook_endpoints SET failing_since = NULL
         WHERE endpoint_id = ANY($1) AND failing_since IS NOT NULL",
    )
    .bind(endpoint_ids)
    .execute(connection)
    .await?;
    Ok(())
}

/// Extends (or starts, at `at`) an endpoint's failure streak; returns when it started.
pub async fn mark_failing(
    connection: &mut PgConnection,
    endpoint_id: Uuid,
    at: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE webhook_endpoints SET failing_since = COALESCE(failing_since, $2)
         WHERE endpoint_id = $1 RETURNING failing_since",
    )
    .bind(endpoint_id)
    .bind(at)
    .fetch_optional(connection)
    .await
    .map(Option::flatten)
}

/// A delivery as the log shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeliveryRow {
    pub delivery_id: Uuid,
    pub partner_id: String,
    pub tenant_id: String,
    pub channel: String,
    pub endpoint_id: Option<Uuid>,
    pub recipient_id: Option<Uuid>,
    pub direct: bool,
    pub event_id: String,
    pub event_type: String,
    pub change_key: String,
    pub status: String,
    pub attempt_count: i32,
    pub created_at: DateTime<Utc>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub last_error: String,
    pub destination: String,
    pub last_response_status: i32,
    pub succeeded_at: Option<DateTime<Utc>>,
}

const DELIVERY_COLUMNS: &str = "d.delivery_id, d.partner_id, d.tenant_id, d.channel, d.endpoint_id,
    d.recipient_id, d.direct, d.event_id, d.change_key,
    d.event_type, d.status, d.attempt_count, d.created_at, d.next_attempt_at, d.last_attempt_at, d.last_error,
    d.destination, d.last_response_status, d.succeeded_at";

/// A delivery status as stored.
pub fn status_name(status: notifications::DeliveryStatus) -> Option<&'static str> {
    match status {
        notifications::DeliveryStatus::Pending => Some("pending"),
        notifications::DeliveryStatus::Succeeded => Some("succeeded"),
        notifications::DeliveryStatus::Failed => Some("failed"),
        notifications::DeliveryStatus::Dead => Some("dead"),
        notifications::DeliveryStatus::Unspecified => None,
    }
}

fn status_of(name: &str) -> notifications::DeliveryStatus {
    match name {
        "pending" => notifications::DeliveryStatus::Pending,
        "succeeded" => notifications::DeliveryStatus::Succeeded,
        "failed" => notifications::DeliveryStatus::Failed,
        "dead" => notifications::DeliveryStatus::Dead,
        _ => notifications::DeliveryStatus::Unspecified,
    }
}

/// A delivery channel as stored.
pub fn channel_name(channel: notifications::DeliveryChannel) -> Option<&'static str> {
    match channel {
        notifications::DeliveryChannel::Webhook => Some("webhook"),
        notifications::DeliveryChannel::Email => Some("email"),
        notifications::DeliveryChannel::Unspecified => None,
    }
}

fn channel_of(name: &str) -> notifications::DeliveryChannel {
    match name {
        "email" => notifications::DeliveryChannel::Email,
        _ => notifications::DeliveryChannel::Webhook,
    }
}

impl DeliveryRow {
    pub fn to_proto(&self) -> notifications::Delivery {
        let status = status_of(&self.status);
        let waiting = matches!(
            status,
            notifications::DeliveryStatus::Pending | notifications::DeliveryStatus::Failed
        );
        notifications::Delivery {
            delivery_id: self.delivery_id.to_string(),
            partner_id: self.partner_id.clone(),
            tenant_id: self.tenant_id.clone(),
            endpoint_id: self
                .endpoint_id
                .map(|id| id.to_string())
                .unwrap_or_default(),
            recipient_id: self
                .recipient_id
                .map(|id| id.to_string())
                .unwrap_or_default(),
            event_id: self.event_id.clone(),
            event_type: self.event_type.clone(),
            status: status.into(),
            attempt_count: u32::try_from(self.attempt_count).unwrap_or_default(),
            created_at: Some(to_timestamp(self.created_at)),
            next_attempt_at: self.next_attempt_at.filter(|_| waiting).map(to_timestamp),
            last_attempt_at: self.last_attempt_at.map(to_timestamp),
            last_error: self.last_error.clone(),
            channel: channel_of(&self.channel).into(),
            destination: self.destination.clone(),
            last_response_status: u32::try_from(self.last_response_status).unwrap_or_default(),
            succeeded_at: self.succeeded_at.map(to_timestamp),
            change_key: self.change_key.clone(),
        }
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AttemptRow {
    pub attempt_id: Uuid,
    pub delivery_id: Uuid,
    pub attempt_number: i32,
    pub started_at: DateTime<Utc>,
    pub latency_ms: i32,
    pub response_status: i32,
    pub error: String,
    pub trigger: String,
    pub requested_by: Option<String>,
    pub requested_role: Option<i32>,
    pub replay_id: Option<Uuid>,
    pub retry_after_ms: Option<i64>,
    pub response_excerpt: String,
}

impl AttemptRow {
    pub fn to_proto(&self) -> notifications::DeliveryAttempt {
        let trigger = match self.trigger.as_str() {
            "manual_redelivery" => notifications::AttemptTrigger::ManualRedelivery,
            "bulk_replay" => notifications::AttemptTrigger::BulkReplay,
            _ => notifications::AttemptTrigger::Scheduled,
        };
        notifications::DeliveryAttempt {
            attempt_id: self.attempt_id.to_string(),
            delivery_id: self.delivery_id.to_string(),
            attempt_number: u32::try_from(self.attempt_number).unwrap_or_default(),
            started_at: Some(to_timestamp(self.started_at)),
            latency_ms: u32::try_from(self.latency_ms).unwrap_or_default(),
            response_status: u32::try_from(self.response_status).unwrap_or_default(),
            error: self.error.clone(),
            succeeded: self.error.is_empty(),
            trigger: trigger.into(),
            retry_after: self
                .retry_after_ms
                .and_then(|millis| u64::try_from(millis).ok())
                .map(|millis| to_duration(std::time::Duration::from_millis(millis))),
            response_excerpt: self.response_excerpt.clone(),
            requested_by: self.requested_by.as_ref().map(|subject| common::Principal {
                subject: subject.clone(),
                role: self.requested_role.unwrap_or_default(),
                ..Default::default()
            }),
            replay_id: self.replay_id.map(|id| id.to_string()).unwrap_or_default(),
        }
    }
}

/// Which deliveries a listing or a replay covers; `None` leaves a field unfiltered.
#[derive(Debug, Default)]
pub struct DeliveryFilter {
    pub partner_id: Option<String>,
    pub tenant_id: Option<String>,
    /// Stored status names; empty = all.
    pub statuses: Vec<&'static str>,
    pub created_from: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    pub endpoint_id: Option<Uuid>,
    pub recipient_id: Option<Uuid>,
    pub channel: Option<&'static str>,
    pub event_type: Option<String>,
    pub event_id: Option<String>,
}

/// The filter's condition on `deliveries d`, over parameters $1 to $10 bound by [`bind_filter`].
const FILTER_SQL: &str = "($1::text IS NULL OR d.partner_id = $1)
    AND ($2::text IS NULL OR d.tenant_id = $2)
    AND (cardinality($3::text[]) = 0 OR d.status = ANY($3))
    AND ($4::timestamptz IS NULL OR d.created_at >= $4)
    AND ($5::timestamptz IS NULL OR d.created_at < $5)
    AND ($6::uuid IS NULL OR d.endpoint_id = $6)
    AND ($7::text IS NULL OR d.event_type = $7)
    AND ($8::text IS NULL OR d.event_id = $8)
    AND ($9::uuid IS NULL OR d.recipient_id = $9)
    AND ($10::text IS NULL OR d.channel = $10)";

fn bind_filter<'q, O>(
    query: sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
    filter: &'q DeliveryFilter,
) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments> {
    query
        .bind(filter.partner_id.as_deref())
        .bind(filter.tenant_id.as_deref())
        .bind(&filter.statuses)
        .bind(filter.created_from)
        .bind(filter.created_before)
        .bind(filter.endpoint_id)
        .bind(filter.event_type.as_deref())
        .bind(filter.event_id.as_deref())
        .bind(filter.recipient_id)
        .bind(filter.channel)
}

/// A page of deliveries, newest first, after the `(created_at, delivery_id)` of `after`.
pub async fn list_deliveries(
    pool: &PgPool,
    filter: &DeliveryFilter,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<DeliveryRow>, sqlx::Error> {
    let query = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {DELIVERY_COLUMNS} FROM deliveries d
         WHERE {FILTER_SQL}
           AND ($11::timestamptz IS NULL OR (d.created_at, d.delivery_id) < ($11, $12))
         ORDER BY d.created_at DESC, d.delivery_id DESC LIMIT $13"
    )));
    bind_filter(query, filter)
        .bind(after.map(|(at, _)| at))
        .bind(after.map(|(_, id)| id))
        .bind(limit)
        .fetch_all(pool)
        .await
}

pub async fn get_delivery(
    pool: &PgPool,
    delivery_id: Uuid,
) -> Result<Option<DeliveryRow>, sqlx::Error> {
    sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {DELIVERY_COLUMNS} FROM deliveries d WHERE d.delivery_id = $1"
    )))
    .bind(delivery_id)
    .fetch_optional(pool)
    .await
}

pub async fn attempts_of(pool: &PgPool, delivery_id: Uuid) -> Result<Vec<AttemptRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT attempt_id, delivery_id, attempt_number, started_at, latency_ms, response_status, error,
             trigger, requested_by, requested_role, replay_id, retry_after_ms, response_excerpt
         FROM delivery_attempts WHERE delivery_id = $1 ORDER BY attempt_number, started_at",
    )
    .bind(delivery_id)
    .fetch_all(pool)
    .await
}

/// Who asked for an attempt out of schedule, and why.
pub struct Request<'a> {
    pub trigger: &'static str,
    pub subject: &'a str,
    pub role: i32,
    pub replay_id: Option<Uuid>,
}

/// Makes a delivery due now for an attempt `request` caused, and wakes the worker.
pub async fn redeliver(
    pool: &PgPool,
    delivery_id: Uuid,
    request: &Request<'_>,
) -> Result<Option<DeliveryRow>, sqlx::Error> {
    let mut transaction = pool.begin().await?;
    let delivery = sqlx::query_as(AssertSqlSafe(format!(
        "UPDATE deliveries d SET status = 'pending', next_attempt_at = now(), next_trigger = $2,
             next_requested_by = $3, next_requested_role = $4, next_replay_id = $5
         WHERE d.delivery_id = $1 RETURNING {DELIVERY_COLUMNS}"
    )))
    .bind(delivery_id)
    .bind(request.trigger)
    .bind(request.subject)
    .bind(request.role)
    .bind(request.replay_id)
    .fetch_optional(&mut *transaction)
    .await?;
    wake_worker(&mut transaction).await?;
    transaction.commit().await?;
    Ok(delivery)
}

/// What a bulk replay matched.
#[derive(Debug, sqlx::FromRow)]
pub struct Replayed {
    /// Made due (or that would be, in a dry run).
    pub replayed: i64,
    /// Left alone: their endpoint or recipient is disabled (or gone).
    pub skipped: i64,
}

/// Makes every delivery `filter` matches due now, except those of disabled endpoints.
pub async fn replay(
    pool: &PgPool,
    filter: &DeliveryFilter,
    request: &Request<'_>,
    dry_run: bool,
) -> Result<Replayed, sqlx::Error> {
    let mut transaction = pool.begin().await?;
    let query = sqlx::query_as(AssertSqlSafe(format!(
        "WITH matched AS (
             SELECT d.delivery_id, COALESCE(e.enabled, r.enabled, false) AS enabled
             FROM deliveries d
                 LEFT JOIN webhook_endpoints e ON e.endpoint_id = d.endpoint_id
                 LEFT JOIN email_recipients r ON r.recipient_id = d.recipient_id
             WHERE {FILTER_SQL}
             FOR UPDATE OF d),
         replayed AS (
             UPDATE deliveries d SET status = 'pending', next_attempt_at = now(), next_trigger = $11,
                 next_requested_by = $12, next_requested_role = $13, next_replay_id = $14
             FROM matched m WHERE d.delivery_id = m.delivery_id AND m.enabled AND NOT $15
             RETURNING 1)
         SELECT count(*) FILTER (WHERE enabled) AS replayed, count(*) FILTER (WHERE NOT enabled) AS skipped
         FROM matched"
    )));
    let replayed: Replayed = bind_filter(query, filter)
        .bind(request.trigger)
        .bind(request.subject)
        .bind(request.role)
        .bind(request.replay_id)
        .bind(dry_run)
        .fetch_one(&mut *transaction)
        .await?;
    if !dry_run && replayed.replayed > 0 {
        wake_worker(&mut transaction).await?;
    }
    transaction.commit().await?;
    Ok(replayed)
}

async fn wake_worker(connection: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify(current_schema() || '_deliveries', '')")
        .execute(connection)
        .await?;
    Ok(())
}

/// Disables an endpoint Picket gave up on and makes its waiting deliveries dead; returns it and
/// how many deliveries it abandoned, or `None` when it was disabled already.
pub async fn disable_endpoint(
    connection: &mut PgConnection,
    endpoint_id: Uuid,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<Option<(EndpointRow, i64)>, sqlx::Error> {
    let endpoint: Option<EndpointRow> = sqlx::query_as(AssertSqlSafe(format!(
        "UPDATE webhook_endpoints SET enabled = false, disabled_reason = $2, disabled_at = $3, updated_at = $3
         WHERE endpoint_id = $1 AND enabled RETURNING {ENDPOINT_COLUMNS}"
    )))
    .bind(endpoint_id)
    .bind(reason)
    .bind(now)
    .fetch_optional(&mut *connection)
    .await?;
    let Some(endpoint) = endpoint else {
        return Ok(None);
    };
    let abandoned = abandon(
        connection,
        Destination::Endpoint(endpoint_id),
        &format!("endpoint disabled: {reason}"),
    )
    .await?;
    Ok(Some((endpoint, abandoned)))
}

/// Stops routing the events of `webhook`'s tenant (an offboarding started).
pub async fn stop_routing(
    connection: &mut PgConnection,
    webhook: &Webhook,
    offboarding_id: Uuid,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO offboarded_tenants (tenant_id, partner_id, offboarding_id, since)
         VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id) DO NOTHING",
    )
    .bind(&webhook.tenant_id)
    .bind(&webhook.partner_id)
    .bind(offboarding_id)
    .bind(now)
    .execute(connection)
    .await?;
    Ok(())
}

/// Routes a tenant's events again (its offboarding was cancelled).
pub async fn resume_routing(
    connection: &mut PgConnection,
    tenant_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM offboarded_tenants WHERE tenant_id = $1")
        .bind(tenant_id)
        .execute(connection)
        .await?;
    Ok(())
}

/// Which of `tenant_ids` are being offboarded.
pub async fn offboarded(
    connection: &mut PgConnection,
    tenant_ids: &[&str],
) -> Result<std::collections::HashSet<String>, sqlx::Error> {
    if tenant_ids.is_empty() {
        return Ok(Default::default());
    }
    let offboarded: Vec<String> =
        sqlx::query_scalar("SELECT tenant_id FROM offboarded_tenants WHERE tenant_id = ANY($1)")
            .bind(tenant_ids)
            .fetch_all(connection)
            .await?;
    Ok(offboarded.into_iter().collect())
}
