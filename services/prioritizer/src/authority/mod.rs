//! The incident-response authority map: who is responsible, accountable, consulted and informed
//! at each stage, who may decide, and the escalation order. The standard map applies until a
//! partner deviates from it, partner-wide or for one tenant; every change is kept with who made it
//! and what differs. `gaps` finds what a map leaves undecided or unreachable, `worksheet` exports
//! it, and `decide` enforces it on every decision.

pub mod decide;
pub mod gaps;
pub mod standard;
pub mod store;
pub mod worksheet;

use std::collections::HashSet;

use chrono::Utc;
use picket_platform::EventFactory;
use picket_platform::auth::{Principal, Role, check_partner_id};
use picket_platform::db::outbox;
use picket_platform::grpc::{
    internal, next_offset_token, page_size, parse_offset_token, parse_uuid,
};
use picket_proto::common::v1 as common;
use picket_proto::incidents::v1 as incidents;
use picket_proto::incidents::v1::authority_service_server::AuthorityService;
use sqlx::PgPool;
use tonic::{Request, Response, Status};

use crate::store::IncidentRow;

/// The maps in force and the grants, for the API and for decisions.
#[derive(Clone)]
pub struct Authority {
    pool: PgPool,
    events: EventFactory,
    standard: incidents::AuthorityMap,
}

impl Authority {
    pub fn new(pool: PgPool, events: EventFactory, standard: incidents::AuthorityMap) -> Authority {
        Authority {
            pool,
            events,
            standard,
        }
    }

    /// The map in force for a partner's tenant (or partner-wide): the tenant's deviation, else the
    /// partner's, else the standard; and whether the tenant has its own.
    pub async fn effective(
        &self,
        partner_id: &str,
        tenant_id: &str,
    ) -> Result<(incidents::AuthorityMap, bool), sqlx::Error> {
        let (partner, tenant) = store::maps(&self.pool, partner_id, tenant_id).await?;
        let deviation = tenant.is_some();
        let mut map = tenant.or(partner).unwrap_or_else(|| self.standard.clone());
        map.partner_id = partner_id.to_owned();
        map.tenant_id = if deviation {
            tenant_id.to_owned()
        } else {
            String::new()
        };
        Ok((map, deviation))
    }

    async fn active_grants(
        &self,
        partner_id: &str,
        tenant_id: &str,
    ) -> Result<Vec<incidents::CustomerGrant>, sqlx::Error> {
        store::grants(&self.pool, partner_id, tenant_id, false, 0, 1_000).await
    }

    /// Whether `principal` may take `decision` on `incident`: the basis, or PERMISSION_DENIED
    /// saying what is missing.
    pub async fn check(
        &self,
        principal: &Principal,
        incident: &IncidentRow,
        decision: incidents::DecisionKind,
    ) -> Result<String, Status> {
        let (map, _) = self
            .effective(&incident.partner_id, &incident.tenant_id)
            .await
            .map_err(internal)?;
        let grants = self
            .active_grants(&incident.partner_id, &incident.tenant_id)
            .await
            .map_err(internal)?;
        let asked = decide::Asked {
            decision,
            severity: incident.severity().to_proto(),
            kind: incident.kind().to_proto(),
        };
        decide::authority(&map, &grants, principal, &asked).map_err(Status::permission_denied)
    }

    /// Whether `principal` may set up the automatic approval of `check_id`'s fixes on these tenants
    /// of the partner (all of them when `None`): an auto-approve rule approves in its creator's
    /// name, so the map in force for each tenant must let its creator approve the check's incidents
    /// at every severity and kind they were seen with (a critical configuration incident when the
    /// check was never seen). PERMISSION_DENIED says what is missing.
    pub async fn check_auto_approver(
        &self,
        principal: &Principal,
        partner_id: &str,
        check_id: &str,
        tenant_ids: Option<&[String]>,
    ) -> Result<(), Status> {
        let seen: Vec<(String, String)> = sqlx::query_as(
            "SELECT DISTINCT severity, kind FROM recommendations WHERE partner_id = $1 AND check_id = $2",
        )
        .bind(partner_id)
        .bind(check_id)
        .fetch_all(&self.pool)
        .await
        .map_err(internal)?;
        let mut asked: Vec<decide::Asked> = seen
            .iter()
            .filter_map(|(severity, kind)| {
                Some(decide::Asked {
                    decision: incidents::DecisionKind::Approve,
                    severity: crate::model::Severity::from_db(severity)?.to_proto(),
                    kind: crate::model::Kind::from_db(kind)?.to_proto(),
                })
            })
            .collect();
        if asked.is_empty() {
            asked.push(decide::Asked {
                decision: incidents::DecisionKind::Approve,
                severity: picket_proto::common::v1::Severity::Critical,
                kind: picket_proto::common::v1::FindingKind::Configuration,
            });
        }
        let tenants: Vec<String> = match tenant_ids {
            Some(tenant_ids) => tenant_ids.to_vec(),
            // Every tenant: the partner's map, and each tenant's own deviation.
            None => {
                let mut deviations: Vec<String> = sqlx::query_scalar(
                    "SELECT tenant_id FROM authority_maps WHERE partner_id = $1 AND tenant_id <> ''",
                )
                .bind(partner_id)
                .fetch_all(&self.pool)
                .await
                .map_err(internal)?;
                deviations.push(String::new());
                deviations
            }
        };
        for tenant_id in &tenants {
            let (map, _) = self
                .effective(partner_id, tenant_id)
                .await
                .map_err(internal)?;
            for asked in &asked {
                decide::authority(&map, &[], principal, asked).map_err(|reason| {
                    Status::permission_denied(format!(
                        "an auto-approve rule approves in its creator's name, and {reason}"
                    ))
                })?;
            }
        }
        Ok(())
    }

    async fn publish(
        &self,
        connection: &mut sqlx::PgConnection,
        event: &impl picket_proto::Event,
    ) -> Result<(), Status> {
        let event = self
            .events
            .event(event, Utc::now())
            .map_err(|error| Status::internal(error.to_string()))?;
        outbox::enqueue(connection, &event).await.map_err(internal)
    }

    /// Revokes every active grant of a tenant (its offboarding started), as Picket.
    pub async fn revoke_tenant_grants(
        &self,
        connection: &mut sqlx::PgConnection,
        partner_id: &str,
        tenant_id: &str,
    ) -> Result<(), Status> {
        let revoked = store::revoke(
            &mut *connection,
            store::Revoked::Tenant {
                partner_id,
                tenant_id,
            },
            &crate::processor::system_actor(),
            "the tenant is being offboarded",
            Utc::now(),
        )
        .await
        .map_err(internal)?;
        for grant in revoked {
            let changed = incidents::CustomerGrantChanged {
                partner_id: grant.partner_id.clone(),
                tenant_id: grant.tenant_id.clone(),
                grant: Some(grant),
            };
            self.publish(connection, &changed).await?;
        }
        Ok(())
    }
}

/// The escalation order of `map` for `severity`, in order.
fn escalation_steps(
    map: &incidents::AuthorityMap,
    severity: common::Severity,
) -> Vec<&incidents::EscalationStep> {
    let mut steps: Vec<&incidents::EscalationStep> = map
        .escalations
        .iter()
        .filter(|policy| policy.severity() == severity)
        .flat_map(|policy| &policy.steps)
        .collect();
    steps.sort_by_key(|step| step.order);
    steps
}

/// When an undecided incident of `severity`, opened at `opened_at`, reaches the escalation step
/// after the first `fired` ones (`None` when the order has no more steps).
pub fn escalation_due(
    map: &incidents::AuthorityMap,
    severity: common::Severity,
    opened_at: chrono::DateTime<Utc>,
    fired: u32,
) -> Option<chrono::DateTime<Utc>> {
    let step = escalation_steps(map, severity)
        .into_iter()
        .nth(fired as usize)?;
    let after = picket_platform::time::from_duration(step.after.as_ref()?)?;
    Some(opened_at + chrono::Duration::from_std(after).ok()?)
}

/// Step `level` (1-based) of the escalation order for `severity`, with its owner.
pub fn escalation_step(
    map: &incidents::AuthorityMap,
    severity: common::Severity,
    level: u32,
) -> Option<(incidents::EscalationStep, incidents::AuthorityOwner)> {
    let step = escalation_steps(map, severity)
        .into_iter()
        .nth(usize::try_from(level.checked_sub(1)?).ok()?)?
        .clone();
    let owner = map
        .owners
        .iter()
        .find(|owner| owner.owner_id == step.owner_id)
        .cloned()
        .unwrap_or_else(|| incidents::AuthorityOwner {
            owner_id: step.owner_id.clone(),
            display_name: step.owner_id.clone(),
            ..Default::default()
        });
    Some((step, owner))
}

fn owner_ids(assignment: &incidents::StageAssignment) -> [(&'static str, &Vec<String>); 4] {
    [
        ("responsible", &assignment.responsible_owner_ids),
        ("accountable", &assignment.accountable_owner_ids),
        ("consulted", &assignment.consulted_owner_ids),
        ("informed", &assignment.informed_owner_ids),
    ]
}

/// Refuses a map that cannot be understood, naming the field.
fn check_map(map: &incidents::AuthorityMap) -> Result<(), Status> {
    let mut seen = HashSet::new();
    for (index, owner) in map.owners.iter().enumerate() {
        if owner.owner_id.trim().is_empty() {
            return Err(Status::invalid_argument(format!(
                "map.owners[{index}].owner_id: is required"
            )));
        }
        if !seen.insert(owner.owner_id.as_str()) {
            return Err(Status::invalid_argument(format!(
                "map.owners[{index}].owner_id: {} is defined twice",
                owner.owner_id
            )));
        }
        if owner.party() == incidents::Party::Unspecified {
            return Err(Status::invalid_argument(format!(
                "map.owners[{index}].party: is required"
            )));
        }
    }
    let mut stages = HashSet::new();
    for (index, assignment) in map.stages.iter().enumerate() {
        if assignment.stage() == incidents::AuthorityStage::Unspecified {
            return Err(Status::invalid_argument(format!(
                "map.stages[{index}].stage: is required"
            )));
        }
        if !stages.insert(assignment.stage) {
            return Err(Status::invalid_argument(format!(
                "map.stages[{index}].stage: {} is assigned twice",
                gaps::stage_name(assignment.stage())
            )));
        }
    }
    for (index, policy) in map.escalations.iter().enumerate() {
        if policy.severity() == common::Severity::Unspecified {
            return Err(Status::invalid_argument(format!(
                "map.escalations[{index}].severity: is required"
            )));
        }
        for (step_index, step) in policy.steps.iter().enumerate() {
            let positive = step
                .after
                .as_ref()
                .is_some_and(|after| after.seconds > 0 || (after.seconds == 0 && after.nanos > 0));
            if !positive {
                return Err(Status::invalid_argument(format!(
                    "map.escalations[{index}].steps[{step_index}].after: must be positive"
                )));
            }
        }
    }
    Ok(())
}

/// What differs between two maps, one line per difference.
fn differences(before: &incidents::AuthorityMap, after: &incidents::AuthorityMap) -> Vec<String> {
    let mut lines = Vec::new();
    for stage in standard::STAGES {
        let name = gaps::stage_name(stage).replace(' ', "_");
        let find = |map: &incidents::AuthorityMap| {
            map.stages
                .iter()
                .find(|assignment| assignment.stage() == stage)
                .cloned()
                .unwrap_or_default()
        };
        let (old, new) = (find(before), find(after));
        for ((role, old_ids), (_, new_ids)) in owner_ids(&old).into_iter().zip(owner_ids(&new)) {
            if old_ids != new_ids {
                lines.push(format!(
                    "{name}.{role}: {} -> {}",
                    old_ids.join(", "),
                    new_ids.join(", ")
                ));
            }
        }
    }
    let owners = |map: &incidents::AuthorityMap| -> Vec<String> {
        map.owners
            .iter()
            .map(|owner| owner.owner_id.clone())
            .collect()
    };
    for owner in &after.owners {
        match before
            .owners
            .iter()
            .find(|old| old.owner_id == owner.owner_id)
        {
            None => lines.push(format!("owners: {} added", owner.owner_id)),
            Some(old) if old != owner => lines.push(format!("owners: {} changed", owner.owner_id)),
            Some(_) => {}
        }
    }
    for removed in owners(before)
        .iter()
        .filter(|id| !owners(after).contains(id))
    {
        lines.push(format!("owners: {removed} removed"));
    }
    if before.decision_rules != after.decision_rules {
        lines.push("decision_rules: changed".into());
    }
    if before.escalations != after.escalations {
        lines.push("escalations: changed".into());
    }
    lines
}

fn principal_actor(principal: &Principal) -> common::Actor {
    common::Actor {
        kind: common::ActorKind::Principal.into(),
        principal: Some(principal.to_proto()),
        ..Default::default()
    }
}

pub struct AuthorityApi {
    authority: Authority,
}

impl AuthorityApi {
    pub fn new(authority: Authority) -> AuthorityApi {
        AuthorityApi { authority }
    }

    fn readable(principal: &Principal, partner_id: &str) -> Result<(), Status> {
        check_partner_id(partner_id)?;
        principal.require_role(&[Role::Operator, Role::Partner])?;
        principal.require_partner(partner_id)
    }

    /// Saves (`Some`) or removes a map and records the change, in one transaction.
    async fn change(
        &self,
        principal: &Principal,
        partner_id: &str,
        tenant_id: &str,
        saved: Option<incidents::AuthorityMap>,
        expected_version: Option<u64>,
        comment: &str,
    ) -> Result<incidents::AuthorityMap, Status> {
        let pool = &self.authority.pool;
        let mut transaction = pool.begin().await.map_err(internal)?;
        let version = store::lock_version(&mut transaction, partner_id, tenant_id)
            .await
            .map_err(internal)?;
        if let Some(expected) = expected_version
            && expected != version
        {
            return Err(Status::aborted(format!(
                "expected_version: the map is at version {version}, not {expected}; read it again"
            )));
        }
        let (before, _) = self
            .authority
            .effective(partner_id, tenant_id)
            .await
            .map_err(internal)?;
        let now = Utc::now();
        let actor = principal_actor(principal);
        let version = version + 1;
        let saved = saved.map(|mut map| {
            map.partner_id = partner_id.to_owned();
            map.tenant_id = tenant_id.to_owned();
            map.standard = false;
            map.version = version;
            map.updated_at = Some(picket_platform::time::to_timestamp(now));
            map.updated_by = Some(actor.clone());
            map
        });
        let in_force = match &saved {
            Some(map) => map.clone(),
            None => {
                // Removing a tenant's deviation puts the partner's map back in force; removing the
                // partner's, the standard.
                let (partner, _) = store::maps(&mut *transaction, partner_id, "")
                    .await
                    .map_err(internal)?;
                let mut map = if tenant_id.is_empty() {
                    self.authority.standard.clone()
                } else {
                    partner.unwrap_or_else(|| self.authority.standard.clone())
                };
                map.partner_id = partner_id.to_owned();
                map
            }
        };
        let differences = differences(&before, &in_force);
        let change = store::record(
            &mut transaction,
            &store::Change {
                partner_id,
                tenant_id,
                version,
                saved: saved.as_ref(),
                in_force: &in_force,
                actor: &actor,
                comment,
                differences: &differences,
                now,
            },
        )
        .await
        .map_err(internal)?;
        let changed = incidents::AuthorityMapChanged {
            partner_id: partner_id.to_owned(),
            tenant_id: tenant_id.to_owned(),
            map: Some(in_force.clone()),
            change: Some(incidents::AuthorityMapChange {
                map: None,
                ..change
            }),
        };
        self.authority.publish(&mut transaction, &changed).await?;
        transaction.commit().await.map_err(internal)?;
        tracing::info!(%partner_id, %tenant_id, version, "authority map changed");
        Ok(in_force)
    }
}

#[tonic::async_trait]
impl AuthorityService for AuthorityApi {
    async fn get_authority_map(
        &self,
        request: Request<incidents::GetAuthorityMapRequest>,
    ) -> Result<Response<incidents::GetAuthorityMapResponse>, Status> {
        let principal = Principal::of(&request)?.clone();
        let message = request.into_inner();
        if principal.role == Role::Investigator {
            // Whom to call, who may contain and decide: the investigator of an open engagement of
            // the partner (on this tenant, when one is named) reads the map.
            check_partner_id(&message.partner_id)?;
            let engaged = crate::engagements::engaged_with(
                &self.authority.pool,
                &principal.subject,
                &message.partner_id,
                &message.tenant_id,
            )
            .await
            .map_err(internal)?;
            if !engaged {
                return Err(Status::permission_denied(
                    "partner_id: no open engagement of this partner is assigned to you",
                ));
            }
        } else {
            Self::readable(&principal, &message.partner_id)?;
        }
        let (map, tenant_deviation) = self
            .authority
            .effective(&message.partner_id, &message.tenant_id)
            .await
            .map_err(internal)?;
        Ok(Response::new(incidents::GetAuthorityMapResponse {
            map: Some(map),
            tenant_deviation,
        }))
    }

    async fn get_standard_authority_map(
        &self,
        request: Request<incidents::GetStandardAuthorityMapRequest>,
    ) -> Result<Response<incidents::GetStandardAuthorityMapResponse>, Status> {
        Principal::of(&request)?;
        Ok(Response::new(incidents::GetStandardAuthorityMapResponse {
            map: Some(self.authority.standard.clone()),
        }))
    }

    async fn update_authority_map(
        &self,
        request: Request<incidents::UpdateAuthorityMapRequest>,
    ) -> Result<Response<incidents::UpdateAuthorityMapResponse>, Status> {
        let principal = Principal::of(&request)?.clone();
        let message = request.into_inner();
        principal.require_partner_manager(&message.partner_id)?;
        let map = message
            .map
            .ok_or_else(|| Status::invalid_argument("map: is required"))?;
        check_map(&map)?;
        let saved = self
            .change(
                &principal,
                &message.partner_id,
                &message.tenant_id,
                Some(map),
                Some(message.expected_version),
                &message.comment,
            )
            .await?;
        let grants = self
            .authority
            .active_grants(&message.partner_id, &message.tenant_id)
            .await
            .map_err(internal)?;
        Ok(Response::new(incidents::UpdateAuthorityMapResponse {
            gaps: gaps::gaps(&saved, &grants),
            map: Some(saved),
        }))
    }

    async fn reset_authority_map(
        &self,
        request: Request<incidents::ResetAuthorityMapRequest>,
    ) -> Result<Response<incidents::ResetAuthorityMapResponse>, Status> {
        let principal = Principal::of(&request)?.clone();
        let message = request.into_inner();
        principal.require_partner_manager(&message.partner_id)?;
        let map = self
            .change(
                &principal,
                &message.partner_id,
                &message.tenant_id,
                None,
                None,
                &message.comment,
            )
            .await?;
        Ok(Response::new(incidents::ResetAuthorityMapResponse {
            map: Some(map),
        }))
    }

    async fn list_authority_map_history(
        &self,
        request: Request<incidents::ListAuthorityMapHistoryRequest>,
    ) -> Result<Response<incidents::ListAuthorityMapHistoryResponse>, Status> {
        let principal = Principal::of(&request)?.clone();
        let message = request.into_inner();
        Self::readable(&principal, &message.partner_id)?;
        let limit = page_size(message.page_size, 50, 500)?;
        let offset = parse_offset_token(&message.page_token)?;
        let changes = store::history(
            &self.authority.pool,
            &message.partner_id,
            &message.tenant_id,
            offset,
            limit,
        )
        .await
        .map_err(internal)?;
        Ok(Response::new(incidents::ListAuthorityMapHistoryResponse {
            next_page_token: next_offset_token(offset, changes.len(), limit),
            changes,
        }))
    }

    async fn validate_authority_map(
        &self,
        request: Request<incidents::ValidateAuthorityMapRequest>,
    ) -> Result<Response<incidents::ValidateAuthorityMapResponse>, Status> {
        let principal = Principal::of(&request)?.clone();
        let message = request.into_inner();
        Self::readable(&principal, &message.partner_id)?;
        let map = match message.draft {
            Some(mut draft) => {
                check_map(&draft)?;
                draft.partner_id = message.partner_id.clone();
                draft.tenant_id = message.tenant_id.clone();
                draft
            }
            None => {
                self.authority
                    .effective(&message.partner_id, &message.tenant_id)
                    .await
                    .map_err(internal)?
                    .0
            }
        };
        let grants = self
            .authority
            .active_grants(&message.partner_id, &message.tenant_id)
            .await
            .map_err(internal)?;
        Ok(Response::new(incidents::ValidateAuthorityMapResponse {
            gaps: gaps::gaps(&map, &grants),
        }))
    }

    async fn export_authority_worksheet(
        &self,
        request: Request<incidents::ExportAuthorityWorksheetRequest>,
    ) -> Result<Response<incidents::ExportAuthorityWorksheetResponse>, Status> {
        let principal = Principal::of(&request)?.clone();
        let message = request.into_inner();
        Self::readable(&principal, &message.partner_id)?;
        let format = incidents::WorksheetFormat::try_from(message.format)
            .map_err(|_| Status::invalid_argument("format: unknown worksheet format"))?;
        let (map, _) = self
            .authority
            .effective(&message.partner_id, &message.tenant_id)
            .await
            .map_err(internal)?;
        let grants = self
            .authority
            .active_grants(&message.partner_id, &message.tenant_id)
            .await
            .map_err(internal)?;
        let gaps = gaps::gaps(&map, &grants);
        let (content, content_type, file_name) = worksheet::worksheet(&map, &gaps, format);
        Ok(Response::new(incidents::ExportAuthorityWorksheetResponse {
            content,
            content_type: content_type.to_owned(),
            file_name,
            gaps,
        }))
    }

    async fn check_decision_authority(
        &self,
        request: Request<incidents::CheckDecisionAuthorityRequest>,
    ) -> Result<Response<incidents::CheckDecisionAuthorityResponse>, Status> {
        let caller = Principal::of(&request)?.clone();
        let message = request.into_inner();
        let incident_id = parse_uuid(&message.incident_id, "incident_id")?;
        let decision = incidents::DecisionKind::try_from(message.decision)
            .ok()
            .filter(|decision| *decision != incidents::DecisionKind::Unspecified)
            .ok_or_else(|| Status::invalid_argument("decision: is required"))?;
        let not_found = || Status::not_found(format!("incident_id: no incident {incident_id}"));
        let incident = crate::store::incidents_by_id(&self.authority.pool, &[incident_id])
            .await
            .map_err(internal)?
            .pop()
            .ok_or_else(not_found)?;
        let pool = &self.authority.pool;
        if !crate::api::may_read_tenant(pool, &caller, &incident.partner_id, &incident.tenant_id)
            .await?
        {
            return Err(not_found());
        }
        // Another principal is checked by the operator, or by the incident's partner for its own.
        let checked = match message.principal {
            None => caller.clone(),
            Some(other) => {
                caller.require_role(&[Role::Operator, Role::Partner])?;
                let role = Role::from_proto(other.role)
                    .ok_or_else(|| Status::invalid_argument("principal.role: is required"))?;
                Principal {
                    subject: other.subject,
                    role,
                    partner_id: (!other.partner_id.is_empty()).then_some(other.partner_id),
                    tenant_ids: other.tenant_ids,
                }
            }
        };
        let (allowed, reason, authority_basis) =
            match self.authority.check(&checked, &incident, decision).await {
                Ok(basis) => (true, format!("allowed by {basis}"), basis),
                Err(status) if status.code() == tonic::Code::PermissionDenied => {
                    (false, status.message().to_owned(), String::new())
                }
                Err(status) => return Err(status),
            };
        Ok(Response::new(incidents::CheckDecisionAuthorityResponse {
            allowed,
            reason,
            authority_basis,
        }))
    }

    async fn grant_customer_access(
        &self,
        request: Request<incidents::GrantCustomerAccessRequest>,
    ) -> Result<Response<incidents::GrantCustomerAccessResponse>, Status> {
        let principal = Principal::of(&request)?.clone();
        let message = request.into_inner();
        principal.require_partner_manager(&message.partner_id)?;
        if message.tenant_id.trim().is_empty() {
            return Err(Status::invalid_argument("tenant_id: is required"));
        }
        if message.customer_subject.trim().is_empty() {
            return Err(Status::invalid_argument("customer_subject: is required"));
        }
        let pool = &self.authority.pool;
        if !crate::store::offboarded_tenants(
            pool,
            &message.partner_id,
            std::slice::from_ref(&message.tenant_id),
        )
        .await
        .map_err(internal)?
        .is_empty()
        {
            return Err(Status::failed_precondition(
                "tenant_id: the tenant is being offboarded",
            ));
        }
        let mut transaction = pool.begin().await.map_err(internal)?;
        let grant = store::grant(
            &mut transaction,
            &incidents::CustomerGrant {
                partner_id: message.partner_id.clone(),
                tenant_id: message.tenant_id.clone(),
                customer_subject: message.customer_subject.clone(),
                email: message.email.clone(),
                display_name: message.display_name.clone(),
                decisions: message.decisions.clone(),
                severities: message.severities.clone(),
                granted_by: Some(principal.to_proto()),
                ..Default::default()
            },
            Utc::now(),
        )
        .await
        .map_err(internal)?;
        let changed = incidents::CustomerGrantChanged {
            partner_id: grant.partner_id.clone(),
            tenant_id: grant.tenant_id.clone(),
            grant: Some(grant.clone()),
        };
        self.authority.publish(&mut transaction, &changed).await?;
        transaction.commit().await.map_err(internal)?;
        Ok(Response::new(incidents::GrantCustomerAccessResponse {
            grant: Some(grant),
        }))
    }

    async fn revoke_customer_access(
        &self,
        request: Request<incidents::RevokeCustomerAccessRequest>,
    ) -> Result<Response<incidents::RevokeCustomerAccessResponse>, Status> {
        let principal = Principal::of(&request)?.clone();
        let message = request.into_inner();
        let grant_id = parse_uuid(&message.grant_id, "grant_id")?;
        let pool = &self.authority.pool;
        let grant = store::get_grant(pool, grant_id)
            .await
            .map_err(internal)?
            .filter(|grant| principal.can_access_partner(&grant.partner_id))
            .ok_or_else(|| Status::not_found(format!("grant_id: no grant {grant_id}")))?;
        principal.require_partner_manager(&grant.partner_id)?;
        if !grant.active {
            return Ok(Response::new(incidents::RevokeCustomerAccessResponse {
                grant: Some(grant),
            }));
        }
        let mut transaction = pool.begin().await.map_err(internal)?;
        let revoked = store::revoke(
            &mut *transaction,
            store::Revoked::Grant(grant_id),
            &principal_actor(&principal),
            &message.reason,
            Utc::now(),
        )
        .await
        .map_err(internal)?
        .pop()
        .unwrap_or(grant);
        let changed = incidents::CustomerGrantChanged {
            partner_id: revoked.partner_id.clone(),
            tenant_id: revoked.tenant_id.clone(),
            grant: Some(revoked.clone()),
        };
        self.authority.publish(&mut transaction, &changed).await?;
        transaction.commit().await.map_err(internal)?;
        Ok(Response::new(incidents::RevokeCustomerAccessResponse {
            grant: Some(revoked),
        }))
    }

    async fn list_customer_grants(
        &self,
        request: Request<incidents::ListCustomerGrantsRequest>,
    ) -> Result<Response<incidents::ListCustomerGrantsResponse>, Status> {
        let principal = Principal::of(&request)?.clone();
        let message = request.into_inner();
        Self::readable(&principal, &message.partner_id)?;
        let limit = page_size(message.page_size, 50, 500)?;
        let offset = parse_offset_token(&message.page_token)?;
        let grants = store::grants(
            &self.authority.pool,
            &message.partner_id,
            &message.tenant_id,
            message.include_revoked,
            offset,
            limit,
        )
        .await
        .map_err(internal)?;
        Ok(Response::new(incidents::ListCustomerGrantsResponse {
            next_page_token: next_offset_token(offset, grants.len(), limit),
            grants,
        }))
    }
}
