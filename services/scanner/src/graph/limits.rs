//! Per-tenant pacing of Graph requests: token buckets that follow Graph's documented throttling
//! buckets, and a gate that holds every request of a tenant while a `Retry-After` window is open,
//! so nothing is sent to a throttled tenant before Graph said it may be.

use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use crate::graph::Api;

/// Graph's throttling buckets (learn.microsoft.com/graph/throttling-limits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bucket {
    /// Identity and access reads: 3,500 resource units per 10 s for a small tenant.
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

    /// (capacity, refill per second).
    fn rate(self) -> (f64, f64) {
        match self {
            Bucket::Directory => (3500.0, 350.0),
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
    fn new(bucket: Bucket) -> TokenBucket {
        let (capacity, refill_per_second) = bucket.rate();
        TokenBucket {
            capacity,
            refill_per_second,
            available: capacity,
            updated: Instant::now(),
        }
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
}

impl Default for TenantGate {
    fn default() -> TenantGate {
        TenantGate {
            blocked_until: Mutex::new(None),
            buckets: Mutex::new(Vec::new()),
        }
    }
}

impl TenantGate {
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
                        buckets.push((bucket, TokenBucket::new(bucket)));
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
    fn empty_bucket_says_how_long_to_wait() {
        let mut bucket = TokenBucket::new(Bucket::ConditionalAccess);
        assert!(bucket.try_take(1.0).is_ok());
        let wait = bucket.try_take(1.0).expect_err("one request per second");
        assert!(
            wait > Duration::from_millis(900) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
    }
}
