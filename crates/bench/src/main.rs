//! `make bench`: Picket's benchmarks against the real NATS and PostgreSQL, printing Markdown
//! tables for the issue notes.
//!
//! Usage: picket-bench [SCENARIO [ARGUMENTS...]]
//! - `findings [FINDINGS TENANTS PARTNERS RATE]`: the finding-to-webhook path.
//! - `scanning [TENANTS USERS WORKERS THROTTLE_PERCENT LARGE_TENANT_USERS LATENCY_MS]`: full
//!   scans of simulated tenants (one of them large), then a monitoring round.
//! - `prioritizer [FINDINGS TENANTS RATE]`: the prioritizer's decisions, throughput and
//!   publish-to-decision latency.
//! - `notifier [EVENTS TENANTS]`: webhook deliveries of incident events, throughput and
//!   event-to-receipt latency.
//! - `ledger [TRANSFERS CLIENTS PARTNERS]`: work logged by concurrent clients, transfers/s and
//!   call latency.
//!
//! Without a scenario, all five run with their defaults.

#![allow(clippy::print_stdout)]

mod findings;
mod ledger;
mod notifier;
mod prioritizer;
mod scanning;

use anyhow::Context;
use futures::FutureExt;
use futures::future::BoxFuture;
use picket_platform::nats::OutgoingEvent;
use picket_proto::Event;
use picket_testkit::TestEnv;

/// Production concurrency (the tests use less): 16 lanes per consumer, pools of 20.
pub const BENCH_TOML: &str = "[nats]\nlanes = 16\n[database]\nmax_connections = 20\n";

/// The numeric argument at `position`, or `default`.
pub fn argument(arguments: &[String], position: usize, default: usize) -> anyhow::Result<usize> {
    match arguments.get(position) {
        Some(value) => value
            .parse()
            .with_context(|| format!("argument {} must be a number", position + 1)),
        None => Ok(default),
    }
}

/// Publish acks in flight at once (the JetStream context allows 5,000).
const ACK_WINDOW: usize = 1000;

/// Publishes events as `source` would, straight to JetStream, without waiting for each ack: up to
/// [`ACK_WINDOW`] are in flight, so the publisher is not the bottleneck.
pub struct Publisher<'a> {
    env: &'a TestEnv,
    source: &'static str,
    pending: Vec<BoxFuture<'static, anyhow::Result<()>>>,
}

impl<'a> Publisher<'a> {
    pub fn new(env: &'a TestEnv, source: &'static str) -> Publisher<'a> {
        Publisher {
            env,
            source,
            pending: Vec::with_capacity(ACK_WINDOW),
        }
    }

    pub async fn publish<E: Event>(&mut self, event: &E) -> anyhow::Result<()> {
        let outgoing =
            OutgoingEvent::new(&self.env.subjects, self.source, event, chrono::Utc::now())?;
        let ack = self
            .env
            .jetstream
            .publish_with_headers(
                outgoing.subject.clone(),
                outgoing.headers(),
                outgoing.payload.into(),
            )
            .await?;
        self.pending.push(
            async move {
                ack.await?;
                Ok::<(), anyhow::Error>(())
            }
            .boxed(),
        );
        if self.pending.len() >= ACK_WINDOW {
            self.flush().await?;
        }
        Ok(())
    }

    /// Waits for every ack in flight.
    pub async fn flush(&mut self) -> anyhow::Result<()> {
        for ack in self.pending.drain(..) {
            ack.await?;
        }
        Ok(())
    }
}

/// The value at `fraction` (0 to 1) of `sorted`.
fn percentile(sorted: &[std::time::Duration], fraction: f64) -> std::time::Duration {
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn millis(duration: std::time::Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1000.0)
}

/// The Markdown cells `p50 | p90 | p99 | max` of `sorted` latencies.
pub fn latency_cells(sorted: &[std::time::Duration]) -> String {
    format!(
        "{} | {} | {} | {}",
        millis(percentile(sorted, 0.50)),
        millis(percentile(sorted, 0.90)),
        millis(percentile(sorted, 0.99)),
        millis(sorted[sorted.len() - 1]),
    )
}

/// Gives each of `partners` partners (`p0`, `p1`, ...) one webhook endpoint at `url` for
/// `incident.opened`.
pub async fn register_endpoints(
    env: &TestEnv,
    notifier: &picket_platform::Application,
    partners: usize,
    url: &str,
) -> anyhow::Result<()> {
    let mut channels =
        picket_proto::notifications::v1::channel_service_client::ChannelServiceClient::new(
            picket_e2e::channel(notifier).await,
        );
    for partner in 0..partners {
        let partner_id = format!("p{partner}");
        let request = picket_proto::notifications::v1::CreateWebhookEndpointRequest {
            partner_id: partner_id.clone(),
            url: url.to_owned(),
            event_types: vec!["incident.opened".into()],
            ..Default::default()
        };
        channels
            .create_webhook_endpoint(env.request(&env.partner_token(&partner_id), request))
            .await?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    picket_platform::runtime::install_crypto_provider();
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    match arguments.first().map(String::as_str) {
        Some("findings") => findings::run(&arguments[1..]).await,
        Some("scanning") => scanning::run(&arguments[1..]).await,
        Some("prioritizer") => prioritizer::run(&arguments[1..]).await,
        Some("notifier") => notifier::run(&arguments[1..]).await,
        Some("ledger") => ledger::run(&arguments[1..]).await,
        Some(other) => {
            anyhow::bail!(
                "unknown scenario {other}; use findings, scanning, prioritizer, notifier or ledger"
            )
        }
        None => {
            scanning::run(&[]).await?;
            findings::run(&[]).await?;
            prioritizer::run(&[]).await?;
            notifier::run(&[]).await?;
            ledger::run(&[]).await
        }
    }
}
