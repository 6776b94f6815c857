//! `events tail`: Picket's events as they are published, decoded to JSON lines.

use clap::Subcommand;
use futures::StreamExt;
use picket_platform::nats::{InboundEvent, Subjects};
use picket_proto::{Area, Event, EventVisitor, decode_event};
use serde::Serialize;

use crate::Context;
use crate::output::write_stdout;

#[derive(Debug, Subcommand)]
pub enum EventCommand {
    /// Subscribes and prints each event as one JSON line: subject, CloudEvents attributes, data.
    Tail {
        /// NATS server.
        #[arg(long, env = "PICKET_NATS_URL", default_value = "nats://127.0.0.1:4222")]
        nats: String,
        /// NATS user (the read-only `integrator` user in production).
        #[arg(long, env = "PICKET_NATS_USER")]
        nats_user: Option<String>,
        #[arg(long, env = "PICKET_NATS_PASSWORD", hide_env_values = true)]
        nats_password: Option<String>,
        /// The deployment's subject namespace.
        #[arg(long, default_value = "picket")]
        namespace: String,
        /// Only these areas (tenants, findings, fixes, incidents, notifications, ledger,
        /// offboarding); default all.
        #[arg(long = "area", value_parser = parse_area)]
        areas: Vec<Area>,
        /// Only this tenant's events.
        #[arg(long)]
        tenant: Option<String>,
        /// Stop after this many events.
        #[arg(long)]
        count: Option<usize>,
    },
}

fn parse_area(input: &str) -> Result<Area, String> {
    Area::from_token(input).ok_or_else(|| format!("`{input}` is not an area"))
}

/// Receives the decoded event as canonical protobuf JSON.
struct Json(Option<serde_json::Result<serde_json::Value>>);

impl EventVisitor for Json {
    fn visit<E: Event + Serialize>(&mut self, event: E) {
        self.0 = Some(serde_json::to_value(&event));
    }
}

pub async fn events(context: &Context, command: EventCommand) -> anyhow::Result<()> {
    let EventCommand::Tail {
        nats,
        nats_user,
        nats_password,
        namespace,
        areas,
        tenant,
        count,
    } = command;
    let options = match (nats_user, nats_password) {
        (Some(user), Some(password)) => {
            async_nats::ConnectOptions::with_user_and_password(user, password)
        }
        (None, None) => async_nats::ConnectOptions::new(),
        _ => anyhow::bail!("pass both --nats-user and --nats-password, or neither"),
    };
    let client = options
        .name("picketctl")
        .connect(nats.as_str())
        .await
        .map_err(|error| anyhow::anyhow!("cannot connect to NATS at {nats}: {error}"))?;
    let subjects = Subjects::new(namespace.clone());
    let areas = if areas.is_empty() {
        Area::ALL.to_vec()
    } else {
        areas
    };
    let partner = context.partner().unwrap_or_else(|_| "*".to_owned());
    let tenant = tenant.unwrap_or_else(|| "*".to_owned());
    let mut streams = Vec::new();
    for area in areas {
        let filter = format!("{namespace}.{}.v1.*.{partner}.{tenant}", area.token());
        let subscription = client
            .subscribe(filter.clone())
            .await
            .map_err(|error| anyhow::anyhow!("cannot subscribe to {filter}: {error}"))?;
        streams.push(subscription);
    }
    // A subscription refused by the server's permissions only shows as an error on the connection.
    client.flush().await?;
    eprintln!("waiting for events (Ctrl-C stops)...");
    let mut messages = futures::stream::select_all(streams);
    let mut printed = 0;
    while count.is_none_or(|count| printed < count) {
        let Some(message) = messages.next().await else {
            anyhow::bail!("the NATS connection closed");
        };
        match describe(&subjects, &message) {
            Ok(line) => {
                write_stdout(&format!("{line}\n"))?;
                printed += 1;
            }
            Err(error) => eprintln!("skipped {}: {error:#}", message.subject),
        }
    }
    Ok(())
}

/// One event as JSON: where it was published, its CloudEvents attributes and its decoded data.
fn describe(subjects: &Subjects, message: &async_nats::Message) -> anyhow::Result<String> {
    let event = InboundEvent::parse(
        subjects,
        &message.subject,
        message.headers.as_ref(),
        message.payload.clone(),
        1,
    )?;
    let mut data = Json(None);
    if !decode_event(&event.event_type, &event.payload, &mut data)? {
        anyhow::bail!("unknown event type {}", event.event_type);
    }
    let data = data.0.unwrap_or(Ok(serde_json::Value::Null))?;
    let line = serde_json::json!({
        "subject": message.subject.as_str(),
        "id": event.id,
        "type": event.event_type,
        "source": event.source,
        "time": event.time.to_rfc3339(),
        "data": data,
    });
    Ok(line.to_string())
}
