//! The prioritizer's tables. A batch of the policy writes whole rows in bulk, every table in one
//! statement, each column sent as a binary array: PostgreSQL neither parses JSON records nor
//! converts text per value, and a batch of events costs a handful of round trips.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use picket_platform::time::to_timestamp;
use picket_proto::common::v1 as common;
use picket_proto::incidents::v1 as incidents;
use sqlx::postgres::PgArguments;
use sqlx::types::Json;
use sqlx::{PgConnection, PgExecutor, PgPool, Postgres};
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

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct TenantRow {
    pub partner_id: String,
    pub tenant_id: String,
    pub launched_themes: i32,
    pub onboarded_at: DateTime<Utc>,
    pub last_launch_at: DateTime<Utc>,
    pub version: i64,
    /// The offboarding the tenant is in, if any.
    pub offboarding_id: Option<Uuid>,
}

impl TenantRow {
    pub fn key(&self) -> TenantKey {
        TenantKey::new(&self.partner_id, &self.tenant_id)
    }
}

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
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

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
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

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
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

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
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

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
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

/// A row's field as the element of its column's array parameter.
trait Element {
    type Of<'r>
    where
        Self: 'r;
    fn element(&self) -> Self::Of<'_>;
}

impl Element for String {
    type Of<'r> = &'r str;
    fn element(&self) -> &str {
        self
    }
}

impl Element for Option<String> {
    type Of<'r> = Option<&'r str>;
    fn element(&self) -> Option<&str> {
        self.as_deref()
    }
}

/// Fields sent as they are.
macro_rules! copied_elements {
    ($($kind:ty),* $(,)?) => {$(
        impl Element for $kind {
            type Of<'r> = $kind;
            fn element(&self) -> $kind {
                *self
            }
        }
    )*};
}

copied_elements!(
    i32,
    i64,
    bool,
    Uuid,
    Option<Uuid>,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
);

/// Fields kept as JSONB.
macro_rules! json_elements {
    ($($kind:ty),* $(,)?) => {$(
        impl Element for $kind {
            type Of<'r> = Json<&'r $kind>;
            fn element(&self) -> Json<&$kind> {
                Json(self)
            }
        }
    )*};
}

json_elements!(HashMap<String, String>, common::Actor);

/// One column of `rows`, as an array parameter.
fn column<'r, R, T: Element + 'r>(rows: &'r [R], field: impl Fn(&'r R) -> &'r T) -> Vec<T::Of<'r>> {
    rows.iter().map(|row| field(row).element()).collect()
}

/// A table's columns with their PostgreSQL types, in the order their arrays are bound.
struct Table {
    name: &'static str,
    columns: &'static [(&'static str, &'static str)],
    /// The conflict target; empty for a table whose rows are only ever added.
    conflict: &'static str,
    /// Columns replaced in rows already there; none: such rows are left alone.
    update: &'static [&'static str],
}

impl Table {
    /// A data-modifying CTE inserting the rows whose column arrays are bound from `$first` on,
    /// in their order (which keeps a sequence such as the timeline's in the order of events).
    fn insert(&self, first: usize) -> String {
        let names: Vec<&str> = self.columns.iter().map(|(name, _)| *name).collect();
        let arrays: Vec<String> = self
            .columns
            .iter()
            .enumerate()
            .map(|(index, (_, kind))| format!("${}::{kind}[]", first + index))
            .collect();
        let on_conflict = match (self.conflict, self.update) {
            ("", _) => String::new(),
            (conflict, []) => format!("ON CONFLICT ({conflict}) DO NOTHING"),
            (conflict, update) => {
                let values: Vec<String> = update
                    .iter()
                    .map(|column| format!("EXCLUDED.{column}"))
                    .collect();
                format!(
                    "ON CONFLICT ({conflict}) DO UPDATE SET ({}) = ROW({})",
                    update.join(", "),
                    values.join(", ")
                )
            }
        };
        format!(
            "{table}_written AS (
                INSERT INTO {table} ({columns})
                SELECT {columns} FROM unnest({arrays}) WITH ORDINALITY AS r({columns}, position)
                ORDER BY position
                {on_conflict})",
            table = self.name,
            columns = names.join(", "),
            arrays = arrays.join(", "),
        )
    }
}

/// A table written from rows of one type: its columns (each a field of the row, with its
/// PostgreSQL type) and the function binding a batch of rows in the same order.
macro_rules! table {
    (
        $(#[$doc:meta])*
        $table:ident, $bind:ident, $row:ty, $name:literal,
        conflict: $conflict:literal, update: $update:expr,
        [$($column:ident: $kind:literal),* $(,)?]
    ) => {
        $(#[$doc])*
        const $table: Table = Table {
            name: $name,
            columns: &[$((stringify!($column), $kind)),*],
            conflict: $conflict,
            update: $update,
        };

        fn $bind<'q>(query: WriteQuery<'q>, rows: &'q [$row]) -> WriteQuery<'q> {
            query$(.bind(column(rows, |row| &row.$column)))*
        }
    };
}

table!(TENANTS, bind_tenants, TenantRow, "tenants",
    conflict: "partner_id, tenant_id",
    update: &["launched_themes", "last_launch_at", "version", "offboarding_id"],
    [
        partner_id: "text",
        tenant_id: "text",
        launched_themes: "int4",
        onboarded_at: "timestamptz",
        last_launch_at: "timestamptz",
        version: "int8",
        offboarding_id: "uuid",
    ]
);

table!(RECOMMENDATIONS, bind_recommendations, RecommendationRow, "recommendations",
    conflict: "partner_id, tenant_id, fingerprint",
    update: RECOMMENDATION_UPDATES,
    [
        partner_id: "text",
        tenant_id: "text",
        fingerprint: "text",
        check_id: "text",
        kind: "text",
        severity: "text",
        title: "text",
        description: "text",
        target: "text",
        target_type: "text",
        target_id: "text",
        theme: "text",
        theme_order: "int4",
        recommended_fix: "text",
        fix_action: "int4",
        fix_parameters: "jsonb",
        evidence: "jsonb",
        scan_id: "text",
        observed_at: "timestamptz",
        first_observed_at: "timestamptz",
        last_observed_at: "timestamptz",
        failing: "bool",
        muted_until: "timestamptz",
        ignored_at: "timestamptz",
        standing: "text",
        by_hand: "bool",
        queued_at: "timestamptz",
        incident_id: "uuid",
        last_decision_id: "uuid",
    ]
);

table!(INCIDENTS, bind_incidents, IncidentRow, "incidents",
    conflict: "incident_id",
    update: INCIDENT_UPDATES,
    [
        incident_id: "uuid",
        partner_id: "text",
        tenant_id: "text",
        fingerprint: "text",
        check_id: "text",
        kind: "text",
        severity: "text",
        title: "text",
        description: "text",
        target: "text",
        target_type: "text",
        target_id: "text",
        theme: "text",
        recommended_fix: "text",
        fix_action: "int4",
        fix_parameters: "jsonb",
        evidence: "jsonb",
        scan_id: "text",
        state: "text",
        resolution: "text",
        origin: "text",
        override_reason: "text",
        occurrence_count: "int4",
        opened_at: "timestamptz",
        updated_at: "timestamptz",
        last_seen_at: "timestamptz",
        resolved_at: "timestamptz",
        fix_id: "uuid",
        last_fix_error: "text",
        muted_until: "timestamptz",
        decision_due_at: "timestamptz",
        escalation_level: "int4",
        escalated_at: "timestamptz",
        last_decision_id: "uuid",
        version: "int8",
    ]
);

table!(DECISIONS, bind_decisions, DecisionRow, "decisions",
    conflict: "decision_id",
    update: &[],
    [
        decision_id: "uuid",
        incident_id: "uuid",
        kind: "text",
        actor: "jsonb",
        comment: "text",
        decided_at: "timestamptz",
        muted_until: "timestamptz",
        auto_approve_rule_id: "uuid",
        fix_id: "uuid",
        authority_basis: "text",
    ]
);

table!(
    /// The timeline's sequence orders it: entries are inserted in the order they happened.
    TIMELINE, bind_timeline, TimelineRow, "incident_timeline",
    conflict: "",
    update: &[],
    [
        entry_id: "uuid",
        incident_id: "uuid",
        kind: "text",
        actor: "jsonb",
        occurred_at: "timestamptz",
        from_state: "text",
        to_state: "text",
        summary: "text",
        decision_id: "uuid",
        details: "jsonb",
        version: "int8",
    ]
);

table!(THEME_LAUNCHES, bind_theme_launches, ThemeLaunchRow, "theme_launches",
    conflict: "partner_id, tenant_id, theme_order",
    update: &[],
    [
        partner_id: "text",
        tenant_id: "text",
        theme_order: "int4",
        theme_id: "text",
        launched_at: "timestamptz",
        launched_by: "jsonb",
    ]
);

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

/// Every write of a batch as one statement (one round trip), each table's rows bound as column
/// arrays: data-modifying CTEs run once each whatever the main query reads, and foreign keys are
/// checked at the end of the statement, so timeline entries and decisions may reference incidents
/// inserted beside them.
static WRITE_SQL: LazyLock<String> = LazyLock::new(|| {
    let mut next = 1;
    let mut parts = Vec::new();
    for table in [
        &TENANTS,
        &RECOMMENDATIONS,
        &INCIDENTS,
        &DECISIONS,
        &TIMELINE,
        &THEME_LAUNCHES,
    ] {
        parts.push(table.insert(next));
        next += table.columns.len();
    }
    parts.push(format!(
        "rules_used AS (
            UPDATE auto_approve_rules r SET approvals = r.approvals + u.count,
                last_applied_at = GREATEST(r.last_applied_at, u.at)
            FROM unnest(${}::uuid[], ${}::int4[], ${}::timestamptz[]) AS u(rule_id, count, at)
            WHERE r.rule_id = u.rule_id)",
        next,
        next + 1,
        next + 2
    ));
    format!("WITH {} SELECT 1", parts.join(",\n"))
});

type WriteQuery<'q> = sqlx::query::Query<'q, Postgres, PgArguments>;

impl Changes {
    pub async fn write(&self, connection: &mut PgConnection) -> Result<(), sqlx::Error> {
        let query = sqlx::query(WRITE_SQL.as_str());
        let query = bind_tenants(query, &self.tenants);
        let query = bind_recommendations(query, &self.recommendations);
        let query = bind_incidents(query, &self.incidents);
        let query = bind_decisions(query, &self.decisions);
        let query = bind_timeline(query, &self.timeline);
        let query = bind_theme_launches(query, &self.theme_launches);
        let uses = &self.rule_uses;
        query
            .bind(column(uses, |(rule_id, _, _)| rule_id))
            .bind(column(uses, |(_, count, _)| count))
            .bind(column(uses, |(_, _, at)| at))
            .execute(connection)
            .await?;
        Ok(())
    }
}

/// Which of a partner's `tenant_ids` are being offboarded.
/// Of `tenant_ids`, those `customer_subject` may read now: an active grant of the partner names
/// them, and their offboarding has not started. Read at every call, so a revoked grant ends
/// access at once, whatever the customer's token still says.
pub async fn customer_readable_tenants(
    pool: &PgPool,
    partner_id: &str,
    customer_subject: &str,
    tenant_ids: &[String],
) -> Result<HashSet<String>, sqlx::Error> {
    let readable: Vec<String> = sqlx::query_scalar(
        "SELECT g.tenant_id FROM customer_grants g
         WHERE g.partner_id = $1 AND g.customer_subject = $2 AND g.tenant_id = ANY($3)
           AND g.revoked_at IS NULL
           AND NOT EXISTS (SELECT 1 FROM tenants t WHERE t.partner_id = g.partner_id
               AND t.tenant_id = g.tenant_id AND t.offboarding_id IS NOT NULL)",
    )
    .bind(partner_id)
    .bind(customer_subject)
    .bind(tenant_ids)
    .fetch_all(pool)
    .await?;
    Ok(readable.into_iter().collect())
}

pub async fn offboarded_tenants(
    pool: &PgPool,
    partner_id: &str,
    tenant_ids: &[String],
) -> Result<HashSet<String>, sqlx::Error> {
    let offboarded: Vec<String> = sqlx::query_scalar(
        "SELECT tenant_id FROM tenants
         WHERE partner_id = $1 AND tenant_id = ANY($2) AND offboarding_id IS NOT NULL",
    )
    .bind(partner_id)
    .bind(tenant_ids)
    .fetch_all(pool)
    .await?;
    Ok(offboarded.into_iter().collect())
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
