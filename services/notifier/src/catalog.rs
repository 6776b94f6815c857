//! The webhook event types a partner can subscribe to, and how each event becomes a webhook body:
//! `{"type", "timestamp", "data"}` with data in canonical protobuf JSON (Standard Webhooks payload).

use chrono::SecondsFormat;
use picket_platform::nats::InboundEvent;
use picket_platform::nats::envelope::EnvelopeError;
use picket_proto::Event;
use picket_proto::incidents::v1 as incidents;
use picket_proto::ledger::v1 as ledger;
use picket_proto::notifications::v1 as notifications;
use picket_proto::offboarding::v1 as offboarding;
use picket_proto::tenants::v1 as tenants;
use prost::Name;

/// A webhook ready to deliver (its body is also what an e-mail is written from).
#[derive(Debug, Clone, PartialEq)]
pub struct Webhook {
    pub event_type: &'static str,
    pub partner_id: String,
    pub tenant_id: String,
    pub body: String,
    /// The incident's `picket.common.v1.Severity`, 0 for events that have none.
    pub severity: i32,
    /// Addresses the event itself asks to e-mail, beside the partner's own channels: a consent
    /// request forwarded to a customer's administrator, or the owner an incident escalated to.
    pub direct_emails: Vec<String>,
    /// The change it tells of; a destination hears of each change once.
    pub change_key: String,
}

/// An incident's change is named by the incident and its version (raised on every change), so
/// the same change told twice, under any event id, is delivered once; other events by their id.
fn change_key(event_type: &str, event_id: &str, data: &serde_json::Value) -> String {
    let incident = &data["incident"];
    match (incident["incidentId"].as_str(), &incident["version"]) {
        (Some(incident_id), version) if !version.is_null() => {
            let version = version
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| version.to_string());
            format!("{event_type}:{incident_id}:v{version}")
        }
        _ => format!("event:{event_id}"),
    }
}

/// The severity an event's data carries (its incident's, or its own), 0 when none.
fn severity_of(data: &serde_json::Value) -> i32 {
    [&data["incident"]["severity"], &data["severity"]]
        .into_iter()
        .find_map(|value| value.as_str())
        .and_then(picket_proto::common::v1::Severity::from_str_name)
        .map_or(0, i32::from)
}

/// The addresses an event names to e-mail: a forwarded consent request's administrator, or the
/// e-mail contacts of the owner an incident escalated to (those of the step's channels).
fn direct_emails(event_type: &str, data: &serde_json::Value) -> Vec<String> {
    match event_type {
        "tenant.consent_forwarded" => data["recipientEmail"]
            .as_str()
            .filter(|address| !address.is_empty())
            .map(str::to_owned)
            .into_iter()
            .collect(),
        "incident.escalated" => {
            let channels: Vec<&str> = data["step"]["channels"]
                .as_array()
                .map(|channels| {
                    channels
                        .iter()
                        .filter_map(|channel| channel.as_str())
                        .collect()
                })
                .unwrap_or_default();
            let email = "CONTACT_CHANNEL_EMAIL";
            if !channels.is_empty() && !channels.contains(&email) {
                return Vec::new();
            }
            let mut addresses: Vec<String> = data["owner"]["contacts"]
                .as_array()
                .map(|contacts| {
                    contacts
                        .iter()
                        .filter(|contact| contact["channel"].as_str() == Some(email))
                        .filter_map(|contact| contact["address"].as_str())
                        .filter(|address| !address.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            addresses.sort();
            addresses.dedup();
            addresses
        }
        _ => Vec::new(),
    }
}

fn webhook<E: Event + serde::Serialize>(
    event_type: &'static str,
    inbound: &InboundEvent,
) -> Result<Webhook, EnvelopeError> {
    let message: E = inbound.decode()?;
    let body = serde_json::json!({
        "type": event_type,
        "timestamp": inbound.time.to_rfc3339_opts(SecondsFormat::Millis, true),
        "data": message,
    });
    Ok(Webhook {
        event_type,
        partner_id: message.partner_id().to_owned(),
        tenant_id: message.tenant_id().to_owned(),
        severity: severity_of(&body["data"]),
        change_key: change_key(event_type, &inbound.id, &body["data"]),
        direct_emails: direct_emails(event_type, &body["data"]),
        body: body.to_string(),
    })
}

macro_rules! webhook_catalog {
    ($($event_type:literal => $message:ty, $description:literal;)+) => {
        /// Every webhook event type the notifier delivers today.
        pub const EVENT_TYPES: &[&str] = &[$($event_type),+];

        /// The catalogue as ChannelService.ListEventTypes shows it.
        pub fn event_types() -> Vec<notifications::EventType> {
            let channels = vec![
                notifications::DeliveryChannel::Webhook.into(),
                notifications::DeliveryChannel::Email.into(),
            ];
            vec![$(
                notifications::EventType {
                    name: $event_type.to_owned(),
                    description: $description.to_owned(),
                    message_type: <$message>::full_name(),
                    channels: channels.clone(),
                }
            ),+]
        }

        /// The webhook for an inbound event, `None` for an event partners are not told of.
        pub fn webhook_for(inbound: &InboundEvent) -> Result<Option<Webhook>, EnvelopeError> {
            $(
                if inbound.event_type == <$message>::full_name() {
                    return webhook::<$message>($event_type, inbound).map(Some);
                }
            )+
            Ok(None)
        }
    };
}

webhook_catalog! {
    "tenant.onboarded" => tenants::TenantOnboarded, "A tenant was onboarded and consented.";
    "tenant.consent_forwarded" => tenants::ConsentRequestForwarded, "A consent request was forwarded to a customer's administrator (who is e-mailed it).";
    "tenant.disconnected" => tenants::TenantDisconnected, "A tenant was disconnected from Picket.";
    "incident.opened" => incidents::IncidentOpened, "An incident was opened: suspicious behaviour, or a recommendation past its theme and the cap.";
    "incident.decided" => incidents::IncidentDecided, "A decision was recorded on an incident: approve, mute, ignore or unignore.";
    "incident.reopened" => incidents::IncidentReopened, "An incident was reopened, for example after its fix failed.";
    "incident.resolved" => incidents::IncidentResolved, "An incident was resolved: fixed, verified, or closed.";
    "incident.escalated" => incidents::IncidentEscalated, "An incident stayed undecided past the time set for its severity.";
    "recommendation.queued" => incidents::RecommendationQueued, "A recommendation waits behind the cap of open incidents.";
    "theme.launched" => incidents::ThemeLaunched, "A theme of recommendations was launched for a tenant (Theme Tuesday).";
    "endpoint.disabled" => notifications::EndpointDisabled, "A webhook endpoint was disabled: 410 Gone, failing for 5 days, or by the partner.";
    "credits.purchased" => ledger::CreditsPurchased, "A pack of incident-response credits was bought.";
    "credits.debited" => ledger::CreditsDebited, "Investigation work was paid from the credits.";
    "credits.balance_low" => ledger::BalanceLow, "The credits available fell below the partner's threshold.";
    "credits.expired" => ledger::CreditsExpired, "Unused credits of a pack expired.";
    "engagement.opened" => ledger::EngagementOpened, "An incident-response engagement was opened.";
    "engagement.closed" => ledger::EngagementClosed, "An incident-response engagement was closed.";
    "offboarding.scheduled" => offboarding::OffboardingRequested, "A tenant is being offboarded; its data removal is scheduled.";
    "offboarding.completed" => offboarding::OffboardingCompleted, "A tenant's data was removed, with a deletion certificate.";
    "offboarding.cancelled" => offboarding::OffboardingCancelled, "A tenant's offboarding was cancelled before the purge.";
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use picket_platform::nats::{OutgoingEvent, Subjects};

    #[test]
    fn incident_opened_becomes_a_standard_webhook_body() {
        let subjects = Subjects::new("picket");
        let opened = incidents::IncidentOpened {
            partner_id: "p1".into(),
            tenant_id: "t1".into(),
            incident: Some(incidents::Incident {
                incident_id: "i1".into(),
                title: "Impossible travel".into(),
                ..Default::default()
            }),
        };
        let outgoing =
            OutgoingEvent::new(&subjects, "prioritizer", &opened, Utc::now()).expect("valid");
        let inbound = InboundEvent::parse(
            &subjects,
            &outgoing.subject,
            Some(&outgoing.headers()),
            outgoing.payload.clone().into(),
            1,
        )
        .expect("parses");
        let webhook = webhook_for(&inbound)
            .expect("decodes")
            .expect("partners hear of it");
        let body: serde_json::Value = serde_json::from_str(&webhook.body).expect("json");
        assert_eq!(body["type"], "incident.opened");
        assert_eq!(body["data"]["tenantId"], "t1");
        assert_eq!(body["data"]["incident"]["title"], "Impossible travel");
        assert!(
            body["timestamp"]
                .as_str()
                .is_some_and(|timestamp| timestamp.ends_with('Z'))
        );
    }
}
