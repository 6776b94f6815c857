//! The scanner's own settings section, `[scanner]`.

use std::net::SocketAddr;
use std::time::Duration;

use picket_platform::settings::{ServiceSettings, SettingsError};
use secrecy::SecretString;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct ScannerSettings {
    /// Entra ID token endpoint base, such as `https://login.microsoftonline.com`.
    pub login_base_url: String,
    /// Microsoft Graph base, such as `https://graph.microsoft.com`.
    pub graph_base_url: String,
    /// The operator's multi-tenant app.
    #[serde(default)]
    pub client_id: String,
    #[serde(default = "empty_secret")]
    pub client_secret: SecretString,
    /// Retries of a request answered 429 or 5xx before the scan step fails.
    pub max_retries: u32,
    /// Backoff after a 5xx, or a 429 without `Retry-After`, doubling per attempt.
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// A cached token is replaced this long before it expires.
    #[serde(with = "humantime_serde")]
    pub token_refresh_margin: Duration,
    /// Where Microsoft sends the admin after consent: the public URL of the consent callback.
    pub consent_redirect_uri: String,
    /// Address of the consent callback's HTTP server.
    pub consent_listen: SocketAddr,
    /// How long an admin-consent link stays valid.
    #[serde(with = "humantime_serde")]
    pub consent_validity: Duration,
}

fn empty_secret() -> SecretString {
    SecretString::from(String::new())
}

impl ServiceSettings for ScannerSettings {
    fn validate(&self, section: &str) -> Result<(), SettingsError> {
        let key = |name: &str| format!("{section}.{name}");
        for (name, url) in [
            ("login_base_url", &self.login_base_url),
            ("graph_base_url", &self.graph_base_url),
        ] {
            if !url.starts_with("https://") && !url.starts_with("http://") {
                return Err(SettingsError::invalid(&key(name), "must be an http(s) URL"));
            }
        }
        if self.request_timeout.is_zero() {
            return Err(SettingsError::invalid(
                &key("request_timeout"),
                "must be positive",
            ));
        }
        Ok(())
    }
}
