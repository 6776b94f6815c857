//! The notifier's delivery rules against a real receiver, NATS and PostgreSQL: Retry-After, 410,
//! an endpoint disabled after failing without a break, the delivery log, redelivery by hand, bulk
//! replay, the endpoints' own API (test sends, secret rotation, disabling, deletion), one delivery
//! per change, and private addresses refused.
//! Incident events are published as the prioritizer would.

use std::time::Duration;

use picket_e2e::NotifierClient;
use picket_proto::common::v1::TimeRange;
use picket_proto::incidents::v1::{Incident, IncidentOpened, IncidentResolved};
use picket_proto::notifications::v1::{
    AttemptTrigger, CreateWebhookEndpointRequest, DeleteWebhookEndpointRequest, Delivery,
    DeliveryAttempt, DeliveryStatus, GetDeliveryRequest, GetWebhookEndpointRequest,
    ListDeliveriesRequest, RedeliverDeliveryRequest, ReplayFailedDeliveriesRequest,
    RotateWebhookSecretRequest, RotateWebhookSecretResponse, SendTestWebhookRequest,
    UpdateWebhookEndpointRequest, WebhookEndpoint,
};
use picket_testkit::{
    WebhookReceiver, eventually, reference_library_accepts, verify_standard_webhook,
};
use tonic::Code;

const WAIT: Duration = Duration::from_secs(30);

/// The steps these tests take with a notifier.
trait WebhookSteps {
    /// An endpoint of `p1` at `receiver` for `event_types` (empty = all); returns it and its secret.
    async fn endpoint(
        &mut self,
        receiver: &WebhookReceiver,
        event_types: &[&str],
    ) -> (WebhookEndpoint, String);

    async fn open_incident(&self, incident_id: &str);

    async fn endpoint_now(&mut self, endpoint_id: &str) -> WebhookEndpoint;

    async fn list(&mut self, message: ListDeliveriesRequest) -> Vec<Delivery>;

    async fn delivery(&mut self, delivery_id: &str) -> (Delivery, Vec<DeliveryAttempt>);

    /// Waits until the listing of `p1`'s deliveries in `status` holds `count` of them.
    async fn wait_for(&mut self, status: DeliveryStatus, count: usize) -> Vec<Delivery>;

    /// Sends a test webhook to an endpoint of `p1`; returns the attempt.
    async fn send_test(&mut self, endpoint_id: &str) -> DeliveryAttempt;

    /// Rotates the secret of an endpoint of `p1`, the old one signing for `overlap`.
    async fn rotate(
        &mut self,
        endpoint_id: &str,
        overlap: Option<Duration>,
    ) -> RotateWebhookSecretResponse;
}

impl WebhookSteps for NotifierClient {
    /// An endpoint of `p1` at `receiver` for `event_types` (empty = all); returns it and its secret.
    async fn endpoint(
        &mut self,
        receiver: &WebhookReceiver,
        event_types: &[&str],
    ) -> (WebhookEndpoint, String) {
        let request = self.request(
            "p1",
            CreateWebhookEndpointRequest {
                partner_id: "p1".into(),
                url: receiver.url(),
                event_types: event_types.iter().map(|&name| name.to_owned()).collect(),
                ..Default::default()
            },
        );
        let response = self
            .channels
            .create_webhook_endpoint(request)
            .await
            .expect("endpoint created")
            .into_inner();
        (response.endpoint.expect("endpoint"), response.secret)
    }

    async fn open_incident(&self, incident_id: &str) {
        let opened = IncidentOpened {
            partner_id: "p1".into(),
            tenant_id: "t1".into(),
            incident: Some(Incident {
                incident_id: incident_id.into(),
                title: "Sign-in from a new country".into(),
                ..Default::default()
            }),
        };
        self.env.publish("prioritizer", &opened).await;
    }

    async fn endpoint_now(&mut self, endpoint_id: &str) -> WebhookEndpoint {
        let request = self.request(
            "p1",
            GetWebhookEndpointRequest {
                endpoint_id: endpoint_id.into(),
            },
        );
        self.channels
            .get_webhook_endpoint(request)
            .await
            .expect("endpoint read")
            .into_inner()
            .endpoint
            .expect("endpoint")
    }

    async fn list(&mut self, message: ListDeliveriesRequest) -> Vec<Delivery> {
        let request = self.request("p1", message);
        self.deliveries
            .list_deliveries(request)
            .await
            .expect("deliveries listed")
            .into_inner()
            .deliveries
    }

    async fn delivery(&mut self, delivery_id: &str) -> (Delivery, Vec<DeliveryAttempt>) {
        let request = self.request(
            "p1",
            GetDeliveryRequest {
                delivery_id: delivery_id.into(),
            },
        );
        let response = self
            .deliveries
            .get_delivery(request)
            .await
            .expect("delivery read")
            .into_inner();
        (response.delivery.expect("delivery"), response.attempts)
    }

    /// Waits until the listing of `p1`'s deliveries in `status` holds `count` of them.
    async fn wait_for(&mut self, status: DeliveryStatus, count: usize) -> Vec<Delivery> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let listed = self
                .list(ListDeliveriesRequest {
                    partner_id: "p1".into(),
                    statuses: vec![status.into()],
                    ..Default::default()
                })
                .await;
            if listed.len() >= count {
                return listed;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "waited for {count} {status:?} deliveries, have {}",
                listed.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn send_test(&mut self, endpoint_id: &str) -> DeliveryAttempt {
        let request = self.request(
            "p1",
            SendTestWebhookRequest {
                endpoint_id: endpoint_id.into(),
            },
        );
        self.channels
            .send_test_webhook(request)
            .await
            .expect("test sent")
            .into_inner()
            .attempt
            .expect("attempt")
    }

    async fn rotate(
        &mut self,
        endpoint_id: &str,
        overlap: Option<Duration>,
    ) -> RotateWebhookSecretResponse {
        let request = self.request(
            "p1",
            RotateWebhookSecretRequest {
                endpoint_id: endpoint_id.into(),
                overlap: overlap.map(picket_platform::time::to_duration),
                ..Default::default()
            },
        );
        self.channels
            .rotate_webhook_secret(request)
            .await
            .expect("rotated")
            .into_inner()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retry_after_is_honoured_and_logged_with_the_same_webhook_id() {
    let mut notifier = NotifierClient::start("").await;
    let receiver = WebhookReceiver::start().await;
    let (_, secret) = notifier.endpoint(&receiver, &["incident.opened"]).await;
    // The retry schedule here says 200 ms; the endpoint asks for 2 s.
    receiver.answer_next_with_retry_after(429, 2);

    notifier.open_incident("i-1").await;

    let received = eventually(WAIT, "a success after the 429", || async {
        let received = receiver.received();
        (received.len() == 2).then_some(received)
    })
    .await;
    assert_eq!(received[0].answered, 429);
    assert_eq!(received[1].answered, 200);
    assert_eq!(
        received[0].id, received[1].id,
        "retries keep the webhook-id"
    );
    assert!(verify_standard_webhook(&secret, &received[1]));
    let waited = received[1].received_at - received[0].received_at;
    assert!(waited >= Duration::from_secs(2), "retried after {waited:?}");

    let succeeded = notifier.wait_for(DeliveryStatus::Succeeded, 1).await;
    let (delivery, attempts) = notifier.delivery(&succeeded[0].delivery_id).await;
    assert_eq!(delivery.delivery_id, received[0].id);
    assert_eq!(delivery.attempt_count, 2);
    assert_eq!(delivery.destination, receiver.url());
    assert!(delivery.succeeded_at.is_some());
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0].response_status, 429);
    assert!(!attempts[0].succeeded);
    assert_eq!(
        attempts[0].retry_after.as_ref().map(|wait| wait.seconds),
        Some(2)
    );
    assert_eq!(attempts[0].response_excerpt, "answered 429");
    assert!(attempts[1].succeeded);
    assert_eq!(attempts[1].trigger(), AttemptTrigger::Scheduled);
    notifier.env.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gone_endpoint_is_disabled_and_the_partner_told_on_its_other_endpoints() {
    let mut notifier = NotifierClient::start("").await;
    let gone = WebhookReceiver::start().await;
    let watcher = WebhookReceiver::start().await;
    let (gone_endpoint, _) = notifier.endpoint(&gone, &["incident.opened"]).await;
    let (_, watcher_secret) = notifier.endpoint(&watcher, &["endpoint.disabled"]).await;
    gone.answer_next_with(&[410]);

    notifier.open_incident("i-1").await;

    let notice = eventually(WAIT, "the endpoint.disabled webhook", || async {
        watcher.received().into_iter().next()
    })
    .await;
    assert!(verify_standard_webhook(&watcher_secret, &notice));
    let body = notice.json();
    assert_eq!(body["type"], "endpoint.disabled");
    assert_eq!(body["data"]["endpointId"], gone_endpoint.endpoint_id);
    assert_eq!(body["data"]["cause"], "ENDPOINT_DISABLE_CAUSE_GONE");

    let endpoint = notifier.endpoint_now(&gone_endpoint.endpoint_id).await;
    assert!(!endpoint.enabled);
    assert!(
        endpoint.disabled_reason.contains("410"),
        "{}",
        endpoint.disabled_reason
    );
    let dead = notifier.wait_for(DeliveryStatus::Dead, 1).await;
    assert_eq!(dead[0].last_response_status, 410);
    assert_eq!(gone.received().len(), 1, "a gone endpoint is not retried");

    // Nothing more reaches it while disabled, and it cannot be redelivered to.
    notifier.open_incident("i-2").await;
    let refused = notifier
        .deliveries
        .redeliver_delivery(notifier.request(
            "p1",
            RedeliverDeliveryRequest {
                delivery_id: dead[0].delivery_id.clone(),
                force: false,
            },
        ))
        .await
        .expect_err("its endpoint is disabled");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(gone.received().len(), 1);
    notifier.env.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn endpoint_failing_without_a_break_for_five_days_is_disabled() {
    let mut notifier = NotifierClient::start("").await;
    let failing = WebhookReceiver::start().await;
    let watcher = WebhookReceiver::start().await;
    let (failing_endpoint, _) = notifier.endpoint(&failing, &["incident.opened"]).await;
    notifier.endpoint(&watcher, &["endpoint.disabled"]).await;
    failing.answer_next_with(&[500; 20]);

    notifier.open_incident("i-1").await;
    let pool = notifier.env.pool("notifier").await;
    eventually(WAIT, "a failure streak", || async {
        let since: Option<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar(
            "SELECT failing_since FROM webhook_endpoints WHERE endpoint_id = $1",
        )
        .bind(uuid::Uuid::parse_str(&failing_endpoint.endpoint_id).expect("uuid"))
        .fetch_one(&pool)
        .await
        .expect("endpoint row");
        since
    })
    .await;
    // Five days pass with nothing but failures (the streak's start is moved back, rather than
    // waiting), then one more attempt fails.
    sqlx::query("UPDATE webhook_endpoints SET failing_since = failing_since - interval '5 days'")
        .execute(&pool)
        .await
        .expect("streak moved back");

    let notice = eventually(WAIT, "the endpoint.disabled webhook", || async {
        watcher.received().into_iter().next()
    })
    .await;
    let body = notice.json();
    assert_eq!(body["data"]["cause"], "ENDPOINT_DISABLE_CAUSE_FAILING");
    assert_eq!(body["data"]["lastResponseStatus"], 500);
    assert!(body["data"]["failingSince"].is_string());
    let endpoint = notifier.endpoint_now(&failing_endpoint.endpoint_id).await;
    assert!(!endpoint.enabled);
    assert!(
        endpoint
            .disabled_reason
            .contains("every attempt failed since"),
        "{}",
        endpoint.disabled_reason
    );
    let dead = notifier.wait_for(DeliveryStatus::Dead, 1).await;
    assert_eq!(dead[0].endpoint_id, failing_endpoint.endpoint_id);
    notifier.env.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_success_ends_the_failure_streak() {
    let mut notifier = NotifierClient::start("").await;
    let receiver = WebhookReceiver::start().await;
    let (endpoint, _) = notifier.endpoint(&receiver, &["incident.opened"]).await;
    receiver.answer_next_with(&[500]);

    notifier.open_incident("i-1").await;
    notifier.wait_for(DeliveryStatus::Succeeded, 1).await;

    let pool = notifier.env.pool("notifier").await;
    let failing_since: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT failing_since FROM webhook_endpoints")
            .fetch_one(&pool)
            .await
            .expect("endpoint row");
    assert_eq!(failing_since, None);
    assert!(notifier.endpoint_now(&endpoint.endpoint_id).await.enabled);
    notifier.env.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dead_deliveries_are_redelivered_by_hand_and_replayed_in_bulk() {
    let mut notifier = NotifierClient::start("").await;
    let receiver = WebhookReceiver::start().await;
    notifier.endpoint(&receiver, &["incident.opened"]).await;
    // Three incidents, each failing its first attempt and its three retries: all dead.
    receiver.answer_next_with(&[500; 12]);
    let started = chrono::Utc::now();
    for incident in ["i-1", "i-2", "i-3"] {
        notifier.open_incident(incident).await;
    }
    let dead = notifier.wait_for(DeliveryStatus::Dead, 3).await;
    assert!(dead.iter().all(|delivery| delivery.attempt_count == 4));

    // Another partner sees none of them.
    let other = notifier
        .deliveries
        .get_delivery(notifier.request(
            "p2",
            GetDeliveryRequest {
                delivery_id: dead[0].delivery_id.clone(),
            },
        ))
        .await
        .expect_err("not p2's");
    assert_eq!(other.code(), Code::NotFound);

    // One by hand: the same webhook-id arrives again, and the attempt says who asked.
    let redelivered = notifier
        .deliveries
        .redeliver_delivery(notifier.request(
            "p1",
            RedeliverDeliveryRequest {
                delivery_id: dead[0].delivery_id.clone(),
                force: false,
            },
        ))
        .await
        .expect("redelivered")
        .into_inner()
        .delivery
        .expect("delivery");
    assert_eq!(redelivered.status(), DeliveryStatus::Pending);
    eventually(WAIT, "the redelivered webhook", || async {
        receiver
            .delivered_ids()
            .contains(&dead[0].delivery_id)
            .then_some(())
    })
    .await;
    let (delivery, attempts) = notifier.delivery(&dead[0].delivery_id).await;
    assert_eq!(delivery.status(), DeliveryStatus::Succeeded);
    let last = attempts.last().expect("attempts");
    assert_eq!(last.attempt_number, 5);
    assert_eq!(last.trigger(), AttemptTrigger::ManualRedelivery);
    assert_eq!(
        last.requested_by.as_ref().map(|by| by.subject.as_str()),
        Some("staff@p1")
    );
    let again = notifier
        .deliveries
        .redeliver_delivery(notifier.request(
            "p1",
            RedeliverDeliveryRequest {
                delivery_id: dead[0].delivery_id.clone(),
                force: false,
            },
        ))
        .await
        .expect_err("succeeded already");
    assert_eq!(again.code(), Code::FailedPrecondition);

    // The rest in bulk: a dry run counts, the replay sends.
    let replay = |dry_run| ReplayFailedDeliveriesRequest {
        partner_id: "p1".into(),
        created: Some(TimeRange {
            start_time: Some(picket_platform::time::to_timestamp(
                started - chrono::Duration::seconds(1),
            )),
            end_time: None,
        }),
        dry_run,
        ..Default::default()
    };
    let counted = notifier
        .deliveries
        .replay_failed_deliveries(notifier.request("p1", replay(true)))
        .await
        .expect("dry run")
        .into_inner();
    assert_eq!(counted.deliveries_replayed, 2);
    assert_eq!(notifier.wait_for(DeliveryStatus::Dead, 2).await.len(), 2);
    let replayed = notifier
        .deliveries
        .replay_failed_deliveries(notifier.request("p1", replay(false)))
        .await
        .expect("replayed")
        .into_inner();
    assert_eq!(replayed.deliveries_replayed, 2);
    assert_eq!(replayed.deliveries_skipped, 0);
    let succeeded = notifier.wait_for(DeliveryStatus::Succeeded, 3).await;
    assert_eq!(receiver.delivered_ids().len(), 3);
    for delivery in succeeded
        .iter()
        .filter(|delivery| delivery.delivery_id != dead[0].delivery_id)
    {
        let (_, attempts) = notifier.delivery(&delivery.delivery_id).await;
        let last = attempts.last().expect("attempts");
        assert_eq!(last.trigger(), AttemptTrigger::BulkReplay);
        assert_eq!(last.replay_id, replayed.replay_id);
    }
    notifier.env.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delivery_requests_name_their_bad_fields() {
    let mut notifier = NotifierClient::start("").await;
    let bad_status = notifier
        .deliveries
        .list_deliveries(notifier.request(
            "p1",
            ListDeliveriesRequest {
                partner_id: "p1".into(),
                statuses: vec![42],
                ..Default::default()
            },
        ))
        .await
        .expect_err("42 is no status");
    assert_eq!(bad_status.code(), Code::InvalidArgument);
    assert!(bad_status.message().starts_with("statuses:"));

    let other_partner = notifier
        .deliveries
        .list_deliveries(notifier.request(
            "p1",
            ListDeliveriesRequest {
                partner_id: "p2".into(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("not p1's");
    assert_eq!(other_partner.code(), Code::PermissionDenied);

    let no_start = notifier
        .deliveries
        .replay_failed_deliveries(notifier.request(
            "p1",
            ReplayFailedDeliveriesRequest {
                partner_id: "p1".into(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("a replay needs a start");
    assert_eq!(no_start.code(), Code::InvalidArgument);
    assert_eq!(no_start.message(), "created.start_time: is required");

    let bad_id = notifier
        .deliveries
        .redeliver_delivery(notifier.request(
            "p1",
            RedeliverDeliveryRequest {
                delivery_id: "nope".into(),
                force: false,
            },
        ))
        .await
        .expect_err("not a UUID");
    assert_eq!(bad_id.code(), Code::InvalidArgument);
    assert!(bad_id.message().starts_with("delivery_id:"));
    notifier.env.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn endpoints_are_tested_rotated_disabled_and_deleted_by_their_partner() {
    let mut notifier = NotifierClient::start("").await;
    let receiver = WebhookReceiver::start().await;
    let (endpoint, first_secret) = notifier.endpoint(&receiver, &["incident.opened"]).await;
    let endpoint_id = endpoint.endpoint_id.clone();
    // A test send is signed, and reported.
    let attempt = notifier.send_test(&endpoint_id).await;
    assert!(attempt.succeeded, "{}", attempt.error);
    assert_eq!(attempt.response_status, 200);
    let test = receiver.received().pop().expect("the test webhook");
    assert_eq!(test.json()["type"], "webhook.test");
    assert!(verify_standard_webhook(&first_secret, &test));

    // While a rotation overlaps, both secrets sign; after one without overlap, only the new one.
    let rotated = notifier.rotate(&endpoint_id, None).await;
    assert!(rotated.previous_secret_expires_at.is_some());
    notifier.send_test(&endpoint_id).await;
    let overlapping = receiver.received().pop().expect("second test");
    assert_eq!(overlapping.signature.split(' ').count(), 2);
    assert!(verify_standard_webhook(&first_secret, &overlapping));
    assert!(verify_standard_webhook(&rotated.secret, &overlapping));
    for secret in [&first_secret, &rotated.secret] {
        reference_library_accepts(secret, &overlapping).expect("the reference verifier accepts it");
    }
    let third = notifier.rotate(&endpoint_id, Some(Duration::ZERO)).await;
    assert!(third.previous_secret_expires_at.is_none());
    notifier.send_test(&endpoint_id).await;
    let alone = receiver.received().pop().expect("third test");
    assert!(verify_standard_webhook(&third.secret, &alone));
    assert!(!verify_standard_webhook(&rotated.secret, &alone));
    assert!(reference_library_accepts(&rotated.secret, &alone).is_err());

    // A URL the egress policy refuses is refused, naming the field.
    let request = notifier.request(
        "p1",
        UpdateWebhookEndpointRequest {
            endpoint_id: endpoint_id.clone(),
            url: Some("https://10.1.2.3/hook".into()),
            ..Default::default()
        },
    );
    let refused = notifier
        .channels
        .update_webhook_endpoint(request)
        .await
        .expect_err("a private address");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().starts_with("url:"),
        "{}",
        refused.message()
    );

    // Disabled by the partner: nothing is sent; enabled again: delivered.
    let update = |enabled| UpdateWebhookEndpointRequest {
        endpoint_id: endpoint_id.clone(),
        enabled: Some(enabled),
        ..Default::default()
    };
    let request = notifier.request("p1", update(false));
    let disabled = notifier
        .channels
        .update_webhook_endpoint(request)
        .await
        .expect("disabled")
        .into_inner()
        .endpoint
        .expect("endpoint");
    assert!(!disabled.enabled);
    assert_eq!(disabled.disabled_reason, "disabled by staff@p1");
    assert!(disabled.disabled_at.is_some());
    let before = receiver.received_count();
    notifier.open_incident("i-1").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(receiver.received_count(), before);
    let request = notifier.request("p1", update(true));
    let enabled = notifier
        .channels
        .update_webhook_endpoint(request)
        .await
        .expect("enabled")
        .into_inner()
        .endpoint
        .expect("endpoint");
    assert!(enabled.enabled);
    assert!(enabled.disabled_reason.is_empty());
    notifier.open_incident("i-2").await;
    notifier.wait_for(DeliveryStatus::Succeeded, 1).await;

    // Deleted: gone for good, its delivery log kept.
    let request = notifier.request(
        "p2",
        DeleteWebhookEndpointRequest {
            endpoint_id: endpoint_id.clone(),
        },
    );
    let not_theirs = notifier
        .channels
        .delete_webhook_endpoint(request)
        .await
        .expect_err("p2 may not");
    assert_eq!(not_theirs.code(), Code::NotFound);
    let request = notifier.request(
        "p1",
        DeleteWebhookEndpointRequest {
            endpoint_id: endpoint_id.clone(),
        },
    );
    notifier
        .channels
        .delete_webhook_endpoint(request)
        .await
        .expect("deleted");
    let request = notifier.request(
        "p1",
        GetWebhookEndpointRequest {
            endpoint_id: endpoint_id.clone(),
        },
    );
    let gone = notifier
        .channels
        .get_webhook_endpoint(request)
        .await
        .expect_err("deleted");
    assert_eq!(gone.code(), Code::NotFound);
    let logged = notifier.wait_for(DeliveryStatus::Succeeded, 1).await;
    assert_eq!(logged[0].destination, receiver.url());
    notifier.env.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_change_told_twice_is_delivered_once() {
    let mut notifier = NotifierClient::start("").await;
    let receiver = WebhookReceiver::start().await;
    notifier
        .endpoint(&receiver, &["incident.opened", "incident.resolved"])
        .await;
    let incident = |version| Incident {
        incident_id: "i-1".into(),
        title: "Sign-in from a new country".into(),
        version,
        ..Default::default()
    };
    let opened = IncidentOpened {
        partner_id: "p1".into(),
        tenant_id: "t1".into(),
        incident: Some(incident(1)),
    };
    // The same change under two event ids (as a replayed outbox would tell it), then the next.
    notifier.env.publish("prioritizer", &opened).await;
    notifier.env.publish("prioritizer", &opened).await;
    let resolved = IncidentResolved {
        partner_id: "p1".into(),
        tenant_id: "t1".into(),
        incident: Some(incident(2)),
        ..Default::default()
    };
    notifier.env.publish("prioritizer", &resolved).await;

    let delivered = notifier.wait_for(DeliveryStatus::Succeeded, 2).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut types: Vec<String> = receiver
        .received()
        .iter()
        .map(|webhook| {
            webhook.json()["type"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    types.sort();
    assert_eq!(types, ["incident.opened", "incident.resolved"]);
    let mut keys: Vec<&str> = delivered
        .iter()
        .map(|delivery| delivery.change_key.as_str())
        .collect();
    keys.sort();
    assert_eq!(keys, ["incident.opened:i-1:v1", "incident.resolved:i-1:v2"]);
    notifier.env.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn private_addresses_are_refused_unless_allow_listed() {
    // Loopback is not allow-listed here, as in production.
    let mut notifier = NotifierClient::start("[notifier]\nallowed_networks = []\n").await;
    let receiver = WebhookReceiver::start().await;
    let port = receiver
        .url()
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_owned();

    // An address is checked when the endpoint is created...
    let request = notifier.request(
        "p1",
        CreateWebhookEndpointRequest {
            partner_id: "p1".into(),
            url: receiver.url(),
            ..Default::default()
        },
    );
    let refused = notifier
        .channels
        .create_webhook_endpoint(request)
        .await
        .expect_err("loopback");
    assert_eq!(refused.code(), Code::InvalidArgument);
    // The refusal names no address: a partner must not learn what is inside.
    assert_eq!(refused.message(), "url: is not an allowed destination");

    // ...and a name is checked where it is resolved, on every attempt: nothing reaches loopback.
    let request = notifier.request(
        "p1",
        CreateWebhookEndpointRequest {
            partner_id: "p1".into(),
            url: format!("http://localhost:{port}"),
            event_types: vec!["incident.opened".into()],
            ..Default::default()
        },
    );
    notifier
        .channels
        .create_webhook_endpoint(request)
        .await
        .expect("a name is resolved when used");
    notifier.open_incident("i-1").await;
    let token = notifier.env.partner_token("p1");
    let failed = eventually(WAIT, "a failed attempt", || {
        let mut deliveries = notifier.deliveries.clone();
        let request = notifier.env.request(
            &token,
            ListDeliveriesRequest {
                partner_id: "p1".into(),
                statuses: vec![DeliveryStatus::Failed.into(), DeliveryStatus::Dead.into()],
                ..Default::default()
            },
        );
        async move {
            let listed = deliveries.list_deliveries(request).await.ok()?;
            listed.into_inner().deliveries.into_iter().next()
        }
    })
    .await;
    assert!(
        failed.last_error.contains("is not an allowed destination")
            && !failed.last_error.contains("127.0.0.1")
            && !failed.last_error.contains("::1"),
        "{}",
        failed.last_error
    );
    assert_eq!(receiver.received_count(), 0);
    notifier.env.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_endpoint_does_not_hold_back_the_others() {
    let mut notifier = NotifierClient::start(
        "[notifier]\ndelivery_concurrency = 4\ndestination_concurrency = 2\nwebhook_timeout = \"5s\"\nattempt_lease = \"30s\"\n",
    )
    .await;
    let slow = WebhookReceiver::start().await;
    slow.set_delay(Duration::from_secs(1));
    let fast = WebhookReceiver::start().await;
    notifier.endpoint(&slow, &["incident.opened"]).await;
    let request = notifier.request(
        "p2",
        CreateWebhookEndpointRequest {
            partner_id: "p2".into(),
            url: fast.url(),
            event_types: vec!["incident.opened".into()],
            ..Default::default()
        },
    );
    notifier
        .channels
        .create_webhook_endpoint(request)
        .await
        .expect("p2's endpoint");

    // Eight deliveries to the slow endpoint would take every slot, one second each...
    for index in 0..8 {
        notifier.open_incident(&format!("slow-{index}")).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // ...but they may use only two, so another partner's webhook goes through at once.
    let published = std::time::Instant::now();
    let other = IncidentOpened {
        partner_id: "p2".into(),
        tenant_id: "t9".into(),
        incident: Some(Incident {
            incident_id: "fast-1".into(),
            ..Default::default()
        }),
    };
    notifier.env.publish("prioritizer", &other).await;
    let arrived = eventually(WAIT, "p2's webhook", || async {
        fast.received().first().map(|webhook| webhook.received_at)
    })
    .await;
    assert!(
        arrived - published < Duration::from_millis(500),
        "waited {:?} behind the slow endpoint",
        arrived - published
    );
    eventually(WAIT, "every slow webhook", || async {
        (slow.received_count() == 8).then_some(())
    })
    .await;
    notifier.env.teardown().await;
}
