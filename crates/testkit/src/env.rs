//! One isolated environment per test, on the real PostgreSQL and NATS named by
//! `PICKET_TEST_DATABASE_URL` and `PICKET_TEST_NATS_URL` (loopback defaults).

use std::time::Duration;

use config::{Config, File, FileFormat};
use picket_platform::auth::TokenAuthority;
use picket_platform::nats::{OutgoingEvent, Subjects};
use picket_platform::settings::{self, PlatformSettings, ServiceSettings};
use picket_platform::{Principal, Role};
use picket_proto::Event;
use sqlx::AssertSqlSafe;
use sqlx::Connection;
use uuid::Uuid;

const JWT_SECRET: &str = "test-secret-test-secret-test-secret-0123";

fn server_database_url() -> String {
    std::env::var("PICKET_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

fn nats_url() -> String {
    std::env::var("PICKET_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

/// Installs a test subscriber once (respects `RUST_LOG`, defaults to warnings), with the
/// OpenTelemetry layer so trace context propagates as in production.
pub fn init_test_tracing() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        let settings = picket_platform::settings::TelemetrySettings {
            log_format: picket_platform::settings::LogFormat::Pretty,
            log_filter: std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".to_owned()),
            otlp_endpoint: String::new(),
        };
        if picket_platform::telemetry::init("test", &settings).is_err() {
            let _ignored = tracing_subscriber::registry()
                .with(tracing_subscriber::fmt::layer().with_test_writer())
                .try_init();
        }
        picket_platform::runtime::install_crypto_provider();
    });
}

pub struct TestEnv {
    /// The test's own subject namespace, such as `t1a2b3c4d5e6`.
    pub namespace: String,
    /// URL of the test's own database.
    pub database_url: String,
    database_name: String,
    pub nats: async_nats::Client,
    pub jetstream: async_nats::jetstream::Context,
    pub subjects: Subjects,
    tokens: TokenAuthority,
}

impl TestEnv {
    pub async fn new() -> TestEnv {
        init_test_tracing();
        let suffix = Uuid::new_v4().simple().to_string()[..12].to_owned();
        let database_name = format!("picket_test_{suffix}");
        let mut server = sqlx::PgConnection::connect(&server_database_url())
            .await
            .expect("postgres is reachable (make test starts it)");
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {database_name}")))
            .execute(&mut server)
            .await
            .expect("create the test database");
        let base = server_database_url();
        let database_url = match base.rsplit_once('/') {
            Some((prefix, _)) => format!("{prefix}/{database_name}"),
            None => panic!("PICKET_TEST_DATABASE_URL has no database path: {base}"),
        };
        let nats = async_nats::connect(nats_url())
            .await
            .expect("nats is reachable (make test starts it)");
        let jetstream = async_nats::jetstream::new(nats.clone());
        let namespace = format!("t{suffix}");
        let tokens = TokenAuthority::shared_key(
            JWT_SECRET,
            "picket",
            "picket",
            std::time::Duration::from_secs(8 * 3600),
        );
        TestEnv {
            subjects: Subjects::new(namespace.clone()),
            namespace,
            database_url,
            database_name,
            nats,
            jetstream,
            tokens,
        }
    }

    /// A settings source for one service: embedded defaults, the service's defaults, then this
    /// test's database, namespace, free ports and fast timings, then each of `layers` in turn.
    pub fn config(&self, service_defaults: &str, layers: &[&str]) -> Config {
        let test_toml = format!(
            r#"
[grpc]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[database]
url = "{database_url}"
max_connections = 8
[nats]
url = "{nats_url}"
namespace = "{namespace}"
ack_wait = "2s"
redelivery_backoff = ["100ms", "200ms", "400ms"]
stream_storage = "memory"
stream_max_age = "1h"
lanes = 4
outbox_poll_interval = "200ms"
[auth]
jwt_secret = "{JWT_SECRET}"
[shutdown]
grace_period = "5s"
"#,
            database_url = self.database_url,
            nats_url = nats_url(),
            namespace = self.namespace,
        );
        layers
            .iter()
            .fold(
                Config::builder()
                    .add_source(File::from_str(
                        settings::platform_defaults(),
                        FileFormat::Toml,
                    ))
                    .add_source(File::from_str(service_defaults, FileFormat::Toml))
                    .add_source(File::from_str(&test_toml, FileFormat::Toml)),
                |builder, layer| builder.add_source(File::from_str(layer, FileFormat::Toml)),
            )
            .build()
            .expect("test settings build")
    }

    /// Validated settings for `service`, as its binary would load them.
    pub fn settings<S: ServiceSettings>(
        &self,
        service: &str,
        service_defaults: &str,
        extra_toml: &str,
    ) -> (PlatformSettings, S) {
        self.settings_layered(service, service_defaults, &[extra_toml])
    }

    /// Validated settings for `service` with several layers over the test's own, later ones
    /// winning (a test's settings over a helper's).
    pub fn settings_layered<S: ServiceSettings>(
        &self,
        service: &str,
        service_defaults: &str,
        layers: &[&str],
    ) -> (PlatformSettings, S) {
        settings::from_config(service, &self.config(service_defaults, layers))
            .expect("test settings are valid")
    }

    /// A bearer token for `principal`, signed with the test key.
    pub fn token(&self, principal: &Principal) -> String {
        self.tokens
            .mint(principal, Duration::from_secs(3600))
            .expect("mint token")
    }

    pub fn partner_token(&self, partner_id: &str) -> String {
        self.token(&Principal {
            subject: format!("staff@{partner_id}"),
            role: Role::Partner,
            partner_id: Some(partner_id.to_owned()),
            tenant_ids: Vec::new(),
        })
    }

    pub fn operator_token(&self) -> String {
        self.token(&Principal {
            subject: "operator".into(),
            role: Role::Operator,
            partner_id: None,
            tenant_ids: Vec::new(),
        })
    }

    /// An operator token signed with the test key that expired an hour ago.
    pub fn expired_operator_token(&self) -> String {
        use base64::Engine;
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use hmac::Mac;
        let now = chrono::Utc::now().timestamp();
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT"}"#);
        let claims = serde_json::json!({
            "sub": "operator", "role": "operator", "iss": "picket", "aud": "picket",
            "iat": now - 7200, "exp": now - 3600,
        });
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        let mut mac =
            hmac::Hmac::<sha2::Sha256>::new_from_slice(JWT_SECRET.as_bytes()).expect("any key");
        mac.update(format!("{header}.{payload}").as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{header}.{payload}.{signature}")
    }

    pub fn investigator_token(&self, subject: &str) -> String {
        self.token(&Principal {
            subject: subject.to_owned(),
            role: Role::Investigator,
            partner_id: None,
            tenant_ids: Vec::new(),
        })
    }

    /// Wraps `message` in a gRPC request carrying `token`.
    pub fn request<T>(&self, token: &str, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        let value = format!("Bearer {token}").parse().expect("ascii token");
        request.metadata_mut().insert("authorization", value);
        request
    }

    /// Publishes `event` as `source` would, straight to JetStream.
    pub async fn publish<E: Event>(&self, source: &str, event: &E) -> OutgoingEvent {
        let outgoing = OutgoingEvent::new(&self.subjects, source, event, chrono::Utc::now())
            .expect("valid ids");
        self.publish_outgoing(&outgoing).await;
        outgoing
    }

    pub async fn publish_outgoing(&self, outgoing: &OutgoingEvent) {
        picket_platform::nats::publish(&self.jetstream, outgoing)
            .await
            .expect("publish");
    }

    /// A pool on the test database whose connections use `schema`.
    pub async fn pool(&self, schema: &str) -> sqlx::PgPool {
        let options: sqlx::postgres::PgConnectOptions =
            self.database_url.parse().expect("valid database url");
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect_with(options.options([("search_path", schema)]))
            .await
            .expect("connect to the test database")
    }

    /// Deletes the test's streams and database. Tests call it at the end; a failed test leaves
    /// them behind for inspection.
    pub async fn teardown(self) {
        let prefix = format!("{}_", self.namespace.to_uppercase());
        let mut names = self.jetstream.stream_names();
        let mut mine = Vec::new();
        while let Some(Ok(name)) = futures::StreamExt::next(&mut names).await {
            if name.starts_with(&prefix) {
                mine.push(name);
            }
        }
        for name in mine {
            let _ignored = self.jetstream.delete_stream(&name).await;
        }
        if let Ok(mut server) = sqlx::PgConnection::connect(&server_database_url()).await {
            let _ignored = sqlx::query(AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.database_name
            )))
            .execute(&mut server)
            .await;
        }
    }
}

/// A service's own settings from its defaults and `extra_toml`, for tests that start no service.
pub fn service_settings<S: ServiceSettings>(
    service: &str,
    service_defaults: &str,
    extra_toml: &str,
) -> S {
    let config = Config::builder()
        .add_source(File::from_str(
            settings::platform_defaults(),
            FileFormat::Toml,
        ))
        .add_source(File::from_str(service_defaults, FileFormat::Toml))
        .add_source(File::from_str(
            &format!("[auth]\njwt_secret = \"{JWT_SECRET}\"\n"),
            FileFormat::Toml,
        ))
        .add_source(File::from_str(extra_toml, FileFormat::Toml))
        .build()
        .expect("test settings build");
    settings::from_config::<S>(service, &config)
        .expect("test settings are valid")
        .1
}
