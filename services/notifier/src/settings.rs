//! The notifier's own settings section, `[notifier]`.

use std::time::Duration;

use ipnet::IpNet;
use picket_platform::settings::{ServiceSettings, SettingsError};
use serde::Deserialize;

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
    /// Events routed per transaction at most.
    pub route_batch_size: usize,
    /// An endpoint whose every attempt failed for this long is disabled.
    #[serde(with = "humantime_serde")]
    pub disable_after_failing: Duration,
    #[serde(default)]
    pub allowed_networks: Vec<IpNet>,
    #[serde(default)]
    pub allow_insecure_http: bool,
}

impl ServiceSettings for NotifierSettings {
    fn validate(&self, section: &str) -> Result<(), SettingsError> {
        let key = |name: &str| format!("{section}.{name}");
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
        if self.route_batch_size == 0 {
            return Err(SettingsError::invalid(
                &key("route_batch_size"),
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
