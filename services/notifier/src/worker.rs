//! The delivery worker: claims due deliveries, signs and sends each (Standard Webhooks headers, the
//! same `webhook-id` on every attempt), records every attempt, and schedules retries with jitter.
//! 2xx succeeds; 410 disables the endpoint; 429 and 503 honour `Retry-After`; after the last retry
//! the delivery is dead. A crash mid-attempt leaves the claim to expire, and the delivery is sent
//! again: at least once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use picket_platform::db::notify;
use rand::Rng;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::egress::EgressPolicy;
use crate::settings::NotifierSettings;
use crate::signing::{WebhookSecret, signature_header};
use crate::store::{self, AttemptRecord, DueDelivery, EndpointRow};

const CLAIM_BATCH: i64 = 64;

pub struct DeliveryWorker {
    pool: PgPool,
    schema: String,
    client: reqwest::Client,
    policy: Arc<EgressPolicy>,
    settings: NotifierSettings,
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
        disable_endpoint: bool,
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
        settings: NotifierSettings,
    ) -> DeliveryWorker {
        DeliveryWorker {
            pool,
            schema,
            client,
            policy,
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
        let (outcome, response_status) = match endpoint {
            Some(endpoint) if endpoint.enabled => {
                self.attempt(&delivery, endpoint, started_at).await
            }
            Some(_) => (
                AttemptOutcome::Fatal {
                    error: "endpoint is disabled".into(),
                    disable_endpoint: false,
                },
                0,
            ),
            None => (
                AttemptOutcome::Fatal {
                    error: "endpoint was deleted".into(),
                    disable_endpoint: false,
                },
                0,
            ),
        };
        let latency_ms = i32::try_from(clock.elapsed().as_millis()).unwrap_or(i32::MAX);
        if let Err(error) = self
            .record(
                &delivery,
                endpoint,
                started_at,
                latency_ms,
                response_status,
                outcome,
            )
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
    ) -> (AttemptOutcome, i32) {
        let url = match self.policy.check_url(&endpoint.url) {
            Ok(url) => url,
            Err(error) => {
                let error = format!("endpoint url {error}");
                return (
                    AttemptOutcome::Fatal {
                        error,
                        disable_endpoint: false,
                    },
                    0,
                );
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
                    let error = format!("endpoint secret {error}");
                    return (
                        AttemptOutcome::Fatal {
                            error,
                            disable_endpoint: false,
                        },
                        0,
                    );
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
                let error = format!("request failed: {}", error_chain(&error));
                return (
                    AttemptOutcome::Failed {
                        error,
                        retry_after: None,
                    },
                    0,
                );
            }
        };
        let status = response.status();
        let code = i32::from(status.as_u16());
        let outcome = match status.as_u16() {
            200..=299 => AttemptOutcome::Delivered,
            410 => AttemptOutcome::Fatal {
                error: "endpoint answered 410 gone".into(),
                disable_endpoint: true,
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
        (outcome, code)
    }

    async fn record(
        &self,
        delivery: &DueDelivery,
        endpoint: Option<&EndpointRow>,
        started_at: DateTime<Utc>,
        latency_ms: i32,
        response_status: i32,
        outcome: AttemptOutcome,
    ) -> Result<(), sqlx::Error> {
        let attempt_number = delivery.attempt_count + 1;
        let attempt_index = usize::try_from(attempt_number).unwrap_or(usize::MAX);
        let (status, error, next_attempt_at, disable) = match outcome {
            AttemptOutcome::Delivered => ("succeeded", String::new(), None, false),
            AttemptOutcome::Fatal {
                error,
                disable_endpoint,
            } => ("dead", error, None, disable_endpoint),
            AttemptOutcome::Failed { error, retry_after } => {
                match retry_delay(
                    &self.settings.retry_schedule,
                    self.settings.retry_jitter,
                    attempt_index,
                ) {
                    Some(delay) => {
                        let delay = retry_after.map_or(delay, |asked| asked.max(delay));
                        let next = started_at
                            + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
                        ("failed", error, Some(next), false)
                    }
                    None => ("dead", error, None, false),
                }
            }
        };
        let mut transaction = self.pool.begin().await?;
        store::record_attempt(
            &mut transaction,
            &AttemptRecord {
                delivery_id: delivery.delivery_id,
                attempt_number,
                started_at,
                latency_ms,
                response_status,
                error: &error,
                status,
                next_attempt_at,
            },
        )
        .await?;
        if let (true, Some(endpoint)) = (disable, endpoint) {
            store::disable_endpoint(&mut transaction, endpoint.endpoint_id, &error, Utc::now())
                .await?;
            tracing::warn!(endpoint_id = %endpoint.endpoint_id, "endpoint disabled: it answered 410");
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
