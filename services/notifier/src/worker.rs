//! The delivery worker: takes the deliveries routing hands it and claims those that fall due
//! (retries, redeliveries, and any a crashed worker left), signs and sends each (Standard Webhooks
//! headers, the same `webhook-id` on every attempt), records the attempts in batches, and schedules
//! retries with jitter.
//! 2xx succeeds; 410 disables the endpoint, and so does failing without a break for
//! `disable_after_failing` (5 days), each telling partners with EndpointDisabled; 429 and 503 honour
//! `Retry-After`; after the last retry the delivery is dead. A crash mid-attempt leaves the claim to
//! expire, and the delivery is sent again: at least once.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use picket_platform::EventFactory;
use picket_platform::db::{notify, outbox};
use picket_platform::metrics::{Metrics, latency_histogram};
use picket_platform::nats::OutgoingEvent;
use picket_platform::time::to_timestamp;
use picket_proto::notifications::v1 as notifications;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use rand::Rng;
use sqlx::PgPool;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::email::Mailer;
use crate::settings::NotifierSettings;
use crate::store::{self, AttemptRecord, DueDelivery, EndpointRow, RecipientRow};
use crate::webhook::{AttemptOutcome, Attempted, Disabling, WebhookSender, disable_and_tell};

const CLAIM_BATCH: i64 = 64;
/// Deliveries waiting to be sent, and attempts waiting to be recorded.
const QUEUE: usize = 4096;
/// Attempts recorded per transaction at most.
const RECORD_BATCH: usize = 512;
/// Deliveries held back per busy destination, at most.
const MAX_WAITING: usize = 1024;

pub struct DeliveryWorker {
    pool: PgPool,
    schema: String,
    webhooks: WebhookSender,
    mailer: Mailer,
    events: EventFactory,
    settings: NotifierSettings,
    metrics: DeliveryMetrics,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    /// `webhook` or `email`.
    channel: String,
    /// What the attempt made of its delivery: `succeeded`, `failed` (retried) or `dead`.
    status: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelLabels {
    channel: String,
}

/// The notifier's domain metrics: delivery attempts by outcome and how long they took.
#[derive(Clone)]
pub struct DeliveryMetrics {
    attempts: Family<AttemptLabels, Counter>,
    attempt_seconds: Family<ChannelLabels, Histogram, fn() -> Histogram>,
}

impl DeliveryMetrics {
    pub fn registered(metrics: &Metrics) -> DeliveryMetrics {
        let delivery = DeliveryMetrics {
            attempts: Family::default(),
            attempt_seconds: Family::new_with_constructor(latency_histogram),
        };
        metrics.register(
            "picket_delivery_attempts",
            "Webhook and e-mail delivery attempts, by channel and the delivery's resulting status",
            delivery.attempts.clone(),
        );
        metrics.register(
            "picket_delivery_attempt_seconds",
            "Time one delivery attempt took, by channel",
            delivery.attempt_seconds.clone(),
        );
        delivery
    }
}

/// A delivery ready to attempt, with its endpoint (webhook) or recipient (e-mail) as it was when
/// taken (`None`: deleted).
pub struct Dispatch {
    pub delivery: DueDelivery,
    pub endpoint: Option<Arc<EndpointRow>>,
    pub recipient: Option<Arc<RecipientRow>>,
}

impl Dispatch {
    /// Where it goes: its endpoint or recipient (a direct e-mail is its own destination).
    fn destination(&self) -> Uuid {
        self.delivery
            .endpoint_id
            .or(self.delivery.recipient_id)
            .unwrap_or(self.delivery.delivery_id)
    }
}

/// The deliveries with their endpoints and recipients, read in two queries.
pub async fn dispatches(
    connection: &mut sqlx::PgConnection,
    deliveries: Vec<DueDelivery>,
) -> Result<Vec<Dispatch>, sqlx::Error> {
    let mut endpoint_ids: Vec<Uuid> = deliveries.iter().filter_map(|d| d.endpoint_id).collect();
    endpoint_ids.sort();
    endpoint_ids.dedup();
    let mut recipient_ids: Vec<Uuid> = deliveries.iter().filter_map(|d| d.recipient_id).collect();
    recipient_ids.sort();
    recipient_ids.dedup();
    let endpoints: HashMap<Uuid, Arc<EndpointRow>> = if endpoint_ids.is_empty() {
        HashMap::new()
    } else {
        store::get_endpoints(&mut *connection, &endpoint_ids)
            .await?
            .into_iter()
            .map(|endpoint| (endpoint.endpoint_id, Arc::new(endpoint)))
            .collect()
    };
    let recipients: HashMap<Uuid, Arc<RecipientRow>> = if recipient_ids.is_empty() {
        HashMap::new()
    } else {
        store::get_recipients(&mut *connection, &recipient_ids)
            .await?
            .into_iter()
            .map(|recipient| (recipient.recipient_id, Arc::new(recipient)))
            .collect()
    };
    Ok(deliveries
        .into_iter()
        .map(|delivery| Dispatch {
            endpoint: delivery
                .endpoint_id
                .and_then(|id| endpoints.get(&id).cloned()),
            recipient: delivery
                .recipient_id
                .and_then(|id| recipients.get(&id).cloned()),
            delivery,
        })
        .collect())
}

/// Hands deliveries to the worker.
#[derive(Clone)]
pub struct Dispatcher {
    sender: mpsc::Sender<Dispatch>,
}

impl Dispatcher {
    /// Queues a delivery, waiting while the worker is full. Once the worker has stopped, the
    /// delivery keeps its lease and is claimed again when it expires.
    pub async fn dispatch(&self, dispatch: Dispatch) {
        let _stopped = self.sender.send(dispatch).await;
    }
}

/// The worker's end of the dispatcher.
pub struct Queue {
    receiver: mpsc::Receiver<Dispatch>,
}

/// A dispatcher and the queue it fills.
pub fn queue() -> (Dispatcher, Queue) {
    let (sender, receiver) = mpsc::channel(QUEUE);
    (Dispatcher { sender }, Queue { receiver })
}

/// An attempt made, to record.
struct Made {
    dispatch: Dispatch,
    started_at: DateTime<Utc>,
    latency_ms: i32,
    attempted: Attempted,
}

/// What an attempt means for its delivery.
struct Conclusion {
    attempt_number: i32,
    status: &'static str,
    error: String,
    retry_after: Option<Duration>,
    next_attempt_at: Option<DateTime<Utc>>,
    disable: Option<notifications::EndpointDisableCause>,
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

impl DeliveryWorker {
    pub fn new(
        pool: PgPool,
        schema: String,
        webhooks: WebhookSender,
        mailer: Mailer,
        events: EventFactory,
        settings: NotifierSettings,
        metrics: DeliveryMetrics,
    ) -> DeliveryWorker {
        DeliveryWorker {
            pool,
            schema,
            webhooks,
            mailer,
            events,
            settings,
            metrics,
        }
    }

    /// Runs until `shutdown`: claims due deliveries into `dispatcher`, sends what `queue` holds
    /// (at most `delivery_concurrency` at once), and records attempts as they end.
    pub async fn run(self, dispatcher: Dispatcher, queue: Queue, shutdown: CancellationToken) {
        let worker = Arc::new(self);
        let (made, records) = mpsc::channel(QUEUE);
        tokio::join!(
            worker.clone().claim(dispatcher, shutdown.clone()),
            worker.clone().send(queue, made, shutdown),
            worker.record_all(records),
        );
        tracing::info!("delivery worker stopped");
    }

    async fn claim(self: Arc<Self>, dispatcher: Dispatcher, shutdown: CancellationToken) {
        let mut listener = notify::listen(
            &self.pool,
            &notify::channel(&self.schema, store::DELIVERIES_TOPIC),
        )
        .await;
        while !shutdown.is_cancelled() {
            let claimed = match self.claim_batch().await {
                Ok(claimed) => claimed,
                Err(error) => {
                    // The claims expire and the deliveries are taken again.
                    tracing::warn!(%error, "cannot claim deliveries, retrying");
                    Vec::new()
                }
            };
            let full_batch = claimed.len() as i64 == CLAIM_BATCH;
            for dispatch in claimed {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = dispatcher.dispatch(dispatch) => {}
                }
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
    }

    async fn claim_batch(&self) -> Result<Vec<Dispatch>, sqlx::Error> {
        let claimed =
            store::claim_due(&self.pool, CLAIM_BATCH, self.settings.attempt_lease).await?;
        if claimed.is_empty() {
            return Ok(Vec::new());
        }
        let mut connection = self.pool.acquire().await?;
        dispatches(&mut connection, claimed).await
    }

    /// Sends what the queue holds, at most `delivery_concurrency` attempts at once and at most
    /// `destination_concurrency` to any one endpoint or recipient, so a slow endpoint cannot take
    /// every slot: its further deliveries wait their turn here (up to [`MAX_WAITING`] each; past
    /// that they keep their leases and are claimed again later).
    async fn send(
        self: Arc<Self>,
        mut queue: Queue,
        made: mpsc::Sender<Made>,
        shutdown: CancellationToken,
    ) {
        let concurrency = self.settings.delivery_concurrency;
        let permits = Arc::new(Semaphore::new(concurrency));
        let (done, mut finished) = mpsc::unbounded_channel::<Uuid>();
        let mut in_flight: HashMap<Uuid, usize> = HashMap::new();
        let mut waiting: HashMap<Uuid, VecDeque<Dispatch>> = HashMap::new();
        loop {
            let dispatch = tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                Some(destination) = finished.recv() => {
                    if let Some(count) = in_flight.get_mut(&destination) {
                        *count -= 1;
                        if *count == 0 {
                            in_flight.remove(&destination);
                        }
                    }
                    let next = waiting.get_mut(&destination).and_then(|queued| {
                        std::iter::from_fn(|| queued.pop_front()).find(|dispatch| self.lease_covers(dispatch))
                    });
                    match next {
                        Some(dispatch) => dispatch,
                        None => {
                            waiting.remove(&destination);
                            continue;
                        }
                    }
                }
                next = queue.receiver.recv() => match next {
                    Some(dispatch) if self.lease_covers(&dispatch) => dispatch,
                    Some(dispatch) => {
                        tracing::debug!(delivery_id = %dispatch.delivery.delivery_id, "lease too short to attempt, left for the next claim");
                        continue;
                    }
                    None => break,
                },
            };
            let destination = dispatch.destination();
            let busy = in_flight.entry(destination).or_default();
            if *busy >= self.settings.destination_concurrency {
                let queued = waiting.entry(destination).or_default();
                if queued.len() < MAX_WAITING {
                    queued.push_back(dispatch);
                }
                continue;
            }
            *busy += 1;
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            let worker = self.clone();
            let made = made.clone();
            let done = done.clone();
            tokio::spawn(async move {
                let attempt = worker.deliver(dispatch).await;
                // The recorder stops last: it is there while any attempt is.
                let _stopped = made.send(attempt).await;
                drop(permit);
                let _stopped = done.send(destination);
            });
        }
        // Deliveries still queued or waiting keep their leases and are claimed again once those
        // expire.
        let _all = permits
            .acquire_many(u32::try_from(concurrency).unwrap_or(u32::MAX))
            .await;
    }

    /// Whether a delivery's lease still covers an attempt begun now; one that waited so long that
    /// its lease would end mid-attempt is left for the claim that follows the lease, or it could be
    /// sent twice at once.
    fn lease_covers(&self, dispatch: &Dispatch) -> bool {
        let timeout = chrono::Duration::from_std(self.settings.webhook_timeout)
            .unwrap_or(chrono::Duration::MAX);
        dispatch
            .delivery
            .next_attempt_at
            .is_none_or(|lease_ends| Utc::now() + timeout <= lease_ends)
    }

    async fn record_all(self: Arc<Self>, mut records: mpsc::Receiver<Made>) {
        let mut batch = Vec::with_capacity(RECORD_BATCH);
        while records.recv_many(&mut batch, RECORD_BATCH).await > 0 {
            if let Err(error) = self.record(&batch).await {
                tracing::warn!(%error, attempts = batch.len(), "cannot record attempts; their deliveries will be retried");
            }
            batch.clear();
        }
    }

    async fn deliver(&self, dispatch: Dispatch) -> Made {
        let started_at = Utc::now();
        let clock = Instant::now();
        let attempted = match (
            dispatch.delivery.channel.as_str(),
            dispatch.endpoint.as_deref(),
            dispatch.recipient.as_deref(),
        ) {
            ("email", _, Some(recipient)) if recipient.enabled => {
                self.mail(recipient, &dispatch.delivery).await
            }
            ("email", _, Some(_)) => Attempted::from(AttemptOutcome::Fatal {
                error: "recipient is paused".into(),
                disable: None,
            }),
            ("email", _, None) if dispatch.delivery.direct => {
                self.mail_direct(&dispatch.delivery).await
            }
            ("email", _, None) => Attempted::from(AttemptOutcome::Fatal {
                error: "recipient was removed".into(),
                disable: None,
            }),
            (_, Some(endpoint), _) if endpoint.enabled => {
                self.webhooks
                    .send(
                        endpoint,
                        &dispatch.delivery.delivery_id.to_string(),
                        &dispatch.delivery.body,
                        started_at,
                    )
                    .await
            }
            (_, Some(_), _) => Attempted::from(AttemptOutcome::Fatal {
                error: "endpoint is disabled".into(),
                disable: None,
            }),
            (_, None, _) => Attempted::from(AttemptOutcome::Fatal {
                error: "endpoint was deleted".into(),
                disable: None,
            }),
        };
        Made {
            dispatch,
            started_at,
            latency_ms: i32::try_from(clock.elapsed().as_millis()).unwrap_or(i32::MAX),
            attempted,
        }
    }

    /// Sends the e-mail of a delivery to a recipient of the partner.
    async fn mail(&self, recipient: &RecipientRow, delivery: &DueDelivery) -> Attempted {
        self.mail_to(&recipient.email, &recipient.display_name, &delivery.body)
            .await
    }

    /// Sends the e-mail of a delivery to the address its event named (greeting the name it gave).
    async fn mail_direct(&self, delivery: &DueDelivery) -> Attempted {
        let body: serde_json::Value = serde_json::from_str(&delivery.body).unwrap_or_default();
        let name = body["data"]["recipientName"].as_str().unwrap_or_default();
        self.mail_to(&delivery.destination, name, &delivery.body)
            .await
    }

    /// Sends an e-mail; a refusal for good (5xx) is not retried.
    async fn mail_to(&self, address: &str, display_name: &str, body: &str) -> Attempted {
        let outcome = match self.mailer.send(address, display_name, body).await {
            Ok(()) => AttemptOutcome::Delivered,
            Err(error) if error.permanent => AttemptOutcome::Fatal {
                error: error.message,
                disable: None,
            },
            Err(error) => AttemptOutcome::Failed {
                error: error.message,
                retry_after: None,
            },
        };
        Attempted::from(outcome)
    }

    /// What an attempt means for its delivery: its new status, error, next attempt, and whether
    /// it disables the endpoint outright.
    fn conclude(&self, made: &Made) -> Conclusion {
        let attempt_number = made.dispatch.delivery.attempt_count + 1;
        match &made.attempted.outcome {
            AttemptOutcome::Delivered => Conclusion {
                attempt_number,
                status: "succeeded",
                error: String::new(),
                retry_after: None,
                next_attempt_at: None,
                disable: None,
            },
            AttemptOutcome::Fatal { error, disable } => Conclusion {
                attempt_number,
                status: "dead",
                error: error.clone(),
                retry_after: None,
                next_attempt_at: None,
                disable: *disable,
            },
            AttemptOutcome::Failed { error, retry_after } => {
                let next_attempt_at = retry_delay(
                    &self.settings.retry_schedule,
                    self.settings.retry_jitter,
                    usize::try_from(attempt_number).unwrap_or(usize::MAX),
                )
                .map(|delay| {
                    let delay = retry_after.map_or(delay, |asked| asked.max(delay));
                    made.started_at
                        + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX)
                });
                Conclusion {
                    attempt_number,
                    status: if next_attempt_at.is_some() {
                        "failed"
                    } else {
                        "dead"
                    },
                    error: error.clone(),
                    retry_after: *retry_after,
                    next_attempt_at,
                    disable: None,
                }
            }
        }
    }

    /// The event that tells integrators what an attempt made of its delivery: DeliverySucceeded,
    /// or DeliveryFailed (retried later, or dead).
    fn notice(&self, made: &Made, conclusion: &Conclusion) -> Result<OutgoingEvent, sqlx::Error> {
        let delivery = &made.dispatch.delivery;
        let ended_at = made.started_at + chrono::Duration::milliseconds(made.latency_ms.into());
        let channel = match delivery.channel.as_str() {
            "email" => notifications::DeliveryChannel::Email,
            _ => notifications::DeliveryChannel::Webhook,
        };
        let id = |id: Option<Uuid>| id.map(|id| id.to_string()).unwrap_or_default();
        let attempt_number = u32::try_from(conclusion.attempt_number).unwrap_or_default();
        let latency_ms = u32::try_from(made.latency_ms).unwrap_or_default();
        let response_status = u32::try_from(made.attempted.response_status).unwrap_or_default();
        let outgoing = if conclusion.status == "succeeded" {
            self.events.event(
                &notifications::DeliverySucceeded {
                    partner_id: delivery.partner_id.clone(),
                    tenant_id: delivery.tenant_id.clone(),
                    delivery_id: delivery.delivery_id.to_string(),
                    channel: channel.into(),
                    endpoint_id: id(delivery.endpoint_id),
                    recipient_id: id(delivery.recipient_id),
                    event_id: delivery.event_id.clone(),
                    event_type: delivery.event_type.clone(),
                    attempt_number,
                    latency_ms,
                    response_status,
                    succeeded_at: Some(to_timestamp(ended_at)),
                    end_to_end_ms: u64::try_from(
                        (ended_at - delivery.created_at).num_milliseconds(),
                    )
                    .unwrap_or_default(),
                },
                ended_at,
            )
        } else {
            self.events.event(
                &notifications::DeliveryFailed {
                    partner_id: delivery.partner_id.clone(),
                    tenant_id: delivery.tenant_id.clone(),
                    delivery_id: delivery.delivery_id.to_string(),
                    channel: channel.into(),
                    endpoint_id: id(delivery.endpoint_id),
                    recipient_id: id(delivery.recipient_id),
                    event_id: delivery.event_id.clone(),
                    event_type: delivery.event_type.clone(),
                    attempt_number,
                    latency_ms,
                    response_status,
                    error: conclusion.error.clone(),
                    failed_at: Some(to_timestamp(ended_at)),
                    next_attempt_at: conclusion.next_attempt_at.map(to_timestamp),
                    dead: conclusion.status == "dead",
                },
                ended_at,
            )
        };
        outgoing.map_err(|error| sqlx::Error::Protocol(format!("delivery notice: {error}")))
    }

    /// Records a batch of attempts in one transaction, with what they mean for their endpoints:
    /// a success ends a failure streak, a failure starts or extends one, and a streak as long as
    /// `disable_after_failing` (or a 410) disables the endpoint.
    async fn record(&self, batch: &[Made]) -> Result<(), sqlx::Error> {
        let conclusions: Vec<Conclusion> = batch.iter().map(|made| self.conclude(made)).collect();
        let records: Vec<AttemptRecord> = batch
            .iter()
            .zip(&conclusions)
            .map(|(made, conclusion)| AttemptRecord {
                delivery: &made.dispatch.delivery,
                attempt_number: conclusion.attempt_number,
                started_at: made.started_at,
                latency_ms: made.latency_ms,
                response_status: made.attempted.response_status,
                error: &conclusion.error,
                retry_after: conclusion.retry_after,
                response_excerpt: &made.attempted.response_excerpt,
                status: conclusion.status,
                next_attempt_at: conclusion.next_attempt_at,
            })
            .collect();
        let notices = batch
            .iter()
            .zip(&conclusions)
            .map(|(made, conclusion)| self.notice(made, conclusion))
            .collect::<Result<Vec<_>, _>>()?;
        let mut transaction = self.pool.begin().await?;
        store::record_attempts(&mut transaction, &records).await?;
        outbox::enqueue_all(&mut transaction, &notices).await?;
        // Endpoints that only succeeded end their streaks together; the others, rarer, go
        // attempt by attempt in the order they were made.
        let enabled = |made: &&Made| made.dispatch.endpoint.as_ref().is_some_and(|e| e.enabled);
        let failing: Vec<Uuid> = batch
            .iter()
            .zip(&conclusions)
            .filter(|(made, conclusion)| enabled(made) && conclusion.status != "succeeded")
            .filter_map(|(made, _)| made.dispatch.delivery.endpoint_id)
            .collect();
        let mut succeeded: Vec<Uuid> = batch
            .iter()
            .filter(enabled)
            .filter_map(|made| made.dispatch.delivery.endpoint_id)
            .filter(|endpoint_id| !failing.contains(endpoint_id))
            .collect();
        succeeded.sort();
        succeeded.dedup();
        if !succeeded.is_empty() {
            store::clear_failing(&mut transaction, &succeeded).await?;
        }
        let mut mixed: Vec<(&Made, &Conclusion)> = batch
            .iter()
            .zip(&conclusions)
            .filter(|(made, _)| {
                enabled(made)
                    && made
                        .dispatch
                        .delivery
                        .endpoint_id
                        .is_some_and(|id| failing.contains(&id))
            })
            .collect();
        mixed.sort_by_key(|(made, _)| made.started_at);
        for (made, conclusion) in mixed {
            let Some(endpoint) = made.dispatch.endpoint.as_deref() else {
                continue;
            };
            if conclusion.status == "succeeded" {
                store::clear_failing(&mut transaction, &[endpoint.endpoint_id]).await?;
                continue;
            }
            let mut disable = conclusion.disable;
            let mut failing_since = None;
            if disable.is_none() {
                failing_since =
                    store::mark_failing(&mut transaction, endpoint.endpoint_id, made.started_at)
                        .await?;
                let limit = chrono::Duration::from_std(self.settings.disable_after_failing)
                    .unwrap_or(chrono::Duration::MAX);
                if failing_since.is_some_and(|since| made.started_at - since >= limit) {
                    disable = Some(notifications::EndpointDisableCause::Failing);
                }
            }
            if let Some(cause) = disable {
                let reason = match (cause, failing_since) {
                    (notifications::EndpointDisableCause::Failing, Some(since)) => format!(
                        "every attempt failed since {} (last: {})",
                        since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        conclusion.error
                    ),
                    _ => format!("{} from {}", conclusion.error, endpoint.url),
                };
                disable_and_tell(
                    &mut transaction,
                    &self.events,
                    endpoint.endpoint_id,
                    &Disabling {
                        cause,
                        reason: &reason,
                        failing_since,
                        last_response_status: made.attempted.response_status,
                    },
                )
                .await?;
            }
        }
        transaction.commit().await?;
        for (made, conclusion) in batch.iter().zip(&conclusions) {
            let channel = &made.dispatch.delivery.channel;
            self.metrics
                .attempts
                .get_or_create(&AttemptLabels {
                    channel: channel.clone(),
                    status: conclusion.status,
                })
                .inc();
            self.metrics
                .attempt_seconds
                .get_or_create(&ChannelLabels {
                    channel: channel.clone(),
                })
                .observe(f64::from(made.latency_ms) / 1000.0);
            if conclusion.status != "succeeded" {
                tracing::info!(
                    delivery_id = %made.dispatch.delivery.delivery_id,
                    attempt_number = conclusion.attempt_number,
                    status = conclusion.status,
                    error = %conclusion.error,
                    "webhook attempt failed"
                );
            }
        }
        Ok(())
    }
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
