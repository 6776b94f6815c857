//! The prioritizer's vocabulary, with its spelling in the database and in the contracts.

use picket_proto::common::v1 as common;
use picket_proto::incidents::v1 as incidents;

pub use crate::engine::Standing;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Configuration,
    Monitoring,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncidentState {
    Open,
    AwaitingFix,
    Muted,
    Ignored,
    Resolved,
    Offboarded,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    Fixed,
    Cleared,
    Offboarded,
}

impl Kind {
    pub fn from_proto(value: i32) -> Option<Kind> {
        match common::FindingKind::try_from(value).ok()? {
            common::FindingKind::Configuration => Some(Kind::Configuration),
            common::FindingKind::Monitoring => Some(Kind::Monitoring),
            common::FindingKind::Unspecified => None,
        }
    }

    pub fn to_proto(self) -> common::FindingKind {
        match self {
            Kind::Configuration => common::FindingKind::Configuration,
            Kind::Monitoring => common::FindingKind::Monitoring,
        }
    }

    pub fn as_db(self) -> &'static str {
        match self {
            Kind::Configuration => "configuration",
            Kind::Monitoring => "monitoring",
        }
    }

    pub fn from_db(value: &str) -> Option<Kind> {
        [Kind::Configuration, Kind::Monitoring]
            .into_iter()
            .find(|kind| kind.as_db() == value)
    }
}

impl Severity {
    const ALL: [Severity; 4] = [
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    pub fn from_proto(value: i32) -> Option<Severity> {
        match common::Severity::try_from(value).ok()? {
            common::Severity::Low => Some(Severity::Low),
            common::Severity::Medium => Some(Severity::Medium),
            common::Severity::High => Some(Severity::High),
            common::Severity::Critical => Some(Severity::Critical),
            common::Severity::Unspecified => None,
        }
    }

    pub fn to_proto(self) -> common::Severity {
        match self {
            Severity::Low => common::Severity::Low,
            Severity::Medium => common::Severity::Medium,
            Severity::High => common::Severity::High,
            Severity::Critical => common::Severity::Critical,
        }
    }

    pub fn as_db(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    pub fn from_db(value: &str) -> Option<Severity> {
        Severity::ALL
            .into_iter()
            .find(|severity| severity.as_db() == value)
    }
}

impl IncidentState {
    const ALL: [IncidentState; 6] = [
        IncidentState::Open,
        IncidentState::AwaitingFix,
        IncidentState::Muted,
        IncidentState::Ignored,
        IncidentState::Resolved,
        IncidentState::Offboarded,
    ];

    pub fn from_proto(value: i32) -> Option<IncidentState> {
        match incidents::IncidentState::try_from(value).ok()? {
            incidents::IncidentState::Open => Some(IncidentState::Open),
            incidents::IncidentState::AwaitingFix => Some(IncidentState::AwaitingFix),
            incidents::IncidentState::Muted => Some(IncidentState::Muted),
            incidents::IncidentState::Ignored => Some(IncidentState::Ignored),
            incidents::IncidentState::Resolved => Some(IncidentState::Resolved),
            incidents::IncidentState::Offboarded => Some(IncidentState::Offboarded),
            incidents::IncidentState::Unspecified => None,
        }
    }

    pub fn to_proto(self) -> incidents::IncidentState {
        match self {
            IncidentState::Open => incidents::IncidentState::Open,
            IncidentState::AwaitingFix => incidents::IncidentState::AwaitingFix,
            IncidentState::Muted => incidents::IncidentState::Muted,
            IncidentState::Ignored => incidents::IncidentState::Ignored,
            IncidentState::Resolved => incidents::IncidentState::Resolved,
            IncidentState::Offboarded => incidents::IncidentState::Offboarded,
        }
    }

    pub fn as_db(self) -> &'static str {
        match self {
            IncidentState::Open => "open",
            IncidentState::AwaitingFix => "awaiting_fix",
            IncidentState::Muted => "muted",
            IncidentState::Ignored => "ignored",
            IncidentState::Resolved => "resolved",
            IncidentState::Offboarded => "offboarded",
        }
    }

    pub fn from_db(value: &str) -> Option<IncidentState> {
        IncidentState::ALL
            .into_iter()
            .find(|state| state.as_db() == value)
    }
}

impl Resolution {
    pub fn to_proto(self) -> incidents::IncidentResolution {
        match self {
            Resolution::Fixed => incidents::IncidentResolution::Fixed,
            Resolution::Cleared => incidents::IncidentResolution::Cleared,
            Resolution::Offboarded => incidents::IncidentResolution::Offboarded,
        }
    }

    pub fn as_db(self) -> &'static str {
        match self {
            Resolution::Fixed => "fixed",
            Resolution::Cleared => "cleared",
            Resolution::Offboarded => "offboarded",
        }
    }

    pub fn from_db(value: &str) -> Option<Resolution> {
        [
            Resolution::Fixed,
            Resolution::Cleared,
            Resolution::Offboarded,
        ]
        .into_iter()
        .find(|resolution| resolution.as_db() == value)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Automatic,
    Dequeued,
    Manual,
}

impl Origin {
    pub fn to_proto(self) -> incidents::IncidentOrigin {
        match self {
            Origin::Automatic => incidents::IncidentOrigin::Automatic,
            Origin::Dequeued => incidents::IncidentOrigin::Dequeued,
            Origin::Manual => incidents::IncidentOrigin::Manual,
        }
    }

    pub fn as_db(self) -> &'static str {
        match self {
            Origin::Automatic => "automatic",
            Origin::Dequeued => "dequeued",
            Origin::Manual => "manual",
        }
    }

    pub fn from_db(value: &str) -> Option<Origin> {
        [Origin::Automatic, Origin::Dequeued, Origin::Manual]
            .into_iter()
            .find(|origin| origin.as_db() == value)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecisionKind {
    Approve,
    Mute,
    Ignore,
    Unignore,
}

impl DecisionKind {
    pub fn to_proto(self) -> incidents::DecisionKind {
        match self {
            DecisionKind::Approve => incidents::DecisionKind::Approve,
            DecisionKind::Mute => incidents::DecisionKind::Mute,
            DecisionKind::Ignore => incidents::DecisionKind::Ignore,
            DecisionKind::Unignore => incidents::DecisionKind::Unignore,
        }
    }

    pub fn as_db(self) -> &'static str {
        match self {
            DecisionKind::Approve => "approve",
            DecisionKind::Mute => "mute",
            DecisionKind::Ignore => "ignore",
            DecisionKind::Unignore => "unignore",
        }
    }

    pub fn from_db(value: &str) -> Option<DecisionKind> {
        [
            DecisionKind::Approve,
            DecisionKind::Mute,
            DecisionKind::Ignore,
            DecisionKind::Unignore,
        ]
        .into_iter()
        .find(|kind| kind.as_db() == value)
    }
}

impl Standing {
    pub fn as_db(self) -> &'static str {
        match self {
            Standing::Idle => "idle",
            Standing::Queued => "queued",
            Standing::Open => "open",
            Standing::AwaitingFix => "awaiting_fix",
        }
    }

    pub fn from_db(value: &str) -> Standing {
        match value {
            "queued" => Standing::Queued,
            "open" => Standing::Open,
            "awaiting_fix" => Standing::AwaitingFix,
            _ => Standing::Idle,
        }
    }
}
