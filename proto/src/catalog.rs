//! The event catalogue: which area (and so which JetStream stream) each event belongs to, and the
//! token that names it in subjects. Subjects themselves are built and parsed in the platform kit.

use crate::{findings, fixes, incidents, ledger, notifications, offboarding, tenants};

/// An area groups the events of one domain; each area is one JetStream stream and one protobuf
/// package `picket.<area>.v1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Area {
    Tenants,
    Findings,
    Fixes,
    Incidents,
    Notifications,
    Ledger,
    Offboarding,
}

impl Area {
    pub const ALL: [Area; 7] = [
        Area::Tenants,
        Area::Findings,
        Area::Fixes,
        Area::Incidents,
        Area::Notifications,
        Area::Ledger,
        Area::Offboarding,
    ];

    /// The area's token in subjects and package names.
    pub fn token(self) -> &'static str {
        match self {
            Area::Tenants => "tenants",
            Area::Findings => "findings",
            Area::Fixes => "fixes",
            Area::Incidents => "incidents",
            Area::Notifications => "notifications",
            Area::Ledger => "ledger",
            Area::Offboarding => "offboarding",
        }
    }

    pub fn from_token(token: &str) -> Option<Area> {
        Area::ALL.into_iter().find(|area| area.token() == token)
    }
}

/// An event message: published on `picket.<area>.v1.<token>.<partner_id>.<tenant_id>`, with its
/// protobuf full name as CloudEvents `ce-type`.
pub trait Event: prost::Message + prost::Name + Default + Send + Sync + 'static {
    const AREA: Area;
    /// The event's token in subjects, in snake case.
    const TOKEN: &'static str;

    /// The partner the event concerns; every event carries it as field 1.
    fn partner_id(&self) -> &str;

    /// The tenant the event concerns (field 2), empty for partner-wide events.
    fn tenant_id(&self) -> &str;
}

/// Receives an event decoded by [`decode_event`], typed, with its canonical protobuf JSON form.
pub trait EventVisitor {
    fn visit<E: Event + serde::Serialize>(&mut self, event: E);
}

macro_rules! events {
    ($($area:ident => { $($message:path => $token:literal),+ $(,)? })+) => {
        $($(
            impl Event for $message {
                const AREA: Area = Area::$area;
                const TOKEN: &'static str = $token;

                fn partner_id(&self) -> &str {
                    &self.partner_id
                }

                fn tenant_id(&self) -> &str {
                    &self.tenant_id
                }
            }
        )+)+

        /// Decodes `payload` as the event whose protobuf full name (its `ce-type`) is `event_type`
        /// and hands it to `visitor`; `Ok(false)` when no event has that name.
        pub fn decode_event<V: EventVisitor>(
            event_type: &str,
            payload: &[u8],
            visitor: &mut V,
        ) -> Result<bool, prost::DecodeError> {
            use prost::{Message, Name};
            $($(
                if event_type == <$message>::full_name() {
                    visitor.visit(<$message>::decode(payload)?);
                    return Ok(true);
                }
            )+)+
            Ok(false)
        }

        /// Every event's `(area, subject token, ce-type)`, for documentation and validation.
        pub fn all_events() -> Vec<(Area, &'static str, String)> {
            use prost::Name;
            vec![$($((Area::$area, $token, <$message>::full_name())),+),+]
        }
    };
}

events! {
    Tenants => {
        tenants::v1::TenantOnboarded => "tenant_onboarded",
        tenants::v1::TenantDisconnected => "tenant_disconnected",
        tenants::v1::ScanCompleted => "scan_completed",
        tenants::v1::ConsentRequestForwarded => "consent_request_forwarded",
    }
    Findings => {
        findings::v1::FindingObserved => "finding_observed",
        findings::v1::FindingCleared => "finding_cleared",
    }
    Fixes => {
        fixes::v1::FixRequested => "fix_requested",
        fixes::v1::FixApplied => "fix_applied",
        fixes::v1::FixFailed => "fix_failed",
    }
    Incidents => {
        incidents::v1::IncidentOpened => "incident_opened",
        incidents::v1::IncidentDecided => "incident_decided",
        incidents::v1::IncidentResolved => "incident_resolved",
        incidents::v1::IncidentEscalated => "incident_escalated",
        incidents::v1::RecommendationQueued => "recommendation_queued",
        incidents::v1::ThemeLaunched => "theme_launched",
        incidents::v1::IncidentReopened => "incident_reopened",
        incidents::v1::AuthorityMapChanged => "authority_map_changed",
        incidents::v1::CustomerGrantChanged => "customer_grant_changed",
    }
    Notifications => {
        notifications::v1::DeliverySucceeded => "delivery_succeeded",
        notifications::v1::DeliveryFailed => "delivery_failed",
        notifications::v1::EndpointDisabled => "endpoint_disabled",
    }
    Ledger => {
        ledger::v1::CreditsPurchased => "credits_purchased",
        ledger::v1::EngagementOpened => "engagement_opened",
        ledger::v1::EngagementAssigned => "engagement_assigned",
        ledger::v1::CreditsDebited => "credits_debited",
        ledger::v1::BalanceLow => "balance_low",
        ledger::v1::CreditsExpired => "credits_expired",
        ledger::v1::EngagementClosed => "engagement_closed",
    }
    Offboarding => {
        offboarding::v1::OffboardingRequested => "offboarding_requested",
        offboarding::v1::PurgeRequested => "purge_requested",
        offboarding::v1::PurgeCompleted => "purge_completed",
        offboarding::v1::OffboardingCompleted => "offboarding_completed",
        offboarding::v1::OffboardingCancelled => "offboarding_cancelled",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_type_is_in_its_area_package() {
        for (area, token, event_type) in all_events() {
            let package = format!("picket.{}.v1.", area.token());
            assert!(
                event_type.starts_with(&package),
                "{event_type} is not in {package}"
            );
            assert!(
                token.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{token}"
            );
        }
    }

    /// Records the full name of what it was given, to show each type decodes as itself.
    struct Names(Vec<String>);

    impl EventVisitor for Names {
        fn visit<E: Event + serde::Serialize>(&mut self, _event: E) {
            self.0.push(E::full_name());
        }
    }

    #[test]
    fn every_event_type_decodes_as_itself() {
        let mut names = Names(Vec::new());
        for (_, _, event_type) in all_events() {
            assert_eq!(decode_event(&event_type, &[], &mut names), Ok(true));
            assert_eq!(names.0.last(), Some(&event_type));
        }
        assert_eq!(
            decode_event("picket.nope.v1.Nope", &[], &mut names),
            Ok(false)
        );
        assert!(decode_event(&all_events()[0].2, &[0xff], &mut names).is_err());
    }

    #[test]
    fn area_tokens_round_trip() {
        for area in Area::ALL {
            assert_eq!(Area::from_token(area.token()), Some(area));
        }
        assert_eq!(Area::from_token("nope"), None);
    }
}
