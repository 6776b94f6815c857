//! The CloudEvents binary-mode envelope on NATS: `ce-*` headers around a protobuf payload, with
//! `Nats-Msg-Id` equal to `ce-id` for JetStream de-duplication and W3C trace context headers.

use std::collections::HashMap;

use async_nats::HeaderMap;
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use picket_proto::Event;
use uuid::Uuid;

use crate::nats::subjects::{EventSubject, SubjectError, Subjects};
use crate::telemetry;

pub const CE_SPECVERSION: &str = "ce-specversion";
pub const CE_ID: &str = "ce-id";
pub const CE_SOURCE: &str = "ce-source";
pub const CE_TYPE: &str = "ce-type";
pub const CE_TIME: &str = "ce-time";
pub const CE_SUBJECT: &str = "ce-subject";
pub const CONTENT_TYPE: &str = "content-type";
pub const PROTOBUF: &str = "application/protobuf";
pub const NATS_MSG_ID: &str = "Nats-Msg-Id";

/// An event ready to publish, as the outbox stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct OutgoingEvent {
    pub id: Uuid,
    /// Protobuf full name, the CloudEvents `type`.
    pub event_type: String,
    /// CloudEvents `source`: `/picket/<service>`.
    pub source: String,
    /// The NATS subject.
    pub subject: String,
    /// CloudEvents `subject`: `<partner_id>/<tenant_id>` or `<partner_id>`.
    pub ce_subject: String,
    pub time: DateTime<Utc>,
    pub payload: Vec<u8>,
    /// `traceparent` and `tracestate` of the span that produced the event.
    pub trace_context: HashMap<String, String>,
}

impl OutgoingEvent {
    /// Wraps `event`, produced by `service` at `time`, in the current span's trace context.
    pub fn new<E: Event>(
        subjects: &Subjects,
        service: &str,
        event: &E,
        time: DateTime<Utc>,
    ) -> Result<OutgoingEvent, SubjectError> {
        let subject = subjects.for_event(event)?;
        let ce_subject = if event.tenant_id().is_empty() {
            event.partner_id().to_owned()
        } else {
            format!("{}/{}", event.partner_id(), event.tenant_id())
        };
        Ok(OutgoingEvent {
            id: Uuid::now_v7(),
            event_type: E::full_name(),
            source: format!("/picket/{service}"),
            subject,
            ce_subject,
            time,
            payload: event.encode_to_vec(),
            trace_context: telemetry::current_trace_context(),
        })
    }

    pub fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let id = self.id.to_string();
        headers.insert(CE_SPECVERSION, "1.0");
        headers.insert(CE_ID, id.as_str());
        headers.insert(CE_SOURCE, self.source.as_str());
        headers.insert(CE_TYPE, self.event_type.as_str());
        headers.insert(
            CE_TIME,
            self.time
                .to_rfc3339_opts(SecondsFormat::Micros, true)
                .as_str(),
        );
        headers.insert(CE_SUBJECT, self.ce_subject.as_str());
        headers.insert(CONTENT_TYPE, PROTOBUF);
        headers.insert(NATS_MSG_ID, id.as_str());
        for (name, value) in &self.trace_context {
            headers.insert(name.as_str(), value.as_str());
        }
        headers
    }
}

/// Why a received message is not a Picket event; it goes to the dead-letter subject.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("message has no headers")]
    NoHeaders,
    #[error("header {0} is missing")]
    MissingHeader(&'static str),
    #[error("header {header} is invalid: {reason}")]
    InvalidHeader {
        header: &'static str,
        reason: String,
    },
    #[error(transparent)]
    Subject(#[from] SubjectError),
    #[error("expected an event of type {expected}, got {actual}")]
    WrongType { expected: String, actual: String },
    #[error("payload of {event_type} does not decode: {reason}")]
    Payload { event_type: String, reason: String },
}

/// A received event: parsed envelope, raw payload.
#[derive(Debug, Clone)]
pub struct InboundEvent {
    pub id: String,
    pub event_type: String,
    pub source: String,
    pub time: DateTime<Utc>,
    pub subject: EventSubject,
    pub payload: Bytes,
    /// How many times the server has delivered this message, this delivery included.
    pub delivered: i64,
}

impl InboundEvent {
    pub fn parse(
        subjects: &Subjects,
        subject: &str,
        headers: Option<&HeaderMap>,
        payload: Bytes,
        delivered: i64,
    ) -> Result<InboundEvent, EnvelopeError> {
        let headers = headers.ok_or(EnvelopeError::NoHeaders)?;
        let header = |name: &'static str| {
            headers
                .get(name)
                .map(|value| value.as_str().to_owned())
                .filter(|value| !value.is_empty())
                .ok_or(EnvelopeError::MissingHeader(name))
        };
        let specversion = header(CE_SPECVERSION)?;
        if specversion != "1.0" {
            return Err(EnvelopeError::InvalidHeader {
                header: CE_SPECVERSION,
                reason: format!("unsupported version {specversion}"),
            });
        }
        let content_type = header(CONTENT_TYPE)?;
        if content_type != PROTOBUF {
            return Err(EnvelopeError::InvalidHeader {
                header: CONTENT_TYPE,
                reason: format!("expected {PROTOBUF}, got {content_type}"),
            });
        }
        let time = DateTime::parse_from_rfc3339(&header(CE_TIME)?)
            .map_err(|error| EnvelopeError::InvalidHeader {
                header: CE_TIME,
                reason: error.to_string(),
            })?
            .with_timezone(&Utc);
        Ok(InboundEvent {
            id: header(CE_ID)?,
            event_type: header(CE_TYPE)?,
            source: header(CE_SOURCE)?,
            time,
            subject: subjects.parse(subject)?,
            payload,
            delivered,
        })
    }

    /// Decodes the payload as `E`, refusing an event of another type.
    pub fn decode<E: Event>(&self) -> Result<E, EnvelopeError> {
        let expected = E::full_name();
        if self.event_type != expected {
            return Err(EnvelopeError::WrongType {
                expected,
                actual: self.event_type.clone(),
            });
        }
        let event = E::decode(self.payload.clone()).map_err(|error| EnvelopeError::Payload {
            event_type: self.event_type.clone(),
            reason: error.to_string(),
        })?;
        // The subject routes the event; a payload that disagrees with it is not trusted.
        let tenant_in_subject = self.subject.tenant_id.as_deref().unwrap_or_default();
        if event.partner_id() != self.subject.partner_id || event.tenant_id() != tenant_in_subject {
            return Err(EnvelopeError::Payload {
                event_type: self.event_type.clone(),
                reason: "partner_id or tenant_id differs from the subject".to_owned(),
            });
        }
        Ok(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use picket_proto::findings::v1::FindingObserved;

    fn finding() -> FindingObserved {
        FindingObserved {
            partner_id: "p1".into(),
            tenant_id: "t1".into(),
            fingerprint: "fp".into(),
            ..Default::default()
        }
    }

    #[test]
    fn outgoing_headers_parse_back_and_decode() {
        let subjects = Subjects::new("picket");
        let outgoing =
            OutgoingEvent::new(&subjects, "scanner", &finding(), Utc::now()).expect("valid");
        let headers = outgoing.headers();
        assert_eq!(
            headers.get(NATS_MSG_ID).map(|v| v.as_str()),
            Some(&*outgoing.id.to_string())
        );
        let inbound = InboundEvent::parse(
            &subjects,
            &outgoing.subject,
            Some(&headers),
            outgoing.payload.clone().into(),
            1,
        )
        .expect("parses");
        assert_eq!(inbound.event_type, "picket.findings.v1.FindingObserved");
        assert_eq!(inbound.source, "/picket/scanner");
        assert_eq!(
            inbound.decode::<FindingObserved>().expect("decodes"),
            finding()
        );
    }

    #[test]
    fn garbage_payload_is_an_envelope_error() {
        let subjects = Subjects::new("picket");
        let outgoing =
            OutgoingEvent::new(&subjects, "scanner", &finding(), Utc::now()).expect("valid");
        let inbound = InboundEvent::parse(
            &subjects,
            &outgoing.subject,
            Some(&outgoing.headers()),
            Bytes::from_static(b"\xff\xff\xff"),
            1,
        )
        .expect("envelope parses");
        assert!(matches!(
            inbound.decode::<FindingObserved>(),
            Err(EnvelopeError::Payload { .. })
        ));
    }

    #[test]
    fn missing_ce_id_is_refused() {
        let subjects = Subjects::new("picket");
        let outgoing =
            OutgoingEvent::new(&subjects, "scanner", &finding(), Utc::now()).expect("valid");
        let mut headers = outgoing.headers();
        headers.insert(CE_ID, "");
        let error = InboundEvent::parse(
            &subjects,
            &outgoing.subject,
            Some(&headers),
            Bytes::new(),
            1,
        )
        .expect_err("refused");
        assert!(matches!(error, EnvelopeError::MissingHeader(CE_ID)));
    }
}
