//! E-mail delivery against a real SMTP server (aiosmtpd) on loopback, real NATS and PostgreSQL:
//! who is mailed (tenant, event type and severity filters), what the message says, retries while
//! the server is down, redelivery, the recipients' API, and the other notices: a disabled endpoint,
//! a consent request forwarded to a customer's administrator, a low credit balance.

use std::time::Duration;

use picket_e2e::NotifierClient;
use picket_platform::sealing::{Keyring, consent_link_context};
use picket_proto::common::v1::Severity;
use picket_proto::incidents::v1::{Incident, IncidentOpened};
use picket_proto::ledger::v1::BalanceLow;
use picket_proto::notifications::v1::{
    CreateEmailRecipientRequest, CreateWebhookEndpointRequest, DeleteEmailRecipientRequest,
    Delivery, DeliveryAttempt, DeliveryChannel, DeliveryStatus, EmailRecipient, GetDeliveryRequest,
    GetEmailRecipientRequest, ListDeliveriesRequest, ListEmailRecipientsRequest,
    ListEventTypesRequest, RedeliverDeliveryRequest, UpdateEmailRecipientRequest,
};
use picket_proto::tenants::v1::ConsentRequestForwarded;
use picket_testkit::{SmtpServer, WebhookReceiver, eventually};
use tonic::Code;

const WAIT: Duration = Duration::from_secs(30);

fn smtp_toml(port: u16) -> String {
    format!(
        "[notifier]\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {port}\nsmtp_tls = \"none\"\nmail_from = \"Picket <alerts@picket.test>\"\n"
    )
}

/// The steps these tests take with a notifier.
trait EmailSteps {
    async fn recipient(
        &mut self,
        request: CreateEmailRecipientRequest,
    ) -> Result<EmailRecipient, tonic::Status>;

    async fn open_incident(&self, incident_id: &str, tenant_id: &str, severity: Severity);

    async fn email_deliveries(&self, status: DeliveryStatus) -> Vec<Delivery>;

    async fn attempts(&self, delivery_id: &str) -> Vec<DeliveryAttempt>;
}

impl EmailSteps for NotifierClient {
    async fn recipient(
        &mut self,
        request: CreateEmailRecipientRequest,
    ) -> Result<EmailRecipient, tonic::Status> {
        let partner_id = request.partner_id.clone();
        let request = self.request(&partner_id, request);
        Ok(self
            .channels
            .create_email_recipient(request)
            .await?
            .into_inner()
            .recipient
            .expect("recipient"))
    }

    async fn open_incident(&self, incident_id: &str, tenant_id: &str, severity: Severity) {
        let opened = IncidentOpened {
            partner_id: "p1".into(),
            tenant_id: tenant_id.into(),
            incident: Some(Incident {
                incident_id: incident_id.into(),
                severity: severity.into(),
                title: "Sign-in from a new country".into(),
                description: "adele@contoso.example signed in from Brazil, never seen before"
                    .into(),
                recommended_fix: "Revoke the user's sessions and reset the password".into(),
                ..Default::default()
            }),
        };
        self.env.publish("prioritizer", &opened).await;
    }

    async fn email_deliveries(&self, status: DeliveryStatus) -> Vec<Delivery> {
        let request = self.request(
            "p1",
            ListDeliveriesRequest {
                partner_id: "p1".into(),
                channel: DeliveryChannel::Email.into(),
                statuses: vec![status.into()],
                ..Default::default()
            },
        );
        self.deliveries
            .clone()
            .list_deliveries(request)
            .await
            .expect("deliveries listed")
            .into_inner()
            .deliveries
    }

    async fn attempts(&self, delivery_id: &str) -> Vec<DeliveryAttempt> {
        let request = self.request(
            "p1",
            GetDeliveryRequest {
                delivery_id: delivery_id.into(),
            },
        );
        self.deliveries
            .clone()
            .get_delivery(request)
            .await
            .expect("delivery read")
            .into_inner()
            .attempts
    }
}

fn ada() -> CreateEmailRecipientRequest {
    CreateEmailRecipientRequest {
        partner_id: "p1".into(),
        email: "ada@msp.example".into(),
        display_name: "Ada".into(),
        minimum_severity: Severity::High.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_incident_is_emailed_to_the_recipients_it_concerns() {
    let smtp = SmtpServer::start().await;
    let mut notifier = NotifierClient::start(&smtp_toml(smtp.port())).await;
    notifier.recipient(ada()).await.expect("ada");
    // Only critical incidents for this one, only tenant t2 for the other, only resolutions for a
    // third: none of them hears of a high incident of t1 being opened.
    notifier
        .recipient(CreateEmailRecipientRequest {
            email: "oncall@msp.example".into(),
            minimum_severity: Severity::Critical.into(),
            ..ada()
        })
        .await
        .expect("oncall");
    notifier
        .recipient(CreateEmailRecipientRequest {
            email: "t2-admin@msp.example".into(),
            tenant_id: "t2".into(),
            minimum_severity: Severity::Unspecified.into(),
            ..ada()
        })
        .await
        .expect("t2 admin");
    notifier
        .recipient(CreateEmailRecipientRequest {
            email: "reports@msp.example".into(),
            event_types: vec!["incident.resolved".into()],
            minimum_severity: Severity::Unspecified.into(),
            ..ada()
        })
        .await
        .expect("reports");

    notifier.open_incident("i-1", "t1", Severity::High).await;

    let mail = eventually(WAIT, "the incident e-mail", || async {
        smtp.received().into_iter().next()
    })
    .await;
    assert_eq!(mail.header("To").as_deref(), Some("Ada <ada@msp.example>"));
    assert_eq!(
        mail.header("From").as_deref(),
        Some("Picket <alerts@picket.test>")
    );
    assert_eq!(
        mail.header("Subject").as_deref(),
        Some("[Picket] High incident opened for tenant t1: Sign-in from a new country")
    );
    let text = mail.decoded();
    for expected in [
        "Hello Ada,",
        "Tenant: t1",
        "Severity: High",
        "What was found: Sign-in from a new country",
        "Details: adele@contoso.example signed in from Brazil, never seen before",
        "Recommended fix: Revoke the user's sessions and reset the password",
        "Incident id: i-1",
        "Content-Type: text/html",
        "<th align=\"left\" valign=\"top\">Severity</th><td>High</td>",
    ] {
        assert!(text.contains(expected), "{expected:?} missing from\n{text}");
    }

    let succeeded = eventually(WAIT, "the e-mail delivery recorded", || async {
        Some(notifier.email_deliveries(DeliveryStatus::Succeeded).await)
            .filter(|listed| !listed.is_empty())
    })
    .await;
    assert_eq!(succeeded.len(), 1);
    assert_eq!(succeeded[0].destination, "ada@msp.example");
    assert_eq!(succeeded[0].channel(), DeliveryChannel::Email);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(smtp.received().len(), 1, "one e-mail, to Ada only");
    notifier.env.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mail_is_retried_while_the_server_is_down_and_redelivered_by_hand() {
    let smtp = SmtpServer::start().await;
    let port = smtp.port();
    drop(smtp);
    let mut notifier = NotifierClient::start(&smtp_toml(port)).await;
    notifier.recipient(ada()).await.expect("ada");

    notifier
        .open_incident("i-1", "t1", Severity::Critical)
        .await;

    // Four attempts (the first and three retries) find no server: the delivery is dead.
    let dead = eventually(WAIT, "the e-mail delivery to die", || async {
        notifier
            .email_deliveries(DeliveryStatus::Dead)
            .await
            .into_iter()
            .next()
    })
    .await;
    assert_eq!(dead.attempt_count, 4);
    assert!(dead.last_error.starts_with("smtp:"), "{}", dead.last_error);

    let smtp = SmtpServer::start_on(port).await;
    let request = notifier.request(
        "p1",
        RedeliverDeliveryRequest {
            delivery_id: dead.delivery_id.clone(),
            force: false,
        },
    );
    notifier
        .deliveries
        .redeliver_delivery(request)
        .await
        .expect("redelivered");
    let mail = eventually(WAIT, "the redelivered e-mail", || async {
        smtp.received().into_iter().next()
    })
    .await;
    assert!(mail.decoded().contains("Incident id: i-1"));
    let attempts = eventually(WAIT, "the fifth attempt recorded", || async {
        Some(notifier.attempts(&dead.delivery_id).await).filter(|attempts| attempts.len() == 5)
    })
    .await;
    assert!(attempts[4].succeeded);
    notifier.env.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn recipients_are_managed_by_their_partner_only() {
    let smtp = SmtpServer::start().await;
    let mut notifier = NotifierClient::start(&smtp_toml(smtp.port())).await;

    let bad = notifier
        .recipient(CreateEmailRecipientRequest {
            email: "not an address".into(),
            ..ada()
        })
        .await
        .expect_err("not an address");
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().starts_with("email:"), "{}", bad.message());
    let bad_type = notifier
        .recipient(CreateEmailRecipientRequest {
            event_types: vec!["incident.exploded".into()],
            ..ada()
        })
        .await
        .expect_err("no such event type");
    assert!(bad_type.message().starts_with("event_types:"));

    let ada = notifier.recipient(ada()).await.expect("ada");
    let again = notifier.recipient(self::ada()).await.expect_err("twice");
    assert_eq!(again.code(), Code::AlreadyExists);

    let request = notifier.request(
        "p2",
        GetEmailRecipientRequest {
            recipient_id: ada.recipient_id.clone(),
        },
    );
    let other = notifier
        .channels
        .get_email_recipient(request)
        .await
        .expect_err("p2 may not see it");
    assert_eq!(other.code(), Code::NotFound);

    let request = notifier.request(
        "p1",
        UpdateEmailRecipientRequest {
            recipient_id: ada.recipient_id.clone(),
            enabled: Some(false),
            display_name: Some("Ada L.".into()),
            ..Default::default()
        },
    );
    let paused = notifier
        .channels
        .update_email_recipient(request)
        .await
        .expect("paused")
        .into_inner()
        .recipient
        .expect("recipient");
    assert!(!paused.enabled);
    assert_eq!(paused.display_name, "Ada L.");
    assert_eq!(paused.email, "ada@msp.example");

    // A paused recipient is not mailed.
    notifier
        .open_incident("i-1", "t1", Severity::Critical)
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(smtp.received().is_empty());

    let request = notifier.request(
        "p1",
        ListEmailRecipientsRequest {
            partner_id: "p1".into(),
            ..Default::default()
        },
    );
    let listed = notifier
        .channels
        .list_email_recipients(request)
        .await
        .expect("listed")
        .into_inner()
        .recipients;
    assert_eq!(listed.len(), 1);
    let request = notifier.request(
        "p1",
        DeleteEmailRecipientRequest {
            recipient_id: ada.recipient_id.clone(),
        },
    );
    notifier
        .channels
        .delete_email_recipient(request)
        .await
        .expect("deleted");

    let request = notifier.request("p1", ListEventTypesRequest {});
    let catalogue = notifier
        .channels
        .list_event_types(request)
        .await
        .expect("catalogue")
        .into_inner()
        .event_types;
    let opened = catalogue
        .iter()
        .find(|event_type| event_type.name == "incident.opened")
        .expect("incident.opened");
    assert_eq!(opened.message_type, "picket.incidents.v1.IncidentOpened");
    notifier.env.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_partner_is_emailed_when_an_endpoint_is_disabled() {
    let smtp = SmtpServer::start().await;
    let mut notifier = NotifierClient::start(&smtp_toml(smtp.port())).await;
    notifier
        .recipient(CreateEmailRecipientRequest {
            event_types: vec!["endpoint.disabled".into()],
            minimum_severity: Severity::Unspecified.into(),
            ..ada()
        })
        .await
        .expect("ada");
    let gone = WebhookReceiver::start().await;
    gone.answer_next_with(&[410]);
    let request = notifier.request(
        "p1",
        CreateWebhookEndpointRequest {
            partner_id: "p1".into(),
            url: gone.url(),
            event_types: vec!["incident.opened".into()],
            ..Default::default()
        },
    );
    notifier
        .channels
        .create_webhook_endpoint(request)
        .await
        .expect("endpoint");

    notifier.open_incident("i-1", "t1", Severity::High).await;

    let mail = eventually(WAIT, "the endpoint.disabled e-mail", || async {
        smtp.received().into_iter().next()
    })
    .await;
    assert_eq!(
        mail.header("Subject"),
        Some(format!(
            "[Picket] Webhook endpoint disabled: {}",
            gone.url()
        ))
    );
    let text = mail.decoded();
    assert!(text.contains("Why: endpoint answered 410 gone"), "{text}");
    notifier.env.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_forwarded_consent_request_is_emailed_to_the_customers_administrator_once() {
    let smtp = SmtpServer::start().await;
    let notifier = NotifierClient::start(&smtp_toml(smtp.port())).await;
    // The link travels sealed, as the scanner seals it: only the notifier opens it.
    let sealed_consent_url = Keyring::parse(&picket_testkit::consent_link_test_keys!().into())
        .expect("the tests' consent-link keys")
        .seal(
            b"https://login.microsoftonline.com/common/adminconsent?client_id=picket&state=s1",
            &consent_link_context("p1", "t1"),
        )
        .expect("sealed");
    let forwarded = ConsentRequestForwarded {
        partner_id: "p1".into(),
        tenant_id: "t1".into(),
        tenant_display_name: "Contoso".into(),
        sealed_consent_url,
        recipient_email: "it-admin@contoso.example".into(),
        recipient_name: "Grace".into(),
        message: "Grace, this is the security service we talked about.".into(),
        ..Default::default()
    };
    // Published twice with one event id: a redelivery.
    let event = notifier.env.publish("scanner", &forwarded).await;
    notifier.env.publish_outgoing(&event).await;

    let mail = eventually(WAIT, "the consent e-mail", || async {
        smtp.received().into_iter().next()
    })
    .await;
    assert_eq!(
        mail.header("To").as_deref(),
        Some("Grace <it-admin@contoso.example>")
    );
    assert_eq!(
        mail.header("Subject").as_deref(),
        Some("Please connect Contoso to Picket")
    );
    let text = mail.decoded();
    for expected in [
        "Hello Grace,",
        "Message from your partner: Grace, this is the security service we talked about.",
        "Consent link: https://login.microsoftonline.com/common/adminconsent?client_id=picket&state=s1",
    ] {
        assert!(text.contains(expected), "{expected:?} missing from\n{text}");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        smtp.received().len(),
        1,
        "one e-mail whatever the redeliveries"
    );
    notifier.env.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_low_credit_balance_is_emailed_to_the_partner() {
    let smtp = SmtpServer::start().await;
    let mut notifier = NotifierClient::start(&smtp_toml(smtp.port())).await;
    notifier
        .recipient(CreateEmailRecipientRequest {
            event_types: vec!["credits.balance_low".into()],
            minimum_severity: Severity::Unspecified.into(),
            ..ada()
        })
        .await
        .expect("ada");
    let low = BalanceLow {
        partner_id: "p1".into(),
        available_minutes: 90,
        threshold_minutes: 120,
        ..Default::default()
    };
    notifier.env.publish("ledger", &low).await;

    let mail = eventually(WAIT, "the low balance e-mail", || async {
        smtp.received().into_iter().next()
    })
    .await;
    assert_eq!(
        mail.header("Subject").as_deref(),
        Some("[Picket] Incident-response credits running low: 90 minutes left")
    );
    let text = mail.decoded();
    assert!(text.contains("Threshold: 120 minutes"), "{text}");
    notifier.env.teardown().await;
}

/// The standard authority map with e-mail contacts for `owners` (owner id, address).
fn map_with_contacts(owners: &[(&str, &str)]) -> picket_proto::incidents::v1::AuthorityMap {
    let settings: prioritizer::Settings =
        picket_testkit::service_settings(prioritizer::SERVICE, prioritizer::DEFAULTS, "");
    let mut map = prioritizer::authority::standard::standard_map(
        &prioritizer::escalation::Escalation::standard(&settings),
    );
    map.standard = false;
    map.partner_id = "p1".into();
    for (owner_id, address) in owners {
        let owner = map
            .owners
            .iter_mut()
            .find(|owner| owner.owner_id == *owner_id)
            .expect("a standard owner");
        owner.contacts.push(picket_proto::incidents::v1::Contact {
            contact_id: format!("{owner_id}-mail"),
            channel: picket_proto::incidents::v1::ContactChannel::Email.into(),
            address: (*address).into(),
            ..Default::default()
        });
    }
    map
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn incidents_reach_the_owners_the_authority_map_names() {
    use picket_proto::incidents::v1::{AuthorityMapChange, AuthorityMapChanged};
    let smtp = SmtpServer::start().await;
    let notifier = NotifierClient::start(&smtp_toml(smtp.port())).await;
    // The partner's map: its security manager is informed of detections, its account manager
    // talks to the client; a deviation for tenant t2 names no one.
    let changed = |tenant_id: &str, map: picket_proto::incidents::v1::AuthorityMap, version| {
        AuthorityMapChanged {
            partner_id: "p1".into(),
            tenant_id: tenant_id.into(),
            map: Some(picket_proto::incidents::v1::AuthorityMap {
                tenant_id: tenant_id.into(),
                version,
                ..map
            }),
            change: Some(AuthorityMapChange {
                version,
                ..Default::default()
            }),
        }
    };
    let partner_map = map_with_contacts(&[
        ("msp-security-manager", "sm@msp.example"),
        ("msp-account-manager", "am@msp.example"),
    ]);
    notifier
        .env
        .publish("prioritizer", &changed("", partner_map, 1))
        .await;
    notifier
        .env
        .publish("prioritizer", &changed("t2", map_with_contacts(&[]), 1))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    notifier.open_incident("i-1", "t1", Severity::High).await;
    let to = eventually(WAIT, "both owners mailed", || async {
        let mut to: Vec<String> = smtp
            .received()
            .iter()
            .filter_map(|mail| mail.header("To"))
            .collect();
        to.sort();
        (to.len() >= 2).then_some(to)
    })
    .await;
    assert_eq!(to, ["am@msp.example", "sm@msp.example"]);
    // Tenant t2 follows its own deviation: no one is mailed.
    notifier.open_incident("i-2", "t2", Severity::High).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(smtp.received().len(), 2, "the deviation names no contact");
    // An escalation reaches the owner of its step, on the step's channels.
    let escalated = picket_proto::incidents::v1::IncidentEscalated {
        partner_id: "p1".into(),
        tenant_id: "t2".into(),
        incident: Some(Incident {
            incident_id: "i-2".into(),
            severity: Severity::High.into(),
            title: "Sign-in from a new country".into(),
            ..Default::default()
        }),
        level: 2,
        owner: Some(picket_proto::incidents::v1::AuthorityOwner {
            owner_id: "msp-ciso".into(),
            contacts: vec![
                picket_proto::incidents::v1::Contact {
                    channel: picket_proto::incidents::v1::ContactChannel::Email.into(),
                    address: "ciso@msp.example".into(),
                    ..Default::default()
                },
                picket_proto::incidents::v1::Contact {
                    channel: picket_proto::incidents::v1::ContactChannel::Phone.into(),
                    address: "+4930123456".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        }),
        ..Default::default()
    };
    notifier.env.publish("prioritizer", &escalated).await;
    let to = eventually(WAIT, "the escalated owner mailed", || async {
        smtp.received()
            .iter()
            .filter_map(|mail| mail.header("To"))
            .find(|to| to == "ciso@msp.example")
    })
    .await;
    assert_eq!(to, "ciso@msp.example");
    notifier.env.teardown().await;
}
