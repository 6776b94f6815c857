//! Picket's platform kit: everything a service needs that is not its domain. Written once here and
//! used by every service: settings, telemetry, the gRPC server with health, reflection and
//! bearer-token auth, the admin port, JetStream publish and consume, the Postgres pool with outbox
//! and inbox, and graceful shutdown.

pub mod admin;
pub mod app;
pub mod auth;
pub mod db;
pub mod grpc;
pub mod metrics;
pub mod nats;
pub mod offboarding;
pub mod oidc;
pub mod request_limits;
pub mod runtime;
pub mod sealing;
pub mod settings;
pub mod telemetry;
pub mod text;
pub mod time;

/// Every Picket process allocates through mimalloc: the services allocate many small, short-lived
/// buffers per event, where glibc's allocator spent about a tenth of the prioritizer bench's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub use app::{Application, EventFactory, Platform, StartError};
pub use auth::{Principal, Role};
pub use runtime::run;
