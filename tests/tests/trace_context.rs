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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_continues_the_trace_of_the_grpc_call_that_caused_it() {
    let env = TestEnv::new().await;
    let mut purchases = env
        .nats
        .subscribe(format!("{}.ledger.v1.credits_purchased.>", env.namespace))
        .await
        .expect("subscribe");
    let (platform, own) = env.settings(ledger::SERVICE, ledger::DEFAULTS, "");
    let ledger = ledger::build(platform, own, tokio_util::sync::CancellationToken::new())
        .await
        .expect("ledger starts");
    let channel = picket_e2e::channel(&ledger).await;
    let caller_traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut request = env.request(
        &env.operator_token(),
        picket_proto::ledger::v1::PurchaseCreditsRequest {
            partner_id: "p1".into(),
            idempotency_key: "traced".into(),
            minutes: 60,
            ..Default::default()
        },
    );
    request
        .metadata_mut()
        .insert("traceparent", caller_traceparent.parse().expect("ascii"));
    picket_proto::ledger::v1::credit_ledger_service_client::CreditLedgerServiceClient::new(channel)
        .purchase_credits(request)
        .await
        .expect("bought");
    let purchased = tokio::time::timeout(Duration::from_secs(20), purchases.next())
        .await
        .expect("CreditsPurchased is published")
        .expect("subscription open");
    let received = purchased
        .headers
        .as_ref()
        .and_then(|headers| headers.get("traceparent"))
        .map(|value| value.as_str().to_owned())
        .expect("CreditsPurchased carries a traceparent");
    assert_eq!(
        trace_id(&received),
        trace_id(caller_traceparent),
        "one trace from the gRPC call to the event, across the ledger's group commit"
    );
    ledger.shutdown().await;
    env.teardown().await;
}
