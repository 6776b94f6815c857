//! The ledger: incident-response retainer credits. `engine` decides every movement of credits as
//! a pure function; `store` keeps accounts, transfers, packs and holds in PostgreSQL; `api`
//! serves CreditLedgerService and `engagement_api` EngagementService, every credit-moving call
//! through the same mutation (idempotency key, locked position, engine, storage). Statements,
//! transfer and pack listings, investigator assignment, recommendations outside a close, and the
//! periodic expiry sweep answer UNIMPLEMENTED or wait for the next movement so far.

pub mod api;
pub mod engagement_api;
pub mod engagements;
pub mod engine;
pub mod store;

use picket_platform::settings::{NoServiceSettings, PlatformSettings};
use picket_platform::{Application, Platform, StartError};
use picket_proto::ledger::v1::credit_ledger_service_server::{self, CreditLedgerServiceServer};
use picket_proto::ledger::v1::engagement_service_server::{self, EngagementServiceServer};
use tokio_util::sync::CancellationToken;

pub const SERVICE: &str = "ledger";

/// The ledger's defaults over the platform's.
pub const DEFAULTS: &str = include_str!("../defaults.toml");

/// The ledger has no settings of its own yet.
pub type Settings = NoServiceSettings;

/// Builds and starts the ledger; tests call it in-process.
pub async fn build(
    settings: PlatformSettings,
    _own: Settings,
    shutdown: CancellationToken,
) -> Result<Application, StartError> {
    let mut platform = Platform::new(SERVICE, settings, shutdown).await?;
    let ledger = api::LedgerApi::new(platform.pool().clone(), platform.events());
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
