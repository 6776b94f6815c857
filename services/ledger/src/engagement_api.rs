//! EngagementService: a partner asks for incident response (for an incident or in free text,
//! saying how it asked) and stays the investigator's first point of contact; an estimate places a
//! hold; investigators log work, debited oldest pack first and from the hold first; closing
//! records the summary and recommendations and releases what the hold still reserves.

use chrono::Utc;
use picket_platform::Principal;
use picket_platform::auth::{Role, check_partner_id};
use picket_platform::db::outbox;
use picket_platform::grpc::{
    internal, next_offset_token, page_size, parse_each, parse_offset_token, parse_uuid,
    positive_duration,
};
use picket_platform::time::{from_timestamp, to_timestamp};
use picket_proto::ledger::v1 as ledger;
use picket_proto::ledger::v1::engagement_service_server::EngagementService;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::api::{LedgerApi, Mutation, check_key};
use crate::engagements::{self, EngagementRow, Recommendation};
use crate::engine::{HoldState, Operation, TransferKind};
use crate::store;

/// How long an engagement's estimate stays reserved when the request does not say.
const DEFAULT_HOLD_TIMEOUT: chrono::Duration = chrono::Duration::days(30);

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
    now: chrono::DateTime<Utc>,
) -> Result<Vec<Recommendation>, Status> {
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

/// The open engagement a call names, which must be `partner_id`'s.
async fn open_engagement(
    mutation: &mut Mutation,
    partner_id: &str,
    engagement_id: Uuid,
) -> Result<EngagementRow, Status> {
    let engagement = engagements::get(&mut *mutation.transaction, engagement_id)
        .await
        .map_err(internal)?
        .filter(|engagement| engagement.partner_id == partner_id)
        .ok_or_else(|| {
            Status::not_found(format!("engagement_id: no engagement {engagement_id}"))
        })?;
    if engagement.state != "open" {
        return Err(Status::failed_precondition(format!(
            "engagement_id: engagement {engagement_id} is closed"
        )));
    }
    Ok(engagement)
}

/// What an engagement's hold still reserves in `mutation`'s position.
fn held(mutation: &Mutation, engagement: &EngagementRow) -> i64 {
    engagement
        .hold_id
        .and_then(|hold_id| mutation.position.holds.get(&hold_id))
        .map_or(0, crate::engine::Hold::reserved)
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
        check_key(&message.idempotency_key)?;
        principal.require_role(&[Role::Operator, Role::Partner])?;
        principal.require_partner(&message.partner_id)?;
        if message.request.trim().is_empty() && message.incident_id.is_empty() {
            return Err(Status::invalid_argument(
                "request: say what is asked, or name the incident_id",
            ));
        }
        let channel = ledger::RequestChannel::try_from(message.channel)
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
        let mut mutation = match self
            .ledger
            .mutate::<ledger::OpenEngagementResponse>(
                &message.partner_id,
                &message.idempotency_key,
                "open_engagement",
                &message,
            )
            .await?
        {
            Ok(mutation) => mutation,
            Err(replayed) => return Ok(Response::new(replayed)),
        };
        let by = principal.to_proto();
        let engagement_id = Uuid::now_v7();
        let hold_id = (message.estimated_minutes > 0).then(Uuid::now_v7);
        if let Some(hold_id) = hold_id {
            let description = format!("estimate of engagement {engagement_id}");
            mutation
                .apply(
                    &Operation::PlaceHold {
                        hold_id,
                        minutes: message.estimated_minutes,
                        expires_at: mutation.now + timeout,
                    },
                    (&by.subject, by.role),
                    &description,
                    &store::Created {
                        pack: None,
                        hold: Some(store::NewHold {
                            hold_id,
                            engagement_id: Some(engagement_id),
                            description: &description,
                        }),
                    },
                )
                .await?;
        }
        let engagement = EngagementRow {
            engagement_id,
            partner_id: message.partner_id.clone(),
            tenant_id: message.tenant_id.clone(),
            incident_id: message.incident_id.clone(),
            request: message.request.clone(),
            channel: channel.into(),
            state: "open".into(),
            partner_contact_name: message.partner_contact_name.clone(),
            partner_contact_email: message.partner_contact_email.clone(),
            partner_contact_phone: message.partner_contact_phone.clone(),
            opened_by: by.subject.clone(),
            opened_role: by.role,
            opened_at: mutation.now,
            closed_at: None,
            investigator_subject: String::new(),
            estimated_minutes: message.estimated_minutes,
            logged_minutes: 0,
            hold_id,
            summary: String::new(),
            recommendations: sqlx::types::Json(Vec::new()),
        };
        engagements::insert(&mut mutation.transaction, &engagement)
            .await
            .map_err(internal)?;
        let hold = match hold_id {
            Some(hold_id) => Some(mutation.hold(hold_id).await?),
            None => None,
        };
        let proto = engagement.to_proto(held(&mutation, &engagement));
        let opened = ledger::EngagementOpened {
            partner_id: engagement.partner_id.clone(),
            tenant_id: engagement.tenant_id.clone(),
            engagement: Some(proto.clone()),
            hold_id: hold_id.map(|id| id.to_string()).unwrap_or_default(),
        };
        let event = self
            .ledger
            .events
            .event(&opened, mutation.now)
            .map_err(|error| Status::internal(error.to_string()))?;
        outbox::enqueue(&mut mutation.transaction, &event)
            .await
            .map_err(internal)?;
        let response = ledger::OpenEngagementResponse {
            engagement: Some(proto),
            hold,
            replayed: false,
        };
        mutation.finish(&response).await?;
        tracing::info!(%engagement_id, partner_id = %message.partner_id, "engagement opened");
        Ok(Response::new(response))
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
            .filter(|engagement| principal.can_access_partner(&engagement.partner_id))
            .ok_or_else(|| {
                Status::not_found(format!("engagement_id: no engagement {engagement_id}"))
            })?;
        let held = match engagement.hold_id {
            Some(hold_id) => store::hold(&self.ledger.pool, hold_id)
                .await
                .map_err(internal)?
                .filter(|hold| hold.state == "pending")
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
        principal.require_partner(&message.partner_id)?;
        let states = parse_each(&message.states, "states", "an engagement state", |value| {
            match ledger::EngagementState::try_from(value).ok()? {
                ledger::EngagementState::Open => Some("open"),
                ledger::EngagementState::Closed => Some("closed"),
                ledger::EngagementState::Unspecified => None,
            }
        })?;
        let limit = page_size(message.page_size, 50, 500)?;
        let offset = parse_offset_token(&message.page_token)?;
        let tenant_id = (!message.tenant_id.is_empty()).then_some(message.tenant_id.as_str());
        let rows = engagements::list(
            &self.ledger.pool,
            &message.partner_id,
            tenant_id,
            &states,
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
        let mut mutation = match self
            .ledger
            .mutate::<ledger::LogWorkResponse>(
                &message.partner_id,
                &message.idempotency_key,
                "log_work",
                &message,
            )
            .await?
        {
            Ok(mutation) => mutation,
            Err(replayed) => return Ok(Response::new(replayed)),
        };
        let engagement = open_engagement(&mut mutation, &message.partner_id, engagement_id).await?;
        let hold_id = engagement
            .hold_id
            .filter(|hold_id| mutation.position.holds.contains_key(hold_id));
        let investigator = principal.to_proto();
        let available_before = mutation.position.available();
        let transfers = mutation
            .apply(
                &Operation::Work {
                    minutes: message.minutes,
                    hold_id,
                },
                (&investigator.subject, investigator.role),
                &message.description,
                &store::Created::default(),
            )
            .await?;
        let debits: Vec<(Option<Uuid>, i64)> = transfers
            .iter()
            .filter(|transfer| transfer.kind == TransferKind::WorkDebit)
            .map(|transfer| (transfer.pack_id, transfer.amount))
            .collect();
        let transfer_ids: Vec<Uuid> = transfers
            .iter()
            .map(|transfer| transfer.transfer_id)
            .collect();
        let work_entry_id = Uuid::now_v7();
        let now = mutation.now;
        engagements::insert_work(
            &mut mutation.transaction,
            &engagements::WorkEntry {
                work_entry_id,
                engagement_id,
                partner_id: &message.partner_id,
                investigator: (&investigator.subject, investigator.role),
                minutes: message.minutes,
                description: &message.description,
                performed_at: performed_at.unwrap_or(now),
                logged_at: now,
                idempotency_key: &message.idempotency_key,
                debits: &debits,
                transfer_ids: &transfer_ids,
            },
        )
        .await
        .map_err(internal)?;
        let engagement =
            engagements::add_logged(&mut mutation.transaction, engagement_id, message.minutes)
                .await
                .map_err(internal)?;
        let balance = mutation.balance().await?;
        let pack_debits: Vec<ledger::PackDebit> = debits
            .iter()
            .map(|(pack_id, minutes)| ledger::PackDebit {
                pack_id: pack_id.map(|id| id.to_string()).unwrap_or_default(),
                minutes: *minutes,
            })
            .collect();
        let entry = ledger::WorkEntry {
            work_entry_id: work_entry_id.to_string(),
            engagement_id: engagement_id.to_string(),
            partner_id: message.partner_id.clone(),
            investigator: Some(investigator.clone()),
            minutes: message.minutes,
            description: message.description.clone(),
            performed_at: Some(to_timestamp(performed_at.unwrap_or(now))),
            logged_at: Some(to_timestamp(now)),
            debits: pack_debits.clone(),
            transfer_ids: transfer_ids.iter().map(Uuid::to_string).collect(),
            idempotency_key: message.idempotency_key.clone(),
        };
        let debited = ledger::CreditsDebited {
            partner_id: message.partner_id.clone(),
            tenant_id: engagement.tenant_id.clone(),
            engagement_id: engagement_id.to_string(),
            work_entry_id: work_entry_id.to_string(),
            minutes: message.minutes,
            debits: pack_debits,
            investigator: Some(investigator),
            description: message.description.clone(),
            available_minutes: balance.available_minutes,
            debited_at: Some(to_timestamp(now)),
            hold_id: hold_id.map(|id| id.to_string()).unwrap_or_default(),
            incident_id: engagement.incident_id.clone(),
            transfer_ids: transfer_ids.iter().map(Uuid::to_string).collect(),
        };
        let mut events = vec![
            self.ledger
                .events
                .event(&debited, now)
                .map_err(|error| Status::internal(error.to_string()))?,
        ];
        // The partner hears once when its credits fall below its threshold.
        let threshold = balance.low_balance_threshold_minutes;
        if threshold > 0 && balance.available_minutes < threshold && available_before >= threshold {
            let low = ledger::BalanceLow {
                partner_id: message.partner_id.clone(),
                available_minutes: balance.available_minutes,
                threshold_minutes: threshold,
                held_minutes: balance.held_minutes,
                detected_at: Some(to_timestamp(now)),
                next_expiry_at: balance.next_expiry_at,
                overdraft_limit_minutes: balance.overdraft_limit_minutes,
                ..Default::default()
            };
            events.push(
                self.ledger
                    .events
                    .event(&low, now)
                    .map_err(|error| Status::internal(error.to_string()))?,
            );
        }
        outbox::enqueue_all(&mut mutation.transaction, &events)
            .await
            .map_err(internal)?;
        let response = ledger::LogWorkResponse {
            entry: Some(entry),
            engagement: Some(engagement.to_proto(held(&mutation, &engagement))),
            balance: Some(balance),
            replayed: false,
        };
        mutation.finish(&response).await?;
        Ok(Response::new(response))
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
        let by = principal.to_proto();
        let recorded = recommendations(&message.recommendations, &by.subject, Utc::now())?;
        let mut mutation = match self
            .ledger
            .mutate::<ledger::CloseEngagementResponse>(
                &message.partner_id,
                &message.idempotency_key,
                "close_engagement",
                &message,
            )
            .await?
        {
            Ok(mutation) => mutation,
            Err(replayed) => return Ok(Response::new(replayed)),
        };
        let engagement = open_engagement(&mut mutation, &message.partner_id, engagement_id).await?;
        let released = held(&mutation, &engagement);
        if let Some(hold_id) = engagement
            .hold_id
            .filter(|hold_id| mutation.position.holds.contains_key(hold_id))
        {
            mutation
                .apply(
                    &Operation::ReleaseHold {
                        hold_id,
                        state: HoldState::Closed,
                    },
                    (&by.subject, by.role),
                    "engagement closed",
                    &store::Created::default(),
                )
                .await?;
        }
        let engagement = engagements::close(
            &mut mutation.transaction,
            engagement_id,
            &message.summary,
            &recorded,
            mutation.now,
        )
        .await
        .map_err(internal)?;
        let balance = mutation.balance().await?;
        let proto = engagement.to_proto(0);
        let closed = ledger::EngagementClosed {
            partner_id: engagement.partner_id.clone(),
            tenant_id: engagement.tenant_id.clone(),
            engagement: Some(proto.clone()),
            used_minutes: engagement.logged_minutes,
            released_minutes: released,
            closed_at: Some(to_timestamp(mutation.now)),
        };
        let event = self
            .ledger
            .events
            .event(&closed, mutation.now)
            .map_err(|error| Status::internal(error.to_string()))?;
        outbox::enqueue(&mut mutation.transaction, &event)
            .await
            .map_err(internal)?;
        let response = ledger::CloseEngagementResponse {
            engagement: Some(proto),
            released_minutes: released,
            balance: Some(balance),
            replayed: false,
        };
        mutation.finish(&response).await?;
        tracing::info!(%engagement_id, released, "engagement closed");
        Ok(Response::new(response))
    }
}
