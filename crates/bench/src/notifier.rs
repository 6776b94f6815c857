//! The notifier alone: IncidentOpened events, published as the prioritizer would, for tenants of
//! 10 partners that each have one webhook endpoint on a local receiver. Every delivery and attempt
//! is durable (PostgreSQL) before and after it is sent.
//!
//! Arguments: EVENTS TENANTS (defaults 50000 1000). First EVENTS events are published as fast as
//! possible and timed until the receiver has every webhook and the notifier has recorded every
//! delivery as succeeded (deliveries/s). Then a latency run publishes a steady 1,000 events/s for
//! 10 s and times each from publishing to the webhook's receipt.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use picket_e2e::start_notifier;
use picket_proto::incidents::v1::{Incident, IncidentOpened};
use picket_testkit::{TestEnv, WebhookReceiver};

use crate::{Publisher, argument, latency_cells, register_endpoints};

/// Production settings over the test ones: the notifier's 1024 lanes (one transaction routes many
/// tenants' events), the platform's ack wait and a pool of 20.
const NOTIFIER_TOML: &str = "[nats]\nlanes = 1024\nmax_ack_pending = 4096\nack_wait = \"30s\"\n[database]\nmax_connections = 20\n";
const PARTNERS: usize = 10;
const LATENCY_RATE: u32 = 1000;
const LATENCY_SECONDS: u32 = 10;
const POLL: Duration = Duration::from_millis(20);

fn opened(incident_id: String, tenant: usize) -> IncidentOpened {
    IncidentOpened {
        partner_id: format!("p{}", tenant % PARTNERS),
        tenant_id: format!("t{tenant}"),
        incident: Some(Incident {
            incident_id,
            title: "Sign-in from a new country".into(),
            ..Default::default()
        }),
    }
}

/// Waits until the receiver holds `count` requests.
async fn received(
    receiver: &WebhookReceiver,
    count: usize,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while receiver.received_count() < count {
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {} of {count} webhooks arrived",
            receiver.received_count()
        );
        tokio::time::sleep(POLL).await;
    }
    Ok(())
}

/// Latencies from publishing to receipt of the webhooks of `published`, sorted.
fn latencies(receiver: &WebhookReceiver, published: &HashMap<String, Instant>) -> Vec<Duration> {
    let mut latencies: Vec<Duration> = receiver
        .received()
        .iter()
        .filter_map(|webhook| {
            let incident_id = webhook.json()["data"]["incident"]["incidentId"]
                .as_str()?
                .to_owned();
            Some(webhook.received_at - *published.get(&incident_id)?)
        })
        .collect();
    latencies.sort();
    latencies
}

/// Runs the scenario with `EVENTS TENANTS`.
pub async fn run(arguments: &[String]) -> anyhow::Result<()> {
    let events = argument(arguments, 0, 50_000)?;
    let tenants = argument(arguments, 1, 1000)?.max(1);

    let env = TestEnv::new().await;
    let notifier = start_notifier(&env, NOTIFIER_TOML).await;
    let receiver = WebhookReceiver::start().await;
    register_endpoints(&env, &notifier, PARTNERS, &receiver.url()).await?;
    let pool = env.pool("notifier").await;
    let timeout = Duration::from_secs(600).max(Duration::from_millis(events as u64 * 10));

    // Throughput.
    let mut publisher = Publisher::new(&env, "prioritizer");
    let started = Instant::now();
    for index in 0..events {
        publisher
            .publish(&opened(format!("i{index}"), index % tenants))
            .await?;
    }
    publisher.flush().await?;
    let published = started.elapsed();
    received(&receiver, events, timeout).await?;
    let arrived = receiver
        .received()
        .iter()
        .map(|webhook| webhook.received_at)
        .max()
        .context("no webhook")?
        - started;
    let deadline = Instant::now() + timeout;
    loop {
        let recorded: i64 =
            sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE status = 'succeeded'")
                .fetch_one(&pool)
                .await?;
        if recorded as usize >= events {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {recorded} of {events} deliveries recorded"
        );
        tokio::time::sleep(POLL).await;
    }
    let recorded = started.elapsed();
    println!(
        "| events | tenants | partners | published in | received in | recorded in | deliveries/s |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {events} | {tenants} | {PARTNERS} | {:.2} s | {:.2} s | {:.2} s | {:.0} |",
        published.as_secs_f64(),
        arrived.as_secs_f64(),
        recorded.as_secs_f64(),
        events as f64 / recorded.as_secs_f64(),
    );

    // Latency at a steady rate.
    let before = receiver.received_count();
    let count = (LATENCY_RATE * LATENCY_SECONDS) as usize;
    let mut published_at = HashMap::with_capacity(count);
    let mut pace = tokio::time::interval(Duration::from_secs(1) / LATENCY_RATE);
    let mut publisher = Publisher::new(&env, "prioritizer");
    for index in 0..count {
        pace.tick().await;
        let incident_id = format!("l{index}");
        published_at.insert(incident_id.clone(), Instant::now());
        publisher
            .publish(&opened(incident_id, index % tenants))
            .await?;
    }
    publisher.flush().await?;
    received(&receiver, before + count, timeout).await?;
    let latencies = latencies(&receiver, &published_at);
    println!();
    println!("| events | rate | received | p50 | p90 | p99 | max |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {count} | {LATENCY_RATE}/s | {} | {} |",
        latencies.len(),
        latency_cells(&latencies),
    );
    println!();
    println!(
        "2 cores, NATS and PostgreSQL on loopback; one webhook endpoint per partner on a local receiver; every delivery and attempt recorded in PostgreSQL."
    );

    notifier.shutdown().await;
    env.teardown().await;
    Ok(())
}
