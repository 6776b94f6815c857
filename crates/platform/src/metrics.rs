//! Prometheus metrics of one service: one explicit registry (so several services can run in one
//! test process), the platform's own families, and room for each service's domain counters.
//! gRPC families follow go-grpc-prometheus names, which common dashboards expect.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrpcLabels {
    pub grpc_service: String,
    pub grpc_method: String,
    pub grpc_type: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrpcHandledLabels {
    pub grpc_service: String,
    pub grpc_method: String,
    pub grpc_type: &'static str,
    pub grpc_code: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    /// The event's protobuf full name (its `ce-type`), such as `picket.incidents.v1.IncidentOpened`.
    pub event_type: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConsumerLabels {
    pub consumer: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConsumerOutcomeLabels {
    pub consumer: String,
    /// `acked`, `retried` or `dead_lettered`.
    pub outcome: &'static str,
}

pub fn latency_histogram() -> Histogram {
    // 1 ms to ~16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

pub struct Metrics {
    registry: Mutex<Registry>,
    pub grpc_started: Family<GrpcLabels, Counter>,
    pub grpc_handled: Family<GrpcHandledLabels, Counter>,
    pub grpc_handling_seconds: Family<GrpcLabels, Histogram, fn() -> Histogram>,
    pub messages_processed: Family<ConsumerOutcomeLabels, Counter>,
    pub messages_redelivered: Family<ConsumerLabels, Counter>,
    pub message_handling_seconds: Family<ConsumerLabels, Histogram, fn() -> Histogram>,
    pub consumer_pending: Family<ConsumerLabels, Gauge>,
    /// The domain's own count: every event a service published (incidents opened, fixes applied,
    /// credits debited, purges completed, ...), by type.
    pub events_published: Family<EventLabels, Counter>,
    pub outbox_publish_failures: Counter,
    /// Events the outbox relay could never publish and set aside, by type.
    pub outbox_events_set_aside: Family<EventLabels, Counter>,
}

impl Metrics {
    pub fn new() -> Metrics {
        let metrics = Metrics {
            registry: Mutex::new(Registry::default()),
            grpc_started: Family::default(),
            grpc_handled: Family::default(),
            grpc_handling_seconds: Family::new_with_constructor(latency_histogram),
            messages_processed: Family::default(),
            messages_redelivered: Family::default(),
            message_handling_seconds: Family::new_with_constructor(latency_histogram),
            consumer_pending: Family::default(),
            events_published: Family::default(),
            outbox_publish_failures: Counter::default(),
            outbox_events_set_aside: Family::default(),
        };
        {
            let mut registry = metrics
                .registry
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            registry.register(
                "grpc_server_started",
                "RPCs started on the server",
                metrics.grpc_started.clone(),
            );
            registry.register(
                "grpc_server_handled",
                "RPCs completed on the server, by status code",
                metrics.grpc_handled.clone(),
            );
            registry.register(
                "grpc_server_handling_seconds",
                "Response latency of RPCs handled by the server",
                metrics.grpc_handling_seconds.clone(),
            );
            registry.register(
                "nats_messages_processed",
                "Messages a consumer finished with, by outcome",
                metrics.messages_processed.clone(),
            );
            registry.register(
                "nats_messages_redelivered",
                "Messages received again after an earlier delivery",
                metrics.messages_redelivered.clone(),
            );
            registry.register(
                "nats_message_handling_seconds",
                "Time a consumer spent on one message",
                metrics.message_handling_seconds.clone(),
            );
            registry.register(
                "nats_consumer_pending",
                "Messages the server holds for a consumer that it has not delivered yet",
                metrics.consumer_pending.clone(),
            );
            registry.register(
                "picket_events_published",
                "Domain events published to JetStream, by type",
                metrics.events_published.clone(),
            );
            registry.register(
                "picket_outbox_publish_failures",
                "Failed attempts to relay outbox events",
                metrics.outbox_publish_failures.clone(),
            );
            registry.register(
                "picket_outbox_events_set_aside",
                "Events the outbox relay could never publish (too large), moved aside with the reason",
                metrics.outbox_events_set_aside.clone(),
            );
        }
        metrics
    }

    /// Adds a service's own domain metric, named `picket_<something>`.
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.registry
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .register(name, help, metric);
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let registry = self
            .registry
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let mut text = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &registry) {
            tracing::warn!(%error, "metrics encoding failed");
        }
        text
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}
