//! The finding-to-webhook path (scanner event, prioritizer, outbox, notifier, signed webhook)
//! with many monitoring findings across many tenants and partners: throughput and
//! publish-to-receipt latency.
//!
//! Arguments: FINDINGS TENANTS PARTNERS RATE (defaults 5000 200 10 0). RATE paces publishing at
//! that many findings per second; 0 publishes as fast as possible, which measures throughput
//! (latency then includes the backlog).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use picket_e2e::{start_notifier, start_prioritizer, suspicious_sign_in};
use picket_testkit::{TestEnv, WebhookReceiver};

use crate::{BENCH_TOML, argument, latency_cells, register_endpoints};

/// Runs the scenario with `FINDINGS TENANTS PARTNERS RATE`.
pub async fn run(arguments: &[String]) -> anyhow::Result<()> {
    let findings = argument(arguments, 0, 5000)?;
    let tenants = argument(arguments, 1, 200)?.max(1);
    let partners = argument(arguments, 2, 10)?.max(1);
    let rate = argument(arguments, 3, 0)?;

    let env = TestEnv::new().await;
    let prioritizer = start_prioritizer(&env, BENCH_TOML).await;
    let notifier = start_notifier(&env, BENCH_TOML).await;
    let receiver = WebhookReceiver::start().await;
    register_endpoints(&env, &notifier, partners, &receiver.url()).await?;

    let mut published_at = HashMap::with_capacity(findings);
    let mut pace = (rate > 0).then(|| tokio::time::interval(Duration::from_secs(1) / rate as u32));
    let started = Instant::now();
    for index in 0..findings {
        if let Some(pace) = pace.as_mut() {
            pace.tick().await;
        }
        let tenant = index % tenants;
        let partner = tenant % partners;
        let fingerprint = format!("fp-{index}");
        let finding =
            suspicious_sign_in(&format!("p{partner}"), &format!("t{tenant}"), &fingerprint);
        published_at.insert(fingerprint, Instant::now());
        env.publish("scanner", &finding).await;
    }
    let publishing = started.elapsed();

    // Where the time goes: the prioritizer's part ends when every incident is committed.
    let deadline = Instant::now() + Duration::from_secs(600);
    let incidents = env.pool("prioritizer").await;
    loop {
        let opened: i64 = sqlx::query_scalar("SELECT count(*) FROM incidents")
            .fetch_one(&incidents)
            .await?;
        if opened as usize >= findings {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {opened} of {findings} incidents opened"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let prioritized = started.elapsed();
    while receiver.delivered_ids().len() < findings {
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {} of {findings} webhooks arrived",
            receiver.delivered_ids().len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let received = receiver.received();
    let finished = received
        .iter()
        .map(|webhook| webhook.received_at)
        .max()
        .context("no webhook")?;
    let elapsed = finished - started;
    let mut latencies: Vec<Duration> = received
        .iter()
        .filter_map(|webhook| {
            let fingerprint = webhook.json()["data"]["incident"]["fingerprint"]
                .as_str()?
                .to_owned();
            Some(webhook.received_at - *published_at.get(&fingerprint)?)
        })
        .collect();
    latencies.sort();

    println!(
        "| findings | tenants | partners | rate | published in | incidents in | webhooks in | findings/s | p50 | p90 | p99 | max |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {findings} | {tenants} | {partners} | {} | {:.2} s | {:.2} s | {:.2} s | {:.0} | {} |",
        if rate == 0 {
            "max".to_owned()
        } else {
            format!("{rate}/s")
        },
        publishing.as_secs_f64(),
        prioritized.as_secs_f64(),
        elapsed.as_secs_f64(),
        findings as f64 / elapsed.as_secs_f64(),
        latency_cells(&latencies),
    );

    prioritizer.shutdown().await;
    notifier.shutdown().await;
    env.teardown().await;
    Ok(())
}
