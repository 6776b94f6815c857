//! The schedule: configuration scans every N hours and monitoring polls every M minutes per active
//! tenant, each tenant's next run moved by jitter so they spread out; a bounded pool of workers
//! runs queued scans, at most one per tenant at a time, renewing each scan's lease while it runs
//! (a large tenant may take longer than one lease); scans whose worker died are queued again.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use picket_proto::tenants::v1 as tenants;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::scans::runner::{Scanning, next_run};
use crate::scans::store;

/// Tenants queued per kind and tick, so one tick stays short.
const DUE_BATCH: i64 = 500;

/// Wakes idle workers when a scan is queued in this process; workers also poll the queue.
pub type Wake = Arc<Notify>;

pub async fn run_scheduler(scanning: Arc<Scanning>, wake: Wake, shutdown: CancellationToken) {
    loop {
        if let Err(error) = tick(&scanning, &wake, Utc::now()).await {
            tracing::warn!(%error, "scan scheduling failed");
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(scanning.settings.schedule_tick) => {}
        }
    }
}

async fn tick(scanning: &Scanning, wake: &Wake, now: DateTime<Utc>) -> Result<(), sqlx::Error> {
    let requeued = store::requeue_stale(&scanning.pool, now).await?;
    if requeued > 0 {
        tracing::warn!(requeued, "scans whose worker stopped are queued again");
    }
    let settings = &scanning.settings;
    for (kind, interval) in [
        (
            tenants::ScanKind::Configuration,
            settings.configuration_interval,
        ),
        (tenants::ScanKind::Monitoring, settings.monitoring_interval),
    ] {
        for tenant in store::due(&scanning.pool, kind, now, DUE_BATCH).await? {
            let mut transaction = scanning.pool.begin().await?;
            store::queue(
                &mut transaction,
                &tenant.partner_id,
                tenant.tenant_id,
                kind,
                "schedule",
                None,
                now,
            )
            .await?;
            let next = next_run(now, interval, settings.schedule_jitter);
            store::schedule_next(&mut transaction, tenant.tenant_id, kind, next).await?;
            transaction.commit().await?;
            wake.notify_one();
        }
    }
    Ok(())
}

/// Runs a claimed scan, renewing its lease every third of it while the scan makes progress. A
/// worker that dies stops renewing, and the scan is queued again one lease later.
async fn run_leased(scanning: &Scanning, scan: store::ScanRow) -> Result<(), sqlx::Error> {
    let scan_id = scan.scan_id;
    // The claim's start time tells this worker's claim from a later one.
    let claimed_at = scan.started_at.unwrap_or_default();
    let lease = scanning.settings.scan_lease;
    let run = scanning.run(scan);
    tokio::pin!(run);
    loop {
        tokio::select! {
            result = &mut run => return result,
            () = tokio::time::sleep(lease / 3) => {
                let until = Utc::now() + chrono::Duration::from_std(lease).unwrap_or_default();
                match store::renew(&scanning.pool, scan_id, claimed_at, until).await {
                    Ok(true) => {}
                    Ok(false) => tracing::warn!(%scan_id, "scan lease lost to another worker; its first result to finish is kept"),
                    Err(error) => tracing::warn!(%scan_id, %error, "scan lease could not be renewed"),
                }
            }
        }
    }
}

pub async fn run_worker(scanning: Arc<Scanning>, wake: Wake, shutdown: CancellationToken) {
    // Idle workers look at the queue this often, for scans queued by other replicas.
    let idle_poll = std::time::Duration::from_millis(500);
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        let now = Utc::now();
        let lease = chrono::Duration::from_std(scanning.settings.scan_lease).unwrap_or_default();
        match store::claim(&scanning.pool, now, now + lease).await {
            Ok(Some(scan)) => {
                let scan_id = scan.scan_id;
                // A claimed scan runs to its end even during shutdown, within the grace period.
                if let Err(error) = run_leased(&scanning, scan).await {
                    tracing::warn!(%scan_id, %error, "scan could not be stored; it will run again");
                }
                continue;
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(%error, "scan queue unreadable"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = wake.notified() => {}
            () = tokio::time::sleep(idle_poll) => {}
        }
    }
}
