//! NATS JetStream: subjects, stream provisioning, the CloudEvents envelope, publishing and the
//! consumer runner.

pub mod consumer;
pub mod envelope;
pub mod streams;
pub mod subjects;

pub use consumer::{Consumer, ConsumerSpec, EventHandler, HandlerError};
pub use envelope::{InboundEvent, OutgoingEvent};
pub use subjects::{EventSubject, Subjects};

use secrecy::ExposeSecret;

use crate::settings::NatsSettings;

/// How a service connects: named after it, as its own NATS user when one is configured.
pub fn connect_options(service: &str, settings: &NatsSettings) -> async_nats::ConnectOptions {
    let options = async_nats::ConnectOptions::new().name(format!("picket-{service}"));
    if settings.user.is_empty() {
        options
    } else {
        options.user_and_password(
            settings.user.clone(),
            settings.password.expose_secret().to_owned(),
        )
    }
}

/// Publishes an event straight to JetStream, waiting for the server's ack. Services publish through
/// their outbox; this is for the relay and for tools and tests.
pub async fn publish(
    jetstream: &async_nats::jetstream::Context,
    event: &OutgoingEvent,
) -> Result<async_nats::jetstream::publish::PublishAck, async_nats::Error> {
    let ack = jetstream
        .publish_with_headers(
            event.subject.clone(),
            event.headers(),
            event.payload.clone().into(),
        )
        .await?
        .await?;
    Ok(ack)
}
