//! The platform's consumer runner with a handler that keeps failing: the message is redelivered
//! with backoff up to `nats.max_deliver` times, then dead-lettered with the last error, and acked.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures::StreamExt;
use picket_e2e::suspicious_sign_in;
use picket_platform::metrics::Metrics;
use picket_platform::nats::consumer::{DLQ_DELIVERIES, DLQ_REASON};
use picket_platform::nats::{
    Consumer, ConsumerSpec, EventHandler, HandlerError, InboundEvent, streams,
};
use picket_platform::settings::NoServiceSettings;
use picket_proto::Area;
use picket_testkit::TestEnv;
use tokio_util::sync::CancellationToken;

struct AlwaysFailing {
    attempts: Arc<AtomicU32>,
}

impl EventHandler for AlwaysFailing {
    async fn handle(&self, _event: InboundEvent) -> Result<(), HandlerError> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        Err(HandlerError::transient(std::io::Error::other(
            "database unavailable",
        )))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_that_keeps_failing_is_dead_lettered_after_max_deliver() {
    let env = TestEnv::new().await;
    let (settings, _) =
        env.settings::<NoServiceSettings>("runner", "", "[nats]\nmax_deliver = 3\n");
    streams::provision(&env.jetstream, &env.subjects, &settings.nats)
        .await
        .expect("streams");
    let mut dead_letters = env
        .nats
        .subscribe(env.subjects.dead_letter_subject("runner"))
        .await
        .expect("subscribe");
    let attempts = Arc::new(AtomicU32::new(0));
    let consumer = Consumer::create(
        &env.jetstream,
        &env.subjects,
        &settings.nats,
        "runner",
        ConsumerSpec {
            durable_name: "runner-findings".into(),
            area: Area::Findings,
            filter_subjects: Vec::new(),
        },
        AlwaysFailing {
            attempts: attempts.clone(),
        },
        Arc::new(Metrics::new()),
    )
    .await
    .expect("consumer created");
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(consumer.run(shutdown.clone()));

    let finding = suspicious_sign_in("p1", "t1", "fp-1");
    env.publish("scanner", &finding).await;

    let dead_letter = tokio::time::timeout(Duration::from_secs(20), dead_letters.next())
        .await
        .expect("dead-lettered after its last delivery")
        .expect("subscription open");
    let header = |name: &str| {
        dead_letter
            .headers
            .as_ref()
            .and_then(|headers| headers.get(name))
            .map(|value| value.as_str().to_owned())
    };
    assert_eq!(
        attempts.load(Ordering::SeqCst),
        3,
        "one attempt per delivery, max_deliver of them"
    );
    assert_eq!(header(DLQ_DELIVERIES).as_deref(), Some("3"));
    let reason = header(DLQ_REASON).unwrap_or_default();
    assert!(
        reason.contains("failed 3 times") && reason.contains("database unavailable"),
        "reason: {reason}"
    );

    // Acked once dead-lettered: nothing is delivered again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(attempts.load(Ordering::SeqCst), 3);

    shutdown.cancel();
    running.await.expect("the runner stops");
    env.teardown().await;
}
