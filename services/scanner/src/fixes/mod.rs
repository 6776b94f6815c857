//! Fixes: the scanner applies each approved FixRequested once, whatever the redeliveries, and
//! answers FixApplied or FixFailed.

pub mod apply;
pub mod plan;

use std::sync::Arc;

use chrono::Utc;
use picket_platform::db::outbox;
use picket_platform::nats::{EventHandler, HandlerError, InboundEvent};
use picket_platform::time::to_timestamp;
use picket_proto::fixes::v1::{self as fixes, FixFailureReason};
use prost::Name;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::fixes::apply::{FixOutcome, FixRun};
use crate::graph::Meter;
use crate::scans::runner::Scanning;
use crate::tenants::store as tenant_store;

/// Durable consumer name.
pub const CONSUMER: &str = "scanner-fixes";

pub struct FixHandler {
    scanning: Arc<Scanning>,
}

impl FixHandler {
    pub fn new(scanning: Arc<Scanning>) -> FixHandler {
        FixHandler { scanning }
    }
}

fn rejected(reason: impl Into<String>) -> HandlerError {
    HandlerError::Rejected(reason.into())
}

/// Takes the fix on; false when it was already answered (a redelivery).
async fn take_on(
    connection: &mut PgConnection,
    request: &fixes::FixRequested,
    fix_id: Uuid,
    tenant_id: Uuid,
) -> Result<bool, sqlx::Error> {
    let state: String = sqlx::query_scalar(
        "INSERT INTO fixes (fix_id, tenant_id, partner_id, incident_id, check_id, action, state, received_at)
         VALUES ($1, $2, $3, $4, $5, $6, 'applying', now())
         ON CONFLICT (fix_id) DO UPDATE SET attempts = fixes.attempts + 1
         RETURNING state",
    )
    .bind(fix_id)
    .bind(tenant_id)
    .bind(&request.partner_id)
    .bind(&request.incident_id)
    .bind(&request.check_id)
    .bind(fixes::FixAction::try_from(request.action).unwrap_or_default().as_str_name())
    .fetch_one(connection)
    .await?;
    Ok(state == "applying")
}

impl EventHandler for FixHandler {
    async fn handle(&self, event: InboundEvent) -> Result<(), HandlerError> {
        // The area also carries the scanner's own answers.
        if event.event_type != fixes::FixRequested::full_name() {
            return Ok(());
        }
        let request: fixes::FixRequested = event
            .decode()
            .map_err(|error| rejected(error.to_string()))?;
        let fix_id =
            Uuid::parse_str(&request.fix_id).map_err(|_| rejected("fix_id is not a UUID"))?;
        let tenant_id =
            Uuid::parse_str(&request.tenant_id).map_err(|_| rejected("tenant_id is not a UUID"))?;
        if request.check_id.is_empty() {
            return Err(rejected("check_id is required"));
        }
        let pool = &self.scanning.pool;
        let tenant = tenant_store::get_tenant(pool, tenant_id)
            .await?
            .filter(|tenant| tenant.partner_id == request.partner_id)
            .ok_or_else(|| {
                rejected(format!(
                    "tenant {tenant_id} of partner {} is unknown",
                    request.partner_id
                ))
            })?;
        {
            let mut connection = pool.acquire().await?;
            if !take_on(&mut connection, &request, fix_id, tenant_id).await? {
                tracing::info!(%fix_id, "fix already answered; redelivery ignored");
                return Ok(());
            }
        }
        let outcome = match self.scanning.catalogue.check(&request.check_id) {
            _ if !tenant.is_active() => FixOutcome::Failed {
                reason: FixFailureReason::TenantNotConnected,
                detail: format!("the tenant is {}", tenant.state),
                retryable: true,
                graph_status: 0,
            },
            None => FixOutcome::Failed {
                reason: FixFailureReason::Unsupported,
                detail: format!("no check {} in the catalogue", request.check_id),
                retryable: false,
                graph_status: 0,
            },
            Some(check) => {
                let run = FixRun {
                    scanning: &self.scanning,
                    tenant: &tenant,
                    meter: Meter::default(),
                };
                run.apply(check, &request).await
            }
        };
        let now = Utc::now();
        let mut transaction = pool.begin().await?;
        let (state, summary) = match &outcome {
            FixOutcome::Applied { summary, .. } => ("applied", summary.clone()),
            FixOutcome::Failed { detail, .. } => ("failed", detail.clone()),
        };
        let answered = sqlx::query(
            "UPDATE fixes SET state = $2, finished_at = $3, summary = $4 WHERE fix_id = $1 AND state = 'applying'",
        )
        .bind(fix_id)
        .bind(state)
        .bind(now)
        .bind(&summary)
        .execute(&mut *transaction)
        .await?;
        if answered.rows_affected() == 0 {
            // Another delivery answered meanwhile.
            return Ok(());
        }
        let published = match outcome {
            FixOutcome::Applied {
                already_compliant,
                verified,
                summary,
                before,
                after,
            } => self.scanning.events.event(
                &fixes::FixApplied {
                    partner_id: request.partner_id.clone(),
                    tenant_id: request.tenant_id.clone(),
                    fix_id: request.fix_id.clone(),
                    incident_id: request.incident_id.clone(),
                    fingerprint: request.fingerprint.clone(),
                    check_id: request.check_id.clone(),
                    target: request.target.clone(),
                    action: request.action,
                    applied_at: Some(to_timestamp(now)),
                    verified,
                    already_compliant,
                    summary,
                    before: before.into_iter().collect(),
                    after: after.into_iter().collect(),
                    target_id: request.target_id.clone(),
                },
                now,
            ),
            FixOutcome::Failed {
                reason,
                detail,
                retryable,
                graph_status,
            } => self.scanning.events.event(
                &fixes::FixFailed {
                    partner_id: request.partner_id.clone(),
                    tenant_id: request.tenant_id.clone(),
                    fix_id: request.fix_id.clone(),
                    incident_id: request.incident_id.clone(),
                    fingerprint: request.fingerprint.clone(),
                    check_id: request.check_id.clone(),
                    target: request.target.clone(),
                    action: request.action,
                    reason: reason.into(),
                    reason_detail: detail,
                    failed_at: Some(to_timestamp(now)),
                    retryable,
                    target_id: request.target_id.clone(),
                    graph_status: u32::from(graph_status),
                },
                now,
            ),
        };
        let outgoing = published.map_err(|error| rejected(error.to_string()))?;
        outbox::enqueue(&mut transaction, &outgoing).await?;
        transaction.commit().await?;
        tracing::info!(%fix_id, tenant_id = %tenant.tenant_id, state, "fix answered");
        Ok(())
    }
}
