//! The prioritization policy of one tenant as a pure function: `step(state, input, now, rules)`
//! moves the state and returns the effects to carry out (open, join, queue, resolve, request a
//! fix), or why a decision is refused (the state then stays as it was). No I/O, no clock, no
//! randomness: property-tested below.
//!
//! Rules: a configuration recommendation opens an incident only once its theme is launched, while
//! it is not muted (a mute lasts `mute_for`) or ignored, and while fewer than `cap` configuration
//! incidents it opened on its own are open; the others wait in a queue ordered by severity then
//! age and open as incidents close. Suspicious behaviour always opens an incident; a repeat joins
//! the open one, or reopens the last one within `correlation_window`. A cleared finding resolves
//! its incident. A partner may open a recommendation by hand, past theme and cap (muted or ignored
//! ones need an override).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};

use crate::model::{Kind, Severity};

#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    /// Open configuration incidents per tenant, not counting those opened by hand.
    pub cap: usize,
    pub mute_for: Duration,
    pub correlation_window: Duration,
}

impl Default for Rules {
    fn default() -> Rules {
        Rules {
            cap: 3,
            mute_for: Duration::days(28),
            correlation_window: Duration::hours(24),
        }
    }
}

/// Where a recommendation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// No incident and not waiting: passing, muted, ignored, or its theme not launched.
    Idle,
    /// Eligible, waiting for room under the cap.
    Queued,
    /// An open incident.
    Open,
    /// Its fix was approved and is being applied.
    AwaitingFix,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Recommendation {
    /// Position of its theme in the launch order (1 = first).
    pub theme_order: u32,
    pub severity: Severity,
    pub first_seen: DateTime<Utc>,
    pub failing: bool,
    pub muted_until: Option<DateTime<Utc>>,
    pub ignored: bool,
    pub standing: Standing,
    /// Opened by a partner's hand: outside the cap.
    pub by_hand: bool,
}

impl Recommendation {
    fn has_incident(&self) -> bool {
        matches!(self.standing, Standing::Open | Standing::AwaitingFix)
    }

    pub fn muted_at(&self, now: DateTime<Utc>) -> bool {
        self.muted_until.is_some_and(|until| now < until)
    }

    /// May open on its own now.
    pub fn eligible(&self, launched_themes: u32, now: DateTime<Utc>) -> bool {
        self.failing && self.theme_order <= launched_themes && !self.ignored && !self.muted_at(now)
    }
}

/// Suspicious behaviour seen under one fingerprint.
#[derive(Debug, Clone, PartialEq)]
pub struct Suspicion {
    pub open: bool,
    pub awaiting_fix: bool,
    pub last_seen: DateTime<Utc>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct TenantState {
    /// Themes launched so far, in order: themes 1..=launched_themes are live.
    pub launched_themes: u32,
    pub recommendations: BTreeMap<String, Recommendation>,
    pub suspicions: BTreeMap<String, Suspicion>,
}

impl TenantState {
    /// Open configuration incidents that count against the cap.
    pub fn capped_open(&self) -> usize {
        self.recommendations
            .values()
            .filter(|recommendation| recommendation.has_incident() && !recommendation.by_hand)
            .count()
    }

    /// The queue, first to open first: severity, then age.
    pub fn queue(&self) -> Vec<&str> {
        let mut queued: Vec<(&String, &Recommendation)> = self
            .recommendations
            .iter()
            .filter(|(_, recommendation)| recommendation.standing == Standing::Queued)
            .collect();
        queued.sort_by(|(a_id, a), (b_id, b)| queue_order((a_id, a), (b_id, b)));
        queued.into_iter().map(|(id, _)| id.as_str()).collect()
    }

    /// Where `fingerprint` stands in [`TenantState::queue`] (1 = next to open), without sorting
    /// the queue; `None` when it is not queued.
    pub fn queue_position(&self, fingerprint: &str) -> Option<usize> {
        let (id, queued) = self.recommendations.get_key_value(fingerprint)?;
        if queued.standing != Standing::Queued {
            return None;
        }
        let ahead = self
            .recommendations
            .iter()
            .filter(|(other_id, other)| {
                other.standing == Standing::Queued
                    && queue_order((other_id, other), (id, queued)).is_lt()
            })
            .count();
        Some(ahead + 1)
    }
}

/// The queue's order, first to open first: severity, then age, then fingerprint.
fn queue_order(
    (a_id, a): (&String, &Recommendation),
    (b_id, b): (&String, &Recommendation),
) -> std::cmp::Ordering {
    b.severity
        .cmp(&a.severity)
        .then(a.first_seen.cmp(&b.first_seen))
        .then(a_id.cmp(b_id))
}

#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub fingerprint: String,
    pub kind: Kind,
    pub severity: Severity,
    pub theme_order: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Observed(Observation),
    Cleared {
        fingerprint: String,
    },
    /// The next theme in the catalogue's order goes live (Theme Tuesday).
    ThemeLaunched,
    Approved {
        fingerprint: String,
    },
    FixApplied {
        fingerprint: String,
    },
    FixFailed {
        fingerprint: String,
    },
    Muted {
        fingerprint: String,
    },
    Ignored {
        fingerprint: String,
    },
    Unignored {
        fingerprint: String,
    },
    OpenedByHand {
        fingerprint: String,
        override_mute: bool,
    },
    /// Time passed: mutes may have expired.
    Tick,
}

impl Input {
    /// The fingerprint the input is about, if any.
    pub fn fingerprint(&self) -> Option<&str> {
        match self {
            Input::Observed(observation) => Some(&observation.fingerprint),
            Input::Cleared { fingerprint }
            | Input::Approved { fingerprint }
            | Input::FixApplied { fingerprint }
            | Input::FixFailed { fingerprint }
            | Input::Muted { fingerprint }
            | Input::Ignored { fingerprint }
            | Input::Unignored { fingerprint }
            | Input::OpenedByHand { fingerprint, .. } => Some(fingerprint),
            Input::ThemeLaunched | Input::Tick => None,
        }
    }
}

/// How an incident closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closure {
    /// The finding cleared: verified by a scan.
    Verified,
    Fixed,
    Muted,
    Ignored,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    Open {
        fingerprint: String,
        kind: Kind,
    },
    Join {
        fingerprint: String,
    },
    Reopen {
        fingerprint: String,
    },
    Queue {
        fingerprint: String,
    },
    RequestFix {
        fingerprint: String,
    },
    Resolve {
        fingerprint: String,
        closure: Closure,
    },
    ThemeLaunched {
        order: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no finding has this fingerprint")]
    UnknownFingerprint,
    #[error("the incident is not open")]
    NotOpen,
    #[error("the incident is already open")]
    AlreadyOpen,
    #[error("the recommendation passes; there is nothing to open")]
    NotFailing,
    #[error("the recommendation is muted; opening it needs an override with a reason")]
    Muted,
    #[error("the recommendation is ignored; opening it needs an override with a reason")]
    Ignored,
}

/// Applies one input to a tenant's state and returns the effects to carry out. A refused input
/// leaves the state as it was.
pub fn step(
    state: &mut TenantState,
    input: &Input,
    now: DateTime<Utc>,
    rules: &Rules,
) -> Result<Vec<Effect>, Refusal> {
    step_recording(state, input, now, rules, &mut BTreeSet::new())
}

/// [`step`], adding to `changed` every fingerprint whose recommendation or suspicion it changed,
/// so that a caller keeping rows beside the state updates those alone.
pub fn step_recording(
    state: &mut TenantState,
    input: &Input,
    now: DateTime<Utc>,
    rules: &Rules,
    changed: &mut BTreeSet<String>,
) -> Result<Vec<Effect>, Refusal> {
    let mut effects = Vec::new();
    match input {
        Input::Observed(observation) => observe(state, observation, now, rules, &mut effects),
        Input::Cleared { fingerprint } => {
            close(state, fingerprint, Closure::Verified, &mut effects)
        }
        Input::ThemeLaunched => {
            state.launched_themes += 1;
            effects.push(Effect::ThemeLaunched {
                order: state.launched_themes,
            });
        }
        Input::Approved { fingerprint } => approve(state, fingerprint, &mut effects)?,
        Input::FixApplied { fingerprint } => {
            if !awaiting_fix(state, fingerprint) {
                return Err(Refusal::NotOpen);
            }
            close(state, fingerprint, Closure::Fixed, &mut effects);
        }
        Input::FixFailed { fingerprint } => fix_failed(state, fingerprint, &mut effects)?,
        Input::Muted { fingerprint } => {
            known(state, fingerprint)?;
            if let Some(recommendation) = state.recommendations.get_mut(fingerprint) {
                recommendation.muted_until = Some(now + rules.mute_for);
            }
            close(state, fingerprint, Closure::Muted, &mut effects);
        }
        Input::Ignored { fingerprint } => {
            known(state, fingerprint)?;
            if let Some(recommendation) = state.recommendations.get_mut(fingerprint) {
                recommendation.ignored = true;
            }
            close(state, fingerprint, Closure::Ignored, &mut effects);
        }
        Input::Unignored { fingerprint } => {
            let recommendation = state
                .recommendations
                .get_mut(fingerprint)
                .ok_or(Refusal::UnknownFingerprint)?;
            recommendation.ignored = false;
        }
        Input::OpenedByHand {
            fingerprint,
            override_mute,
        } => open_by_hand(state, fingerprint, *override_mute, now, &mut effects)?,
        Input::Tick => {}
    }
    if let Some(fingerprint) = input.fingerprint() {
        changed.insert(fingerprint.to_owned());
    }
    fill(state, now, rules, &mut effects, changed);
    Ok(effects)
}

fn known(state: &TenantState, fingerprint: &str) -> Result<(), Refusal> {
    if state.recommendations.contains_key(fingerprint) || state.suspicions.contains_key(fingerprint)
    {
        Ok(())
    } else {
        Err(Refusal::UnknownFingerprint)
    }
}

fn awaiting_fix(state: &TenantState, fingerprint: &str) -> bool {
    state
        .recommendations
        .get(fingerprint)
        .is_some_and(|recommendation| recommendation.standing == Standing::AwaitingFix)
        || state
            .suspicions
            .get(fingerprint)
            .is_some_and(|suspicion| suspicion.awaiting_fix)
}

fn observe(
    state: &mut TenantState,
    observation: &Observation,
    now: DateTime<Utc>,
    rules: &Rules,
    effects: &mut Vec<Effect>,
) {
    let fingerprint = observation.fingerprint.clone();
    match observation.kind {
        Kind::Monitoring => {
            let suspicion = state.suspicions.get(&fingerprint);
            let effect = match suspicion {
                Some(suspicion) if suspicion.open => Effect::Join { fingerprint },
                Some(suspicion) if now - suspicion.last_seen <= rules.correlation_window => {
                    Effect::Reopen { fingerprint }
                }
                _ => Effect::Open {
                    fingerprint,
                    kind: Kind::Monitoring,
                },
            };
            let suspicion = state
                .suspicions
                .entry(observation.fingerprint.clone())
                .or_insert(Suspicion {
                    open: false,
                    awaiting_fix: false,
                    last_seen: now,
                });
            suspicion.open = true;
            suspicion.last_seen = now;
            effects.push(effect);
        }
        Kind::Configuration => {
            let recommendation = state
                .recommendations
                .entry(fingerprint.clone())
                .or_insert_with(|| Recommendation {
                    theme_order: observation.theme_order,
                    severity: observation.severity,
                    first_seen: now,
                    failing: true,
                    muted_until: None,
                    ignored: false,
                    standing: Standing::Idle,
                    by_hand: false,
                });
            if !recommendation.failing {
                // Failing again after it passed: its age counts from now.
                recommendation.first_seen = now;
            }
            recommendation.failing = true;
            recommendation.severity = observation.severity;
            recommendation.theme_order = observation.theme_order;
            if recommendation.has_incident() {
                effects.push(Effect::Join { fingerprint });
            }
        }
    }
}

/// Closes the incident of a fingerprint, if it has one; a closed recommendation stops failing
/// when fixed or cleared.
fn close(state: &mut TenantState, fingerprint: &str, closure: Closure, effects: &mut Vec<Effect>) {
    if let Some(recommendation) = state.recommendations.get_mut(fingerprint) {
        if matches!(closure, Closure::Verified | Closure::Fixed) {
            recommendation.failing = false;
        }
        let had_incident = recommendation.has_incident();
        recommendation.standing = Standing::Idle;
        recommendation.by_hand = false;
        if had_incident {
            effects.push(Effect::Resolve {
                fingerprint: fingerprint.to_owned(),
                closure,
            });
        }
    }
    if let Some(suspicion) = state.suspicions.get_mut(fingerprint)
        && suspicion.open
    {
        suspicion.open = false;
        suspicion.awaiting_fix = false;
        effects.push(Effect::Resolve {
            fingerprint: fingerprint.to_owned(),
            closure,
        });
    }
}

fn approve(
    state: &mut TenantState,
    fingerprint: &str,
    effects: &mut Vec<Effect>,
) -> Result<(), Refusal> {
    known(state, fingerprint)?;
    if let Some(recommendation) = state.recommendations.get_mut(fingerprint) {
        if recommendation.standing != Standing::Open {
            return Err(Refusal::NotOpen);
        }
        recommendation.standing = Standing::AwaitingFix;
    } else if let Some(suspicion) = state.suspicions.get_mut(fingerprint) {
        if !suspicion.open || suspicion.awaiting_fix {
            return Err(Refusal::NotOpen);
        }
        suspicion.awaiting_fix = true;
    }
    effects.push(Effect::RequestFix {
        fingerprint: fingerprint.to_owned(),
    });
    Ok(())
}

fn fix_failed(
    state: &mut TenantState,
    fingerprint: &str,
    effects: &mut Vec<Effect>,
) -> Result<(), Refusal> {
    if !awaiting_fix(state, fingerprint) {
        return Err(Refusal::NotOpen);
    }
    if let Some(recommendation) = state.recommendations.get_mut(fingerprint) {
        recommendation.standing = Standing::Open;
    }
    if let Some(suspicion) = state.suspicions.get_mut(fingerprint) {
        suspicion.awaiting_fix = false;
    }
    effects.push(Effect::Reopen {
        fingerprint: fingerprint.to_owned(),
    });
    Ok(())
}

fn open_by_hand(
    state: &mut TenantState,
    fingerprint: &str,
    override_mute: bool,
    now: DateTime<Utc>,
    effects: &mut Vec<Effect>,
) -> Result<(), Refusal> {
    let recommendation = state
        .recommendations
        .get_mut(fingerprint)
        .ok_or(Refusal::UnknownFingerprint)?;
    if recommendation.has_incident() {
        return Err(Refusal::AlreadyOpen);
    }
    if !recommendation.failing {
        return Err(Refusal::NotFailing);
    }
    if recommendation.ignored && !override_mute {
        return Err(Refusal::Ignored);
    }
    if recommendation.muted_at(now) && !override_mute {
        return Err(Refusal::Muted);
    }
    recommendation.ignored = false;
    recommendation.muted_until = None;
    recommendation.standing = Standing::Open;
    recommendation.by_hand = true;
    effects.push(Effect::Open {
        fingerprint: fingerprint.to_owned(),
        kind: Kind::Configuration,
    });
    Ok(())
}

/// Opens eligible recommendations while there is room under the cap and queues the rest; takes
/// recommendations that stopped being eligible out of the queue.
fn fill(
    state: &mut TenantState,
    now: DateTime<Utc>,
    rules: &Rules,
    effects: &mut Vec<Effect>,
    changed: &mut BTreeSet<String>,
) {
    let launched = state.launched_themes;
    for (fingerprint, recommendation) in &mut state.recommendations {
        let mute_ended = recommendation.muted_until.is_some_and(|until| now >= until);
        if mute_ended {
            recommendation.muted_until = None;
        }
        let dequeued =
            recommendation.standing == Standing::Queued && !recommendation.eligible(launched, now);
        if dequeued {
            recommendation.standing = Standing::Idle;
        }
        if mute_ended || dequeued {
            changed.insert(fingerprint.clone());
        }
    }
    let mut open = state.capped_open();
    if open >= rules.cap {
        // No room: eligible recommendations wait in the queue; nothing needs ordering.
        for (fingerprint, recommendation) in &mut state.recommendations {
            if recommendation.standing == Standing::Idle && recommendation.eligible(launched, now) {
                recommendation.standing = Standing::Queued;
                changed.insert(fingerprint.clone());
                effects.push(Effect::Queue {
                    fingerprint: fingerprint.clone(),
                });
            }
        }
        return;
    }
    let mut candidates: Vec<(&String, &mut Recommendation)> = state
        .recommendations
        .iter_mut()
        .filter(|(_, recommendation)| {
            !recommendation.has_incident() && recommendation.eligible(launched, now)
        })
        .collect();
    candidates.sort_by(|(a_id, a), (b_id, b)| queue_order((a_id, a), (b_id, b)));
    for (fingerprint, recommendation) in candidates {
        if open < rules.cap {
            recommendation.standing = Standing::Open;
            open += 1;
            changed.insert(fingerprint.clone());
            effects.push(Effect::Open {
                fingerprint: fingerprint.clone(),
                kind: Kind::Configuration,
            });
        } else if recommendation.standing == Standing::Idle {
            recommendation.standing = Standing::Queued;
            changed.insert(fingerprint.clone());
            effects.push(Effect::Queue {
                fingerprint: fingerprint.clone(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The step as a function returning the new state.
    fn apply(
        state: &TenantState,
        input: &Input,
        now: DateTime<Utc>,
        rules: &Rules,
    ) -> Result<(TenantState, Vec<Effect>), Refusal> {
        let mut next = state.clone();
        let effects = step(&mut next, input, now, rules)?;
        Ok((next, effects))
    }

    const RECOMMENDATIONS: [&str; 6] = ["c0", "c1", "c2", "c3", "c4", "c5"];
    const SUSPICIONS: [&str; 3] = ["m0", "m1", "m2"];

    fn severity(index: u8) -> Severity {
        [
            Severity::Low,
            Severity::Medium,
            Severity::High,
            Severity::Critical,
        ][usize::from(index % 4)]
    }

    fn input_strategy() -> impl Strategy<Value = Input> {
        let recommendation = (0..RECOMMENDATIONS.len()).prop_map(|i| RECOMMENDATIONS[i].to_owned());
        let any_fingerprint = (0..RECOMMENDATIONS.len() + SUSPICIONS.len()).prop_map(|i| {
            RECOMMENDATIONS
                .iter()
                .chain(SUSPICIONS.iter())
                .nth(i)
                .map(|fingerprint| (*fingerprint).to_owned())
                .unwrap_or_default()
        });
        prop_oneof![
            4 => (recommendation.clone(), 0u8..4, 1u32..5).prop_map(|(fingerprint, level, theme)| {
                Input::Observed(Observation {
                    fingerprint,
                    kind: Kind::Configuration,
                    severity: severity(level),
                    theme_order: theme,
                })
            }),
            3 => (0..SUSPICIONS.len()).prop_map(|i| Input::Observed(Observation {
                fingerprint: SUSPICIONS[i].to_owned(),
                kind: Kind::Monitoring,
                severity: Severity::High,
                theme_order: 6,
            })),
            2 => any_fingerprint.clone().prop_map(|fingerprint| Input::Cleared { fingerprint }),
            1 => Just(Input::ThemeLaunched),
            2 => any_fingerprint.clone().prop_map(|fingerprint| Input::Approved { fingerprint }),
            1 => any_fingerprint.clone().prop_map(|fingerprint| Input::FixApplied { fingerprint }),
            1 => any_fingerprint.clone().prop_map(|fingerprint| Input::FixFailed { fingerprint }),
            2 => any_fingerprint.clone().prop_map(|fingerprint| Input::Muted { fingerprint }),
            1 => recommendation.clone().prop_map(|fingerprint| Input::Ignored { fingerprint }),
            1 => recommendation.clone().prop_map(|fingerprint| Input::Unignored { fingerprint }),
            1 => (recommendation, any::<bool>()).prop_map(|(fingerprint, override_mute)| {
                Input::OpenedByHand { fingerprint, override_mute }
            }),
            1 => Just(Input::Tick),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        #[test]
        fn the_rules_hold_for_any_sequence_of_inputs(
            steps in prop::collection::vec((input_strategy(), 0i64..(10 * 24 * 60)), 1..80)
        ) {
            let rules = Rules::default();
            let mut state = TenantState { launched_themes: 1, ..TenantState::default() };
            let mut now = DateTime::<Utc>::from_timestamp(1_790_000_000, 0).unwrap_or_default();
            for (input, minutes) in steps {
                now += Duration::minutes(minutes);
                let before = state.clone();
                let mut after = before.clone();
                let mut changed = BTreeSet::new();
                let Ok(effects) = step_recording(&mut after, &input, now, &rules, &mut changed) else {
                    // A refused input changes nothing.
                    prop_assert_eq!(&after, &before);
                    continue;
                };
                // Every recommendation or suspicion that changed is reported as changed.
                for (fingerprint, recommendation) in &after.recommendations {
                    if before.recommendations.get(fingerprint) != Some(recommendation) {
                        prop_assert!(changed.contains(fingerprint), "{fingerprint} changed unreported");
                    }
                }
                for (fingerprint, suspicion) in &after.suspicions {
                    if before.suspicions.get(fingerprint) != Some(suspicion) {
                        prop_assert!(changed.contains(fingerprint), "{fingerprint} changed unreported");
                    }
                }
                // Never more than K configuration incidents opened on their own.
                prop_assert!(after.capped_open() <= rules.cap);
                // Every monitoring finding is in an open incident.
                if let Input::Observed(observation) = &input
                    && observation.kind == Kind::Monitoring
                {
                    prop_assert!(after.suspicions[&observation.fingerprint].open);
                }
                // A muted recommendation never opens before its mute expires, unless overridden.
                for effect in &effects {
                    if let Effect::Open { fingerprint, kind: Kind::Configuration } = effect {
                        let overridden = matches!(&input, Input::OpenedByHand { override_mute: true, .. });
                        let was_muted = before
                            .recommendations
                            .get(fingerprint)
                            .is_some_and(|recommendation| recommendation.muted_at(now));
                        prop_assert!(!was_muted || overridden, "{fingerprint} opened while muted");
                        let recommendation = &after.recommendations[fingerprint];
                        prop_assert!(recommendation.by_hand || recommendation.theme_order <= after.launched_themes);
                    }
                }
                // No recommendation is lost: each eligible one is open or queued, and the queue
                // only holds while the cap is reached.
                for (fingerprint, recommendation) in &after.recommendations {
                    if recommendation.eligible(after.launched_themes, now) {
                        prop_assert!(
                            recommendation.standing != Standing::Idle,
                            "{fingerprint} is eligible but neither open nor queued"
                        );
                    }
                }
                for (index, fingerprint) in after.queue().into_iter().enumerate() {
                    prop_assert_eq!(after.queue_position(fingerprint), Some(index + 1));
                }
                if !after.queue().is_empty() {
                    prop_assert_eq!(after.capped_open(), rules.cap);
                }
                state = after;
            }
        }
    }

    fn observed(fingerprint: &str, kind: Kind, severity: Severity, theme: u32) -> Input {
        Input::Observed(Observation {
            fingerprint: fingerprint.into(),
            kind,
            severity,
            theme_order: theme,
        })
    }

    fn run(inputs: &[Input], now: DateTime<Utc>) -> (TenantState, Vec<Effect>) {
        let rules = Rules::default();
        let mut state = TenantState {
            launched_themes: 1,
            ..TenantState::default()
        };
        let mut all = Vec::new();
        for input in inputs {
            let (next, effects) = apply(&state, input, now, &rules).expect("accepted");
            state = next;
            all.extend(effects);
        }
        (state, all)
    }

    fn at(day: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_790_000_000 + day * 86_400, 0).unwrap_or_default()
    }

    #[test]
    fn recommendations_beyond_the_cap_wait_by_severity_then_age() {
        let (state, _) = run(
            &[
                observed("a", Kind::Configuration, Severity::Low, 1),
                observed("b", Kind::Configuration, Severity::Medium, 1),
                observed("c", Kind::Configuration, Severity::Medium, 1),
                observed("d", Kind::Configuration, Severity::Critical, 1),
                observed("e", Kind::Configuration, Severity::High, 1),
            ],
            at(0),
        );
        // Open incidents are not preempted: a, b and c opened as they came.
        assert_eq!(state.capped_open(), 3);
        assert_eq!(state.queue(), vec!["d", "e"]);
        let (after, effects) = apply(
            &state,
            &Input::Cleared {
                fingerprint: "a".into(),
            },
            at(1),
            &Rules::default(),
        )
        .expect("cleared");
        assert!(effects.contains(&Effect::Open {
            fingerprint: "d".into(),
            kind: Kind::Configuration
        }));
        assert_eq!(after.queue(), vec!["e"]);
    }

    #[test]
    fn a_recommendation_of_a_theme_not_launched_waits_for_theme_tuesday() {
        let (state, effects) = run(
            &[observed("a", Kind::Configuration, Severity::High, 2)],
            at(0),
        );
        assert!(effects.is_empty());
        let (launched, effects) =
            apply(&state, &Input::ThemeLaunched, at(1), &Rules::default()).expect("launched");
        assert_eq!(launched.recommendations["a"].standing, Standing::Open);
        assert!(effects.contains(&Effect::ThemeLaunched { order: 2 }));
    }

    #[test]
    fn a_muted_recommendation_opens_again_only_after_four_weeks() {
        let rules = Rules::default();
        let (state, _) = run(
            &[observed("a", Kind::Configuration, Severity::High, 1)],
            at(0),
        );
        let (muted, _) = apply(
            &state,
            &Input::Muted {
                fingerprint: "a".into(),
            },
            at(1),
            &rules,
        )
        .expect("muted");
        let (still, effects) = apply(&muted, &Input::Tick, at(28), &rules).expect("tick");
        assert!(effects.is_empty(), "day 28 is inside the mute");
        let (back, effects) = apply(&still, &Input::Tick, at(29), &rules).expect("tick");
        assert_eq!(back.recommendations["a"].standing, Standing::Open);
        assert_eq!(effects.len(), 1);
    }

    #[test]
    fn a_repeat_of_suspicious_behaviour_joins_the_open_incident() {
        let (_, effects) = run(
            &[
                observed("m", Kind::Monitoring, Severity::High, 6),
                observed("m", Kind::Monitoring, Severity::High, 6),
            ],
            at(0),
        );
        assert_eq!(
            effects,
            vec![
                Effect::Open {
                    fingerprint: "m".into(),
                    kind: Kind::Monitoring
                },
                Effect::Join {
                    fingerprint: "m".into()
                },
            ]
        );
    }

    #[test]
    fn a_failed_fix_reopens_and_an_applied_one_resolves_and_opens_the_next() {
        let rules = Rules {
            cap: 1,
            ..Rules::default()
        };
        let mut state = TenantState {
            launched_themes: 1,
            ..TenantState::default()
        };
        for input in [
            observed("a", Kind::Configuration, Severity::High, 1),
            observed("b", Kind::Configuration, Severity::Low, 1),
            Input::Approved {
                fingerprint: "a".into(),
            },
            Input::FixFailed {
                fingerprint: "a".into(),
            },
            Input::Approved {
                fingerprint: "a".into(),
            },
        ] {
            state = apply(&state, &input, at(0), &rules).expect("accepted").0;
        }
        let (after, effects) = apply(
            &state,
            &Input::FixApplied {
                fingerprint: "a".into(),
            },
            at(0),
            &rules,
        )
        .expect("applied");
        assert!(effects.contains(&Effect::Resolve {
            fingerprint: "a".into(),
            closure: Closure::Fixed
        }));
        assert!(effects.contains(&Effect::Open {
            fingerprint: "b".into(),
            kind: Kind::Configuration
        }));
        assert_eq!(after.recommendations["b"].standing, Standing::Open);
    }

    #[test]
    fn opening_an_ignored_recommendation_by_hand_needs_an_override() {
        let rules = Rules::default();
        let (state, _) = run(
            &[
                observed("a", Kind::Configuration, Severity::High, 1),
                Input::Ignored {
                    fingerprint: "a".into(),
                },
            ],
            at(0),
        );
        let refused = apply(
            &state,
            &Input::OpenedByHand {
                fingerprint: "a".into(),
                override_mute: false,
            },
            at(0),
            &rules,
        );
        assert_eq!(refused.err(), Some(Refusal::Ignored));
        let (opened, _) = apply(
            &state,
            &Input::OpenedByHand {
                fingerprint: "a".into(),
                override_mute: true,
            },
            at(0),
            &rules,
        )
        .expect("overridden");
        assert_eq!(opened.recommendations["a"].standing, Standing::Open);
    }
}
