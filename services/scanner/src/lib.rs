//! The scanner: tenants and their connection to Microsoft 365, Graph access, the check catalogue,
//! scans and fixes. This crate serves its contracts (TenantService, ScanService) on the platform
//! kit; their behaviour arrives with the tenant-scanning issue and answers UNIMPLEMENTED until then.

pub mod graph;
pub mod settings;

use picket_platform::settings::PlatformSettings;
use picket_platform::{Application, Platform, StartError};
use picket_proto::tenants::v1::scan_service_server::{self, ScanService, ScanServiceServer};
use picket_proto::tenants::v1::tenant_service_server::{self, TenantService, TenantServiceServer};
use tokio_util::sync::CancellationToken;

pub const SERVICE: &str = "scanner";

/// The scanner's defaults over the platform's.
pub const DEFAULTS: &str = include_str!("../defaults.toml");

pub use settings::ScannerSettings as Settings;

pub struct ScannerApi;

impl TenantService for ScannerApi {}

impl ScanService for ScannerApi {}

/// Builds and starts the scanner; tests call it in-process.
pub async fn build(
    settings: PlatformSettings,
    _own: Settings,
    shutdown: CancellationToken,
) -> Result<Application, StartError> {
    let mut platform = Platform::new(SERVICE, settings, shutdown).await?;
    let routes =
        tonic::service::Routes::new(platform.authenticated(TenantServiceServer::new(ScannerApi)))
            .add_service(platform.authenticated(ScanServiceServer::new(ScannerApi)));
    platform.serve_grpc(
        routes,
        &[
            tenant_service_server::SERVICE_NAME,
            scan_service_server::SERVICE_NAME,
        ],
    )?;
    platform.connect(None).await?;
    Ok(platform.start().await)
}
