//! The prioritizer's consumers: findings from the scanner, fix results, and onboarded tenants.
//! Each event becomes a command applied through the intake, once (inbox), in order per tenant.
//! An event that can never be applied is dead-lettered with the reason; a valid event that no
//! longer applies (a stale fix result) is acknowledged and logged.

use picket_platform::db::group_commit::GroupCommit;
use picket_platform::nats::{EventHandler, HandlerError, InboundEvent};
use picket_platform::offboarding::{Purge, Purger};
use picket_platform::time::from_timestamp;
use picket_proto::findings::v1::{FindingCleared, FindingObserved};
use picket_proto::fixes::v1::{FixApplied, FixFailed, FixRequested};
use picket_proto::offboarding::v1::{OffboardingCancelled, OffboardingRequested, PurgeRequested};
use picket_proto::tenants::v1::TenantOnboarded;
use prost::Name;
use uuid::Uuid;

use crate::model::{Kind, Severity};
use crate::processor::{Command, Finding, Job, Outcome, Processor};

/// Consumed events are applied in batches, one transaction for many tenants' events.
pub type Intake = GroupCommit<Processor>;
use crate::store::TenantKey;
use crate::themes::Themes;

pub const FINDINGS: &str = "prioritizer-findings";
pub const FIXES: &str = "prioritizer-fixes";
pub const TENANTS: &str = "prioritizer-tenants";

fn required(value: &str, field: &str) -> Result<(), HandlerError> {
    if value.trim().is_empty() {
        return Err(HandlerError::Rejected(format!("{field} is required")));
    }
    Ok(())
}

fn tenant_key(partner_id: &str, tenant_id: &str) -> Result<TenantKey, HandlerError> {
    required(partner_id, "partner_id")?;
    required(tenant_id, "tenant_id")?;
    Ok(TenantKey::new(partner_id, tenant_id))
}

fn uuid(value: &str, field: &str) -> Result<Uuid, HandlerError> {
    Uuid::parse_str(value)
        .map_err(|_| HandlerError::Rejected(format!("{field}: {value:?} is not a UUID")))
}

/// Validates a FindingObserved; an invalid one can never be applied and is dead-lettered.
pub fn finding_from_event(
    event: FindingObserved,
    themes: &Themes,
) -> Result<Finding, HandlerError> {
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
    // Suspicious behaviour is raised whatever its theme; a recommendation waits for its theme.
    let theme_order = match (kind, themes.order_of(&event.theme)) {
        (_, Some(order)) => order,
        (Kind::Monitoring, None) => themes.count(),
        (Kind::Configuration, None) => {
            return Err(HandlerError::Rejected(format!(
                "theme {:?} is not in the catalogue",
                event.theme
            )));
        }
    };
    Ok(Finding {
        fingerprint: event.fingerprint,
        check_id: event.check_id,
        kind,
        severity,
        title: event.title,
        description: event.description,
        target: event.target,
        target_type: event.target_type,
        target_id: event.target_id,
        theme: event.theme,
        theme_order,
        recommended_fix: event.recommended_fix,
        fix_action: event.fix_action,
        fix_parameters: event.fix_parameters,
        evidence: event.evidence,
        scan_id: event.scan_id,
        observed_at,
    })
}

/// Applies a job built from an event; a refusal is logged, not retried.
async fn submit(
    intake: &Intake,
    consumer: &'static str,
    event: &InboundEvent,
    key: TenantKey,
    command: Command,
) -> Result<(), HandlerError> {
    let job = Job::consumed(key, command, consumer, &event.id);
    if let Outcome::Refused(refused) = intake.submit(job).await? {
        tracing::info!(event_id = %event.id, %refused, "event no longer applies");
    }
    Ok(())
}

fn unexpected(event: &InboundEvent) -> HandlerError {
    HandlerError::Rejected(format!("unexpected event type {}", event.event_type))
}

pub struct FindingsHandler {
    intake: Intake,
    themes: Themes,
}

impl FindingsHandler {
    pub fn new(intake: Intake, themes: Themes) -> FindingsHandler {
        FindingsHandler { intake, themes }
    }
}

impl EventHandler for FindingsHandler {
    async fn handle(&self, event: InboundEvent) -> Result<(), HandlerError> {
        if event.event_type == FindingObserved::full_name() {
            let observed = event.decode::<FindingObserved>()?;
            let key = tenant_key(&observed.partner_id, &observed.tenant_id)?;
            let finding = finding_from_event(observed, &self.themes)?;
            return submit(
                &self.intake,
                FINDINGS,
                &event,
                key,
                Command::Observed(Box::new(finding)),
            )
            .await;
        }
        if event.event_type == FindingCleared::full_name() {
            let cleared = event.decode::<FindingCleared>()?;
            let key = tenant_key(&cleared.partner_id, &cleared.tenant_id)?;
            required(&cleared.fingerprint, "fingerprint")?;
            let command = Command::Cleared {
                fingerprint: cleared.fingerprint,
                scan_id: cleared.scan_id,
            };
            return submit(&self.intake, FINDINGS, &event, key, command).await;
        }
        Err(unexpected(&event))
    }
}

pub struct FixesHandler {
    intake: Intake,
}

impl FixesHandler {
    pub fn new(intake: Intake) -> FixesHandler {
        FixesHandler { intake }
    }
}

impl EventHandler for FixesHandler {
    async fn handle(&self, event: InboundEvent) -> Result<(), HandlerError> {
        if event.event_type == FixApplied::full_name() {
            let applied = event.decode::<FixApplied>()?;
            let key = tenant_key(&applied.partner_id, &applied.tenant_id)?;
            let command = Command::FixApplied {
                incident_id: uuid(&applied.incident_id, "incident_id")?,
                fix_id: uuid(&applied.fix_id, "fix_id")?,
                summary: if applied.summary.is_empty() {
                    "the fix was applied".into()
                } else {
                    applied.summary
                },
            };
            return submit(&self.intake, FIXES, &event, key, command).await;
        }
        if event.event_type == FixFailed::full_name() {
            let failed = event.decode::<FixFailed>()?;
            let key = tenant_key(&failed.partner_id, &failed.tenant_id)?;
            let command = Command::FixFailed {
                incident_id: uuid(&failed.incident_id, "incident_id")?,
                fix_id: uuid(&failed.fix_id, "fix_id")?,
                reason: failed.reason,
                detail: failed.reason_detail,
            };
            return submit(&self.intake, FIXES, &event, key, command).await;
        }
        // The prioritizer's own requests share the area (one filter per consumer on this server).
        if event.event_type == FixRequested::full_name() {
            return Ok(());
        }
        Err(unexpected(&event))
    }
}

pub struct TenantsHandler {
    intake: Intake,
}

impl TenantsHandler {
    pub fn new(intake: Intake) -> TenantsHandler {
        TenantsHandler { intake }
    }
}

impl EventHandler for TenantsHandler {
    async fn handle(&self, event: InboundEvent) -> Result<(), HandlerError> {
        if event.event_type == TenantOnboarded::full_name() {
            let onboarded = event.decode::<TenantOnboarded>()?;
            let key = tenant_key(&onboarded.partner_id, &onboarded.tenant_id)?;
            return submit(&self.intake, TENANTS, &event, key, Command::Onboarded).await;
        }
        // Other tenant events (consent, scans, disconnection) do not concern the policy yet.
        Ok(())
    }
}

pub const OFFBOARDING: &str = "prioritizer-offboarding";

/// The prioritizer's tables of a tenant, children first. An auto-approve rule that named only
/// this tenant goes; one that named others too forgets it.
pub const PURGES: &[Purge] = &[
    Purge {
        table: "prioritizer.decisions",
        sql: "DELETE FROM decisions d USING incidents i
              WHERE d.incident_id = i.incident_id AND i.tenant_id = $1 AND i.partner_id = $2",
    },
    Purge {
        table: "prioritizer.incident_timeline",
        sql: "DELETE FROM incident_timeline t USING incidents i
              WHERE t.incident_id = i.incident_id AND i.tenant_id = $1 AND i.partner_id = $2",
    },
    Purge {
        table: "prioritizer.incidents",
        sql: "DELETE FROM incidents WHERE tenant_id = $1 AND partner_id = $2",
    },
    Purge {
        table: "prioritizer.recommendations",
        sql: "DELETE FROM recommendations WHERE tenant_id = $1 AND partner_id = $2",
    },
    Purge {
        table: "prioritizer.theme_launches",
        sql: "DELETE FROM theme_launches WHERE tenant_id = $1 AND partner_id = $2",
    },
    Purge {
        table: "prioritizer.auto_approve_rules",
        sql: "DELETE FROM auto_approve_rules
              WHERE partner_id = $2 AND NOT all_tenants AND tenant_ids = ARRAY[$1]",
    },
    Purge {
        table: "prioritizer.auto_approve_rules (tenant removed)",
        sql: "UPDATE auto_approve_rules SET tenant_ids = array_remove(tenant_ids, $1)
              WHERE partner_id = $2 AND $1 = ANY(tenant_ids)",
    },
    Purge {
        table: "prioritizer.customer_grants",
        sql: "DELETE FROM customer_grants WHERE tenant_id = $1 AND partner_id = $2",
    },
    Purge {
        table: "prioritizer.authority_map_changes",
        sql: "DELETE FROM authority_map_changes WHERE tenant_id = $1 AND partner_id = $2",
    },
    Purge {
        table: "prioritizer.authority_maps",
        sql: "DELETE FROM authority_maps WHERE tenant_id = $1 AND partner_id = $2",
    },
    Purge {
        table: "prioritizer.authority_map_versions",
        sql: "DELETE FROM authority_map_versions WHERE tenant_id = $1 AND partner_id = $2",
    },
    Purge {
        table: "prioritizer.investigator_engagements",
        sql: "DELETE FROM investigator_engagements WHERE tenant_id = $1 AND partner_id = $2",
    },
    Purge {
        table: "prioritizer.tenants",
        sql: "DELETE FROM tenants WHERE tenant_id = $1 AND partner_id = $2",
    },
];

/// The offboarding area: a tenant offboarded (its incidents close, its queue empties) or given
/// back, and its purge.
pub struct OffboardingHandler {
    intake: Intake,
    purger: Purger,
}

impl OffboardingHandler {
    pub fn new(intake: Intake, purger: Purger) -> OffboardingHandler {
        OffboardingHandler { intake, purger }
    }
}

fn offboarding_id(id: &str) -> Result<Uuid, HandlerError> {
    Uuid::parse_str(id)
        .map_err(|_| HandlerError::Rejected(format!("offboarding_id {id:?} is not a UUID")))
}

impl EventHandler for OffboardingHandler {
    async fn handle(&self, event: InboundEvent) -> Result<(), HandlerError> {
        if event.event_type == OffboardingRequested::full_name() {
            let requested = event.decode::<OffboardingRequested>()?;
            let key = tenant_key(&requested.partner_id, &requested.tenant_id)?;
            let command = Command::Offboarded {
                offboarding_id: offboarding_id(&requested.offboarding_id)?,
            };
            submit(&self.intake, OFFBOARDING, &event, key, command).await
        } else if event.event_type == OffboardingCancelled::full_name() {
            let cancelled = event.decode::<OffboardingCancelled>()?;
            let key = tenant_key(&cancelled.partner_id, &cancelled.tenant_id)?;
            let command = Command::OffboardingCancelled {
                offboarding_id: offboarding_id(&cancelled.offboarding_id)?,
            };
            submit(&self.intake, OFFBOARDING, &event, key, command).await
        } else if event.event_type == PurgeRequested::full_name() {
            self.purger.handle(&event).await
        } else {
            Ok(())
        }
    }
}
