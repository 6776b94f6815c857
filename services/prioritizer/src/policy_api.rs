//! PolicyService: a partner's auto-approve rules, its prioritization settings and its tenants'
//! theme launches.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use picket_platform::Principal;
use picket_platform::auth::Role;
use picket_platform::grpc::{
    internal, next_offset_token, page_size, parse_offset_token, parse_uuid,
};
use picket_platform::time::{from_duration, to_duration, to_timestamp};
use picket_proto::incidents::v1 as incidents;
use picket_proto::incidents::v1::policy_service_server::PolicyService;
use sqlx::PgPool;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::api::{applied, may_read_tenant, principal_actor, process_status};
use crate::authority::Authority;
use crate::model::DecisionKind;
use crate::processor::{Command, Decide, EffectivePolicy, Job, Outcome, Processor, rule_actor};
use crate::store::{self, AutoApproveRuleRow, PartnerPolicyRow, TenantKey, ThemeLaunchRow};
use crate::themes;

const DEFAULT_PAGE_SIZE: i64 = 50;
const MAX_PAGE_SIZE: i64 = 500;

pub struct PolicyApi {
    processor: Arc<Processor>,
    authority: Authority,
}

/// Auto-approve rules and the partner's policy are the partner's own: customers and investigators
/// read neither.
const READERS: &[Role] = &[Role::Operator, Role::Partner];

impl PolicyApi {
    pub fn new(processor: Arc<Processor>, authority: Authority) -> PolicyApi {
        PolicyApi {
            processor,
            authority,
        }
    }

    fn pool(&self) -> &PgPool {
        self.processor.pool()
    }

    async fn policy_row(&self, partner_id: &str) -> Result<Option<PartnerPolicyRow>, Status> {
        Ok(store::partner_policies(self.pool(), &[partner_id])
            .await
            .map_err(internal)?
            .pop())
    }

    fn policy_proto(
        &self,
        partner_id: &str,
        row: Option<&PartnerPolicyRow>,
    ) -> incidents::PartnerPolicy {
        let policy = EffectivePolicy::of(row, self.processor.settings());
        incidents::PartnerPolicy {
            partner_id: partner_id.to_owned(),
            max_open_configuration_incidents: policy.cap,
            time_zone: policy.time_zone.name().to_owned(),
            theme_launch_hour: policy.theme_launch_hour,
            mute_duration: Some(to_duration(self.processor.settings().mute_duration)),
            correlation_window: policy.correlation_window.to_std().ok().map(to_duration),
            updated_at: row.map(|row| to_timestamp(row.updated_at)),
            updated_by: row.and_then(|row| row.updated_by.clone()),
        }
    }

    async fn visible_rule(
        &self,
        principal: &Principal,
        rule_id: &str,
    ) -> Result<AutoApproveRuleRow, Status> {
        principal.require_role(READERS)?;
        let rule_id = parse_uuid(rule_id, "rule_id")?;
        sqlx::query_as::<_, AutoApproveRuleRow>(
            "SELECT * FROM auto_approve_rules WHERE rule_id = $1",
        )
        .bind(rule_id)
        .fetch_optional(self.pool())
        .await
        .map_err(internal)?
        .filter(|rule| principal.can_access_partner(&rule.partner_id))
        .ok_or_else(|| Status::not_found(format!("auto-approve rule {rule_id} not found")))
    }

    async fn known_tenant(
        &self,
        partner_id: &str,
        tenant_id: &str,
    ) -> Result<store::TenantRow, Status> {
        if tenant_id.is_empty() {
            return Err(Status::invalid_argument("tenant_id: is required"));
        }
        sqlx::query_as::<_, store::TenantRow>(
            "SELECT * FROM tenants WHERE partner_id = $1 AND tenant_id = $2",
        )
        .bind(partner_id)
        .bind(tenant_id)
        .fetch_optional(self.pool())
        .await
        .map_err(internal)?
        .ok_or_else(|| Status::not_found(format!("tenant {tenant_id} not found")))
    }

    /// Approves by `rule` the open incidents it covers; returns their ids.
    async fn apply_rule_to_open_incidents(
        &self,
        rule: &AutoApproveRuleRow,
    ) -> Result<Vec<String>, Status> {
        let open: Vec<(String, Uuid)> = sqlx::query_as(
            "SELECT tenant_id, incident_id FROM incidents
             WHERE partner_id = $1 AND check_id = $2 AND state = 'open' AND ($3 OR tenant_id = ANY($4))
             ORDER BY opened_at",
        )
        .bind(&rule.partner_id)
        .bind(&rule.check_id)
        .bind(rule.all_tenants)
        .bind(&rule.tenant_ids)
        .fetch_all(self.pool())
        .await
        .map_err(internal)?;
        let jobs: Vec<Job> = open
            .iter()
            .map(|(tenant_id, incident_id)| {
                Job::new(
                    TenantKey::new(&rule.partner_id, tenant_id),
                    Command::Decide(Decide {
                        incident_id: *incident_id,
                        kind: DecisionKind::Approve,
                        actor: rule_actor(rule.rule_id),
                        comment: "approved by the partner's new auto-approve rule".into(),
                        expected_version: 0,
                        authority_basis: format!("auto-approve rule {}", rule.rule_id),
                        auto_approve_rule_id: Some(rule.rule_id),
                    }),
                )
            })
            .collect();
        let mut approved = Vec::new();
        for chunk in jobs.chunks(self.processor.settings().batch_size) {
            let outcomes = self
                .processor
                .run(chunk.to_vec())
                .await
                .map_err(process_status)?;
            for (job, outcome) in chunk.iter().zip(outcomes) {
                if let (Command::Decide(decide), Outcome::Applied(_)) = (&job.command, outcome) {
                    approved.push(decide.incident_id.to_string());
                }
            }
        }
        Ok(approved)
    }
}

fn validate_zone(zone: &str) -> Result<Tz, Status> {
    zone.parse::<Tz>().map_err(|_| {
        Status::invalid_argument(format!(
            "time_zone: {zone:?} is not an IANA time zone such as Europe/Amsterdam"
        ))
    })
}

#[tonic::async_trait]
impl PolicyService for PolicyApi {
    async fn create_auto_approve_rule(
        &self,
        request: Request<incidents::CreateAutoApproveRuleRequest>,
    ) -> Result<Response<incidents::CreateAutoApproveRuleResponse>, Status> {
        let principal = Principal::of(&request)?;
        let body = request.get_ref();
        principal.require_partner_manager(&body.partner_id)?;
        if body.check_id.trim().is_empty() {
            return Err(Status::invalid_argument("check_id: is required"));
        }
        let all_tenants = match incidents::AutoApproveScope::try_from(body.scope) {
            Ok(incidents::AutoApproveScope::AllTenants) => {
                if !body.tenant_ids.is_empty() {
                    return Err(Status::invalid_argument(
                        "tenant_ids: must be empty when the scope is every tenant",
                    ));
                }
                true
            }
            Ok(incidents::AutoApproveScope::Tenants) => {
                if body.tenant_ids.is_empty()
                    || body
                        .tenant_ids
                        .iter()
                        .any(|tenant| tenant.trim().is_empty())
                {
                    return Err(Status::invalid_argument(
                        "tenant_ids: list one or more tenants when the scope is TENANTS",
                    ));
                }
                false
            }
            _ => {
                return Err(Status::invalid_argument(
                    "scope: choose TENANTS or ALL_TENANTS",
                ));
            }
        };
        let mut tenant_ids = body.tenant_ids.clone();
        tenant_ids.sort();
        tenant_ids.dedup();
        self.authority
            .check_auto_approver(
                principal,
                &body.partner_id,
                body.check_id.trim(),
                (!all_tenants).then_some(tenant_ids.as_slice()),
            )
            .await?;
        let rule: AutoApproveRuleRow = sqlx::query_as(
            "INSERT INTO auto_approve_rules (rule_id, partner_id, check_id, all_tenants, tenant_ids, description,
                 created_by, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING *",
        )
        .bind(Uuid::now_v7())
        .bind(&body.partner_id)
        .bind(body.check_id.trim())
        .bind(all_tenants)
        .bind(&tenant_ids)
        .bind(&body.description)
        .bind(sqlx::types::Json(principal.to_proto()))
        .bind(self.processor.clock().now())
        .fetch_one(self.pool())
        .await
        .map_err(internal)?;
        let approved_incident_ids = if body.apply_to_open_incidents {
            self.apply_rule_to_open_incidents(&rule).await?
        } else {
            Vec::new()
        };
        let rule = self
            .visible_rule(principal, &rule.rule_id.to_string())
            .await?;
        Ok(Response::new(incidents::CreateAutoApproveRuleResponse {
            rule: Some(rule.to_proto()),
            approved_incident_ids,
        }))
    }

    async fn get_auto_approve_rule(
        &self,
        request: Request<incidents::GetAutoApproveRuleRequest>,
    ) -> Result<Response<incidents::GetAutoApproveRuleResponse>, Status> {
        let principal = Principal::of(&request)?;
        let rule = self
            .visible_rule(principal, &request.get_ref().rule_id)
            .await?;
        Ok(Response::new(incidents::GetAutoApproveRuleResponse {
            rule: Some(rule.to_proto()),
        }))
    }

    async fn list_auto_approve_rules(
        &self,
        request: Request<incidents::ListAutoApproveRulesRequest>,
    ) -> Result<Response<incidents::ListAutoApproveRulesResponse>, Status> {
        let principal = Principal::of(&request)?;
        let body = request.get_ref();
        if body.partner_id.is_empty() {
            return Err(Status::invalid_argument("partner_id: is required"));
        }
        principal.require_role(READERS)?;
        principal.require_partner(&body.partner_id)?;
        let limit = page_size(body.page_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)?;
        let offset = parse_offset_token(&body.page_token)?;
        let rules: Vec<AutoApproveRuleRow> = sqlx::query_as(
            "SELECT * FROM auto_approve_rules
             WHERE partner_id = $1
               AND ($2::text IS NULL OR all_tenants OR $2 = ANY(tenant_ids))
               AND ($3::text IS NULL OR check_id = $3)
             ORDER BY created_at DESC, rule_id DESC OFFSET $4 LIMIT $5",
        )
        .bind(&body.partner_id)
        .bind((!body.tenant_id.is_empty()).then_some(&body.tenant_id))
        .bind((!body.check_id.is_empty()).then_some(&body.check_id))
        .bind(offset)
        .bind(limit)
        .fetch_all(self.pool())
        .await
        .map_err(internal)?;
        let next_page_token = next_offset_token(offset, rules.len(), limit);
        Ok(Response::new(incidents::ListAutoApproveRulesResponse {
            rules: rules.iter().map(AutoApproveRuleRow::to_proto).collect(),
            next_page_token,
        }))
    }

    async fn delete_auto_approve_rule(
        &self,
        request: Request<incidents::DeleteAutoApproveRuleRequest>,
    ) -> Result<Response<incidents::DeleteAutoApproveRuleResponse>, Status> {
        let principal = Principal::of(&request)?;
        let rule = self
            .visible_rule(principal, &request.get_ref().rule_id)
            .await?;
        principal.require_partner_manager(&rule.partner_id)?;
        sqlx::query("DELETE FROM auto_approve_rules WHERE rule_id = $1")
            .bind(rule.rule_id)
            .execute(self.pool())
            .await
            .map_err(internal)?;
        Ok(Response::new(incidents::DeleteAutoApproveRuleResponse {
            rule: Some(rule.to_proto()),
        }))
    }

    async fn get_partner_policy(
        &self,
        request: Request<incidents::GetPartnerPolicyRequest>,
    ) -> Result<Response<incidents::GetPartnerPolicyResponse>, Status> {
        let principal = Principal::of(&request)?;
        let partner_id = &request.get_ref().partner_id;
        if partner_id.is_empty() {
            return Err(Status::invalid_argument("partner_id: is required"));
        }
        principal.require_role(READERS)?;
        principal.require_partner(partner_id)?;
        let row = self.policy_row(partner_id).await?;
        Ok(Response::new(incidents::GetPartnerPolicyResponse {
            policy: Some(self.policy_proto(partner_id, row.as_ref())),
        }))
    }

    async fn update_partner_policy(
        &self,
        request: Request<incidents::UpdatePartnerPolicyRequest>,
    ) -> Result<Response<incidents::UpdatePartnerPolicyResponse>, Status> {
        let principal = Principal::of(&request)?;
        let body = request.get_ref();
        principal.require_partner_manager(&body.partner_id)?;
        let current = EffectivePolicy::of(
            self.policy_row(&body.partner_id).await?.as_ref(),
            self.processor.settings(),
        );
        let cap = match body.max_open_configuration_incidents {
            Some(0) => {
                return Err(Status::invalid_argument(
                    "max_open_configuration_incidents: must be at least 1",
                ));
            }
            Some(cap) => cap,
            None => current.cap,
        };
        let zone = match &body.time_zone {
            Some(zone) => validate_zone(zone)?,
            None => current.time_zone,
        };
        let hour = match body.theme_launch_hour {
            Some(hour) if hour > 23 => {
                return Err(Status::invalid_argument(
                    "theme_launch_hour: must be an hour from 0 to 23",
                ));
            }
            Some(hour) => hour,
            None => current.theme_launch_hour,
        };
        let window = match &body.correlation_window {
            Some(window) => from_duration(window)
                .filter(|window| !window.is_zero())
                .ok_or_else(|| {
                    Status::invalid_argument("correlation_window: must be a positive duration")
                })?
                .as_secs()
                .max(1),
            None => u64::try_from(current.correlation_window.num_seconds()).unwrap_or(1),
        };
        let row: PartnerPolicyRow = sqlx::query_as(
            "INSERT INTO partner_policies (partner_id, max_open_configuration_incidents, time_zone,
                 theme_launch_hour, correlation_window_seconds, updated_at, updated_by)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (partner_id) DO UPDATE SET
                 (max_open_configuration_incidents, time_zone, theme_launch_hour, correlation_window_seconds,
                  updated_at, updated_by)
                 = (EXCLUDED.max_open_configuration_incidents, EXCLUDED.time_zone, EXCLUDED.theme_launch_hour,
                    EXCLUDED.correlation_window_seconds, EXCLUDED.updated_at, EXCLUDED.updated_by)
             RETURNING *",
        )
        .bind(&body.partner_id)
        .bind(i32::try_from(cap).unwrap_or(i32::MAX))
        .bind(zone.name())
        .bind(i32::try_from(hour).unwrap_or_default())
        .bind(i64::try_from(window).unwrap_or(i64::MAX))
        .bind(self.processor.clock().now())
        .bind(sqlx::types::Json(principal.to_proto()))
        .fetch_one(self.pool())
        .await
        .map_err(internal)?;
        Ok(Response::new(incidents::UpdatePartnerPolicyResponse {
            policy: Some(self.policy_proto(&body.partner_id, Some(&row))),
        }))
    }

    async fn list_theme_launches(
        &self,
        request: Request<incidents::ListThemeLaunchesRequest>,
    ) -> Result<Response<incidents::ListThemeLaunchesResponse>, Status> {
        let principal = Principal::of(&request)?;
        let body = request.get_ref();
        if !may_read_tenant(self.pool(), principal, &body.partner_id, &body.tenant_id).await? {
            return Err(Status::not_found(format!(
                "tenant {} not found",
                body.tenant_id
            )));
        }
        let tenant = self.known_tenant(&body.partner_id, &body.tenant_id).await?;
        let launched: Vec<ThemeLaunchRow> = sqlx::query_as(
            "SELECT * FROM theme_launches WHERE partner_id = $1 AND tenant_id = $2 ORDER BY theme_order",
        )
        .bind(&body.partner_id)
        .bind(&body.tenant_id)
        .fetch_all(self.pool())
        .await
        .map_err(internal)?;
        let policy = EffectivePolicy::of(
            self.policy_row(&body.partner_id).await?.as_ref(),
            self.processor.settings(),
        );
        let now: DateTime<Utc> = self.processor.clock().now();
        let next_order = tenant.launched_themes + 1;
        let launches = self
            .processor
            .themes()
            .all()
            .iter()
            .map(|theme| {
                let order = i32::try_from(theme.order).unwrap_or(i32::MAX);
                let launch = launched.iter().find(|launch| launch.theme_order == order);
                incidents::ThemeLaunch {
                    tenant_id: body.tenant_id.clone(),
                    theme_id: theme.id.clone(),
                    theme_title: theme.title.clone(),
                    theme_order: theme.order,
                    launched_at: launch.map(|launch| to_timestamp(launch.launched_at)),
                    scheduled_at: (launch.is_none() && order == next_order).then(|| {
                        to_timestamp(themes::next_launch(
                            now,
                            policy.time_zone,
                            policy.theme_launch_hour,
                        ))
                    }),
                    launched_by: launch.map(|launch| launch.launched_by.clone()),
                }
            })
            .collect();
        Ok(Response::new(incidents::ListThemeLaunchesResponse {
            launches,
        }))
    }

    async fn launch_next_theme(
        &self,
        request: Request<incidents::LaunchNextThemeRequest>,
    ) -> Result<Response<incidents::LaunchNextThemeResponse>, Status> {
        let principal = Principal::of(&request)?;
        let body = request.get_ref();
        principal.require_partner_manager(&body.partner_id)?;
        self.known_tenant(&body.partner_id, &body.tenant_id).await?;
        let job = Job::new(
            TenantKey::new(&body.partner_id, &body.tenant_id),
            Command::LaunchTheme {
                actor: principal_actor(principal),
                scheduled_for: None,
            },
        );
        let reply = applied(self.processor.run_one(job).await.map_err(process_status)?)?;
        Ok(Response::new(incidents::LaunchNextThemeResponse {
            launch: reply.launch,
        }))
    }
}
