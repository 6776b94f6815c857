//! Offboarding: disconnect a customer, remove its data on schedule, prove it. This crate serves
//! its contract (OffboardingService) on the platform kit; its behaviour arrives with the
//! offboarding issue and answers UNIMPLEMENTED until then.

use picket_platform::settings::{NoServiceSettings, PlatformSettings};
use picket_platform::{Application, Platform, StartError};
use picket_proto::offboarding::v1::offboarding_service_server::{
    OffboardingService, OffboardingServiceServer, SERVICE_NAME,
};
use tokio_util::sync::CancellationToken;

pub const SERVICE: &str = "offboarding";

/// The offboarding service's defaults over the platform's.
pub const DEFAULTS: &str = include_str!("../defaults.toml");

/// The offboarding service has no settings of its own yet.
pub type Settings = NoServiceSettings;

pub struct OffboardingApi;

impl OffboardingService for OffboardingApi {}

/// Builds and starts the offboarding service; tests call it in-process.
pub async fn build(
    settings: PlatformSettings,
    _own: Settings,
    shutdown: CancellationToken,
) -> Result<Application, StartError> {
    let mut platform = Platform::new(SERVICE, settings, shutdown).await?;
    let routes = tonic::service::Routes::new(
        platform.authenticated(OffboardingServiceServer::new(OffboardingApi)),
    );
    platform.serve_grpc(routes, &[SERVICE_NAME])?;
    platform.connect(None).await?;
    Ok(platform.start().await)
}
