//! Consumes the events partners hear of and turns each into one delivery per subscribed endpoint,
//! in the transaction that records the event in the inbox: once per change. Events are routed in
//! batches (one transaction for many), and the deliveries a batch creates go straight to the
//! delivery worker, leased to this process so that no other worker claims them meanwhile.

use chrono::Utc;
use picket_platform::db::group_commit::{BatchApplier, GroupCommit};
use picket_platform::db::inbox;
use picket_platform::nats::{EventHandler, HandlerError, InboundEvent};
use picket_proto::Area;
use sqlx::PgPool;

use crate::catalog::{self, Webhook};
use crate::store;
use crate::worker::{Dispatcher, dispatches};

/// The durable consumer of each area partners hear of (its name is also its inbox key).
pub const CONSUMERS: [(&str, Area); 5] = [
    ("notifier-tenants", Area::Tenants),
    ("notifier-incidents", Area::Incidents),
    ("notifier-notices", Area::Notifications),
    ("notifier-ledger", Area::Ledger),
    ("notifier-offboarding", Area::Offboarding),
];

/// One consumed event to route.
#[derive(Debug, Clone)]
pub struct Route {
    consumer: &'static str,
    event_id: String,
    webhook: Webhook,
}

/// Routes batches of events to deliveries.
pub struct Router {
    pool: PgPool,
    dispatcher: Dispatcher,
    /// How long a new delivery is leased to this process's worker.
    lease: std::time::Duration,
}

impl Router {
    pub fn new(pool: PgPool, dispatcher: Dispatcher, lease: std::time::Duration) -> Router {
        Router {
            pool,
            dispatcher,
            lease,
        }
    }
}

impl BatchApplier for Router {
    type Job = Route;
    type Outcome = ();
    type Error = sqlx::Error;

    async fn apply(&self, routes: Vec<Route>) -> Result<Vec<()>, sqlx::Error> {
        let now = Utc::now();
        let mut transaction = self.pool.begin().await?;
        let mut fresh = Vec::with_capacity(routes.len());
        for (consumer, _) in CONSUMERS {
            let event_ids: Vec<String> = routes
                .iter()
                .filter(|route| route.consumer == consumer)
                .map(|route| route.event_id.clone())
                .collect();
            if event_ids.is_empty() {
                continue;
            }
            let first = inbox::first_deliveries(&mut transaction, consumer, &event_ids).await?;
            fresh.extend(
                routes
                    .iter()
                    .filter(|route| route.consumer == consumer && first.contains(&route.event_id)),
            );
        }
        let leased_until =
            now + chrono::Duration::from_std(self.lease).unwrap_or(chrono::Duration::MAX);
        let webhooks: Vec<(&str, &Webhook)> = fresh
            .iter()
            .map(|route| (route.event_id.as_str(), &route.webhook))
            .collect();
        let created = store::fan_out(&mut transaction, &webhooks, now, leased_until).await?;
        let dispatches = dispatches(&mut transaction, created).await?;
        transaction.commit().await?;
        if !dispatches.is_empty() {
            tracing::debug!(
                events = fresh.len(),
                deliveries = dispatches.len(),
                "events routed"
            );
        }
        for dispatch in dispatches {
            self.dispatcher.dispatch(dispatch).await;
        }
        Ok(vec![(); routes.len()])
    }
}

/// The consumers' handler: an event partners hear of is routed with others.
pub struct RoutingHandler {
    routes: GroupCommit<Router>,
    consumer: &'static str,
}

impl RoutingHandler {
    pub fn new(routes: GroupCommit<Router>, consumer: &'static str) -> RoutingHandler {
        RoutingHandler { routes, consumer }
    }
}

impl EventHandler for RoutingHandler {
    async fn handle(&self, event: InboundEvent) -> Result<(), HandlerError> {
        let Some(webhook) = catalog::webhook_for(&event)? else {
            // Not an event partners are told of (for example an authority map change).
            return Ok(());
        };
        self.routes
            .submit(Route {
                consumer: self.consumer,
                event_id: event.id,
                webhook,
            })
            .await
    }
}
