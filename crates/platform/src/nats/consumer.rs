//! The consumer runner: a durable pull consumer with explicit acks, spread over lanes so events of
//! one tenant stay in order while tenants run in parallel. A failing message is redelivered with
//! backoff up to `nats.max_deliver` times; an undecodable or rejected message, or one that keeps
//! failing, is published to `<namespace>.dlq.<service>` with the reason in a header, then acked.
//! Nothing is acked before it is either handled or safely dead-lettered.

use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind, consumer::pull};
use futures::StreamExt;
use picket_proto::Area;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::metrics::{ConsumerLabels, ConsumerOutcomeLabels, Metrics};
use crate::nats::envelope::{EnvelopeError, InboundEvent, NATS_MSG_ID};
use crate::nats::subjects::Subjects;
use crate::settings::NatsSettings;
use crate::telemetry::{self, NatsHeaders};

/// Header of a dead letter carrying why it was given up on.
pub const DLQ_REASON: &str = "Picket-Dlq-Reason";
pub const DLQ_SUBJECT: &str = "Picket-Dlq-Subject";
pub const DLQ_STREAM: &str = "Picket-Dlq-Stream";
pub const DLQ_SEQUENCE: &str = "Picket-Dlq-Sequence";
pub const DLQ_CONSUMER: &str = "Picket-Dlq-Consumer";
pub const DLQ_DELIVERIES: &str = "Picket-Dlq-Deliveries";

/// What a handler reports when it could not apply an event.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The event can never be applied (undecodable, invalid): dead-letter it now.
    #[error("rejected: {0}")]
    Rejected(String),
    /// Applying it failed for now (database or network): retry with backoff.
    #[error("transient: {0}")]
    Transient(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl HandlerError {
    pub fn transient(error: impl std::error::Error + Send + Sync + 'static) -> HandlerError {
        HandlerError::Transient(Box::new(error))
    }
}

impl From<EnvelopeError> for HandlerError {
    fn from(error: EnvelopeError) -> HandlerError {
        HandlerError::Rejected(format!("undecodable event: {error}"))
    }
}

impl From<sqlx::Error> for HandlerError {
    fn from(error: sqlx::Error) -> HandlerError {
        HandlerError::transient(error)
    }
}

/// Applies one event. Must be idempotent: the platform's inbox makes that easy.
pub trait EventHandler: Send + Sync + 'static {
    fn handle(&self, event: InboundEvent) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

/// Which events a consumer reads.
#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    /// Durable name, unique per service and purpose, such as `prioritizer-findings`.
    pub durable_name: String,
    pub area: Area,
    /// Subjects to read within the area's stream; empty reads the whole area.
    pub filter_subjects: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot create consumer {durable_name}: {reason}")]
pub struct ConsumerError {
    durable_name: String,
    reason: String,
}

/// Where a message sits in its stream.
struct StreamPosition {
    stream: String,
    sequence: u64,
}

enum Outcome {
    Ack,
    Retry(Duration),
    DeadLetter(String),
}

struct Worker<H> {
    handler: Arc<H>,
    jetstream: jetstream::Context,
    subjects: Subjects,
    settings: NatsSettings,
    dead_letter_subject: String,
    durable_name: String,
    metrics: Arc<Metrics>,
}

/// A consumer created on the server, ready to run.
pub struct Consumer<H> {
    consumer: jetstream::consumer::Consumer<pull::Config>,
    worker: Arc<Worker<H>>,
}

impl<H: EventHandler> Consumer<H> {
    /// Creates (or updates) the durable consumer, so readiness can wait for it.
    pub async fn create(
        jetstream: &jetstream::Context,
        subjects: &Subjects,
        settings: &NatsSettings,
        service: &str,
        spec: ConsumerSpec,
        handler: H,
        metrics: Arc<Metrics>,
    ) -> Result<Consumer<H>, ConsumerError> {
        let failed = |reason: String| ConsumerError {
            durable_name: spec.durable_name.clone(),
            reason,
        };
        let mut config = pull::Config {
            durable_name: Some(spec.durable_name.clone()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: settings.ack_wait,
            // The runner counts deliveries itself and dead-letters past the bound, so the server
            // never stops delivering a message silently.
            max_deliver: -1,
            max_ack_pending: settings.max_ack_pending,
            ..Default::default()
        };
        match spec.filter_subjects.as_slice() {
            [] => {}
            [single] => config.filter_subject = single.clone(),
            several => config.filter_subjects = several.to_vec(),
        }
        let stream_name = subjects.stream_name(spec.area);
        let consumer = jetstream
            .create_consumer_on_stream(config, stream_name.as_str())
            .await
            .map_err(|error| failed(error.to_string()))?;
        let worker = Worker {
            handler: Arc::new(handler),
            jetstream: jetstream.clone(),
            subjects: subjects.clone(),
            settings: settings.clone(),
            dead_letter_subject: subjects.dead_letter_subject(service),
            durable_name: spec.durable_name,
            metrics,
        };
        Ok(Consumer {
            consumer,
            worker: Arc::new(worker),
        })
    }

    /// Pulls and handles messages until `shutdown`, then lets the lanes finish what they hold.
    pub async fn run(self, shutdown: CancellationToken) {
        let lane_count = self.worker.settings.lanes;
        let mut lanes = tokio::task::JoinSet::new();
        let mut senders = Vec::with_capacity(lane_count);
        for _ in 0..lane_count {
            let (sender, mut receiver) = mpsc::channel::<jetstream::Message>(4);
            let worker = self.worker.clone();
            lanes.spawn(async move {
                while let Some(message) = receiver.recv().await {
                    worker.process(message).await;
                }
            });
            senders.push(sender);
        }
        let durable_name = self.worker.durable_name.clone();
        'pulling: while !shutdown.is_cancelled() {
            let mut messages = match self.consumer.messages().await {
                Ok(messages) => messages,
                Err(error) => {
                    tracing::warn!(consumer = %durable_name, %error, "cannot pull messages, retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => break 'pulling,
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue 'pulling,
                    }
                }
            };
            loop {
                let next = tokio::select! {
                    biased;
                    () = shutdown.cancelled() => break 'pulling,
                    next = messages.next() => next,
                };
                match next {
                    Some(Ok(message)) => {
                        let lane = lane_of(&message.subject, lane_count);
                        if senders[lane].send(message).await.is_err() {
                            break 'pulling;
                        }
                    }
                    Some(Err(error)) => {
                        tracing::warn!(consumer = %durable_name, %error, "pull failed");
                    }
                    None => continue 'pulling,
                }
            }
        }
        drop(senders);
        while lanes.join_next().await.is_some() {}
        tracing::info!(consumer = %durable_name, "consumer stopped");
    }
}

/// Events of one tenant (the last two subject tokens) always take the same lane.
fn lane_of(subject: &str, lane_count: usize) -> usize {
    let mut tokens = subject.rsplitn(3, '.');
    let tenant = tokens.next().unwrap_or_default();
    let partner = tokens.next().unwrap_or_default();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (partner, tenant).hash(&mut hasher);
    (hasher.finish() % lane_count as u64) as usize
}

impl<H: EventHandler> Worker<H> {
    async fn process(&self, message: jetstream::Message) {
        let started = Instant::now();
        let labels = ConsumerLabels {
            consumer: self.durable_name.clone(),
        };
        let (delivered, position) = match message.info() {
            Ok(info) => {
                self.metrics
                    .consumer_pending
                    .get_or_create(&labels)
                    .set(info.pending as i64);
                (
                    info.delivered,
                    StreamPosition {
                        stream: info.stream.to_owned(),
                        sequence: info.stream_sequence,
                    },
                )
            }
            Err(_) => (
                1,
                StreamPosition {
                    stream: String::new(),
                    sequence: 0,
                },
            ),
        };
        if delivered > 1 {
            self.metrics
                .messages_redelivered
                .get_or_create(&labels)
                .inc();
        }
        let span = tracing::info_span!(
            "handle event",
            consumer = %self.durable_name,
            subject = %message.subject,
            event_id = tracing::field::Empty,
            event_type = tracing::field::Empty,
            delivered,
        );
        if let Some(headers) = message.headers.as_ref() {
            telemetry::set_parent_from(&span, &NatsHeaders(headers));
        }
        // The span is entered only while this future runs: a guard held across awaits would leak
        // into other tasks on the thread and corrupt its trace context.
        let outcome_label = async {
            let outcome = self.decide(&message, delivered).await;
            self.settle(&message, outcome, delivered, &position).await
        }
        .instrument(span)
        .await;
        let outcome_labels = ConsumerOutcomeLabels {
            consumer: self.durable_name.clone(),
            outcome: outcome_label,
        };
        self.metrics
            .messages_processed
            .get_or_create(&outcome_labels)
            .inc();
        self.metrics
            .message_handling_seconds
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
    }

    /// Acks, naks or dead-letters the message as decided; returns the outcome's metric label.
    async fn settle(
        &self,
        message: &jetstream::Message,
        outcome: Outcome,
        delivered: i64,
        position: &StreamPosition,
    ) -> &'static str {
        match outcome {
            Outcome::Ack => {
                // A plain ack, not a confirmed one: a lost ack only brings a redelivery, which the
                // handler's inbox absorbs, while waiting for the server to confirm every ack costs
                // each message a round trip (the prioritizer bench: 17% more findings/s without).
                if let Err(error) = message.ack().await {
                    tracing::warn!(%error, "ack failed, the message will be redelivered");
                }
                "acked"
            }
            Outcome::Retry(delay) => {
                if let Err(error) = message.ack_with(AckKind::Nak(Some(delay))).await {
                    tracing::warn!(%error, "nak failed, the message will be redelivered after ack wait");
                }
                "retried"
            }
            Outcome::DeadLetter(reason) => {
                match self
                    .dead_letter(message, &reason, delivered, position)
                    .await
                {
                    Ok(()) => {
                        tracing::warn!(%reason, "message dead-lettered");
                        if let Err(error) = message.double_ack().await {
                            tracing::warn!(%error, "ack of a dead-lettered message failed");
                        }
                        "dead_lettered"
                    }
                    Err(error) => {
                        // Never dropped: if the dead-letter subject is unreachable, try again later.
                        tracing::error!(%error, %reason, "dead-lettering failed, will retry");
                        let delay = self.backoff(delivered);
                        let _ignored = message.ack_with(AckKind::Nak(Some(delay))).await;
                        "retried"
                    }
                }
            }
        }
    }

    async fn decide(&self, message: &jetstream::Message, delivered: i64) -> Outcome {
        let event = match InboundEvent::parse(
            &self.subjects,
            &message.subject,
            message.headers.as_ref(),
            message.payload.clone(),
            delivered,
        ) {
            Ok(event) => event,
            Err(error) => return Outcome::DeadLetter(format!("undecodable event: {error}")),
        };
        let span = tracing::Span::current();
        span.record("event_id", event.id.as_str());
        span.record("event_type", event.event_type.as_str());
        let max_deliver = self.settings.max_deliver;
        if delivered > max_deliver {
            return Outcome::DeadLetter(format!("gave up after {max_deliver} deliveries"));
        }
        match self.handler.handle(event).await {
            Ok(()) => Outcome::Ack,
            Err(HandlerError::Rejected(reason)) => Outcome::DeadLetter(reason),
            Err(HandlerError::Transient(error)) if delivered >= max_deliver => {
                Outcome::DeadLetter(format!("failed {delivered} times, last error: {error}"))
            }
            Err(HandlerError::Transient(error)) => {
                let delay = self.backoff(delivered);
                tracing::warn!(%error, retry_in = ?delay, "event handling failed, will retry");
                Outcome::Retry(delay)
            }
        }
    }

    fn backoff(&self, delivered: i64) -> Duration {
        let schedule = &self.settings.redelivery_backoff;
        let index = usize::try_from(delivered.saturating_sub(1)).unwrap_or_default();
        schedule[index.min(schedule.len() - 1)]
    }

    async fn dead_letter(
        &self,
        message: &jetstream::Message,
        reason: &str,
        delivered: i64,
        position: &StreamPosition,
    ) -> Result<(), async_nats::Error> {
        let mut headers = message.headers.clone().unwrap_or_default();
        // Header values are single lines.
        let reason: String = reason
            .replace(['\r', '\n'], " ")
            .chars()
            .take(1024)
            .collect();
        headers.insert(DLQ_REASON, reason.as_str());
        headers.insert(DLQ_SUBJECT, message.subject.as_str());
        headers.insert(DLQ_STREAM, position.stream.as_str());
        headers.insert(DLQ_SEQUENCE, position.sequence.to_string().as_str());
        headers.insert(DLQ_CONSUMER, self.durable_name.as_str());
        headers.insert(DLQ_DELIVERIES, delivered.to_string().as_str());
        // A redelivered dead letter de-duplicates against the first one.
        let dead_letter_id = format!("dlq-{}-{}", self.durable_name, position.sequence);
        headers.insert(NATS_MSG_ID, dead_letter_id.as_str());
        self.jetstream
            .publish_with_headers(
                self.dead_letter_subject.clone(),
                headers,
                message.payload.clone(),
            )
            .await?
            .await?;
        Ok(())
    }
}
