//! The prioritizer's timers, run every `tick`: Theme Tuesday launches, expired mutes and due
//! escalations. Each becomes a command that re-checks its condition under the tenant's lock, so
//! replicas running the same timers never launch or escalate twice.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::processor::{Command, Job, Processor, system_actor};
use crate::store::TenantKey;
use crate::themes;

pub async fn run(processor: Arc<Processor>, shutdown: CancellationToken) {
    let tick = processor.settings().tick;
    loop {
        if let Err(error) = run_once(&processor).await {
            tracing::warn!(%error, "prioritizer timers failed, retrying next tick");
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(tick) => {}
        }
    }
}

/// Runs every due timer once.
pub async fn run_once(processor: &Processor) -> Result<(), crate::processor::ProcessError> {
    let now = processor.clock().now();
    let mut jobs = due_launches(processor, now).await?;
    jobs.extend(expired_mutes(processor, now).await?);
    jobs.extend(due_escalations(processor, now).await?);
    for chunk in jobs.chunks(processor.settings().batch_size) {
        processor.run(chunk.to_vec()).await?;
    }
    Ok(())
}

/// A tenant with themes left to launch, and its partner's launch settings if it set them.
#[derive(sqlx::FromRow)]
struct LaunchCandidate {
    partner_id: String,
    tenant_id: String,
    onboarded_at: DateTime<Utc>,
    last_launch_at: DateTime<Utc>,
    time_zone: Option<String>,
    theme_launch_hour: Option<i32>,
}

async fn due_launches(processor: &Processor, now: DateTime<Utc>) -> Result<Vec<Job>, sqlx::Error> {
    let defaults = crate::processor::EffectivePolicy::of(None, processor.settings());
    let rows: Vec<LaunchCandidate> = sqlx::query_as(
        "SELECT t.partner_id, t.tenant_id, t.onboarded_at, t.last_launch_at, p.time_zone, p.theme_launch_hour
         FROM tenants t LEFT JOIN partner_policies p USING (partner_id)
         WHERE t.launched_themes < $1",
    )
    .bind(i32::try_from(processor.themes().count()).unwrap_or(i32::MAX))
    .fetch_all(processor.pool())
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|candidate| {
            let zone: Tz = candidate
                .time_zone
                .and_then(|zone| zone.parse().ok())
                .unwrap_or(defaults.time_zone);
            let hour = candidate
                .theme_launch_hour
                .and_then(|hour| u32::try_from(hour).ok())
                .unwrap_or(defaults.theme_launch_hour);
            let due = themes::last_launch(now, zone, hour);
            // A tenant onboarded after this Tuesday's launch waits for the next one.
            (candidate.last_launch_at < due && candidate.onboarded_at < due).then(|| {
                Job::new(
                    TenantKey {
                        partner_id: candidate.partner_id,
                        tenant_id: candidate.tenant_id,
                    },
                    Command::LaunchTheme {
                        actor: system_actor(),
                        scheduled_for: Some(due),
                    },
                )
            })
        })
        .collect())
}

async fn expired_mutes(processor: &Processor, now: DateTime<Utc>) -> Result<Vec<Job>, sqlx::Error> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT DISTINCT partner_id, tenant_id FROM recommendations WHERE muted_until <= $1",
    )
    .bind(now)
    .fetch_all(processor.pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(|(partner_id, tenant_id)| {
            Job::new(
                TenantKey {
                    partner_id,
                    tenant_id,
                },
                Command::Tick,
            )
        })
        .collect())
}

async fn due_escalations(
    processor: &Processor,
    now: DateTime<Utc>,
) -> Result<Vec<Job>, sqlx::Error> {
    let rows: Vec<(String, String, Uuid)> = sqlx::query_as(
        "SELECT partner_id, tenant_id, incident_id FROM incidents
         WHERE state = 'open' AND decision_due_at <= $1 ORDER BY decision_due_at LIMIT 5000",
    )
    .bind(now)
    .fetch_all(processor.pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(|(partner_id, tenant_id, incident_id)| {
            Job::new(
                TenantKey {
                    partner_id,
                    tenant_id,
                },
                Command::Escalate { incident_id },
            )
        })
        .collect())
}
