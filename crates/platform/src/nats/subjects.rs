//! Subjects and stream names as code: `<namespace>.<area>.v1.<event>.<partner_id>.<tenant_id>` for
//! events (tenant `_` when an event has none) and `<namespace>.dlq.<service>` for dead letters.
//! The namespace is `picket` in production; each test uses its own to stay isolated.

use picket_proto::{Area, Event};

/// Stands for "no tenant" in the tenant position of a subject.
pub const NO_TENANT: &str = "_";

/// The event token of a purge confirmation, before the confirming service's name.
pub const PURGE_CONFIRMATION_PREFIX: &str = "purge_completed_by_";

impl EventSubject {
    /// The service a purge confirmation's subject names (`purge_completed_by_<service>`).
    pub fn purge_confirmed_by(&self) -> Option<&str> {
        self.event.strip_prefix(PURGE_CONFIRMATION_PREFIX)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SubjectError {
    #[error("`{value}` cannot be a subject token: use letters, digits, `-` and `_`")]
    InvalidToken { value: String },
    #[error("`{subject}` is not a picket event subject: {reason}")]
    Unparsable {
        subject: String,
        reason: &'static str,
    },
}

/// Builds and parses the subjects of one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subjects {
    namespace: String,
}

/// A parsed event subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSubject {
    pub area: Area,
    pub event: String,
    pub partner_id: String,
    /// `None` for partner-wide events.
    pub tenant_id: Option<String>,
}

impl EventSubject {
    /// The key that orders events: all events of one tenant (or one partner when tenant-less).
    pub fn ordering_key(&self) -> (&str, &str) {
        (
            &self.partner_id,
            self.tenant_id.as_deref().unwrap_or(NO_TENANT),
        )
    }
}

/// Ids travel in subjects, so they must be single, wildcard-free tokens.
pub fn validate_token(value: &str) -> Result<(), SubjectError> {
    let valid = !value.is_empty()
        && value != NO_TENANT
        && value.len() <= 128
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if valid {
        return Ok(());
    }
    Err(SubjectError::InvalidToken {
        value: value.to_owned(),
    })
}

impl Subjects {
    pub fn new(namespace: impl Into<String>) -> Subjects {
        Subjects {
            namespace: namespace.into(),
        }
    }

    /// The subject an event is published on.
    pub fn for_event<E: Event>(&self, event: &E) -> Result<String, SubjectError> {
        self.event_subject(E::AREA, E::TOKEN, event.partner_id(), event.tenant_id())
    }

    pub fn event_subject(
        &self,
        area: Area,
        event: &str,
        partner_id: &str,
        tenant_id: &str,
    ) -> Result<String, SubjectError> {
        validate_token(partner_id)?;
        let tenant_token = if tenant_id.is_empty() {
            NO_TENANT
        } else {
            validate_token(tenant_id)?;
            tenant_id
        };
        Ok(format!(
            "{}.{}.v1.{event}.{partner_id}.{tenant_token}",
            self.namespace,
            area.token()
        ))
    }

    /// The subject a service confirms a purge on: `purge_completed_by_<service>` in the event's
    /// place, so NATS permissions let each service confirm only its own purges and the offboarding
    /// service knows who confirmed from the subject, not from the payload.
    pub fn purge_confirmation_subject(
        &self,
        service: &str,
        partner_id: &str,
        tenant_id: &str,
    ) -> Result<String, SubjectError> {
        validate_token(service)?;
        self.event_subject(
            Area::Offboarding,
            &format!("{PURGE_CONFIRMATION_PREFIX}{service}"),
            partner_id,
            tenant_id,
        )
    }

    /// Every subject of an area: what its stream captures.
    pub fn area_wildcard(&self, area: Area) -> String {
        format!("{}.{}.v1.>", self.namespace, area.token())
    }

    /// Every subject of one event of an area, whatever the partner and tenant.
    pub fn event_wildcard(&self, area: Area, event: &str) -> String {
        format!("{}.{}.v1.{event}.>", self.namespace, area.token())
    }

    /// The JetStream stream that holds an area's events.
    pub fn stream_name(&self, area: Area) -> String {
        format!("{}_{}", self.namespace, area.token()).to_uppercase()
    }

    pub fn dead_letter_subject(&self, service: &str) -> String {
        format!("{}.dlq.{service}", self.namespace)
    }

    pub fn dead_letter_stream(&self) -> String {
        format!("{}_DLQ", self.namespace.to_uppercase())
    }

    pub fn dead_letter_wildcard(&self) -> String {
        format!("{}.dlq.>", self.namespace)
    }

    pub fn parse(&self, subject: &str) -> Result<EventSubject, SubjectError> {
        let unparsable = |reason| SubjectError::Unparsable {
            subject: subject.to_owned(),
            reason,
        };
        let tokens: Vec<&str> = subject.split('.').collect();
        let [namespace, area, version, event, partner_id, tenant_id] = tokens[..] else {
            return Err(unparsable("expected six tokens"));
        };
        if namespace != self.namespace {
            return Err(unparsable("wrong namespace"));
        }
        let area = Area::from_token(area).ok_or_else(|| unparsable("unknown area"))?;
        if version != "v1" {
            return Err(unparsable("unknown version"));
        }
        if event.is_empty() {
            return Err(unparsable("empty event token"));
        }
        validate_token(partner_id).map_err(|_| unparsable("invalid partner id"))?;
        let tenant_id = if tenant_id == NO_TENANT {
            None
        } else {
            validate_token(tenant_id).map_err(|_| unparsable("invalid tenant id"))?;
            Some(tenant_id.to_owned())
        };
        Ok(EventSubject {
            area,
            event: event.to_owned(),
            partner_id: partner_id.to_owned(),
            tenant_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use picket_proto::findings::v1::FindingObserved;

    #[test]
    fn event_subject_round_trips() {
        let subjects = Subjects::new("picket");
        let finding = FindingObserved {
            partner_id: "p-1".into(),
            tenant_id: "t_2".into(),
            ..Default::default()
        };
        let subject = subjects.for_event(&finding).expect("valid ids");
        assert_eq!(subject, "picket.findings.v1.finding_observed.p-1.t_2");
        let parsed = subjects.parse(&subject).expect("parses");
        assert_eq!(parsed.area, Area::Findings);
        assert_eq!(parsed.event, "finding_observed");
        assert_eq!(parsed.ordering_key(), ("p-1", "t_2"));
    }

    #[test]
    fn tenantless_event_uses_placeholder() {
        let subjects = Subjects::new("picket");
        let subject = subjects
            .event_subject(Area::Ledger, "credits_purchased", "p1", "")
            .expect("valid ids");
        assert_eq!(subject, "picket.ledger.v1.credits_purchased.p1._");
        assert_eq!(subjects.parse(&subject).expect("parses").tenant_id, None);
    }

    #[test]
    fn wildcards_and_dots_in_ids_are_refused() {
        let subjects = Subjects::new("picket");
        for bad in ["a.b", "*", ">", "", "a b", "_"] {
            assert!(
                subjects
                    .event_subject(Area::Findings, "finding_observed", bad, "t")
                    .is_err(),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn foreign_subjects_do_not_parse() {
        let subjects = Subjects::new("picket");
        assert!(
            subjects
                .parse("other.findings.v1.finding_observed.p.t")
                .is_err()
        );
        assert!(subjects.parse("picket.nope.v1.x.p.t").is_err());
        assert!(
            subjects
                .parse("picket.findings.v1.finding_observed.p")
                .is_err()
        );
    }

    #[test]
    fn stream_names_are_uppercase_per_namespace() {
        let subjects = Subjects::new("t_abc");
        assert_eq!(subjects.stream_name(Area::Incidents), "T_ABC_INCIDENTS");
        assert_eq!(subjects.dead_letter_stream(), "T_ABC_DLQ");
        assert_eq!(
            subjects.dead_letter_subject("notifier"),
            "t_abc.dlq.notifier"
        );
    }
}
