//! The delivery worker: claims due deliveries, signs and sends each (Standard Webhooks headers, the
//! same `webhook-id` on every attempt), records every attempt, and schedules retries with jitter.
//! 2xx succeeds; 410 disables the endpoint, and so does failing without a break for
//! `disable_after_failing` (5 days), each telling partners with EndpointDisabled; 429 and 503 honour
//! `Retry-After`; after the last retry the delivery is dead. A crash mid-attempt leaves the claim to
//! expire, and the delivery is sent again: at least once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use picket_platform::EventFactory;
use picket_platform::db::{notify, outbox};
use picket_platform::time::to_timestamp;
use picket_proto::notifications::v1 as notifications;
use rand::Rng;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::egress::EgressPolicy;
use crate::settings::NotifierSettings;
use crate::signing::{WebhookSecret, signature_header};
use crate::store::{self, AttemptRecord, DueDelivery, EndpointRow};

const CLAIM_BATCH: i64 = 64;
/// Bytes of a failed response's body kept for diagnosis.
const EXCERPT_BYTES: usize = 1024;

pub struct DeliveryWorker {
    pool: PgPool,
    schema: String,
    client: reqwest::Client,
    policy: Arc<EgressPolicy>,
    events: EventFactory,
    settings: NotifierSettings,
}

/// An attempt as sent: what it came to and what the endpoint answered.
struct Attempted {
    outcome: AttemptOutcome,
    response_status: i32,
    response_excerpt: String,
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
enum AttemptOutcome {
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

/// The delay before retry number `attempt` (1-based), jittered; `None` after the last.
pub fn retry_delay(schedule: &[Duration], jitter: f64, attempt: usize) -> Option<Duration> {
    let base = schedule.get(attempt.checked_sub(1)?)?;
    let factor = if jitter > 0.0 {
        rand::rng().random_range(1.0 - jitter..=1.0 + jitter)
    } else {
        1.0
    };
    Some(base.mul_f64(factor))
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

impl DeliveryWorker {
    pub fn new(
        pool: PgPool,
        schema: String,
        client: reqwest::Client,
        policy: Arc<EgressPolicy>,
        events: EventFactory,
        settings: NotifierSettings,
    ) -> DeliveryWorker {
        DeliveryWorker {
            pool,
            schema,
            client,
            policy,
            events,
            settings,
        }
    }

    pub async fn run(self, shutdown: CancellationToken) {
        let mut listener = notify::listen(
            &self.pool,
            &notify::channel(&self.schema, store::DELIVERIES_TOPIC),
        )
        .await;
        while !shutdown.is_cancelled() {
            let claimed = match store::claim_due(
                &self.pool,
                CLAIM_BATCH,
                self.settings.attempt_lease,
            )
            .await
            {
                Ok(claimed) => claimed,
                Err(error) => {
                    tracing::warn!(%error, "cannot claim deliveries, retrying");
                    Vec::new()
                }
            };
            let full_batch = claimed.len() as i64 == CLAIM_BATCH;
            if !claimed.is_empty() {
                self.deliver_all(claimed).await;
            }
            if full_batch {
                continue;
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(self.settings.delivery_poll_interval) => {}
                () = notify::next(&mut listener) => {}
            }
        }
        tracing::info!("delivery worker stopped");
    }

    async fn deliver_all(&self, claimed: Vec<DueDelivery>) {
        let endpoint_ids: Vec<Uuid> = claimed
            .iter()
            .map(|delivery| delivery.endpoint_id)
            .collect();
        let endpoints = match store::get_endpoints(&self.pool, &endpoint_ids).await {
            Ok(endpoints) => endpoints,
            Err(error) => {
                // The claims expire and the deliveries are picked up again.
                tracing::warn!(%error, "cannot load endpoints");
                return;
            }
        };
        futures::stream::iter(claimed)
            .for_each_concurrent(self.settings.delivery_concurrency, |delivery| {
                let endpoint = endpoints
                    .iter()
                    .find(|endpoint| endpoint.endpoint_id == delivery.endpoint_id);
                self.deliver(delivery, endpoint)
            })
            .await;
    }

    async fn deliver(&self, delivery: DueDelivery, endpoint: Option<&EndpointRow>) {
        let started_at = Utc::now();
        let clock = Instant::now();
        let attempted = match endpoint {
            Some(endpoint) if endpoint.enabled => {
                self.attempt(&delivery, endpoint, started_at).await
            }
            Some(_) => Attempted::from(AttemptOutcome::Fatal {
                error: "endpoint is disabled".into(),
                disable: None,
            }),
            None => Attempted::from(AttemptOutcome::Fatal {
                error: "endpoint was deleted".into(),
                disable: None,
            }),
        };
        let latency_ms = i32::try_from(clock.elapsed().as_millis()).unwrap_or(i32::MAX);
        if let Err(error) = self
            .record(&delivery, endpoint, started_at, latency_ms, attempted)
            .await
        {
            tracing::warn!(%error, delivery_id = %delivery.delivery_id, "cannot record attempt; the delivery will be retried");
        }
    }

    async fn attempt(
        &self,
        delivery: &DueDelivery,
        endpoint: &EndpointRow,
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
        let mut secrets = Vec::with_capacity(2);
        for (secret, still_valid) in [
            (Some(&endpoint.secret), true),
            (
                endpoint.previous_secret.as_ref(),
                endpoint
                    .previous_secret_expires_at
                    .is_some_and(|expiry| expiry > now),
            ),
        ] {
            match secret
                .filter(|_| still_valid)
                .map(|secret| WebhookSecret::parse(secret))
            {
                Some(Ok(parsed)) => secrets.push(parsed),
                Some(Err(error)) => {
                    return Attempted::from(AttemptOutcome::Fatal {
                        error: format!("endpoint secret {error}"),
                        disable: None,
                    });
                }
                None => {}
            }
        }
        let webhook_id = delivery.delivery_id.to_string();
        let timestamp = now.timestamp();
        let signature =
            signature_header(&secrets, &webhook_id, timestamp, delivery.body.as_bytes());
        let sent = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", &webhook_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(delivery.body.clone())
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

    async fn record(
        &self,
        delivery: &DueDelivery,
        endpoint: Option<&EndpointRow>,
        started_at: DateTime<Utc>,
        latency_ms: i32,
        attempted: Attempted,
    ) -> Result<(), sqlx::Error> {
        let attempt_number = delivery.attempt_count + 1;
        let attempt_index = usize::try_from(attempt_number).unwrap_or(usize::MAX);
        let mut asked_to_wait = None;
        let (status, error, next_attempt_at, mut disable) = match attempted.outcome {
            AttemptOutcome::Delivered => ("succeeded", String::new(), None, None),
            AttemptOutcome::Fatal { error, disable } => ("dead", error, None, disable),
            AttemptOutcome::Failed { error, retry_after } => {
                asked_to_wait = retry_after;
                match retry_delay(
                    &self.settings.retry_schedule,
                    self.settings.retry_jitter,
                    attempt_index,
                ) {
                    Some(delay) => {
                        let delay = retry_after.map_or(delay, |asked| asked.max(delay));
                        let next = started_at
                            + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
                        ("failed", error, Some(next), None)
                    }
                    None => ("dead", error, None, None),
                }
            }
        };
        let mut transaction = self.pool.begin().await?;
        store::record_attempt(
            &mut transaction,
            &AttemptRecord {
                delivery,
                attempt_number,
                started_at,
                latency_ms,
                response_status: attempted.response_status,
                error: &error,
                retry_after: asked_to_wait,
                response_excerpt: &attempted.response_excerpt,
                status,
                next_attempt_at,
            },
        )
        .await?;
        let mut failing_since = None;
        if let Some(endpoint) = endpoint.filter(|endpoint| endpoint.enabled) {
            if status == "succeeded" {
                store::clear_failing(&mut transaction, endpoint.endpoint_id).await?;
            } else if disable.is_none() {
                failing_since =
                    store::mark_failing(&mut transaction, endpoint.endpoint_id, started_at).await?;
                let limit = chrono::Duration::from_std(self.settings.disable_after_failing)
                    .unwrap_or(chrono::Duration::MAX);
                if failing_since.is_some_and(|since| started_at - since >= limit) {
                    disable = Some(notifications::EndpointDisableCause::Failing);
                }
            }
            if let Some(cause) = disable {
                self.disable(
                    &mut transaction,
                    endpoint,
                    cause,
                    &error,
                    failing_since,
                    attempted.response_status,
                )
                .await?;
            }
        }
        transaction.commit().await?;
        match status {
            "succeeded" => {
                tracing::debug!(delivery_id = %delivery.delivery_id, attempt_number, "webhook delivered")
            }
            _ => {
                tracing::info!(delivery_id = %delivery.delivery_id, attempt_number, status, %error, "webhook attempt failed")
            }
        }
        Ok(())
    }

    /// Disables `endpoint`, makes its waiting deliveries dead and tells partners (EndpointDisabled,
    /// which the catalogue delivers as `endpoint.disabled`).
    async fn disable(
        &self,
        connection: &mut sqlx::PgConnection,
        endpoint: &EndpointRow,
        cause: notifications::EndpointDisableCause,
        error: &str,
        failing_since: Option<DateTime<Utc>>,
        response_status: i32,
    ) -> Result<(), sqlx::Error> {
        let now = Utc::now();
        let reason = match (cause, failing_since) {
            (notifications::EndpointDisableCause::Failing, Some(since)) => format!(
                "every attempt failed since {} (last: {error})",
                since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
            _ => format!("{error} from {}", endpoint.url),
        };
        let Some((disabled, abandoned)) =
            store::disable_endpoint(connection, endpoint.endpoint_id, &reason, now).await?
        else {
            return Ok(());
        };
        let event = notifications::EndpointDisabled {
            partner_id: disabled.partner_id.clone(),
            tenant_id: disabled.tenant_id.clone(),
            endpoint_id: disabled.endpoint_id.to_string(),
            url: disabled.url.clone(),
            cause: cause.into(),
            reason: reason.clone(),
            failing_since: failing_since.map(to_timestamp),
            disabled_at: Some(to_timestamp(now)),
            last_response_status: u32::try_from(response_status).unwrap_or_default(),
            deliveries_abandoned: u32::try_from(abandoned).unwrap_or(u32::MAX),
        };
        let outgoing = self
            .events
            .event(&event, now)
            .map_err(|error| sqlx::Error::Protocol(format!("EndpointDisabled: {error}")))?;
        outbox::enqueue(connection, &outgoing).await?;
        tracing::warn!(endpoint_id = %disabled.endpoint_id, %reason, abandoned, "endpoint disabled");
        Ok(())
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_follows_the_schedule_then_stops() {
        let schedule = [Duration::from_secs(5), Duration::from_secs(300)];
        assert_eq!(retry_delay(&schedule, 0.0, 1), Some(Duration::from_secs(5)));
        assert_eq!(
            retry_delay(&schedule, 0.0, 2),
            Some(Duration::from_secs(300))
        );
        assert_eq!(retry_delay(&schedule, 0.0, 3), None);
        assert_eq!(retry_delay(&schedule, 0.0, 0), None);
    }

    #[test]
    fn jitter_stays_within_its_fraction() {
        let schedule = [Duration::from_secs(100)];
        for _ in 0..100 {
            let delay = retry_delay(&schedule, 0.2, 1).expect("scheduled");
            assert!(
                (Duration::from_secs(80)..=Duration::from_secs(120)).contains(&delay),
                "{delay:?}"
            );
        }
    }
}
