//! The webhook event types a partner can subscribe to, and how each event becomes a webhook body:
//! `{"type", "timestamp", "data"}` with data in canonical protobuf JSON (Standard Webhooks payload).

use chrono::SecondsFormat;
use picket_platform::nats::InboundEvent;
use picket_platform::nats::envelope::EnvelopeError;
use picket_proto::Event;
use picket_proto::incidents::v1 as incidents;
use picket_proto::notifications::v1 as notifications;
use prost::Name;

/// A webhook ready to deliver.
#[derive(Debug, Clone, PartialEq)]
pub struct Webhook {
    pub event_type: &'static str,
    pub partner_id: String,
    pub tenant_id: String,
    pub body: String,
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
        body: body.to_string(),
    })
}

macro_rules! webhook_catalog {
    ($($event_type:literal => $message:ty),+ $(,)?) => {
        /// Every webhook event type the notifier delivers today.
        pub const EVENT_TYPES: &[&str] = &[$($event_type),+];

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
    "incident.opened" => incidents::IncidentOpened,
    "incident.decided" => incidents::IncidentDecided,
    "incident.reopened" => incidents::IncidentReopened,
    "incident.resolved" => incidents::IncidentResolved,
    "incident.escalated" => incidents::IncidentEscalated,
    "recommendation.queued" => incidents::RecommendationQueued,
    "theme.launched" => incidents::ThemeLaunched,
    "endpoint.disabled" => notifications::EndpointDisabled,
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
