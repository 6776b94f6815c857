//! Consumes the events partners hear of and turns each into one pending delivery per subscribed
//! endpoint, in the transaction that records the event in the inbox: once per change.

use chrono::Utc;
use picket_platform::db::inbox;
use picket_platform::nats::{EventHandler, HandlerError, InboundEvent};
use sqlx::PgPool;

use crate::catalog;
use crate::store;

/// Durable consumer name, also the inbox key.
pub const CONSUMER: &str = "notifier-incidents";

pub struct RoutingHandler {
    pool: PgPool,
}

impl RoutingHandler {
    pub fn new(pool: PgPool) -> RoutingHandler {
        RoutingHandler { pool }
    }
}

impl EventHandler for RoutingHandler {
    async fn handle(&self, event: InboundEvent) -> Result<(), HandlerError> {
        let Some(webhook) = catalog::webhook_for(&event)? else {
            // Not an event partners are told of (for example an authority map change).
            return Ok(());
        };
        let mut transaction = self.pool.begin().await?;
        if !inbox::first_delivery(&mut transaction, CONSUMER, &event.id).await? {
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
