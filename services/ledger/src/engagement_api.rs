//! EngagementService: a partner asks for incident response (for an incident or in free text,
//! saying how it asked) and stays the investigator's first point of contact; an estimate places a
//! hold; investigators are assigned and log work, debited from the hold first and then the oldest
//! pack; recommendations are recorded during the investigation or when it closes, and closing
//! releases what the hold still reserves.

use chrono::{DateTime, Utc};
use picket_platform::Principal;
use picket_platform::auth::{Role, check_partner_id, check_tenant_id};
use picket_platform::grpc::{
    internal, next_offset_token, page_size, parse_each, parse_offset_token, parse_optional_uuid,
    parse_uuid, positive_duration, time_range,
};
use picket_platform::time::{from_timestamp, to_timestamp};
use picket_proto::common::v1 as common;
use picket_proto::ledger::v1 as ledger;
use picket_proto::ledger::v1::engagement_service_server::EngagementService;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::api::{LedgerApi, check_key};
use crate::batch::{Action, Call, Created, Links, NewHold};
use crate::engagements::{self, EngagementRow, Recommendation};
use crate::engine::{HoldState, Operation, TransferKind};
use crate::store::{self, WorkEntryRow};

/// How long an engagement's estimate stays reserved when the request does not say.
const DEFAULT_HOLD_TIMEOUT: chrono::Duration = chrono::Duration::days(30);
const MAX_RECOMMENDATIONS: usize = 100;

pub struct EngagementApi {
    ledger: LedgerApi,
}

impl EngagementApi {
    pub fn new(ledger: LedgerApi) -> EngagementApi {
        EngagementApi { ledger }
    }
}

fn recommendations(
    inputs: &[ledger::RecommendationInput],
    recorded_by: &str,
    now: DateTime<Utc>,
) -> Result<Vec<Recommendation>, Status> {
    if inputs.len() > MAX_RECOMMENDATIONS {
        return Err(Status::invalid_argument(format!(
            "recommendations: at most {MAX_RECOMMENDATIONS} at a time"
        )));
    }
    inputs
        .iter()
        .enumerate()
        .map(|(index, input)| {
            if input.title.trim().is_empty() {
                return Err(Status::invalid_argument(format!(
                    "recommendations[{index}].title: is required"
                )));
            }
            Ok(Recommendation {
                recommendation_id: Uuid::now_v7(),
                title: input.title.clone(),
                detail: input.detail.clone(),
                priority: input.priority,
                recorded_at: now,
                recorded_by: recorded_by.to_owned(),
            })
        })
        .collect()
}

pub(crate) fn open(
    call: &mut Call<'_>,
    request: &ledger::OpenEngagementRequest,
    timeout: chrono::Duration,
) -> Result<ledger::OpenEngagementResponse, Status> {
    let engagement_id = Uuid::now_v7();
    let hold_id = (request.estimated_minutes > 0).then(Uuid::now_v7);
    if let Some(hold_id) = hold_id {
        let description = format!("estimate of engagement {engagement_id}");
        call.apply(
            &Operation::PlaceHold {
                hold_id,
                minutes: request.estimated_minutes,
                expires_at: call.now + timeout,
            },
            &description,
            &Created {
                pack: None,
                hold: Some(NewHold {
                    engagement_id: Some(engagement_id),
                    description: &description,
                }),
            },
            Links {
                engagement_id: Some(engagement_id),
                work_entry_id: None,
            },
        )?;
    }
    let engagement = EngagementRow {
        engagement_id,
        partner_id: request.partner_id.clone(),
        tenant_id: request.tenant_id.clone(),
        incident_id: request.incident_id.clone(),
        request: request.request.clone(),
        channel: request.channel,
        state: "open".into(),
        partner_contact_name: request.partner_contact_name.clone(),
        partner_contact_email: request.partner_contact_email.clone(),
        partner_contact_phone: request.partner_contact_phone.clone(),
        opened_by: call.actor.subject.clone(),
        opened_role: call.actor.role,
        opened_at: call.now,
        closed_at: None,
        investigator_subject: String::new(),
        estimated_minutes: request.estimated_minutes,
        logged_minutes: 0,
        hold_id,
        summary: String::new(),
        recommendations: sqlx::types::Json(Vec::new()),
    };
    let proto = engagement.to_proto(call.reserved(hold_id));
    call.add_engagement(engagement);
    let hold = hold_id.map(|hold_id| call.hold(hold_id)).transpose()?;
    call.publish(&ledger::EngagementOpened {
        partner_id: request.partner_id.clone(),
        tenant_id: request.tenant_id.clone(),
        engagement: Some(proto.clone()),
        hold_id: hold_id.map(|id| id.to_string()).unwrap_or_default(),
    })?;
    tracing::info!(%engagement_id, partner_id = %request.partner_id, "engagement opened");
    Ok(ledger::OpenEngagementResponse {
        engagement: Some(proto),
        hold,
        replayed: false,
    })
}

/// The engagement as the API shows it within a call.
fn shown(call: &mut Call<'_>, engagement_id: Uuid) -> Result<ledger::Engagement, Status> {
    let engagement = call.engagement(engagement_id)?.clone();
    Ok(engagement.to_proto(call.reserved(engagement.hold_id)))
}

pub(crate) fn assign(
    call: &mut Call<'_>,
    engagement_id: Uuid,
    investigator_subject: &str,
) -> Result<ledger::AssignInvestigatorResponse, Status> {
    call.open_engagement(engagement_id)?.investigator_subject = investigator_subject.to_owned();
    let engagement = shown(call, engagement_id)?;
    call.publish(&ledger::EngagementAssigned {
        partner_id: engagement.partner_id.clone(),
        tenant_id: engagement.tenant_id.clone(),
        engagement: Some(engagement.clone()),
        assigned_at: Some(to_timestamp(call.now)),
    })?;
    tracing::info!(%engagement_id, investigator = investigator_subject, "investigator assigned");
    Ok(ledger::AssignInvestigatorResponse {
        engagement: Some(engagement),
        replayed: false,
    })
}

pub(crate) fn log_work(
    call: &mut Call<'_>,
    request: &ledger::LogWorkRequest,
    engagement_id: Uuid,
    performed_at: Option<DateTime<Utc>>,
) -> Result<ledger::LogWorkResponse, Status> {
    call.require_assigned(engagement_id)?;
    let engagement_hold = call.open_engagement(engagement_id)?.hold_id;
    let investigator = call.actor.clone();
    let hold_id = engagement_hold.filter(|hold_id| call.reserved(Some(*hold_id)) > 0);
    let work_entry_id = Uuid::now_v7();
    let transfers = call.apply(
        &Operation::Work {
            minutes: request.minutes,
            hold_id,
        },
        &request.description,
        &Created::default(),
        Links {
            engagement_id: Some(engagement_id),
            work_entry_id: Some(work_entry_id),
        },
    )?;
    call.open_engagement(engagement_id)?.logged_minutes += request.minutes;
    let debits: Vec<(Option<Uuid>, i64)> = transfers
        .iter()
        .filter(|transfer| transfer.kind == TransferKind::WorkDebit)
        .map(|transfer| (transfer.pack_id, transfer.amount))
        .collect();
    let transfer_ids: Vec<Uuid> = transfers
        .iter()
        .map(|transfer| transfer.transfer_id)
        .collect();
    let now = call.now;
    let performed_at = performed_at.unwrap_or(now);
    let pack_debits: Vec<ledger::PackDebit> = debits
        .iter()
        .map(|(pack_id, minutes)| ledger::PackDebit {
            pack_id: pack_id.map(|id| id.to_string()).unwrap_or_default(),
            minutes: *minutes,
        })
        .collect();
    let entry = WorkEntryRow {
        work_entry_id,
        engagement_id,
        partner_id: request.partner_id.clone(),
        investigator_subject: investigator.subject.clone(),
        investigator_role: investigator.role,
        minutes: request.minutes,
        description: request.description.clone(),
        performed_at,
        logged_at: now,
        idempotency_key: request.idempotency_key.clone(),
        debits,
        transfer_ids,
    };
    let proto = work_entry_proto(&entry);
    call.add_work_entry(entry);
    let engagement = call.engagement(engagement_id)?.clone();
    let balance = call.balance();
    call.publish(&ledger::CreditsDebited {
        partner_id: request.partner_id.clone(),
        tenant_id: engagement.tenant_id.clone(),
        engagement_id: engagement_id.to_string(),
        work_entry_id: work_entry_id.to_string(),
        minutes: request.minutes,
        debits: pack_debits,
        investigator: Some(investigator),
        description: request.description.clone(),
        available_minutes: balance.available_minutes,
        debited_at: Some(to_timestamp(now)),
        hold_id: hold_id.map(|id| id.to_string()).unwrap_or_default(),
        incident_id: engagement.incident_id.clone(),
        transfer_ids: proto.transfer_ids.clone(),
    })?;
    Ok(ledger::LogWorkResponse {
        entry: Some(proto),
        engagement: Some(engagement.to_proto(call.reserved(engagement.hold_id))),
        balance: Some(balance),
        replayed: false,
    })
}

pub(crate) fn recommend(
    call: &mut Call<'_>,
    engagement_id: Uuid,
    recommendations: &[Recommendation],
) -> Result<ledger::RecordRecommendationsResponse, Status> {
    call.require_assigned(engagement_id)?;
    call.open_engagement(engagement_id)?
        .recommendations
        .0
        .extend_from_slice(recommendations);
    Ok(ledger::RecordRecommendationsResponse {
        engagement: Some(shown(call, engagement_id)?),
        replayed: false,
    })
}

pub(crate) fn close(
    call: &mut Call<'_>,
    engagement_id: Uuid,
    summary: &str,
    recommendations: &[Recommendation],
) -> Result<ledger::CloseEngagementResponse, Status> {
    call.require_assigned(engagement_id)?;
    let hold_id = call.open_engagement(engagement_id)?.hold_id;
    let released = call.reserved(hold_id);
    if let Some(hold_id) = hold_id.filter(|_| released > 0) {
        call.apply(
            &Operation::ReleaseHold {
                hold_id,
                state: HoldState::Closed,
            },
            "engagement closed",
            &Created::default(),
            Links {
                engagement_id: Some(engagement_id),
                work_entry_id: None,
            },
        )?;
    }
    let now = call.now;
    let engagement = call.engagement(engagement_id)?;
    engagement.state = "closed".into();
    engagement.closed_at = Some(now);
    engagement.summary = summary.to_owned();
    engagement
        .recommendations
        .0
        .extend_from_slice(recommendations);
    let engagement = engagement.clone();
    let balance = call.balance();
    let proto = engagement.to_proto(0);
    call.publish(&ledger::EngagementClosed {
        partner_id: engagement.partner_id.clone(),
        tenant_id: engagement.tenant_id.clone(),
        engagement: Some(proto.clone()),
        used_minutes: engagement.logged_minutes,
        released_minutes: released,
        closed_at: Some(to_timestamp(now)),
    })?;
    tracing::info!(%engagement_id, released, "engagement closed");
    Ok(ledger::CloseEngagementResponse {
        engagement: Some(proto),
        released_minutes: released,
        balance: Some(balance),
        replayed: false,
    })
}

fn work_entry_proto(entry: &WorkEntryRow) -> ledger::WorkEntry {
    ledger::WorkEntry {
        work_entry_id: entry.work_entry_id.to_string(),
        engagement_id: entry.engagement_id.to_string(),
        partner_id: entry.partner_id.clone(),
        investigator: Some(common::Principal {
            subject: entry.investigator_subject.clone(),
            role: entry.investigator_role,
            ..Default::default()
        }),
        minutes: entry.minutes,
        description: entry.description.clone(),
        performed_at: Some(to_timestamp(entry.performed_at)),
        logged_at: Some(to_timestamp(entry.logged_at)),
        debits: entry
            .debits
            .iter()
            .map(|(pack_id, minutes)| ledger::PackDebit {
                pack_id: pack_id.map(|id| id.to_string()).unwrap_or_default(),
                minutes: *minutes,
            })
            .collect(),
        transfer_ids: entry.transfer_ids.iter().map(Uuid::to_string).collect(),
        idempotency_key: entry.idempotency_key.clone(),
    }
}

/// Whether `principal` may read `engagement`: the operator and the partner's staff, or the
/// investigator it is assigned to.
pub(crate) fn may_read(principal: &Principal, engagement: &EngagementRow) -> bool {
    principal.can_access_partner(&engagement.partner_id)
        || (principal.role == Role::Investigator
            && engagement.investigator_subject == principal.subject)
}

#[tonic::async_trait]
impl EngagementService for EngagementApi {
    async fn open_engagement(
        &self,
        request: Request<ledger::OpenEngagementRequest>,
    ) -> Result<Response<ledger::OpenEngagementResponse>, Status> {
        let principal = Principal::of(&request)?.clone();
        let message = request.into_inner();
        check_partner_id(&message.partner_id)?;
        check_tenant_id(&message.tenant_id)?;
        check_key(&message.idempotency_key)?;
        principal.require_role(&[Role::Operator, Role::Partner])?;
        principal.require_partner(&message.partner_id)?;
        if message.request.trim().is_empty() && message.incident_id.is_empty() {
            return Err(Status::invalid_argument(
                "request: say what is asked, or name the incident_id",
            ));
        }
        ledger::RequestChannel::try_from(message.channel)
            .ok()
            .filter(|channel| *channel != ledger::RequestChannel::Unspecified)
            .ok_or_else(|| {
                Status::invalid_argument("channel: chat, e-mail, telephone or API is required")
            })?;
        if message.estimated_minutes < 0 {
            return Err(Status::invalid_argument(
                "estimated_minutes: must not be negative",
            ));
        }
        let timeout = positive_duration(
            message.hold_timeout.as_ref(),
            DEFAULT_HOLD_TIMEOUT,
            "hold_timeout",
        )?;
        let action = Action::OpenEngagement {
            request: message.clone(),
            timeout,
        };
        self.ledger
            .submit(
                &principal,
                "open_engagement",
                (&message.partner_id, &message.idempotency_key),
                &message,
                action,
            )
            .await
    }

    async fn get_engagement(
        &self,
        request: Request<ledger::GetEngagementRequest>,
    ) -> Result<Response<ledger::GetEngagementResponse>, Status> {
        let principal = Principal::of(&request)?.clone();
        let engagement_id = parse_uuid(&request.get_ref().engagement_id, "engagement_id")?;
        principal.require_role(&[Role::Operator, Role::Investigator, Role::Partner])?;
        let engagement = engagements::get(&self.ledger.pool, engagement_id)
            .await
            .map_err(internal)?
            .filter(|engagement| may_read(&principal, engagement))
            .ok_or_else(|| {
                Status::not_found(format!("engagement_id: no engagement {engagement_id}"))
            })?;
        let held = match engagement.hold_id {
            Some(hold_id) => store::hold(&self.ledger.pool, hold_id)
                .await
                .map_err(internal)?
                .filter(|hold| hold.state == HoldState::Pending)
                .map_or(0, |hold| hold.amount - hold.used),
            None => 0,
        };
        Ok(Response::new(ledger::GetEngagementResponse {
            engagement: Some(engagement.to_proto(held)),
        }))
    }

    async fn list_engagements(
        &self,
        request: Request<ledger::ListEngagementsRequest>,
    ) -> Result<Response<ledger::ListEngagementsResponse>, Status> {
        let principal = Principal::of(&request)?.clone();
        let message = request.into_inner();
        check_partner_id(&message.partner_id)?;
        principal.require_role(&[Role::Operator, Role::Investigator, Role::Partner])?;
        // An investigator lists only what is assigned to them.
        let investigator_subject = if principal.role == Role::Investigator {
            principal.subject.as_str()
        } else {
            principal.require_partner(&message.partner_id)?;
            message.investigator_subject.as_str()
        };
        let states = parse_each(&message.states, "states", "an engagement state", |value| {
            match ledger::EngagementState::try_from(value).ok()? {
                ledger::EngagementState::Open => Some("open"),
                ledger::EngagementState::Closed => Some("closed"),
                ledger::EngagementState::Unspecified => None,
            }
        })?;
        let limit = page_size(message.page_size, 50, 500)?;
        let offset = parse_offset_token(&message.page_token)?;
        let rows = engagements::list(
            &self.ledger.pool,
            &engagements::Filter {
                partner_id: &message.partner_id,
                tenant_id: &message.tenant_id,
                investigator_subject,
                states: &states,
            },
            offset,
            limit,
        )
        .await
        .map_err(internal)?;
        Ok(Response::new(ledger::ListEngagementsResponse {
            next_page_token: next_offset_token(offset, rows.len(), limit),
            engagements: rows.iter().map(|row| row.to_proto(0)).collect(),
        }))
    }

    async fn assign_investigator(
        &self,
        request: Request<ledger::AssignInvestigatorRequest>,
    ) -> Result<Response<ledger::AssignInvestigatorResponse>, Status> {
        let principal = Principal::of(&request)?.clone();
        let message = request.into_inner();
        check_partner_id(&message.partner_id)?;
        check_key(&message.idempotency_key)?;
        principal.require_role(&[Role::Operator])?;
        let engagement_id = parse_uuid(&message.engagement_id, "engagement_id")?;
        if message.investigator_subject.trim().is_empty() {
            return Err(Status::invalid_argument(
                "investigator_subject: is required",
            ));
        }
        let action = Action::AssignInvestigator {
            engagement_id,
            investigator_subject: message.investigator_subject.clone(),
        };
        self.ledger
            .submit(
                &principal,
                "assign_investigator",
                (&message.partner_id, &message.idempotency_key),
                &message,
                action,
            )
            .await
    }

    async fn log_work(
        &self,
        request: Request<ledger::LogWorkRequest>,
    ) -> Result<Response<ledger::LogWorkResponse>, Status> {
        let principal = Principal::of(&request)?.clone();
        let message = request.into_inner();
        check_partner_id(&message.partner_id)?;
        check_key(&message.idempotency_key)?;
        principal.require_role(&[Role::Operator, Role::Investigator])?;
        let engagement_id = parse_uuid(&message.engagement_id, "engagement_id")?;
        if message.minutes <= 0 {
            return Err(Status::invalid_argument("minutes: must be positive"));
        }
        if message.description.trim().is_empty() {
            return Err(Status::invalid_argument("description: is required"));
        }
        let performed_at = message
            .performed_at
            .as_ref()
            .map(|timestamp| {
                from_timestamp(timestamp)
                    .ok_or_else(|| Status::invalid_argument("performed_at: out of range"))
            })
            .transpose()?;
        let action = Action::LogWork {
            request: message.clone(),
            engagement_id,
            performed_at,
        };
        self.ledger
            .submit(
                &principal,
                "log_work",
                (&message.partner_id, &message.idempotency_key),
                &message,
                action,
            )
            .await
    }

    async fn list_work_entries(
        &self,
        request: Request<ledger::ListWorkEntriesRequest>,
    ) -> Result<Response<ledger::ListWorkEntriesResponse>, Status> {
        let principal = Principal::of(&request)?.clone();
        let message = request.into_inner();
        check_partner_id(&message.partner_id)?;
        principal.require_role(&[Role::Operator, Role::Investigator, Role::Partner])?;
        let engagement_id = parse_optional_uuid(&message.engagement_id, "engagement_id")?;
        if principal.role == Role::Investigator {
            // An investigator reads the work of an engagement assigned to them, nothing wider.
            let Some(engagement_id) = engagement_id else {
                return Err(Status::permission_denied(
                    "engagement_id: an investigator lists the work of one engagement assigned to them",
                ));
            };
            engagements::get(&self.ledger.pool, engagement_id)
                .await
                .map_err(internal)?
                .filter(|engagement| {
                    engagement.partner_id == message.partner_id && may_read(&principal, engagement)
                })
                .ok_or_else(|| {
                    Status::not_found(format!("engagement_id: no engagement {engagement_id}"))
                })?;
        } else {
            principal.require_partner(&message.partner_id)?;
        }
        let (from, until) = time_range(message.logged.as_ref(), "logged")?;
        let limit = page_size(message.page_size, 100, 1000)?;
        let offset = parse_offset_token(&message.page_token)?;
        let entries = engagements::work_entries(
            &self.ledger.pool,
            &message.partner_id,
            engagement_id,
            (from, until),
            offset,
            limit,
        )
        .await
        .map_err(internal)?;
        Ok(Response::new(ledger::ListWorkEntriesResponse {
            next_page_token: next_offset_token(offset, entries.len(), limit),
            entries: entries.iter().map(work_entry_proto).collect(),
        }))
    }

    async fn record_recommendations(
        &self,
        request: Request<ledger::RecordRecommendationsRequest>,
    ) -> Result<Response<ledger::RecordRecommendationsResponse>, Status> {
        let principal = Principal::of(&request)?.clone();
        let message = request.into_inner();
        check_partner_id(&message.partner_id)?;
        check_key(&message.idempotency_key)?;
        principal.require_role(&[Role::Operator, Role::Investigator])?;
        let engagement_id = parse_uuid(&message.engagement_id, "engagement_id")?;
        if message.recommendations.is_empty() {
            return Err(Status::invalid_argument(
                "recommendations: at least one is required",
            ));
        }
        let recorded = recommendations(
            &message.recommendations,
            &principal.to_proto().subject,
            Utc::now(),
        )?;
        let action = Action::RecordRecommendations {
            engagement_id,
            recommendations: recorded,
        };
        self.ledger
            .submit(
                &principal,
                "record_recommendations",
                (&message.partner_id, &message.idempotency_key),
                &message,
                action,
            )
            .await
    }

    async fn close_engagement(
        &self,
        request: Request<ledger::CloseEngagementRequest>,
    ) -> Result<Response<ledger::CloseEngagementResponse>, Status> {
        let principal = Principal::of(&request)?.clone();
        let message = request.into_inner();
        check_partner_id(&message.partner_id)?;
        check_key(&message.idempotency_key)?;
        principal.require_role(&[Role::Operator, Role::Investigator])?;
        let engagement_id = parse_uuid(&message.engagement_id, "engagement_id")?;
        let recorded = recommendations(
            &message.recommendations,
            &principal.to_proto().subject,
            Utc::now(),
        )?;
        let action = Action::CloseEngagement {
            engagement_id,
            summary: message.summary.clone(),
            recommendations: recorded,
        };
        self.ledger
            .submit(
                &principal,
                "close_engagement",
                (&message.partner_id, &message.idempotency_key),
                &message,
                action,
            )
            .await
    }
}
