//! IncidentService: incidents, decisions, the queue, recommendations and timelines. Reads are
//! scoped to what the principal may see (another partner's incident is indistinguishable from a
//! missing one); every decision is checked against the partner's authority map and recorded with
//! who made it.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use picket_platform::Principal;
use picket_platform::auth::Role;
use picket_platform::grpc::{
    internal, keyset_token, next_offset_token, page_size, parse_each, parse_keyset_token,
    parse_offset_token, parse_uuid, time_range,
};
use picket_proto::common::v1 as common;
use picket_proto::incidents::v1 as incidents;
use picket_proto::incidents::v1::incident_service_server::IncidentService;
use sqlx::{AssertSqlSafe, PgPool};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::authority::Authority;
use crate::engagements;
use crate::model::{DecisionKind, IncidentState, Kind, Severity};
use crate::processor::{Command, Decide, Job, Outcome, ProcessError, Processor, Refused, Reply};
use crate::store::{self, DecisionRow, IncidentRow, RecommendationRow, TenantKey, TimelineRow};

const DEFAULT_PAGE_SIZE: i64 = 50;
const MAX_PAGE_SIZE: i64 = 500;

pub struct IncidentApi {
    processor: Arc<Processor>,
    authority: Authority,
}

impl IncidentApi {
    pub fn new(processor: Arc<Processor>, authority: Authority) -> IncidentApi {
        IncidentApi {
            processor,
            authority,
        }
    }

    fn pool(&self) -> &PgPool {
        self.processor.pool()
    }
}

pub fn principal_actor(principal: &Principal) -> common::Actor {
    common::Actor {
        kind: common::ActorKind::Principal.into(),
        principal: Some(principal.to_proto()),
        ..Default::default()
    }
}

pub fn process_status(error: ProcessError) -> Status {
    match error {
        ProcessError::Database(error) => internal(error),
        ProcessError::Event(error) => {
            tracing::error!(%error, "an event could not be built");
            Status::internal("internal error")
        }
    }
}

/// The reply of an applied command, or the status of a refused one.
pub fn applied(outcome: Outcome) -> Result<Reply, Status> {
    match outcome {
        Outcome::Applied(reply) => Ok(*reply),
        Outcome::Refused(Refused::NotFound(message)) => Err(Status::not_found(message)),
        Outcome::Refused(Refused::FailedPrecondition(message)) => {
            Err(Status::failed_precondition(message))
        }
        Outcome::Duplicate => Err(Status::aborted("the request was applied already")),
    }
}

/// An incident the principal may see, or NOT_FOUND.
async fn visible_incident(
    pool: &PgPool,
    principal: &Principal,
    incident_id: &str,
) -> Result<IncidentRow, Status> {
    let incident_id = parse_uuid(incident_id, "incident_id")?;
    let not_found = || Status::not_found(format!("incident {incident_id} not found"));
    let incident = store::incidents_by_id(pool, &[incident_id])
        .await
        .map_err(internal)?
        .pop()
        .ok_or_else(not_found)?;
    if !may_read_incidents(pool, principal, &incident.partner_id, &incident.tenant_id).await? {
        return Err(not_found());
    }
    Ok(incident)
}

/// Whether the principal may read this tenant's incidents now: whoever may read the tenant, and an
/// investigator while an open engagement on it is assigned to them.
async fn may_read_incidents(
    pool: &PgPool,
    principal: &Principal,
    partner_id: &str,
    tenant_id: &str,
) -> Result<bool, Status> {
    if principal.role == Role::Investigator {
        return engagements::engaged_with(pool, &principal.subject, partner_id, tenant_id)
            .await
            .map(|engaged| engaged && !tenant_id.is_empty())
            .map_err(internal);
    }
    may_read_tenant(pool, principal, partner_id, tenant_id).await
}

/// Whether the principal may read this tenant of this partner now: its scope, and for a customer
/// an active grant of the tenant (see [`still_granted`]).
pub(crate) async fn may_read_tenant(
    pool: &PgPool,
    principal: &Principal,
    partner_id: &str,
    tenant_id: &str,
) -> Result<bool, Status> {
    if !principal.can_access_tenant(partner_id, tenant_id) {
        return Ok(false);
    }
    let granted = still_granted(pool, principal, Some(vec![tenant_id.to_owned()])).await?;
    Ok(granted.is_none_or(|tenants| !tenants.is_empty()))
}

/// The tenants of a listing the principal reads now: a customer's while its grants last
/// ([`still_granted`]), an investigator's while the engagements on them assigned to them are open
/// (refused when the one asked for is not); anyone else's as asked.
async fn readable_tenants(
    pool: &PgPool,
    principal: &Principal,
    partner_id: Option<&str>,
    tenant_ids: Option<Vec<String>>,
) -> Result<Option<Vec<String>>, Status> {
    if principal.role != Role::Investigator {
        return still_granted(pool, principal, tenant_ids).await;
    }
    let engaged =
        engagements::engaged_tenants(pool, &principal.subject, partner_id, tenant_ids.as_deref())
            .await
            .map_err(internal)?;
    if tenant_ids.is_some() && engaged.is_empty() {
        return Err(Status::permission_denied(
            "tenant_id: no open engagement on this tenant is assigned to you",
        ));
    }
    Ok(Some(engaged))
}

/// A customer reads a tenant while the partner's grant for it is active and its offboarding has
/// not started, whatever its token's `tenant_ids` still say: `tenant_ids` narrowed to those (for
/// customers; anyone else's scope is left as it is).
async fn still_granted(
    pool: &PgPool,
    principal: &Principal,
    tenant_ids: Option<Vec<String>>,
) -> Result<Option<Vec<String>>, Status> {
    let (Role::Customer, Some(tenant_ids)) = (principal.role, tenant_ids.as_ref()) else {
        return Ok(tenant_ids);
    };
    let partner_id = principal.partner_id.as_deref().unwrap_or_default();
    let readable =
        store::customer_readable_tenants(pool, partner_id, &principal.subject, tenant_ids)
            .await
            .map_err(internal)?;
    Ok(Some(
        tenant_ids
            .iter()
            .filter(|tenant_id| readable.contains(*tenant_id))
            .cloned()
            .collect(),
    ))
}

async fn with_decisions(
    pool: &PgPool,
    incidents: &[IncidentRow],
) -> Result<Vec<incidents::Incident>, Status> {
    let ids: Vec<Uuid> = incidents
        .iter()
        .filter_map(|row| row.last_decision_id)
        .collect();
    let decisions = store::decisions_by_id(pool, &ids).await.map_err(internal)?;
    Ok(incidents
        .iter()
        .map(|incident| {
            let decision = decisions
                .iter()
                .find(|decision| Some(decision.decision_id) == incident.last_decision_id);
            incident.to_proto(decision)
        })
        .collect())
}

/// Which incidents a listing returns, newest first.
#[derive(Debug, Clone, Default)]
pub struct IncidentFilter {
    pub partner_id: Option<String>,
    /// Tenants the caller may see; `None` means all of the partner's.
    pub tenant_ids: Option<Vec<String>>,
    pub states: Vec<&'static str>,
    pub severities: Vec<&'static str>,
    pub kinds: Vec<&'static str>,
    pub check_id: Option<String>,
    pub opened_from: Option<DateTime<Utc>>,
    pub opened_until: Option<DateTime<Utc>>,
    /// Keyset cursor: incidents strictly older than this (opened_at, incident_id).
    pub before: Option<(DateTime<Utc>, Uuid)>,
    pub limit: i64,
}

/// The tenants a customer may see within a request for `tenant_id` (empty = all granted).
fn customer_tenants(principal: &Principal, tenant_id: &str) -> Result<Option<Vec<String>>, Status> {
    let requested = (!tenant_id.is_empty()).then(|| vec![tenant_id.to_owned()]);
    if principal.role != Role::Customer {
        return Ok(requested);
    }
    let granted = &principal.tenant_ids;
    Ok(Some(match requested {
        Some(requested) if requested.iter().all(|tenant| granted.contains(tenant)) => requested,
        Some(_) => return Err(Status::permission_denied("tenant_id: not granted to you")),
        None => granted.clone(),
    }))
}

/// Narrows a listing to what the principal's scope allows; what it may read now narrows it
/// further ([`readable_tenants`]).
fn scoped_filter(
    principal: &Principal,
    request: &incidents::ListIncidentsRequest,
) -> Result<IncidentFilter, Status> {
    // An investigator's partner is whichever their engagements name.
    let partner_id = if principal.role == Role::Investigator {
        (!request.partner_id.is_empty()).then(|| request.partner_id.clone())
    } else {
        principal.partner_scope(&request.partner_id)?
    };
    let tenant_ids = customer_tenants(principal, &request.tenant_id)?;
    let states = parse_each(&request.states, "states", "an incident state", |value| {
        IncidentState::from_proto(value).map(IncidentState::as_db)
    })?;
    let severities = parse_each(&request.severities, "severities", "a severity", |value| {
        Severity::from_proto(value).map(Severity::as_db)
    })?;
    let kinds = parse_each(&request.kinds, "kinds", "a finding kind", |value| {
        Kind::from_proto(value).map(Kind::as_db)
    })?;
    let (opened_from, opened_until) = time_range(request.opened.as_ref(), "opened")?;
    let limit = page_size(request.page_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)?;
    let before = parse_keyset_token(&request.page_token)?;
    Ok(IncidentFilter {
        partner_id,
        tenant_ids,
        states,
        severities,
        kinds,
        check_id: (!request.check_id.is_empty()).then(|| request.check_id.clone()),
        opened_from,
        opened_until,
        before,
        limit,
    })
}

async fn list_incidents(
    pool: &PgPool,
    filter: &IncidentFilter,
) -> Result<Vec<IncidentRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT * FROM incidents
         WHERE ($1::text IS NULL OR partner_id = $1)
           AND ($2::text[] IS NULL OR tenant_id = ANY($2))
           AND (cardinality($3::text[]) = 0 OR state = ANY($3))
           AND (cardinality($4::text[]) = 0 OR severity = ANY($4))
           AND (cardinality($5::text[]) = 0 OR kind = ANY($5))
           AND ($6::text IS NULL OR check_id = $6)
           AND ($7::timestamptz IS NULL OR opened_at >= $7)
           AND ($8::timestamptz IS NULL OR opened_at < $8)
           AND ($9::timestamptz IS NULL OR (opened_at, incident_id) < ($9, $10))
         ORDER BY opened_at DESC, incident_id DESC
         LIMIT $11",
    )
    .bind(&filter.partner_id)
    .bind(&filter.tenant_ids)
    .bind(&filter.states)
    .bind(&filter.severities)
    .bind(&filter.kinds)
    .bind(&filter.check_id)
    .bind(filter.opened_from)
    .bind(filter.opened_until)
    .bind(filter.before.map(|(opened_at, _)| opened_at))
    .bind(filter.before.map(|(_, incident_id)| incident_id))
    .bind(filter.limit)
    .fetch_all(pool)
    .await
}

/// A recommendation with where it stands and its place in the queue.
#[derive(Debug, sqlx::FromRow)]
struct ListedRecommendation {
    #[sqlx(flatten)]
    row: RecommendationRow,
    state: i32,
    queue_position: i64,
}

/// Where a recommendation stands (RecommendationState numbers) and its queue position, in SQL.
const STANDING_SQL: &str = "
    CASE WHEN r.standing IN ('open', 'awaiting_fix') THEN 6
         WHEN r.standing = 'queued' THEN 2
         WHEN r.ignored_at IS NOT NULL THEN 4
         WHEN r.muted_until > $1 THEN 3
         WHEN r.kind = 'configuration' AND r.theme_order > t.launched_themes THEN 5
         ELSE 1 END AS state,
    CASE WHEN r.standing = 'queued' THEN row_number() OVER (
        PARTITION BY r.partner_id, r.tenant_id, r.standing = 'queued'
        ORDER BY CASE r.severity WHEN 'critical' THEN 0 WHEN 'high' THEN 1 WHEN 'medium' THEN 2 ELSE 3 END,
                 r.first_observed_at, r.fingerprint)
    ELSE 0 END AS queue_position";

const SEVERITY_ORDER_SQL: &str =
    "CASE r.severity WHEN 'critical' THEN 0 WHEN 'high' THEN 1 WHEN 'medium' THEN 2 ELSE 3 END";

struct RecommendationQuery<'q> {
    partner_id: &'q str,
    tenant_ids: Option<Vec<String>>,
    queued_only: bool,
    states: Vec<i32>,
    kinds: Vec<&'static str>,
    theme: Option<&'q str>,
    offset: i64,
    limit: i64,
}

async fn list_recommendations(
    pool: &PgPool,
    now: DateTime<Utc>,
    query: &RecommendationQuery<'_>,
) -> Result<Vec<incidents::Recommendation>, sqlx::Error> {
    let order = if query.queued_only {
        "s.tenant_id, s.queue_position".to_owned()
    } else {
        format!(
            "{}, s.first_observed_at, s.tenant_id, s.fingerprint",
            SEVERITY_ORDER_SQL.replace("r.", "s.")
        )
    };
    let listed: Vec<ListedRecommendation> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT * FROM (
             SELECT r.*, {STANDING_SQL}
             FROM recommendations r JOIN tenants t USING (partner_id, tenant_id)
             WHERE r.partner_id = $2 AND ($3::text[] IS NULL OR r.tenant_id = ANY($3))
               AND (r.failing OR r.standing <> 'idle')
         ) s
         WHERE (NOT $4 OR s.state = 2)
           AND (cardinality($5::int[]) = 0 OR s.state = ANY($5))
           AND (cardinality($6::text[]) = 0 OR s.kind = ANY($6))
           AND ($7::text IS NULL OR s.theme = $7)
         ORDER BY {order}
         OFFSET $8 LIMIT $9"
    )))
    .bind(now)
    .bind(query.partner_id)
    .bind(&query.tenant_ids)
    .bind(query.queued_only)
    .bind(&query.states)
    .bind(&query.kinds)
    .bind(query.theme)
    .bind(query.offset)
    .bind(query.limit)
    .fetch_all(pool)
    .await?;
    let decision_ids: Vec<Uuid> = listed
        .iter()
        .filter_map(|listed| listed.row.last_decision_id)
        .collect();
    let decisions = store::decisions_by_id(pool, &decision_ids).await?;
    Ok(listed
        .iter()
        .map(|listed| {
            let state = incidents::RecommendationState::try_from(listed.state).unwrap_or_default();
            let decision = decisions
                .iter()
                .find(|decision| Some(decision.decision_id) == listed.row.last_decision_id);
            listed.row.to_proto(
                state,
                u32::try_from(listed.queue_position).unwrap_or_default(),
                decision,
            )
        })
        .collect())
}

impl IncidentApi {
    async fn decide(
        &self,
        principal: &Principal,
        incident_id: &str,
        kind: DecisionKind,
        comment: &str,
        expected_version: u64,
    ) -> Result<Reply, Status> {
        // An investigator reads the incidents of their engagement; deciding is the partner's.
        principal.require_role(&[Role::Operator, Role::Partner, Role::Customer])?;
        let incident = visible_incident(self.pool(), principal, incident_id).await?;
        let authority_basis = self
            .authority
            .check(principal, &incident, kind.to_proto())
            .await?;
        let job = Job::new(
            incident.key(),
            Command::Decide(Decide {
                incident_id: incident.incident_id,
                kind,
                actor: principal_actor(principal),
                comment: comment.to_owned(),
                expected_version,
                authority_basis,
                auto_approve_rule_id: None,
            }),
        );
        applied(self.processor.run_one(job).await.map_err(process_status)?)
    }

    /// The partner and tenants a queue or recommendation listing covers.
    fn recommendation_scope(
        principal: &Principal,
        partner_id: &str,
        tenant_id: &str,
    ) -> Result<(String, Option<Vec<String>>), Status> {
        if partner_id.is_empty() {
            return Err(Status::invalid_argument("partner_id: is required"));
        }
        principal.require_partner(partner_id)?;
        Ok((
            partner_id.to_owned(),
            customer_tenants(principal, tenant_id)?,
        ))
    }
}

#[tonic::async_trait]
impl IncidentService for IncidentApi {
    async fn get_incident(
        &self,
        request: Request<incidents::GetIncidentRequest>,
    ) -> Result<Response<incidents::GetIncidentResponse>, Status> {
        let principal = Principal::of(&request)?;
        let incident =
            visible_incident(self.pool(), principal, &request.get_ref().incident_id).await?;
        let incident = with_decisions(self.pool(), &[incident]).await?.pop();
        Ok(Response::new(incidents::GetIncidentResponse { incident }))
    }

    async fn list_incidents(
        &self,
        request: Request<incidents::ListIncidentsRequest>,
    ) -> Result<Response<incidents::ListIncidentsResponse>, Status> {
        let principal = Principal::of(&request)?;
        let mut filter = scoped_filter(principal, request.get_ref())?;
        filter.tenant_ids = readable_tenants(
            self.pool(),
            principal,
            filter.partner_id.as_deref(),
            filter.tenant_ids,
        )
        .await?;
        let rows = list_incidents(self.pool(), &filter)
            .await
            .map_err(internal)?;
        let next_page_token = match rows.last() {
            Some(last) if rows.len() as i64 == filter.limit => {
                keyset_token(last.opened_at, last.incident_id)
            }
            _ => String::new(),
        };
        Ok(Response::new(incidents::ListIncidentsResponse {
            incidents: with_decisions(self.pool(), &rows).await?,
            next_page_token,
        }))
    }

    async fn approve_incident(
        &self,
        request: Request<incidents::ApproveIncidentRequest>,
    ) -> Result<Response<incidents::ApproveIncidentResponse>, Status> {
        let principal = Principal::of(&request)?;
        let body = request.get_ref();
        let reply = self
            .decide(
                principal,
                &body.incident_id,
                DecisionKind::Approve,
                &body.comment,
                body.expected_version,
            )
            .await?;
        Ok(Response::new(incidents::ApproveIncidentResponse {
            incident: reply.incident,
            decision: reply.decision,
        }))
    }

    async fn mute_incident(
        &self,
        request: Request<incidents::MuteIncidentRequest>,
    ) -> Result<Response<incidents::MuteIncidentResponse>, Status> {
        let principal = Principal::of(&request)?;
        let body = request.get_ref();
        let reply = self
            .decide(
                principal,
                &body.incident_id,
                DecisionKind::Mute,
                &body.comment,
                body.expected_version,
            )
            .await?;
        Ok(Response::new(incidents::MuteIncidentResponse {
            incident: reply.incident,
            decision: reply.decision,
        }))
    }

    async fn ignore_incident(
        &self,
        request: Request<incidents::IgnoreIncidentRequest>,
    ) -> Result<Response<incidents::IgnoreIncidentResponse>, Status> {
        let principal = Principal::of(&request)?;
        let body = request.get_ref();
        let reply = self
            .decide(
                principal,
                &body.incident_id,
                DecisionKind::Ignore,
                &body.comment,
                body.expected_version,
            )
            .await?;
        Ok(Response::new(incidents::IgnoreIncidentResponse {
            incident: reply.incident,
            decision: reply.decision,
        }))
    }

    async fn unignore_incident(
        &self,
        request: Request<incidents::UnignoreIncidentRequest>,
    ) -> Result<Response<incidents::UnignoreIncidentResponse>, Status> {
        let principal = Principal::of(&request)?;
        let body = request.get_ref();
        let reply = self
            .decide(
                principal,
                &body.incident_id,
                DecisionKind::Unignore,
                &body.comment,
                body.expected_version,
            )
            .await?;
        Ok(Response::new(incidents::UnignoreIncidentResponse {
            incident: reply.incident,
            decision: reply.decision,
            recommendation: reply.recommendation,
        }))
    }

    async fn open_incident(
        &self,
        request: Request<incidents::OpenIncidentRequest>,
    ) -> Result<Response<incidents::OpenIncidentResponse>, Status> {
        let principal = Principal::of(&request)?;
        let body = request.get_ref();
        principal.require_partner_manager(&body.partner_id)?;
        if body.tenant_id.is_empty() {
            return Err(Status::invalid_argument("tenant_id: is required"));
        }
        if body.fingerprint.is_empty() {
            return Err(Status::invalid_argument("fingerprint: is required"));
        }
        let override_reason = match (body.override_mute_or_ignore, body.override_reason.trim()) {
            (false, _) => None,
            (true, "") => {
                return Err(Status::invalid_argument(
                    "override_reason: is required to override a mute or an ignore",
                ));
            }
            (true, reason) => Some(reason.to_owned()),
        };
        let job = Job::new(
            TenantKey::new(&body.partner_id, &body.tenant_id),
            Command::OpenByHand {
                fingerprint: body.fingerprint.clone(),
                override_reason,
                actor: principal_actor(principal),
            },
        );
        let reply = applied(self.processor.run_one(job).await.map_err(process_status)?)?;
        Ok(Response::new(incidents::OpenIncidentResponse {
            incident: reply.incident,
            created: reply.created,
        }))
    }

    async fn list_queue(
        &self,
        request: Request<incidents::ListQueueRequest>,
    ) -> Result<Response<incidents::ListQueueResponse>, Status> {
        let principal = Principal::of(&request)?;
        let body = request.get_ref();
        let (partner_id, tenant_ids) =
            IncidentApi::recommendation_scope(principal, &body.partner_id, &body.tenant_id)?;
        let tenant_ids = still_granted(self.pool(), principal, tenant_ids).await?;
        let limit = page_size(body.page_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)?;
        let offset = parse_offset_token(&body.page_token)?;
        let query = RecommendationQuery {
            partner_id: &partner_id,
            tenant_ids,
            queued_only: true,
            states: Vec::new(),
            kinds: Vec::new(),
            theme: None,
            offset,
            limit,
        };
        let recommendations =
            list_recommendations(self.pool(), self.processor.clock().now(), &query)
                .await
                .map_err(internal)?;
        let next_page_token = next_offset_token(offset, recommendations.len(), limit);
        Ok(Response::new(incidents::ListQueueResponse {
            recommendations,
            next_page_token,
        }))
    }

    async fn list_recommendations(
        &self,
        request: Request<incidents::ListRecommendationsRequest>,
    ) -> Result<Response<incidents::ListRecommendationsResponse>, Status> {
        let principal = Principal::of(&request)?;
        let body = request.get_ref();
        let (partner_id, tenant_ids) =
            IncidentApi::recommendation_scope(principal, &body.partner_id, &body.tenant_id)?;
        let tenant_ids = still_granted(self.pool(), principal, tenant_ids).await?;
        let states = parse_each(&body.states, "states", "a recommendation state", |value| {
            incidents::RecommendationState::try_from(value)
                .ok()
                .filter(|state| *state != incidents::RecommendationState::Unspecified)
                .map(i32::from)
        })?;
        let kinds = parse_each(&body.kinds, "kinds", "a finding kind", |value| {
            Kind::from_proto(value).map(Kind::as_db)
        })?;
        let limit = page_size(body.page_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)?;
        let offset = parse_offset_token(&body.page_token)?;
        let query = RecommendationQuery {
            partner_id: &partner_id,
            tenant_ids,
            queued_only: false,
            states,
            kinds,
            theme: (!body.theme.is_empty()).then_some(body.theme.as_str()),
            offset,
            limit,
        };
        let recommendations =
            list_recommendations(self.pool(), self.processor.clock().now(), &query)
                .await
                .map_err(internal)?;
        let next_page_token = next_offset_token(offset, recommendations.len(), limit);
        Ok(Response::new(incidents::ListRecommendationsResponse {
            recommendations,
            next_page_token,
        }))
    }

    async fn get_timeline(
        &self,
        request: Request<incidents::GetTimelineRequest>,
    ) -> Result<Response<incidents::GetTimelineResponse>, Status> {
        let principal = Principal::of(&request)?;
        let body = request.get_ref();
        let incident = visible_incident(self.pool(), principal, &body.incident_id).await?;
        let limit = page_size(body.page_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)?;
        let offset = parse_offset_token(&body.page_token)?;
        let entries: Vec<TimelineRow> = sqlx::query_as(
            "SELECT entry_id, incident_id, kind, actor, occurred_at, from_state, to_state, summary,
                 decision_id, details, version
             FROM incident_timeline WHERE incident_id = $1 ORDER BY seq OFFSET $2 LIMIT $3",
        )
        .bind(incident.incident_id)
        .bind(offset)
        .bind(limit)
        .fetch_all(self.pool())
        .await
        .map_err(internal)?;
        let decision_ids: Vec<Uuid> = entries
            .iter()
            .filter_map(|entry| entry.decision_id)
            .collect();
        let decisions: Vec<DecisionRow> = store::decisions_by_id(self.pool(), &decision_ids)
            .await
            .map_err(internal)?;
        let next_page_token = next_offset_token(offset, entries.len(), limit);
        Ok(Response::new(incidents::GetTimelineResponse {
            entries: entries
                .iter()
                .map(|entry| {
                    let decision = decisions
                        .iter()
                        .find(|decision| Some(decision.decision_id) == entry.decision_id);
                    entry.to_proto(decision)
                })
                .collect(),
            next_page_token,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partner(partner_id: &str) -> Principal {
        Principal {
            subject: "staff".into(),
            role: Role::Partner,
            partner_id: Some(partner_id.into()),
            tenant_ids: vec![],
        }
    }

    #[test]
    fn partner_listing_is_pinned_to_its_partner() {
        let filter = scoped_filter(&partner("p1"), &incidents::ListIncidentsRequest::default())
            .expect("valid request");
        assert_eq!(filter.partner_id.as_deref(), Some("p1"));
        assert_eq!(filter.limit, DEFAULT_PAGE_SIZE);
    }

    #[test]
    fn partner_cannot_list_another_partner() {
        let request = incidents::ListIncidentsRequest {
            partner_id: "p2".into(),
            ..Default::default()
        };
        let status = scoped_filter(&partner("p1"), &request).expect_err("refused");
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
    }

    #[test]
    fn customer_listing_is_limited_to_granted_tenants() {
        let customer = Principal {
            subject: "contact".into(),
            role: Role::Customer,
            partner_id: Some("p1".into()),
            tenant_ids: vec!["t1".into()],
        };
        let filter =
            scoped_filter(&customer, &incidents::ListIncidentsRequest::default()).expect("valid");
        assert_eq!(filter.tenant_ids, Some(vec!["t1".to_owned()]));
        let request = incidents::ListIncidentsRequest {
            tenant_id: "t2".into(),
            ..Default::default()
        };
        assert!(scoped_filter(&customer, &request).is_err());
    }

    #[test]
    fn bad_filters_name_their_field() {
        let cases = [
            incidents::ListIncidentsRequest {
                page_token: "nope".into(),
                ..Default::default()
            },
            incidents::ListIncidentsRequest {
                severities: vec![99],
                ..Default::default()
            },
            incidents::ListIncidentsRequest {
                kinds: vec![0],
                ..Default::default()
            },
            incidents::ListIncidentsRequest {
                states: vec![42],
                ..Default::default()
            },
        ];
        for (request, field) in cases
            .iter()
            .zip(["page_token", "severities", "kinds", "states"])
        {
            let status = scoped_filter(&partner("p1"), request).expect_err("refused");
            assert!(status.message().starts_with(field), "{}", status.message());
        }
    }
}
