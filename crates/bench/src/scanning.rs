//! Full scans of many simulated tenants: every tenant is onboarded (consent and `/organization`
//! read) while no scan worker runs, so each waits with its queued onboarding scan; then a
//! scanner with workers starts and the clock runs until every scan has finished. graph-sim
//! answers a share of requests 429 with `Retry-After`, and counts any request that reaches a
//! tenant inside its window.
//!
//! Arguments: TENANTS USERS WORKERS THROTTLE_PERCENT (defaults 1000 50 64 1).

use std::time::{Duration, Instant};

use graph_sim::{GraphSim, SimConfig};
use picket_e2e::{channel, consent_as_administrator, start_scanner};
use picket_proto::tenants::v1 as tenants;
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

    let env = TestEnv::new().await;
    let sim = GraphSim::start(
        SimConfig {
            tenants: tenant_count,
            users_per_tenant: users,
            throttle_probability: throttle_percent as f64 / 100.0,
            throttle_retry_after: 0.5,
            ..SimConfig::default()
        },
        ([127, 0, 0, 1], 0).into(),
    )
    .await?;
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
    let requests_before = sim.requests().len();

    let scanning_started = Instant::now();
    let scanner = start_scanner(
        &env,
        &sim,
        &format!("scan_workers = {workers}\n[database]\nmax_connections = 40\n"),
    )
    .await;
    let pool = env.pool("scanner").await;
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let open: i64 =
            sqlx::query_scalar("SELECT count(*) FROM scans WHERE state IN ('queued', 'running')")
                .fetch_one(&pool)
                .await?;
        if open == 0 {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "{open} scans still open");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = scanning_started.elapsed();
    let states: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, count(*) FROM scans GROUP BY state ORDER BY state")
            .fetch_all(&pool)
            .await?;
    let observed: i64 = sqlx::query_scalar("SELECT coalesce(sum(findings_observed), 0) FROM scans")
        .fetch_one(&pool)
        .await?;
    let requests: Vec<_> = sim.requests().into_iter().skip(requests_before).collect();
    let throttled = requests
        .iter()
        .filter(|request| request.status == 429)
        .count();
    let violations = sim.throttle_violations().len();
    scanner.shutdown().await;

    println!(
        "| tenants | users each | workers | 429 share | onboarding | scanning | tenants/s | Graph requests | requests/s | 429s sent | requests inside Retry-After | scans by state | findings observed | peak RSS |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|");
    println!(
        "| {tenant_count} | {users} | {workers} | {throttle_percent}% | {:.1} s | {:.1} s | {:.1} | {} | {:.0} | {throttled} | {violations} | {} | {observed} | {:.0} MiB |",
        onboarding.as_secs_f64(),
        elapsed.as_secs_f64(),
        tenant_count as f64 / elapsed.as_secs_f64(),
        requests.len(),
        requests.len() as f64 / elapsed.as_secs_f64(),
        states
            .iter()
            .map(|(state, count)| format!("{state} {count}"))
            .collect::<Vec<_>>()
            .join(", "),
        peak_memory_mib(),
    );
    env.teardown().await;
    Ok(())
}
