//! Offboarding: disconnect a customer, remove its data on schedule, prove it. `saga` is the
//! offboarding as a state machine; `offboardings` runs its transactions (the API's, the
//! confirmations', the ticker's); `certificate` issues and renders the proof of deletion.

mod api;
mod certificate;
mod offboardings;
mod saga;
mod settings;
mod store;

use picket_platform::nats::{ConsumerSpec, EventHandler, HandlerError, InboundEvent};
use picket_platform::settings::PlatformSettings;
use picket_platform::{Application, Platform, StartError};
use picket_proto::Area;
use picket_proto::offboarding::v1::offboarding_service_server::{
    OffboardingServiceServer, SERVICE_NAME,
};
use tokio_util::sync::CancellationToken;

pub use settings::OffboardingSettings as Settings;

pub const SERVICE: &str = "offboarding";

/// The offboarding service's defaults over the platform's.
pub const DEFAULTS: &str = include_str!("../defaults.toml");

/// The tenants area: the directory of tenants, and the scanner's TenantDisconnected.
struct Tenants(offboardings::Offboardings);

impl EventHandler for Tenants {
    async fn handle(&self, event: InboundEvent) -> Result<(), HandlerError> {
        self.0.tenant_event(&event).await
    }
}

/// The offboarding area: the services' PurgeCompleted.
struct Confirmations(offboardings::Offboardings);

impl EventHandler for Confirmations {
    async fn handle(&self, event: InboundEvent) -> Result<(), HandlerError> {
        self.0.purge_completed(&event).await
    }
}

/// Builds and starts the offboarding service; tests call it in-process.
pub async fn build(
    settings: PlatformSettings,
    own: Settings,
    shutdown: CancellationToken,
) -> Result<Application, StartError> {
    let mut platform = Platform::new(SERVICE, settings, shutdown).await?;
    let offboardings =
        offboardings::Offboardings::new(platform.pool().clone(), platform.events(), own);
    let routes = tonic::service::Routes::new(platform.authenticated(
        OffboardingServiceServer::new(api::OffboardingApi::new(offboardings.clone())),
    ));
    platform.serve_grpc(routes, &[SERVICE_NAME])?;
    platform
        .connect(Some(sqlx::migrate!("./migrations")))
        .await?;
    let spec = |durable_name: &str, area| ConsumerSpec {
        durable_name: durable_name.to_owned(),
        area,
        filter_subjects: Vec::new(),
    };
    platform
        .consume(
            spec(offboardings::TENANTS_CONSUMER, Area::Tenants),
            Tenants(offboardings.clone()),
        )
        .await?;
    platform
        .consume(
            spec(offboardings::OFFBOARDING_CONSUMER, Area::Offboarding),
            Confirmations(offboardings.clone()),
        )
        .await?;
    let ticker = offboardings.run_ticker(platform.shutdown_token());
    platform.spawn("offboarding-ticker", ticker);
    Ok(platform.start().await)
}
