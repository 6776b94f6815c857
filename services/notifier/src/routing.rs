//! Consumes the events partners hear of and turns each into one delivery per subscribed endpoint,
//! in the transaction that records the event in the inbox: once per change. Events are routed in
//! batches (one transaction for many), and the deliveries a batch creates go straight to the
//! delivery worker, leased to this process so that no other worker claims them meanwhile.

use chrono::Utc;
use picket_platform::db::group_commit::{BatchApplier, GroupCommit};
use picket_platform::db::inbox;
use picket_platform::nats::{EventHandler, HandlerError, InboundEvent};
use picket_platform::offboarding::{Purge, Purger};
use picket_proto::incidents::v1::AuthorityMapChanged;
use picket_proto::notifications::v1 as notifications;
use picket_proto::offboarding::v1::{OffboardingCancelled, OffboardingRequested, PurgeRequested};
use picket_proto::{Area, Event};
use prost::Name;
use sqlx::PgPool;

use crate::authority;
use crate::catalog::{self, Webhook};
use crate::store;
use crate::worker::{Dispatcher, dispatches};

/// The durable consumer of each area partners hear of (its name is also its inbox key), and the
/// one event it is limited to, if any: of its own area the notifier routes only an endpoint
/// disabled, not the notice of every delivery it made.
pub const CONSUMERS: [(&str, Area, Option<&str>); 5] = [
    ("notifier-tenants", Area::Tenants, None),
    ("notifier-incidents", Area::Incidents, None),
    (
        "notifier-endpoints",
        Area::Notifications,
        Some(notifications::EndpointDisabled::TOKEN),
    ),
    ("notifier-ledger", Area::Ledger, None),
    ("notifier-offboarding", Area::Offboarding, None),
];

/// One consumed event to route.
#[derive(Debug, Clone)]
pub struct Route {
    consumer: &'static str,
    event_id: String,
    webhook: Webhook,
    /// What it changes in which tenants are being offboarded.
    offboarding: Option<Offboarding>,
}

/// An offboarding event's effect on routing.
#[derive(Debug, Clone)]
enum Offboarding {
    /// The tenant's events are no longer routed.
    Started(uuid::Uuid),
    /// They are again.
    Cancelled,
}

/// The offboarding notices reach the partner even while its tenant's other events do not.
fn offboarding_notice(webhook: &Webhook) -> bool {
    webhook.event_type.starts_with("offboarding.")
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
        for (consumer, _, _) in CONSUMERS {
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
        for route in &fresh {
            match &route.offboarding {
                Some(Offboarding::Started(offboarding_id)) => {
                    store::stop_routing(&mut transaction, &route.webhook, *offboarding_id, now)
                        .await?;
                }
                Some(Offboarding::Cancelled) => {
                    store::resume_routing(&mut transaction, &route.webhook.tenant_id).await?;
                }
                None => {}
            }
        }
        let tenant_ids: Vec<&str> = fresh
            .iter()
            .map(|route| route.webhook.tenant_id.as_str())
            .filter(|tenant_id| !tenant_id.is_empty())
            .collect();
        let offboarded = store::offboarded(&mut transaction, &tenant_ids).await?;
        let leased_until =
            now + chrono::Duration::from_std(self.lease).unwrap_or(chrono::Duration::MAX);
        let webhooks: Vec<(&str, &Webhook)> = fresh
            .iter()
            .filter(|route| {
                offboarding_notice(&route.webhook) || !offboarded.contains(&route.webhook.tenant_id)
            })
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

/// The notifier's tables of a tenant, children first. The offboarding's own notices and their
/// attempts are kept: they are the partner's record that its customer's data was removed.
pub const PURGES: &[Purge] = &[
    Purge {
        table: "notifier.delivery_attempts",
        sql: "DELETE FROM delivery_attempts a USING deliveries d
              WHERE a.delivery_id = d.delivery_id AND d.tenant_id = $1 AND d.partner_id = $2
                AND d.event_type NOT LIKE 'offboarding.%'",
    },
    Purge {
        table: "notifier.deliveries",
        sql: "DELETE FROM deliveries WHERE tenant_id = $1 AND partner_id = $2
                AND event_type NOT LIKE 'offboarding.%'",
    },
    Purge {
        table: "notifier.webhook_endpoints",
        sql: "DELETE FROM webhook_endpoints WHERE tenant_id = $1 AND partner_id = $2",
    },
    Purge {
        table: "notifier.email_recipients",
        sql: "DELETE FROM email_recipients WHERE tenant_id = $1 AND partner_id = $2",
    },
    Purge {
        table: "notifier.authority_routes",
        sql: "DELETE FROM authority_routes WHERE tenant_id = $1 AND partner_id = $2",
    },
    Purge {
        table: "notifier.authority_scopes",
        sql: "DELETE FROM authority_scopes WHERE tenant_id = $1 AND partner_id = $2",
    },
    Purge {
        table: "notifier.offboarded_tenants",
        sql: "DELETE FROM offboarded_tenants WHERE tenant_id = $1 AND partner_id = $2",
    },
];

/// The consumers' handler: an event partners hear of is routed with others; the offboarding
/// area's PurgeRequested purges the tenant.
pub struct RoutingHandler {
    pool: PgPool,
    routes: GroupCommit<Router>,
    consumer: &'static str,
    purger: Option<Purger>,
}

impl RoutingHandler {
    pub fn new(
        pool: PgPool,
        routes: GroupCommit<Router>,
        consumer: &'static str,
        purger: Option<Purger>,
    ) -> RoutingHandler {
        RoutingHandler {
            pool,
            routes,
            consumer,
            purger,
        }
    }
}

impl EventHandler for RoutingHandler {
    async fn handle(&self, event: InboundEvent) -> Result<(), HandlerError> {
        if let Some(purger) = &self.purger
            && event.event_type == PurgeRequested::full_name()
        {
            return purger.handle(&event).await;
        }
        if event.event_type == AuthorityMapChanged::full_name() {
            return authority::map_changed(&self.pool, self.consumer, &event).await;
        }
        let offboarding = if event.event_type == OffboardingRequested::full_name() {
            let requested: OffboardingRequested = event.decode()?;
            let offboarding_id = uuid::Uuid::parse_str(&requested.offboarding_id)
                .map_err(|_| HandlerError::Rejected("offboarding_id is not a UUID".into()))?;
            Some(Offboarding::Started(offboarding_id))
        } else if event.event_type == OffboardingCancelled::full_name() {
            Some(Offboarding::Cancelled)
        } else {
            None
        };
        let Some(webhook) = catalog::webhook_for(&event)? else {
            // Not an event partners are told of (for example an authority map change).
            return Ok(());
        };
        self.routes
            .submit(Route {
                consumer: self.consumer,
                event_id: event.id,
                webhook,
                offboarding,
            })
            .await
    }
}
