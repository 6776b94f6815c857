//! The prioritizer alone: many new findings across many tenants, each a new decision (open an
//! incident, queue a recommendation, or hold it until its theme launches). About 1 in 5 findings
//! is suspicious activity (monitoring: always an incident); the others are configuration
//! recommendations, half of the first theme (launched for new tenants: incidents up to the cap of
//! 3, then queued) and half of the second (not launched yet: held without an event).
//!
//! Arguments: FINDINGS TENANTS RATE (defaults 100000 1000 0). Tenants belong to 10 partners.
//! A warm-up first creates every tenant (one suspicious finding each) outside the measurement.
//! Then FINDINGS findings are published, paced at RATE findings per second or as fast as
//! possible when RATE is 0 (which measures throughput), timed until the prioritizer has applied
//! them all (its inbox). Last, a latency run publishes a steady 1,000 findings/s for 10 s and
//! times each decision from publishing the finding to the IncidentOpened or RecommendationQueued
//! event arriving on NATS (held findings, which publish nothing, are left out).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt;
use picket_e2e::start_prioritizer;
use picket_platform::nats::InboundEvent;
use picket_platform::time::to_timestamp;
use picket_proto::common::v1::{FindingKind, Severity};
use picket_proto::findings::v1::FindingObserved;
use picket_proto::incidents::v1::{IncidentOpened, RecommendationQueued};
use picket_proto::{Area, Event};
use picket_testkit::TestEnv;
use sqlx::PgPool;

use crate::{Publisher, argument, latency_cells};

/// Production settings over the test ones: the prioritizer's 256 lanes (one transaction carries
/// many tenants' events), the platform's ack wait and a pool of 20.
const PRIORITIZER_TOML: &str = "[nats]\nlanes = 1024\nmax_ack_pending = 4096\nack_wait = \"30s\"\n[database]\nmax_connections = 20\n";

/// Partners the tenants are spread over (tenant `tN` belongs to partner `p(N % PARTNERS)`).
const PARTNERS: usize = 10;
/// The latency run: findings per second, for this many seconds.
const LATENCY_RATE: u32 = 1000;
const LATENCY_SECONDS: u32 = 10;
/// How long the latency run waits for the last decisions after publishing.
const LATENCY_GRACE: Duration = Duration::from_secs(60);
/// How often the database is polled for progress.
const POLL: Duration = Duration::from_millis(50);

/// FindingObserved events the prioritizer has applied, warm-up included.
const INCIDENTS_SQL: &str = "SELECT count(*) FROM incidents";
/// Decision events not relayed to NATS yet.
const OUTBOX_SQL: &str = "SELECT count(*) FROM outbox";

/// A deterministic, well-spread number for `seed` (splitmix64), so that kinds, themes and
/// severities do not follow the tenants' round-robin.
fn mix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A new finding (fresh `fingerprint`) for tenant `tenant`, of the kind, theme and severity
/// `roll` picks (a multiple of 5 is a suspicious sign-in), and whether the prioritizer answers it
/// with an event: monitoring and first-theme findings do, second-theme findings are held.
fn finding(fingerprint: String, tenant: usize, roll: u64) -> (FindingObserved, bool) {
    let (kind, check_id, severity, title, theme, decides) = if roll.is_multiple_of(5) {
        (
            FindingKind::Monitoring,
            "mon.new-country-sign-in",
            Severity::High,
            "Sign-in from a new country",
            "suspicious-activity",
            true,
        )
    } else {
        let severity = match (roll / 10) % 4 {
            0 => Severity::Low,
            1 => Severity::Medium,
            2 => Severity::High,
            _ => Severity::Critical,
        };
        if (roll / 5).is_multiple_of(2) {
            (
                FindingKind::Configuration,
                "aad.mfa-all-users",
                severity,
                "MFA is not required for all users",
                "identity-mfa",
                true,
            )
        } else {
            (
                FindingKind::Configuration,
                "aad.global-admin-count",
                severity,
                "Too many global administrators",
                "admin-accounts",
                false,
            )
        }
    };
    let observed = FindingObserved {
        partner_id: format!("p{}", tenant % PARTNERS),
        tenant_id: format!("t{tenant}"),
        fingerprint,
        check_id: check_id.into(),
        kind: kind.into(),
        severity: severity.into(),
        title: title.into(),
        description: format!("{title} (benchmark)"),
        target: "alice@contoso.example".into(),
        theme: theme.into(),
        recommended_fix: "Follow the recommended fix".into(),
        observed_at: Some(to_timestamp(Utc::now())),
        scan_id: "bench-scan".into(),
        ..Default::default()
    };
    (observed, decides)
}

/// Waits until the prioritizer has acknowledged every finding in its stream: it acknowledges an
/// event once the transaction that applied it committed. (Counting its inbox instead would cost
/// the database more than the service under test.)
async fn wait_acknowledged(env: &TestEnv, timeout: Duration) -> anyhow::Result<Instant> {
    let stream = env
        .jetstream
        .get_stream(env.subjects.stream_name(Area::Findings))
        .await?;
    let mut consumer: async_nats::jetstream::consumer::PullConsumer = stream
        .get_consumer("prioritizer-findings")
        .await
        .map_err(|error| anyhow::anyhow!("the prioritizer's consumer: {error}"))?;
    let deadline = Instant::now() + timeout;
    loop {
        let info = consumer.info().await?;
        if info.num_pending == 0 && info.num_ack_pending == 0 {
            return Ok(Instant::now());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for the findings to be applied"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Polls the count `sql` every [`POLL`] until `done` accepts it; returns when it did.
async fn wait_until(
    pool: &PgPool,
    sql: &'static str,
    done: impl Fn(i64) -> bool,
    timeout: Duration,
    what: &str,
) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + timeout;
    loop {
        let count: i64 = sqlx::query_scalar(sql).fetch_one(pool).await?;
        if done(count) {
            return Ok(Instant::now());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what} (count {count})"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// The core NATS subject of every `E` event of the test's namespace.
fn every<E: Event>(env: &TestEnv) -> String {
    format!("{}.{}.v1.{}.>", env.namespace, E::AREA.token(), E::TOKEN)
}

/// Runs the scenario with `FINDINGS TENANTS RATE`.
pub async fn run(arguments: &[String]) -> anyhow::Result<()> {
    let findings = argument(arguments, 0, 100_000)?;
    let tenants = argument(arguments, 1, 1000)?.max(1);
    let rate = argument(arguments, 2, 0)?;

    let env = TestEnv::new().await;
    let prioritizer = start_prioritizer(&env, PRIORITIZER_TOML).await;
    let pool = env.pool("prioritizer").await;

    // Warm-up: every tenant is created (its first theme launched) before anything is timed.
    let mut publisher = Publisher::new(&env, "scanner");
    for tenant in 0..tenants {
        // Roll 0: a suspicious sign-in, which opens an incident whatever the themes.
        let (warm_up, _) = finding(format!("warm-{tenant}"), tenant, 0);
        publisher.publish(&warm_up).await?;
    }
    publisher.flush().await?;
    let warm_up_timeout = Duration::from_secs(300);
    wait_until(
        &pool,
        INCIDENTS_SQL,
        |count| count as usize >= tenants,
        warm_up_timeout,
        "the warm-up incidents",
    )
    .await?;
    wait_until(
        &pool,
        OUTBOX_SQL,
        |count| count == 0,
        warm_up_timeout,
        "the warm-up events to be relayed",
    )
    .await?;

    // Throughput: publish everything, time until the prioritizer has applied it all.
    let timeout = Duration::from_secs(600).max(Duration::from_millis(findings as u64 * 10));
    let mut decisions = 0;
    let mut pace = (rate > 0).then(|| tokio::time::interval(Duration::from_secs(1) / rate as u32));
    let started = Instant::now();
    for index in 0..findings {
        if let Some(pace) = pace.as_mut() {
            pace.tick().await;
        }
        let (observed, decides) = finding(format!("f{index}"), index % tenants, mix(index as u64));
        decisions += usize::from(decides);
        publisher.publish(&observed).await?;
    }
    publisher.flush().await?;
    let published = started.elapsed();
    let applied = wait_acknowledged(&env, timeout).await? - started;
    let relayed = wait_until(
        &pool,
        OUTBOX_SQL,
        |count| count == 0,
        timeout,
        "the decision events to be relayed",
    )
    .await?
        - started;

    // Latency: listen for decisions first, then publish at a steady rate.
    let opened = env.nats.subscribe(every::<IncidentOpened>(&env)).await?;
    let queued = env
        .nats
        .subscribe(every::<RecommendationQueued>(&env))
        .await?;
    let (sender, mut decided) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let subjects = env.subjects.clone();
    let listener = tokio::spawn(async move {
        let mut messages = futures::stream::select(opened, queued);
        while let Some(message) = messages.next().await {
            let received = Instant::now();
            let Ok(event) = InboundEvent::parse(
                &subjects,
                &message.subject,
                message.headers.as_ref(),
                message.payload.clone(),
                1,
            ) else {
                continue;
            };
            let fingerprint = event
                .decode::<IncidentOpened>()
                .ok()
                .and_then(|payload| payload.incident)
                .map(|incident| incident.fingerprint)
                .or_else(|| {
                    event
                        .decode::<RecommendationQueued>()
                        .ok()
                        .and_then(|payload| payload.recommendation)
                        .map(|recommendation| recommendation.fingerprint)
                });
            if let Some(fingerprint) = fingerprint
                && sender.send((fingerprint, received)).is_err()
            {
                break;
            }
        }
    });

    let latency_findings = (LATENCY_RATE * LATENCY_SECONDS) as usize;
    let mut published_at: HashMap<String, Instant> = HashMap::with_capacity(latency_findings);
    let mut steady = tokio::time::interval(Duration::from_secs(1) / LATENCY_RATE);
    let latency_started = Instant::now();
    for index in 0..latency_findings {
        steady.tick().await;
        let (observed, decides) = finding(
            format!("l{index}"),
            index % tenants,
            mix((findings + index) as u64),
        );
        let fingerprint = observed.fingerprint.clone();
        let at = Instant::now();
        publisher.publish(&observed).await?;
        if decides {
            published_at.insert(fingerprint, at);
        }
    }
    publisher.flush().await?;
    drop(publisher);
    let latency_published = latency_started.elapsed();
    let expected = published_at.len();
    let mut latencies = Vec::with_capacity(expected);
    let deadline = tokio::time::Instant::now() + LATENCY_GRACE;
    while latencies.len() < expected {
        match tokio::time::timeout_at(deadline, decided.recv()).await {
            Ok(Some((fingerprint, received))) => {
                if let Some(sent) = published_at.remove(&fingerprint) {
                    latencies.push(received.saturating_duration_since(sent));
                }
            }
            Ok(None) | Err(_) => break,
        }
    }
    listener.abort();
    latencies.sort();
    anyhow::ensure!(
        !latencies.is_empty(),
        "no decision of the latency run arrived within {LATENCY_GRACE:?}"
    );

    println!(
        "| findings | tenants | partners | rate | opened or queued | published in | applied in | relayed in | findings/s |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {findings} | {tenants} | {PARTNERS} | {} | {decisions} | {:.2} s | {:.2} s | {:.2} s | {:.0} |",
        if rate == 0 {
            "max".to_owned()
        } else {
            format!("{rate}/s")
        },
        published.as_secs_f64(),
        applied.as_secs_f64(),
        relayed.as_secs_f64(),
        findings as f64 / applied.as_secs_f64(),
    );
    println!();
    println!("| findings | rate | published in | decisions matched | p50 | p90 | p99 | max |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {latency_findings} | {LATENCY_RATE}/s | {:.2} s | {} of {expected} | {} |",
        latency_published.as_secs_f64(),
        latencies.len(),
        latency_cells(&latencies),
    );
    println!();
    println!(
        "{} cores, NATS and PostgreSQL on loopback; the prioritizer with its production settings (1024 lanes, one batch applier) and a pool of 20. \
         Decisions are incidents opened and recommendations queued; held findings publish nothing.",
        std::thread::available_parallelism().map_or(0, |cores| cores.get()),
    );

    pool.close().await;
    prioritizer.shutdown().await;
    env.teardown().await;
    Ok(())
}
