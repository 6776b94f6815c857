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
    /// Microsoft Defender for Endpoint API base, such as `https://api.securitycenter.microsoft.com`.
    pub defender_base_url: String,
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
    /// A token Graph answers 403 is replaced, at most this often per tenant and API: often enough
    /// to recover from one issued before consent propagated, seldom enough that a permission
    /// really missing does not cost a token per request.
    #[serde(with = "humantime_serde")]
    pub forbidden_token_renewal: Duration,
    /// Where Microsoft sends the admin after consent: the public URL of the consent callback.
    pub consent_redirect_uri: String,
    /// Address of the consent callback's HTTP server.
    pub consent_listen: SocketAddr,
    /// Keys that seal a forwarded consent link for the notifier (the same list as
    /// `notifier.consent_link_keys`): `id:base64(32 bytes)`, comma separated, current first
    /// (PICKET__SCANNER__CONSENT_LINK_KEYS, from a Secret).
    #[serde(default = "empty_secret")]
    pub consent_link_keys: SecretString,
    /// How long onboarding keeps reading `/organization` while a fresh consent propagates (Graph
    /// refuses the app, or its token lacks the permissions, for a while after consent).
    #[serde(with = "humantime_serde")]
    pub consent_propagation_timeout: Duration,
    /// How long an admin-consent link stays valid.
    #[serde(with = "humantime_serde")]
    pub consent_validity: Duration,
    /// A configuration scan of each active tenant runs this often.
    #[serde(with = "humantime_serde")]
    pub configuration_interval: Duration,
    /// A monitoring poll of each active tenant on a monitoring plan runs this often.
    #[serde(with = "humantime_serde")]
    pub monitoring_interval: Duration,
    /// Share of an interval by which each tenant's next run is moved at random (0 to 1), so
    /// tenants do not all run at once.
    pub schedule_jitter: f64,
    /// How often the scheduler looks for due tenants and stale scans.
    #[serde(with = "humantime_serde")]
    pub schedule_tick: Duration,
    /// Scans running at once (each scan sends one request at a time to its tenant).
    pub scan_workers: usize,
    /// A running scan not finished after this long is taken to have crashed and is queued again.
    #[serde(with = "humantime_serde")]
    pub scan_lease: Duration,
    /// How far back the first monitoring poll of a tenant reads the logs.
    #[serde(with = "humantime_serde")]
    pub initial_lookback: Duration,
    /// Each poll reads again this far before the previous window's end, for log records that
    /// arrive late.
    #[serde(with = "humantime_serde")]
    pub late_arrival: Duration,
    /// Every mailbox's inbox rules are read at least once in this period; between, a monitoring
    /// poll reads only the mailboxes of users who signed in or are flagged as risky.
    #[serde(with = "humantime_serde")]
    pub inbox_rule_sweep: Duration,
    /// Words in a user principal name or display name that mark a break-glass (emergency access)
    /// account, which checks exclude and fixes refuse to touch.
    pub break_glass_patterns: Vec<String>,
}

fn empty_secret() -> SecretString {
    SecretString::from(String::new())
}

impl ServiceSettings for ScannerSettings {
    fn validate(&self, section: &str) -> Result<(), SettingsError> {
        let key = |name: &str| format!("{section}.{name}");
        if let Err(error) = picket_platform::sealing::Keyring::parse(&self.consent_link_keys) {
            return Err(SettingsError::invalid(
                &key("consent_link_keys"),
                format!("{error} (PICKET__SCANNER__CONSENT_LINK_KEYS)"),
            ));
        }
        for (name, url) in [
            ("login_base_url", &self.login_base_url),
            ("graph_base_url", &self.graph_base_url),
        ] {
            if !url.starts_with("https://") && !url.starts_with("http://") {
                return Err(SettingsError::invalid(&key(name), "must be an http(s) URL"));
            }
        }
        for (name, value) in [
            ("request_timeout", self.request_timeout),
            ("configuration_interval", self.configuration_interval),
            ("monitoring_interval", self.monitoring_interval),
            ("schedule_tick", self.schedule_tick),
            ("scan_lease", self.scan_lease),
            ("inbox_rule_sweep", self.inbox_rule_sweep),
        ] {
            if value.is_zero() {
                return Err(SettingsError::invalid(&key(name), "must be positive"));
            }
        }
        if !self.defender_base_url.starts_with("https://")
            && !self.defender_base_url.starts_with("http://")
        {
            return Err(SettingsError::invalid(
                &key("defender_base_url"),
                "must be an http(s) URL",
            ));
        }
        if !(0.0..=1.0).contains(&self.schedule_jitter) {
            return Err(SettingsError::invalid(
                &key("schedule_jitter"),
                "must be between 0 and 1",
            ));
        }
        if self
            .break_glass_patterns
            .iter()
            .any(|word| word.trim().is_empty())
        {
            return Err(SettingsError::invalid(
                &key("break_glass_patterns"),
                "must not hold empty words",
            ));
        }
        Ok(())
    }

    fn list_keys() -> &'static [&'static str] {
        &["scanner.break_glass_patterns"]
    }
}
