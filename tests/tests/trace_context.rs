//! W3C trace context crosses NATS: the incident event the prioritizer publishes carries the trace
//! id of the finding that caused it.

use std::time::Duration;

use futures::StreamExt;
use picket_e2e::{start_prioritizer, suspicious_sign_in};
use picket_platform::nats::OutgoingEvent;
use picket_testkit::TestEnv;

/// The trace id of a `traceparent` header: `00-<trace id>-<span id>-<flags>`.
fn trace_id(traceparent: &str) -> &str {
    traceparent.split('-').nth(1).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incident_event_continues_the_trace_of_its_finding() {
    let env = TestEnv::new().await;
    let mut incident_events = env
        .nats
        .subscribe(format!("{}.incidents.v1.incident_opened.>", env.namespace))
        .await
        .expect("subscribe");
    let prioritizer = start_prioritizer(&env, "").await;

    let finding = suspicious_sign_in("p1", "t1", "fp-1");
    let outgoing = {
        let span = tracing::info_span!("scan");
        let _entered = span.enter();
        OutgoingEvent::new(&env.subjects, "scanner", &finding, chrono::Utc::now())
            .expect("valid ids")
    };
    let published_traceparent = outgoing
        .trace_context
        .get("traceparent")
        .cloned()
        .expect("the scan span has a trace");
    env.publish_outgoing(&outgoing).await;

    let opened = tokio::time::timeout(Duration::from_secs(20), incident_events.next())
        .await
        .expect("IncidentOpened is published")
        .expect("subscription open");
    let received_traceparent = opened
        .headers
        .as_ref()
        .and_then(|headers| headers.get("traceparent"))
        .map(|value| value.as_str().to_owned())
        .expect("IncidentOpened carries a traceparent");
    assert_eq!(
        trace_id(&received_traceparent),
        trace_id(&published_traceparent),
        "one trace across NATS"
    );
    assert_ne!(
        received_traceparent, published_traceparent,
        "a new span within that trace"
    );

    prioritizer.shutdown().await;
    env.teardown().await;
}
