//! The simulator's state: tenants, issued tokens, scripted faults and a log of every request.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::model::Tenant;
use crate::signin::{DeviceCode, IssuedCode, SigningKey};

/// A response the simulator gives instead of the real one, once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    /// 429 TooManyRequests, with `Retry-After` in seconds when set.
    Throttle { retry_after: Option<f64> },
    /// 503 ServiceUnavailable.
    Unavailable,
}

/// One request as the simulator saw it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub tenant_id: String,
    pub method: String,
    /// The path without query, such as `/v1.0/users`.
    pub path: String,
    /// The query options, decoded (`$select`, `$filter`, ...).
    pub query: BTreeMap<String, String>,
    pub at: Instant,
    /// The status the request was answered with.
    pub status: u16,
    /// The `Retry-After` sent with a 429, in seconds.
    pub retry_after: Option<f64>,
    /// The JSON batch that carried the request, if one did (requests of one batch arrive
    /// together, so one's `Retry-After` does not bind the others).
    pub batch: Option<u64>,
}

/// Which API a token was issued for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    Graph,
    Defender,
}

#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub tenant_id: String,
    pub audience: Audience,
    pub expires_at: Instant,
    /// The application permissions it carries (its `roles` claim): none when it was issued while
    /// the tenant's consent was still propagating, so Graph refuses it with 403 for its whole
    /// lifetime.
    pub roles: BTreeSet<String>,
}

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub seed: u64,
    pub tenants: usize,
    pub users_per_tenant: usize,
    /// The operator app's credentials the token endpoint accepts.
    pub client_id: String,
    pub client_secret: String,
    pub token_lifetime: Duration,
    /// Items per page when the caller asks for more (Graph's default for users is 100).
    pub page_size: usize,
    /// Share of Graph requests answered 429 at random (0 = none), for load tests.
    pub throttle_probability: f64,
    /// `Retry-After` of those random 429s, in seconds.
    pub throttle_retry_after: f64,
    /// How long each HTTP call to Graph or Defender takes to answer (Graph's own latency), for
    /// load tests; a JSON batch is one call.
    pub latency: Duration,
}

impl Default for SimConfig {
    fn default() -> SimConfig {
        SimConfig {
            seed: 42,
            tenants: 3,
            users_per_tenant: 20,
            client_id: "00000000-0000-0000-0000-00000000c11e".into(),
            client_secret: "sim-secret".into(),
            token_lifetime: Duration::from_secs(3599),
            page_size: 100,
            throttle_probability: 0.0,
            throttle_retry_after: 1.0,
            latency: Duration::ZERO,
        }
    }
}

#[derive(Default)]
pub struct Inner {
    pub tenants: HashMap<String, Tenant>,
    pub tokens: HashMap<String, IssuedToken>,
    pub faults: HashMap<String, VecDeque<Fault>>,
    pub requests: Vec<RecordedRequest>,
    /// Tokens issued, per tenant.
    pub tokens_issued: HashMap<String, usize>,
    /// Authorization codes not redeemed yet.
    pub codes: HashMap<String, IssuedCode>,
    /// Device-code sign-ins, by device code.
    pub device_codes: HashMap<String, DeviceCode>,
    /// The keys the JWKS publishes, oldest first; the last one signs.
    pub signing_keys: Vec<SigningKey>,
    /// JSON batches answered.
    pub batches: u64,
    /// Change tracking of users (`/users/delta`), per tenant.
    pub deltas: HashMap<String, crate::delta::Tracking>,
}

pub struct SimState {
    pub config: SimConfig,
    /// Where the simulator listens, for `@odata.nextLink`.
    pub base_url: String,
    pub inner: Mutex<Inner>,
}

impl SimState {
    pub fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
