//! The prioritizer's tables. The policy's writes are whole rows sent in bulk (one statement per
//! table per batch) as JSON records, so that a batch of events costs a handful of round trips.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use picket_platform::time::to_timestamp;
use picket_proto::common::v1 as common;
use picket_proto::incidents::v1 as incidents;
use serde::Serialize;
use sqlx::{AssertSqlSafe, PgConnection, PgExecutor};
use uuid::Uuid;

use crate::model::{DecisionKind, IncidentState, Kind, Origin, Resolution, Severity};

/// A tenant, by partner and tenant id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantKey {
    pub partner_id: String,
    pub tenant_id: String,
}

impl TenantKey {
    pub fn new(partner_id: &str, tenant_id: &str) -> TenantKey {
        TenantKey {
            partner_id: partner_id.to_owned(),
            tenant_id: tenant_id.to_owned(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct TenantRow {
    pub partner_id: String,
    pub tenant_id: String,
    pub launched_themes: i32,
    pub onboarded_at: DateTime<Utc>,
    pub last_launch_at: DateTime<Utc>,
    pub version: i64,
}

impl TenantRow {
    pub fn key(&self) -> TenantKey {
        TenantKey::new(&self.partner_id, &self.tenant_id)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct RecommendationRow {
    pub partner_id: String,
    pub tenant_id: String,
    pub fingerprint: String,
    pub check_id: String,
    pub kind: String,
    pub severity: String,
    pub title: String,
    pub description: String,
    pub target: String,
    pub target_type: String,
    pub target_id: String,
    pub theme: String,
    pub theme_order: i32,
    pub recommended_fix: String,
    pub fix_action: i32,
    #[sqlx(json)]
    pub fix_parameters: HashMap<String, String>,
    #[sqlx(json)]
    pub evidence: HashMap<String, String>,
    pub scan_id: String,
    pub observed_at: DateTime<Utc>,
    pub first_observed_at: DateTime<Utc>,
    pub last_observed_at: DateTime<Utc>,
    pub failing: bool,
    pub muted_until: Option<DateTime<Utc>>,
    pub ignored_at: Option<DateTime<Utc>>,
    pub standing: String,
    pub by_hand: bool,
    pub queued_at: Option<DateTime<Utc>>,
    pub incident_id: Option<Uuid>,
    pub last_decision_id: Option<Uuid>,
}

impl RecommendationRow {
    pub fn kind(&self) -> Kind {
        Kind::from_db(&self.kind).unwrap_or(Kind::Configuration)
    }

    pub fn severity(&self) -> Severity {
        Severity::from_db(&self.severity).unwrap_or(Severity::Low)
    }

    pub fn to_proto(
        &self,
        state: incidents::RecommendationState,
        queue_position: u32,
        last_decision: Option<&DecisionRow>,
    ) -> incidents::Recommendation {
        incidents::Recommendation {
            partner_id: self.partner_id.clone(),
            tenant_id: self.tenant_id.clone(),
            fingerprint: self.fingerprint.clone(),
            check_id: self.check_id.clone(),
            kind: self.kind().to_proto().into(),
            severity: self.severity().to_proto().into(),
            title: self.title.clone(),
            description: self.description.clone(),
            target: self.target.clone(),
            theme: self.theme.clone(),
            recommended_fix: self.recommended_fix.clone(),
            state: state.into(),
            first_observed_at: Some(to_timestamp(self.first_observed_at)),
            last_observed_at: Some(to_timestamp(self.observed_at)),
            muted_until: self.muted_until.map(to_timestamp),
            ignored_at: self.ignored_at.map(to_timestamp),
            incident_id: self
                .incident_id
                .map(|id| id.to_string())
                .unwrap_or_default(),
            queue_position,
            last_decision: last_decision.map(DecisionRow::to_proto),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct IncidentRow {
    pub incident_id: Uuid,
    pub partner_id: String,
    pub tenant_id: String,
    pub fingerprint: String,
    pub check_id: String,
    pub kind: String,
    pub severity: String,
    pub title: String,
    pub description: String,
    pub target: String,
    pub target_type: String,
    pub target_id: String,
    pub theme: String,
    pub recommended_fix: String,
    pub fix_action: i32,
    #[sqlx(json)]
    pub fix_parameters: HashMap<String, String>,
    #[sqlx(json)]
    pub evidence: HashMap<String, String>,
    pub scan_id: String,
    pub state: String,
    pub resolution: Option<String>,
    pub origin: String,
    pub override_reason: String,
    pub occurrence_count: i32,
    pub opened_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub fix_id: Option<Uuid>,
    pub last_fix_error: String,
    pub muted_until: Option<DateTime<Utc>>,
    pub decision_due_at: Option<DateTime<Utc>>,
    pub escalation_level: i32,
    pub escalated_at: Option<DateTime<Utc>>,
    pub last_decision_id: Option<Uuid>,
    pub version: i64,
}

impl IncidentRow {
    pub fn state(&self) -> IncidentState {
        IncidentState::from_db(&self.state).unwrap_or(IncidentState::Open)
    }

    pub fn severity(&self) -> Severity {
        Severity::from_db(&self.severity).unwrap_or(Severity::Low)
    }

    pub fn kind(&self) -> Kind {
        Kind::from_db(&self.kind).unwrap_or(Kind::Configuration)
    }

    pub fn key(&self) -> TenantKey {
        TenantKey::new(&self.partner_id, &self.tenant_id)
    }

    pub fn to_proto(&self, last_decision: Option<&DecisionRow>) -> incidents::Incident {
        let resolution = self
            .resolution
            .as_deref()
            .and_then(Resolution::from_db)
            .map(Resolution::to_proto)
            .unwrap_or_default();
        let origin = Origin::from_db(&self.origin)
            .map(Origin::to_proto)
            .unwrap_or_default();
        incidents::Incident {
            incident_id: self.incident_id.to_string(),
            partner_id: self.partner_id.clone(),
            tenant_id: self.tenant_id.clone(),
            fingerprint: self.fingerprint.clone(),
            check_id: self.check_id.clone(),
            kind: self.kind().to_proto().into(),
            severity: self.severity().to_proto().into(),
            title: self.title.clone(),
            description: self.description.clone(),
            target: self.target.clone(),
            recommended_fix: self.recommended_fix.clone(),
            state: self.state().to_proto().into(),
            opened_at: Some(to_timestamp(self.opened_at)),
            updated_at: Some(to_timestamp(self.updated_at)),
            resolved_at: self.resolved_at.map(to_timestamp),
            occurrence_count: u32::try_from(self.occurrence_count).unwrap_or_default(),
            last_seen_at: Some(to_timestamp(self.last_seen_at)),
            theme: self.theme.clone(),
            fix_action: self.fix_action,
            fix_parameters: self.fix_parameters.clone(),
            evidence: self.evidence.clone(),
            target_type: self.target_type.clone(),
            target_id: self.target_id.clone(),
            origin: origin.into(),
            override_reason: self.override_reason.clone(),
            last_decision: last_decision.map(DecisionRow::to_proto),
            fix_id: self.fix_id.map(|id| id.to_string()).unwrap_or_default(),
            last_fix_error: self.last_fix_error.clone(),
            muted_until: self.muted_until.map(to_timestamp),
            decision_due_at: self.decision_due_at.map(to_timestamp),
            escalation_level: u32::try_from(self.escalation_level).unwrap_or_default(),
            escalated_at: self.escalated_at.map(to_timestamp),
            resolution: resolution.into(),
            scan_id: self.scan_id.clone(),
            version: u64::try_from(self.version).unwrap_or_default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct DecisionRow {
    pub decision_id: Uuid,
    pub incident_id: Uuid,
    pub kind: String,
    #[sqlx(json)]
    pub actor: common::Actor,
    pub comment: String,
    pub decided_at: DateTime<Utc>,
    pub muted_until: Option<DateTime<Utc>>,
    pub auto_approve_rule_id: Option<Uuid>,
    pub fix_id: Option<Uuid>,
    pub authority_basis: String,
}

impl DecisionRow {
    pub fn to_proto(&self) -> incidents::Decision {
        incidents::Decision {
            decision_id: self.decision_id.to_string(),
            incident_id: self.incident_id.to_string(),
            kind: DecisionKind::from_db(&self.kind)
                .map(DecisionKind::to_proto)
                .unwrap_or_default()
                .into(),
            actor: Some(self.actor.clone()),
            comment: self.comment.clone(),
            decided_at: Some(to_timestamp(self.decided_at)),
            muted_until: self.muted_until.map(to_timestamp),
            auto_approve_rule_id: self
                .auto_approve_rule_id
                .map(|id| id.to_string())
                .unwrap_or_default(),
            fix_id: self.fix_id.map(|id| id.to_string()).unwrap_or_default(),
            authority_basis: self.authority_basis.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct TimelineRow {
    pub entry_id: Uuid,
    pub incident_id: Uuid,
    pub kind: String,
    #[sqlx(json)]
    pub actor: common::Actor,
    pub occurred_at: DateTime<Utc>,
    pub from_state: Option<String>,
    pub to_state: Option<String>,
    pub summary: String,
    pub decision_id: Option<Uuid>,
    #[sqlx(json)]
    pub details: HashMap<String, String>,
    pub version: i64,
}

impl TimelineRow {
    pub fn to_proto(&self, decision: Option<&DecisionRow>) -> incidents::TimelineEntry {
        let state = |value: &Option<String>| {
            value
                .as_deref()
                .and_then(IncidentState::from_db)
                .map(IncidentState::to_proto)
                .unwrap_or_default()
                .into()
        };
        incidents::TimelineEntry {
            entry_id: self.entry_id.to_string(),
            incident_id: self.incident_id.to_string(),
            kind: incidents::TimelineEntryKind::from_str_name(&self.kind)
                .unwrap_or_default()
                .into(),
            actor: Some(self.actor.clone()),
            occurred_at: Some(to_timestamp(self.occurred_at)),
            from_state: state(&self.from_state),
            to_state: state(&self.to_state),
            summary: self.summary.clone(),
            decision: decision.map(DecisionRow::to_proto),
            details: self.details.clone(),
            version: u64::try_from(self.version).unwrap_or_default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct ThemeLaunchRow {
    pub partner_id: String,
    pub tenant_id: String,
    pub theme_order: i32,
    pub theme_id: String,
    pub launched_at: DateTime<Utc>,
    #[sqlx(json)]
    pub launched_by: common::Actor,
}

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct PartnerPolicyRow {
    pub partner_id: String,
    pub max_open_configuration_incidents: i32,
    pub time_zone: String,
    pub theme_launch_hour: i32,
    pub correlation_window_seconds: i64,
    pub updated_at: DateTime<Utc>,
    #[sqlx(json(nullable))]
    pub updated_by: Option<common::Principal>,
}

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct AutoApproveRuleRow {
    pub rule_id: Uuid,
    pub partner_id: String,
    pub check_id: String,
    pub all_tenants: bool,
    pub tenant_ids: Vec<String>,
    pub description: String,
    #[sqlx(json)]
    pub created_by: common::Principal,
    pub created_at: DateTime<Utc>,
    pub approvals: i32,
    pub last_applied_at: Option<DateTime<Utc>>,
}

impl AutoApproveRuleRow {
    pub fn covers(&self, tenant_id: &str, check_id: &str) -> bool {
        self.check_id == check_id
            && (self.all_tenants || self.tenant_ids.iter().any(|tenant| tenant == tenant_id))
    }

    pub fn to_proto(&self) -> incidents::AutoApproveRule {
        incidents::AutoApproveRule {
            rule_id: self.rule_id.to_string(),
            partner_id: self.partner_id.clone(),
            check_id: self.check_id.clone(),
            scope: if self.all_tenants {
                incidents::AutoApproveScope::AllTenants
            } else {
                incidents::AutoApproveScope::Tenants
            }
            .into(),
            tenant_ids: self.tenant_ids.clone(),
            description: self.description.clone(),
            created_by: Some(self.created_by.clone()),
            created_at: Some(to_timestamp(self.created_at)),
            approvals: u32::try_from(self.approvals).unwrap_or_default(),
            last_applied_at: self.last_applied_at.map(to_timestamp),
        }
    }
}

/// JSON records of `rows`, for `jsonb_populate_recordset($1::text::jsonb)`.
fn records<T: Serialize>(rows: &[T]) -> Result<String, sqlx::Error> {
    serde_json::to_string(rows).map_err(|error| sqlx::Error::Encode(Box::new(error)))
}

/// Inserts `rows` into `table`, or replaces the listed columns of those already there.
async fn upsert<T: Serialize>(
    connection: &mut PgConnection,
    table: &str,
    conflict: &str,
    update: &[&str],
    rows: &[T],
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let action = if update.is_empty() {
        "NOTHING".to_owned()
    } else {
        let columns = update.join(", ");
        let values = update
            .iter()
            .map(|column| format!("EXCLUDED.{column}"))
            .collect::<Vec<_>>()
            .join(", ");
        format!("UPDATE SET ({columns}) = ROW({values})")
    };
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {table} SELECT * FROM jsonb_populate_recordset(NULL::{table}, $1::text::jsonb)
         ON CONFLICT ({conflict}) DO {action}"
    )))
    .bind(records(rows)?)
    .execute(connection)
    .await?;
    Ok(())
}

const RECOMMENDATION_UPDATES: &[&str] = &[
    "check_id",
    "kind",
    "severity",
    "title",
    "description",
    "target",
    "target_type",
    "target_id",
    "theme",
    "theme_order",
    "recommended_fix",
    "fix_action",
    "fix_parameters",
    "evidence",
    "scan_id",
    "observed_at",
    "first_observed_at",
    "last_observed_at",
    "failing",
    "muted_until",
    "ignored_at",
    "standing",
    "by_hand",
    "queued_at",
    "incident_id",
    "last_decision_id",
];

const INCIDENT_UPDATES: &[&str] = &[
    "severity",
    "title",
    "description",
    "target",
    "target_type",
    "target_id",
    "recommended_fix",
    "fix_action",
    "fix_parameters",
    "evidence",
    "scan_id",
    "state",
    "resolution",
    "origin",
    "override_reason",
    "occurrence_count",
    "updated_at",
    "last_seen_at",
    "resolved_at",
    "fix_id",
    "last_fix_error",
    "muted_until",
    "decision_due_at",
    "escalation_level",
    "escalated_at",
    "last_decision_id",
    "version",
];

/// Everything one batch of the policy writes.
#[derive(Debug, Default)]
pub struct Changes {
    pub tenants: Vec<TenantRow>,
    pub recommendations: Vec<RecommendationRow>,
    pub incidents: Vec<IncidentRow>,
    pub decisions: Vec<DecisionRow>,
    pub timeline: Vec<TimelineRow>,
    pub theme_launches: Vec<ThemeLaunchRow>,
    /// Auto-approve rules that approved incidents: (rule, approvals, when).
    pub rule_uses: Vec<(Uuid, i32, DateTime<Utc>)>,
}

impl Changes {
    pub async fn write(&self, connection: &mut PgConnection) -> Result<(), sqlx::Error> {
        upsert(
            connection,
            "tenants",
            "partner_id, tenant_id",
            &["launched_themes", "last_launch_at", "version"],
            &self.tenants,
        )
        .await?;
        upsert(
            connection,
            "recommendations",
            "partner_id, tenant_id, fingerprint",
            RECOMMENDATION_UPDATES,
            &self.recommendations,
        )
        .await?;
        upsert(
            connection,
            "incidents",
            "incident_id",
            INCIDENT_UPDATES,
            &self.incidents,
        )
        .await?;
        upsert(connection, "decisions", "decision_id", &[], &self.decisions).await?;
        if !self.timeline.is_empty() {
            // The sequence orders the timeline: entries are inserted in the order they happened.
            sqlx::query(
                "INSERT INTO incident_timeline (entry_id, incident_id, kind, actor, occurred_at, from_state,
                     to_state, summary, decision_id, details, version)
                 SELECT entry_id, incident_id, kind, actor, occurred_at, from_state, to_state, summary,
                     decision_id, details, version
                 FROM jsonb_populate_recordset(NULL::incident_timeline, $1::text::jsonb) WITH ORDINALITY AS e
                 ORDER BY e.ordinality",
            )
            .bind(records(&self.timeline)?)
            .execute(&mut *connection)
            .await?;
        }
        upsert(
            connection,
            "theme_launches",
            "partner_id, tenant_id, theme_order",
            &[],
            &self.theme_launches,
        )
        .await?;
        if !self.rule_uses.is_empty() {
            let ids: Vec<Uuid> = self.rule_uses.iter().map(|(id, _, _)| *id).collect();
            let counts: Vec<i32> = self.rule_uses.iter().map(|(_, count, _)| *count).collect();
            let times: Vec<DateTime<Utc>> = self.rule_uses.iter().map(|(_, _, at)| *at).collect();
            sqlx::query(
                "UPDATE auto_approve_rules r SET approvals = r.approvals + u.count,
                     last_applied_at = GREATEST(r.last_applied_at, u.at)
                 FROM unnest($1::uuid[], $2::int[], $3::timestamptz[]) AS u(rule_id, count, at)
                 WHERE r.rule_id = u.rule_id",
            )
            .bind(&ids)
            .bind(&counts)
            .bind(&times)
            .execute(&mut *connection)
            .await?;
        }
        Ok(())
    }
}

/// Creates the tenants not known yet (no theme launched); returns those it created.
pub async fn create_tenants(
    connection: &mut PgConnection,
    keys: &[TenantKey],
    now: DateTime<Utc>,
) -> Result<Vec<TenantKey>, sqlx::Error> {
    let (partners, tenants) = split(keys);
    let rows: Vec<(String, String)> = sqlx::query_as(
        "INSERT INTO tenants (partner_id, tenant_id, launched_themes, onboarded_at, last_launch_at)
         SELECT partner_id, tenant_id, 0, $3, $3 FROM unnest($1::text[], $2::text[]) AS t(partner_id, tenant_id)
         ON CONFLICT DO NOTHING RETURNING partner_id, tenant_id",
    )
    .bind(&partners)
    .bind(&tenants)
    .bind(now)
    .fetch_all(connection)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(partner_id, tenant_id)| TenantKey {
            partner_id,
            tenant_id,
        })
        .collect())
}

fn split(keys: &[TenantKey]) -> (Vec<&str>, Vec<&str>) {
    keys.iter()
        .map(|key| (key.partner_id.as_str(), key.tenant_id.as_str()))
        .unzip()
}

/// Locks the tenants' rows, in key order (every writer locks in that order, so none deadlock).
pub async fn lock_tenants(
    connection: &mut PgConnection,
    keys: &[TenantKey],
) -> Result<Vec<TenantRow>, sqlx::Error> {
    let (partners, tenants) = split(keys);
    sqlx::query_as(
        "SELECT t.* FROM tenants t JOIN unnest($1::text[], $2::text[]) AS k(partner_id, tenant_id)
             USING (partner_id, tenant_id)
         ORDER BY t.partner_id, t.tenant_id FOR UPDATE OF t",
    )
    .bind(&partners)
    .bind(&tenants)
    .fetch_all(connection)
    .await
}

pub async fn tenant_recommendations(
    connection: &mut PgConnection,
    keys: &[TenantKey],
) -> Result<Vec<RecommendationRow>, sqlx::Error> {
    let (partners, tenants) = split(keys);
    sqlx::query_as(
        "SELECT r.* FROM recommendations r JOIN unnest($1::text[], $2::text[]) AS k(partner_id, tenant_id)
             USING (partner_id, tenant_id)",
    )
    .bind(&partners)
    .bind(&tenants)
    .fetch_all(connection)
    .await
}

pub async fn incidents_by_id<'c>(
    executor: impl PgExecutor<'c>,
    ids: &[Uuid],
) -> Result<Vec<IncidentRow>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM incidents WHERE incident_id = ANY($1)")
        .bind(ids)
        .fetch_all(executor)
        .await
}

pub async fn decisions_by_id<'c>(
    executor: impl PgExecutor<'c>,
    ids: &[Uuid],
) -> Result<Vec<DecisionRow>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM decisions WHERE decision_id = ANY($1)")
        .bind(ids)
        .fetch_all(executor)
        .await
}

pub async fn partner_policies<'c>(
    executor: impl PgExecutor<'c>,
    partner_ids: &[&str],
) -> Result<Vec<PartnerPolicyRow>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM partner_policies WHERE partner_id = ANY($1)")
        .bind(partner_ids)
        .fetch_all(executor)
        .await
}

pub async fn auto_approve_rules<'c>(
    executor: impl PgExecutor<'c>,
    partner_ids: &[&str],
) -> Result<Vec<AutoApproveRuleRow>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM auto_approve_rules WHERE partner_id = ANY($1)")
        .bind(partner_ids)
        .fetch_all(executor)
        .await
}
