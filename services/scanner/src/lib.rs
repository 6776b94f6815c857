//! The scanner: tenants and their connection to Microsoft 365, Graph access, the check catalogue,
//! scheduled scans and monitoring polls, and the fixes it applies.

pub mod checks;
pub mod fixes;
pub mod graph;
pub mod offboarding;
pub mod scans;
pub mod settings;
pub mod tenants;

use std::sync::Arc;

use picket_platform::nats::ConsumerSpec;
use picket_platform::settings::PlatformSettings;
use picket_platform::{Application, Platform, StartError};
use picket_proto::Area;
use picket_proto::tenants::v1::scan_service_server::{self, ScanServiceServer};
use picket_proto::tenants::v1::tenant_service_server::{self, TenantServiceServer};
use tokio_util::sync::CancellationToken;

pub const SERVICE: &str = "scanner";

/// The HTTP server that receives Microsoft's admin-consent redirect.
pub const CONSENT_SERVER: &str = "consent callback";

/// The scanner's defaults over the platform's.
pub const DEFAULTS: &str = include_str!("../defaults.toml");

pub use settings::ScannerSettings as Settings;

/// Builds and starts the scanner; tests call it in-process.
pub async fn build(
    settings: PlatformSettings,
    own: Settings,
    shutdown: CancellationToken,
) -> Result<Application, StartError> {
    let mut platform = Platform::new(SERVICE, settings, shutdown).await?;
    let graph = Arc::new(
        graph::GraphClient::new(&own)
            .map_err(|error| StartError::Client(error.to_string()))?
            .observed_by(graph::GraphMetrics::registered(platform.metrics())),
    );
    let catalogue = Arc::new(
        checks::catalogue::Catalogue::builtin()
            .map_err(|error| StartError::Client(error.to_string()))?,
    );
    let sign_in_http = reqwest::Client::builder()
        .timeout(own.request_timeout)
        .build()
        .map_err(|error| StartError::Client(error.to_string()))?;
    let onboarding = Arc::new(tenants::onboarding::Onboarding {
        pool: platform.pool().clone(),
        graph: graph.clone(),
        catalogue: catalogue.clone(),
        sign_in: tenants::signin::AdminSignIn::new(sign_in_http, &own),
        events: platform.events(),
        settings: own.clone(),
        consent_links: picket_platform::sealing::Keyring::parse(&own.consent_link_keys)
            .map_err(|error| StartError::Client(format!("scanner.consent_link_keys {error}")))?,
    });
    let scanning = Arc::new(scans::runner::Scanning {
        pool: platform.pool().clone(),
        graph: graph.clone(),
        catalogue: catalogue.clone(),
        events: platform.events(),
        settings: own.clone(),
    });
    let wake = scans::scheduler::Wake::default();
    let tenant_api = tenants::api::TenantApi::new(onboarding.clone());
    let scan_api = scans::api::ScanApi::new(scanning.clone(), wake.clone());
    let routes =
        tonic::service::Routes::new(platform.authenticated(TenantServiceServer::new(tenant_api)))
            .add_service(platform.authenticated(ScanServiceServer::new(scan_api)));
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
    platform
        .consume(
            ConsumerSpec {
                durable_name: fixes::CONSUMER.to_owned(),
                // FixRequested, and the scanner's own FixApplied and FixFailed, which it skips.
                area: Area::Fixes,
                filter_subjects: Vec::new(),
            },
            fixes::FixHandler::new(scanning.clone()),
        )
        .await?;
    platform
        .consume(
            ConsumerSpec {
                durable_name: offboarding::CONSUMER.to_owned(),
                area: Area::Offboarding,
                filter_subjects: Vec::new(),
            },
            offboarding::OffboardingHandler::new(scanning.clone()),
        )
        .await?;
    let shutdown = platform.shutdown_token();
    platform.spawn(
        "scan scheduler",
        scans::scheduler::run_scheduler(scanning.clone(), wake.clone(), shutdown.clone()),
    );
    for _ in 0..own.scan_workers {
        platform.spawn(
            "scan worker",
            scans::scheduler::run_worker(scanning.clone(), wake.clone(), shutdown.clone()),
        );
    }
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
