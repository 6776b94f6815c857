//! Consumes FindingObserved and FindingCleared: each event, once (inbox), updates the findings and
//! incidents tables and emits the incident events through the outbox, all in one transaction.

use chrono::Utc;
use picket_platform::EventFactory;
use picket_platform::db::{inbox, outbox};
use picket_platform::nats::{EventHandler, HandlerError, InboundEvent};
use picket_platform::time::from_timestamp;
use picket_proto::Event;
use picket_proto::findings::v1::{FindingCleared, FindingObserved};
use picket_proto::incidents::v1 as incidents;
use prost::Name;
use sqlx::PgPool;

use crate::model::{Kind, Resolution, Severity};
use crate::policy::{self, ObservedDecision};
use crate::store::{self, Finding};

/// Durable consumer name, also the inbox key.
pub const CONSUMER: &str = "prioritizer-findings";

pub struct FindingsHandler {
    pool: PgPool,
    events: EventFactory,
}

fn required(value: &str, field: &str) -> Result<(), HandlerError> {
    if value.trim().is_empty() {
        return Err(HandlerError::Rejected(format!("{field} is required")));
    }
    Ok(())
}

/// Validates a FindingObserved; an invalid one can never be applied and is dead-lettered.
pub fn finding_from_event(event: FindingObserved) -> Result<Finding, HandlerError> {
    required(&event.fingerprint, "fingerprint")?;
    required(&event.check_id, "check_id")?;
    required(&event.title, "title")?;
    let kind = Kind::from_proto(event.kind).ok_or_else(|| {
        HandlerError::Rejected(format!("kind {} is not a finding kind", event.kind))
    })?;
    let severity = Severity::from_proto(event.severity).ok_or_else(|| {
        HandlerError::Rejected(format!("severity {} is not a severity", event.severity))
    })?;
    let observed_at = event
        .observed_at
        .as_ref()
        .and_then(from_timestamp)
        .ok_or_else(|| {
            HandlerError::Rejected("observed_at is missing or out of range".to_owned())
        })?;
    Ok(Finding {
        partner_id: event.partner_id,
        tenant_id: event.tenant_id,
        fingerprint: event.fingerprint,
        check_id: event.check_id,
        kind,
        severity,
        title: event.title,
        description: event.description,
        target: event.target,
        theme: event.theme,
        recommended_fix: event.recommended_fix,
        evidence: event.evidence,
        scan_id: event.scan_id,
        observed_at,
    })
}

impl FindingsHandler {
    pub fn new(pool: PgPool, events: EventFactory) -> FindingsHandler {
        FindingsHandler { pool, events }
    }

    async fn observed(&self, event_id: &str, finding: Finding) -> Result<(), HandlerError> {
        let now = Utc::now();
        let mut transaction = self.pool.begin().await?;
        if !inbox::first_delivery(&mut transaction, CONSUMER, event_id).await? {
            return Ok(());
        }
        store::upsert_finding(&mut transaction, &finding).await?;
        let active = store::lock_active_incident(
            &mut transaction,
            &finding.partner_id,
            &finding.tenant_id,
            &finding.fingerprint,
        )
        .await?;
        match policy::on_finding_observed(finding.kind, active) {
            ObservedDecision::Open => {
                let incident = store::insert_incident(&mut transaction, &finding, now).await?;
                store::add_timeline_entry(
                    &mut transaction,
                    incident.incident_id,
                    now,
                    incidents::TimelineEntryKind::Opened,
                    "picket",
                    &format!("opened by finding {}", finding.fingerprint),
                )
                .await?;
                let opened = incidents::IncidentOpened {
                    partner_id: incident.partner_id.clone(),
                    tenant_id: incident.tenant_id.clone(),
                    incident: Some(incident.to_proto()),
                };
                self.enqueue(&mut transaction, &opened, now).await?;
                tracing::info!(incident_id = %incident.incident_id, tenant_id = %incident.tenant_id, "incident opened");
            }
            ObservedDecision::Join(incident_id) => {
                store::record_occurrence(&mut transaction, incident_id, finding.observed_at, now)
                    .await?;
                store::add_timeline_entry(
                    &mut transaction,
                    incident_id,
                    now,
                    incidents::TimelineEntryKind::Occurrence,
                    "picket",
                    "observed again",
                )
                .await?;
            }
            ObservedDecision::Hold => {}
        }
        transaction.commit().await?;
        Ok(())
    }

    async fn cleared(&self, event_id: &str, cleared: FindingCleared) -> Result<(), HandlerError> {
        required(&cleared.fingerprint, "fingerprint")?;
        let now = Utc::now();
        let cleared_at = cleared
            .cleared_at
            .as_ref()
            .and_then(from_timestamp)
            .unwrap_or(now);
        let mut transaction = self.pool.begin().await?;
        if !inbox::first_delivery(&mut transaction, CONSUMER, event_id).await? {
            return Ok(());
        }
        store::mark_finding_cleared(
            &mut transaction,
            &cleared.partner_id,
            &cleared.tenant_id,
            &cleared.fingerprint,
            cleared_at,
        )
        .await?;
        let active = store::lock_active_incident(
            &mut transaction,
            &cleared.partner_id,
            &cleared.tenant_id,
            &cleared.fingerprint,
        )
        .await?;
        if let Some(incident_id) = active {
            let incident =
                store::resolve_incident(&mut transaction, incident_id, Resolution::Cleared, now)
                    .await?;
            store::add_timeline_entry(
                &mut transaction,
                incident_id,
                now,
                incidents::TimelineEntryKind::Resolved,
                "picket",
                "resolved by verification: the finding cleared",
            )
            .await?;
            let resolved = incidents::IncidentResolved {
                partner_id: incident.partner_id.clone(),
                tenant_id: incident.tenant_id.clone(),
                incident: Some(incident.to_proto()),
                resolution: Resolution::Cleared.to_proto().into(),
                resolved_at: Some(picket_platform::time::to_timestamp(now)),
                scan_id: cleared.scan_id.clone(),
                ..Default::default()
            };
            self.enqueue(&mut transaction, &resolved, now).await?;
        }
        transaction.commit().await?;
        Ok(())
    }

    async fn enqueue<E: Event>(
        &self,
        connection: &mut sqlx::PgConnection,
        event: &E,
        now: chrono::DateTime<Utc>,
    ) -> Result<(), HandlerError> {
        let outgoing = self
            .events
            .event(event, now)
            .map_err(|error| HandlerError::Rejected(error.to_string()))?;
        outbox::enqueue(connection, &outgoing).await?;
        Ok(())
    }
}

impl EventHandler for FindingsHandler {
    async fn handle(&self, event: InboundEvent) -> Result<(), HandlerError> {
        if event.event_type == FindingObserved::full_name() {
            let finding = finding_from_event(event.decode::<FindingObserved>()?)?;
            return self.observed(&event.id, finding).await;
        }
        if event.event_type == FindingCleared::full_name() {
            return self
                .cleared(&event.id, event.decode::<FindingCleared>()?)
                .await;
        }
        Err(HandlerError::Rejected(format!(
            "unexpected event type {}",
            event.event_type
        )))
    }
}
