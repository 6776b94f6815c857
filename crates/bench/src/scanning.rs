//! Scans of many simulated tenants. Every tenant is onboarded (consent and `/organization` read)
//! while no scan worker runs, so each waits with its queued onboarding scan; then a scanner with
//! workers starts and the clock runs until every full scan has finished. Then two monitoring
//! rounds: each tenant's previous poll is moved 15 minutes back (as if the last poll was one
//! interval ago), a monitoring poll is queued for every tenant, and the clock runs until all have
//! finished; the second round is what every poll after the first costs (users by delta query). graph-sim answers a share of requests 429 with `Retry-After`, and counts any request
//! that reaches a tenant inside its window. Optionally the first tenant is a large one.
//!
//! Arguments: TENANTS USERS WORKERS THROTTLE_PERCENT LARGE_TENANT_USERS LATENCY_MS (defaults
//! 1000 50 64 1 0 0; the scenario is 1000 300 32 1 20000 50). LATENCY_MS is how long
//! graph-sim takes to answer each HTTP call, as Graph does over the internet.

use std::time::{Duration, Instant};

use graph_sim::{GraphSim, SimConfig};
use picket_e2e::{channel, consent_as_administrator, start_scanner};
use picket_proto::tenants::v1 as tenants;
use picket_proto::tenants::v1::scan_service_client::ScanServiceClient;
use picket_proto::tenants::v1::tenant_service_client::TenantServiceClient;
use picket_testkit::TestEnv;

use crate::argument;

/// Onboardings sent at once.
const ONBOARDING_CONCURRENCY: usize = 32;

/// Peak resident memory of this process (simulator and scanner together), from procfs.
fn peak_memory_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| {
            value
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

async fn onboard(
    env: &TestEnv,
    sim: &GraphSim,
    client: &mut TenantServiceClient<tonic::transport::Channel>,
    partner_id: &str,
    microsoft_tenant: &str,
) -> anyhow::Result<()> {
    let token = env.partner_token(partner_id);
    let onboarded = client
        .onboard_tenant(env.request(
            &token,
            tenants::OnboardTenantRequest {
                partner_id: partner_id.into(),
                display_name: format!("Tenant {microsoft_tenant}"),
                microsoft_tenant: microsoft_tenant.into(),
                plan: tenants::SubscriptionPlan::Premium.into(),
                idempotency_key: microsoft_tenant.into(),
            },
        ))
        .await?
        .into_inner();
    let page = consent_as_administrator(sim, microsoft_tenant, &onboarded.consent_url).await?;
    anyhow::ensure!(
        page.connected(),
        "tenant {microsoft_tenant} did not connect: {}",
        page.body
    );
    Ok(())
}

pub async fn run(arguments: &[String]) -> anyhow::Result<()> {
    let tenant_count = argument(arguments, 0, 1000)?.max(1);
    let users = argument(arguments, 1, 50)?;
    let workers = argument(arguments, 2, 64)?.max(1);
    let throttle_percent = argument(arguments, 3, 1)?;
    let large_users = argument(arguments, 4, 0)?;
    let latency_ms = argument(arguments, 5, 0)?;

    let env = TestEnv::new().await;
    let sim = GraphSim::start(
        SimConfig {
            tenants: tenant_count,
            users_per_tenant: users,
            throttle_probability: throttle_percent as f64 / 100.0,
            throttle_retry_after: 0.5,
            latency: Duration::from_millis(latency_ms as u64),
            ..SimConfig::default()
        },
        ([127, 0, 0, 1], 0).into(),
    )
    .await?;
    let large_tenant = sim.tenant_ids()[0].clone();
    if large_users > 0 {
        sim.resize_tenant(&large_tenant, large_users);
    }
    let onboarding_started = Instant::now();
    let idle = start_scanner(
        &env,
        &sim,
        "scan_workers = 0\n[database]\nmax_connections = 20\n",
    )
    .await;
    let client = TenantServiceClient::new(channel(&idle).await);
    let microsoft_tenants = sim.tenant_ids();
    for batch in microsoft_tenants.chunks(ONBOARDING_CONCURRENCY) {
        let onboardings = batch.iter().enumerate().map(|(index, microsoft_tenant)| {
            let mut client = client.clone();
            let partner_id = format!("p{}", index % 10);
            let env = &env;
            let sim = &sim;
            async move { onboard(env, sim, &mut client, &partner_id, microsoft_tenant).await }
        });
        for result in futures::future::join_all(onboardings).await {
            result?;
        }
    }
    let onboarding = onboarding_started.elapsed();
    idle.shutdown().await;
    println!("onboarding: {:.1} s", onboarding.as_secs_f64());

    let scanner = start_scanner(
        &env,
        &sim,
        &format!("scan_workers = {workers}\n[database]\nmax_connections = 40\n"),
    )
    .await;
    let pool = env.pool("scanner").await;
    let mut round = Round::begin(&sim, &pool, "full scans (onboarding)").await?;
    round.settle(&pool).await?;
    round.report(&sim, &pool, &large_tenant).await?;

    // Two monitoring rounds, each with the previous poll one interval back: the first starts
    // the users' delta rounds of premium tenants, the second is every poll after.
    let mut client = ScanServiceClient::new(channel(&scanner).await);
    for name in ["monitoring round (first)", "monitoring round (steady)"] {
        sqlx::query(
            "UPDATE monitoring_windows SET window_end = window_end - interval '15 minutes'",
        )
        .execute(&pool)
        .await?;
        let mut round = Round::begin(&sim, &pool, name).await?;
        let tenants: Vec<(String, String)> =
            sqlx::query_as("SELECT partner_id, tenant_id::text FROM tenants")
                .fetch_all(&pool)
                .await?;
        for (partner_id, tenant_id) in tenants {
            client
                .start_scan(env.request(
                    &env.partner_token(&partner_id),
                    tenants::StartScanRequest {
                        tenant_id,
                        kind: tenants::ScanKind::Monitoring.into(),
                    },
                ))
                .await?;
        }
        round.settle(&pool).await?;
        round.report(&sim, &pool, &large_tenant).await?;
    }
    println!(
        "\n{tenant_count} tenants of {users} users{}, {workers} workers, {throttle_percent}% of requests answered 429, {latency_ms} ms per call; peak RSS {:.0} MiB",
        if large_users > 0 {
            format!(" (the first of {large_users})")
        } else {
            String::new()
        },
        peak_memory_mib()
    );
    scanner.shutdown().await;
    env.teardown().await;
    Ok(())
}

/// One round of scans, measured from its start until no scan is queued or running.
struct Round {
    name: &'static str,
    started: Instant,
    elapsed: Duration,
    requests_before: usize,
    batches_before: u64,
    scans_before: i64,
}

impl Round {
    async fn begin(
        sim: &GraphSim,
        pool: &sqlx::PgPool,
        name: &'static str,
    ) -> anyhow::Result<Round> {
        let scans_before: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM scans WHERE state NOT IN ('queued', 'running')",
        )
        .fetch_one(pool)
        .await?;
        Ok(Round {
            name,
            started: Instant::now(),
            elapsed: Duration::ZERO,
            requests_before: sim.requests().len(),
            batches_before: sim.batches(),
            scans_before,
        })
    }

    async fn settle(&mut self, pool: &sqlx::PgPool) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(1800);
        loop {
            let open: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM scans WHERE state IN ('queued', 'running')",
            )
            .fetch_one(pool)
            .await?;
            if open == 0 {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "{open} scans still open");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.elapsed = self.started.elapsed();
        Ok(())
    }

    async fn report(
        &self,
        sim: &GraphSim,
        pool: &sqlx::PgPool,
        large_tenant: &str,
    ) -> anyhow::Result<()> {
        let requests: Vec<_> = sim
            .requests()
            .into_iter()
            .skip(self.requests_before)
            .collect();
        let batches = sim.batches() - self.batches_before;
        let throttled = requests
            .iter()
            .filter(|request| request.status == 429)
            .count();
        let violations = sim.throttle_violations().len();
        let finished: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM scans WHERE state NOT IN ('queued', 'running')",
        )
        .fetch_one(pool)
        .await?;
        let scans = (finished - self.scans_before).max(1);
        let states: Vec<(String, i64)> = sqlx::query_as(
            "SELECT state, count(*) FROM (SELECT state FROM scans ORDER BY finished_at DESC LIMIT $1) s GROUP BY state ORDER BY state",
        )
        .bind(scans)
        .fetch_all(pool)
        .await?;
        let mut per_tenant: std::collections::HashMap<&str, usize> = Default::default();
        for request in &requests {
            *per_tenant.entry(request.tenant_id.as_str()).or_default() += 1;
        }
        let large = per_tenant.get(large_tenant).copied().unwrap_or_default();
        let small: Vec<usize> = per_tenant
            .iter()
            .filter(|(tenant, _)| **tenant != large_tenant)
            .map(|(_, count)| *count)
            .collect();
        let mean = small.iter().sum::<usize>() as f64 / small.len().max(1) as f64;
        let seconds = self.elapsed.as_secs_f64();
        println!("\n{}", self.name);
        println!(
            "| wall time | scans | Graph requests | in batches (calls) | requests/s | per tenant (mean of the others) | first tenant | 429s sent | requests inside Retry-After | scans by state |"
        );
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
        println!(
            "| {seconds:.1} s | {scans} | {} | {batches} | {:.0} | {mean:.1} | {large} | {throttled} | {violations} | {} |",
            requests.len(),
            requests.len() as f64 / seconds,
            states
                .iter()
                .map(|(state, count)| format!("{state} {count}"))
                .collect::<Vec<_>>()
                .join(", "),
        );
        Ok(())
    }
}
