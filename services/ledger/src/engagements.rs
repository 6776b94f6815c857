//! Engagements and their work entries in PostgreSQL.

use chrono::{DateTime, Utc};
use picket_platform::time::to_timestamp;
use picket_proto::common::v1 as common;
use picket_proto::ledger::v1 as ledger;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EngagementRow {
    pub engagement_id: Uuid,
    pub partner_id: String,
    pub tenant_id: String,
    pub incident_id: String,
    pub request: String,
    pub channel: i32,
    pub state: String,
    pub partner_contact_name: String,
    pub partner_contact_email: String,
    pub partner_contact_phone: String,
    pub opened_by: String,
    pub opened_role: i32,
    pub opened_at: DateTime<Utc>,
    pub closed_at: Option<DateTime<Utc>>,
    pub investigator_subject: String,
    pub estimated_minutes: i64,
    pub logged_minutes: i64,
    pub hold_id: Option<Uuid>,
    pub summary: String,
    pub recommendations: sqlx::types::Json<Vec<Recommendation>>,
}

/// A recommendation from an investigation, as stored.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Recommendation {
    pub recommendation_id: Uuid,
    pub title: String,
    pub detail: String,
    pub priority: i32,
    pub recorded_at: DateTime<Utc>,
    pub recorded_by: String,
}

impl EngagementRow {
    /// The engagement as the API shows it, with what its hold still reserves.
    pub fn to_proto(&self, held_minutes: i64) -> ledger::Engagement {
        ledger::Engagement {
            engagement_id: self.engagement_id.to_string(),
            partner_id: self.partner_id.clone(),
            tenant_id: self.tenant_id.clone(),
            incident_id: self.incident_id.clone(),
            request: self.request.clone(),
            channel: self.channel,
            state: if self.state == "open" {
                ledger::EngagementState::Open.into()
            } else {
                ledger::EngagementState::Closed.into()
            },
            partner_contact_name: self.partner_contact_name.clone(),
            partner_contact_email: self.partner_contact_email.clone(),
            partner_contact_phone: self.partner_contact_phone.clone(),
            opened_by: Some(common::Principal {
                subject: self.opened_by.clone(),
                role: self.opened_role,
                ..Default::default()
            }),
            opened_at: Some(to_timestamp(self.opened_at)),
            closed_at: self.closed_at.map(to_timestamp),
            investigator_subject: self.investigator_subject.clone(),
            estimated_minutes: self.estimated_minutes,
            logged_minutes: self.logged_minutes,
            held_minutes,
            recommendations: self
                .recommendations
                .iter()
                .map(|recommendation| ledger::EngagementRecommendation {
                    recommendation_id: recommendation.recommendation_id.to_string(),
                    title: recommendation.title.clone(),
                    detail: recommendation.detail.clone(),
                    priority: recommendation.priority,
                    recorded_at: Some(to_timestamp(recommendation.recorded_at)),
                    recorded_by: Some(common::Principal {
                        subject: recommendation.recorded_by.clone(),
                        ..Default::default()
                    }),
                })
                .collect(),
            summary: self.summary.clone(),
            hold_id: self.hold_id.map(|id| id.to_string()).unwrap_or_default(),
        }
    }
}

const ENGAGEMENT_COLUMNS: &str = "engagement_id, partner_id, tenant_id, incident_id, request, channel,
    state, partner_contact_name, partner_contact_email, partner_contact_phone, opened_by, opened_role,
    opened_at, closed_at, investigator_subject, estimated_minutes, logged_minutes, hold_id, summary,
    recommendations";

pub async fn insert(
    connection: &mut PgConnection,
    engagement: &EngagementRow,
) -> Result<(), sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO engagements ({ENGAGEMENT_COLUMNS})
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)"
    )))
    .bind(engagement.engagement_id)
    .bind(&engagement.partner_id)
    .bind(&engagement.tenant_id)
    .bind(&engagement.incident_id)
    .bind(&engagement.request)
    .bind(engagement.channel)
    .bind(&engagement.state)
    .bind(&engagement.partner_contact_name)
    .bind(&engagement.partner_contact_email)
    .bind(&engagement.partner_contact_phone)
    .bind(&engagement.opened_by)
    .bind(engagement.opened_role)
    .bind(engagement.opened_at)
    .bind(engagement.closed_at)
    .bind(&engagement.investigator_subject)
    .bind(engagement.estimated_minutes)
    .bind(engagement.logged_minutes)
    .bind(engagement.hold_id)
    .bind(&engagement.summary)
    .bind(&engagement.recommendations)
    .execute(connection)
    .await?;
    Ok(())
}

pub async fn get<'c>(
    executor: impl PgExecutor<'c>,
    engagement_id: Uuid,
) -> Result<Option<EngagementRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {ENGAGEMENT_COLUMNS} FROM engagements WHERE engagement_id = $1"
    )))
    .bind(engagement_id)
    .fetch_optional(executor)
    .await
}

/// A page of a partner's engagements, newest first.
pub async fn list<'c>(
    executor: impl PgExecutor<'c>,
    partner_id: &str,
    tenant_id: Option<&str>,
    states: &[&str],
    offset: i64,
    limit: i64,
) -> Result<Vec<EngagementRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {ENGAGEMENT_COLUMNS} FROM engagements
         WHERE partner_id = $1 AND ($2::text IS NULL OR tenant_id = $2)
           AND (cardinality($3::text[]) = 0 OR state = ANY($3))
         ORDER BY opened_at DESC, engagement_id DESC OFFSET $4 LIMIT $5"
    )))
    .bind(partner_id)
    .bind(tenant_id)
    .bind(states)
    .bind(offset)
    .bind(limit)
    .fetch_all(executor)
    .await
}

/// Adds logged minutes to an engagement.
pub async fn add_logged(
    connection: &mut PgConnection,
    engagement_id: Uuid,
    minutes: i64,
) -> Result<EngagementRow, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE engagements SET logged_minutes = logged_minutes + $2
         WHERE engagement_id = $1 RETURNING {ENGAGEMENT_COLUMNS}"
    )))
    .bind(engagement_id)
    .bind(minutes)
    .fetch_one(connection)
    .await
}

/// Closes an engagement with its summary and recommendations.
pub async fn close(
    connection: &mut PgConnection,
    engagement_id: Uuid,
    summary: &str,
    recommendations: &[Recommendation],
    now: DateTime<Utc>,
) -> Result<EngagementRow, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE engagements SET state = 'closed', closed_at = $2, summary = $3,
             recommendations = recommendations || $4
         WHERE engagement_id = $1 RETURNING {ENGAGEMENT_COLUMNS}"
    )))
    .bind(engagement_id)
    .bind(now)
    .bind(summary)
    .bind(sqlx::types::Json(recommendations))
    .fetch_one(connection)
    .await
}

/// A work entry as logged.
pub struct WorkEntry<'a> {
    pub work_entry_id: Uuid,
    pub engagement_id: Uuid,
    pub partner_id: &'a str,
    pub investigator: (&'a str, i32),
    pub minutes: i64,
    pub description: &'a str,
    pub performed_at: DateTime<Utc>,
    pub logged_at: DateTime<Utc>,
    pub idempotency_key: &'a str,
    /// (pack, minutes) drawn on, oldest first; no pack for the overdraft.
    pub debits: &'a [(Option<Uuid>, i64)],
    pub transfer_ids: &'a [Uuid],
}

pub async fn insert_work(
    connection: &mut PgConnection,
    entry: &WorkEntry<'_>,
) -> Result<(), sqlx::Error> {
    let debits: Vec<serde_json::Value> = entry
        .debits
        .iter()
        .map(|(pack_id, minutes)| serde_json::json!({ "pack_id": pack_id, "minutes": minutes }))
        .collect();
    sqlx::query(
        "INSERT INTO work_entries (work_entry_id, engagement_id, partner_id, investigator_subject,
             investigator_role, minutes, description, performed_at, logged_at, idempotency_key, debits,
             transfer_ids)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(entry.work_entry_id)
    .bind(entry.engagement_id)
    .bind(entry.partner_id)
    .bind(entry.investigator.0)
    .bind(entry.investigator.1)
    .bind(entry.minutes)
    .bind(entry.description)
    .bind(entry.performed_at)
    .bind(entry.logged_at)
    .bind(entry.idempotency_key)
    .bind(sqlx::types::Json(debits))
    .bind(entry.transfer_ids)
    .execute(connection)
    .await?;
    Ok(())
}
