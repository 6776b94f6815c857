//! The tenants table.

use chrono::{DateTime, Utc};
use picket_platform::time::to_timestamp;
use picket_proto::common::v1 as common;
use picket_proto::tenants::v1 as tenants;
use sqlx::{AssertSqlSafe, PgConnection, PgPool};
use uuid::Uuid;

use crate::tenants::signin::PendingSignIn;

/// Who reads the scanner's records.
pub const READERS: &[picket_platform::Role] = &[
    picket_platform::Role::Operator,
    picket_platform::Role::Partner,
];

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TenantRow {
    pub tenant_id: Uuid,
    pub partner_id: String,
    pub microsoft_tenant: String,
    pub microsoft_tenant_id: String,
    pub display_name: String,
    pub primary_domain: String,
    pub plan: String,
    pub state: String,
    pub state_reason: String,
    pub consent_failure: String,
    /// SHA-256 of the consent link's `state`; the link itself is shown once, when issued.
    pub consent_state_hash: String,
    pub consent_expires_at: DateTime<Utc>,
    pub onboarded_by: String,
    pub created_at: DateTime<Utc>,
    pub consented_at: Option<DateTime<Utc>>,
    pub activated_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    pub service_plans: Vec<String>,
    pub access_last_success_at: Option<DateTime<Utc>>,
    pub access_last_error: String,
    pub access_last_error_at: Option<DateTime<Utc>>,
    pub access_consecutive_failures: i32,
    pub access_throttled_until: Option<DateTime<Utc>>,
    pub last_configuration_scan_at: Option<DateTime<Utc>>,
    pub last_monitoring_poll_at: Option<DateTime<Utc>>,
    pub disconnected_at: Option<DateTime<Utc>>,
    pub missing_permissions: Vec<String>,
}

const COLUMNS: &str = "tenant_id, partner_id, microsoft_tenant, microsoft_tenant_id, display_name, primary_domain,
    plan, state, state_reason, consent_failure, consent_state_hash, consent_expires_at, onboarded_by, created_at,
    consented_at, activated_at, updated_at, service_plans, access_last_success_at, access_last_error,
    access_last_error_at, access_consecutive_failures, access_throttled_until, last_configuration_scan_at,
    last_monitoring_poll_at, disconnected_at, missing_permissions";

pub fn plan_to_db(plan: tenants::SubscriptionPlan) -> Option<&'static str> {
    match plan {
        tenants::SubscriptionPlan::Essentials => Some("essentials"),
        tenants::SubscriptionPlan::Standard => Some("standard"),
        tenants::SubscriptionPlan::Premium => Some("premium"),
        tenants::SubscriptionPlan::Unspecified => None,
    }
}

pub fn state_to_db(state: tenants::TenantState) -> Option<&'static str> {
    match state {
        tenants::TenantState::PendingConsent => Some("pending_consent"),
        tenants::TenantState::Active => Some("active"),
        tenants::TenantState::ConsentDenied => Some("consent_denied"),
        tenants::TenantState::ConsentFailed => Some("consent_failed"),
        tenants::TenantState::Disconnected => Some("disconnected"),
        tenants::TenantState::Unspecified => None,
    }
}

impl TenantRow {
    pub fn is_active(&self) -> bool {
        self.state == "active"
    }

    pub fn to_proto(&self, consent_url: String) -> tenants::Tenant {
        let plan = [
            tenants::SubscriptionPlan::Essentials,
            tenants::SubscriptionPlan::Standard,
            tenants::SubscriptionPlan::Premium,
        ]
        .into_iter()
        .find(|plan| plan_to_db(*plan) == Some(self.plan.as_str()))
        .unwrap_or_default();
        let state = [
            tenants::TenantState::PendingConsent,
            tenants::TenantState::Active,
            tenants::TenantState::ConsentDenied,
            tenants::TenantState::ConsentFailed,
            tenants::TenantState::Disconnected,
        ]
        .into_iter()
        .find(|state| state_to_db(*state) == Some(self.state.as_str()))
        .unwrap_or_default();
        let consent_failure =
            tenants::ConsentFailure::from_str_name(&self.consent_failure).unwrap_or_default();
        tenants::Tenant {
            tenant_id: self.tenant_id.to_string(),
            partner_id: self.partner_id.clone(),
            microsoft_tenant_id: self.microsoft_tenant_id.clone(),
            display_name: self.display_name.clone(),
            primary_domain: self.primary_domain.clone(),
            plan: plan.into(),
            state: state.into(),
            state_reason: self.state_reason.clone(),
            consent_failure: consent_failure.into(),
            created_at: Some(to_timestamp(self.created_at)),
            consented_at: self.consented_at.map(to_timestamp),
            activated_at: self.activated_at.map(to_timestamp),
            updated_at: Some(to_timestamp(self.updated_at)),
            onboarded_by: Some(common::Principal {
                subject: self.onboarded_by.clone(),
                ..Default::default()
            }),
            consent_url,
            access_health: Some(tenants::AccessHealth {
                last_success_at: self.access_last_success_at.map(to_timestamp),
                last_error: self.access_last_error.clone(),
                last_error_at: self.access_last_error_at.map(to_timestamp),
                consecutive_failures: u32::try_from(self.access_consecutive_failures)
                    .unwrap_or_default(),
                throttled_until: self
                    .access_throttled_until
                    .filter(|until| *until > Utc::now())
                    .map(to_timestamp),
                token_expires_at: None,
            }),
            service_plans: self.service_plans.clone(),
            last_configuration_scan_at: self.last_configuration_scan_at.map(to_timestamp),
            last_monitoring_poll_at: self.last_monitoring_poll_at.map(to_timestamp),
            disconnected_at: self.disconnected_at.map(to_timestamp),
            missing_permissions: self.missing_permissions.clone(),
        }
    }
}

pub struct NewTenant<'a> {
    pub partner_id: &'a str,
    pub display_name: &'a str,
    pub microsoft_tenant: &'a str,
    pub plan: &'static str,
    pub consent_state: &'a str,
    pub consent_expires_at: DateTime<Utc>,
    pub onboarded_by: &'a str,
    pub idempotency_key: &'a str,
}

/// Inserts a tenant; a repeated idempotency key returns the tenant it created the first time.
pub async fn insert_tenant(
    pool: &PgPool,
    tenant: &NewTenant<'_>,
    now: DateTime<Utc>,
) -> Result<TenantRow, sqlx::Error> {
    let inserted: Option<TenantRow> = sqlx::query_as(AssertSqlSafe(format!(
        "INSERT INTO tenants (tenant_id, partner_id, microsoft_tenant, display_name, plan, state, consent_state_hash,
             consent_expires_at, onboarded_by, idempotency_key, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, 'pending_consent', $6, $7, $8, $9, $10, $10)
         ON CONFLICT (partner_id, idempotency_key) WHERE idempotency_key <> '' DO NOTHING
         RETURNING {COLUMNS}"
    )))
    .bind(Uuid::now_v7())
    .bind(tenant.partner_id)
    .bind(tenant.microsoft_tenant)
    .bind(tenant.display_name)
    .bind(tenant.plan)
    .bind(state_hash(tenant.consent_state))
    .bind(tenant.consent_expires_at)
    .bind(tenant.onboarded_by)
    .bind(tenant.idempotency_key)
    .bind(now)
    .fetch_optional(pool)
    .await?;
    if let Some(inserted) = inserted {
        return Ok(inserted);
    }
    sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM tenants WHERE partner_id = $1 AND idempotency_key = $2"
    )))
    .bind(tenant.partner_id)
    .bind(tenant.idempotency_key)
    .fetch_one(pool)
    .await
}

pub async fn get_tenant(pool: &PgPool, tenant_id: Uuid) -> Result<Option<TenantRow>, sqlx::Error> {
    sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM tenants WHERE tenant_id = $1"
    )))
    .bind(tenant_id)
    .fetch_optional(pool)
    .await
}

/// The tenant, if the principal may see it; otherwise indistinguishable from a missing one. The
/// scanner's records (connection, consent, scans) are the MSP's: its staff and the operator read
/// them; customer contacts see their tenant through the prioritizer, which knows their grants.
pub async fn visible_tenant(
    pool: &PgPool,
    principal: &picket_platform::Principal,
    tenant_id: &str,
) -> Result<TenantRow, tonic::Status> {
    principal.require_role(READERS)?;
    let id = picket_platform::grpc::parse_uuid(tenant_id, "tenant_id")?;
    get_tenant(pool, id)
        .await
        .map_err(picket_platform::grpc::internal)?
        .filter(|tenant| {
            principal.can_access_tenant(&tenant.partner_id, &tenant.tenant_id.to_string())
        })
        .ok_or_else(|| tonic::Status::not_found(format!("tenant {id} not found")))
}

pub async fn find_by_consent_state(
    pool: &PgPool,
    consent_state: &str,
) -> Result<Option<TenantRow>, sqlx::Error> {
    sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM tenants WHERE consent_state_hash = $1"
    )))
    .bind(state_hash(consent_state))
    .fetch_optional(pool)
    .await
}

pub async fn list_tenants(
    pool: &PgPool,
    partner_id: Option<&str>,
    states: &[&str],
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<TenantRow>, sqlx::Error> {
    let (after_at, after_id) = after.unzip();
    sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM tenants
         WHERE ($1::text IS NULL OR partner_id = $1)
           AND (cardinality($2::text[]) = 0 OR state = ANY($2))
           AND ($3::timestamptz IS NULL OR (created_at, tenant_id) > ($3, $4))
         ORDER BY created_at, tenant_id LIMIT $5"
    )))
    .bind(partner_id)
    .bind(states)
    .bind(after_at)
    .bind(after_id)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Records why consent did not make the tenant active.
pub async fn mark_refused(
    pool: &PgPool,
    tenant_id: Uuid,
    state: &str,
    failure: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<TenantRow, sqlx::Error> {
    sqlx::query_as(AssertSqlSafe(format!(
        "UPDATE tenants SET state = $2, consent_failure = $3, state_reason = $4, updated_at = $5,
             signin_state_hash = NULL, signin_verifier = '', signin_nonce = '', signin_expires_at = NULL
         WHERE tenant_id = $1 RETURNING {COLUMNS}"
    )))
    .bind(tenant_id)
    .bind(state)
    .bind(failure)
    .bind(reason)
    .bind(now)
    .fetch_one(pool)
    .await
}

/// Changes the display name and plan of a tenant (each when given).
pub async fn update_tenant(
    pool: &PgPool,
    tenant_id: Uuid,
    display_name: Option<&str>,
    plan: Option<&str>,
    now: DateTime<Utc>,
) -> Result<TenantRow, sqlx::Error> {
    sqlx::query_as(AssertSqlSafe(format!(
        "UPDATE tenants SET display_name = coalesce($2, display_name), plan = coalesce($3, plan),
             updated_at = $4
         WHERE tenant_id = $1 RETURNING {COLUMNS}"
    )))
    .bind(tenant_id)
    .bind(display_name)
    .bind(plan)
    .bind(now)
    .fetch_one(pool)
    .await
}

/// Issues a new consent `state` for a tenant that is not active; `None` if it is active.
pub async fn renew_consent(
    pool: &PgPool,
    tenant_id: Uuid,
    consent_state: &str,
    consent_expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Option<TenantRow>, sqlx::Error> {
    sqlx::query_as(AssertSqlSafe(format!(
        "UPDATE tenants SET state = 'pending_consent', consent_state_hash = $2, consent_expires_at = $3,
             state_reason = '', consent_failure = '', updated_at = $4
         WHERE tenant_id = $1 AND state <> 'active' RETURNING {COLUMNS}"
    )))
    .bind(tenant_id)
    .bind(state_hash(consent_state))
    .bind(consent_expires_at)
    .bind(now)
    .fetch_optional(pool)
    .await
}

/// When an activated tenant's scheduled runs start (its first full scan runs at once).
pub struct FirstRuns {
    pub configuration: DateTime<Utc>,
    pub monitoring: DateTime<Utc>,
}

/// Whether an active Picket tenant other than `tenant_id` holds this Microsoft tenant.
pub async fn held_elsewhere(
    pool: &PgPool,
    microsoft_tenant_id: &str,
    tenant_id: Uuid,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM tenants WHERE lower(microsoft_tenant_id) = lower($1)
             AND state = 'active' AND tenant_id <> $2)",
    )
    .bind(microsoft_tenant_id)
    .bind(tenant_id)
    .fetch_one(pool)
    .await
}

/// Whether an error is the database refusing a second active binding of one Microsoft tenant.
pub fn is_second_binding(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(database)
        if database.constraint() == Some("tenants_one_active_binding"))
}

/// The stored form of a consent or sign-in `state`: a database read alone cannot complete either.
pub fn state_hash(state: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(state.as_bytes());
    digest.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Records the administrator's sign-in Picket is about to ask for; `None` if the tenant is active.
pub async fn begin_sign_in(
    pool: &PgPool,
    tenant_id: Uuid,
    pending: &PendingSignIn,
    expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Option<TenantRow>, sqlx::Error> {
    sqlx::query_as(AssertSqlSafe(format!(
        "UPDATE tenants SET signin_state_hash = $2, signin_verifier = $3, signin_nonce = $4,
             signin_expires_at = $5, updated_at = $6
         WHERE tenant_id = $1 AND state <> 'active' RETURNING {COLUMNS}"
    )))
    .bind(tenant_id)
    .bind(state_hash(&pending.state))
    .bind(&pending.verifier)
    .bind(&pending.nonce)
    .bind(expires_at)
    .bind(now)
    .fetch_optional(pool)
    .await
}

/// A sign-in waiting for its redirect: the tenant, its PKCE verifier and nonce, and until when.
#[derive(sqlx::FromRow)]
pub struct WaitingSignIn {
    #[sqlx(flatten)]
    pub tenant: TenantRow,
    #[sqlx(rename = "signin_verifier")]
    pub verifier: String,
    #[sqlx(rename = "signin_nonce")]
    pub nonce: String,
    #[sqlx(rename = "signin_expires_at")]
    pub expires_at: Option<DateTime<Utc>>,
}

pub async fn find_by_sign_in_state(
    pool: &PgPool,
    state: &str,
) -> Result<Option<WaitingSignIn>, sqlx::Error> {
    sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {COLUMNS}, signin_verifier, signin_nonce, signin_expires_at
         FROM tenants WHERE signin_state_hash = $1"
    )))
    .bind(state_hash(state))
    .fetch_optional(pool)
    .await
}

/// Activates a tenant whose consent and organization read succeeded; `None` if it already was.
/// What consent showed of a tenant.
pub struct Connected<'a> {
    pub microsoft_tenant_id: &'a str,
    pub primary_domain: &'a str,
    /// The permissions Picket's app needs that the tenant has not granted.
    pub missing_permissions: &'a [String],
}

pub async fn activate(
    connection: &mut PgConnection,
    tenant_id: Uuid,
    connected: &Connected<'_>,
    first_runs: &FirstRuns,
    now: DateTime<Utc>,
) -> Result<Option<TenantRow>, sqlx::Error> {
    sqlx::query_as(AssertSqlSafe(format!(
        "UPDATE tenants SET state = 'active', microsoft_tenant_id = $2, primary_domain = $3, state_reason = '',
             consent_failure = '', consented_at = $4, activated_at = $4, updated_at = $4,
             next_configuration_scan_at = $5, next_monitoring_poll_at = $6, disconnected_at = NULL,
             signin_state_hash = NULL, signin_verifier = '', signin_nonce = '', signin_expires_at = NULL,
             missing_permissions = $7
         WHERE tenant_id = $1 AND state <> 'active' RETURNING {COLUMNS}"
    )))
    .bind(tenant_id)
    .bind(connected.microsoft_tenant_id)
    .bind(connected.primary_domain)
    .bind(now)
    .bind(first_runs.configuration)
    .bind(first_runs.monitoring)
    .bind(connected.missing_permissions)
    .fetch_optional(connection)
    .await
}
