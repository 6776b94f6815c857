//! A service's life: [`Platform::new`] binds its ports and starts serving health (NOT_SERVING) at
//! once, [`Platform::connect`] waits for PostgreSQL and NATS, migrates and provisions (or awaits) streams, the
//! service adds its consumers and workers, and [`Platform::start`] turns health to SERVING. The
//! resulting [`Application`] drains within the grace period on shutdown, or can be killed outright
//! (tests use that to simulate a crash).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::jetstream;
use chrono::{DateTime, Utc};
use picket_proto::Event;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPool;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic::service::interceptor::InterceptedService;
use tonic_health::ServingStatus;
use tonic_health::server::{HealthReporter, HealthService};

use crate::admin::{self, AdminState};
use crate::auth::{AuthInterceptor, TokenAuthority};
use crate::db;
use crate::grpc::{ObservabilityLayer, with_reflection};
use crate::metrics::Metrics;
use crate::nats::subjects::SubjectError;
use crate::nats::{Consumer, ConsumerSpec, EventHandler, OutgoingEvent, Subjects, streams};
use crate::request_limits::{RequestLimits, RequestLimitsLayer};
use crate::settings::PlatformSettings;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot bind the {port} port to {address}: {source}")]
    Bind {
        port: &'static str,
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("invalid database settings: {0}")]
    Database(#[source] sqlx::Error),
    #[error("migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot connect to nats: {0}")]
    Nats(#[from] async_nats::ConnectError),
    #[error(transparent)]
    Streams(#[from] streams::ProvisionError),
    #[error(transparent)]
    Consumer(#[from] crate::nats::consumer::ConsumerError),
    #[error("cannot build gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("cannot build an http client: {0}")]
    Client(String),
    #[error("cannot read the contract descriptors: {0}")]
    Descriptors(#[from] prost::DecodeError),
    #[error("shutdown requested before the service was ready")]
    Interrupted,
}

/// Builds a service's events: its name is the CloudEvents source.
#[derive(Debug, Clone)]
pub struct EventFactory {
    subjects: Subjects,
    service: &'static str,
}

impl EventFactory {
    pub fn new(subjects: Subjects, service: &'static str) -> EventFactory {
        EventFactory { subjects, service }
    }

    pub fn event<E: Event>(
        &self,
        event: &E,
        time: DateTime<Utc>,
    ) -> Result<OutgoingEvent, SubjectError> {
        OutgoingEvent::new(&self.subjects, self.service, event, time)
    }

    pub fn subjects(&self) -> &Subjects {
        &self.subjects
    }
}

struct Task {
    name: &'static str,
    handle: JoinHandle<()>,
}

/// The platform kit of a service being built.
pub struct Platform {
    service: &'static str,
    settings: PlatformSettings,
    pool: PgPool,
    nats: async_nats::Client,
    jetstream: jetstream::Context,
    subjects: Subjects,
    metrics: Arc<Metrics>,
    tokens: Arc<TokenAuthority>,
    health: HealthReporter,
    health_names: Vec<&'static str>,
    ready: Arc<AtomicBool>,
    shutdown: CancellationToken,
    grpc_listener: Option<TcpListener>,
    grpc_address: SocketAddr,
    admin_address: SocketAddr,
    http_addresses: Vec<(&'static str, SocketAddr)>,
    tasks: Vec<Task>,
}

async fn bind(port: &'static str, address: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| StartError::Bind {
            port,
            address,
            source,
        })
}

fn local_address(port: &'static str, listener: &TcpListener) -> Result<SocketAddr, StartError> {
    listener.local_addr().map_err(|source| StartError::Bind {
        port,
        address: SocketAddr::from(([0, 0, 0, 0], 0)),
        source,
    })
}

impl Platform {
    /// Binds the gRPC and admin ports and opens (lazily) the database pool and NATS connection.
    /// Nothing here waits for a dependency.
    pub async fn new(
        service: &'static str,
        settings: PlatformSettings,
        shutdown: CancellationToken,
    ) -> Result<Platform, StartError> {
        let grpc_listener = bind("grpc", settings.grpc.listen).await?;
        let admin_listener = bind("admin", settings.admin.listen).await?;
        let grpc_address = local_address("grpc", &grpc_listener)?;
        let admin_address = local_address("admin", &admin_listener)?;
        let pool = db::connect_lazy(&settings.database).map_err(StartError::Database)?;
        let nats = crate::nats::connect_options(service, &settings.nats)
            .retry_on_initial_connect()
            .connect(settings.nats.url.as_str())
            .await?;
        let jetstream = jetstream::new(nats.clone());
        let subjects = Subjects::new(settings.nats.namespace.clone());
        let metrics = Arc::new(Metrics::new());
        let identity_provider = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|error| StartError::Client(error.to_string()))?;
        let tokens = Arc::new(TokenAuthority::new(&settings.auth, identity_provider));
        let health = HealthReporter::new();
        health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        let ready = Arc::new(AtomicBool::new(false));

        let mut platform = Platform {
            service,
            settings,
            pool,
            nats,
            jetstream,
            subjects,
            metrics,
            tokens,
            health,
            health_names: Vec::new(),
            ready,
            shutdown,
            grpc_listener: Some(grpc_listener),
            grpc_address,
            admin_address,
            http_addresses: Vec::new(),
            tasks: Vec::new(),
        };
        let admin_router = admin::router(AdminState {
            ready: platform.ready.clone(),
            metrics: platform.metrics.clone(),
        });
        platform.spawn_http("admin server", admin_listener, admin_router);
        Ok(platform)
    }

    fn spawn_http(&mut self, name: &'static str, listener: TcpListener, router: axum::Router) {
        let shutdown = self.shutdown.clone();
        self.spawn(name, async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await;
            if let Err(error) = served {
                tracing::error!(%error, server = name, "http server failed");
            }
        });
    }

    /// Serves another HTTP port of the service (such as a public callback) until shutdown;
    /// returns the bound address, also known to the [`Application`] by `name`.
    pub async fn serve_http(
        &mut self,
        name: &'static str,
        address: SocketAddr,
        router: axum::Router,
    ) -> Result<SocketAddr, StartError> {
        let listener = bind(name, address).await?;
        let bound = local_address(name, &listener)?;
        self.spawn_http(name, listener, router);
        self.http_addresses.push((name, bound));
        Ok(bound)
    }

    pub fn settings(&self) -> &PlatformSettings {
        &self.settings
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The service's metrics, where it registers its own domain counters.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn subjects(&self) -> &Subjects {
        &self.subjects
    }

    pub fn events(&self) -> EventFactory {
        EventFactory::new(self.subjects.clone(), self.service)
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Puts the bearer-token interceptor in front of a gRPC service.
    pub fn authenticated<S>(&self, service: S) -> InterceptedService<S, AuthInterceptor> {
        InterceptedService::new(service, AuthInterceptor::new(self.tokens.clone()))
    }

    /// Starts the gRPC server with health (NOT_SERVING until [`Platform::start`]), reflection and
    /// the service's own routes. `service_names` get their own health entries.
    pub fn serve_grpc(
        &mut self,
        routes: Routes,
        service_names: &[&'static str],
    ) -> Result<(), StartError> {
        let Some(listener) = self.grpc_listener.take() else {
            debug_assert!(false, "serve_grpc called twice");
            return Ok(());
        };
        self.health_names.extend_from_slice(service_names);
        let health_service = tonic_health::pb::health_server::HealthServer::new(
            HealthService::from_health_reporter(self.health.clone()),
        );
        let routes = with_reflection(routes)?;
        let layer = ObservabilityLayer::new(self.metrics.clone());
        let limits = RequestLimitsLayer::new(Arc::new(RequestLimits::from_descriptors(
            picket_proto::FILE_DESCRIPTOR_SET,
        )?));
        let shutdown = self.shutdown.clone();
        self.spawn("grpc server", async move {
            let served = tonic::transport::Server::builder()
                .layer(layer)
                .layer(limits)
                .add_routes(routes)
                .add_service(health_service)
                .serve_with_incoming_shutdown(
                    // Without TCP_NODELAY a small response waits on the client's delayed ACK (Nagle):
                    // 40 ms per call.
                    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                    shutdown.cancelled_owned(),
                )
                .await;
            if let Err(error) = served {
                tracing::error!(%error, "grpc server failed");
            }
        });
        Ok(())
    }

    /// Waits for PostgreSQL (then migrates: the kit's tables and `migrations`) and NATS (then
    /// provisions the streams, or waits until the provisioning identity has), retrying until they answer or shutdown is requested.
    pub async fn connect(&mut self, migrations: Option<Migrator>) -> Result<(), StartError> {
        self.wait_for("postgres", |platform| {
            let pool = platform.pool.clone();
            async move {
                sqlx::query("SELECT 1")
                    .execute(&pool)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        })
        .await?;
        db::migrate(&self.pool, &self.settings.database.schema, migrations).await?;
        if let Some((keys, unknown_key)) = self.tokens.key_set() {
            self.wait_for("identity provider", |_| {
                let keys = keys.clone();
                async move { keys.refresh().await.map(|_| ()).map_err(|e| e.to_string()) }
            })
            .await?;
            let refresh = self.settings.auth.jwks_refresh;
            let shutdown = self.shutdown.clone();
            self.spawn(
                "signing key refresher",
                refresh_signing_keys(keys, unknown_key, refresh, shutdown),
            );
        }
        self.wait_for("nats", |platform| {
            let state = platform.nats.connection_state();
            async move {
                match state {
                    async_nats::connection::State::Connected => Ok(()),
                    other => Err(format!("connection is {other:?}")),
                }
            }
        })
        .await?;
        if self.settings.nats.provision_streams {
            streams::provision(&self.jetstream, &self.subjects, &self.settings.nats).await?;
        } else {
            self.wait_for("nats streams", |platform| {
                let jetstream = platform.jetstream.clone();
                let subjects = platform.subjects.clone();
                let settings = platform.settings.nats.clone();
                async move { streams::present(&jetstream, &subjects, &settings).await }
            })
            .await?;
        }
        Ok(())
    }

    async fn wait_for<F, Fut>(&self, dependency: &'static str, probe: F) -> Result<(), StartError>
    where
        F: Fn(&Platform) -> Fut,
        Fut: Future<Output = Result<(), String>>,
    {
        let mut logged = false;
        loop {
            match probe(self).await {
                Ok(()) => return Ok(()),
                Err(error) if !logged => {
                    tracing::warn!(dependency, %error, "waiting for dependency");
                    logged = true;
                }
                Err(_) => {}
            }
            tokio::select! {
                () = self.shutdown.cancelled() => return Err(StartError::Interrupted),
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }

    /// Creates a durable consumer and runs `handler` on its messages until shutdown.
    pub async fn consume<H: EventHandler>(
        &mut self,
        spec: ConsumerSpec,
        handler: H,
    ) -> Result<(), StartError> {
        let consumer = Consumer::create(
            &self.jetstream,
            &self.subjects,
            &self.settings.nats,
            self.service,
            spec,
            handler,
            self.metrics.clone(),
        )
        .await?;
        let shutdown = self.shutdown.clone();
        self.spawn("consumer", consumer.run(shutdown));
        Ok(())
    }

    /// Runs a background task of the service; it must return once the shutdown token is cancelled.
    pub fn spawn(&mut self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.push(Task {
            name,
            handle: tokio::spawn(task),
        });
    }

    /// Starts the outbox relay and reports SERVING: the service is ready.
    pub async fn start(mut self) -> Application {
        let relay = db::outbox::OutboxRelay::new(
            self.pool.clone(),
            self.settings.database.schema.clone(),
            self.jetstream.clone(),
            self.subjects.dead_letter_subject(self.service),
            self.settings.nats.outbox_poll_interval,
            self.metrics.clone(),
        );
        let shutdown = self.shutdown.clone();
        self.spawn("outbox relay", relay.run(shutdown));
        self.health
            .set_service_status("", ServingStatus::Serving)
            .await;
        for name in &self.health_names {
            self.health
                .set_service_status(*name, ServingStatus::Serving)
                .await;
        }
        self.ready.store(true, Ordering::Release);
        tracing::info!(
            service = self.service,
            grpc = %self.grpc_address,
            admin = %self.admin_address,
            "service ready"
        );
        Application {
            service: self.service,
            grpc_address: self.grpc_address,
            admin_address: self.admin_address,
            http_addresses: self.http_addresses,
            grace_period: self.settings.shutdown.grace_period,
            health: self.health,
            health_names: self.health_names,
            ready: self.ready,
            shutdown: self.shutdown,
            pool: self.pool,
            nats: self.nats,
            tasks: self.tasks,
        }
    }
}

/// Reads the identity provider's keys again every `interval`, and soon after a token named a key
/// not held yet (at most every [`crate::oidc::MIN_REFETCH`]), so a rotation is followed.
async fn refresh_signing_keys(
    keys: Arc<crate::oidc::KeySet>,
    unknown_key: Arc<tokio::sync::Notify>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
            () = unknown_key.notified() => {
                let wait = keys.refetch_after();
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
        match keys.refresh().await {
            Ok(count) => tracing::info!(keys = count, "identity provider signing keys refreshed"),
            Err(error) => {
                tracing::warn!(%error, "cannot refresh the identity provider's signing keys")
            }
        }
    }
}

/// A running service.
pub struct Application {
    service: &'static str,
    grpc_address: SocketAddr,
    admin_address: SocketAddr,
    http_addresses: Vec<(&'static str, SocketAddr)>,
    grace_period: Duration,
    health: HealthReporter,
    health_names: Vec<&'static str>,
    ready: Arc<AtomicBool>,
    shutdown: CancellationToken,
    pool: PgPool,
    nats: async_nats::Client,
    tasks: Vec<Task>,
}

impl Application {
    pub fn grpc_address(&self) -> SocketAddr {
        self.grpc_address
    }

    pub fn admin_address(&self) -> SocketAddr {
        self.admin_address
    }

    /// The address of an HTTP port started with [`Platform::serve_http`].
    pub fn http_address(&self, name: &str) -> Option<SocketAddr> {
        self.http_addresses
            .iter()
            .find(|(served, _)| *served == name)
            .map(|(_, address)| *address)
    }

    /// Stops taking work, lets in-flight RPCs and messages finish within the grace period, then
    /// aborts what is left.
    pub async fn shutdown(mut self) {
        tracing::info!(service = self.service, "shutting down");
        self.ready.store(false, Ordering::Release);
        self.health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        for name in &self.health_names {
            self.health
                .set_service_status(*name, ServingStatus::NotServing)
                .await;
        }
        self.shutdown.cancel();
        let deadline = tokio::time::Instant::now() + self.grace_period;
        for task in std::mem::take(&mut self.tasks) {
            let abort = task.handle.abort_handle();
            if tokio::time::timeout_at(deadline, task.handle)
                .await
                .is_err()
            {
                tracing::warn!(
                    task = task.name,
                    "task did not stop within the grace period"
                );
                abort.abort();
            }
        }
        if let Err(error) = self.nats.flush().await {
            tracing::warn!(%error, "nats flush failed");
        }
        self.pool.close().await;
        tracing::info!(service = self.service, "stopped");
    }

    /// Stops every task at once, as a crash would: nothing is drained or acked.
    pub fn kill(mut self) {
        for task in std::mem::take(&mut self.tasks) {
            task.handle.abort();
        }
    }
}

impl Drop for Application {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.handle.abort();
        }
    }
}
