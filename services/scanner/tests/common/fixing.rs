//! Watching what the scanner publishes, and a scanner with one connected tenant whose findings
//! fixes can be requested for.

use std::time::Duration;

use futures::StreamExt;
use graph_sim::{GraphSim, Profile, SimConfig};
use picket_proto::findings::v1 as findings;
use picket_proto::fixes::v1 as fixes;
use picket_proto::tenants::v1 as tenants;
use prost::Message;

use super::{Harness, harness_with};

pub const PARTNER: &str = "p1";
/// How long a requested fix may take to be applied or refused.
const FIX_WAIT: Duration = Duration::from_secs(30);

/// Collects the events of one kind published under the test's namespace.
pub struct Events<E> {
    subscription: async_nats::Subscriber,
    seen: Vec<E>,
}

impl<E: Message + Default> Events<E> {
    pub async fn subscribe(harness: &Harness, area_and_event: &str) -> Events<E> {
        let subscription = harness
            .env
            .nats
            .subscribe(format!("{}.{area_and_event}.>", harness.env.namespace))
            .await
            .expect("subscribe");
        Events {
            subscription,
            seen: Vec::new(),
        }
    }

    /// Reads what arrived until `quiet` passes without a new event.
    pub async fn drain(&mut self, quiet: Duration) -> &[E] {
        while let Ok(Some(message)) = tokio::time::timeout(quiet, self.subscription.next()).await {
            self.seen
                .push(E::decode(message.payload).expect("events are protobuf"));
        }
        &self.seen
    }
}

impl Events<findings::FindingObserved> {
    /// The `key` evidence of each finding of `check_id` published so far (empty where a finding
    /// has none).
    pub async fn evidence(&mut self, check_id: &str, key: &str) -> Vec<String> {
        self.drain(Duration::from_secs(2))
            .await
            .iter()
            .filter(|finding| finding.check_id == check_id)
            .map(|finding| finding.evidence.get(key).cloned().unwrap_or_default())
            .collect()
    }
}

pub fn outcome(result: &tenants::CheckResult) -> tenants::CheckOutcome {
    tenants::CheckOutcome::try_from(result.outcome).unwrap_or_default()
}

pub async fn connect_with_profile(
    harness: &mut Harness,
    index: usize,
    profile: Profile,
    plan: tenants::SubscriptionPlan,
) -> String {
    let microsoft_tenant = harness.sim.tenant_ids()[index].clone();
    harness.sim.reset_tenant(&microsoft_tenant, profile);
    harness.connect(PARTNER, &microsoft_tenant, plan).await
}

pub fn fix_for(finding: &findings::FindingObserved, fix_id: &str) -> fixes::FixRequested {
    fixes::FixRequested {
        partner_id: finding.partner_id.clone(),
        tenant_id: finding.tenant_id.clone(),
        fix_id: fix_id.into(),
        incident_id: format!("incident-{fix_id}"),
        fingerprint: finding.fingerprint.clone(),
        check_id: finding.check_id.clone(),
        target: finding.target.clone(),
        target_id: finding.target_id.clone(),
        action: finding.fix_action,
        parameters: finding.fix_parameters.clone(),
        recommended_fix: finding.recommended_fix.clone(),
        requested_at: Some(picket_platform::time::to_timestamp(chrono::Utc::now())),
        severity: finding.severity,
        kind: finding.kind,
        ..Default::default()
    }
}

pub struct FixHarness {
    pub harness: Harness,
    pub microsoft_tenant: String,
    pub tenant_id: String,
    /// The findings of the onboarding scan.
    pub findings: Vec<findings::FindingObserved>,
    /// Every finding observed since the harness started.
    pub observed: Events<findings::FindingObserved>,
    pub applied: Events<fixes::FixApplied>,
    pub failed: Events<fixes::FixFailed>,
}

impl FixHarness {
    pub async fn start(profile: Profile) -> FixHarness {
        FixHarness::start_granting(profile, None).await
    }

    /// As [`FixHarness::start`], the tenant granting Picket's app only `granted` where given.
    pub async fn start_granting(profile: Profile, granted: Option<&[String]>) -> FixHarness {
        FixHarness::start_prepared(profile, granted, |_, _| {}).await
    }

    /// As [`FixHarness::start_granting`], `prepare` changing the tenant (by its Microsoft id)
    /// after the profile built it and before Picket connects.
    pub async fn start_prepared(
        profile: Profile,
        granted: Option<&[String]>,
        prepare: impl FnOnce(&GraphSim, &str),
    ) -> FixHarness {
        let mut harness = harness_with(SimConfig::default(), "").await;
        let mut observed = Events::<findings::FindingObserved>::subscribe(
            &harness,
            "findings.v1.finding_observed",
        )
        .await;
        let applied = Events::subscribe(&harness, "fixes.v1.fix_applied").await;
        let failed = Events::subscribe(&harness, "fixes.v1.fix_failed").await;
        let microsoft_tenant = harness.sim.tenant_ids()[0].clone();
        if let Some(granted) = granted {
            let names: Vec<&str> = granted.iter().map(String::as_str).collect();
            harness.sim.grant_permissions(&microsoft_tenant, &names);
        }
        harness.sim.reset_tenant(&microsoft_tenant, profile);
        prepare(&harness.sim, &microsoft_tenant);
        let tenant_id = harness
            .connect(
                PARTNER,
                &microsoft_tenant,
                tenants::SubscriptionPlan::Premium,
            )
            .await;
        harness.settled_scans(PARTNER, &tenant_id).await;
        let findings = observed.drain(Duration::from_secs(3)).await.to_vec();
        FixHarness {
            harness,
            microsoft_tenant,
            tenant_id,
            findings,
            observed,
            applied,
            failed,
        }
    }

    pub fn finding(&self, check_id: &str, target_contains: &str) -> findings::FindingObserved {
        self.findings
            .iter()
            .find(|finding| {
                finding.check_id == check_id && finding.target.contains(target_contains)
            })
            .unwrap_or_else(|| panic!("a finding of {check_id} on {target_contains}"))
            .clone()
    }

    pub async fn request(&self, fix: &fixes::FixRequested) {
        self.harness.env.publish("prioritizer", fix).await;
    }

    /// The FixApplied of `fix_id`, within [`FIX_WAIT`]; a FixFailed for it fails the test.
    pub async fn applied(&mut self, fix_id: &str) -> fixes::FixApplied {
        let wait = async {
            loop {
                let seen = self.applied.drain(Duration::from_millis(500)).await;
                if let Some(found) = seen.iter().find(|event| event.fix_id == fix_id) {
                    return found.clone();
                }
                let failed = self.failed.drain(Duration::from_millis(10)).await;
                if let Some(failure) = failed.iter().find(|event| event.fix_id == fix_id) {
                    panic!("the fix failed: {failure:?}");
                }
            }
        };
        tokio::time::timeout(FIX_WAIT, wait)
            .await
            .unwrap_or_else(|_| panic!("fix {fix_id} not applied within {FIX_WAIT:?}"))
    }

    /// The FixFailed of `fix_id`, within [`FIX_WAIT`].
    pub async fn failed(&mut self, fix_id: &str) -> fixes::FixFailed {
        let wait = async {
            loop {
                let seen = self.failed.drain(Duration::from_millis(500)).await;
                if let Some(found) = seen.iter().find(|event| event.fix_id == fix_id) {
                    return found.clone();
                }
            }
        };
        tokio::time::timeout(FIX_WAIT, wait)
            .await
            .unwrap_or_else(|_| panic!("fix {fix_id} not refused within {FIX_WAIT:?}"))
    }
}
