//! Routing by the authority map: the notifier keeps, from AuthorityMapChanged, who each partner's
//! map (or a tenant's deviation) says must hear of each kind of incident event, and adds them to
//! the partner's own channels: the stage's informed owners, and for an opening or a resolution
//! the owners who communicate with the client. E-mail contacts get the e-mail; webhook contacts
//! name one of the partner's endpoints, which gets the event whatever its filter.

use picket_platform::db::inbox;
use picket_platform::nats::{HandlerError, InboundEvent};
use picket_proto::incidents::v1::{
    AuthorityMap, AuthorityMapChanged, AuthorityStage, ContactChannel, StageAssignment,
};
use sqlx::PgPool;

/// The stages whose informed owners hear of an event type, and whether the client
/// communication owners do too.
fn stages(event_type: &str) -> Option<(AuthorityStage, bool)> {
    match event_type {
        "incident.opened" | "incident.reopened" => Some((AuthorityStage::DetectionAndTriage, true)),
        "incident.escalated" => Some((AuthorityStage::Escalation, false)),
        "incident.decided" => Some((AuthorityStage::ContainmentDecision, false)),
        "incident.resolved" => Some((AuthorityStage::DocumentationAndReporting, true)),
        _ => None,
    }
}

/// Event types routed by the map.
pub const ROUTED: [&str; 5] = [
    "incident.opened",
    "incident.reopened",
    "incident.escalated",
    "incident.decided",
    "incident.resolved",
];

/// One route: (event type, owner, channel, address).
pub type Route = (String, String, &'static str, String);

/// The routes a map sets.
pub fn routes(map: &AuthorityMap) -> Vec<Route> {
    let assignment = |stage: AuthorityStage| -> Option<&StageAssignment> {
        map.stages
            .iter()
            .find(|assignment| assignment.stage() == stage)
    };
    let mut routes: Vec<Route> = Vec::new();
    for event_type in ROUTED {
        let Some((stage, client)) = stages(event_type) else {
            continue;
        };
        let mut owners: Vec<&String> = assignment(stage)
            .map(|assignment| assignment.informed_owner_ids.iter().collect())
            .unwrap_or_default();
        if client && let Some(communication) = assignment(AuthorityStage::ClientCommunication) {
            owners.extend(&communication.responsible_owner_ids);
            owners.extend(&communication.accountable_owner_ids);
        }
        for owner_id in owners {
            let Some(owner) = map.owners.iter().find(|owner| &owner.owner_id == owner_id) else {
                continue;
            };
            for contact in &owner.contacts {
                let channel = match contact.channel() {
                    ContactChannel::Email => "email",
                    ContactChannel::Webhook => "webhook",
                    _ => continue,
                };
                let address = contact.address.trim();
                if address.is_empty() {
                    continue;
                }
                let route = (
                    event_type.to_owned(),
                    owner_id.clone(),
                    channel,
                    address.to_owned(),
                );
                if !routes
                    .iter()
                    .any(|known| (&known.0, known.2, &known.3) == (&route.0, route.2, &route.3))
                {
                    routes.push(route);
                }
            }
        }
    }
    routes
}

/// Keeps the routes of the map an AuthorityMapChanged puts in force (once per event; an older
/// version than the one kept changes nothing).
pub async fn map_changed(
    pool: &PgPool,
    consumer: &str,
    event: &InboundEvent,
) -> Result<(), HandlerError> {
    let changed: AuthorityMapChanged = event.decode()?;
    let map = changed.map.unwrap_or_default();
    let version = changed
        .change
        .as_ref()
        .map_or(map.version, |change| change.version);
    let version = i64::try_from(version).unwrap_or(i64::MAX);
    let mut transaction = pool.begin().await?;
    if !inbox::first_delivery(&mut transaction, consumer, &event.id).await? {
        return Ok(());
    }
    let newer: bool = sqlx::query_scalar(
        "SELECT NOT EXISTS (SELECT 1 FROM authority_scopes
             WHERE partner_id = $1 AND tenant_id = $2 AND version >= $3)",
    )
    .bind(&changed.partner_id)
    .bind(&changed.tenant_id)
    .bind(version)
    .fetch_one(&mut *transaction)
    .await?;
    if newer {
        sqlx::query("DELETE FROM authority_scopes WHERE partner_id = $1 AND tenant_id = $2")
            .bind(&changed.partner_id)
            .bind(&changed.tenant_id)
            .execute(&mut *transaction)
            .await?;
        // A tenant's deviation removed puts the partner's map back in force for it: no scope of
        // its own then.
        let deviation_removed = !changed.tenant_id.is_empty() && map.tenant_id.is_empty();
        if !deviation_removed {
            sqlx::query(
                "INSERT INTO authority_scopes (partner_id, tenant_id, version) VALUES ($1, $2, $3)",
            )
            .bind(&changed.partner_id)
            .bind(&changed.tenant_id)
            .bind(version)
            .execute(&mut *transaction)
            .await?;
            let routes = routes(&map);
            sqlx::query(
                "INSERT INTO authority_routes (partner_id, tenant_id, event_type, owner_id, channel, address)
                 SELECT $1, $2, r.event_type, r.owner_id, r.channel, r.address
                 FROM unnest($3::text[], $4::text[], $5::text[], $6::text[])
                     AS r(event_type, owner_id, channel, address)
                 ON CONFLICT DO NOTHING",
            )
            .bind(&changed.partner_id)
            .bind(&changed.tenant_id)
            .bind(routes.iter().map(|route| route.0.as_str()).collect::<Vec<_>>())
            .bind(routes.iter().map(|route| route.1.as_str()).collect::<Vec<_>>())
            .bind(routes.iter().map(|route| route.2).collect::<Vec<_>>())
            .bind(routes.iter().map(|route| route.3.as_str()).collect::<Vec<_>>())
            .execute(&mut *transaction)
            .await?;
        }
        tracing::info!(partner_id = %changed.partner_id, tenant_id = %changed.tenant_id, version, "authority routes kept");
    }
    transaction.commit().await?;
    Ok(())
}
