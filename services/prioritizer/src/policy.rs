//! The prioritization policy as pure functions of (what is known, input), so it can be tested
//! without I/O. The theme rollout, caps, mutes and ignores extend it (see the prioritization
//! issue); what is decided here already holds: suspicious behaviour always opens an incident, a
//! repeat joins the incident already active for its fingerprint, and a cleared finding resolves it.

use uuid::Uuid;

use crate::model::Kind;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObservedDecision {
    /// Open a new incident for the finding.
    Open,
    /// The fingerprint already has an active incident: count the occurrence there.
    Join(Uuid),
    /// A configuration recommendation: kept, and opened only once the rollout rules allow it.
    Hold,
}

/// Decides what a newly observed finding does, given the incident already active for its
/// fingerprint, if any.
pub fn on_finding_observed(kind: Kind, active_incident: Option<Uuid>) -> ObservedDecision {
    match (active_incident, kind) {
        (Some(incident_id), _) => ObservedDecision::Join(incident_id),
        (None, Kind::Monitoring) => ObservedDecision::Open,
        (None, Kind::Configuration) => ObservedDecision::Hold,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monitoring_finding_always_opens_an_incident() {
        assert_eq!(
            on_finding_observed(Kind::Monitoring, None),
            ObservedDecision::Open
        );
    }

    #[test]
    fn repeat_of_an_active_fingerprint_joins_its_incident() {
        let incident_id = Uuid::now_v7();
        assert_eq!(
            on_finding_observed(Kind::Monitoring, Some(incident_id)),
            ObservedDecision::Join(incident_id)
        );
        assert_eq!(
            on_finding_observed(Kind::Configuration, Some(incident_id)),
            ObservedDecision::Join(incident_id)
        );
    }

    #[test]
    fn configuration_finding_does_not_open_an_incident_on_its_own() {
        assert_eq!(
            on_finding_observed(Kind::Configuration, None),
            ObservedDecision::Hold
        );
    }
}
