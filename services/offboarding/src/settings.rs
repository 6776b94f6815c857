//! The offboarding service's own settings section, `[offboarding]`.

use std::time::Duration;

use picket_platform::settings::{ServiceSettings, SettingsError};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct OffboardingSettings {
    /// How long a tenant's data is kept after it is disconnected, unless the request says.
    #[serde(with = "humantime_serde")]
    pub default_retention: Duration,
    /// The services whose confirmation ends the disconnect step.
    pub disconnect_services: Vec<String>,
    /// The services that hold tenant data and must each confirm its purge.
    pub purge_services: Vec<String>,
    /// How long a service has to confirm a step before it is asked again.
    #[serde(with = "humantime_serde")]
    pub confirm_within: Duration,
    /// How often due purges and overdue confirmations are looked for.
    #[serde(with = "humantime_serde")]
    pub tick_interval: Duration,
}

impl ServiceSettings for OffboardingSettings {
    fn validate(&self, section: &str) -> Result<(), SettingsError> {
        let key = |name: &str| format!("{section}.{name}");
        if self.purge_services.is_empty() {
            return Err(SettingsError::invalid(
                &key("purge_services"),
                "must name at least one service",
            ));
        }
        for (name, value) in [
            ("confirm_within", self.confirm_within),
            ("tick_interval", self.tick_interval),
        ] {
            if value.is_zero() {
                return Err(SettingsError::invalid(&key(name), "must be positive"));
            }
        }
        Ok(())
    }

    fn list_keys() -> &'static [&'static str] {
        &[
            "offboarding.disconnect_services",
            "offboarding.purge_services",
        ]
    }
}
