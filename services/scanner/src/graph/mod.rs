//! The Microsoft Graph connector: client-credentials tokens per tenant and API, paging over
//! `@odata.nextLink`, pacing per tenant that follows Graph's buckets, `Retry-After` honoured
//! exactly on 429 (exponential backoff with jitter when absent), bounded retries on 5xx, writes
//! (PATCH, PUT, POST, DELETE), Defender for Endpoint's API, and a record of each tenant's access
//! health.

mod batch;
pub mod limits;
mod tokens;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use picket_platform::metrics::Metrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use rand::Rng;
use secrecy::ExposeSecret;
use serde_json::Value;

use crate::graph::limits::{Bucket, TenantGate};
use crate::graph::tokens::TokenCache;
use crate::settings::ScannerSettings;

/// The scope of Graph's application permissions.
pub const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";
/// The scope of Defender for Endpoint's API.
pub const DEFENDER_SCOPE: &str = "https://api.securitycenter.microsoft.com/.default";

/// The token scope of `api`'s application permissions.
fn scope(api: Api) -> &'static str {
    match api {
        Api::Graph => GRAPH_SCOPE,
        Api::Defender => DEFENDER_SCOPE,
    }
}

/// Percent-encodes a query value (a `$filter`, a redirect URI) for a URL.
pub fn url_encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

pub use crate::checks::permissions::Api;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResponseLabels {
    /// `graph` or `defender`.
    api: &'static str,
    /// The HTTP status Microsoft answered.
    status: u16,
}

/// Microsoft's answers to every request, by API and status: throttling (429) and outages (5xx)
/// show here before scans fail.
#[derive(Debug, Clone, Default)]
pub struct GraphMetrics {
    responses: Family<ResponseLabels, Counter>,
}

impl GraphMetrics {
    pub fn registered(metrics: &Metrics) -> GraphMetrics {
        let graph = GraphMetrics::default();
        metrics.register(
            "picket_graph_responses",
            "Responses from Microsoft Graph and Defender, by API and HTTP status",
            graph.responses.clone(),
        );
        graph
    }
}

/// Counts the requests of one scan or fix: Graph's requests (each of a batch counts, as Graph
/// evaluates them one by one), the HTTP calls that carried them, and the 429s among them.
#[derive(Debug, Default)]
pub struct Meter {
    requests: AtomicU32,
    calls: AtomicU32,
    throttled: AtomicU32,
}

impl Meter {
    pub fn requests(&self) -> u32 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn calls(&self) -> u32 {
        self.calls.load(Ordering::Relaxed)
    }

    pub fn throttled(&self) -> u32 {
        self.throttled.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum GraphError {
    #[error("token refused: {error}: {description}")]
    Token { error: String, description: String },
    #[error("graph answered {status} {code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("still throttled after {attempts} attempts")]
    Throttled { attempts: u32 },
    #[error("graph unavailable after {attempts} attempts: {last}")]
    Unavailable { attempts: u32, last: String },
    #[error("request failed: {0}")]
    Transport(String),
    #[error("unexpected response: {0}")]
    Malformed(String),
}

impl GraphError {
    fn transport(error: reqwest::Error) -> GraphError {
        GraphError::Transport(error.to_string())
    }

    /// HTTP status of Graph's answer, when there was one.
    pub fn status(&self) -> u16 {
        match self {
            GraphError::Api { status, .. } => *status,
            GraphError::Throttled { .. } => 429,
            GraphError::Unavailable { .. } => 503,
            GraphError::Token { .. } | GraphError::Transport(_) | GraphError::Malformed(_) => 0,
        }
    }

    /// True when Graph says the object does not exist.
    pub fn is_not_found(&self) -> bool {
        self.status() == 404
    }
}

/// How a tenant's access has gone lately.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AccessHealth {
    pub last_success_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    pub consecutive_failures: u32,
    /// Until when Graph asked Picket to wait.
    pub throttled_until: Option<DateTime<Utc>>,
}

pub struct GraphClient {
    http: reqwest::Client,
    graph_base_url: String,
    defender_base_url: String,
    tokens: TokenCache,
    max_retries: u32,
    initial_backoff: Duration,
    gates: Mutex<HashMap<String, Arc<TenantGate>>>,
    health: Mutex<HashMap<String, AccessHealth>>,
    metrics: GraphMetrics,
}

/// Graph's error body: `{"error": {"code", "message"}}`.
fn api_error(status: u16, body: &[u8]) -> GraphError {
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let text = |key: &str| parsed["error"][key].as_str().unwrap_or_default().to_owned();
    GraphError::Api {
        status,
        code: text("code"),
        message: text("message"),
    }
}

/// `Retry-After` in seconds; Graph may send fractions such as 2.128.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    let seconds: f64 = value.trim().parse().ok()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds))
}

impl GraphClient {
    /// Drops every token held for `microsoft_tenant_id`; returns whether there were any.
    pub fn forget_tenant(&self, microsoft_tenant_id: &str) -> bool {
        self.tokens.forget(microsoft_tenant_id)
    }

    /// Counts Microsoft's responses in `metrics` (unregistered by default).
    pub fn observed_by(mut self, metrics: GraphMetrics) -> GraphClient {
        self.metrics = metrics;
        self
    }

    pub fn new(settings: &ScannerSettings) -> reqwest::Result<GraphClient> {
        let http = reqwest::Client::builder()
            .timeout(settings.request_timeout)
            .build()?;
        let tokens = TokenCache::new(
            http.clone(),
            settings.login_base_url.clone(),
            settings.client_id.clone(),
            settings.client_secret.expose_secret().to_owned().into(),
            settings.token_refresh_margin,
            settings.forbidden_token_renewal,
        );
        Ok(GraphClient {
            http,
            graph_base_url: settings.graph_base_url.trim_end_matches('/').to_owned(),
            defender_base_url: settings.defender_base_url.trim_end_matches('/').to_owned(),
            tokens,
            max_retries: settings.max_retries,
            initial_backoff: settings.initial_backoff,
            gates: Mutex::default(),
            health: Mutex::default(),
            metrics: GraphMetrics::default(),
        })
    }

    fn base(&self, api: Api) -> &str {
        match api {
            Api::Graph => &self.graph_base_url,
            Api::Defender => &self.defender_base_url,
        }
    }

    fn gate(&self, tenant_id: &str) -> Arc<TenantGate> {
        let mut gates = self
            .gates
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        gates.entry(tenant_id.to_owned()).or_default().clone()
    }

    /// The tenant has `users` users: Graph sizes its identity and access limit by it.
    pub async fn count_users(&self, tenant_id: &str, users: usize) {
        self.gate(tenant_id).count_users(users).await;
    }

    pub fn health(&self, tenant_id: &str) -> AccessHealth {
        let health = self
            .health
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        health.get(tenant_id).cloned().unwrap_or_default()
    }

    fn record(&self, tenant_id: &str, outcome: Result<(), &GraphError>) {
        let mut health = self
            .health
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let entry = health.entry(tenant_id.to_owned()).or_default();
        let now = Utc::now();
        match outcome {
            Ok(()) => {
                entry.last_success_at = Some(now);
                entry.consecutive_failures = 0;
            }
            Err(error) => {
                entry.last_error = Some(error.to_string());
                entry.last_error_at = Some(now);
                entry.consecutive_failures += 1;
            }
        }
    }

    /// Exponential backoff with full jitter: up to `initial × 2^attempt`.
    fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = self.initial_backoff.saturating_mul(1 << attempt.min(10));
        ceiling.mul_f64(rand::rng().random_range(0.5..=1.0))
    }

    fn note_throttled(&self, tenant_id: &str, wait: Duration) {
        let mut health = self
            .health
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let until = Utc::now() + wait;
        let entry = health.entry(tenant_id.to_owned()).or_default();
        if entry.throttled_until.is_none_or(|current| current < until) {
            entry.throttled_until = Some(until);
        }
    }

    /// The application permissions `tenant_id` granted Picket's app for `api`, as its token's
    /// `roles` say (`None` when the token does not say). A token whose roles `complete` finds
    /// short is replaced once, in case consent had not propagated when it was issued.
    pub async fn granted_roles(
        &self,
        tenant_id: &str,
        api: Api,
        complete: impl Fn(&BTreeSet<String>) -> bool,
    ) -> Result<Option<BTreeSet<String>>, GraphError> {
        let result = self.tokens.roles(tenant_id, scope(api), complete).await;
        if let Err(error) = &result {
            self.record(tenant_id, Err(error));
        }
        result
    }

    /// GETs one resource (`path_and_query` like `/v1.0/organization`) of `tenant_id`.
    pub async fn get(
        &self,
        tenant_id: &str,
        path_and_query: &str,
        meter: &Meter,
    ) -> Result<Value, GraphError> {
        self.send(
            tenant_id,
            Api::Graph,
            reqwest::Method::GET,
            path_and_query,
            None,
            meter,
        )
        .await
    }

    /// GETs every page of a collection, following `@odata.nextLink`.
    pub async fn get_all(
        &self,
        tenant_id: &str,
        path_and_query: &str,
        meter: &Meter,
    ) -> Result<Vec<Value>, GraphError> {
        let url = format!("{}{path_and_query}", self.graph_base_url);
        let (items, _) = self.pages(tenant_id, url, meter).await?;
        Ok(items)
    }

    /// A round of a delta query: every page from `path_or_link` (a path such as
    /// `/v1.0/users/delta?$select=...`, or the `@odata.deltaLink` a previous round ended with),
    /// and the `@odata.deltaLink` this one ends with.
    pub async fn get_delta(
        &self,
        tenant_id: &str,
        path_or_link: &str,
        meter: &Meter,
    ) -> Result<(Vec<Value>, String), GraphError> {
        let url = if path_or_link.starts_with('/') {
            format!("{}{path_or_link}", self.graph_base_url)
        } else {
            path_or_link.to_owned()
        };
        match self.pages(tenant_id, url, meter).await? {
            (items, Some(link)) => Ok((items, link)),
            (_, None) => {
                let error = GraphError::Malformed(format!("{path_or_link}: no @odata.deltaLink"));
                self.record(tenant_id, Err(&error));
                Err(error)
            }
        }
    }

    /// Every page of a collection from `url`, following `@odata.nextLink`, and the
    /// `@odata.deltaLink` of the last page if it has one. A link must point into Graph: the token
    /// goes nowhere else.
    async fn pages(
        &self,
        tenant_id: &str,
        url: String,
        meter: &Meter,
    ) -> Result<(Vec<Value>, Option<String>), GraphError> {
        let mut items = Vec::new();
        let mut next = Some(url);
        let within = format!("{}/", self.graph_base_url);
        let mut delta_link = None;
        while let Some(url) = next {
            let page = if url.starts_with(&within) {
                self.attempt(
                    tenant_id,
                    Api::Graph,
                    reqwest::Method::GET,
                    &url,
                    None,
                    meter,
                )
                .await
                .and_then(|page| match page["value"].as_array() {
                    Some(_) => Ok(page),
                    None => Err(GraphError::Malformed(format!("{url}: no value array"))),
                })
            } else {
                Err(GraphError::Malformed(format!(
                    "a link outside Graph: {url}"
                )))
            };
            let mut page = match page {
                Ok(page) => page,
                Err(error) => {
                    self.record(tenant_id, Err(&error));
                    return Err(error);
                }
            };
            if let Value::Array(values) = page["value"].take() {
                items.extend(values);
            }
            next = page["@odata.nextLink"].as_str().map(str::to_owned);
            delta_link = page["@odata.deltaLink"].as_str().map(str::to_owned);
        }
        self.record(tenant_id, Ok(()));
        Ok((items, delta_link))
    }

    /// Sends one request to Graph or Defender (`path_and_query` like `/v1.0/users/{id}` or
    /// `/api/machines/{id}/isolate`); a body-less answer (204) is `Value::Null`.
    pub async fn send(
        &self,
        tenant_id: &str,
        api: Api,
        method: reqwest::Method,
        path_and_query: &str,
        body: Option<&Value>,
        meter: &Meter,
    ) -> Result<Value, GraphError> {
        let url = format!("{}{path_and_query}", self.base(api));
        let result = self
            .attempt(tenant_id, api, method, &url, body, meter)
            .await;
        self.record(tenant_id, result.as_ref().map(|_| ()));
        result
    }

    async fn attempt(
        &self,
        tenant_id: &str,
        api: Api,
        method: reqwest::Method,
        url: &str,
        body: Option<&Value>,
        meter: &Meter,
    ) -> Result<Value, GraphError> {
        let path = url.strip_prefix(self.base(api)).unwrap_or(url);
        let bucket = Bucket::for_request(api, &method, path);
        let charges = [(bucket, bucket.cost(path))];
        self.exchange(tenant_id, api, method, url, body, meter, &charges)
            .await
    }

    /// Sends one HTTP request, after `charges` (bucket and cost of each request it carries: one,
    /// or a batch's) are admitted by the tenant's gate, with the retries of 401, 403, 429 and 5xx.
    #[allow(clippy::too_many_arguments)]
    async fn exchange(
        &self,
        tenant_id: &str,
        api: Api,
        method: reqwest::Method,
        url: &str,
        body: Option<&Value>,
        meter: &Meter,
        charges: &[(Bucket, f64)],
    ) -> Result<Value, GraphError> {
        let scope = scope(api);
        let path = url.strip_prefix(self.base(api)).unwrap_or(url);
        let gate = self.gate(tenant_id);
        let mut token_refreshed = false;
        let mut attempt = 0;
        loop {
            for (bucket, cost) in charges {
                gate.admit(*bucket, *cost).await;
            }
            let token = self.tokens.token(tenant_id, scope).await?;
            let mut request = self
                .http
                .request(method.clone(), url)
                .bearer_auth(token.expose_secret());
            if let Some(body) = body {
                request = request
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.to_string());
            }
            meter
                .requests
                .fetch_add(charges.len() as u32, Ordering::Relaxed);
            meter.calls.fetch_add(1, Ordering::Relaxed);
            let response = request.send().await.map_err(GraphError::transport)?;
            let status = response.status().as_u16();
            self.metrics
                .responses
                .get_or_create(&ResponseLabels {
                    api: match api {
                        Api::Graph => "graph",
                        Api::Defender => "defender",
                    },
                    status,
                })
                .inc();
            let headers = response.headers().clone();
            let body_bytes = response.bytes().await.map_err(GraphError::transport)?;
            match status {
                200..=299 if body_bytes.is_empty() => return Ok(Value::Null),
                200..=299 => {
                    return serde_json::from_slice(&body_bytes)
                        .map_err(|error| GraphError::Malformed(format!("{path}: {error}")));
                }
                401 if !token_refreshed => {
                    // An expired or revoked token: fetch a new one once.
                    self.tokens.invalidate(tenant_id, scope).await;
                    token_refreshed = true;
                    continue;
                }
                403 if !token_refreshed
                    && self
                        .tokens
                        .renew_after_forbidden(tenant_id, scope, token.expose_secret())
                        .await =>
                {
                    // A token issued before consent propagated lacks the permissions for its
                    // whole life: try once with a fresh one.
                    token_refreshed = true;
                    continue;
                }
                429 => {
                    meter.throttled.fetch_add(1, Ordering::Relaxed);
                    let wait = retry_after(&headers).unwrap_or_else(|| self.backoff(attempt));
                    // Nothing goes to the tenant before Graph said it may, retry or not.
                    gate.block_for(wait).await;
                    self.note_throttled(tenant_id, wait);
                    if attempt >= self.max_retries {
                        return Err(GraphError::Throttled {
                            attempts: attempt + 1,
                        });
                    }
                    tracing::warn!(tenant_id, path, attempt, wait = ?wait, "graph request throttled");
                }
                500..=599 => {
                    if attempt >= self.max_retries {
                        let last = api_error(status, &body_bytes).to_string();
                        return Err(GraphError::Unavailable {
                            attempts: attempt + 1,
                            last,
                        });
                    }
                    tokio::time::sleep(self.backoff(attempt)).await;
                }
                _ => return Err(api_error(status, &body_bytes)),
            }
            attempt += 1;
        }
    }
}
