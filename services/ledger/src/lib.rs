//! The ledger: incident-response retainer credits. `engine` decides every movement of credits as
//! a pure function; `store` keeps accounts, transfers, packs and holds in PostgreSQL; `api`
//! serves CreditLedgerService and `engagement_api` EngagementService, every credit-moving call
//! through one group commit (`batch`: idempotency key, locked position, engine, storage);
//! `reports` answers listings and statements.

pub mod api;
mod batch;
pub mod engagement_api;
pub mod engagements;
pub mod engine;
pub mod reports;
mod settings;
pub mod store;

use picket_platform::settings::PlatformSettings;
use picket_platform::{Application, Platform, StartError};
use picket_proto::ledger::v1::credit_ledger_service_server::{self, CreditLedgerServiceServer};
use picket_proto::ledger::v1::engagement_service_server::{self, EngagementServiceServer};
use tokio_util::sync::CancellationToken;

pub const SERVICE: &str = "ledger";

/// The ledger's defaults over the platform's.
pub const DEFAULTS: &str = include_str!("../defaults.toml");

pub use settings::LedgerSettings as Settings;

/// Builds and starts the ledger; tests call it in-process.
pub async fn build(
    settings: PlatformSettings,
    own: Settings,
    shutdown: CancellationToken,
) -> Result<Application, StartError> {
    let mut platform = Platform::new(SERVICE, settings, shutdown).await?;
    let commands = batch::Applier::start(
        platform.pool().clone(),
        platform.events(),
        own.batch_size,
        platform.shutdown_token(),
    );
    platform.spawn(
        "expiry sweep",
        batch::sweep(
            platform.pool().clone(),
            commands.clone(),
            own.expiry_sweep_interval,
            platform.shutdown_token(),
        ),
    );
    let ledger = api::LedgerApi::new(platform.pool().clone(), commands);
    let routes = tonic::service::Routes::new(
        platform.authenticated(CreditLedgerServiceServer::new(ledger.clone())),
    )
    .add_service(platform.authenticated(EngagementServiceServer::new(
        engagement_api::EngagementApi::new(ledger.clone()),
    )));
    platform.serve_grpc(
        routes,
        &[
            credit_ledger_service_server::SERVICE_NAME,
            engagement_service_server::SERVICE_NAME,
        ],
    )?;
    platform
        .connect(Some(sqlx::migrate!("./migrations")))
        .await?;
    Ok(platform.start().await)
}
