//! The scanner's part in offboarding. On OffboardingRequested it disconnects the tenant: no more
//! scans (queued and running ones are cancelled), its tokens dropped, its consent link expired,
//! nothing changed in the customer's Microsoft 365; then it answers TenantDisconnected, again whenever it is asked again.
//! On OffboardingCancelled the tenant stays disconnected until the partner asks for a new consent
//! (RequestConsent). On PurgeRequested it deletes every row of the tenant.

use std::sync::Arc;

use chrono::Utc;
use picket_platform::db::{inbox, outbox};
use picket_platform::nats::{EventHandler, HandlerError, InboundEvent};
use picket_platform::offboarding::{Purge, Purger};
use picket_platform::time::to_timestamp;
use picket_proto::offboarding::v1 as offboarding;
use picket_proto::tenants::v1 as tenants;
use prost::Name;
use uuid::Uuid;

use crate::scans::runner::Scanning;

pub const CONSUMER: &str = "scanner-offboarding";

/// Every table of the tenant's, children first.
pub const PURGES: &[Purge] = &[
    Purge {
        table: "scanner.fixes",
        sql: "DELETE FROM fixes c USING tenants t
              WHERE c.tenant_id = t.tenant_id AND t.tenant_id = $1::uuid AND t.partner_id = $2",
    },
    Purge {
        table: "scanner.finding_occurrences",
        sql: "DELETE FROM finding_occurrences c USING tenants t
              WHERE c.tenant_id = t.tenant_id AND t.tenant_id = $1::uuid AND t.partner_id = $2",
    },
    Purge {
        table: "scanner.findings",
        sql: "DELETE FROM findings c USING tenants t
              WHERE c.tenant_id = t.tenant_id AND t.tenant_id = $1::uuid AND t.partner_id = $2",
    },
    Purge {
        table: "scanner.check_results",
        sql: "DELETE FROM check_results c USING tenants t
              WHERE c.tenant_id = t.tenant_id AND t.tenant_id = $1::uuid AND t.partner_id = $2",
    },
    Purge {
        table: "scanner.monitoring_windows",
        sql: "DELETE FROM monitoring_windows c USING tenants t
              WHERE c.tenant_id = t.tenant_id AND t.tenant_id = $1::uuid AND t.partner_id = $2",
    },
    Purge {
        table: "scanner.mailbox_rules",
        sql: "DELETE FROM mailbox_rules c USING tenants t
              WHERE c.tenant_id = t.tenant_id AND t.tenant_id = $1::uuid AND t.partner_id = $2",
    },
    Purge {
        table: "scanner.directory_users",
        sql: "DELETE FROM directory_users c USING tenants t
              WHERE c.tenant_id = t.tenant_id AND t.tenant_id = $1::uuid AND t.partner_id = $2",
    },
    Purge {
        table: "scanner.user_delta_links",
        sql: "DELETE FROM user_delta_links c USING tenants t
              WHERE c.tenant_id = t.tenant_id AND t.tenant_id = $1::uuid AND t.partner_id = $2",
    },
    Purge {
        table: "scanner.sign_in_countries",
        sql: "DELETE FROM sign_in_countries c USING tenants t
              WHERE c.tenant_id = t.tenant_id AND t.tenant_id = $1::uuid AND t.partner_id = $2",
    },
    Purge {
        table: "scanner.scans",
        sql: "DELETE FROM scans c USING tenants t
              WHERE c.tenant_id = t.tenant_id AND t.tenant_id = $1::uuid AND t.partner_id = $2",
    },
    Purge {
        table: "scanner.tenants",
        sql: "DELETE FROM tenants WHERE tenant_id = $1::uuid AND partner_id = $2",
    },
];

pub struct OffboardingHandler {
    scanning: Arc<Scanning>,
    purger: Purger,
    /// Answers for a tenant id that is not a UUID, which the scanner never held.
    nothing_held: Purger,
}

impl OffboardingHandler {
    pub fn new(scanning: Arc<Scanning>) -> OffboardingHandler {
        let purger = Purger::new(
            scanning.pool.clone(),
            scanning.events.clone(),
            crate::SERVICE,
            CONSUMER,
            PURGES,
        );
        let nothing_held = Purger::new(
            scanning.pool.clone(),
            scanning.events.clone(),
            crate::SERVICE,
            CONSUMER,
            &[],
        );
        OffboardingHandler {
            scanning,
            purger,
            nothing_held,
        }
    }

    async fn disconnect(&self, event: &InboundEvent) -> Result<(), HandlerError> {
        let request: offboarding::OffboardingRequested = event.decode()?;
        let now = Utc::now();
        let mut transaction = self.scanning.pool.begin().await?;
        if !inbox::first_delivery(&mut transaction, CONSUMER, &event.id).await? {
            return Ok(());
        }
        // A tenant id that is not a UUID is none of the scanner's: nothing to disconnect.
        let tenant_id = Uuid::parse_str(&request.tenant_id).ok();
        let disconnected: Option<(String,)> = sqlx::query_as(
            "UPDATE tenants SET state = 'disconnected', state_reason = 'offboarded: ' || $3,
                 disconnected_at = coalesce(disconnected_at, $4), next_configuration_scan_at = NULL,
                 next_monitoring_poll_at = NULL, consent_expires_at = least(consent_expires_at, $4),
                 updated_at = $4
             WHERE tenant_id = $1 AND partner_id = $2 RETURNING microsoft_tenant_id",
        )
        .bind(tenant_id)
        .bind(&request.partner_id)
        .bind(&request.reason)
        .bind(now)
        .fetch_optional(&mut *transaction)
        .await?;
        let cancelled = sqlx::query(
            "UPDATE scans SET state = 'cancelled', finished_at = $2, lease_until = NULL
             WHERE tenant_id = $1 AND state IN ('queued', 'running')",
        )
        .bind(tenant_id)
        .bind(now)
        .execute(&mut *transaction)
        .await?
        .rows_affected();
        if let Some((microsoft_tenant_id,)) = &disconnected {
            self.scanning.graph.forget_tenant(microsoft_tenant_id);
        }
        let answer = tenants::TenantDisconnected {
            partner_id: request.partner_id.clone(),
            tenant_id: request.tenant_id.clone(),
            offboarding_id: request.offboarding_id.clone(),
            disconnected_at: Some(to_timestamp(now)),
            tokens_dropped: disconnected.is_some(),
            scans_cancelled: u32::try_from(cancelled).unwrap_or(u32::MAX),
            reason: request.reason.clone(),
        };
        let answer = self
            .scanning
            .events
            .event(&answer, now)
            .map_err(|error| HandlerError::Rejected(error.to_string()))?;
        outbox::enqueue(&mut transaction, &answer).await?;
        transaction.commit().await?;
        tracing::info!(tenant_id = %request.tenant_id, scans_cancelled = cancelled, "tenant disconnected");
        Ok(())
    }
}

impl EventHandler for OffboardingHandler {
    async fn handle(&self, event: InboundEvent) -> Result<(), HandlerError> {
        if event.event_type == offboarding::OffboardingRequested::full_name() {
            self.disconnect(&event).await
        } else if event.event_type == offboarding::PurgeRequested::full_name() {
            let request: offboarding::PurgeRequested = event.decode()?;
            if Uuid::parse_str(&request.tenant_id).is_ok() {
                self.purger.handle(&event).await
            } else {
                self.nothing_held.handle(&event).await
            }
        } else {
            Ok(())
        }
    }
}
