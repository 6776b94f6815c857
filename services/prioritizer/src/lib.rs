//! The prioritizer: decides which findings become incidents now, later or never, and carries each
//! incident from opening to resolution.

pub mod api;
pub mod engine;
pub mod findings;
pub mod model;
pub mod policy;
pub mod store;

use picket_platform::nats::ConsumerSpec;
use picket_platform::settings::{NoServiceSettings, PlatformSettings};
use picket_platform::{Application, Platform, StartError};
use picket_proto::Area;
use picket_proto::incidents::v1::incident_service_server::{IncidentServiceServer, SERVICE_NAME};
use tokio_util::sync::CancellationToken;

pub const SERVICE: &str = "prioritizer";

/// The prioritizer's defaults over the platform's.
pub const DEFAULTS: &str = include_str!("../defaults.toml");

/// The prioritizer has no settings of its own yet.
pub type Settings = NoServiceSettings;

/// Builds and starts the prioritizer; tests call it in-process.
pub async fn build(
    settings: PlatformSettings,
    _own: Settings,
    shutdown: CancellationToken,
) -> Result<Application, StartError> {
    let mut platform = Platform::new(SERVICE, settings, shutdown).await?;
    let incidents = IncidentServiceServer::new(api::IncidentApi::new(platform.pool().clone()));
    let routes = tonic::service::Routes::new(platform.authenticated(incidents));
    platform.serve_grpc(routes, &[SERVICE_NAME])?;
    platform
        .connect(Some(sqlx::migrate!("./migrations")))
        .await?;
    platform
        .consume(
            ConsumerSpec {
                durable_name: findings::CONSUMER.to_owned(),
                // FindingObserved and FindingCleared are the whole area.
                area: Area::Findings,
                filter_subjects: Vec::new(),
            },
            findings::FindingsHandler::new(platform.pool().clone(), platform.events()),
        )
        .await?;
    Ok(platform.start().await)
}
