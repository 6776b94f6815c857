//! Engagements and their work entries in PostgreSQL.

use chrono::{DateTime, Utc};
use picket_platform::time::to_timestamp;
use picket_proto::common::v1 as common;
use picket_proto::ledger::v1 as ledger;
use sqlx::PgExecutor;
use uuid::Uuid;

use picket_platform::db::statement::{Arguments, column};

use crate::store::WorkEntryRow;

#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, sqlx::FromRow)]
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
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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

/// The statement that writes new and changed engagements, for [`crate::store::write`].
pub fn written(arguments: &mut Arguments, rows: &[&EngagementRow]) -> Result<String, sqlx::Error> {
    let recommendations: Vec<String> = rows
        .iter()
        .map(|row| serde_json::to_string(&row.recommendations.0))
        .collect::<Result<_, _>>()
        .map_err(|error| sqlx::Error::Encode(Box::new(error)))?;
    Ok(format!(
        "INSERT INTO engagements ({ENGAGEMENT_COLUMNS})
         SELECT id, partner, tenant, incident, request, channel, state, contact_name, contact_email,
             contact_phone, opened_by, opened_role, opened_at, closed_at, investigator, estimated, logged,
             hold, summary, recommendations::jsonb
         FROM unnest({}::uuid[], {}::text[], {}::text[], {}::text[], {}::text[], {}::int4[], {}::text[],
             {}::text[], {}::text[], {}::text[], {}::text[], {}::int4[], {}::timestamptz[],
             {}::timestamptz[], {}::text[], {}::int8[], {}::int8[], {}::uuid[], {}::text[], {}::text[])
             AS e(id, partner, tenant, incident, request, channel, state, contact_name, contact_email,
                 contact_phone, opened_by, opened_role, opened_at, closed_at, investigator, estimated,
                 logged, hold, summary, recommendations)
         ON CONFLICT (engagement_id) DO UPDATE SET state = EXCLUDED.state, closed_at = EXCLUDED.closed_at,
             investigator_subject = EXCLUDED.investigator_subject,
             logged_minutes = EXCLUDED.logged_minutes, summary = EXCLUDED.summary,
             recommendations = EXCLUDED.recommendations",
        arguments.bind(column(rows, |row| row.engagement_id))?,
        arguments.bind(column(rows, |row| row.partner_id.as_str()))?,
        arguments.bind(column(rows, |row| row.tenant_id.as_str()))?,
        arguments.bind(column(rows, |row| row.incident_id.as_str()))?,
        arguments.bind(column(rows, |row| row.request.as_str()))?,
        arguments.bind(column(rows, |row| row.channel))?,
        arguments.bind(column(rows, |row| row.state.as_str()))?,
        arguments.bind(column(rows, |row| row.partner_contact_name.as_str()))?,
        arguments.bind(column(rows, |row| row.partner_contact_email.as_str()))?,
        arguments.bind(column(rows, |row| row.partner_contact_phone.as_str()))?,
        arguments.bind(column(rows, |row| row.opened_by.as_str()))?,
        arguments.bind(column(rows, |row| row.opened_role))?,
        arguments.bind(column(rows, |row| row.opened_at))?,
        arguments.bind(column(rows, |row| row.closed_at))?,
        arguments.bind(column(rows, |row| row.investigator_subject.as_str()))?,
        arguments.bind(column(rows, |row| row.estimated_minutes))?,
        arguments.bind(column(rows, |row| row.logged_minutes))?,
        arguments.bind(column(rows, |row| row.hold_id))?,
        arguments.bind(column(rows, |row| row.summary.as_str()))?,
        arguments.bind(recommendations)?,
    ))
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

/// Which engagements to list: empty fields do not filter.
pub struct Filter<'a> {
    pub partner_id: &'a str,
    pub tenant_id: &'a str,
    pub investigator_subject: &'a str,
    pub states: &'a [&'a str],
}

/// A page of a partner's engagements, newest first.
pub async fn list<'c>(
    executor: impl PgExecutor<'c>,
    filter: &Filter<'_>,
    offset: i64,
    limit: i64,
) -> Result<Vec<EngagementRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {ENGAGEMENT_COLUMNS} FROM engagements
         WHERE partner_id = $1 AND ($2 = '' OR tenant_id = $2) AND ($3 = '' OR investigator_subject = $3)
           AND (cardinality($4::text[]) = 0 OR state = ANY($4))
         ORDER BY opened_at DESC, engagement_id DESC OFFSET $5 LIMIT $6"
    )))
    .bind(filter.partner_id)
    .bind(filter.tenant_id)
    .bind(filter.investigator_subject)
    .bind(filter.states)
    .bind(offset)
    .bind(limit)
    .fetch_all(executor)
    .await
}

#[derive(serde::Deserialize)]
struct Debit {
    pack_id: Option<Uuid>,
    minutes: i64,
}

#[derive(sqlx::FromRow)]
struct WorkEntryRecord {
    work_entry_id: Uuid,
    engagement_id: Uuid,
    partner_id: String,
    investigator_subject: String,
    investigator_role: i32,
    minutes: i64,
    description: String,
    performed_at: DateTime<Utc>,
    logged_at: DateTime<Utc>,
    idempotency_key: String,
    debits: sqlx::types::Json<Vec<Debit>>,
    transfer_ids: Vec<Uuid>,
}

/// A page of a partner's work entries, oldest first: of one engagement or all, logged in a range.
pub async fn work_entries<'c>(
    executor: impl PgExecutor<'c>,
    partner_id: &str,
    engagement_id: Option<Uuid>,
    (from, until): (Option<DateTime<Utc>>, Option<DateTime<Utc>>),
    offset: i64,
    limit: i64,
) -> Result<Vec<WorkEntryRow>, sqlx::Error> {
    let rows: Vec<WorkEntryRecord> = sqlx::query_as(
        "SELECT work_entry_id, engagement_id, partner_id, investigator_subject, investigator_role,
             minutes, description, performed_at, logged_at, idempotency_key, debits, transfer_ids
         FROM work_entries
         WHERE partner_id = $1 AND ($2::uuid IS NULL OR engagement_id = $2)
           AND ($3::timestamptz IS NULL OR logged_at >= $3) AND ($4::timestamptz IS NULL OR logged_at < $4)
         ORDER BY logged_at, work_entry_id OFFSET $5 LIMIT $6",
    )
    .bind(partner_id)
    .bind(engagement_id)
    .bind(from)
    .bind(until)
    .bind(offset)
    .bind(limit)
    .fetch_all(executor)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| WorkEntryRow {
            work_entry_id: row.work_entry_id,
            engagement_id: row.engagement_id,
            partner_id: row.partner_id,
            investigator_subject: row.investigator_subject,
            investigator_role: row.investigator_role,
            minutes: row.minutes,
            description: row.description,
            performed_at: row.performed_at,
            logged_at: row.logged_at,
            idempotency_key: row.idempotency_key,
            debits: row
                .debits
                .0
                .into_iter()
                .map(|debit| (debit.pack_id, debit.minutes))
                .collect(),
            transfer_ids: row.transfer_ids,
        })
        .collect())
}
