//! E-mail over SMTP (lettre): each delivery by e-mail is one message, plain text and HTML, written
//! from the same event data a webhook carries: the tenant, the severity, what was found, the
//! recommended fix and the incident id to act on. A forwarded consent request carries its link
//! sealed; only here is it opened, to be written into the administrator's e-mail.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use picket_platform::sealing::{Keyring, KeyringError, SealError, consent_link_context};
use picket_platform::text::html_escape;
use secrecy::ExposeSecret;
use serde_json::Value;

use crate::settings::{NotifierSettings, SmtpTls};

/// Why a message was not sent: `permanent` when the server refused it for good (a 5xx reply), so
/// retrying cannot help.
#[derive(Debug)]
pub struct SendError {
    pub message: String,
    pub permanent: bool,
}

pub struct Mailer {
    transport: Option<AsyncSmtpTransport<Tokio1Executor>>,
    from: Mailbox,
    consent_links: Keyring,
}

#[derive(Debug, thiserror::Error)]
pub enum MailerError {
    #[error("notifier.mail_from: {0}")]
    From(lettre::address::AddressError),
    #[error("notifier.smtp_host: {0}")]
    Transport(#[from] lettre::transport::smtp::Error),
    #[error("notifier.consent_link_keys {0}")]
    ConsentLinkKeys(#[from] KeyringError),
}

impl Mailer {
    /// The SMTP transport the settings describe; without `smtp_host` e-mail is off and every
    /// e-mail delivery fails saying so.
    pub fn new(settings: &NotifierSettings) -> Result<Mailer, MailerError> {
        let from: Mailbox = settings.mail_from.parse().map_err(MailerError::From)?;
        let consent_links = Keyring::parse(&settings.consent_link_keys)?;
        if settings.smtp_host.is_empty() {
            return Ok(Mailer {
                transport: None,
                from,
                consent_links,
            });
        }
        let host = settings.smtp_host.as_str();
        let tls = match settings.smtp_tls {
            SmtpTls::None => Tls::None,
            SmtpTls::Starttls => Tls::Required(TlsParameters::new(host.to_owned())?),
            SmtpTls::Tls => Tls::Wrapper(TlsParameters::new(host.to_owned())?),
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(settings.smtp_port)
            .tls(tls)
            .timeout(Some(settings.smtp_timeout));
        if !settings.smtp_username.is_empty() {
            builder = builder.credentials(Credentials::new(
                settings.smtp_username.clone(),
                settings.smtp_password.expose_secret().to_owned(),
            ));
        }
        Ok(Mailer {
            transport: Some(builder.build()),
            from,
            consent_links,
        })
    }

    /// Sends the message for an event (`body`, the webhook body) to `to`.
    pub async fn send(&self, to: &str, display_name: &str, body: &str) -> Result<(), SendError> {
        let Some(transport) = &self.transport else {
            return Err(SendError {
                message: "e-mail is not configured (notifier.smtp_host)".into(),
                permanent: false,
            });
        };
        let refused = |message: String| SendError {
            message,
            permanent: true,
        };
        let address = to
            .parse()
            .map_err(|error| refused(format!("recipient address: {error}")))?;
        let name = (!display_name.is_empty()).then(|| display_name.to_owned());
        let rendered =
            render(body, display_name, &self.consent_links).map_err(|error| SendError {
                // A key the notifier does not hold yet (rotation half deployed) may come; a value
                // that does not open never will.
                permanent: !matches!(error, SealError::UnknownKey(_)),
                message: format!("the consent link does not open: {error}"),
            })?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(Mailbox::new(name, address))
            .subject(rendered.subject)
            .multipart(MultiPart::alternative_plain_html(
                rendered.text,
                rendered.html,
            ))
            .map_err(|error| refused(format!("message: {error}")))?;
        match transport.send(message).await {
            Ok(_) => Ok(()),
            Err(error) => Err(SendError {
                permanent: error.is_permanent(),
                message: format!("smtp: {error}"),
            }),
        }
    }
}

/// An e-mail's subject and bodies.
#[derive(Debug)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

fn text<'v>(value: &'v Value, field: &str) -> &'v str {
    value[field].as_str().unwrap_or_default()
}

/// `SEVERITY_HIGH` as "High", `INCIDENT_STATE_OPEN` as "Open".
fn readable(enum_name: &str, prefix: &str) -> String {
    let words = enum_name
        .strip_prefix(prefix)
        .unwrap_or(enum_name)
        .to_lowercase();
    let mut characters = words.replace('_', " ").chars().collect::<Vec<_>>();
    if let Some(first) = characters.first_mut() {
        *first = first.to_ascii_uppercase();
    }
    characters.into_iter().collect()
}

/// A count of minutes as canonical protobuf JSON writes an int64: a string.
fn minutes(value: &Value) -> i64 {
    value
        .as_str()
        .and_then(|minutes| minutes.parse().ok())
        .or_else(|| value.as_i64())
        .unwrap_or_default()
}

/// The lines of a message: a sentence, then labelled facts.
struct Letter {
    subject: String,
    lead: String,
    facts: Vec<(&'static str, String)>,
    closing: String,
}

impl Letter {
    fn render(self, display_name: &str) -> Rendered {
        let greeting = if display_name.is_empty() {
            "Hello,".to_owned()
        } else {
            format!("Hello {display_name},")
        };
        let facts: Vec<&(&str, String)> = self
            .facts
            .iter()
            .filter(|(_, value)| !value.is_empty())
            .collect();
        let mut text = format!("{greeting}\n\n{}\n\n", self.lead);
        for (label, value) in &facts {
            text.push_str(&format!("{label}: {value}\n"));
        }
        text.push_str(&format!("\n{}\n\n-- \nPicket\n", self.closing));
        let rows: String = facts
            .iter()
            .map(|(label, value)| {
                format!(
                    "<tr><th align=\"left\" valign=\"top\">{}</th><td>{}</td></tr>",
                    html_escape(label),
                    html_escape(value).replace('\n', "<br>")
                )
            })
            .collect();
        let html = format!(
            "<!DOCTYPE html><html><body><p>{}</p><p>{}</p><table cellpadding=\"4\">{rows}</table><p>{}</p><p>&mdash; Picket</p></body></html>",
            html_escape(&greeting),
            html_escape(&self.lead),
            html_escape(&self.closing),
        );
        Rendered {
            subject: self.subject,
            text,
            html,
        }
    }
}

/// The consent link a forwarded consent request carries sealed (`sealedConsentUrl`, base64).
fn consent_link(data: &Value, consent_links: &Keyring) -> Result<String, SealError> {
    let sealed = STANDARD
        .decode(text(data, "sealedConsentUrl"))
        .map_err(|_| SealError::Malformed)?;
    let context = consent_link_context(text(data, "partnerId"), text(data, "tenantId"));
    let link = consent_links.open(&sealed, &context)?;
    String::from_utf8(link).map_err(|_| SealError::Malformed)
}

/// The message for an event, from its webhook body (`{type, timestamp, data}`); fails only when a
/// consent link it must carry does not open.
pub fn render(
    body: &str,
    display_name: &str,
    consent_links: &Keyring,
) -> Result<Rendered, SealError> {
    let body: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let event_type = text(&body, "type");
    let data = &body["data"];
    let tenant = text(data, "tenantId");
    let letter = match event_type.strip_prefix("incident.") {
        Some(change) => {
            let incident = &data["incident"];
            let severity = readable(text(incident, "severity"), "SEVERITY_");
            let title = text(incident, "title");
            let incident_id = text(incident, "incidentId");
            Letter {
                subject: format!(
                    "[Picket] {severity} incident {change} for tenant {tenant}: {title}"
                ),
                lead: format!("An incident was {change} for tenant {tenant}."),
                facts: vec![
                    ("Tenant", tenant.to_owned()),
                    ("Severity", severity),
                    ("What was found", title.to_owned()),
                    ("Details", text(incident, "description").to_owned()),
                    ("Affected", text(incident, "target").to_owned()),
                    (
                        "Recommended fix",
                        text(incident, "recommendedFix").to_owned(),
                    ),
                    (
                        "State",
                        readable(text(incident, "state"), "INCIDENT_STATE_"),
                    ),
                    ("Incident id", incident_id.to_owned()),
                ],
                closing: format!(
                    "Approve the fix, mute or ignore it with the incident id: picketctl incidents approve {incident_id}"
                ),
            }
        }
        None if event_type == "tenant.consent_forwarded" => {
            let organisation = match text(data, "tenantDisplayName") {
                "" => tenant,
                name => name,
            };
            Letter {
                subject: format!("Please connect {organisation} to Picket"),
                lead: format!(
                    "Your IT partner asks you, as an administrator of {organisation}'s Microsoft 365, to let Picket check its security settings and watch for suspicious sign-ins. Open the link below and sign in to grant consent; nothing in your tenant is changed by granting it."
                ),
                facts: vec![
                    ("Message from your partner", text(data, "message").to_owned()),
                    ("Consent link", consent_link(data, consent_links)?),
                    ("Link valid until", text(data, "consentExpiresAt").to_owned()),
                ],
                closing: "If you did not expect this request, ask your IT partner before opening the link.".into(),
            }
        }
        None if event_type == "credits.balance_low" => Letter {
            subject: format!(
                "[Picket] Incident-response credits running low: {} minutes left",
                minutes(&data["availableMinutes"])
            ),
            lead: "The incident-response credits of your retainer fell below your threshold."
                .into(),
            facts: vec![
                (
                    "Available",
                    format!("{} minutes", minutes(&data["availableMinutes"])),
                ),
                (
                    "Threshold",
                    format!("{} minutes", minutes(&data["thresholdMinutes"])),
                ),
                (
                    "Held for open engagements",
                    format!("{} minutes", minutes(&data["heldMinutes"])),
                ),
                ("Next expiry", text(data, "nextExpiryAt").to_owned()),
            ],
            closing: "Buy a new pack of credits to keep investigations going without a pause."
                .into(),
        },
        None if event_type == "offboarding.scheduled" => Letter {
            subject: format!("[Picket] Offboarding of tenant {tenant}: data removal scheduled"),
            lead: format!(
                "Picket disconnected tenant {tenant}; nothing was changed in its Microsoft 365."
            ),
            facts: vec![
                ("Tenant", tenant.to_owned()),
                ("Reason", text(data, "reason").to_owned()),
                ("Data removal due", text(data, "purgeDueAt").to_owned()),
                ("Offboarding id", text(data, "offboardingId").to_owned()),
            ],
            closing: "Cancel the offboarding before the removal is due to keep the tenant.".into(),
        },
        None if event_type == "offboarding.completed" => Letter {
            subject: format!("[Picket] Offboarding of tenant {tenant} completed: data removed"),
            lead: format!("Every Picket service removed the data of tenant {tenant}."),
            facts: vec![
                ("Tenant", tenant.to_owned()),
                ("Completed", text(data, "completedAt").to_owned()),
                ("Offboarding id", text(data, "offboardingId").to_owned()),
            ],
            closing: "The deletion certificate is kept; ask for it with the offboarding id.".into(),
        },
        None if event_type == "endpoint.disabled" => Letter {
            subject: format!("[Picket] Webhook endpoint disabled: {}", text(data, "url")),
            lead: "Picket stopped sending webhooks to one of your endpoints.".into(),
            facts: vec![
                ("Endpoint", text(data, "url").to_owned()),
                ("Endpoint id", text(data, "endpointId").to_owned()),
                ("Why", text(data, "reason").to_owned()),
                (
                    "Deliveries abandoned",
                    data["deliveriesAbandoned"]
                        .as_u64()
                        .unwrap_or_default()
                        .to_string(),
                ),
            ],
            closing: "Fix the endpoint, enable it again, then replay its failed deliveries.".into(),
        },
        None => Letter {
            subject: if tenant.is_empty() {
                format!("[Picket] {event_type}")
            } else {
                format!("[Picket] {event_type} for tenant {tenant}")
            },
            lead: format!("Picket tells you of {event_type}."),
            facts: vec![
                ("Tenant", tenant.to_owned()),
                (
                    "Details",
                    serde_json::to_string_pretty(data).unwrap_or_default(),
                ),
            ],
            closing: String::new(),
        },
    };
    Ok(letter.render(display_name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    fn keyring() -> Keyring {
        Keyring::parse(&SecretString::from(
            "links-1:yW0Oj8Wmg48xwAxBhsKPe4CQmFx4gsxChPDh1a/6OWw=",
        ))
        .expect("a keyring")
    }

    fn forwarded(partner: &str, tenant: &str, sealed_for: (&str, &str)) -> String {
        let sealed = keyring()
            .seal(
                b"https://login.example/adminconsent?state=secret",
                &consent_link_context(sealed_for.0, sealed_for.1),
            )
            .expect("sealed");
        serde_json::json!({
            "type": "tenant.consent_forwarded",
            "timestamp": "2026-12-02T09:00:00.000Z",
            "data": {
                "partnerId": partner,
                "tenantId": tenant,
                "tenantDisplayName": "Contoso",
                "sealedConsentUrl": STANDARD.encode(sealed),
                "message": "Please connect us",
            }
        })
        .to_string()
    }

    #[test]
    fn a_forwarded_consent_request_is_mailed_with_its_link_opened() {
        let rendered =
            render(&forwarded("p1", "t1", ("p1", "t1")), "Ada", &keyring()).expect("renders");
        assert!(
            rendered
                .text
                .contains("Consent link: https://login.example/adminconsent?state=secret"),
            "{}",
            rendered.text
        );
        assert_eq!(rendered.subject, "Please connect Contoso to Picket");
    }

    #[test]
    fn a_link_sealed_for_another_tenant_does_not_open() {
        // Copied from another partner's event, the sealed link opens in no other.
        let refused =
            render(&forwarded("p2", "t2", ("p1", "t1")), "Ada", &keyring()).expect_err("refused");
        assert_eq!(refused, SealError::Forged);
        let stranger = Keyring::parse(&SecretString::from(
            "links-2:1kltI+h3eBSWZ1ahwHzDJ8bHswtr+E/LkTbQCaRnZUw=",
        ))
        .expect("a keyring");
        assert_eq!(
            render(&forwarded("p1", "t1", ("p1", "t1")), "Ada", &stranger).expect_err("refused"),
            SealError::UnknownKey("links-1".into())
        );
    }

    #[test]
    fn incident_email_names_tenant_severity_finding_fix_and_id() {
        let body = serde_json::json!({
            "type": "incident.opened",
            "timestamp": "2026-12-02T09:00:00.000Z",
            "data": {
                "partnerId": "p1",
                "tenantId": "contoso",
                "incident": {
                    "incidentId": "0193-abc",
                    "severity": "SEVERITY_HIGH",
                    "title": "Sign-in from a new country",
                    "description": "adele@contoso signed in from <Brazil>",
                    "recommendedFix": "Revoke the user's sessions",
                    "state": "INCIDENT_STATE_OPEN"
                }
            }
        })
        .to_string();
        let rendered = render(&body, "Ada", &keyring()).expect("renders");
        assert_eq!(
            rendered.subject,
            "[Picket] High incident opened for tenant contoso: Sign-in from a new country"
        );
        for expected in [
            "Hello Ada,",
            "Tenant: contoso",
            "Severity: High",
            "What was found: Sign-in from a new country",
            "Recommended fix: Revoke the user's sessions",
            "Incident id: 0193-abc",
        ] {
            assert!(rendered.text.contains(expected), "{expected} missing");
        }
        assert!(rendered.html.contains("&lt;Brazil&gt;"), "HTML is escaped");
        assert!(!rendered.html.contains("<Brazil>"));
    }
}
