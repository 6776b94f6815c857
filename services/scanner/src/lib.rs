//! The scanner: tenants and their connection to Microsoft 365, Graph access, the check catalogue,
//! scans and fixes. Onboarding (TenantService and the consent callback) and the Graph connector
//! are here; scans, checks, detections and fixes (ScanService) are still to come and answer
//! UNIMPLEMENTED.

pub mod graph;
pub mod settings;
pub mod tenants;

use std::sync::Arc;

use picket_platform::settings::PlatformSettings;
use picket_platform::{Application, Platform, StartError};
use picket_proto::tenants::v1::scan_service_server::{self, ScanService, ScanServiceServer};
use picket_proto::tenants::v1::tenant_service_server::{self, TenantServiceServer};
use tokio_util::sync::CancellationToken;

pub const SERVICE: &str = "scanner";

/// The HTTP server that receives Microsoft's admin-consent redirect.
pub const CONSENT_SERVER: &str = "consent callback";

/// The scanner's defaults over the platform's.
pub const DEFAULTS: &str = include_str!("../defaults.toml");

pub use settings::ScannerSettings as Settings;

/// ScanService's behaviour arrives with scanning; until then it answers UNIMPLEMENTED.
pub struct ScanApi;

impl ScanService for ScanApi {}

/// Builds and starts the scanner; tests call it in-process.
pub async fn build(
    settings: PlatformSettings,
    own: Settings,
    shutdown: CancellationToken,
) -> Result<Application, StartError> {
    let mut platform = Platform::new(SERVICE, settings, shutdown).await?;
    let graph =
        graph::GraphClient::new(&own).map_err(|error| StartError::Client(error.to_string()))?;
    let onboarding = Arc::new(tenants::onboarding::Onboarding {
        pool: platform.pool().clone(),
        graph: Arc::new(graph),
        events: platform.events(),
        settings: own.clone(),
    });
    let tenant_api = tenants::api::TenantApi::new(onboarding.clone());
    let routes =
        tonic::service::Routes::new(platform.authenticated(TenantServiceServer::new(tenant_api)))
            .add_service(platform.authenticated(ScanServiceServer::new(ScanApi)));
    platform.serve_grpc(
        routes,
        &[
            tenant_service_server::SERVICE_NAME,
            scan_service_server::SERVICE_NAME,
        ],
    )?;
    platform
        .connect(Some(sqlx::migrate!("./migrations")))
        .await?;
    // Serves the consent redirect only once migrations ran.
    platform
        .serve_http(
            CONSENT_SERVER,
            own.consent_listen,
            tenants::callback::router(onboarding),
        )
        .await?;
    Ok(platform.start().await)
}
