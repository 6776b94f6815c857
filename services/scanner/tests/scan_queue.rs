//! The scan queue without workers: a queued scan can be cancelled, and a scan whose worker died
//! (its lease passed) is queued again.

mod common;

use std::time::Duration;

use common::harness_with;
use graph_sim::SimConfig;
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
