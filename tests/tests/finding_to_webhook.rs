//! One finding travelling end to end: FindingObserved on its subject, an incident opened by the
//! prioritizer, IncidentOpened through its outbox, a Standard Webhooks delivery by the notifier.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use picket_e2e::{admin_get, channel, start_notifier, start_prioritizer, suspicious_sign_in};
use picket_platform::nats::InboundEvent;
use picket_proto::incidents::v1::incident_service_client::IncidentServiceClient;
use picket_proto::incidents::v1::{GetIncidentRequest, ListIncidentsRequest};
use picket_proto::notifications::v1::channel_service_client::ChannelServiceClient;
use picket_proto::notifications::v1::{
    CreateWebhookEndpointRequest, DeliveryChannel, DeliveryFailed, DeliverySucceeded,
};
use picket_testkit::{
    TestEnv, WebhookReceiver, eventually, reference_library_accepts, verify_standard_webhook,
};

const WAIT: Duration = Duration::from_secs(30);

/// Registers a webhook endpoint for `partner_id` and returns its secret.
async fn register_endpoint(
    env: &TestEnv,
    notifier: &picket_platform::Application,
    partner_id: &str,
    url: &str,
) -> String {
    let mut channels = ChannelServiceClient::new(channel(notifier).await);
    let request = CreateWebhookEndpointRequest {
        partner_id: partner_id.into(),
        url: url.into(),
        description: "partner SOC".into(),
        // The prioritizer also tells of theme launches; these tests follow incidents.
        event_types: vec!["incident.opened".into()],
        ..Default::default()
    };
    let response = channels
        .create_webhook_endpoint(env.request(&env.partner_token(partner_id), request))
        .await
        .expect("endpoint created")
        .into_inner();
    assert!(response.secret.starts_with("whsec_"));
    response.secret
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn monitoring_finding_reaches_the_partner_as_a_signed_webhook() {
    let env = TestEnv::new().await;
    let prioritizer = start_prioritizer(&env, "").await;
    let notifier = start_notifier(&env, "").await;
    let receiver = WebhookReceiver::start().await;
    let secret = register_endpoint(&env, &notifier, "p1", &receiver.url()).await;

    env.publish("scanner", &suspicious_sign_in("p1", "t1", "fp-1"))
        .await;

    let webhook = eventually(WAIT, "the incident webhook", || async {
        receiver.received().into_iter().next()
    })
    .await;
    assert!(
        verify_standard_webhook(&secret, &webhook),
        "signature must verify"
    );
    reference_library_accepts(&secret, &webhook).expect("the reference verifier accepts it");
    let body = webhook.json();
    assert_eq!(body["type"], "incident.opened");
    assert_eq!(body["data"]["partnerId"], "p1");
    assert_eq!(body["data"]["tenantId"], "t1");
    assert_eq!(body["data"]["incident"]["state"], "INCIDENT_STATE_OPEN");
    assert_eq!(body["data"]["incident"]["severity"], "SEVERITY_HIGH");
    let incident_id = body["data"]["incident"]["incidentId"]
        .as_str()
        .expect("incident id")
        .to_owned();

    let mut incidents = IncidentServiceClient::new(channel(&prioritizer).await);
    let incident = incidents
        .get_incident(env.request(&env.partner_token("p1"), GetIncidentRequest { incident_id }))
        .await
        .expect("the partner reads its incident")
        .into_inner()
        .incident
        .expect("incident");
    assert_eq!(incident.fingerprint, "fp-1");
    assert_eq!(
        incident.recommended_fix,
        "Revoke the user's sessions and reset the password"
    );

    // The domain counters: the incident the prioritizer published, the attempt that delivered it.
    let (_, published) = admin_get(&prioritizer, "/metrics").await;
    assert!(
        published.contains(
            r#"picket_events_published_total{event_type="picket.incidents.v1.IncidentOpened"} 1"#
        ),
        "prioritizer metrics:\n{published}"
    );
    let delivered = r#"picket_delivery_attempts_total{channel="webhook",status="succeeded"} 1"#;
    eventually(WAIT, "the attempt counted", || async {
        let (_, metrics) = admin_get(&notifier, "/metrics").await;
        metrics.contains(delivered).then_some(())
    })
    .await;
    let (_, metrics) = admin_get(&notifier, "/metrics").await;
    assert!(
        metrics.contains(r#"picket_delivery_attempt_seconds_count{channel="webhook"} 1"#),
        "notifier metrics:\n{metrics}"
    );

    prioritizer.shutdown().await;
    notifier.shutdown().await;
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn same_finding_published_twice_opens_one_incident() {
    let env = TestEnv::new().await;
    let prioritizer = start_prioritizer(&env, "").await;
    let notifier = start_notifier(&env, "").await;
    let receiver = WebhookReceiver::start().await;
    register_endpoint(&env, &notifier, "p1", &receiver.url()).await;

    let finding = suspicious_sign_in("p1", "t1", "fp-1");
    let first = env.publish("scanner", &finding).await;
    // The very same event again (a publisher retry), then the same finding from the next scan.
    env.publish_outgoing(&first).await;
    env.publish("scanner", &finding).await;

    let mut incidents = IncidentServiceClient::new(channel(&prioritizer).await);
    let token = env.partner_token("p1");
    let listed = eventually(WAIT, "the repeat to join the incident", || {
        let mut client = incidents.clone();
        let request = env.request(
            &token,
            ListIncidentsRequest {
                partner_id: "p1".into(),
                ..Default::default()
            },
        );
        async move {
            let listed = client
                .list_incidents(request)
                .await
                .expect("list")
                .into_inner()
                .incidents;
            listed
                .first()
                .is_some_and(|incident| incident.occurrence_count == 2)
                .then_some(listed)
        }
    })
    .await;
    assert_eq!(listed.len(), 1, "one incident for one fingerprint");

    eventually(WAIT, "the webhook", || async {
        (!receiver.delivered_ids().is_empty()).then_some(())
    })
    .await;
    // Give a duplicate every chance to show up before counting.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        receiver.received().len(),
        1,
        "the partner hears of the incident once"
    );

    let again = incidents
        .list_incidents(env.request(&token, ListIncidentsRequest::default()))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(again.incidents.len(), 1);

    prioritizer.shutdown().await;
    notifier.shutdown().await;
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_webhook_is_retried_with_the_same_webhook_id() {
    let env = TestEnv::new().await;
    let prioritizer = start_prioritizer(&env, "").await;
    let notifier = start_notifier(&env, "").await;
    let receiver = WebhookReceiver::start().await;
    let secret = register_endpoint(&env, &notifier, "p1", &receiver.url()).await;
    receiver.answer_next_with(&[500, 503]);
    // Integrators hear of every attempt on the notifications stream.
    let mut notices = env
        .nats
        .subscribe(format!("{}.notifications.v1.*.p1.t1", env.namespace))
        .await
        .expect("subscribed");
    env.nats.flush().await.expect("flushed");

    env.publish("scanner", &suspicious_sign_in("p1", "t1", "fp-1"))
        .await;

    let attempts = eventually(WAIT, "a successful retry", || async {
        let received = receiver.received();
        received
            .iter()
            .any(|webhook| webhook.answered == 200)
            .then_some(received)
    })
    .await;
    let statuses: Vec<u16> = attempts.iter().map(|webhook| webhook.answered).collect();
    assert_eq!(statuses, [500, 503, 200]);
    let ids: BTreeSet<&str> = attempts.iter().map(|webhook| webhook.id.as_str()).collect();
    assert_eq!(ids.len(), 1, "every attempt carries the same webhook-id");
    assert!(
        attempts
            .iter()
            .all(|webhook| verify_standard_webhook(&secret, webhook))
    );
    assert!(
        attempts
            .iter()
            .all(|webhook| webhook.body == attempts[0].body),
        "the same body each time"
    );

    let mut notice = async || {
        let message = tokio::time::timeout(WAIT, notices.next())
            .await
            .expect("a delivery notice")
            .expect("subscription open");
        InboundEvent::parse(
            &env.subjects,
            &message.subject,
            message.headers.as_ref(),
            message.payload,
            1,
        )
        .expect("a Picket event")
    };
    for (attempt, status) in [(1, 500), (2, 503)] {
        let failed: DeliveryFailed = notice().await.decode().expect("DeliveryFailed");
        assert_eq!(
            (failed.attempt_number, failed.response_status),
            (attempt, status)
        );
        assert_eq!(failed.event_type, "incident.opened");
        assert!(
            !failed.dead && failed.next_attempt_at.is_some(),
            "{failed:?}"
        );
        assert_eq!(failed.delivery_id, attempts[0].id);
    }
    let succeeded: DeliverySucceeded = notice().await.decode().expect("DeliverySucceeded");
    assert_eq!(
        (succeeded.attempt_number, succeeded.response_status),
        (3, 200)
    );
    assert_eq!(succeeded.delivery_id, attempts[0].id);
    assert_eq!(succeeded.channel, i32::from(DeliveryChannel::Webhook));
    assert!(succeeded.end_to_end_ms >= u64::from(succeeded.latency_ms));

    prioritizer.shutdown().await;
    notifier.shutdown().await;
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_notifier_mid_stream_loses_no_delivery() {
    let env = TestEnv::new().await;
    let prioritizer = start_prioritizer(&env, "").await;
    let notifier = start_notifier(&env, "").await;
    let receiver = WebhookReceiver::start().await;
    register_endpoint(&env, &notifier, "p1", &receiver.url()).await;
    receiver.set_delay(Duration::from_millis(100));

    let findings = 40;
    for index in 0..findings {
        let tenant = format!("t{}", index % 8);
        env.publish(
            "scanner",
            &suspicious_sign_in("p1", &tenant, &format!("fp-{index}")),
        )
        .await;
    }
    eventually(WAIT, "the first deliveries", || async {
        (receiver.delivered_ids().len() >= 5).then_some(())
    })
    .await;
    notifier.kill();
    let delivered_before_restart = receiver.delivered_ids().len();
    assert!(
        delivered_before_restart < findings,
        "the kill must happen mid-stream"
    );

    let restarted = start_notifier(&env, "").await;
    let delivered = eventually(
        Duration::from_secs(60),
        "every delivery after the restart",
        || async {
            let delivered = receiver.delivered_ids();
            (delivered.len() >= findings).then_some(delivered)
        },
    )
    .await;
    assert_eq!(delivered.len(), findings, "one delivery per incident");
    let incidents: BTreeSet<String> = receiver
        .received()
        .iter()
        .map(|webhook| {
            webhook.json()["data"]["incident"]["incidentId"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(incidents.len(), findings, "every incident was told");

    prioritizer.shutdown().await;
    restarted.shutdown().await;
    env.teardown().await;
}
