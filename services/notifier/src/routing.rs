//! Consumes the events partners hear of and turns each into one pending delivery per subscribed
//! endpoint, in the transaction that records the event in the inbox: once per change.

use chrono::Utc;
use picket_platform::db::inbox;
use picket_platform::nats::{EventHandler, HandlerError, InboundEvent};
use sqlx::PgPool;

use crate::catalog;
use crate::store;

/// Durable consumer names, also the inbox keys.
pub const CONSUMER: &str = "notifier-incidents";
pub const NOTICES_CONSUMER: &str = "notifier-notices";

pub struct RoutingHandler {
    pool: PgPool,
    /// The consumer it handles for, its inbox key.
    consumer: &'static str,
}

impl RoutingHandler {
    pub fn new(pool: PgPool, consumer: &'static str) -> RoutingHandler {
        RoutingHandler { pool, consumer }
    }
}

impl EventHandler for RoutingHandler {
    async fn handle(&self, event: InboundEvent) -> Result<(), HandlerError> {
        let Some(webhook) = catalog::webhook_for(&event)? else {
            // Not an event partners are told of (for example an authority map change).
            return Ok(());
        };
        let mut transaction = self.pool.begin().await?;
        if !inbox::first_delivery(&mut transaction, self.consumer, &event.id).await? {
            return Ok(());
        }
        let created = store::fan_out(
            &mut transaction,
            &webhook.partner_id,
            &webhook.tenant_id,
            &event.id,
            webhook.event_type,
            &webhook.body,
            Utc::now(),
        )
        .await?;
        transaction.commit().await?;
        tracing::debug!(
            event_type = webhook.event_type,
            deliveries = created,
            "event routed"
        );
        Ok(())
    }
}
