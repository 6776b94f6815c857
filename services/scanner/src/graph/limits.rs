//! Per-tenant pacing of Graph requests: token buckets that follow Graph's documented throttling
//! buckets, and a gate that holds every request of a tenant while a `Retry-After` window is open,
//! so nothing is sent to a throttled tenant before Graph said it may be.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use crate::graph::Api;

/// Graph's throttling buckets (learn.microsoft.com/graph/throttling-limits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bucket {
    /// Identity and access reads: resource units per 10 s per app and tenant, by the tenant's size:
    /// 3,500 under 50 users, 5,000 up to 500, 8,000 above (a tenant not yet counted is small).
    Directory,
    /// Sign-in and audit logs: 5 requests per 10 s per app and tenant.
    Logs,
    /// Conditional access and identity protection: 1 request per second per tenant.
    ConditionalAccess,
    /// Identity and access writes: 3,000 per 2 min 30 s per app and tenant.
    Writes,
    /// Outlook (mail folders and inbox rules). Graph's limits are per mailbox (10,000 requests per
    /// 10 min, 4 at once), far beyond the few reads a scan makes of one mailbox; no tenant-wide
    /// limit is documented. The bucket keeps one large tenant from taking the app's global budget
    /// (130,000 requests per 10 s across all tenants): 1,000 requests per second.
    Outlook,
    /// Security alerts: 150 requests per minute per app and tenant.
    Security,
    /// Defender for Endpoint machine actions: 100 calls per minute.
    Defender,
}

impl Bucket {
    /// The bucket a request draws from.
    pub fn for_request(api: Api, method: &reqwest::Method, path: &str) -> Bucket {
        if api == Api::Defender {
            return Bucket::Defender;
        }
        let bucket = Bucket::for_path(path);
        if method != reqwest::Method::GET && bucket == Bucket::Directory {
            return Bucket::Writes;
        }
        bucket
    }

    pub fn for_path(path: &str) -> Bucket {
        let path = path.split('?').next().unwrap_or_default();
        if path.contains("/mailFolders") {
            return Bucket::Outlook;
        }
        if path.contains("/security/") {
            return Bucket::Security;
        }
        if path.contains("/auditLogs/") {
            return Bucket::Logs;
        }
        if path.contains("/identity/conditionalAccess") || path.contains("/identityProtection/") {
            return Bucket::ConditionalAccess;
        }
        Bucket::Directory
    }

    /// (capacity, refill per second), for a tenant of `users` users (0: not counted yet).
    fn rate(self, users: usize) -> (f64, f64) {
        match self {
            Bucket::Directory => {
                let units = match users {
                    501.. => 8000.0,
                    50..=500 => 5000.0,
                    _ => 3500.0,
                };
                (units, units / 10.0)
            }
            Bucket::Logs => (5.0, 0.5),
            Bucket::ConditionalAccess => (1.0, 1.0),
            Bucket::Writes => (3000.0, 20.0),
            Bucket::Outlook => (1000.0, 1000.0),
            Bucket::Security => (150.0, 2.5),
            Bucket::Defender => (100.0, 100.0 / 60.0),
        }
    }

    /// Resource units a request costs: the documented costs, `$select` one less (minimum 1);
    /// the other buckets count requests.
    pub fn cost(self, path: &str) -> f64 {
        if self != Bucket::Directory {
            return 1.0;
        }
        let (resource, query) = path.split_once('?').unwrap_or((path, ""));
        let base: f64 = if resource.ends_with("/subscribedSkus") {
            3.0
        } else if resource.ends_with("/users") || resource.ends_with("/applications") {
            2.0
        } else {
            1.0
        };
        let discount = if query.contains("$select=") { 1.0 } else { 0.0 };
        (base - discount).max(1.0)
    }
}

struct TokenBucket {
    capacity: f64,
    refill_per_second: f64,
    available: f64,
    updated: Instant,
}

impl TokenBucket {
    fn new(bucket: Bucket, users: usize) -> TokenBucket {
        let (capacity, refill_per_second) = bucket.rate(users);
        TokenBucket {
            capacity,
            refill_per_second,
            available: capacity,
            updated: Instant::now(),
        }
    }

    /// Another size: what is available stays, up to the new capacity.
    fn resize(&mut self, bucket: Bucket, users: usize) {
        let (capacity, refill_per_second) = bucket.rate(users);
        self.capacity = capacity;
        self.refill_per_second = refill_per_second;
        self.available = self.available.min(capacity);
    }

    /// Takes `cost` now, or says how long until it can.
    fn try_take(&mut self, cost: f64) -> Result<(), Duration> {
        let now = Instant::now();
        let refilled = self.available
            + now.duration_since(self.updated).as_secs_f64() * self.refill_per_second;
        self.available = refilled.min(self.capacity);
        self.updated = now;
        let cost = cost.min(self.capacity);
        if self.available >= cost {
            self.available -= cost;
            return Ok(());
        }
        Err(Duration::from_secs_f64(
            (cost - self.available) / self.refill_per_second,
        ))
    }
}

/// The pacing state of one tenant.
pub struct TenantGate {
    blocked_until: Mutex<Option<Instant>>,
    buckets: Mutex<Vec<(Bucket, TokenBucket)>>,
    /// The tenant's users, as last counted (0: not yet).
    users: AtomicUsize,
}

impl Default for TenantGate {
    fn default() -> TenantGate {
        TenantGate {
            blocked_until: Mutex::new(None),
            buckets: Mutex::new(Vec::new()),
            users: AtomicUsize::new(0),
        }
    }
}

impl TenantGate {
    /// The tenant has `users` users: the identity and access bucket takes its size from now.
    pub async fn count_users(&self, users: usize) {
        self.users.store(users, Ordering::Relaxed);
        let mut buckets = self.buckets.lock().await;
        for (bucket, tokens) in buckets.iter_mut() {
            tokens.resize(*bucket, users);
        }
    }

    /// Waits until the tenant is not throttled and `bucket` has room for `cost`.
    pub async fn admit(&self, bucket: Bucket, cost: f64) {
        loop {
            let blocked_until = *self.blocked_until.lock().await;
            if let Some(until) = blocked_until
                && until > Instant::now()
            {
                tokio::time::sleep_until(until.into()).await;
                continue;
            }
            let wait = {
                let mut buckets = self.buckets.lock().await;
                let position = match buckets.iter().position(|(kind, _)| *kind == bucket) {
                    Some(position) => position,
                    None => {
                        let users = self.users.load(Ordering::Relaxed);
                        buckets.push((bucket, TokenBucket::new(bucket, users)));
                        buckets.len() - 1
                    }
                };
                match buckets[position].1.try_take(cost) {
                    Ok(()) => return,
                    Err(wait) => wait,
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// Holds every request of the tenant for `duration` from now (a `Retry-After` window).
    pub async fn block_for(&self, duration: Duration) {
        let until = Instant::now() + duration;
        let mut blocked_until = self.blocked_until.lock().await;
        if blocked_until.is_none_or(|current| current < until) {
            *blocked_until = Some(until);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_fall_into_graphs_buckets() {
        assert_eq!(Bucket::for_path("/v1.0/users?$top=999"), Bucket::Directory);
        assert_eq!(
            Bucket::for_path("/v1.0/auditLogs/signIns?$filter=x"),
            Bucket::Logs
        );
        assert_eq!(
            Bucket::for_path("/v1.0/identity/conditionalAccess/policies"),
            Bucket::ConditionalAccess
        );
        assert_eq!(
            Bucket::for_path("/v1.0/identityProtection/riskyUsers"),
            Bucket::ConditionalAccess
        );
    }

    #[test]
    fn select_makes_a_read_cheaper() {
        assert_eq!(Bucket::Directory.cost("/v1.0/users"), 2.0);
        assert_eq!(Bucket::Directory.cost("/v1.0/users?$select=id"), 1.0);
        assert_eq!(Bucket::Directory.cost("/v1.0/subscribedSkus"), 3.0);
        assert_eq!(Bucket::Directory.cost("/v1.0/organization?$select=id"), 1.0);
    }

    #[test]
    fn the_directory_bucket_is_sized_by_the_tenants_users() {
        assert_eq!(Bucket::Directory.rate(0), (3500.0, 350.0));
        assert_eq!(Bucket::Directory.rate(49), (3500.0, 350.0));
        assert_eq!(Bucket::Directory.rate(50), (5000.0, 500.0));
        assert_eq!(Bucket::Directory.rate(500), (5000.0, 500.0));
        assert_eq!(Bucket::Directory.rate(501), (8000.0, 800.0));
        assert_eq!(Bucket::Logs.rate(20_000), Bucket::Logs.rate(0));
        // Counted large after spending a small tenant's units: what was spent stays spent.
        let mut bucket = TokenBucket::new(Bucket::Directory, 0);
        assert!(bucket.try_take(3500.0).is_ok());
        bucket.resize(Bucket::Directory, 20_000);
        let wait = bucket.try_take(800.0).expect_err("the bucket is empty");
        assert!(
            wait > Duration::from_millis(900) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
    }

    #[tokio::test]
    async fn a_counted_tenant_gets_its_size_at_once() {
        let gate = TenantGate::default();
        gate.count_users(20_000).await;
        tokio::time::timeout(
            Duration::from_millis(100),
            gate.admit(Bucket::Directory, 8000.0),
        )
        .await
        .expect("8,000 units at once for a large tenant");
    }

    #[test]
    fn empty_bucket_says_how_long_to_wait() {
        let mut bucket = TokenBucket::new(Bucket::ConditionalAccess, 0);
        assert!(bucket.try_take(1.0).is_ok());
        let wait = bucket.try_take(1.0).expect_err("one request per second");
        assert!(
            wait > Duration::from_millis(900) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
    }
}
