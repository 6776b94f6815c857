//! What every service binary does: load settings (exit 64 when invalid), start telemetry, build the
//! service, wait for SIGTERM or SIGINT, shut down within the grace period, exit 0. With the one
//! argument `provision-streams` it instead creates or updates the JetStream streams and exits: the
//! provisioning Job runs that as the only NATS user allowed to.

use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use crate::app::{Application, StartError};
use crate::nats::streams;
use crate::settings::{self, EXIT_INVALID_SETTINGS, PlatformSettings, ServiceSettings};
use crate::telemetry;

/// The argument that makes a service binary provision the streams instead of serving.
const PROVISION_STREAMS: &str = "provision-streams";

/// Runs a service binary. `build` receives the validated settings and the shutdown token.
pub fn run<S, F, Fut>(service: &'static str, service_defaults: &str, build: F) -> ExitCode
where
    S: ServiceSettings,
    F: FnOnce(PlatformSettings, S, CancellationToken) -> Fut,
    Fut: Future<Output = Result<Application, StartError>>,
{
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    match arguments.as_slice() {
        [] => {}
        [only] if only == PROVISION_STREAMS => return provision_streams(service, service_defaults),
        _ => {
            eprintln!(
                "picket-{service}: unexpected arguments {arguments:?}\n\
                 usage: {service}                      serves (settings: PICKET__* variables)\n\
                 \x20      {service} {PROVISION_STREAMS}    creates or updates the streams, then exits"
            );
            return ExitCode::from(EXIT_INVALID_SETTINGS);
        }
    }
    let (platform_settings, own_settings) = match settings::load::<S>(service, service_defaults) {
        Ok(loaded) => loaded,
        Err(error) => {
            eprintln!("picket-{service}: {error}");
            return ExitCode::from(EXIT_INVALID_SETTINGS);
        }
    };
    install_crypto_provider();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("picket-{service}: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let telemetry = match telemetry::init(service, &platform_settings.telemetry) {
            Ok(telemetry) => telemetry,
            Err(error) => {
                eprintln!("picket-{service}: {error}");
                return ExitCode::FAILURE;
            }
        };
        let shutdown = CancellationToken::new();
        tokio::spawn(cancel_on_signal(shutdown.clone()));
        let exit = match build(platform_settings, own_settings, shutdown.clone()).await {
            Ok(application) => {
                shutdown.cancelled().await;
                application.shutdown().await;
                ExitCode::SUCCESS
            }
            Err(StartError::Interrupted) => ExitCode::SUCCESS,
            Err(error) => {
                tracing::error!(%error, "service failed to start");
                ExitCode::FAILURE
            }
        };
        telemetry.shutdown();
        exit
    })
}

/// `<service> provision-streams`: only the NATS settings are read (the provisioning Job has no
/// database or identity provider); exits 0 once every stream exists with its configuration.
fn provision_streams(service: &'static str, service_defaults: &str) -> ExitCode {
    let nats = match settings::load_nats(service_defaults) {
        Ok(nats) => nats,
        Err(error) => {
            eprintln!("picket-{service}: {error}");
            return ExitCode::from(EXIT_INVALID_SETTINGS);
        }
    };
    install_crypto_provider();
    let provisioned = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("cannot start the async runtime: {error}"))
        .and_then(|runtime| {
            runtime
                .block_on(streams::provision_as(service, &nats))
                .map_err(|error| error.to_string())
        });
    match provisioned {
        Ok(()) => {
            eprintln!(
                "picket-{service}: streams provisioned in namespace {}",
                nats.namespace
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("picket-{service}: {error}");
            ExitCode::FAILURE
        }
    }
}

/// rustls needs one process-wide crypto provider; ring is already built for the NATS client.
pub fn install_crypto_provider() {
    // Fails only when a provider is installed already, which is just as good.
    let _ignored = rustls::crypto::ring::default_provider().install_default();
}

async fn cancel_on_signal(shutdown: CancellationToken) {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => tracing::info!("interrupt received"),
        () = terminate => tracing::info!("terminate received"),
    }
    shutdown.cancel();
}
