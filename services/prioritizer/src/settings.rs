//! The prioritizer's own settings section, `[prioritizer]`.

use std::time::Duration;

use picket_platform::settings::{ServiceSettings, SettingsError};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct PrioritizerSettings {
    /// Cap K of a partner that has not set its own: open configuration incidents per tenant.
    pub max_open_configuration_incidents: u32,
    /// How long a mute lasts.
    #[serde(with = "humantime_serde")]
    pub mute_duration: Duration,
    /// Default window within which a repeat of suspicious behaviour joins its last incident.
    #[serde(with = "humantime_serde")]
    pub correlation_window: Duration,
    /// IANA time zone of a partner that has not set its own.
    pub time_zone: String,
    /// Local hour on Tuesdays at which the next theme launches, for a partner that has not set it.
    pub theme_launch_hour: u32,
    /// Time allowed to decide an incident before it escalates, per severity.
    #[serde(with = "humantime_serde")]
    pub decide_critical_within: Duration,
    #[serde(with = "humantime_serde")]
    pub decide_high_within: Duration,
    #[serde(with = "humantime_serde")]
    pub decide_medium_within: Duration,
    #[serde(with = "humantime_serde")]
    pub decide_low_within: Duration,
    /// How often the scheduler looks for theme launches, expired mutes and due escalations.
    #[serde(with = "humantime_serde")]
    pub tick: Duration,
    /// Events applied together in one transaction at most.
    pub batch_size: usize,
}

impl ServiceSettings for PrioritizerSettings {
    fn validate(&self, section: &str) -> Result<(), SettingsError> {
        let key = |name: &str| format!("{section}.{name}");
        if self.max_open_configuration_incidents == 0 {
            return Err(SettingsError::invalid(
                &key("max_open_configuration_incidents"),
                "must be at least 1",
            ));
        }
        if self.time_zone.parse::<chrono_tz::Tz>().is_err() {
            return Err(SettingsError::invalid(
                &key("time_zone"),
                "not an IANA time zone such as Europe/Amsterdam",
            ));
        }
        if self.theme_launch_hour > 23 {
            return Err(SettingsError::invalid(
                &key("theme_launch_hour"),
                "must be an hour from 0 to 23",
            ));
        }
        for (name, value) in [
            ("mute_duration", self.mute_duration),
            ("correlation_window", self.correlation_window),
            ("decide_critical_within", self.decide_critical_within),
            ("decide_high_within", self.decide_high_within),
            ("decide_medium_within", self.decide_medium_within),
            ("decide_low_within", self.decide_low_within),
            ("tick", self.tick),
        ] {
            if value.is_zero() {
                return Err(SettingsError::invalid(
                    &key(name),
                    "must be longer than zero",
                ));
            }
        }
        if self.batch_size == 0 {
            return Err(SettingsError::invalid(
                &key("batch_size"),
                "must be at least 1",
            ));
        }
        Ok(())
    }
}
