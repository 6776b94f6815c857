//! Settings: embedded defaults, then an optional file named by `PICKET_CONFIG`, then environment
//! variables `PICKET__<SECTION>__<KEY>`. Every value is validated before the service starts; a bad
//! one names its key and the binary exits with code 64 (EX_USAGE, as linkerd does).

use std::net::SocketAddr;
use std::time::Duration;

use config::{Config, Environment, File, FileFormat};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// Exit code for invalid settings (sysexits.h EX_USAGE).
pub const EXIT_INVALID_SETTINGS: u8 = 64;

/// Environment variable naming an optional settings file (TOML).
pub const CONFIG_FILE_VARIABLE: &str = "PICKET_CONFIG";

/// Settings every service shares; each service adds its own section, named after it.
const PLATFORM_DEFAULTS: &str = include_str!("../defaults.toml");

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot load settings: {0}")]
    Load(#[from] config::ConfigError),
    #[error("invalid setting `{key}`: {reason}")]
    Invalid { key: String, reason: String },
}

impl SettingsError {
    pub fn invalid(key: &str, reason: impl Into<String>) -> SettingsError {
        SettingsError::Invalid {
            key: key.to_owned(),
            reason: reason.into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct PlatformSettings {
    pub grpc: GrpcSettings,
    pub admin: AdminSettings,
    pub database: DatabaseSettings,
    pub nats: NatsSettings,
    pub auth: AuthSettings,
    pub telemetry: TelemetrySettings,
    pub shutdown: ShutdownSettings,
}

#[derive(Debug, Clone, Deserialize)]
pub struct GrpcSettings {
    /// Address the gRPC server binds; port 0 picks a free port (tests).
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AdminSettings {
    /// Address of the admin HTTP port serving `/live`, `/ready` and `/metrics`.
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DatabaseSettings {
    pub url: SecretString,
    /// The service's own schema; empty means the service's name.
    #[serde(default)]
    pub schema: String,
    pub max_connections: u32,
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamStorage {
    File,
    Memory,
}

#[derive(Debug, Clone, Deserialize)]
pub struct NatsSettings {
    pub url: String,
    /// The service's NATS user (one per service in production: `deploy/nats/nats-server.conf`);
    /// empty connects without credentials.
    #[serde(default)]
    pub user: String,
    /// Its password, from `PICKET__NATS__PASSWORD`.
    #[serde(default = "no_secret")]
    pub password: SecretString,
    /// First subject token and stream-name prefix; tests use their own to stay isolated.
    pub namespace: String,
    /// Deliveries of one message before it goes to the dead-letter subject.
    pub max_deliver: i64,
    /// Redelivery delays after the first, second, ... failed attempt; the last one repeats.
    #[serde(deserialize_with = "durations")]
    pub redelivery_backoff: Vec<Duration>,
    /// How long the server waits for an ack before redelivering.
    #[serde(with = "humantime_serde")]
    pub ack_wait: Duration,
    /// Messages a consumer may hold unacknowledged at once.
    pub max_ack_pending: i64,
    /// Parallel lanes per consumer; events of one tenant always take the same lane, in order.
    pub lanes: usize,
    #[serde(with = "humantime_serde")]
    pub stream_max_age: Duration,
    pub stream_replicas: usize,
    pub stream_storage: StreamStorage,
    /// JetStream de-duplication window for `Nats-Msg-Id`.
    #[serde(with = "humantime_serde")]
    pub duplicate_window: Duration,
    /// Whether the service creates and updates the streams at start (development, tests). In
    /// production only the provisioning identity may (`<service> provision-streams` as NATS user
    /// `provisioner`, run by a Job): services then wait at start until every stream exists.
    pub provision_streams: bool,
    /// How often the outbox relay looks for unpublished events when no notification wakes it.
    #[serde(with = "humantime_serde")]
    pub outbox_poll_interval: Duration,
}

fn no_secret() -> SecretString {
    SecretString::from(String::new())
}

#[derive(Debug, Clone, Deserialize)]
pub struct AuthSettings {
    /// Development only: the HMAC-SHA256 key of HS256 bearer tokens, at least 32 bytes. Must be
    /// empty when `jwks_uri` names an identity provider.
    pub jwt_secret: SecretString,
    /// The expected `iss`: `picket` for development tokens, the identity provider's issuer URL.
    pub issuer: String,
    pub audience: String,
    /// The identity provider's published keys (RS256, ES256), such as Entra ID's
    /// `https://login.microsoftonline.com/<tenant>/discovery/v2.0/keys`; empty: development
    /// tokens under `jwt_secret`.
    #[serde(default)]
    pub jwks_uri: String,
    /// How often the identity provider's keys are read again (and whenever a token names a key
    /// not held yet, at most every 30 s).
    #[serde(with = "humantime_serde")]
    pub jwks_refresh: Duration,
    /// Tokens living longer than this (`exp - iat`) are refused.
    #[serde(with = "humantime_serde")]
    pub max_token_lifetime: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Pretty on a terminal, JSON otherwise.
    Auto,
    Pretty,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TelemetrySettings {
    pub log_format: LogFormat,
    /// A `tracing_subscriber::EnvFilter` directive, such as `info,sqlx=warn`.
    pub log_filter: String,
    /// OTLP/gRPC collector endpoint; empty disables export.
    #[serde(default)]
    pub otlp_endpoint: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ShutdownSettings {
    /// How long in-flight RPCs and messages may take to finish after a shutdown signal.
    #[serde(with = "humantime_serde")]
    pub grace_period: Duration,
}

/// A service's own settings section, validated like the platform's.
pub trait ServiceSettings: DeserializeOwned {
    fn validate(&self, section: &str) -> Result<(), SettingsError>;

    /// Keys whose environment values are comma-separated lists, such as `notifier.retry_schedule`.
    fn list_keys() -> &'static [&'static str] {
        &[]
    }
}

/// The settings of a service that has no section of its own yet.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NoServiceSettings {}

impl ServiceSettings for NoServiceSettings {
    fn validate(&self, _section: &str) -> Result<(), SettingsError> {
        Ok(())
    }
}

/// The layered sources of one service: platform defaults, the service's defaults, the optional
/// file and the environment.
pub fn load<S: ServiceSettings>(
    service: &str,
    service_defaults: &str,
) -> Result<(PlatformSettings, S), SettingsError> {
    from_config(service, &layered(service_defaults, S::list_keys())?)
}

/// Only the NATS settings from the same layered sources, for `provision-streams`, which needs no
/// database, identity provider or service section.
pub fn load_nats(service_defaults: &str) -> Result<NatsSettings, SettingsError> {
    let nats: NatsSettings = layered(service_defaults, &[])?.get("nats")?;
    nats.validate()?;
    Ok(nats)
}

fn layered(service_defaults: &str, list_keys: &[&str]) -> Result<Config, SettingsError> {
    let mut builder = Config::builder()
        .add_source(File::from_str(PLATFORM_DEFAULTS, FileFormat::Toml))
        .add_source(File::from_str(service_defaults, FileFormat::Toml));
    if let Ok(path) = std::env::var(CONFIG_FILE_VARIABLE) {
        builder = builder.add_source(File::new(&path, FileFormat::Toml).required(true));
    }
    let mut environment = Environment::with_prefix("PICKET")
        .prefix_separator("__")
        .separator("__")
        .try_parsing(true)
        .list_separator(",")
        .with_list_parse_key("nats.redelivery_backoff");
    for key in list_keys {
        environment = environment.with_list_parse_key(key);
    }
    Ok(builder.add_source(environment).build()?)
}

/// Deserializes and validates settings from an already built `Config` (tests build their own).
pub fn from_config<S: ServiceSettings>(
    service: &str,
    config: &Config,
) -> Result<(PlatformSettings, S), SettingsError> {
    let mut platform: PlatformSettings = config.clone().try_deserialize()?;
    if platform.database.schema.is_empty() {
        platform.database.schema = service.to_owned();
    }
    platform.validate()?;
    let own: S = match config.get(service) {
        Ok(own) => own,
        // A service whose section has only optional keys needs no section at all.
        Err(config::ConfigError::NotFound(_)) => S::deserialize(
            serde::de::value::MapDeserializer::<_, config::ConfigError>::new(std::iter::empty::<(
                String,
                String,
            )>()),
        )?,
        Err(error) => return Err(error.into()),
    };
    own.validate(service)?;
    Ok((platform, own))
}

/// The embedded platform defaults, for tests and tools that assemble settings themselves.
pub fn platform_defaults() -> &'static str {
    PLATFORM_DEFAULTS
}

/// Deserializes a list of human-readable durations such as `["5s", "2m"]`.
pub fn durations<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<Duration>, D::Error> {
    let texts = Vec::<String>::deserialize(deserializer)?;
    texts
        .iter()
        .map(|text| {
            humantime_serde::re::humantime::parse_duration(text)
                .map_err(|error| serde::de::Error::custom(format!("`{text}`: {error}")))
        })
        .collect()
}

impl NatsSettings {
    fn validate(&self) -> Result<(), SettingsError> {
        if !self.url.starts_with("nats://") && !self.url.starts_with("tls://") {
            return Err(SettingsError::invalid(
                "nats.url",
                "must be a nats:// or tls:// URL",
            ));
        }
        if !is_token(&self.namespace) {
            return Err(SettingsError::invalid(
                "nats.namespace",
                "must be lowercase letters, digits and underscores",
            ));
        }
        if self.max_deliver < 1 {
            return Err(SettingsError::invalid(
                "nats.max_deliver",
                "must be at least 1",
            ));
        }
        if self.redelivery_backoff.is_empty() {
            return Err(SettingsError::invalid(
                "nats.redelivery_backoff",
                "needs at least one delay",
            ));
        }
        if self.lanes == 0 {
            return Err(SettingsError::invalid("nats.lanes", "must be at least 1"));
        }
        if self.max_ack_pending < 1 {
            return Err(SettingsError::invalid(
                "nats.max_ack_pending",
                "must be at least 1",
            ));
        }
        if self.ack_wait < Duration::from_secs(1) {
            return Err(SettingsError::invalid(
                "nats.ack_wait",
                "must be at least 1s",
            ));
        }
        Ok(())
    }
}

fn is_token(value: &str) -> bool {
    !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

impl PlatformSettings {
    fn validate(&self) -> Result<(), SettingsError> {
        if !self.database.url.expose_secret().starts_with("postgres://")
            && !self
                .database
                .url
                .expose_secret()
                .starts_with("postgresql://")
        {
            return Err(SettingsError::invalid(
                "database.url",
                "must be a postgres:// URL",
            ));
        }
        if !is_token(&self.database.schema) {
            return Err(SettingsError::invalid(
                "database.schema",
                "must be lowercase letters, digits and underscores",
            ));
        }
        if self.database.max_connections == 0 {
            return Err(SettingsError::invalid(
                "database.max_connections",
                "must be at least 1",
            ));
        }
        self.nats.validate()?;
        self.validate_auth()?;
        if self.auth.issuer.is_empty() {
            return Err(SettingsError::invalid("auth.issuer", "must not be empty"));
        }
        if self.auth.audience.is_empty() {
            return Err(SettingsError::invalid("auth.audience", "must not be empty"));
        }
        if let Err(error) = tracing_subscriber::EnvFilter::try_new(&self.telemetry.log_filter) {
            return Err(SettingsError::invalid(
                "telemetry.log_filter",
                error.to_string(),
            ));
        }
        if !self.telemetry.otlp_endpoint.is_empty()
            && !self.telemetry.otlp_endpoint.starts_with("http://")
            && !self.telemetry.otlp_endpoint.starts_with("https://")
        {
            return Err(SettingsError::invalid(
                "telemetry.otlp_endpoint",
                "must be an http:// or https:// URL",
            ));
        }
        Ok(())
    }

    fn validate_auth(&self) -> Result<(), SettingsError> {
        let auth = &self.auth;
        if auth.jwks_uri.is_empty() {
            if auth.jwt_secret.expose_secret().len() < 32 {
                return Err(SettingsError::invalid(
                    "auth.jwt_secret",
                    "must be set to at least 32 bytes (PICKET__AUTH__JWT_SECRET), or auth.jwks_uri to an identity provider's keys",
                ));
            }
        } else {
            if !auth.jwt_secret.expose_secret().is_empty() {
                return Err(SettingsError::invalid(
                    "auth.jwt_secret",
                    "must be empty when auth.jwks_uri names an identity provider: shared-key tokens are for development only",
                ));
            }
            let loopback = ["http://127.0.0.1:", "http://localhost:", "http://[::1]:"]
                .iter()
                .any(|prefix| auth.jwks_uri.starts_with(prefix));
            if !auth.jwks_uri.starts_with("https://") && !loopback {
                return Err(SettingsError::invalid(
                    "auth.jwks_uri",
                    "must be an https:// URL",
                ));
            }
        }
        if auth.max_token_lifetime.is_zero() {
            return Err(SettingsError::invalid(
                "auth.max_token_lifetime",
                "must be more than zero",
            ));
        }
        if auth.jwks_refresh < Duration::from_secs(60) {
            return Err(SettingsError::invalid(
                "auth.jwks_refresh",
                "must be at least 1m",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct DemoSettings {
        greeting: String,
    }

    impl ServiceSettings for DemoSettings {
        fn validate(&self, section: &str) -> Result<(), SettingsError> {
            if self.greeting.is_empty() {
                return Err(SettingsError::invalid(
                    &format!("{section}.greeting"),
                    "empty",
                ));
            }
            Ok(())
        }
    }

    fn build(
        overrides: &[(&str, &str)],
    ) -> Result<(PlatformSettings, DemoSettings), SettingsError> {
        let mut builder = Config::builder()
            .add_source(File::from_str(PLATFORM_DEFAULTS, FileFormat::Toml))
            .add_source(File::from_str(
                "[demo]\ngreeting = \"hi\"\n[auth]\njwt_secret = \"0123456789abcdef0123456789abcdef\"",
                FileFormat::Toml,
            ));
        for (key, value) in overrides {
            builder = builder.set_override(*key, *value)?;
        }
        from_config("demo", &builder.build()?)
    }

    #[test]
    fn defaults_are_valid_and_schema_defaults_to_service_name() {
        let (platform, demo) = build(&[]).expect("defaults load");
        assert_eq!(platform.database.schema, "demo");
        assert_eq!(demo.greeting, "hi");
        assert_eq!(platform.nats.namespace, "picket");
    }

    #[test]
    fn short_jwt_secret_names_its_key() {
        let error = build(&[("auth.jwt_secret", "short")]).expect_err("short secret refused");
        assert!(error.to_string().contains("auth.jwt_secret"), "{error}");
    }

    #[test]
    fn shared_key_is_refused_beside_an_identity_provider() {
        let error = build(&[("auth.jwks_uri", "https://login.example.com/keys")])
            .expect_err("shared key refused");
        assert!(error.to_string().contains("auth.jwt_secret"), "{error}");
        let error = build(&[
            ("auth.jwks_uri", "http://idp.example.com/keys"),
            ("auth.jwt_secret", ""),
        ])
        .expect_err("plain http refused");
        assert!(error.to_string().contains("auth.jwks_uri"), "{error}");
        build(&[
            ("auth.jwks_uri", "https://login.example.com/keys"),
            ("auth.jwt_secret", ""),
        ])
        .expect("an identity provider alone is valid");
    }

    #[test]
    fn unparsable_value_names_its_key() {
        let error = build(&[("grpc.listen", "not-an-address")]).expect_err("bad address refused");
        assert!(error.to_string().contains("grpc.listen"), "{error}");
    }

    #[test]
    fn bad_namespace_is_refused() {
        let error = build(&[("nats.namespace", "Has.Dots")]).expect_err("bad namespace refused");
        assert!(error.to_string().contains("nats.namespace"), "{error}");
    }

    #[test]
    fn service_section_is_validated() {
        let error = build(&[("demo.greeting", "")]).expect_err("empty greeting refused");
        assert!(error.to_string().contains("demo.greeting"), "{error}");
    }
}
