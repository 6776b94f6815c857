//! The prioritizer: decides which findings become incidents now, later or never, and carries each
//! incident from opening to resolution.

pub mod api;
pub mod authority;
pub mod clock;
pub mod consumers;
pub mod engagements;
pub mod engine;
pub mod escalation;
pub mod model;
pub mod policy_api;
pub mod processor;
pub mod scheduler;
pub mod settings;
pub mod store;
pub mod themes;

use std::sync::Arc;

use picket_platform::db::group_commit::GroupCommit;
use picket_platform::nats::ConsumerSpec;
use picket_platform::offboarding::Purger;
use picket_platform::settings::PlatformSettings;
use picket_platform::{Application, Platform, StartError};
use picket_proto::Area;
use picket_proto::incidents::v1::authority_service_server::{self, AuthorityServiceServer};
use picket_proto::incidents::v1::incident_service_server::{self, IncidentServiceServer};
use picket_proto::incidents::v1::policy_service_server::{self, PolicyServiceServer};
use tokio_util::sync::CancellationToken;

pub use clock::Clock;

pub const SERVICE: &str = "prioritizer";

/// The prioritizer's defaults over the platform's.
pub const DEFAULTS: &str = include_str!("../defaults.toml");

pub type Settings = settings::PrioritizerSettings;

/// Builds and starts the prioritizer; tests call it in-process.
pub async fn build(
    settings: PlatformSettings,
    own: Settings,
    shutdown: CancellationToken,
) -> Result<Application, StartError> {
    build_with_clock(settings, own, shutdown, Clock::default()).await
}

/// Builds the prioritizer on `clock`, which tests move forward.
pub async fn build_with_clock(
    settings: PlatformSettings,
    own: Settings,
    shutdown: CancellationToken,
    clock: Clock,
) -> Result<Application, StartError> {
    let mut platform = Platform::new(SERVICE, settings, shutdown).await?;
    let batch_size = own.batch_size;

    let processor = Arc::new(processor::Processor::new(
        platform.pool().clone(),
        platform.events(),
        clock,
        themes::Themes::shipped(),
        own,
    ));
    let authority = authority::Authority::new(
        platform.pool().clone(),
        platform.events(),
        processor.standard_map().clone(),
    );
    let incidents =
        IncidentServiceServer::new(api::IncidentApi::new(processor.clone(), authority.clone()));
    let policies = PolicyServiceServer::new(policy_api::PolicyApi::new(
        processor.clone(),
        authority.clone(),
    ));
    let authorities = AuthorityServiceServer::new(authority::AuthorityApi::new(authority));
    let routes = tonic::service::Routes::new(platform.authenticated(incidents))
        .add_service(platform.authenticated(policies))
        .add_service(platform.authenticated(authorities));
    platform.serve_grpc(
        routes,
        &[
            incident_service_server::SERVICE_NAME,
            policy_service_server::SERVICE_NAME,
            authority_service_server::SERVICE_NAME,
        ],
    )?;
    platform
        .connect(Some(sqlx::migrate!("./migrations")))
        .await?;
    let intake = GroupCommit::start(processor.clone(), batch_size, platform.shutdown_token());
    let spec = |durable_name: &str, area| ConsumerSpec {
        durable_name: durable_name.to_owned(),
        area,
        // The whole area: this NATS server takes one filter per consumer.
        filter_subjects: Vec::new(),
    };
    let findings = consumers::FindingsHandler::new(intake.clone(), processor.themes().clone());
    platform
        .consume(spec(consumers::FINDINGS, Area::Findings), findings)
        .await?;
    let fixes = consumers::FixesHandler::new(intake.clone());
    platform
        .consume(spec(consumers::FIXES, Area::Fixes), fixes)
        .await?;
    let tenants = consumers::TenantsHandler::new(intake.clone());
    platform
        .consume(spec(consumers::TENANTS, Area::Tenants), tenants)
        .await?;
    platform
        .consume(
            spec(engagements::LEDGER, Area::Ledger),
            engagements::EngagementsHandler::new(platform.pool().clone()),
        )
        .await?;
    let purger = Purger::new(
        platform.pool().clone(),
        platform.events(),
        SERVICE,
        consumers::OFFBOARDING,
        consumers::PURGES,
    );
    platform
        .consume(
            spec(consumers::OFFBOARDING, Area::Offboarding),
            consumers::OffboardingHandler::new(intake, purger),
        )
        .await?;
    let timers = scheduler::run(processor, platform.shutdown_token());
    platform.spawn("prioritizer-timers", timers);
    Ok(platform.start().await)
}
