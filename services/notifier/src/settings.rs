//! The notifier's own settings section, `[notifier]`.

use std::time::Duration;

use ipnet::IpNet;
use picket_platform::settings::{ServiceSettings, SettingsError};
use secrecy::SecretString;
use serde::Deserialize;

/// How the notifier's SMTP connection is secured.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// STARTTLS, required (submission, port 587).
    Starttls,
    /// TLS from the first byte (submissions, port 465).
    Tls,
    /// Plain text: only for a relay on loopback or a trusted network.
    None,
}

#[derive(Debug, Clone, Deserialize)]
pub struct NotifierSettings {
    #[serde(with = "humantime_serde")]
    pub webhook_timeout: Duration,
    #[serde(deserialize_with = "picket_platform::settings::durations")]
    pub retry_schedule: Vec<Duration>,
    pub retry_jitter: f64,
    #[serde(with = "humantime_serde")]
    pub attempt_lease: Duration,
    #[serde(with = "humantime_serde")]
    pub delivery_poll_interval: Duration,
    pub delivery_concurrency: usize,
    /// Attempts in flight to any one endpoint or recipient, at most.
    pub destination_concurrency: usize,
    /// Events routed per transaction at most.
    pub route_batch_size: usize,
    /// An endpoint whose every attempt failed for this long is disabled.
    #[serde(with = "humantime_serde")]
    pub disable_after_failing: Duration,
    /// The SMTP server e-mail goes through; empty turns e-mail off.
    #[serde(default)]
    pub smtp_host: String,
    pub smtp_port: u16,
    pub smtp_tls: SmtpTls,
    #[serde(default)]
    pub smtp_username: String,
    #[serde(default = "no_password")]
    pub smtp_password: SecretString,
    #[serde(with = "humantime_serde")]
    pub smtp_timeout: Duration,
    /// The sender of every e-mail, such as `Picket <alerts@picket.example>`.
    pub mail_from: String,
    /// Key-encryption keys that seal webhook secrets at rest, `id:base64(32 bytes)`, comma
    /// separated, current first (PICKET__NOTIFIER__SECRET_KEYS, from a Secret).
    #[serde(default = "no_password")]
    pub secret_keys: SecretString,
    /// Keys that open the consent links the scanner seals into forwarded consent requests (the
    /// same list as `scanner.consent_link_keys`), from PICKET__NOTIFIER__CONSENT_LINK_KEYS.
    #[serde(default = "no_password")]
    pub consent_link_keys: SecretString,
    #[serde(default)]
    pub allowed_networks: Vec<IpNet>,
    #[serde(default)]
    pub allow_insecure_http: bool,
}

fn no_password() -> SecretString {
    SecretString::from(String::new())
}

impl ServiceSettings for NotifierSettings {
    fn validate(&self, section: &str) -> Result<(), SettingsError> {
        let key = |name: &str| format!("{section}.{name}");
        if let Err(error) = picket_platform::sealing::Keyring::parse(&self.secret_keys) {
            return Err(SettingsError::invalid(
                &key("secret_keys"),
                format!("{error} (PICKET__NOTIFIER__SECRET_KEYS)"),
            ));
        }
        if let Err(error) = picket_platform::sealing::Keyring::parse(&self.consent_link_keys) {
            return Err(SettingsError::invalid(
                &key("consent_link_keys"),
                format!("{error} (PICKET__NOTIFIER__CONSENT_LINK_KEYS)"),
            ));
        }
        if self.webhook_timeout.is_zero() {
            return Err(SettingsError::invalid(
                &key("webhook_timeout"),
                "must be positive",
            ));
        }
        if !(0.0..1.0).contains(&self.retry_jitter) {
            return Err(SettingsError::invalid(
                &key("retry_jitter"),
                "must be in [0, 1)",
            ));
        }
        if self.attempt_lease <= self.webhook_timeout {
            return Err(SettingsError::invalid(
                &key("attempt_lease"),
                "must be longer than webhook_timeout, or a slow attempt would be sent twice at once",
            ));
        }
        if self.disable_after_failing.is_zero() {
            return Err(SettingsError::invalid(
                &key("disable_after_failing"),
                "must be positive",
            ));
        }
        if self.mail_from.parse::<lettre::message::Mailbox>().is_err() {
            return Err(SettingsError::invalid(
                &key("mail_from"),
                "must be an address such as Picket <alerts@picket.example>",
            ));
        }
        if self.route_batch_size == 0 {
            return Err(SettingsError::invalid(
                &key("route_batch_size"),
                "must be at least 1",
            ));
        }
        if self.destination_concurrency == 0 {
            return Err(SettingsError::invalid(
                &key("destination_concurrency"),
                "must be at least 1",
            ));
        }
        if self.delivery_concurrency == 0 {
            return Err(SettingsError::invalid(
                &key("delivery_concurrency"),
                "must be at least 1",
            ));
        }
        Ok(())
    }

    fn list_keys() -> &'static [&'static str] {
        &["notifier.retry_schedule", "notifier.allowed_networks"]
    }
}
