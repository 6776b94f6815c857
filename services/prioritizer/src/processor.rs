//! Carries out the policy: each command (a finding, a decision, a fix result, a timer) runs the
//! pure engine on its tenant's state, and its effects become incidents, timeline entries and
//! events. Commands are applied in batches, one transaction per batch: the tenants' rows are locked
//! in key order, every table is written with one statement, and the events go through the outbox.
//! A tenant's recommendations are cached between batches while the tenant's row version matches.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use picket_platform::EventFactory;
use picket_platform::db::group_commit::BatchApplier;
use picket_platform::db::{inbox, outbox};
use picket_platform::nats::OutgoingEvent;
use picket_platform::time::{to_duration, to_timestamp};
use picket_proto::Event;
use picket_proto::common::v1 as common;
use picket_proto::fixes::v1 as fixes;
use picket_proto::incidents::v1 as incidents;
use sqlx::{PgConnection, PgPool};
use tracing::Instrument;
use uuid::Uuid;

use crate::authority;
use crate::clock::Clock;
use crate::engine::{self, Closure, Effect, Input, Refusal, Rules, Standing, TenantState};
use crate::escalation::Escalation;
use crate::model::{DecisionKind, IncidentState, Kind, Origin, Resolution, Severity};
use crate::settings::PrioritizerSettings;
use crate::store::{
    self, AutoApproveRuleRow, Changes, DecisionRow, IncidentRow, PartnerPolicyRow,
    RecommendationRow, TenantKey, TenantRow, ThemeLaunchRow, TimelineRow,
};
use crate::themes::Themes;

const SERVICE: &str = crate::SERVICE;

/// Tenants whose recommendations stay cached between batches.
const MAX_CACHED_TENANTS: usize = 20_000;

/// A finding as observed by the scanner, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub fingerprint: String,
    pub check_id: String,
    pub kind: Kind,
    pub severity: Severity,
    pub title: String,
    pub description: String,
    pub target: String,
    pub target_type: String,
    pub target_id: String,
    pub theme: String,
    pub theme_order: u32,
    pub recommended_fix: String,
    pub fix_action: i32,
    pub fix_parameters: HashMap<String, String>,
    pub evidence: HashMap<String, String>,
    pub scan_id: String,
    pub observed_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decide {
    pub incident_id: Uuid,
    pub kind: DecisionKind,
    pub actor: common::Actor,
    pub comment: String,
    /// 0: do not check.
    pub expected_version: u64,
    /// What allowed the decision (authority-map rule or auto-approve rule).
    pub authority_basis: String,
    pub auto_approve_rule_id: Option<Uuid>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Observed(Box<Finding>),
    Cleared {
        fingerprint: String,
        scan_id: String,
    },
    /// The tenant was onboarded: it starts with the first theme.
    Onboarded,
    /// Launches the next theme; a scheduled launch is skipped when the tenant launched one since
    /// `scheduled_for` (another replica, or a launch by hand).
    LaunchTheme {
        actor: common::Actor,
        scheduled_for: Option<DateTime<Utc>>,
    },
    /// Time passed: mutes may have expired.
    Tick,
    Decide(Decide),
    OpenByHand {
        fingerprint: String,
        override_reason: Option<String>,
        actor: common::Actor,
    },
    FixApplied {
        incident_id: Uuid,
        fix_id: Uuid,
        summary: String,
    },
    FixFailed {
        incident_id: Uuid,
        fix_id: Uuid,
        reason: i32,
        detail: String,
    },
    Escalate {
        incident_id: Uuid,
    },
    /// The tenant is being offboarded: its incidents close as offboarded, its queue empties, and
    /// nothing else applies to it until the offboarding is cancelled.
    Offboarded {
        offboarding_id: Uuid,
    },
    /// Its offboarding was cancelled: the tenant is the partner's again.
    OffboardingCancelled {
        offboarding_id: Uuid,
    },
}

impl Command {
    /// Whether the command applies to a tenant being offboarded.
    fn applies_while_offboarded(&self) -> bool {
        matches!(
            self,
            Command::Offboarded { .. } | Command::OffboardingCancelled { .. }
        )
    }

    /// Whether the command comes from the scanner's events, which make a tenant known.
    fn introduces_tenant(&self) -> bool {
        matches!(
            self,
            Command::Observed(_) | Command::Cleared { .. } | Command::Onboarded
        )
    }
}

/// A command for one tenant, with the consumer and id of the event it came from (an event is
/// applied once per consumer) and the span it was asked in: the events it causes continue that
/// trace, whichever batch applies it.
#[derive(Debug, Clone)]
pub struct Job {
    pub key: TenantKey,
    pub command: Command,
    pub inbox: Option<(&'static str, String)>,
    pub span: tracing::Span,
}

impl Job {
    /// A command asked for in the current span.
    pub fn new(key: TenantKey, command: Command) -> Job {
        Job {
            key,
            command,
            inbox: None,
            span: tracing::Span::current(),
        }
    }

    /// A command applying the consumed event `event_id`.
    pub fn consumed(
        key: TenantKey,
        command: Command,
        consumer: &'static str,
        event_id: &str,
    ) -> Job {
        Job {
            inbox: Some((consumer, event_id.to_owned())),
            ..Job::new(key, command)
        }
    }
}

/// What a caller learns of its command.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reply {
    pub incident: Option<incidents::Incident>,
    pub decision: Option<incidents::Decision>,
    pub recommendation: Option<incidents::Recommendation>,
    /// OpenByHand: false when an incident was already open and is returned instead.
    pub created: bool,
    pub launch: Option<incidents::ThemeLaunch>,
}

/// Why a command was not applied; nothing was written for it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refused {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Applied(Box<Reply>),
    Refused(Refused),
    /// The event was applied before.
    Duplicate,
}

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("event: {0}")]
    Event(String),
}

/// A partner's settings in force.
#[derive(Debug, Clone, PartialEq)]
pub struct EffectivePolicy {
    pub cap: u32,
    pub time_zone: Tz,
    pub theme_launch_hour: u32,
    pub correlation_window: chrono::Duration,
}

impl EffectivePolicy {
    pub fn of(row: Option<&PartnerPolicyRow>, settings: &PrioritizerSettings) -> EffectivePolicy {
        let default_zone = settings.time_zone.parse().unwrap_or(Tz::UTC);
        let default_window =
            chrono::Duration::from_std(settings.correlation_window).unwrap_or_default();
        match row {
            None => EffectivePolicy {
                cap: settings.max_open_configuration_incidents,
                time_zone: default_zone,
                theme_launch_hour: settings.theme_launch_hour,
                correlation_window: default_window,
            },
            Some(row) => EffectivePolicy {
                cap: u32::try_from(row.max_open_configuration_incidents).unwrap_or(1),
                time_zone: row.time_zone.parse().unwrap_or(default_zone),
                theme_launch_hour: u32::try_from(row.theme_launch_hour).unwrap_or_default(),
                correlation_window: chrono::Duration::seconds(row.correlation_window_seconds),
            },
        }
    }

    fn rules(&self, settings: &PrioritizerSettings) -> Rules {
        Rules {
            cap: self.cap as usize,
            mute_for: chrono::Duration::from_std(settings.mute_duration).unwrap_or_default(),
            correlation_window: self.correlation_window,
        }
    }
}

struct Cached {
    version: i64,
    recommendations: BTreeMap<String, RecommendationRow>,
    state: TenantState,
}

/// A tenant's rows and engine state as a batch leaves them.
type Kept = (
    TenantKey,
    i64,
    BTreeMap<String, RecommendationRow>,
    TenantState,
);

pub struct Processor {
    pool: PgPool,
    events: EventFactory,
    clock: Clock,
    themes: Themes,
    /// The standard authority map, in force where a partner has not deviated from it.
    standard: Arc<incidents::AuthorityMap>,
    settings: PrioritizerSettings,
    cache: Mutex<HashMap<TenantKey, Cached>>,
}

pub fn system_actor() -> common::Actor {
    common::Actor {
        kind: common::ActorKind::System.into(),
        service: SERVICE.into(),
        ..Default::default()
    }
}

pub fn rule_actor(rule_id: Uuid) -> common::Actor {
    common::Actor {
        kind: common::ActorKind::Rule.into(),
        rule_id: rule_id.to_string(),
        ..Default::default()
    }
}

impl Processor {
    pub fn new(
        pool: PgPool,
        events: EventFactory,
        clock: Clock,
        themes: Themes,
        settings: PrioritizerSettings,
    ) -> Processor {
        Processor {
            pool,
            events,
            clock,
            themes,
            standard: Arc::new(authority::standard::standard_map(&Escalation::standard(
                &settings,
            ))),
            settings,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn standard_map(&self) -> &incidents::AuthorityMap {
        &self.standard
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    pub fn themes(&self) -> &Themes {
        &self.themes
    }

    pub fn settings(&self) -> &PrioritizerSettings {
        &self.settings
    }

    /// Applies one command on its own.
    pub async fn run_one(&self, job: Job) -> Result<Outcome, ProcessError> {
        let mut outcomes = self.run(vec![job]).await?;
        Ok(outcomes.pop().unwrap_or(Outcome::Duplicate))
    }

    /// Applies `jobs` in order in one transaction. Returns one outcome per job.
    pub async fn run(&self, jobs: Vec<Job>) -> Result<Vec<Outcome>, ProcessError> {
        let now = self.clock.now();
        let mut transaction = self.pool.begin().await?;
        let mut by_consumer: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (consumer, event_id) in jobs.iter().filter_map(|job| job.inbox.as_ref()) {
            by_consumer
                .entry(consumer)
                .or_default()
                .push(event_id.clone());
        }
        let mut first_deliveries: HashSet<(&str, String)> = HashSet::new();
        for (consumer, event_ids) in by_consumer {
            for event_id in inbox::first_deliveries(&mut transaction, consumer, &event_ids).await? {
                first_deliveries.insert((consumer, event_id));
            }
        }
        // Redeliveries of events applied before are answered as duplicates and touch nothing.
        let fresh: Vec<bool> = jobs
            .iter()
            .map(|job| match &job.inbox {
                Some((consumer, event_id)) => {
                    first_deliveries.contains(&(*consumer, event_id.clone()))
                }
                None => true,
            })
            .collect();
        let applied = || {
            jobs.iter()
                .zip(&fresh)
                .filter(|(_, fresh)| **fresh)
                .map(|(job, _)| job)
        };
        let mut keys: Vec<TenantKey> = applied().map(|job| job.key.clone()).collect();
        keys.sort();
        keys.dedup();
        // The scanner's events make a tenant known; a call about an unknown one is refused.
        let mut known_by_events: Vec<TenantKey> = applied()
            .filter(|job| job.command.introduces_tenant())
            .map(|job| job.key.clone())
            .collect();
        known_by_events.sort();
        known_by_events.dedup();
        let mut batch = Batch::load(self, &mut transaction, &known_by_events, &keys, now).await?;
        let mut outcomes = Vec::with_capacity(jobs.len());
        for (job, fresh) in jobs.into_iter().zip(fresh) {
            if !fresh {
                outcomes.push(Outcome::Duplicate);
                continue;
            }
            let span = job.span.clone();
            outcomes.push(batch.apply(&mut transaction, job).instrument(span).await?);
        }
        let (changes, events, cached) = batch.finish();
        changes.write(&mut transaction).await?;
        outbox::enqueue_all(&mut transaction, &events).await?;
        transaction.commit().await?;
        self.keep(cached);
        Ok(outcomes)
    }

    fn uncached(&self, keys: &[TenantKey]) -> Vec<TenantKey> {
        let cache = self
            .cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        keys.iter()
            .filter(|key| !cache.contains_key(key))
            .cloned()
            .collect()
    }

    fn take_cached(&self, locked: &[TenantRow]) -> HashMap<TenantKey, Cached> {
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        locked
            .iter()
            .filter_map(|row| {
                let key = row.key();
                let cached = cache.remove(&key)?;
                (cached.version == row.version).then_some((key, cached))
            })
            .collect()
    }

    fn keep(&self, tenants: Vec<Kept>) {
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if cache.len() + tenants.len() > MAX_CACHED_TENANTS {
            cache.clear();
        }
        for (key, version, recommendations, state) in tenants {
            let newer = cache
                .get(&key)
                .is_none_or(|cached| cached.version < version);
            if newer {
                cache.insert(
                    key,
                    Cached {
                        version,
                        recommendations,
                        state,
                    },
                );
            }
        }
    }
}

/// One tenant's state while a batch runs.
struct Tenant {
    row: TenantRow,
    recommendations: BTreeMap<String, RecommendationRow>,
    /// The engine's view of the rows, kept in step with them.
    state: TenantState,
    /// Fingerprints whose rows changed.
    dirty: HashSet<String>,
    policy: EffectivePolicy,
    /// The authority map in force: its escalation order and times.
    authority: Arc<incidents::AuthorityMap>,
}

impl Tenant {
    /// The engine's view of the rows (when they come from the database).
    fn engine_state(&self) -> TenantState {
        let mut state = TenantState {
            launched_themes: u32::try_from(self.row.launched_themes).unwrap_or_default(),
            ..TenantState::default()
        };
        for (fingerprint, row) in &self.recommendations {
            let standing = Standing::from_db(&row.standing);
            match row.kind() {
                Kind::Configuration => {
                    state.recommendations.insert(
                        fingerprint.clone(),
                        engine::Recommendation {
                            theme_order: u32::try_from(row.theme_order).unwrap_or_default(),
                            severity: row.severity(),
                            first_seen: row.first_observed_at,
                            failing: row.failing,
                            muted_until: row.muted_until,
                            ignored: row.ignored_at.is_some(),
                            standing,
                            by_hand: row.by_hand,
                        },
                    );
                }
                // Suspicious behaviour that never had an incident is new to the engine.
                Kind::Monitoring if row.incident_id.is_none() => {}
                Kind::Monitoring => {
                    state.suspicions.insert(
                        fingerprint.clone(),
                        engine::Suspicion {
                            open: matches!(standing, Standing::Open | Standing::AwaitingFix),
                            awaiting_fix: standing == Standing::AwaitingFix,
                            last_seen: row.last_observed_at,
                        },
                    );
                }
            }
        }
        state
    }

    /// Takes the engine's new state of the `changed` fingerprints into their rows; returns those
    /// whose mute ended.
    fn absorb(&mut self, now: DateTime<Utc>, changed: &BTreeSet<String>) -> Vec<String> {
        let mut mute_ended = Vec::new();
        self.row.launched_themes = i32::try_from(self.state.launched_themes).unwrap_or(i32::MAX);
        for fingerprint in changed {
            let Some(row) = self.recommendations.get_mut(fingerprint) else {
                continue;
            };
            let was_muted = row.muted_until.is_some();
            if absorb_row(&self.state, fingerprint, row, now) {
                if was_muted && row.muted_until.is_none() {
                    mute_ended.push(fingerprint.clone());
                }
                self.dirty.insert(fingerprint.clone());
            }
        }
        debug_assert!(
            self.recommendations.iter().all(|(fingerprint, row)| {
                !absorb_row(&self.state, fingerprint, &mut row.clone(), now)
            }),
            "the engine changed a recommendation it did not report"
        );
        mute_ended
    }

    fn recommendation(&self, fingerprint: &str) -> Result<&RecommendationRow, ProcessError> {
        self.recommendations
            .get(fingerprint)
            .ok_or_else(|| ProcessError::Event(format!("recommendation {fingerprint} vanished")))
    }

    /// Where a recommendation stands, for people.
    pub fn standing_of(
        &self,
        row: &RecommendationRow,
        now: DateTime<Utc>,
    ) -> incidents::RecommendationState {
        recommendation_state(row, self.row.launched_themes, now)
    }
}

/// Takes the engine's view of `fingerprint` into its row; whether the row changed.
fn absorb_row(
    state: &TenantState,
    fingerprint: &str,
    row: &mut RecommendationRow,
    now: DateTime<Utc>,
) -> bool {
    if let Some(recommendation) = state.recommendations.get(fingerprint) {
        absorb_recommendation(row, recommendation, now)
    } else if let Some(suspicion) = state.suspicions.get(fingerprint) {
        absorb_suspicion(row, suspicion)
    } else {
        false
    }
}

/// Takes the engine's view of a recommendation into its row; whether the row changed.
fn absorb_recommendation(
    row: &mut RecommendationRow,
    recommendation: &engine::Recommendation,
    now: DateTime<Utc>,
) -> bool {
    let ignored_at = match (recommendation.ignored, row.ignored_at) {
        (true, Some(at)) => Some(at),
        (true, None) => Some(now),
        (false, _) => None,
    };
    let queued_at = match (recommendation.standing, row.queued_at) {
        (Standing::Queued, Some(at)) => Some(at),
        (Standing::Queued, None) => Some(now),
        _ => None,
    };
    let standing = recommendation.standing.as_db();
    let unchanged = row.failing == recommendation.failing
        && row.first_observed_at == recommendation.first_seen
        && row.muted_until == recommendation.muted_until
        && row.ignored_at == ignored_at
        && row.by_hand == recommendation.by_hand
        && row.queued_at == queued_at
        && row.standing == standing;
    if !unchanged {
        row.failing = recommendation.failing;
        row.first_observed_at = recommendation.first_seen;
        row.muted_until = recommendation.muted_until;
        row.ignored_at = ignored_at;
        row.by_hand = recommendation.by_hand;
        row.queued_at = queued_at;
        row.standing = standing.to_owned();
    }
    !unchanged
}

/// Takes the engine's view of suspicious behaviour into its row; whether the row changed.
fn absorb_suspicion(row: &mut RecommendationRow, suspicion: &engine::Suspicion) -> bool {
    let standing = if suspicion.awaiting_fix {
        Standing::AwaitingFix
    } else if suspicion.open {
        Standing::Open
    } else {
        Standing::Idle
    };
    let unchanged = row.standing == standing.as_db() && row.last_observed_at == suspicion.last_seen;
    if !unchanged {
        row.standing = standing.as_db().to_owned();
        row.last_observed_at = suspicion.last_seen;
    }
    !unchanged
}

/// Where a recommendation stands, given the tenant's launched themes.
pub fn recommendation_state(
    row: &RecommendationRow,
    launched_themes: i32,
    now: DateTime<Utc>,
) -> incidents::RecommendationState {
    use incidents::RecommendationState as State;
    match Standing::from_db(&row.standing) {
        Standing::Open | Standing::AwaitingFix => State::InIncident,
        Standing::Queued => State::Queued,
        Standing::Idle if row.ignored_at.is_some() => State::Ignored,
        Standing::Idle if row.muted_until.is_some_and(|until| until > now) => State::Muted,
        Standing::Idle
            if row.kind() == Kind::Configuration && row.theme_order > launched_themes =>
        {
            State::ThemeNotLaunched
        }
        Standing::Idle => State::Eligible,
    }
}

/// What the engine is told, and who or what caused it.
struct Cause<'c> {
    actor: common::Actor,
    /// The fingerprint observed by this command, if any.
    observed: Option<&'c str>,
    manual: Option<String>,
    approval: Option<Approval>,
    scan_id: String,
    fix: Option<FixResult>,
}

#[derive(Clone)]
struct Approval {
    decision_id: Uuid,
    fix_id: Uuid,
    actor: common::Actor,
    rule_id: Option<Uuid>,
}

struct FixResult {
    fix_id: Uuid,
    reason: i32,
    detail: String,
}

impl Cause<'_> {
    fn system() -> Cause<'static> {
        Cause {
            actor: system_actor(),
            observed: None,
            manual: None,
            approval: None,
            scan_id: String::new(),
            fix: None,
        }
    }
}

struct Batch<'p> {
    processor: &'p Processor,
    now: DateTime<Utc>,
    tenants: HashMap<TenantKey, Tenant>,
    incidents: HashMap<Uuid, IncidentRow>,
    dirty_incidents: Vec<Uuid>,
    decisions: HashMap<Uuid, DecisionRow>,
    rules: HashMap<String, Vec<AutoApproveRuleRow>>,
    rule_uses: HashMap<Uuid, i32>,
    changes: Changes,
    events: Vec<OutgoingEvent>,
}

fn severity_proto(severity: Severity) -> i32 {
    severity.to_proto().into()
}

impl<'p> Batch<'p> {
    async fn load(
        processor: &'p Processor,
        connection: &mut PgConnection,
        introduced: &[TenantKey],
        keys: &[TenantKey],
        now: DateTime<Utc>,
    ) -> Result<Batch<'p>, ProcessError> {
        // A cached tenant exists already: only the others may need creating.
        let unknown = processor.uncached(introduced);
        let created = if unknown.is_empty() {
            Vec::new()
        } else {
            store::create_tenants(connection, &unknown, now).await?
        };
        let locked = store::lock_tenants(connection, keys).await?;
        let mut cached = processor.take_cached(&locked);
        let missing: Vec<TenantKey> = locked
            .iter()
            .map(TenantRow::key)
            .filter(|key| !cached.contains_key(key))
            .collect();
        let mut loaded: HashMap<TenantKey, BTreeMap<String, RecommendationRow>> = HashMap::new();
        if !missing.is_empty() {
            for row in store::tenant_recommendations(connection, &missing).await? {
                loaded
                    .entry(TenantKey::new(&row.partner_id, &row.tenant_id))
                    .or_default()
                    .insert(row.fingerprint.clone(), row);
            }
        }
        let mut partner_ids: Vec<&str> = keys.iter().map(|key| key.partner_id.as_str()).collect();
        partner_ids.dedup();
        let policies: HashMap<String, PartnerPolicyRow> =
            store::partner_policies(&mut *connection, &partner_ids)
                .await?
                .into_iter()
                .map(|row| (row.partner_id.clone(), row))
                .collect();
        let mut rules: HashMap<String, Vec<AutoApproveRuleRow>> = HashMap::new();
        for rule in store::auto_approve_rules(&mut *connection, &partner_ids).await? {
            rules.entry(rule.partner_id.clone()).or_default().push(rule);
        }
        let mut maps =
            authority::store::effective_maps(&mut *connection, keys, &processor.standard).await?;
        let tenants = locked
            .into_iter()
            .map(|row| {
                let key = row.key();
                let policy =
                    EffectivePolicy::of(policies.get(&key.partner_id), &processor.settings);
                let authority = maps
                    .remove(&key)
                    .unwrap_or_else(|| processor.standard.clone());
                let tenant = match cached.remove(&key) {
                    Some(cached) => Tenant {
                        recommendations: cached.recommendations,
                        state: cached.state,
                        row,
                        dirty: HashSet::new(),
                        policy,
                        authority,
                    },
                    None => {
                        let mut tenant = Tenant {
                            recommendations: loaded.remove(&key).unwrap_or_default(),
                            state: TenantState::default(),
                            row,
                            dirty: HashSet::new(),
                            policy,
                            authority,
                        };
                        tenant.state = tenant.engine_state();
                        tenant
                    }
                };
                (key, tenant)
            })
            .collect();
        let mut batch = Batch {
            processor,
            now,
            tenants,
            incidents: HashMap::new(),
            dirty_incidents: Vec::new(),
            decisions: HashMap::new(),
            rules,
            rule_uses: HashMap::new(),
            changes: Changes::default(),
            events: Vec::new(),
        };
        // A new tenant starts with the first theme.
        for key in created {
            if let Some(mut tenant) = batch.tenants.remove(&key) {
                let launched = batch
                    .step(
                        connection,
                        &mut tenant,
                        &Input::ThemeLaunched,
                        &Cause::system(),
                    )
                    .await?;
                if let Err(refusal) = launched {
                    tracing::warn!(%refusal, "the first theme of a new tenant did not launch");
                }
                batch.tenants.insert(key, tenant);
            }
        }
        Ok(batch)
    }

    fn finish(mut self) -> (Changes, Vec<OutgoingEvent>, Vec<Kept>) {
        let mut cached = Vec::with_capacity(self.tenants.len());
        for (key, mut tenant) in self.tenants {
            tenant.row.version += 1;
            for fingerprint in &tenant.dirty {
                if let Some(row) = tenant.recommendations.get(fingerprint) {
                    self.changes.recommendations.push(row.clone());
                }
            }
            self.changes.tenants.push(tenant.row.clone());
            cached.push((
                key,
                tenant.row.version,
                tenant.recommendations,
                tenant.state,
            ));
        }
        for incident_id in &self.dirty_incidents {
            if let Some(incident) = self.incidents.remove(incident_id) {
                self.changes.incidents.push(incident);
            }
        }
        self.changes.rule_uses = self
            .rule_uses
            .into_iter()
            .map(|(rule_id, count)| (rule_id, count, self.now))
            .collect();
        (self.changes, self.events, cached)
    }

    fn emit<E: Event>(&mut self, event: &E) -> Result<(), ProcessError> {
        let outgoing = self
            .processor
            .events
            .event(event, self.now)
            .map_err(|error| ProcessError::Event(error.to_string()))?;
        self.events.push(outgoing);
        Ok(())
    }

    async fn incident(
        &mut self,
        connection: &mut PgConnection,
        incident_id: Uuid,
    ) -> Result<Option<IncidentRow>, ProcessError> {
        if let Some(incident) = self.incidents.get(&incident_id) {
            return Ok(Some(incident.clone()));
        }
        let Some(incident) = store::incidents_by_id(&mut *connection, &[incident_id])
            .await?
            .pop()
        else {
            return Ok(None);
        };
        if let Some(decision_id) = incident.last_decision_id
            && !self.decisions.contains_key(&decision_id)
            && let Some(decision) = store::decisions_by_id(&mut *connection, &[decision_id])
                .await?
                .pop()
        {
            self.decisions.insert(decision_id, decision);
        }
        self.incidents.insert(incident_id, incident.clone());
        Ok(Some(incident))
    }

    /// When an incident of `severity` opened now escalates if still undecided, by the tenant's
    /// authority map.
    fn decision_due(&self, tenant: &Tenant, severity: Severity) -> Option<DateTime<Utc>> {
        authority::escalation_due(&tenant.authority, severity.to_proto(), self.now, 0)
    }

    /// Stores a changed incident: a new version.
    fn save(&mut self, mut incident: IncidentRow) -> IncidentRow {
        incident.version += 1;
        incident.updated_at = self.now;
        if !self.dirty_incidents.contains(&incident.incident_id) {
            self.dirty_incidents.push(incident.incident_id);
        }
        self.incidents
            .insert(incident.incident_id, incident.clone());
        incident
    }

    fn incident_proto(&self, incident: &IncidentRow) -> incidents::Incident {
        let decision = incident
            .last_decision_id
            .and_then(|id| self.decisions.get(&id));
        incident.to_proto(decision)
    }

    #[allow(clippy::too_many_arguments)]
    fn timeline(
        &mut self,
        incident: &IncidentRow,
        kind: incidents::TimelineEntryKind,
        actor: &common::Actor,
        from: Option<IncidentState>,
        summary: String,
        decision_id: Option<Uuid>,
        details: HashMap<String, String>,
    ) {
        self.changes.timeline.push(TimelineRow {
            entry_id: Uuid::now_v7(),
            incident_id: incident.incident_id,
            kind: kind.as_str_name().to_owned(),
            actor: actor.clone(),
            occurred_at: self.now,
            from_state: from.map(|state| state.as_db().to_owned()),
            to_state: Some(incident.state.clone()),
            summary,
            decision_id,
            details,
            version: incident.version,
        });
    }

    async fn apply(
        &mut self,
        connection: &mut PgConnection,
        job: Job,
    ) -> Result<Outcome, ProcessError> {
        let Some(mut tenant) = self.tenants.remove(&job.key) else {
            return Ok(Outcome::Refused(Refused::NotFound(format!(
                "tenant {} of partner {} is not known",
                job.key.tenant_id, job.key.partner_id
            ))));
        };
        if tenant.row.offboarding_id.is_some() && !job.command.applies_while_offboarded() {
            self.tenants.insert(job.key.clone(), tenant);
            return Ok(Outcome::Refused(Refused::FailedPrecondition(format!(
                "tenant {} of partner {} is being offboarded",
                job.key.tenant_id, job.key.partner_id
            ))));
        }
        let outcome = self.command(connection, &mut tenant, job.command).await;
        self.tenants.insert(job.key, tenant);
        outcome
    }

    async fn command(
        &mut self,
        connection: &mut PgConnection,
        tenant: &mut Tenant,
        command: Command,
    ) -> Result<Outcome, ProcessError> {
        match command {
            Command::Observed(finding) => self.observed(connection, tenant, *finding).await,
            Command::Cleared {
                fingerprint,
                scan_id,
            } => {
                let input = Input::Cleared { fingerprint };
                let cause = Cause {
                    scan_id,
                    ..Cause::system()
                };
                Ok(done(self.step(connection, tenant, &input, &cause).await?))
            }
            Command::Onboarded => Ok(Outcome::Applied(Box::default())),
            Command::LaunchTheme {
                actor,
                scheduled_for,
            } => {
                if scheduled_for.is_some_and(|due| tenant.row.last_launch_at >= due) {
                    return Ok(Outcome::Applied(Box::default()));
                }
                self.launch_theme(connection, tenant, actor).await
            }
            Command::Tick => Ok(done(
                self.step(connection, tenant, &Input::Tick, &Cause::system())
                    .await?,
            )),
            Command::Decide(decide) => self.decide(connection, tenant, decide).await,
            Command::OpenByHand {
                fingerprint,
                override_reason,
                actor,
            } => {
                self.open_by_hand(connection, tenant, fingerprint, override_reason, actor)
                    .await
            }
            Command::FixApplied {
                incident_id,
                fix_id,
                summary,
            } => {
                let fix = FixResult {
                    fix_id,
                    reason: 0,
                    detail: summary,
                };
                self.fix_result(connection, tenant, incident_id, fix, true)
                    .await
            }
            Command::FixFailed {
                incident_id,
                fix_id,
                reason,
                detail,
            } => {
                let fix = FixResult {
                    fix_id,
                    reason,
                    detail,
                };
                self.fix_result(connection, tenant, incident_id, fix, false)
                    .await
            }
            Command::Escalate { incident_id } => {
                self.escalate(connection, tenant, incident_id).await
            }
            Command::Offboarded { offboarding_id } => {
                self.offboarded(connection, tenant, offboarding_id).await
            }
            Command::OffboardingCancelled { offboarding_id } => {
                if tenant.row.offboarding_id == Some(offboarding_id) {
                    tenant.row.offboarding_id = None;
                }
                Ok(Outcome::Applied(Box::default()))
            }
        }
    }

    /// Closes every incident of the tenant still open, awaiting a fix or muted, as offboarded,
    /// and empties its queue: every recommendation goes idle.
    async fn offboarded(
        &mut self,
        connection: &mut PgConnection,
        tenant: &mut Tenant,
        offboarding_id: Uuid,
    ) -> Result<Outcome, ProcessError> {
        tenant.row.offboarding_id = Some(offboarding_id);
        // Customer contacts lose their grants for the tenant.
        let revoked = crate::authority::store::revoke(
            &mut *connection,
            crate::authority::store::Revoked::Tenant {
                partner_id: &tenant.row.partner_id,
                tenant_id: &tenant.row.tenant_id,
            },
            &system_actor(),
            "the tenant is being offboarded",
            self.now,
        )
        .await?;
        for grant in revoked {
            self.emit(&incidents::CustomerGrantChanged {
                partner_id: grant.partner_id.clone(),
                tenant_id: grant.tenant_id.clone(),
                grant: Some(grant),
            })?;
        }
        let fingerprints: Vec<String> = tenant.recommendations.keys().cloned().collect();
        for fingerprint in &fingerprints {
            if let Some(mut incident) = self
                .current_incident(connection, tenant, fingerprint)
                .await?
            {
                let from = incident.state();
                if matches!(
                    from,
                    IncidentState::Open | IncidentState::AwaitingFix | IncidentState::Muted
                ) {
                    incident.state = IncidentState::Offboarded.as_db().to_owned();
                    incident.resolution = Some(Resolution::Offboarded.as_db().to_owned());
                    incident.resolved_at = Some(self.now);
                    incident.decision_due_at = None;
                    let incident = self.save(incident);
                    let details =
                        HashMap::from([("offboarding_id".to_owned(), offboarding_id.to_string())]);
                    self.timeline(
                        &incident,
                        incidents::TimelineEntryKind::Resolved,
                        &system_actor(),
                        Some(from),
                        "closed: the tenant is being offboarded".to_owned(),
                        None,
                        details,
                    );
                    let resolved = incidents::IncidentResolved {
                        partner_id: incident.partner_id.clone(),
                        tenant_id: incident.tenant_id.clone(),
                        incident: Some(self.incident_proto(&incident)),
                        resolution: Resolution::Offboarded.to_proto().into(),
                        resolved_at: Some(to_timestamp(self.now)),
                        fix_id: String::new(),
                        scan_id: String::new(),
                        offboarding_id: offboarding_id.to_string(),
                    };
                    self.emit(&resolved)?;
                }
            }
            if let Some(row) = tenant.recommendations.get_mut(fingerprint)
                && (row.standing != "idle" || row.queued_at.is_some())
            {
                row.standing = "idle".to_owned();
                row.queued_at = None;
                tenant.dirty.insert(fingerprint.clone());
            }
        }
        tenant.state = tenant.engine_state();
        Ok(Outcome::Applied(Box::default()))
    }

    /// Resolves (applied) or reopens (failed) the incident waiting for this fix.
    async fn fix_result(
        &mut self,
        connection: &mut PgConnection,
        tenant: &mut Tenant,
        incident_id: Uuid,
        fix: FixResult,
        applied: bool,
    ) -> Result<Outcome, ProcessError> {
        let Some(incident) = self
            .awaited_fix(connection, tenant, incident_id, fix.fix_id)
            .await?
        else {
            return Ok(Outcome::Applied(Box::default()));
        };
        let fingerprint = incident.fingerprint;
        let input = if applied {
            Input::FixApplied { fingerprint }
        } else {
            Input::FixFailed { fingerprint }
        };
        let cause = Cause {
            fix: Some(fix),
            ..Cause::system()
        };
        Ok(done(self.step(connection, tenant, &input, &cause).await?))
    }

    /// The incident waiting for this fix; `None` when the fix result is stale (the incident was
    /// resolved meanwhile, or a later approval sent another fix).
    async fn awaited_fix(
        &mut self,
        connection: &mut PgConnection,
        tenant: &Tenant,
        incident_id: Uuid,
        fix_id: Uuid,
    ) -> Result<Option<IncidentRow>, ProcessError> {
        let incident = self.incident(connection, incident_id).await?;
        Ok(incident.filter(|incident| {
            let current = incident.key() == tenant.row.key()
                && incident.state() == IncidentState::AwaitingFix
                && incident.fix_id == Some(fix_id);
            if !current {
                tracing::info!(%incident_id, %fix_id, "fix result for an incident no longer waiting for it; ignored");
            }
            current
        }))
    }

    async fn observed(
        &mut self,
        connection: &mut PgConnection,
        tenant: &mut Tenant,
        finding: Finding,
    ) -> Result<Outcome, ProcessError> {
        let key = tenant.row.key();
        let now = self.now;
        let row = tenant
            .recommendations
            .entry(finding.fingerprint.clone())
            .or_insert_with(|| RecommendationRow {
                partner_id: key.partner_id.clone(),
                tenant_id: key.tenant_id.clone(),
                fingerprint: finding.fingerprint.clone(),
                check_id: String::new(),
                kind: finding.kind.as_db().to_owned(),
                severity: String::new(),
                title: String::new(),
                description: String::new(),
                target: String::new(),
                target_type: String::new(),
                target_id: String::new(),
                theme: String::new(),
                theme_order: 0,
                recommended_fix: String::new(),
                fix_action: 0,
                fix_parameters: HashMap::new(),
                evidence: HashMap::new(),
                scan_id: String::new(),
                observed_at: finding.observed_at,
                first_observed_at: now,
                last_observed_at: now,
                failing: false,
                muted_until: None,
                ignored_at: None,
                standing: Standing::Idle.as_db().to_owned(),
                by_hand: false,
                queued_at: None,
                incident_id: None,
                last_decision_id: None,
            });
        row.check_id = finding.check_id;
        row.kind = finding.kind.as_db().to_owned();
        row.severity = finding.severity.as_db().to_owned();
        row.title = finding.title;
        row.description = finding.description;
        row.target = finding.target;
        row.target_type = finding.target_type;
        row.target_id = finding.target_id;
        row.theme = finding.theme;
        row.theme_order = i32::try_from(finding.theme_order).unwrap_or(i32::MAX);
        row.recommended_fix = finding.recommended_fix;
        row.fix_action = finding.fix_action;
        row.fix_parameters = finding.fix_parameters;
        row.evidence = finding.evidence;
        row.scan_id = finding.scan_id.clone();
        row.observed_at = finding.observed_at;
        tenant.dirty.insert(finding.fingerprint.clone());
        let input = Input::Observed(engine::Observation {
            fingerprint: finding.fingerprint.clone(),
            kind: finding.kind,
            severity: finding.severity,
            theme_order: finding.theme_order,
        });
        let cause = Cause {
            observed: Some(&finding.fingerprint),
            scan_id: finding.scan_id,
            ..Cause::system()
        };
        Ok(done(self.step(connection, tenant, &input, &cause).await?))
    }

    /// Runs the engine and carries out its effects, then auto-approves what the partner's rules
    /// cover among the incidents it opened. Returns the engine's refusal, if any.
    async fn step(
        &mut self,
        connection: &mut PgConnection,
        tenant: &mut Tenant,
        input: &Input,
        cause: &Cause<'_>,
    ) -> Result<Result<(), Refusal>, ProcessError> {
        let rules = tenant.policy.rules(&self.processor.settings);
        let mut changed = BTreeSet::new();
        let effects = match engine::step_recording(
            &mut tenant.state,
            input,
            self.now,
            &rules,
            &mut changed,
        ) {
            Ok(effects) => effects,
            Err(refusal) => return Ok(Err(refusal)),
        };
        let mute_ended = tenant.absorb(self.now, &changed);
        for fingerprint in mute_ended {
            self.mute_ended(connection, tenant, &fingerprint).await?;
        }
        let mut opened = Vec::new();
        for effect in effects {
            if let Some(incident_id) = self.effect(connection, tenant, effect, cause).await? {
                opened.push(incident_id);
            }
        }
        for incident_id in opened {
            self.auto_approve(connection, tenant, incident_id).await?;
        }
        Ok(Ok(()))
    }

    async fn mute_ended(
        &mut self,
        connection: &mut PgConnection,
        tenant: &Tenant,
        fingerprint: &str,
    ) -> Result<(), ProcessError> {
        let Some(incident_id) = tenant.recommendation(fingerprint)?.incident_id else {
            return Ok(());
        };
        if let Some(incident) = self.incident(connection, incident_id).await?
            && incident.state() == IncidentState::Muted
        {
            let incident = self.save(incident);
            self.timeline(
                &incident,
                incidents::TimelineEntryKind::MuteExpired,
                &system_actor(),
                Some(IncidentState::Muted),
                "the mute ended; the recommendation is eligible again".into(),
                None,
                HashMap::new(),
            );
        }
        Ok(())
    }

    /// Carries out one effect; returns the id of an incident it opened.
    async fn effect(
        &mut self,
        connection: &mut PgConnection,
        tenant: &mut Tenant,
        effect: Effect,
        cause: &Cause<'_>,
    ) -> Result<Option<Uuid>, ProcessError> {
        match effect {
            Effect::Open { fingerprint, .. } => {
                let origin = if cause.manual.is_some() {
                    Origin::Manual
                } else if cause.observed == Some(fingerprint.as_str()) {
                    Origin::Automatic
                } else {
                    Origin::Dequeued
                };
                let incident = self.open(tenant, &fingerprint, origin, cause)?;
                return Ok(Some(incident));
            }
            Effect::Join { fingerprint } => self.join(connection, tenant, &fingerprint).await?,
            Effect::Reopen { fingerprint } => {
                self.reopen(connection, tenant, &fingerprint, cause).await?
            }
            Effect::Queue { fingerprint } => self.queued(tenant, &fingerprint)?,
            Effect::RequestFix { fingerprint } => {
                self.request_fix(connection, tenant, &fingerprint, cause)
                    .await?;
            }
            Effect::Resolve {
                fingerprint,
                closure,
            } => {
                self.close(connection, tenant, &fingerprint, closure, cause)
                    .await?;
            }
            Effect::ThemeLaunched { order } => self.theme_launched(tenant, order, cause)?,
        }
        Ok(None)
    }

    fn open(
        &mut self,
        tenant: &mut Tenant,
        fingerprint: &str,
        origin: Origin,
        cause: &Cause<'_>,
    ) -> Result<Uuid, ProcessError> {
        let now = self.now;
        let row = tenant.recommendation(fingerprint)?.clone();
        let due = self.decision_due(tenant, row.severity());
        let incident = IncidentRow {
            incident_id: Uuid::now_v7(),
            partner_id: row.partner_id.clone(),
            tenant_id: row.tenant_id.clone(),
            fingerprint: fingerprint.to_owned(),
            check_id: row.check_id.clone(),
            kind: row.kind.clone(),
            severity: row.severity.clone(),
            title: row.title.clone(),
            description: row.description.clone(),
            target: row.target.clone(),
            target_type: row.target_type.clone(),
            target_id: row.target_id.clone(),
            theme: row.theme.clone(),
            recommended_fix: row.recommended_fix.clone(),
            fix_action: row.fix_action,
            fix_parameters: row.fix_parameters.clone(),
            evidence: row.evidence.clone(),
            scan_id: row.scan_id.clone(),
            state: IncidentState::Open.as_db().to_owned(),
            resolution: None,
            origin: origin.as_db().to_owned(),
            override_reason: cause.manual.clone().unwrap_or_default(),
            occurrence_count: 1,
            opened_at: now,
            updated_at: now,
            last_seen_at: row.observed_at,
            resolved_at: None,
            fix_id: None,
            last_fix_error: String::new(),
            muted_until: None,
            decision_due_at: due,
            escalation_level: 0,
            escalated_at: None,
            last_decision_id: None,
            version: 0,
        };
        let incident = self.save(incident);
        if let Some(row) = tenant.recommendations.get_mut(fingerprint) {
            row.incident_id = Some(incident.incident_id);
            tenant.dirty.insert(fingerprint.to_owned());
        }
        let summary = match origin {
            Origin::Automatic => format!("opened by finding {fingerprint}"),
            Origin::Dequeued => "opened from the queue".to_owned(),
            Origin::Manual => "opened by hand".to_owned(),
        };
        let actor = if origin == Origin::Manual {
            cause.actor.clone()
        } else {
            system_actor()
        };
        self.timeline(
            &incident,
            incidents::TimelineEntryKind::Opened,
            &actor,
            None,
            summary,
            None,
            HashMap::new(),
        );
        let opened = incidents::IncidentOpened {
            partner_id: incident.partner_id.clone(),
            tenant_id: incident.tenant_id.clone(),
            incident: Some(self.incident_proto(&incident)),
        };
        self.emit(&opened)?;
        Ok(incident.incident_id)
    }

    async fn current_incident(
        &mut self,
        connection: &mut PgConnection,
        tenant: &Tenant,
        fingerprint: &str,
    ) -> Result<Option<IncidentRow>, ProcessError> {
        match tenant.recommendation(fingerprint)?.incident_id {
            Some(incident_id) => self.incident(connection, incident_id).await,
            None => Ok(None),
        }
    }

    async fn join(
        &mut self,
        connection: &mut PgConnection,
        tenant: &Tenant,
        fingerprint: &str,
    ) -> Result<(), ProcessError> {
        let Some(mut incident) = self
            .current_incident(connection, tenant, fingerprint)
            .await?
        else {
            return Ok(());
        };
        let row = tenant.recommendation(fingerprint)?;
        incident.occurrence_count += 1;
        incident.last_seen_at = incident.last_seen_at.max(row.observed_at);
        incident.evidence = row.evidence.clone();
        incident.scan_id = row.scan_id.clone();
        let incident = self.save(incident);
        let details = HashMap::from([("scan_id".to_owned(), incident.scan_id.clone())]);
        let summary = format!("observed again ({} occurrences)", incident.occurrence_count);
        let state = incident.state();
        self.timeline(
            &incident,
            incidents::TimelineEntryKind::Occurrence,
            &system_actor(),
            Some(state),
            summary,
            None,
            details,
        );
        Ok(())
    }

    async fn reopen(
        &mut self,
        connection: &mut PgConnection,
        tenant: &Tenant,
        fingerprint: &str,
        cause: &Cause<'_>,
    ) -> Result<(), ProcessError> {
        let Some(mut incident) = self
            .current_incident(connection, tenant, fingerprint)
            .await?
        else {
            return Ok(());
        };
        let from = incident.state();
        let row = tenant.recommendation(fingerprint)?;
        incident.state = IncidentState::Open.as_db().to_owned();
        incident.resolution = None;
        incident.resolved_at = None;
        incident.muted_until = None;
        incident.escalation_level = 0;
        incident.decision_due_at = self.decision_due(tenant, incident.severity());
        let (kind, summary, fix_id, reason, detail) = match &cause.fix {
            Some(fix) => {
                incident.last_fix_error = fix.detail.clone();
                let reason_name = fixes::FixFailureReason::try_from(fix.reason)
                    .map(|reason| reason.as_str_name())
                    .unwrap_or("FIX_FAILURE_REASON_UNSPECIFIED");
                (
                    incidents::TimelineEntryKind::FixFailed,
                    format!("the fix failed ({reason_name}): {}", fix.detail),
                    fix.fix_id.to_string(),
                    fix.reason,
                    fix.detail.clone(),
                )
            }
            None => {
                incident.occurrence_count += 1;
                incident.last_seen_at = incident.last_seen_at.max(row.observed_at);
                incident.evidence = row.evidence.clone();
                incident.scan_id = row.scan_id.clone();
                (
                    incidents::TimelineEntryKind::Occurrence,
                    "observed again within the correlation window: reopened".to_owned(),
                    String::new(),
                    0,
                    "observed again within the correlation window".to_owned(),
                )
            }
        };
        let incident = self.save(incident);
        self.timeline(
            &incident,
            kind,
            &system_actor(),
            Some(from),
            summary,
            None,
            HashMap::new(),
        );
        let reopened = incidents::IncidentReopened {
            partner_id: incident.partner_id.clone(),
            tenant_id: incident.tenant_id.clone(),
            incident: Some(self.incident_proto(&incident)),
            fix_id,
            fix_failure_reason: reason,
            reason: detail,
            reopened_at: Some(to_timestamp(self.now)),
        };
        self.emit(&reopened)
    }

    fn queued(&mut self, tenant: &Tenant, fingerprint: &str) -> Result<(), ProcessError> {
        let state = &tenant.state;
        let row = tenant.recommendation(fingerprint)?;
        let position = state
            .queue_position(fingerprint)
            .map_or(0, |position| u32::try_from(position).unwrap_or(u32::MAX));
        let recommendation = row.to_proto(incidents::RecommendationState::Queued, position, None);
        let queued = incidents::RecommendationQueued {
            partner_id: row.partner_id.clone(),
            tenant_id: row.tenant_id.clone(),
            recommendation: Some(recommendation),
            queue_position: position,
            open_configuration_incidents: state.capped_open() as u32,
            max_open_configuration_incidents: tenant.policy.cap,
            queued_at: Some(to_timestamp(self.now)),
        };
        self.emit(&queued)
    }

    async fn request_fix(
        &mut self,
        connection: &mut PgConnection,
        tenant: &Tenant,
        fingerprint: &str,
        cause: &Cause<'_>,
    ) -> Result<(), ProcessError> {
        let (Some(approval), Some(mut incident)) = (
            cause.approval.clone(),
            self.current_incident(connection, tenant, fingerprint)
                .await?,
        ) else {
            return Ok(());
        };
        let from = incident.state();
        incident.state = IncidentState::AwaitingFix.as_db().to_owned();
        incident.fix_id = Some(approval.fix_id);
        incident.decision_due_at = None;
        incident.last_fix_error = String::new();
        let incident = self.save(incident);
        let details = HashMap::from([("fix_id".to_owned(), approval.fix_id.to_string())]);
        self.timeline(
            &incident,
            incidents::TimelineEntryKind::FixRequested,
            &approval.actor,
            Some(from),
            "fix requested from the scanner".into(),
            Some(approval.decision_id),
            details,
        );
        let requested = fixes::FixRequested {
            partner_id: incident.partner_id.clone(),
            tenant_id: incident.tenant_id.clone(),
            fix_id: approval.fix_id.to_string(),
            incident_id: incident.incident_id.to_string(),
            fingerprint: incident.fingerprint.clone(),
            check_id: incident.check_id.clone(),
            target: incident.target.clone(),
            target_id: incident.target_id.clone(),
            action: incident.fix_action,
            parameters: incident.fix_parameters.clone(),
            recommended_fix: incident.recommended_fix.clone(),
            approved_by: Some(approval.actor.clone()),
            auto_approve_rule_id: approval
                .rule_id
                .map(|id| id.to_string())
                .unwrap_or_default(),
            requested_at: Some(to_timestamp(self.now)),
            decision_id: approval.decision_id.to_string(),
            severity: severity_proto(incident.severity()),
            kind: incident.kind().to_proto().into(),
        };
        self.emit(&requested)
    }

    async fn close(
        &mut self,
        connection: &mut PgConnection,
        tenant: &Tenant,
        fingerprint: &str,
        closure: Closure,
        cause: &Cause<'_>,
    ) -> Result<(), ProcessError> {
        let Some(mut incident) = self
            .current_incident(connection, tenant, fingerprint)
            .await?
        else {
            return Ok(());
        };
        let from = incident.state();
        incident.decision_due_at = None;
        match closure {
            Closure::Muted => {
                incident.state = IncidentState::Muted.as_db().to_owned();
                incident.muted_until = tenant.recommendation(fingerprint)?.muted_until;
                self.save(incident);
                return Ok(());
            }
            Closure::Ignored => {
                incident.state = IncidentState::Ignored.as_db().to_owned();
                self.save(incident);
                return Ok(());
            }
            Closure::Verified | Closure::Fixed => {}
        }
        let resolution = if closure == Closure::Fixed {
            Resolution::Fixed
        } else {
            Resolution::Cleared
        };
        incident.state = IncidentState::Resolved.as_db().to_owned();
        incident.resolution = Some(resolution.as_db().to_owned());
        incident.resolved_at = Some(self.now);
        let fix_id = cause
            .fix
            .as_ref()
            .map(|fix| fix.fix_id.to_string())
            .unwrap_or_default();
        if let Some(fix) = &cause.fix {
            let incident = self.save(incident.clone());
            let details = HashMap::from([("fix_id".to_owned(), fix.fix_id.to_string())]);
            self.timeline(
                &incident,
                incidents::TimelineEntryKind::FixApplied,
                &system_actor(),
                Some(from),
                fix.detail.clone(),
                None,
                details,
            );
        }
        let incident = self.save(incident);
        let summary = match resolution {
            Resolution::Fixed => "resolved: the fix was applied and verified".to_owned(),
            _ => "resolved by verification: a later scan found the check passing".to_owned(),
        };
        let details = HashMap::from([("scan_id".to_owned(), cause.scan_id.clone())]);
        self.timeline(
            &incident,
            incidents::TimelineEntryKind::Resolved,
            &system_actor(),
            Some(from),
            summary,
            None,
            details,
        );
        let resolved = incidents::IncidentResolved {
            partner_id: incident.partner_id.clone(),
            tenant_id: incident.tenant_id.clone(),
            incident: Some(self.incident_proto(&incident)),
            resolution: resolution.to_proto().into(),
            resolved_at: Some(to_timestamp(self.now)),
            fix_id,
            scan_id: cause.scan_id.clone(),
            offboarding_id: String::new(),
        };
        self.emit(&resolved)
    }

    fn theme_launched(
        &mut self,
        tenant: &mut Tenant,
        order: u32,
        cause: &Cause<'_>,
    ) -> Result<(), ProcessError> {
        let Some(theme) = self.processor.themes.by_order(order).cloned() else {
            return Ok(());
        };
        tenant.row.last_launch_at = self.now;
        let order_db = i32::try_from(order).unwrap_or(i32::MAX);
        let eligible = tenant
            .recommendations
            .values()
            .filter(|row| row.theme_order == order_db && row.failing)
            .count() as u32;
        self.changes.theme_launches.push(ThemeLaunchRow {
            partner_id: tenant.row.partner_id.clone(),
            tenant_id: tenant.row.tenant_id.clone(),
            theme_order: order_db,
            theme_id: theme.id.clone(),
            launched_at: self.now,
            launched_by: cause.actor.clone(),
        });
        let launched = incidents::ThemeLaunched {
            partner_id: tenant.row.partner_id.clone(),
            tenant_id: tenant.row.tenant_id.clone(),
            theme_id: theme.id,
            theme_title: theme.title,
            theme_order: order,
            launched_at: Some(to_timestamp(self.now)),
            launched_by: Some(cause.actor.clone()),
            recommendations_eligible: eligible,
        };
        self.emit(&launched)
    }

    async fn launch_theme(
        &mut self,
        connection: &mut PgConnection,
        tenant: &mut Tenant,
        actor: common::Actor,
    ) -> Result<Outcome, ProcessError> {
        let next = u32::try_from(tenant.row.launched_themes).unwrap_or_default() + 1;
        let Some(theme) = self.processor.themes.by_order(next).cloned() else {
            return Ok(Outcome::Applied(Box::default()));
        };
        let cause = Cause {
            actor: actor.clone(),
            ..Cause::system()
        };
        if let Err(refusal) = self
            .step(connection, tenant, &Input::ThemeLaunched, &cause)
            .await?
        {
            return Ok(Outcome::Refused(Refused::FailedPrecondition(
                refusal.to_string(),
            )));
        }
        let launch = incidents::ThemeLaunch {
            tenant_id: tenant.row.tenant_id.clone(),
            theme_id: theme.id,
            theme_title: theme.title,
            theme_order: next,
            launched_at: Some(to_timestamp(self.now)),
            scheduled_at: None,
            launched_by: Some(actor),
        };
        Ok(Outcome::Applied(Box::new(Reply {
            launch: Some(launch),
            ..Reply::default()
        })))
    }

    async fn auto_approve(
        &mut self,
        connection: &mut PgConnection,
        tenant: &mut Tenant,
        incident_id: Uuid,
    ) -> Result<(), ProcessError> {
        let Some(incident) = self.incidents.get(&incident_id) else {
            return Ok(());
        };
        let rule = self.rules.get(&incident.partner_id).and_then(|rules| {
            rules
                .iter()
                .find(|rule| rule.covers(&incident.tenant_id, &incident.check_id))
                .map(|rule| rule.rule_id)
        });
        let Some(rule_id) = rule else {
            return Ok(());
        };
        let decide = Decide {
            incident_id,
            kind: DecisionKind::Approve,
            actor: rule_actor(rule_id),
            comment: "approved by the partner's auto-approve rule".into(),
            expected_version: 0,
            authority_basis: format!("auto-approve rule {rule_id}"),
            auto_approve_rule_id: Some(rule_id),
        };
        Box::pin(self.decide(connection, tenant, decide)).await?;
        Ok(())
    }

    async fn decide(
        &mut self,
        connection: &mut PgConnection,
        tenant: &mut Tenant,
        decide: Decide,
    ) -> Result<Outcome, ProcessError> {
        let refused = |message: String| Ok(Outcome::Refused(Refused::FailedPrecondition(message)));
        let incident_id = decide.incident_id;
        let Some(incident) = self
            .incident(connection, incident_id)
            .await?
            .filter(|incident| incident.key() == tenant.row.key())
        else {
            return Ok(Outcome::Refused(Refused::NotFound(format!(
                "incident {incident_id} not found"
            ))));
        };
        if decide.expected_version != 0 && decide.expected_version != incident.version as u64 {
            return refused(format!(
                "expected_version: the incident is at version {}, not {}",
                incident.version, decide.expected_version
            ));
        }
        let fingerprint = incident.fingerprint.clone();
        let current = tenant
            .recommendations
            .get(&fingerprint)
            .is_some_and(|row| row.incident_id == Some(incident_id));
        let from = incident.state();
        let (input, to) = match (decide.kind, from) {
            (DecisionKind::Approve, IncidentState::Open) => {
                (Input::Approved { fingerprint }, IncidentState::AwaitingFix)
            }
            (DecisionKind::Mute, IncidentState::Open) => {
                (Input::Muted { fingerprint }, IncidentState::Muted)
            }
            (DecisionKind::Ignore, IncidentState::Open) => {
                (Input::Ignored { fingerprint }, IncidentState::Ignored)
            }
            (DecisionKind::Ignore, IncidentState::Muted) if current => {
                (Input::Ignored { fingerprint }, IncidentState::Ignored)
            }
            (DecisionKind::Unignore, IncidentState::Ignored) if current => {
                (Input::Unignored { fingerprint }, IncidentState::Ignored)
            }
            (kind, state) => {
                return refused(format!(
                    "cannot {} an incident in state {}",
                    kind.as_db(),
                    state.as_db()
                ));
            }
        };
        if input_is_configuration_only(&input) && incident.kind() == Kind::Monitoring {
            return refused(
                "suspicious behaviour cannot be ignored; mute it or approve its fix".into(),
            );
        }
        let decision_id = Uuid::now_v7();
        let approval = (decide.kind == DecisionKind::Approve).then(|| Approval {
            decision_id,
            fix_id: Uuid::now_v7(),
            actor: decide.actor.clone(),
            rule_id: decide.auto_approve_rule_id,
        });
        let cause = Cause {
            actor: decide.actor.clone(),
            approval: approval.clone(),
            ..Cause::system()
        };
        // The decision comes first in the timeline, before what it causes.
        let decided_at = self.changes.timeline.len();
        if let Err(refusal) = self.step(connection, tenant, &input, &cause).await? {
            return refused(refusal.to_string());
        }
        if let Some(rule_id) = decide.auto_approve_rule_id {
            *self.rule_uses.entry(rule_id).or_default() += 1;
        }
        let mut incident = self
            .incident(connection, incident_id)
            .await?
            .unwrap_or(incident);
        // Ignoring a muted incident: the engine had no incident to close.
        incident.state = to.as_db().to_owned();
        incident.decision_due_at = None;
        let muted_until = (decide.kind == DecisionKind::Mute)
            .then(|| {
                tenant
                    .recommendation(&incident.fingerprint)
                    .ok()
                    .and_then(|row| row.muted_until)
            })
            .flatten();
        let decision = DecisionRow {
            decision_id,
            incident_id,
            kind: decide.kind.as_db().to_owned(),
            actor: decide.actor.clone(),
            comment: decide.comment.clone(),
            decided_at: self.now,
            muted_until,
            auto_approve_rule_id: decide.auto_approve_rule_id,
            fix_id: approval.as_ref().map(|approval| approval.fix_id),
            authority_basis: decide.authority_basis.clone(),
        };
        incident.last_decision_id = Some(decision_id);
        self.decisions.insert(decision_id, decision.clone());
        self.changes.decisions.push(decision.clone());
        let incident = self.save(incident);
        if decide.kind != DecisionKind::Approve
            && let Some(row) = tenant.recommendations.get_mut(&incident.fingerprint)
        {
            row.last_decision_id = Some(decision_id);
            tenant.dirty.insert(incident.fingerprint.clone());
        }
        let mut summary = format!("{} decided", decide.kind.as_db());
        if !decide.comment.is_empty() {
            summary = format!("{summary}: {}", decide.comment);
        }
        self.timeline(
            &incident,
            incidents::TimelineEntryKind::Decided,
            &decide.actor,
            Some(from),
            summary,
            Some(decision_id),
            HashMap::new(),
        );
        if let Some(entry) = self.changes.timeline.pop() {
            self.changes.timeline.insert(decided_at, entry);
        }
        let proto = self.incident_proto(&incident);
        let decided = incidents::IncidentDecided {
            partner_id: incident.partner_id.clone(),
            tenant_id: incident.tenant_id.clone(),
            incident: Some(proto.clone()),
            decision: Some(decision.to_proto()),
        };
        self.emit(&decided)?;
        let recommendation = tenant
            .recommendations
            .get(&incident.fingerprint)
            .map(|row| {
                let state = tenant.standing_of(row, self.now);
                row.to_proto(state, 0, Some(&decision))
            });
        Ok(Outcome::Applied(Box::new(Reply {
            incident: Some(proto),
            decision: Some(decision.to_proto()),
            recommendation,
            ..Reply::default()
        })))
    }

    async fn open_by_hand(
        &mut self,
        connection: &mut PgConnection,
        tenant: &mut Tenant,
        fingerprint: String,
        override_reason: Option<String>,
        actor: common::Actor,
    ) -> Result<Outcome, ProcessError> {
        let Some(row) = tenant.recommendations.get(&fingerprint) else {
            return Ok(Outcome::Refused(Refused::NotFound(format!(
                "fingerprint: no recommendation {fingerprint} in this tenant"
            ))));
        };
        if row.kind() == Kind::Monitoring {
            return Ok(Outcome::Refused(Refused::FailedPrecondition(
                "fingerprint: suspicious behaviour opens its incidents itself".into(),
            )));
        }
        if matches!(
            Standing::from_db(&row.standing),
            Standing::Open | Standing::AwaitingFix
        ) && let Some(incident_id) = row.incident_id
            && let Some(incident) = self.incident(connection, incident_id).await?
        {
            let incident = self.incident_proto(&incident);
            return Ok(Outcome::Applied(Box::new(Reply {
                incident: Some(incident),
                created: false,
                ..Reply::default()
            })));
        }
        let input = Input::OpenedByHand {
            fingerprint: fingerprint.clone(),
            override_mute: override_reason.is_some(),
        };
        let cause = Cause {
            actor,
            manual: Some(override_reason.unwrap_or_default()),
            ..Cause::system()
        };
        if let Err(refusal) = self.step(connection, tenant, &input, &cause).await? {
            return Ok(Outcome::Refused(Refused::FailedPrecondition(
                refusal.to_string(),
            )));
        }
        let incident = match tenant.recommendation(&fingerprint)?.incident_id {
            Some(incident_id) => self.incident(connection, incident_id).await?,
            None => None,
        };
        Ok(Outcome::Applied(Box::new(Reply {
            incident: incident.map(|incident| self.incident_proto(&incident)),
            created: true,
            ..Reply::default()
        })))
    }

    async fn escalate(
        &mut self,
        connection: &mut PgConnection,
        tenant: &Tenant,
        incident_id: Uuid,
    ) -> Result<Outcome, ProcessError> {
        let now = self.now;
        let Some(mut incident) = self
            .incident(connection, incident_id)
            .await?
            .filter(|incident| incident.key() == tenant.row.key())
        else {
            return Ok(Outcome::Applied(Box::default()));
        };
        let due = incident.state() == IncidentState::Open
            && incident.decision_due_at.is_some_and(|due| due <= now);
        if !due {
            return Ok(Outcome::Applied(Box::default()));
        }
        let level = u32::try_from(incident.escalation_level).unwrap_or_default() + 1;
        let severity = incident.severity().to_proto();
        let map = &tenant.authority;
        let Some((step, owner)) = authority::escalation_step(map, severity, level) else {
            incident.decision_due_at = None;
            self.save(incident);
            return Ok(Outcome::Applied(Box::default()));
        };
        incident.escalation_level = i32::try_from(level).unwrap_or(i32::MAX);
        incident.escalated_at = Some(now);
        // The map's times run from the opening: the next step fires at its own `after`.
        incident.decision_due_at =
            authority::escalation_due(map, severity, incident.opened_at, level)
                .map(|due| due.max(now));
        let incident = self.save(incident);
        let details = HashMap::from([
            ("level".to_owned(), level.to_string()),
            ("owner_id".to_owned(), owner.owner_id.clone()),
        ]);
        self.timeline(
            &incident,
            incidents::TimelineEntryKind::Escalated,
            &system_actor(),
            Some(IncidentState::Open),
            format!(
                "undecided: escalated to {} (step {level})",
                owner.display_name
            ),
            None,
            details,
        );
        let undecided_for = (now - incident.opened_at).to_std().unwrap_or_default();
        let escalated = incidents::IncidentEscalated {
            partner_id: incident.partner_id.clone(),
            tenant_id: incident.tenant_id.clone(),
            incident: Some(self.incident_proto(&incident)),
            level,
            step: Some(step),
            owner: Some(owner),
            undecided_for: Some(to_duration(undecided_for)),
            escalated_at: Some(to_timestamp(now)),
            next_escalation_at: incident.decision_due_at.map(to_timestamp),
            authority_map_version: tenant.authority.version,
        };
        self.emit(&escalated)?;
        Ok(Outcome::Applied(Box::default()))
    }
}

/// The outcome of a command that replies nothing but whether the engine accepted it.
fn done(result: Result<(), Refusal>) -> Outcome {
    match result {
        Ok(()) => Outcome::Applied(Box::default()),
        Err(refusal) => Outcome::Refused(Refused::FailedPrecondition(refusal.to_string())),
    }
}

/// Ignoring applies to configuration recommendations only.
fn input_is_configuration_only(input: &Input) -> bool {
    matches!(input, Input::Ignored { .. } | Input::Unignored { .. })
}

impl BatchApplier for Processor {
    type Job = Job;
    type Outcome = Outcome;
    type Error = ProcessError;

    async fn apply(&self, jobs: Vec<Job>) -> Result<Vec<Outcome>, ProcessError> {
        self.run(jobs).await
    }
}
