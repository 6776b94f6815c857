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
pub mod runtime;
pub mod settings;
pub mod telemetry;
pub mod time;

pub use app::{Application, EventFactory, Platform, StartError};
pub use auth::{Principal, Role};
pub use runtime::run;
