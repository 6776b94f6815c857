//! The prioritizer under test: in-process, on its own database and subjects, on a clock the test
//! moves, with gRPC clients, a recorder of the events it publishes, and finding builders.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use picket_platform::Application;
use picket_platform::nats::InboundEvent;
use picket_platform::time::to_timestamp;
use picket_proto::Event;
use picket_proto::common::v1::{FindingKind, Severity};
use picket_proto::findings::v1::{FindingCleared, FindingObserved};
use picket_proto::incidents::v1 as incidents;
use picket_proto::incidents::v1::incident_service_client::IncidentServiceClient;
use picket_proto::incidents::v1::policy_service_client::PolicyServiceClient;
use picket_testkit::{TestEnv, eventually};
use prioritizer::Clock;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

pub const PARTNER: &str = "p1";
pub const TENANT: &str = "t1";
pub const WAIT: Duration = Duration::from_secs(20);

pub struct Harness {
    pub env: TestEnv,
    pub app: Application,
    pub clock: Clock,
    pub incidents: IncidentServiceClient<Channel>,
    pub policies: PolicyServiceClient<Channel>,
    pub pool: sqlx::PgPool,
    events: Arc<Mutex<Vec<InboundEvent>>>,
}

pub async fn harness() -> Harness {
    let env = TestEnv::new().await;
    let (platform, own) = env.settings(
        prioritizer::SERVICE,
        prioritizer::DEFAULTS,
        "[prioritizer]\ntick = \"100ms\"\n[nats]\nlanes = 8\n",
    );
    let clock = Clock::default();
    let events = Arc::new(Mutex::new(Vec::new()));
    for area in ["incidents", "fixes"] {
        let mut subscriber = env
            .nats
            .subscribe(format!("{}.{area}.v1.>", env.namespace))
            .await
            .expect("subscribe");
        let subjects = env.subjects.clone();
        let events = events.clone();
        tokio::spawn(async move {
            while let Some(message) = subscriber.next().await {
                if let Ok(event) = InboundEvent::parse(
                    &subjects,
                    &message.subject,
                    message.headers.as_ref(),
                    message.payload.clone(),
                    1,
                ) {
                    events.lock().expect("events").push(event);
                }
            }
        });
    }
    let app = prioritizer::build_with_clock(platform, own, CancellationToken::new(), clock.clone())
        .await
        .expect("prioritizer starts");
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", app.grpc_address()))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let pool = env.pool("prioritizer").await;
    Harness {
        incidents: IncidentServiceClient::new(channel.clone()),
        policies: PolicyServiceClient::new(channel),
        env,
        app,
        clock,
        pool,
        events,
    }
}

/// A configuration finding of `theme` (identity-mfa is launched for a new tenant, admin-accounts
/// is the second theme).
pub fn recommendation(fingerprint: &str, severity: Severity, theme: &str) -> FindingObserved {
    FindingObserved {
        partner_id: PARTNER.into(),
        tenant_id: TENANT.into(),
        fingerprint: fingerprint.into(),
        check_id: format!("aad.check-{fingerprint}"),
        kind: FindingKind::Configuration.into(),
        severity: severity.into(),
        title: format!("Recommendation {fingerprint}"),
        description: "a weak setting".into(),
        target: "tenant".into(),
        theme: theme.into(),
        recommended_fix: "change the setting".into(),
        observed_at: Some(to_timestamp(chrono::Utc::now())),
        scan_id: "scan-1".into(),
        fix_action: picket_proto::fixes::v1::FixAction::UpdateSetting.into(),
        fix_parameters: [("settingPath".to_owned(), "/policy".to_owned())].into(),
        ..Default::default()
    }
}

/// Suspicious behaviour: always opens an incident.
pub fn suspicion(fingerprint: &str, severity: Severity) -> FindingObserved {
    FindingObserved {
        kind: FindingKind::Monitoring.into(),
        theme: "suspicious-activity".into(),
        check_id: "mon.impossible-travel".into(),
        ..recommendation(fingerprint, severity, "suspicious-activity")
    }
}

pub fn cleared(fingerprint: &str) -> FindingCleared {
    FindingCleared {
        partner_id: PARTNER.into(),
        tenant_id: TENANT.into(),
        fingerprint: fingerprint.into(),
        check_id: format!("aad.check-{fingerprint}"),
        cleared_at: Some(to_timestamp(chrono::Utc::now())),
        scan_id: "scan-2".into(),
        ..Default::default()
    }
}

impl Harness {
    pub fn partner(&self) -> String {
        self.env.partner_token(PARTNER)
    }

    pub async fn publish<E: Event>(&self, event: &E) {
        self.env.publish("scanner", event).await;
    }

    /// Every incident of the tenant, newest first.
    pub async fn all_incidents(&self) -> Vec<incidents::Incident> {
        let request = incidents::ListIncidentsRequest {
            partner_id: PARTNER.into(),
            page_size: 500,
            ..Default::default()
        };
        self.incidents
            .clone()
            .list_incidents(self.env.request(&self.partner(), request))
            .await
            .expect("list incidents")
            .into_inner()
            .incidents
    }

    /// Waits for the newest incident of `fingerprint` to be in `state`.
    pub async fn incident(
        &self,
        fingerprint: &str,
        state: incidents::IncidentState,
    ) -> incidents::Incident {
        eventually(
            WAIT,
            &format!("incident of {fingerprint} in state {state:?}"),
            || async {
                self.all_incidents()
                    .await
                    .into_iter()
                    .find(|incident| incident.fingerprint == fingerprint)
                    .filter(|incident| incident.state == i32::from(state))
            },
        )
        .await
    }

    pub async fn incident_count(&self, fingerprint: &str) -> usize {
        self.all_incidents()
            .await
            .iter()
            .filter(|incident| incident.fingerprint == fingerprint)
            .count()
    }

    pub async fn recommendations(&self) -> Vec<incidents::Recommendation> {
        let request = incidents::ListRecommendationsRequest {
            partner_id: PARTNER.into(),
            tenant_id: TENANT.into(),
            ..Default::default()
        };
        self.incidents
            .clone()
            .list_recommendations(self.env.request(&self.partner(), request))
            .await
            .expect("list recommendations")
            .into_inner()
            .recommendations
    }

    /// Waits for the recommendation `fingerprint` to be in `state`.
    pub async fn recommendation(
        &self,
        fingerprint: &str,
        state: incidents::RecommendationState,
    ) -> incidents::Recommendation {
        eventually(
            WAIT,
            &format!("recommendation {fingerprint} in state {state:?}"),
            || async {
                self.recommendations()
                    .await
                    .into_iter()
                    .find(|recommendation| recommendation.fingerprint == fingerprint)
                    .filter(|recommendation| recommendation.state == i32::from(state))
            },
        )
        .await
    }

    pub async fn timeline(&self, incident_id: &str) -> Vec<incidents::TimelineEntry> {
        let request = incidents::GetTimelineRequest {
            incident_id: incident_id.into(),
            ..Default::default()
        };
        self.incidents
            .clone()
            .get_timeline(self.env.request(&self.partner(), request))
            .await
            .expect("timeline")
            .into_inner()
            .entries
    }

    /// Published events of type `E` that match `keep`.
    pub fn events<E: Event + Default>(&self, keep: impl Fn(&E) -> bool) -> Vec<E> {
        self.events
            .lock()
            .expect("events")
            .iter()
            .filter(|event| event.event_type == E::full_name())
            .filter_map(|event| event.decode::<E>().ok())
            .filter(|event| keep(event))
            .collect()
    }

    /// Waits for an event of type `E` that matches `keep`.
    pub async fn event<E: Event + Default>(&self, what: &str, keep: impl Fn(&E) -> bool) -> E {
        eventually(WAIT, what, || async {
            self.events::<E>(&keep).into_iter().next()
        })
        .await
    }

    /// Moves the clock forward and lets the timers run.
    pub async fn advance(&self, by: chrono::Duration) {
        self.clock.advance(by);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    pub async fn stop(self) {
        self.app.shutdown().await;
        self.env.teardown().await;
    }
}
