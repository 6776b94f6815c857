//! The ledger: incident-response retainer credits. This crate serves its contracts
//! (CreditLedgerService, EngagementService) on the platform kit; `engine` decides every movement
//! of credits as a pure function. The calls answer UNIMPLEMENTED until they are built on it.

pub mod engine;

use picket_platform::settings::{NoServiceSettings, PlatformSettings};
use picket_platform::{Application, Platform, StartError};
use picket_proto::ledger::v1::credit_ledger_service_server::{
    self, CreditLedgerService, CreditLedgerServiceServer,
};
use picket_proto::ledger::v1::engagement_service_server::{
    self, EngagementService, EngagementServiceServer,
};
use tokio_util::sync::CancellationToken;

pub const SERVICE: &str = "ledger";

/// The ledger's defaults over the platform's.
pub const DEFAULTS: &str = include_str!("../defaults.toml");

/// The ledger has no settings of its own yet.
pub type Settings = NoServiceSettings;

pub struct LedgerApi;

impl CreditLedgerService for LedgerApi {}

impl EngagementService for LedgerApi {}

/// Builds and starts the ledger; tests call it in-process.
pub async fn build(
    settings: PlatformSettings,
    _own: Settings,
    shutdown: CancellationToken,
) -> Result<Application, StartError> {
    let mut platform = Platform::new(SERVICE, settings, shutdown).await?;
    let routes = tonic::service::Routes::new(
        platform.authenticated(CreditLedgerServiceServer::new(LedgerApi)),
    )
    .add_service(platform.authenticated(EngagementServiceServer::new(LedgerApi)));
    platform.serve_grpc(
        routes,
        &[
            credit_ledger_service_server::SERVICE_NAME,
            engagement_service_server::SERVICE_NAME,
        ],
    )?;
    platform.connect(None).await?;
    Ok(platform.start().await)
}
