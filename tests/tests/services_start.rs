//! Each of the five services loads its settings, migrates, connects, reports SERVING on
//! grpc.health.v1 and `/ready`, serves metrics, and shuts down cleanly.

use std::future::Future;

use picket_e2e::admin_get;
use picket_platform::Application;
use picket_platform::settings::{PlatformSettings, ServiceSettings};
use picket_testkit::TestEnv;
use tokio_util::sync::CancellationToken;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

async fn health(application: &Application, service: &str) -> i32 {
    let mut client = HealthClient::new(picket_e2e::channel(application).await);
    client
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .expect("health answers")
        .into_inner()
        .status
}

/// The services the server lists through gRPC reflection, in the protocol version `$version`
/// (`v1`, or `v1alpha`, which older clients speak).
macro_rules! reflected_services {
    ($version:ident, $application:expr) => {{
        use tonic_reflection::pb::$version::ServerReflectionRequest;
        use tonic_reflection::pb::$version::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::$version::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::$version::server_reflection_response::MessageResponse;

        let mut client = ServerReflectionClient::new(picket_e2e::channel($application).await);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut responses = client
            .server_reflection_info(futures::stream::iter([request]))
            .await
            .expect("reflection answers")
            .into_inner();
        let response = responses
            .message()
            .await
            .expect("a response")
            .expect("one message");
        match response.message_response {
            Some(MessageResponse::ListServicesResponse(list)) => list
                .service
                .into_iter()
                .map(|service| service.name)
                .collect::<Vec<String>>(),
            other => panic!("unexpected reflection response {other:?}"),
        }
    }};
}

async fn check_lifecycle<S, F, Fut>(
    service: &str,
    defaults: &str,
    extra_toml: &str,
    build: F,
    service_names: &[&str],
) where
    S: ServiceSettings,
    F: FnOnce(PlatformSettings, S, CancellationToken) -> Fut,
    Fut: Future<Output = Result<Application, picket_platform::StartError>>,
{
    let env = TestEnv::new().await;
    let (platform, own) = env.settings::<S>(service, defaults, extra_toml);
    let application = build(platform, own, CancellationToken::new())
        .await
        .expect("service starts");

    const SERVING: i32 = 1;
    assert_eq!(
        health(&application, "").await,
        SERVING,
        "{service} overall health"
    );
    for name in service_names {
        assert_eq!(health(&application, name).await, SERVING, "{name} health");
    }
    let reflected_v1 = reflected_services!(v1, &application);
    let reflected_v1alpha = reflected_services!(v1alpha, &application);
    for name in service_names {
        for reflected in [&reflected_v1, &reflected_v1alpha] {
            assert!(
                reflected.iter().any(|service| service == name),
                "{name} not reflected: {reflected:?}"
            );
        }
    }
    assert_eq!(admin_get(&application, "/live").await.0, 200);
    assert_eq!(admin_get(&application, "/ready").await.0, 200);
    let (status, metrics) = admin_get(&application, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("grpc_server_handled_total"),
        "{service} metrics:\n{metrics}"
    );

    let stopped =
        tokio::time::timeout(std::time::Duration::from_secs(10), application.shutdown()).await;
    assert!(
        stopped.is_ok(),
        "{service} shuts down within its grace period"
    );
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scanner_starts_serves_health_and_stops() {
    check_lifecycle(
        scanner::SERVICE,
        scanner::DEFAULTS,
        concat!(
            "[scanner]\nconsent_listen = \"127.0.0.1:0\"\nconsent_link_keys = \"",
            picket_testkit::consent_link_test_keys!(),
            "\"\n"
        ),
        scanner::build,
        &[
            "picket.tenants.v1.TenantService",
            "picket.tenants.v1.ScanService",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prioritizer_starts_serves_health_and_stops() {
    check_lifecycle(
        prioritizer::SERVICE,
        prioritizer::DEFAULTS,
        "",
        prioritizer::build,
        &["picket.incidents.v1.IncidentService"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifier_starts_serves_health_and_stops() {
    check_lifecycle(
        notifier::SERVICE,
        notifier::DEFAULTS,
        picket_e2e::NOTIFIER_TEST_TOML,
        notifier::build,
        &["picket.notifications.v1.ChannelService"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_starts_serves_health_and_stops() {
    check_lifecycle(
        ledger::SERVICE,
        ledger::DEFAULTS,
        "",
        ledger::build,
        &[
            "picket.ledger.v1.CreditLedgerService",
            "picket.ledger.v1.EngagementService",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offboarding_starts_serves_health_and_stops() {
    check_lifecycle(
        offboarding::SERVICE,
        offboarding::DEFAULTS,
        "",
        offboarding::build,
        &["picket.offboarding.v1.OffboardingService"],
    )
    .await;
}
