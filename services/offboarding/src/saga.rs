//! An offboarding as a state machine: disconnecting (the services stop working for the tenant)
//! → scheduled (data kept for the retention) → purging (every data-holding service deletes and
//! confirms) → completed (a deletion certificate); cancellable until the purge starts. Every
//! transition is a method on a locked [`Saga`] that returns the event to publish, and every step
//! is safe to repeat: a confirmation counts once, a service that does not confirm in time is
//! asked again.

use chrono::{DateTime, Utc};
use picket_platform::time::{to_duration, to_timestamp};
use picket_proto::common::v1 as common;
use picket_proto::offboarding::v1 as offboarding;
use sqlx::types::Json;
use tonic::Status;
use uuid::Uuid;

use crate::store::{Deleted, OffboardingRow, ProgressRow};

pub const DISCONNECTING: &str = "disconnecting";
pub const SCHEDULED: &str = "scheduled";
pub const PURGING: &str = "purging";
pub const COMPLETED: &str = "completed";
pub const CANCELLED: &str = "cancelled";

const DISCONNECT: &str = "disconnect";
const PURGE: &str = "purge";

/// Who asks, and the deadlines.
pub struct Plan<'a> {
    pub disconnect_services: &'a [String],
    pub purge_services: &'a [String],
    pub confirm_within: chrono::Duration,
}

/// An offboarding and its progress, as locked in a transaction.
pub struct Saga {
    pub row: OffboardingRow,
    pub progress: Vec<ProgressRow>,
}

fn step_row(offboarding_id: Uuid, service: &str, step: &str) -> ProgressRow {
    ProgressRow {
        offboarding_id,
        service: service.to_owned(),
        step: step.to_owned(),
        status: "pending".into(),
        first_requested_at: None,
        last_requested_at: None,
        request_count: 0,
        next_request_at: None,
        confirmed_at: None,
        tables: Json(Vec::new()),
        confirmation_event_id: String::new(),
    }
}

/// Marks a step row asked (again) at `now`.
fn ask(step: &mut ProgressRow, now: DateTime<Utc>, within: chrono::Duration) {
    step.status = "requested".into();
    step.first_requested_at.get_or_insert(now);
    step.last_requested_at = Some(now);
    step.request_count += 1;
    step.next_request_at = Some(now + within);
}

impl Saga {
    /// A new offboarding: every disconnect service is asked now.
    pub fn start(
        row: OffboardingRow,
        plan: &Plan<'_>,
        now: DateTime<Utc>,
    ) -> (Saga, offboarding::OffboardingRequested) {
        let mut progress: Vec<ProgressRow> = plan
            .disconnect_services
            .iter()
            .map(|service| step_row(row.offboarding_id, service, DISCONNECT))
            .chain(
                plan.purge_services
                    .iter()
                    .map(|service| step_row(row.offboarding_id, service, PURGE)),
            )
            .collect();
        for step in progress.iter_mut().filter(|step| step.step == DISCONNECT) {
            ask(step, now, plan.confirm_within);
        }
        let mut saga = Saga { row, progress };
        // With no service to wait for, the tenant is disconnected at once.
        saga.advance_disconnect(now);
        let requested = saga.requested();
        (saga, requested)
    }

    fn requested(&self) -> offboarding::OffboardingRequested {
        let row = &self.row;
        offboarding::OffboardingRequested {
            partner_id: row.partner_id.clone(),
            tenant_id: row.tenant_id.clone(),
            offboarding_id: row.offboarding_id.to_string(),
            reason: row.reason.clone(),
            retention: Some(to_duration(std::time::Duration::from_secs(
                u64::try_from(row.retention_seconds).unwrap_or_default(),
            ))),
            purge_due_at: Some(to_timestamp(row.purge_due_at)),
            requested_by: Some(common::Principal {
                subject: row.requested_by.clone(),
                role: row.requested_role,
                ..Default::default()
            }),
            requested_at: Some(to_timestamp(row.requested_at)),
            tenant_display_name: row.tenant_display_name.clone(),
        }
    }

    fn advance_disconnect(&mut self, now: DateTime<Utc>) {
        let all_confirmed = self
            .progress
            .iter()
            .filter(|step| step.step == DISCONNECT)
            .all(|step| step.status == "confirmed");
        if self.row.state == DISCONNECTING && all_confirmed {
            self.row.state = SCHEDULED.into();
            self.row.disconnected_at = Some(now);
        }
    }

    /// A service confirmed the disconnection; returns whether anything changed.
    pub fn confirm_disconnect(
        &mut self,
        service: &str,
        event_id: &str,
        tokens_dropped: bool,
        now: DateTime<Utc>,
    ) -> bool {
        let Some(step) = self
            .progress
            .iter_mut()
            .find(|step| step.step == DISCONNECT && step.service == service)
        else {
            return false;
        };
        if step.status == "confirmed" {
            return false;
        }
        step.status = "confirmed".into();
        step.confirmed_at = Some(now);
        step.next_request_at = None;
        step.confirmation_event_id = event_id.to_owned();
        self.row.tokens_dropped |= tokens_dropped;
        self.advance_disconnect(now);
        self.row.updated_at = now;
        true
    }

    /// Starts the purge if it is due: asks every purge service.
    pub fn start_purge(
        &mut self,
        now: DateTime<Utc>,
        within: chrono::Duration,
    ) -> Option<offboarding::PurgeRequested> {
        if self.row.state != SCHEDULED || self.row.purge_due_at > now {
            return None;
        }
        self.row.state = PURGING.into();
        self.row.purge_started_at = Some(now);
        self.row.updated_at = now;
        let services: Vec<String> = self
            .progress
            .iter_mut()
            .filter(|step| step.step == PURGE && step.status != "confirmed")
            .map(|step| {
                ask(step, now, within);
                step.service.clone()
            })
            .collect();
        Some(self.purge_request(services, now, within))
    }

    fn purge_request(
        &mut self,
        services: Vec<String>,
        now: DateTime<Utc>,
        within: chrono::Duration,
    ) -> offboarding::PurgeRequested {
        self.row.purge_attempt += 1;
        offboarding::PurgeRequested {
            partner_id: self.row.partner_id.clone(),
            tenant_id: self.row.tenant_id.clone(),
            offboarding_id: self.row.offboarding_id.to_string(),
            services,
            requested_at: Some(to_timestamp(now)),
            attempt: u32::try_from(self.row.purge_attempt).unwrap_or(u32::MAX),
            respond_by: Some(to_timestamp(now + within)),
        }
    }

    /// Asks again the services of the current step that did not confirm in time.
    pub fn ask_again(&mut self, now: DateTime<Utc>, within: chrono::Duration) -> Option<Asked> {
        let step_name = match self.row.state.as_str() {
            DISCONNECTING => DISCONNECT,
            PURGING => PURGE,
            _ => return None,
        };
        let services: Vec<String> = self
            .progress
            .iter_mut()
            .filter(|step| {
                step.step == step_name
                    && step.status != "confirmed"
                    && step.next_request_at.is_some_and(|due| due <= now)
            })
            .map(|step| {
                ask(step, now, within);
                step.service.clone()
            })
            .collect();
        if services.is_empty() {
            return None;
        }
        self.row.updated_at = now;
        tracing::warn!(offboarding_id = %self.row.offboarding_id, ?services, step = step_name, "asking again");
        Some(if step_name == DISCONNECT {
            Asked::Disconnect(self.requested())
        } else {
            Asked::Purge(self.purge_request(services, now, within))
        })
    }

    /// A service confirmed its purge: `None` when that was known already (or is not awaited),
    /// else whether it completes the offboarding.
    pub fn confirm_purge(
        &mut self,
        service: &str,
        tables: Vec<Deleted>,
        event_id: &str,
        now: DateTime<Utc>,
    ) -> Option<bool> {
        let step = self
            .progress
            .iter_mut()
            .find(|step| step.step == PURGE && step.service == service)?;
        if step.status == "confirmed" || self.row.state != PURGING {
            return None;
        }
        step.status = "confirmed".into();
        step.confirmed_at = Some(now);
        step.next_request_at = None;
        step.tables = Json(tables);
        step.confirmation_event_id = event_id.to_owned();
        self.row.updated_at = now;
        let done = self
            .progress
            .iter()
            .filter(|step| step.step == PURGE)
            .all(|step| step.status == "confirmed");
        if done {
            self.row.state = COMPLETED.into();
            self.row.completed_at = Some(now);
        }
        Some(done)
    }

    /// Cancels before the purge.
    pub fn cancel(
        &mut self,
        reason: &str,
        by: &common::Principal,
        now: DateTime<Utc>,
    ) -> Result<offboarding::OffboardingCancelled, Status> {
        let cancelled_in = state_proto(&self.row.state);
        if self.row.state != DISCONNECTING && self.row.state != SCHEDULED {
            return Err(Status::failed_precondition(format!(
                "offboarding_id: offboarding {} is {} and can no longer be cancelled",
                self.row.offboarding_id, self.row.state
            )));
        }
        self.row.state = CANCELLED.into();
        self.row.cancelled_at = Some(now);
        self.row.cancel_reason = reason.to_owned();
        self.row.cancelled_by = by.subject.clone();
        self.row.cancelled_role = by.role;
        self.row.updated_at = now;
        for step in self
            .progress
            .iter_mut()
            .filter(|step| step.status != "confirmed")
        {
            step.next_request_at = None;
        }
        Ok(offboarding::OffboardingCancelled {
            partner_id: self.row.partner_id.clone(),
            tenant_id: self.row.tenant_id.clone(),
            offboarding_id: self.row.offboarding_id.to_string(),
            reason: reason.to_owned(),
            cancelled_by: Some(by.clone()),
            cancelled_at: Some(to_timestamp(now)),
            consent_required: self.consent_required(),
            cancelled_in_state: cancelled_in.into(),
        })
    }

    /// Whether the tenant needs a new consent to come back: its tokens were dropped, or may be
    /// (the scanner drops them as it disconnects, which it may not have confirmed yet).
    pub fn consent_required(&self) -> bool {
        self.row.tokens_dropped || self.row.state == CANCELLED && self.row.disconnected_at.is_none()
    }

    /// The offboarding as the API shows it at `now`.
    pub fn to_proto(&self, now: DateTime<Utc>) -> offboarding::Offboarding {
        let row = &self.row;
        let current = match row.state.as_str() {
            DISCONNECTING => Some(DISCONNECT),
            PURGING => Some(PURGE),
            _ => None,
        };
        let principal = |subject: &str, role: i32| {
            (!subject.is_empty()).then(|| common::Principal {
                subject: subject.to_owned(),
                role,
                ..Default::default()
            })
        };
        offboarding::Offboarding {
            offboarding_id: row.offboarding_id.to_string(),
            partner_id: row.partner_id.clone(),
            tenant_id: row.tenant_id.clone(),
            reason: row.reason.clone(),
            retention: Some(to_duration(std::time::Duration::from_secs(
                u64::try_from(row.retention_seconds).unwrap_or_default(),
            ))),
            state: state_proto(&row.state).into(),
            requested_by: principal(&row.requested_by, row.requested_role),
            requested_at: Some(to_timestamp(row.requested_at)),
            disconnected_at: row.disconnected_at.map(to_timestamp),
            purge_due_at: Some(to_timestamp(row.purge_due_at)),
            purge_started_at: row.purge_started_at.map(to_timestamp),
            completed_at: row.completed_at.map(to_timestamp),
            cancelled_at: row.cancelled_at.map(to_timestamp),
            cancel_reason: row.cancel_reason.clone(),
            cancelled_by: principal(&row.cancelled_by, row.cancelled_role),
            progress: self
                .progress
                .iter()
                .map(|step| progress_proto(step, now))
                .collect(),
            waiting_for: self
                .progress
                .iter()
                .filter(|step| Some(step.step.as_str()) == current && step.status != "confirmed")
                .map(|step| step.service.clone())
                .collect(),
            certificate_id: row
                .certificate_id
                .map(|id| id.to_string())
                .unwrap_or_default(),
            tenant_display_name: row.tenant_display_name.clone(),
            updated_at: Some(to_timestamp(row.updated_at)),
        }
    }
}

/// What asking again publishes.
pub enum Asked {
    Disconnect(offboarding::OffboardingRequested),
    Purge(offboarding::PurgeRequested),
}

pub fn state_proto(state: &str) -> offboarding::OffboardingState {
    match state {
        DISCONNECTING => offboarding::OffboardingState::Disconnecting,
        SCHEDULED => offboarding::OffboardingState::Scheduled,
        PURGING => offboarding::OffboardingState::Purging,
        COMPLETED => offboarding::OffboardingState::Completed,
        _ => offboarding::OffboardingState::Cancelled,
    }
}

pub fn state_name(state: offboarding::OffboardingState) -> Option<&'static str> {
    match state {
        offboarding::OffboardingState::Disconnecting => Some(DISCONNECTING),
        offboarding::OffboardingState::Scheduled => Some(SCHEDULED),
        offboarding::OffboardingState::Purging => Some(PURGING),
        offboarding::OffboardingState::Completed => Some(COMPLETED),
        offboarding::OffboardingState::Cancelled => Some(CANCELLED),
        offboarding::OffboardingState::Unspecified => None,
    }
}

fn progress_proto(step: &ProgressRow, now: DateTime<Utc>) -> offboarding::ServiceProgress {
    let status = match step.status.as_str() {
        "confirmed" => offboarding::StepStatus::Confirmed,
        "pending" => offboarding::StepStatus::Pending,
        _ if step.next_request_at.is_some_and(|due| due <= now) => offboarding::StepStatus::Overdue,
        _ => offboarding::StepStatus::Requested,
    };
    offboarding::ServiceProgress {
        service: step.service.clone(),
        step: if step.step == DISCONNECT {
            offboarding::OffboardingStep::Disconnect.into()
        } else {
            offboarding::OffboardingStep::Purge.into()
        },
        status: status.into(),
        first_requested_at: step.first_requested_at.map(to_timestamp),
        last_requested_at: step.last_requested_at.map(to_timestamp),
        request_count: u32::try_from(step.request_count).unwrap_or_default(),
        next_request_at: step.next_request_at.map(to_timestamp),
        confirmed_at: step.confirmed_at.map(to_timestamp),
        tables: step
            .tables
            .iter()
            .map(|table| offboarding::PurgedTable {
                table: table.table.clone(),
                row_count: table.row_count,
            })
            .collect(),
        confirmation_event_id: step.confirmation_event_id.clone(),
    }
}
