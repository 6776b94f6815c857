//! Offboarding across the real services (scanner against graph-sim, prioritizer, notifier,
//! ledger, offboarding) on real NATS and PostgreSQL, with time moved by the test: the tenant is
//! disconnected, its removal scheduled, then purged everywhere and certified; a cancel gives it
//! back; a crash of the offboarding service, a late confirmation and a repeated PurgeRequested
//! lose nothing and double nothing.

use std::time::Duration;

use graph_sim::{GraphSim, SimConfig};
use picket_e2e::{
    channel, consent_as_administrator, start_ledger, start_notifier, start_offboarding,
    start_prioritizer, start_scanner,
};
use picket_platform::Application;
use picket_platform::auth::{Principal, Role};
use picket_platform::time::to_duration;
use picket_proto::incidents::v1 as incidents;
use picket_proto::incidents::v1::ListIncidentsRequest;
use picket_proto::incidents::v1::authority_service_client::AuthorityServiceClient;
use picket_proto::incidents::v1::incident_service_client::IncidentServiceClient;
use picket_proto::ledger::v1::engagement_service_client::EngagementServiceClient;
use picket_proto::ledger::v1::{OpenEngagementRequest, RequestChannel};
use picket_proto::notifications::v1::CreateWebhookEndpointRequest;
use picket_proto::notifications::v1::channel_service_client::ChannelServiceClient;
use picket_proto::offboarding::v1 as offboarding;
use picket_proto::offboarding::v1::offboarding_service_client::OffboardingServiceClient;
use picket_proto::tenants::v1 as tenants;
use picket_proto::tenants::v1::tenant_service_client::TenantServiceClient;
use picket_testkit::{TestEnv, WebhookReceiver, eventually};
use tonic::transport::Channel;

const PARTNER: &str = "p1";
const OFFBOARDING_TOML: &str =
    "[offboarding]\ntick_interval = \"100ms\"\nconfirm_within = \"2s\"\n";

struct Picket {
    env: TestEnv,
    sim: GraphSim,
    scanner: Application,
    prioritizer: Application,
    notifier: Option<Application>,
    ledger: Application,
    offboarding: Option<Application>,
    receiver: WebhookReceiver,
}

impl Picket {
    async fn start() -> Picket {
        let env = TestEnv::new().await;
        let sim = GraphSim::start(
            SimConfig {
                tenants: 2,
                ..SimConfig::default()
            },
            ([127, 0, 0, 1], 0).into(),
        )
        .await
        .expect("graph-sim starts");
        let scanner =
            start_scanner(&env, &sim, "initial_backoff = \"50ms\"\nscan_workers = 2\n").await;
        let prioritizer = start_prioritizer(&env, "").await;
        let notifier = start_notifier(&env, "").await;
        let ledger = start_ledger(&env, "").await;
        let offboarding = start_offboarding(&env, OFFBOARDING_TOML).await;
        let receiver = WebhookReceiver::start().await;
        let mut channels = ChannelServiceClient::new(channel(&notifier).await);
        channels
            .create_webhook_endpoint(env.request(
                &env.partner_token(PARTNER),
                CreateWebhookEndpointRequest {
                    partner_id: PARTNER.into(),
                    url: receiver.url(),
                    description: "partner SOC".into(),
                    ..Default::default()
                },
            ))
            .await
            .expect("endpoint created");
        Picket {
            env,
            sim,
            scanner,
            prioritizer,
            notifier: Some(notifier),
            ledger,
            offboarding: Some(offboarding),
            receiver,
        }
    }

    fn token(&self) -> String {
        self.env.partner_token(PARTNER)
    }

    async fn offboardings(&self) -> OffboardingServiceClient<Channel> {
        OffboardingServiceClient::new(
            channel(self.offboarding.as_ref().expect("offboarding runs")).await,
        )
    }

    /// Onboards a simulated tenant, completes its consent and waits until the offboarding
    /// service knows it; returns Picket's tenant id.
    async fn connect(&self, microsoft_tenant: &str) -> String {
        let mut client = TenantServiceClient::new(channel(&self.scanner).await);
        let onboarded = client
            .onboard_tenant(self.env.request(
                &self.token(),
                tenants::OnboardTenantRequest {
                    partner_id: PARTNER.into(),
                    display_name: "Contoso Dental".into(),
                    microsoft_tenant: microsoft_tenant.into(),
                    plan: tenants::SubscriptionPlan::Standard.into(),
                    idempotency_key: String::new(),
                },
            ))
            .await
            .expect("onboarded")
            .into_inner();
        let page = consent_as_administrator(&self.sim, microsoft_tenant, &onboarded.consent_url)
            .await
            .expect("the browser reaches a page");
        assert!(page.connected(), "{}", page.body);
        let tenant = onboarded.tenant.expect("tenant");
        let pool = self.env.pool(::offboarding::SERVICE).await;
        let tenant_id = tenant.tenant_id.clone();
        eventually(Duration::from_secs(20), "the tenant to be known", || {
            let pool = pool.clone();
            let tenant_id = tenant_id.clone();
            async move {
                let known: Option<String> =
                    sqlx::query_scalar("SELECT tenant_id FROM tenants WHERE tenant_id = $1")
                        .bind(&tenant_id)
                        .fetch_optional(&pool)
                        .await
                        .expect("query");
                known.map(|_| ())
            }
        })
        .await;
        tenant.tenant_id
    }

    /// Rows naming `tenant_id` in each table of `schema` (the whole row as text).
    async fn rows_naming(&self, schema: &str, tenant_id: &str) -> Vec<(String, i64)> {
        let pool = self.env.pool(schema).await;
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT table_name::text FROM information_schema.tables
             WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'
               AND table_name NOT LIKE '\\_sqlx%' AND table_name NOT LIKE '\\_picket%'
             ORDER BY 1",
        )
        .fetch_all(&pool)
        .await
        .expect("tables");
        let mut found = Vec::new();
        for table in tables {
            let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT count(*) FROM {table} t WHERE t::text LIKE '%' || $1 || '%'"
            )))
            .bind(tenant_id)
            .fetch_one(&pool)
            .await
            .expect("count");
            if count > 0 {
                found.push((table, count));
            }
        }
        found
    }

    async fn wait_for_state(
        &self,
        offboarding_id: &str,
        state: offboarding::OffboardingState,
    ) -> offboarding::Offboarding {
        let client = self.offboardings().await;
        let token = self.token();
        eventually(
            Duration::from_secs(30),
            &format!("offboarding {state:?}"),
            || {
                let request = self.env.request(
                    &token,
                    offboarding::GetOffboardingRequest {
                        offboarding_id: offboarding_id.into(),
                    },
                );
                let mut client = client.clone();
                async move {
                    let offboarding = client
                        .get_offboarding(request)
                        .await
                        .expect("readable")
                        .into_inner()
                        .offboarding
                        .expect("offboarding");
                    (offboarding.state() == state).then_some(offboarding)
                }
            },
        )
        .await
    }

    /// Moves the offboarding's removal date to now, as if its retention had passed.
    async fn retention_passes(&self, offboarding_id: &str) {
        sqlx::query(
            "UPDATE offboardings SET purge_due_at = now() - interval '1 second'
             WHERE offboarding_id = $1::uuid",
        )
        .bind(offboarding_id)
        .execute(&self.env.pool(::offboarding::SERVICE).await)
        .await
        .expect("time moves");
    }

    async fn offboard(&self, tenant_id: &str) -> offboarding::Offboarding {
        let response = self
            .offboardings()
            .await
            .offboard_tenant(self.env.request(
                &self.token(),
                offboarding::OffboardTenantRequest {
                    partner_id: PARTNER.into(),
                    tenant_id: tenant_id.into(),
                    reason: "Contract ended".into(),
                    retention: Some(to_duration(Duration::from_secs(3_600))),
                },
            ))
            .await
            .expect("offboarding starts")
            .into_inner();
        assert!(response.created);
        response.offboarding.expect("offboarding")
    }
}

async fn count(pool: &sqlx::PgPool, sql: &'static str, tenant_id: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(tenant_id)
        .fetch_one(pool)
        .await
        .expect("count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_offboarded_tenant_is_disconnected_then_purged_everywhere_with_a_certificate() {
    let picket = Picket::start().await;
    let microsoft = picket.sim.tenant_ids();
    let tenant_id = picket.connect(&microsoft[0]).await;
    let kept = picket.connect(&microsoft[1]).await;
    // Its first scan gives the prioritizer findings and the partner incident webhooks.
    let prioritizer = picket.env.pool(prioritizer::SERVICE).await;
    eventually(
        Duration::from_secs(60),
        "findings of the tenant",
        || async {
            (count(
                &prioritizer,
                "SELECT count(*) FROM recommendations WHERE tenant_id = $1",
                &tenant_id,
            )
            .await
                > 0)
            .then_some(())
        },
    )
    .await;
    // The partner's ledger names the tenant on an engagement: a financial record, kept.
    EngagementServiceClient::new(channel(&picket.ledger).await)
        .open_engagement(picket.env.request(
            &picket.token(),
            OpenEngagementRequest {
                partner_id: PARTNER.into(),
                idempotency_key: "ask-1".into(),
                tenant_id: tenant_id.clone(),
                request: "What did the attacker read?".into(),
                channel: RequestChannel::Chat.into(),
                ..Default::default()
            },
        ))
        .await
        .expect("engagement opened");

    // A customer contact granted the tenant sees its incidents, until the offboarding starts.
    AuthorityServiceClient::new(channel(&picket.prioritizer).await)
        .grant_customer_access(picket.env.request(
            &picket.token(),
            incidents::GrantCustomerAccessRequest {
                partner_id: PARTNER.into(),
                tenant_id: tenant_id.clone(),
                customer_subject: "it@contoso.example".into(),
                email: "it@contoso.example".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("granted");
    let customer = picket.env.token(&Principal {
        subject: "it@contoso.example".into(),
        role: Role::Customer,
        partner_id: Some(PARTNER.into()),
        tenant_ids: vec![tenant_id.clone()],
    });
    let incidents = IncidentServiceClient::new(channel(&picket.prioritizer).await);
    let visible = || {
        let request = picket.env.request(
            &customer,
            ListIncidentsRequest {
                partner_id: PARTNER.into(),
                ..Default::default()
            },
        );
        let mut incidents = incidents.clone();
        async move {
            incidents
                .list_incidents(request)
                .await
                .expect("listed")
                .into_inner()
                .incidents
                .len()
        }
    };
    eventually(
        Duration::from_secs(30),
        "an incident for the customer",
        || {
            let listing = visible();
            async move { (listing.await > 0).then_some(()) }
        },
    )
    .await;

    let started = picket.offboard(&tenant_id).await;
    assert_eq!(
        started.state(),
        offboarding::OffboardingState::Disconnecting
    );
    // Offboardings are the partner's business: the customer contact reads none.
    let customer_read = picket
        .offboardings()
        .await
        .get_offboarding(picket.env.request(
            &customer,
            offboarding::GetOffboardingRequest {
                offboarding_id: started.offboarding_id.clone(),
            },
        ))
        .await
        .expect_err("a customer does not read offboardings");
    assert_eq!(customer_read.code(), tonic::Code::PermissionDenied);
    let scheduled = picket
        .wait_for_state(
            &started.offboarding_id,
            offboarding::OffboardingState::Scheduled,
        )
        .await;
    assert!(scheduled.waiting_for.is_empty());
    // Disconnected: no scanning, tokens dropped; incidents closed as offboarded.
    let scanner = picket.env.pool(scanner::SERVICE).await;
    let state: String = sqlx::query_scalar("SELECT state FROM tenants WHERE tenant_id = $1::uuid")
        .bind(&tenant_id)
        .fetch_one(&scanner)
        .await
        .expect("tenant");
    assert_eq!(state, "disconnected");
    eventually(Duration::from_secs(20), "incidents closed as offboarded", || async {
        (count(
            &prioritizer,
            "SELECT count(*) FROM incidents WHERE tenant_id = $1 AND state IN ('open', 'awaiting_fix', 'muted')",
            &tenant_id,
        )
        .await
            == 0)
            .then_some(())
    })
    .await;
    let queued = count(
        &prioritizer,
        "SELECT count(*) FROM recommendations WHERE tenant_id = $1 AND standing <> 'idle'",
        &tenant_id,
    )
    .await;
    assert_eq!(queued, 0, "the tenant's queue is empty");
    assert_eq!(visible().await, 0, "the customer's access ended");

    picket.retention_passes(&started.offboarding_id).await;
    let completed = picket
        .wait_for_state(
            &started.offboarding_id,
            offboarding::OffboardingState::Completed,
        )
        .await;
    let certificate = picket
        .offboardings()
        .await
        .get_deletion_certificate(picket.env.request(
            &picket.token(),
            offboarding::GetDeletionCertificateRequest {
                offboarding_id: completed.offboarding_id.clone(),
                format: offboarding::CertificateFormat::Markdown.into(),
                ..Default::default()
            },
        ))
        .await
        .expect("certificate")
        .into_inner();
    let proof = certificate.certificate.expect("certificate");
    let services: Vec<&str> = proof
        .services
        .iter()
        .map(|service| service.service.as_str())
        .collect();
    assert_eq!(services, ["notifier", "prioritizer", "scanner"]);
    assert!(proof.total_rows > 0);
    assert_eq!(proof.sha256.len(), 64);
    assert!(proof.retained.iter().any(|kept| kept.service == "ledger"));
    let markdown = String::from_utf8(certificate.document).expect("UTF-8");
    assert!(markdown.contains("scanner.tenants"), "{markdown}");
    assert_eq!(certificate.content_type, "text/markdown");

    // After the purge no table of any service names the tenant, but for the proof of deletion,
    // the ledger's financial records and the partner's offboarding notices.
    eventually(Duration::from_secs(20), "every outbox relayed", || async {
        let mut left = 0;
        for schema in ["scanner", "prioritizer", "notifier", "offboarding"] {
            let pool = picket.env.pool(schema).await;
            left += count(
                &pool,
                "SELECT count(*) FROM outbox WHERE subject LIKE '%' || $1 || '%'",
                &tenant_id,
            )
            .await;
        }
        (left == 0).then_some(())
    })
    .await;
    for schema in ["scanner", "prioritizer"] {
        assert_eq!(
            picket.rows_naming(schema, &tenant_id).await,
            [],
            "{schema} keeps nothing of the tenant"
        );
    }
    let notifier = picket.env.pool(notifier::SERVICE).await;
    let notices: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT event_type FROM deliveries WHERE tenant_id = $1 ORDER BY 1",
    )
    .bind(&tenant_id)
    .fetch_all(&notifier)
    .await
    .expect("deliveries");
    assert!(
        notices
            .iter()
            .all(|notice| notice.starts_with("offboarding.")),
        "only the offboarding's notices are kept: {notices:?}"
    );
    let notifier_rows = picket.rows_naming("notifier", &tenant_id).await;
    assert!(
        notifier_rows.iter().all(|(table, _)| table == "deliveries"),
        "{notifier_rows:?}"
    );
    assert_eq!(
        picket.rows_naming("offboarding", &tenant_id).await,
        [
            ("certificates".to_owned(), 1),
            ("offboardings".to_owned(), 1),
            ("progress".to_owned(), 0)
        ]
        .into_iter()
        .filter(|(_, count)| *count > 0)
        .collect::<Vec<_>>()
    );
    assert_eq!(
        picket.rows_naming("ledger", &tenant_id).await,
        [("engagements".to_owned(), 1)]
    );
    // The other tenant keeps everything.
    let others: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tenants WHERE tenant_id = $1::uuid AND state = 'active'",
    )
    .bind(&kept)
    .fetch_one(&scanner)
    .await
    .expect("count");
    assert_eq!(others, 1);
    // The partner heard that removal was scheduled, then done.
    eventually(
        Duration::from_secs(20),
        "the offboarding notices",
        || async {
            let types: Vec<String> = picket
                .receiver
                .received()
                .iter()
                .map(|webhook| {
                    webhook.json()["type"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned()
                })
                .collect();
            (types.iter().any(|kind| kind == "offboarding.scheduled")
                && types.iter().any(|kind| kind == "offboarding.completed"))
            .then_some(())
        },
    )
    .await;
    picket.env.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancel_before_the_purge_gives_the_tenant_back() {
    let picket = Picket::start().await;
    let microsoft = picket.sim.tenant_ids();
    let tenant_id = picket.connect(&microsoft[0]).await;
    let started = picket.offboard(&tenant_id).await;
    picket
        .wait_for_state(
            &started.offboarding_id,
            offboarding::OffboardingState::Scheduled,
        )
        .await;
    let cancelled = picket
        .offboardings()
        .await
        .cancel_offboarding(picket.env.request(
            &picket.token(),
            offboarding::CancelOffboardingRequest {
                offboarding_id: started.offboarding_id.clone(),
                reason: "The customer renewed".into(),
            },
        ))
        .await
        .expect("cancelled")
        .into_inner();
    assert!(cancelled.consent_required, "its tokens were dropped");
    assert_eq!(
        cancelled.offboarding.expect("offboarding").state(),
        offboarding::OffboardingState::Cancelled
    );
    // The purge never comes, even once the retention passes.
    picket.retention_passes(&started.offboarding_id).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let scanner = picket.env.pool(scanner::SERVICE).await;
    let tenants: i64 =
        sqlx::query_scalar("SELECT count(*) FROM tenants WHERE tenant_id = $1::uuid")
            .bind(&tenant_id)
            .fetch_one(&scanner)
            .await
            .expect("count");
    assert_eq!(tenants, 1, "nothing was purged");
    // The prioritizer and the notifier take the tenant back.
    let prioritizer = picket.env.pool(prioritizer::SERVICE).await;
    let notifier = picket.env.pool(notifier::SERVICE).await;
    eventually(Duration::from_secs(20), "the tenant taken back", || async {
        let marked = count(
            &prioritizer,
            "SELECT count(*) FROM tenants WHERE tenant_id = $1 AND offboarding_id IS NOT NULL",
            &tenant_id,
        )
        .await
            + count(
                &notifier,
                "SELECT count(*) FROM offboarded_tenants WHERE tenant_id = $1",
                &tenant_id,
            )
            .await;
        (marked == 0).then_some(())
    })
    .await;
    // A cancelled offboarding cannot be cancelled again; a new one can start.
    let refused = picket
        .offboardings()
        .await
        .cancel_offboarding(picket.env.request(
            &picket.token(),
            offboarding::CancelOffboardingRequest {
                offboarding_id: started.offboarding_id.clone(),
                reason: String::new(),
            },
        ))
        .await
        .expect_err("already cancelled");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    let again = picket.offboard(&tenant_id).await;
    assert_ne!(again.offboarding_id, started.offboarding_id);
    // Another partner can neither see nor offboard the tenant.
    let stranger = picket
        .offboardings()
        .await
        .offboard_tenant(picket.env.request(
            &picket.env.partner_token("p2"),
            offboarding::OffboardTenantRequest {
                partner_id: "p2".into(),
                tenant_id: tenant_id.clone(),
                reason: "mine now".into(),
                retention: None,
            },
        ))
        .await
        .expect_err("not p2's tenant");
    assert_eq!(stranger.code(), tonic::Code::NotFound);
    picket.env.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_a_late_confirmation_and_a_repeated_purge_request_lose_and_double_nothing() {
    let mut picket = Picket::start().await;
    let microsoft = picket.sim.tenant_ids();
    let tenant_id = picket.connect(&microsoft[0]).await;
    let started = picket.offboard(&tenant_id).await;
    picket
        .wait_for_state(
            &started.offboarding_id,
            offboarding::OffboardingState::Scheduled,
        )
        .await;
    // The offboarding service crashes while the removal is scheduled, and comes back.
    picket.offboarding.take().expect("running").kill();
    picket.retention_passes(&started.offboarding_id).await;
    // The notifier is down when the purge is asked for: it confirms late.
    picket.notifier.take().expect("running").kill();
    picket.offboarding = Some(start_offboarding(&picket.env, OFFBOARDING_TOML).await);
    let waiting = eventually(
        Duration::from_secs(30),
        "the notifier asked again",
        || async {
            let offboarding = picket
                .offboardings()
                .await
                .get_offboarding(picket.env.request(
                    &picket.token(),
                    offboarding::GetOffboardingRequest {
                        offboarding_id: started.offboarding_id.clone(),
                    },
                ))
                .await
                .expect("readable")
                .into_inner()
                .offboarding
                .expect("offboarding");
            let notifier = offboarding.progress.iter().find(|step| {
                step.service == "notifier" && step.step() == offboarding::OffboardingStep::Purge
            })?;
            (notifier.request_count >= 2).then_some(offboarding)
        },
    )
    .await;
    assert_eq!(waiting.state(), offboarding::OffboardingState::Purging);
    assert_eq!(waiting.waiting_for, ["notifier"]);
    // Meanwhile a service confirms the notifier's purge on its own subject (the only one NATS
    // lets it publish a confirmation on): the offboarding service believes the subject, not the
    // payload, and sets the forgery aside.
    let mut dead_letters = picket
        .env
        .nats
        .subscribe(picket.env.subjects.dead_letter_subject("offboarding"))
        .await
        .expect("subscribe");
    let forged = offboarding::PurgeCompleted {
        partner_id: PARTNER.into(),
        tenant_id: tenant_id.clone(),
        offboarding_id: started.offboarding_id.clone(),
        service: "notifier".into(),
        attempt: 1,
        ..Default::default()
    };
    let mut forgery = picket_platform::nats::OutgoingEvent::new(
        &picket.env.subjects,
        "notifier",
        &forged,
        chrono::Utc::now(),
    )
    .expect("valid ids");
    forgery.subject = picket
        .env
        .subjects
        .purge_confirmation_subject("scanner", PARTNER, &tenant_id)
        .expect("valid ids");
    picket.env.publish_outgoing(&forgery).await;
    let set_aside = tokio::time::timeout(
        Duration::from_secs(20),
        futures::StreamExt::next(&mut dead_letters),
    )
    .await
    .expect("the forgery is dead-lettered")
    .expect("a message");
    assert!(
        picket_testkit::dead_letter_reason(&set_aside)
            .contains("a purge confirmation for notifier published on purge_completed_by_scanner"),
        "{}",
        picket_testkit::dead_letter_reason(&set_aside)
    );
    let still_waiting = picket
        .wait_for_state(
            &started.offboarding_id,
            offboarding::OffboardingState::Purging,
        )
        .await;
    assert_eq!(still_waiting.waiting_for, ["notifier"]);
    picket.notifier = Some(start_notifier(&picket.env, "").await);
    let completed = picket
        .wait_for_state(
            &started.offboarding_id,
            offboarding::OffboardingState::Completed,
        )
        .await;
    let certificate = picket
        .offboardings()
        .await
        .get_deletion_certificate(picket.env.request(
            &picket.token(),
            offboarding::GetDeletionCertificateRequest {
                certificate_id: completed.certificate_id.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("certificate")
        .into_inner()
        .certificate
        .expect("certificate");
    let scanner_rows = certificate
        .services
        .iter()
        .find(|service| service.service == "scanner")
        .expect("scanner")
        .total_rows;
    assert!(scanner_rows > 0);

    // A PurgeRequested sent again, as to a service that did not answer, gets the original
    // report: nothing more deleted, the same counts.
    let mut answers = picket
        .env
        .nats
        .subscribe(format!(
            "{}.offboarding.v1.purge_completed_by_scanner.{PARTNER}.{tenant_id}",
            picket.env.namespace
        ))
        .await
        .expect("subscribe");
    let repeated = offboarding::PurgeRequested {
        partner_id: PARTNER.into(),
        tenant_id: tenant_id.clone(),
        offboarding_id: started.offboarding_id.clone(),
        services: vec!["scanner".into()],
        attempt: 9,
        ..Default::default()
    };
    let sent = picket.env.publish("/picket/offboarding", &repeated).await;
    // And the very same event redelivered is applied once.
    picket.env.publish_outgoing(&sent).await;
    let answer = tokio::time::timeout(
        Duration::from_secs(20),
        futures::StreamExt::next(&mut answers),
    )
    .await
    .expect("answered in time")
    .expect("a message");
    let answer: offboarding::PurgeCompleted =
        prost::Message::decode(answer.payload).expect("decodes");
    assert_eq!(answer.attempt, 9);
    assert_eq!(answer.total_rows, scanner_rows, "the original report");
    assert!(
        tokio::time::timeout(
            Duration::from_secs(1),
            futures::StreamExt::next(&mut answers)
        )
        .await
        .is_err(),
        "one answer for one request, however often it is delivered"
    );
    assert_eq!(picket.rows_naming("scanner", &tenant_id).await, []);
    picket.env.teardown().await;
}
