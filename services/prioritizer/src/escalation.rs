//! The standard authority map's escalation order: the SOC analyst on duty first, then the
//! security manager, after the times allowed to decide per severity (settings). A partner's map
//! may set its own order and times; `authority` follows whichever is in force.

use std::time::Duration;

use picket_platform::time::to_duration;
use picket_proto::incidents::v1::{AuthorityOwner, EscalationStep, Party};

use crate::model::Severity;
use crate::settings::PrioritizerSettings;

pub const SOC_ANALYST: &str = "msp-soc-analyst";
pub const SECURITY_MANAGER: &str = "msp-security-manager";

#[derive(Debug, Clone)]
pub struct Escalation {
    /// Time allowed to decide, per severity (index = severity rank).
    decide_within: [Duration; 4],
    owners: Vec<AuthorityOwner>,
}

fn rank(severity: Severity) -> usize {
    match severity {
        Severity::Low => 0,
        Severity::Medium => 1,
        Severity::High => 2,
        Severity::Critical => 3,
    }
}

impl Escalation {
    pub fn standard(settings: &PrioritizerSettings) -> Escalation {
        let owner = |owner_id: &str, role_name: &str| AuthorityOwner {
            owner_id: owner_id.into(),
            party: Party::Msp.into(),
            role_name: role_name.into(),
            display_name: format!("MSP {role_name}"),
            ..Default::default()
        };
        Escalation {
            decide_within: [
                settings.decide_low_within,
                settings.decide_medium_within,
                settings.decide_high_within,
                settings.decide_critical_within,
            ],
            owners: vec![
                owner(SOC_ANALYST, "SOC analyst"),
                owner(SECURITY_MANAGER, "Security manager"),
            ],
        }
    }

    /// Time an incident of `severity` may stay undecided before its first escalation.
    pub fn decide_within(&self, severity: Severity) -> Duration {
        self.decide_within[rank(severity)]
    }

    /// The steps for `severity`: each owner in turn, the n-th after n times the time to decide.
    pub fn steps(&self, severity: Severity) -> Vec<EscalationStep> {
        let within = self.decide_within(severity);
        self.owners
            .iter()
            .zip(1u32..)
            .map(|(owner, order)| EscalationStep {
                order,
                owner_id: owner.owner_id.clone(),
                channels: Vec::new(),
                after: Some(to_duration(within * order)),
            })
            .collect()
    }
}
