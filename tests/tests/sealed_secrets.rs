//! Webhook signing secrets are sealed at rest: nothing in the notifier's tables shows them, a row
//! stored in the clear before sealing is sealed at start, a new key-encryption key re-wraps every
//! row, and webhooks signed after the old key is gone still verify with the partner's secret.

use std::time::Duration;

use picket_e2e::{NOTIFIER_TEST_SECRET_KEYS, NotifierClient, channel, start_notifier};
use picket_proto::incidents::v1::{Incident, IncidentOpened};
use picket_proto::notifications::v1::CreateWebhookEndpointRequest;
use picket_proto::notifications::v1::channel_service_client::ChannelServiceClient;
use picket_testkit::{WebhookReceiver, eventually, verify_standard_webhook};

const NEW_KEY: &str = "test-2:I7E4d2qdVFjlECxfFNqnkwxoe/ujipPKsn1vzEFXbvA=";

/// (clear secret, sealed secret, key id) of an endpoint, as stored.
async fn stored(
    pool: &sqlx::PgPool,
    endpoint_id: &str,
) -> (Option<String>, Option<Vec<u8>>, Option<String>) {
    sqlx::query_as(
        "SELECT secret, secret_sealed, secret_key_id FROM webhook_endpoints WHERE endpoint_id = $1::uuid",
    )
    .bind(endpoint_id)
    .fetch_one(pool)
    .await
    .expect("the endpoint's row")
}

async fn restart_with_keys(notifier: &mut NotifierClient, keys: &str) {
    let stopped = std::mem::replace(
        &mut notifier.application,
        start_notifier(
            &notifier.env,
            &format!("[notifier]\nsecret_keys = \"{keys}\"\n"),
        )
        .await,
    );
    stopped.shutdown().await;
    notifier.channels = ChannelServiceClient::new(channel(&notifier.application).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn webhook_secrets_are_sealed_at_rest_and_a_new_key_rewraps_them() {
    let mut notifier = NotifierClient::start("").await;
    let receiver = WebhookReceiver::start().await;
    let mut secrets = Vec::new();
    for description in ["sealed from the start", "stored before sealing"] {
        let request = notifier.request(
            "p1",
            CreateWebhookEndpointRequest {
                partner_id: "p1".into(),
                url: receiver.url(),
                event_types: vec!["incident.opened".into()],
                description: description.into(),
                ..Default::default()
            },
        );
        let created = notifier
            .channels
            .create_webhook_endpoint(request)
            .await
            .expect("endpoint created")
            .into_inner();
        secrets.push((
            created.endpoint.expect("endpoint").endpoint_id,
            created.secret,
        ));
    }
    let pool = notifier.env.pool("notifier").await;
    let (clear, sealed, key_id) = stored(&pool, &secrets[0].0).await;
    assert_eq!(clear, None);
    let sealed = sealed.expect("sealed");
    assert!(
        !sealed
            .windows(secrets[0].1.len())
            .any(|window| window == secrets[0].1.as_bytes()),
        "the secret is not in the row"
    );
    assert_eq!(key_id.as_deref(), Some("test-1"));

    // A row as an earlier release stored it: the secret in the clear.
    sqlx::query(
        "UPDATE webhook_endpoints SET secret = $2, secret_sealed = NULL, secret_key_id = NULL
         WHERE endpoint_id = $1::uuid",
    )
    .bind(&secrets[1].0)
    .bind(&secrets[1].1)
    .execute(&pool)
    .await
    .expect("a clear row");

    // A new key-encryption key goes first; at start every row is sealed or re-wrapped under it.
    restart_with_keys(
        &mut notifier,
        &format!("{NEW_KEY},{NOTIFIER_TEST_SECRET_KEYS}"),
    )
    .await;
    for (endpoint_id, _) in &secrets {
        let (clear, sealed, key_id) = stored(&pool, endpoint_id).await;
        assert_eq!(clear, None, "{endpoint_id}");
        assert!(sealed.is_some(), "{endpoint_id}");
        assert_eq!(key_id.as_deref(), Some("test-2"), "{endpoint_id}");
    }

    // The old key is dropped; webhooks are still signed with each partner's secret.
    restart_with_keys(&mut notifier, NEW_KEY).await;
    let opened = IncidentOpened {
        partner_id: "p1".into(),
        tenant_id: "t1".into(),
        incident: Some(Incident {
            incident_id: "i-1".into(),
            title: "Sign-in from a new country".into(),
            ..Default::default()
        }),
    };
    notifier.env.publish("prioritizer", &opened).await;
    eventually(Duration::from_secs(30), "both webhooks", || {
        let count = receiver.received_count();
        async move { (count >= 2).then_some(()) }
    })
    .await;
    for webhook in receiver.received() {
        assert!(
            secrets
                .iter()
                .any(|(_, secret)| verify_standard_webhook(secret, &webhook)),
            "a webhook no secret verifies"
        );
    }
    assert_eq!(
        secrets
            .iter()
            .filter(|(_, secret)| receiver
                .received()
                .iter()
                .any(|webhook| verify_standard_webhook(secret, webhook)))
            .count(),
        2,
        "each endpoint's webhook verifies with its own secret"
    );
    notifier.application.shutdown().await;
    notifier.env.teardown().await;
}
