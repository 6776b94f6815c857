//! The notifier: tells partners what changed, by signed webhook (and e-mail), once per change,
//! reliably.

pub mod api;
mod authority;
pub mod catalog;
pub mod delivery_api;
pub mod egress;
pub mod email;
pub mod routing;
pub mod secrets;
pub mod settings;
pub mod signing;
pub mod store;
pub mod webhook;
pub mod worker;

use std::sync::Arc;

use picket_platform::db::group_commit::GroupCommit;
use picket_platform::nats::ConsumerSpec;
use picket_platform::offboarding::Purger;
use picket_platform::settings::PlatformSettings;
use picket_platform::{Application, Platform, StartError};
use picket_proto::Area;
use picket_proto::notifications::v1::channel_service_server::{
    ChannelServiceServer, SERVICE_NAME as CHANNEL_SERVICE,
};
use picket_proto::notifications::v1::delivery_service_server::{
    DeliveryServiceServer, SERVICE_NAME as DELIVERY_SERVICE,
};
use tokio_util::sync::CancellationToken;

pub use settings::NotifierSettings as Settings;

pub const SERVICE: &str = "notifier";

/// The notifier's defaults over the platform's.
pub const DEFAULTS: &str = include_str!("../defaults.toml");

/// Builds and starts the notifier; tests call it in-process.
pub async fn build(
    platform_settings: PlatformSettings,
    settings: Settings,
    shutdown: CancellationToken,
) -> Result<Application, StartError> {
    let mut platform = Platform::new(SERVICE, platform_settings, shutdown).await?;
    let policy = Arc::new(egress::EgressPolicy::new(
        settings.allowed_networks.clone(),
        settings.allow_insecure_http,
    ));
    let client = egress::http_client(policy.clone(), settings.webhook_timeout)
        .map_err(|error| StartError::Client(error.to_string()))?;
    // Validated with the settings, so it parses.
    let keyring = Arc::new(
        picket_platform::sealing::Keyring::parse(&settings.secret_keys)
            .map_err(|error| StartError::Client(format!("notifier.secret_keys {error}")))?,
    );
    let webhooks = webhook::WebhookSender::new(client, policy.clone(), keyring.clone());
    let channels = ChannelServiceServer::new(api::ChannelApi::new(
        platform.pool().clone(),
        policy,
        platform.events(),
        webhooks.clone(),
        keyring.clone(),
    ));
    let deliveries =
        DeliveryServiceServer::new(delivery_api::DeliveryApi::new(platform.pool().clone()));
    platform.serve_grpc(
        tonic::service::Routes::new(platform.authenticated(channels))
            .add_service(platform.authenticated(deliveries)),
        &[CHANNEL_SERVICE, DELIVERY_SERVICE],
    )?;
    platform
        .connect(Some(sqlx::migrate!("./migrations")))
        .await?;
    let changed = secrets::bring_current(platform.pool(), &keyring)
        .await
        .map_err(|error| StartError::Client(format!("sealing webhook secrets: {error}")))?;
    if changed > 0 {
        tracing::info!(
            endpoints = changed,
            key_id = keyring.current_id(),
            "webhook secrets sealed or re-wrapped under the current key"
        );
    }
    // Events are routed in batches; the deliveries a batch creates go straight to the worker.
    let (dispatcher, queue) = worker::queue();
    let router = routing::Router::new(
        platform.pool().clone(),
        dispatcher.clone(),
        settings.attempt_lease,
    );
    let routes = GroupCommit::start(
        Arc::new(router),
        settings.route_batch_size,
        platform.shutdown_token(),
    );
    // Every area partners hear of, its own notices (an endpoint disabled) included.
    for (consumer, area, only) in routing::CONSUMERS {
        let filter_subjects = only
            .map(|event| platform.subjects().event_wildcard(area, event))
            .into_iter()
            .collect();
        platform
            .consume(
                ConsumerSpec {
                    durable_name: consumer.to_owned(),
                    area,
                    filter_subjects,
                },
                routing::RoutingHandler::new(
                    platform.pool().clone(),
                    routes.clone(),
                    consumer,
                    (area == Area::Offboarding).then(|| {
                        Purger::new(
                            platform.pool().clone(),
                            platform.events(),
                            SERVICE,
                            consumer,
                            routing::PURGES,
                        )
                    }),
                ),
            )
            .await?;
    }
    let schema = platform.settings().database.schema.clone();
    let mailer =
        email::Mailer::new(&settings).map_err(|error| StartError::Client(error.to_string()))?;
    let worker = worker::DeliveryWorker::new(
        platform.pool().clone(),
        schema,
        webhooks,
        mailer,
        platform.events(),
        settings,
        worker::DeliveryMetrics::registered(platform.metrics()),
    );
    let worker_shutdown = platform.shutdown_token();
    platform.spawn(
        "delivery worker",
        worker.run(dispatcher, queue, worker_shutdown),
    );
    Ok(platform.start().await)
}
