//! Webhook sending, shared by the delivery worker and ChannelService's test sends: Standard
//! Webhooks headers and signatures, what a response means (2xx delivered, 410 gone, 429 and 503
//! with `Retry-After`), and disabling an endpoint with the EndpointDisabled event that tells of it.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use picket_platform::EventFactory;
use picket_platform::db::outbox;
use picket_platform::sealing::Keyring;
use picket_platform::time::to_timestamp;
use picket_proto::notifications::v1 as notifications;
use uuid::Uuid;

use crate::egress::EgressPolicy;
use crate::secrets;
use crate::signing::signature_header;
use crate::store::{self, EndpointRow};

/// Bytes of a failed response's body kept for diagnosis.
const EXCERPT_BYTES: usize = 1024;

/// An attempt as sent: what it came to and what the endpoint answered.
pub struct Attempted {
    pub outcome: AttemptOutcome,
    pub response_status: i32,
    pub response_excerpt: String,
}

impl From<AttemptOutcome> for Attempted {
    /// An attempt that got no response.
    fn from(outcome: AttemptOutcome) -> Attempted {
        Attempted {
            outcome,
            response_status: 0,
            response_excerpt: String::new(),
        }
    }
}

/// What an attempt came to.
#[derive(Debug, PartialEq)]
pub enum AttemptOutcome {
    Delivered,
    /// Retry later, no sooner than the endpoint asked (`Retry-After`).
    Failed {
        error: String,
        retry_after: Option<Duration>,
    },
    /// Never retried: the endpoint is gone (410) or refused by policy.
    Fatal {
        error: String,
        disable: Option<notifications::EndpointDisableCause>,
    },
}

/// `Retry-After` in seconds (fractions allowed); HTTP dates are treated as absent.
fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    let value = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?;
    let seconds: f64 = value.trim().parse().ok()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds))
}

/// Posts signed webhooks through the SSRF-guarded client.
#[derive(Clone)]
pub struct WebhookSender {
    client: reqwest::Client,
    policy: Arc<EgressPolicy>,
    /// Opens the endpoints' sealed secrets, only to sign.
    keyring: Arc<Keyring>,
}

impl WebhookSender {
    pub fn new(
        client: reqwest::Client,
        policy: Arc<EgressPolicy>,
        keyring: Arc<Keyring>,
    ) -> WebhookSender {
        WebhookSender {
            client,
            policy,
            keyring,
        }
    }

    /// Signs and posts `body` to `endpoint` as webhook `webhook_id` at `now`, with every secret
    /// still valid (two while a rotation overlaps).
    pub async fn send(
        &self,
        endpoint: &EndpointRow,
        webhook_id: &str,
        body: &str,
        now: DateTime<Utc>,
    ) -> Attempted {
        let url = match self.policy.check_url(&endpoint.url) {
            Ok(url) => url,
            Err(error) => {
                return Attempted::from(AttemptOutcome::Fatal {
                    error: format!("endpoint url {error}"),
                    disable: None,
                });
            }
        };
        let secrets = match secrets::signing_secrets(&self.keyring, endpoint, now) {
            Ok(secrets) => secrets,
            Err(error) => {
                return Attempted::from(AttemptOutcome::Fatal {
                    error: format!("endpoint secret {error}"),
                    disable: None,
                });
            }
        };
        let timestamp = now.timestamp();
        let signature = signature_header(&secrets, webhook_id, timestamp, body.as_bytes());
        let sent = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", webhook_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body.to_owned())
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(error) => {
                return Attempted::from(AttemptOutcome::Failed {
                    error: format!("request failed: {}", error_chain(&error)),
                    retry_after: None,
                });
            }
        };
        let status = response.status();
        let outcome = match status.as_u16() {
            200..=299 => AttemptOutcome::Delivered,
            410 => AttemptOutcome::Fatal {
                error: "endpoint answered 410 gone".into(),
                disable: Some(notifications::EndpointDisableCause::Gone),
            },
            429 | 503 => AttemptOutcome::Failed {
                error: format!("endpoint answered {status}"),
                retry_after: retry_after(&response),
            },
            _ => AttemptOutcome::Failed {
                error: format!("endpoint answered {status}"),
                retry_after: None,
            },
        };
        let response_excerpt = if outcome == AttemptOutcome::Delivered {
            String::new()
        } else {
            excerpt(response).await
        };
        Attempted {
            outcome,
            response_status: i32::from(status.as_u16()),
            response_excerpt,
        }
    }
}

/// Why an endpoint is being disabled.
pub struct Disabling<'a> {
    pub cause: notifications::EndpointDisableCause,
    pub reason: &'a str,
    pub failing_since: Option<DateTime<Utc>>,
    pub last_response_status: i32,
}

/// Disables an endpoint, makes its waiting deliveries dead and tells partners (EndpointDisabled,
/// which the catalogue delivers as `endpoint.disabled`), in the caller's transaction; returns the
/// endpoint, or `None` when it was disabled already.
pub async fn disable_and_tell(
    connection: &mut sqlx::PgConnection,
    events: &EventFactory,
    endpoint_id: Uuid,
    disabling: &Disabling<'_>,
) -> Result<Option<EndpointRow>, sqlx::Error> {
    let now = Utc::now();
    let Some((disabled, abandoned)) =
        store::disable_endpoint(connection, endpoint_id, disabling.reason, now).await?
    else {
        return Ok(None);
    };
    let event = notifications::EndpointDisabled {
        partner_id: disabled.partner_id.clone(),
        tenant_id: disabled.tenant_id.clone(),
        endpoint_id: disabled.endpoint_id.to_string(),
        url: disabled.url.clone(),
        cause: disabling.cause.into(),
        reason: disabling.reason.to_owned(),
        failing_since: disabling.failing_since.map(to_timestamp),
        disabled_at: Some(to_timestamp(now)),
        last_response_status: u32::try_from(disabling.last_response_status).unwrap_or_default(),
        deliveries_abandoned: u32::try_from(abandoned).unwrap_or(u32::MAX),
    };
    let outgoing = events
        .event(&event, now)
        .map_err(|error| sqlx::Error::Protocol(format!("EndpointDisabled: {error}")))?;
    outbox::enqueue(connection, &outgoing).await?;
    tracing::warn!(%endpoint_id, reason = disabling.reason, abandoned, "endpoint disabled");
    Ok(Some(disabled))
}

/// The first bytes of a response body, as text, for the attempt log.
async fn excerpt(mut response: reqwest::Response) -> String {
    let mut kept = Vec::new();
    while kept.len() < EXCERPT_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => kept.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    kept.truncate(EXCERPT_BYTES);
    String::from_utf8_lossy(&kept).into_owned()
}

/// The error and its sources on one line: reqwest's own message omits the cause.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
