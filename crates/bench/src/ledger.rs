//! The ledger: work logged against engagements by concurrent clients, each call a transfer with
//! its own idempotency key, durable before it is answered.
//!
//! Arguments: TRANSFERS CLIENTS PARTNERS IN_FLIGHT (defaults 20000 8 100 16). Every partner first
//! gets a pack large enough for the run and an open engagement; then CLIENTS clients log
//! one-minute work entries, each on a partner of its own turn, each client keeping IN_FLIGHT calls
//! outstanding (as a TigerBeetle client batches), until TRANSFERS have been logged. Reports
//! transfers/s and call latency.

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};

use picket_platform::auth::{Principal, Role};
use picket_proto::ledger::v1::credit_ledger_service_client::CreditLedgerServiceClient;
use picket_proto::ledger::v1::engagement_service_client::EngagementServiceClient;
use picket_proto::ledger::v1::{
    AssignInvestigatorRequest, LogWorkRequest, OpenEngagementRequest, PurchaseCreditsRequest,
    RequestChannel,
};
use picket_testkit::TestEnv;
use tokio_util::sync::CancellationToken;

use crate::{argument, latency_cells};

/// Production settings over the test ones: a pool of 20.
const LEDGER_TOML: &str = "[database]\nmax_connections = 20\n";

/// Runs the scenario with `TRANSFERS CLIENTS PARTNERS`.
pub async fn run(arguments: &[String]) -> anyhow::Result<()> {
    let transfers = argument(arguments, 0, 20_000)?;
    let clients = argument(arguments, 1, 8)?.max(1);
    let partners = argument(arguments, 2, 100)?.max(1);
    let in_flight = argument(arguments, 3, 16)?.max(1);

    let env = TestEnv::new().await;
    let (platform, own) = env.settings(ledger::SERVICE, ledger::DEFAULTS, LEDGER_TOML);
    let ledger = ledger::build(platform, own, CancellationToken::new()).await?;
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", ledger.grpc_address()))?
            .connect()
            .await?;
    let mut credits = CreditLedgerServiceClient::new(channel.clone());
    let engagements = EngagementServiceClient::new(channel);
    let operator = env.operator_token();
    let investigator = env.token(&Principal {
        subject: "bench@picket".into(),
        role: Role::Investigator,
        partner_id: None,
        tenant_ids: Vec::new(),
    });

    let mut engagement_ids = Vec::with_capacity(partners);
    for partner in 0..partners {
        let partner_id = format!("p{partner}");
        let purchase = PurchaseCreditsRequest {
            partner_id: partner_id.clone(),
            idempotency_key: format!("bench-pack-{partner}"),
            minutes: i64::try_from(transfers).unwrap_or(i64::MAX),
            ..Default::default()
        };
        credits
            .purchase_credits(env.request(&operator, purchase))
            .await?;
        let open = OpenEngagementRequest {
            partner_id: partner_id.clone(),
            idempotency_key: format!("bench-engagement-{partner}"),
            request: "Benchmark investigation".into(),
            channel: RequestChannel::Api.into(),
            ..Default::default()
        };
        let engagement = engagements
            .clone()
            .open_engagement(env.request(&operator, open))
            .await?
            .into_inner()
            .engagement
            .ok_or_else(|| anyhow::anyhow!("no engagement"))?;
        // The investigator logs work only on what is assigned to them.
        engagements
            .clone()
            .assign_investigator(env.request(
                &operator,
                AssignInvestigatorRequest {
                    partner_id: partner_id.clone(),
                    idempotency_key: format!("bench-assign-{partner}"),
                    engagement_id: engagement.engagement_id.clone(),
                    investigator_subject: "bench@picket".into(),
                },
            ))
            .await?;
        engagement_ids.push((partner_id, engagement.engagement_id));
    }

    let started = Instant::now();
    let mut tasks = Vec::with_capacity(clients);
    for client in 0..clients {
        let engagements = engagements.clone();
        let engagement_ids = engagement_ids.clone();
        let token = investigator.clone();
        let env_request = |message: LogWorkRequest| env.request(&token, message);
        let requests: Vec<tonic::Request<LogWorkRequest>> = (client..transfers)
            .step_by(clients)
            .map(|index| {
                let (partner_id, engagement_id) = &engagement_ids[index % engagement_ids.len()];
                env_request(LogWorkRequest {
                    partner_id: partner_id.clone(),
                    idempotency_key: format!("bench-work-{index}"),
                    engagement_id: engagement_id.clone(),
                    minutes: 1,
                    description: "benchmark".into(),
                    ..Default::default()
                })
            })
            .collect();
        tasks.push(tokio::spawn(async move {
            futures::stream::iter(requests)
                .map(|request| {
                    let mut engagements = engagements.clone();
                    async move {
                        let sent = Instant::now();
                        engagements.log_work(request).await?;
                        Ok::<Duration, tonic::Status>(sent.elapsed())
                    }
                })
                .buffer_unordered(in_flight)
                .try_collect::<Vec<Duration>>()
                .await
        }));
    }
    let mut latencies = Vec::with_capacity(transfers);
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = started.elapsed();
    latencies.sort();

    println!(
        "| transfers | clients | in flight per client | partners | in | transfers/s | p50 | p90 | p99 | max |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {transfers} | {clients} | {in_flight} | {partners} | {:.2} s | {:.0} | {} |",
        elapsed.as_secs_f64(),
        transfers as f64 / elapsed.as_secs_f64(),
        latency_cells(&latencies),
    );
    println!();
    println!(
        "2 cores, PostgreSQL and NATS on loopback; each transfer a LogWork call over gRPC with its own idempotency key, committed before it is answered."
    );
    ledger.shutdown().await;
    env.teardown().await;
    Ok(())
}
