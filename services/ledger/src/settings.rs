//! The ledger's own settings section, `[ledger]`.

use std::time::Duration;

use picket_platform::settings::{ServiceSettings, SettingsError};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct LedgerSettings {
    /// Credit-moving calls applied per transaction at most.
    pub batch_size: usize,
    /// How often lapsed packs and holds are expired when no call on the partner does it first.
    #[serde(with = "humantime_serde")]
    pub expiry_sweep_interval: Duration,
}

impl ServiceSettings for LedgerSettings {
    fn validate(&self, section: &str) -> Result<(), SettingsError> {
        if self.batch_size == 0 {
            return Err(SettingsError::invalid(
                &format!("{section}.batch_size"),
                "must be at least 1",
            ));
        }
        if self.expiry_sweep_interval.is_zero() {
            return Err(SettingsError::invalid(
                &format!("{section}.expiry_sweep_interval"),
                "must be positive",
            ));
        }
        Ok(())
    }
}
