//! Investigators' engagements, as the ledger announces them: an investigator assigned to an open
//! engagement reads the incidents of its tenant and the partner's authority map, and nothing else,
//! until it closes. Applying an event is an idempotent upsert ordered by the event's time, so a
//! redelivered or late event changes nothing and a closed engagement stays closed.

use chrono::{DateTime, Utc};
use picket_platform::nats::{EventHandler, HandlerError, InboundEvent};
use picket_proto::ledger::v1::{Engagement, EngagementAssigned, EngagementClosed};
use prost::Name;
use sqlx::PgPool;
use uuid::Uuid;

pub const LEDGER: &str = "prioritizer-ledger";

/// Consumes the ledger's area for the assignments and closings of engagements.
pub struct EngagementsHandler {
    pool: PgPool,
}

impl EngagementsHandler {
    pub fn new(pool: PgPool) -> EngagementsHandler {
        EngagementsHandler { pool }
    }
}

fn engagement_id(engagement: Option<&Engagement>) -> Result<(Uuid, &Engagement), HandlerError> {
    let engagement =
        engagement.ok_or_else(|| HandlerError::Rejected("engagement is required".into()))?;
    let id = Uuid::parse_str(&engagement.engagement_id).map_err(|_| {
        HandlerError::Rejected(format!(
            "engagement.engagement_id {:?} is not a UUID",
            engagement.engagement_id
        ))
    })?;
    Ok((id, engagement))
}

async fn apply(
    pool: &PgPool,
    engagement: &Engagement,
    engagement_id: Uuid,
    closed: bool,
    as_of: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO investigator_engagements
             (engagement_id, partner_id, tenant_id, investigator_subject, closed, as_of)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (engagement_id) DO UPDATE
         SET investigator_subject = EXCLUDED.investigator_subject,
             closed = EXCLUDED.closed,
             as_of = EXCLUDED.as_of
         WHERE investigator_engagements.as_of <= EXCLUDED.as_of
           AND NOT investigator_engagements.closed",
    )
    .bind(engagement_id)
    .bind(&engagement.partner_id)
    .bind(&engagement.tenant_id)
    .bind(&engagement.investigator_subject)
    .bind(closed)
    .bind(as_of)
    .execute(pool)
    .await?;
    Ok(())
}

impl EventHandler for EngagementsHandler {
    async fn handle(&self, event: InboundEvent) -> Result<(), HandlerError> {
        let closed = if event.event_type == EngagementAssigned::full_name() {
            false
        } else if event.event_type == EngagementClosed::full_name() {
            true
        } else {
            // Credits and the opening of an engagement say nothing of who investigates.
            return Ok(());
        };
        let engagement = if closed {
            event.decode::<EngagementClosed>()?.engagement
        } else {
            event.decode::<EngagementAssigned>()?.engagement
        };
        let (id, engagement) = engagement_id(engagement.as_ref())?;
        apply(&self.pool, engagement, id, closed, event.time).await?;
        Ok(())
    }
}

/// Of `tenant_ids` (all of them when `None`), the tenants of `partner_id` (any partner when
/// `None`) whose incidents `investigator` reads now: an open engagement on each is assigned to them.
pub async fn engaged_tenants(
    pool: &PgPool,
    investigator: &str,
    partner_id: Option<&str>,
    tenant_ids: Option<&[String]>,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT DISTINCT tenant_id FROM investigator_engagements
         WHERE investigator_subject = $1 AND NOT closed AND tenant_id <> ''
           AND ($2::text IS NULL OR partner_id = $2)
           AND ($3::text[] IS NULL OR tenant_id = ANY($3))
         ORDER BY tenant_id",
    )
    .bind(investigator)
    .bind(partner_id)
    .bind(tenant_ids)
    .fetch_all(pool)
    .await
}

/// Whether `investigator` works on an open engagement of `partner_id`: on `tenant_id` when one is
/// named, else on any of the partner's.
pub async fn engaged_with(
    pool: &PgPool,
    investigator: &str,
    partner_id: &str,
    tenant_id: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM investigator_engagements
         WHERE investigator_subject = $1 AND NOT closed AND partner_id = $2
           AND ($3 = '' OR tenant_id = $3))",
    )
    .bind(investigator)
    .bind(partner_id)
    .bind(tenant_id)
    .fetch_one(pool)
    .await
}
