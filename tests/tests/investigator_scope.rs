//! An investigator reads what their engagement names, for as long as it is theirs: the real ledger
//! assigns, reassigns and closes an engagement, the real prioritizer hears of it over NATS, and the
//! investigator's reads of incidents and of the partner's authority map follow, call by call.

use std::time::Duration;

use picket_e2e::{channel, start_ledger, start_prioritizer, suspicious_sign_in};
use picket_platform::auth::{Principal, Role};
use picket_proto::incidents::v1 as incidents;
use picket_proto::incidents::v1::authority_service_client::AuthorityServiceClient;
use picket_proto::incidents::v1::incident_service_client::IncidentServiceClient;
use picket_proto::ledger::v1 as ledger;
use picket_proto::ledger::v1::credit_ledger_service_client::CreditLedgerServiceClient;
use picket_proto::ledger::v1::engagement_service_client::EngagementServiceClient;
use picket_testkit::{TestEnv, eventually};
use tonic::Code;
use tonic::transport::Channel;

const WAIT: Duration = Duration::from_secs(30);

struct World {
    env: TestEnv,
    incidents: IncidentServiceClient<Channel>,
    authority: AuthorityServiceClient<Channel>,
}

impl World {
    fn investigator(&self, subject: &str) -> String {
        self.env.token(&Principal {
            subject: subject.into(),
            role: Role::Investigator,
            partner_id: None,
            tenant_ids: Vec::new(),
        })
    }

    /// The code of the investigator's GetIncident.
    async fn get(&self, investigator: &str, incident_id: &str) -> Code {
        let mut client = self.incidents.clone();
        let asked = client
            .get_incident(self.env.request(
                &self.investigator(investigator),
                incidents::GetIncidentRequest {
                    incident_id: incident_id.into(),
                },
            ))
            .await;
        asked.map_or_else(|status| status.code(), |_| Code::Ok)
    }

    /// Waits until the investigator's GetIncident answers `code`.
    async fn until(&self, investigator: &str, incident_id: &str, code: Code, what: &str) {
        eventually(WAIT, what, || async {
            (self.get(investigator, incident_id).await == code).then_some(())
        })
        .await;
    }

    /// The fingerprints of the incidents the investigator lists.
    async fn listed(&self, investigator: &str, tenant_id: &str) -> Result<Vec<String>, Code> {
        let mut client = self.incidents.clone();
        client
            .list_incidents(self.env.request(
                &self.investigator(investigator),
                incidents::ListIncidentsRequest {
                    tenant_id: tenant_id.into(),
                    ..Default::default()
                },
            ))
            .await
            .map(|response| {
                let mut fingerprints: Vec<String> = response
                    .into_inner()
                    .incidents
                    .into_iter()
                    .map(|incident| incident.fingerprint)
                    .collect();
                fingerprints.sort();
                fingerprints
            })
            .map_err(|status| status.code())
    }

    /// The id of the incident its partner lists under `fingerprint`, once it is open.
    async fn incident_of(&self, partner_id: &str, fingerprint: &str) -> String {
        let token = self.env.partner_token(partner_id);
        eventually(WAIT, "the incident", || async {
            let mut client = self.incidents.clone();
            client
                .list_incidents(
                    self.env
                        .request(&token, incidents::ListIncidentsRequest::default()),
                )
                .await
                .ok()?
                .into_inner()
                .incidents
                .into_iter()
                .find(|incident| incident.fingerprint == fingerprint)
                .map(|incident| incident.incident_id)
        })
        .await
    }

    async fn authority_map(&self, investigator: &str, partner_id: &str) -> Code {
        let mut client = self.authority.clone();
        client
            .get_authority_map(self.env.request(
                &self.investigator(investigator),
                incidents::GetAuthorityMapRequest {
                    partner_id: partner_id.into(),
                    ..Default::default()
                },
            ))
            .await
            .map_or_else(|status| status.code(), |_| Code::Ok)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_investigator_reads_the_incidents_of_their_open_engagement_only() {
    let env = TestEnv::new().await;
    let prioritizer = start_prioritizer(&env, "").await;
    let ledger_service = start_ledger(&env, "").await;
    let prioritizer_channel = channel(&prioritizer).await;
    let ledger_channel = channel(&ledger_service).await;
    let world = World {
        incidents: IncidentServiceClient::new(prioritizer_channel.clone()),
        authority: AuthorityServiceClient::new(prioritizer_channel),
        env,
    };
    let operator = world.env.operator_token();
    let partner = world.env.partner_token("p1");

    // Incidents in two tenants of p1 and one of p2.
    for (partner_id, tenant_id, fingerprint) in [
        ("p1", "t-engaged", "fp-engaged"),
        ("p1", "t-other", "fp-other"),
        ("p2", "t-elsewhere", "fp-elsewhere"),
    ] {
        world
            .env
            .publish(
                "scanner",
                &suspicious_sign_in(partner_id, tenant_id, fingerprint),
            )
            .await;
    }
    let engaged = world.incident_of("p1", "fp-engaged").await;
    let other = world.incident_of("p1", "fp-other").await;
    let elsewhere = world.incident_of("p2", "fp-elsewhere").await;

    // Before any engagement, nothing.
    assert_eq!(world.get("ines", &engaged).await, Code::NotFound);
    assert_eq!(
        world.authority_map("ines", "p1").await,
        Code::PermissionDenied
    );

    // p1 opens an engagement on t-engaged; the operator assigns Ines.
    CreditLedgerServiceClient::new(ledger_channel.clone())
        .purchase_credits(world.env.request(
            &operator,
            ledger::PurchaseCreditsRequest {
                partner_id: "p1".into(),
                idempotency_key: "pack".into(),
                minutes: 600,
                ..Default::default()
            },
        ))
        .await
        .expect("credits");
    let mut engagements = EngagementServiceClient::new(ledger_channel);
    let engagement_id = engagements
        .open_engagement(world.env.request(
            &partner,
            ledger::OpenEngagementRequest {
                partner_id: "p1".into(),
                idempotency_key: "open".into(),
                tenant_id: "t-engaged".into(),
                request: "Who signed in from Lagos?".into(),
                channel: ledger::RequestChannel::Chat.into(),
                ..Default::default()
            },
        ))
        .await
        .expect("opened")
        .into_inner()
        .engagement
        .expect("engagement")
        .engagement_id;
    let assign = |investigator: &str, key: &str| ledger::AssignInvestigatorRequest {
        partner_id: "p1".into(),
        idempotency_key: key.into(),
        engagement_id: engagement_id.clone(),
        investigator_subject: investigator.into(),
    };
    engagements
        .assign_investigator(world.env.request(&operator, assign("ines", "assign-ines")))
        .await
        .expect("assigned");

    // Ines reads the engaged tenant's incidents, its timeline and p1's authority map...
    world
        .until(
            "ines",
            &engaged,
            Code::Ok,
            "Ines reads the engaged incident",
        )
        .await;
    assert_eq!(
        world.listed("ines", "").await,
        Ok(vec!["fp-engaged".into()])
    );
    assert_eq!(
        world.listed("ines", "t-engaged").await,
        Ok(vec!["fp-engaged".into()])
    );
    let timeline = world
        .incidents
        .clone()
        .get_timeline(world.env.request(
            &world.investigator("ines"),
            incidents::GetTimelineRequest {
                incident_id: engaged.clone(),
                ..Default::default()
            },
        ))
        .await;
    assert!(timeline.is_ok(), "{timeline:?}");
    assert_eq!(world.authority_map("ines", "p1").await, Code::Ok);
    // ...and nothing beyond: not p1's other tenant, not p2, not another investigator.
    assert_eq!(world.get("ines", &other).await, Code::NotFound);
    assert_eq!(world.get("ines", &elsewhere).await, Code::NotFound);
    assert_eq!(
        world.listed("ines", "t-other").await,
        Err(Code::PermissionDenied)
    );
    assert_eq!(
        world.authority_map("ines", "p2").await,
        Code::PermissionDenied
    );
    assert_eq!(world.get("ivan", &engaged).await, Code::NotFound);
    assert_eq!(world.listed("ivan", "").await, Ok(Vec::new()));
    // Reading is not deciding: the partner decides on its incidents.
    let approve = world
        .incidents
        .clone()
        .approve_incident(world.env.request(
            &world.investigator("ines"),
            incidents::ApproveIncidentRequest {
                incident_id: engaged.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("an investigator does not approve");
    assert_eq!(approve.code(), Code::PermissionDenied, "{approve:?}");

    // Reassigned to Ivan: Ines's reads end, Ivan's begin.
    engagements
        .assign_investigator(world.env.request(&operator, assign("ivan", "assign-ivan")))
        .await
        .expect("reassigned");
    world
        .until("ines", &engaged, Code::NotFound, "Ines no longer reads it")
        .await;
    assert_eq!(world.get("ivan", &engaged).await, Code::Ok);

    // Closed: nobody reads through it any more.
    engagements
        .close_engagement(world.env.request(
            &world.investigator("ivan"),
            ledger::CloseEngagementRequest {
                partner_id: "p1".into(),
                idempotency_key: "close".into(),
                engagement_id: engagement_id.clone(),
                summary: "A phished password; reset and sessions revoked.".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("closed");
    world
        .until("ivan", &engaged, Code::NotFound, "Ivan no longer reads it")
        .await;
    assert_eq!(
        world.authority_map("ivan", "p1").await,
        Code::PermissionDenied
    );
    // A late assignment of a closed engagement (a redelivery) opens nothing again.
    world
        .env
        .publish(
            "ledger",
            &ledger::EngagementAssigned {
                partner_id: "p1".into(),
                tenant_id: "t-engaged".into(),
                engagement: Some(ledger::Engagement {
                    engagement_id: engagement_id.clone(),
                    partner_id: "p1".into(),
                    tenant_id: "t-engaged".into(),
                    investigator_subject: "ines".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(world.get("ines", &engaged).await, Code::NotFound);

    prioritizer.shutdown().await;
    ledger_service.shutdown().await;
    world.env.teardown().await;
}
