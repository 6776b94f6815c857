//! The notifier: tells partners what changed, by signed webhook (and e-mail), once per change,
//! reliably.

pub mod api;
pub mod catalog;
pub mod egress;
pub mod routing;
pub mod settings;
pub mod signing;
pub mod store;
pub mod worker;

use std::sync::Arc;

use picket_platform::nats::ConsumerSpec;
use picket_platform::settings::PlatformSettings;
use picket_platform::{Application, Platform, StartError};
use picket_proto::Area;
use picket_proto::notifications::v1::channel_service_server::{ChannelServiceServer, SERVICE_NAME};
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
    let channels = ChannelServiceServer::new(api::ChannelApi::new(
        platform.pool().clone(),
        policy.clone(),
    ));
    platform.serve_grpc(
        tonic::service::Routes::new(platform.authenticated(channels)),
        &[SERVICE_NAME],
    )?;
    platform
        .connect(Some(sqlx::migrate!("./migrations")))
        .await?;
    platform
        .consume(
            ConsumerSpec {
                durable_name: routing::CONSUMER.to_owned(),
                area: Area::Incidents,
                filter_subjects: Vec::new(),
            },
            routing::RoutingHandler::new(platform.pool().clone()),
        )
        .await?;
    let client = egress::http_client(policy.clone(), settings.webhook_timeout)
        .map_err(|error| StartError::Client(error.to_string()))?;
    let schema = platform.settings().database.schema.clone();
    let worker =
        worker::DeliveryWorker::new(platform.pool().clone(), schema, client, policy, settings);
    let worker_shutdown = platform.shutdown_token();
    platform.spawn("delivery worker", worker.run(worker_shutdown));
    Ok(platform.start().await)
}
