//! The scan queue: a queued scan can be cancelled, a scan whose worker died (its lease passed) is
//! queued again, and a scan that runs longer than its lease keeps it.

mod common;

use std::time::Duration;

use common::harness_with;
use graph_sim::{Fault, SimConfig};
use picket_proto::tenants::v1 as tenants;
use picket_testkit::eventually;

const PARTNER: &str = "p1";
const NO_WORKERS: &str = "scan_workers = 0\nschedule_tick = \"100ms\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_scan_is_cancelled_and_stays_cancelled() {
    let mut harness = harness_with(SimConfig::default(), NO_WORKERS).await;
    let microsoft_tenant = harness.sim.tenant_ids()[0].clone();
    let tenant_id = harness
        .connect(
            PARTNER,
            &microsoft_tenant,
            tenants::SubscriptionPlan::Essentials,
        )
        .await;
    let token = harness.env.partner_token(PARTNER);
    let queued = harness
        .scans
        .list_scans(harness.env.request(
            &token,
            tenants::ListScansRequest {
                tenant_id: tenant_id.clone(),
                states: vec![tenants::ScanState::Queued.into()],
                ..Default::default()
            },
        ))
        .await
        .expect("scans")
        .into_inner()
        .scans;
    assert_eq!(queued.len(), 1, "the onboarding scan waits for a worker");

    let cancelled = harness
        .scans
        .cancel_scan(harness.env.request(
            &token,
            tenants::CancelScanRequest {
                scan_id: queued[0].scan_id.clone(),
            },
        ))
        .await
        .expect("cancelled")
        .into_inner()
        .scan
        .expect("scan");

    assert_eq!(cancelled.state(), tenants::ScanState::Cancelled);
    assert!(cancelled.finished_at.is_some());
    let other_partner = harness
        .scans
        .get_scan(harness.env.request(
            &harness.env.partner_token("p2"),
            tenants::GetScanRequest {
                scan_id: cancelled.scan_id.clone(),
            },
        ))
        .await
        .expect_err("another partner's scan");
    assert_eq!(other_partner.code(), tonic::Code::NotFound);
    harness.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_whose_worker_died_is_queued_again() {
    let mut harness = harness_with(SimConfig::default(), NO_WORKERS).await;
    let microsoft_tenant = harness.sim.tenant_ids()[0].clone();
    let tenant_id = harness
        .connect(
            PARTNER,
            &microsoft_tenant,
            tenants::SubscriptionPlan::Essentials,
        )
        .await;
    let pool = harness.env.pool("scanner").await;
    // A worker claimed the scan, then its process died before finishing it.
    sqlx::query(
        "UPDATE scans SET state = 'running', started_at = now() - interval '20 minutes',
             lease_until = now() - interval '10 minutes'
         WHERE tenant_id = $1::uuid",
    )
    .bind(&tenant_id)
    .execute(&pool)
    .await
    .expect("a stale running scan");

    let state: String = eventually(
        Duration::from_secs(10),
        "the scan to be queued again",
        || {
            let pool = pool.clone();
            let tenant_id = tenant_id.clone();
            async move {
                let state: String =
                    sqlx::query_scalar("SELECT state FROM scans WHERE tenant_id = $1::uuid")
                        .bind(&tenant_id)
                        .fetch_one(&pool)
                        .await
                        .ok()?;
                (state == "queued").then_some(state)
            }
        },
    )
    .await;
    assert_eq!(state, "queued");
    harness.finish().await;
}

/// A scan that outlasts its lease keeps it while it makes progress: it is not queued again and
/// run a second time by another worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_longer_than_its_lease_renews_it_and_runs_once() {
    let mut harness = harness_with(
        SimConfig::default(),
        "scan_lease = \"600ms\"\nschedule_tick = \"100ms\"\n",
    )
    .await;
    let microsoft_tenant = harness.sim.tenant_ids()[0].clone();
    let tenant_id = harness
        .connect(
            PARTNER,
            &microsoft_tenant,
            tenants::SubscriptionPlan::Premium,
        )
        .await;
    harness.settled_scans(PARTNER, &tenant_id).await;
    let domain_reads = || {
        harness
            .sim
            .requests()
            .into_iter()
            .filter(|request| request.path == "/v1.0/domains" && request.status == 200)
            .count()
    };
    let before = domain_reads();

    // Graph throttles four requests in a row for half a second each: the scan takes over three
    // leases.
    harness.sim.inject(
        &microsoft_tenant,
        &[Fault::Throttle {
            retry_after: Some(0.5),
        }; 4],
    );
    let rescan = harness.rescan(PARTNER, &tenant_id).await;

    assert_eq!(rescan.state(), tenants::ScanState::Succeeded, "{rescan:?}");
    assert!(rescan.throttled_responses >= 4, "{rescan:?}");
    assert_eq!(domain_reads() - before, 1, "the scan ran once");
    harness.finish().await;
}
