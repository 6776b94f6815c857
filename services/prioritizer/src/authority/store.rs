//! Authority maps, their history, and customer grants in PostgreSQL.

use chrono::{DateTime, Utc};
use picket_platform::time::to_timestamp;
use picket_proto::common::v1 as common;
use picket_proto::incidents::v1::{AuthorityMap, AuthorityMapChange, CustomerGrant};
use sqlx::types::Json;
use sqlx::{PgConnection, PgExecutor};
use std::collections::HashMap;
use std::sync::Arc;

use uuid::Uuid;

use crate::store::TenantKey;

#[derive(sqlx::FromRow)]
struct MapRow {
    tenant_id: String,
    version: i64,
    map: Json<AuthorityMap>,
}

/// The partner's map and the tenant's deviation, as stored (`None` where none).
pub async fn maps<'c>(
    executor: impl PgExecutor<'c>,
    partner_id: &str,
    tenant_id: &str,
) -> Result<(Option<AuthorityMap>, Option<AuthorityMap>), sqlx::Error> {
    let rows: Vec<MapRow> = sqlx::query_as(
        "SELECT tenant_id, version, map FROM authority_maps
         WHERE partner_id = $1 AND tenant_id IN ('', $2)",
    )
    .bind(partner_id)
    .bind(tenant_id)
    .fetch_all(executor)
    .await?;
    let mut partner = None;
    let mut tenant = None;
    for row in rows {
        let mut map = row.map.0;
        map.version = u64::try_from(row.version).unwrap_or_default();
        if row.tenant_id.is_empty() {
            partner = Some(map);
        } else {
            tenant = Some(map);
        }
    }
    Ok((partner, if tenant_id.is_empty() { None } else { tenant }))
}

/// The map in force for each of `keys`: the tenant's deviation, else the partner's map, else
/// `standard`. Each map is decoded once and shared.
pub async fn effective_maps(
    connection: &mut PgConnection,
    keys: &[TenantKey],
    standard: &Arc<AuthorityMap>,
) -> Result<HashMap<TenantKey, Arc<AuthorityMap>>, sqlx::Error> {
    let mut partners: Vec<&str> = keys.iter().map(|key| key.partner_id.as_str()).collect();
    partners.sort_unstable();
    partners.dedup();
    let rows: Vec<(String, String, i64, Json<AuthorityMap>)> = sqlx::query_as(
        "SELECT partner_id, tenant_id, version, map FROM authority_maps WHERE partner_id = ANY($1)",
    )
    .bind(&partners)
    .fetch_all(connection)
    .await?;
    let mut stored: HashMap<(String, String), Arc<AuthorityMap>> = HashMap::new();
    for (partner_id, tenant_id, version, map) in rows {
        let mut map = map.0;
        map.version = u64::try_from(version).unwrap_or_default();
        stored.insert((partner_id, tenant_id), Arc::new(map));
    }
    if stored.is_empty() {
        return Ok(keys
            .iter()
            .map(|key| (key.clone(), standard.clone()))
            .collect());
    }
    Ok(keys
        .iter()
        .map(|key| {
            let map = stored
                .get(&(key.partner_id.clone(), key.tenant_id.clone()))
                .or_else(|| stored.get(&(key.partner_id.clone(), String::new())))
                .unwrap_or(standard)
                .clone();
            (key.clone(), map)
        })
        .collect())
}

/// Locks a map's version counter; returns the current version (0 before the first change).
pub async fn lock_version(
    connection: &mut PgConnection,
    partner_id: &str,
    tenant_id: &str,
) -> Result<u64, sqlx::Error> {
    sqlx::query(
        "INSERT INTO authority_map_versions (partner_id, tenant_id, version) VALUES ($1, $2, 0)
         ON CONFLICT DO NOTHING",
    )
    .bind(partner_id)
    .bind(tenant_id)
    .execute(&mut *connection)
    .await?;
    let version: i64 = sqlx::query_scalar(
        "SELECT version FROM authority_map_versions WHERE partner_id = $1 AND tenant_id = $2 FOR UPDATE",
    )
    .bind(partner_id)
    .bind(tenant_id)
    .fetch_one(connection)
    .await?;
    Ok(u64::try_from(version).unwrap_or_default())
}

/// A change to record: the map in force after it (`None`: the deviation was removed).
pub struct Change<'a> {
    pub partner_id: &'a str,
    pub tenant_id: &'a str,
    pub version: u64,
    pub saved: Option<&'a AuthorityMap>,
    /// The map in force after the change, for the history.
    pub in_force: &'a AuthorityMap,
    pub actor: &'a common::Actor,
    pub comment: &'a str,
    pub differences: &'a [String],
    pub now: DateTime<Utc>,
}

/// Saves (or removes) a map at its new version and records the change.
pub async fn record(
    connection: &mut PgConnection,
    change: &Change<'_>,
) -> Result<AuthorityMapChange, sqlx::Error> {
    let version = i64::try_from(change.version).unwrap_or(i64::MAX);
    sqlx::query(
        "UPDATE authority_map_versions SET version = $3 WHERE partner_id = $1 AND tenant_id = $2",
    )
    .bind(change.partner_id)
    .bind(change.tenant_id)
    .bind(version)
    .execute(&mut *connection)
    .await?;
    match change.saved {
        Some(map) => {
            sqlx::query(
                "INSERT INTO authority_maps (partner_id, tenant_id, version, map, updated_at, updated_by)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (partner_id, tenant_id) DO UPDATE SET version = EXCLUDED.version,
                     map = EXCLUDED.map, updated_at = EXCLUDED.updated_at, updated_by = EXCLUDED.updated_by",
            )
            .bind(change.partner_id)
            .bind(change.tenant_id)
            .bind(version)
            .bind(Json(map))
            .bind(change.now)
            .bind(Json(change.actor))
            .execute(&mut *connection)
            .await?;
        }
        None => {
            sqlx::query("DELETE FROM authority_maps WHERE partner_id = $1 AND tenant_id = $2")
                .bind(change.partner_id)
                .bind(change.tenant_id)
                .execute(&mut *connection)
                .await?;
        }
    }
    let recorded = AuthorityMapChange {
        change_id: Uuid::now_v7().to_string(),
        partner_id: change.partner_id.to_owned(),
        tenant_id: change.tenant_id.to_owned(),
        version: change.version,
        changed_by: Some(change.actor.clone()),
        changed_at: Some(to_timestamp(change.now)),
        comment: change.comment.to_owned(),
        differences: change.differences.to_vec(),
        map: Some(change.in_force.clone()),
    };
    sqlx::query(
        "INSERT INTO authority_map_changes (change_id, partner_id, tenant_id, version, changed_by,
             changed_at, comment, differences, map)
         VALUES ($1::uuid, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&recorded.change_id)
    .bind(change.partner_id)
    .bind(change.tenant_id)
    .bind(version)
    .bind(Json(change.actor))
    .bind(change.now)
    .bind(change.comment)
    .bind(change.differences)
    .bind(Json(change.in_force))
    .execute(connection)
    .await?;
    Ok(recorded)
}

#[derive(sqlx::FromRow)]
struct ChangeRow {
    change_id: Uuid,
    partner_id: String,
    tenant_id: String,
    version: i64,
    changed_by: Json<common::Actor>,
    changed_at: DateTime<Utc>,
    comment: String,
    differences: Vec<String>,
    map: Json<AuthorityMap>,
}

/// A page of a map's history, newest first.
pub async fn history<'c>(
    executor: impl PgExecutor<'c>,
    partner_id: &str,
    tenant_id: &str,
    offset: i64,
    limit: i64,
) -> Result<Vec<AuthorityMapChange>, sqlx::Error> {
    let rows: Vec<ChangeRow> = sqlx::query_as(
        "SELECT change_id, partner_id, tenant_id, version, changed_by, changed_at, comment,
             differences, map
         FROM authority_map_changes WHERE partner_id = $1 AND tenant_id = $2
         ORDER BY changed_at DESC, change_id DESC OFFSET $3 LIMIT $4",
    )
    .bind(partner_id)
    .bind(tenant_id)
    .bind(offset)
    .bind(limit)
    .fetch_all(executor)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| AuthorityMapChange {
            change_id: row.change_id.to_string(),
            partner_id: row.partner_id,
            tenant_id: row.tenant_id,
            version: u64::try_from(row.version).unwrap_or_default(),
            changed_by: Some(row.changed_by.0),
            changed_at: Some(to_timestamp(row.changed_at)),
            comment: row.comment,
            differences: row.differences,
            map: Some(row.map.0),
        })
        .collect())
}

#[derive(sqlx::FromRow)]
struct GrantRow {
    grant_id: Uuid,
    partner_id: String,
    tenant_id: String,
    customer_subject: String,
    email: String,
    display_name: String,
    decisions: Vec<i32>,
    severities: Vec<i32>,
    granted_by: Json<common::Principal>,
    granted_at: DateTime<Utc>,
    revoked_at: Option<DateTime<Utc>>,
    revoked_by: Option<Json<common::Actor>>,
    revoke_reason: String,
}

impl GrantRow {
    fn into_proto(self) -> CustomerGrant {
        CustomerGrant {
            grant_id: self.grant_id.to_string(),
            partner_id: self.partner_id,
            tenant_id: self.tenant_id,
            customer_subject: self.customer_subject,
            email: self.email,
            display_name: self.display_name,
            decisions: self.decisions,
            severities: self.severities,
            granted_by: Some(self.granted_by.0),
            granted_at: Some(to_timestamp(self.granted_at)),
            revoked_at: self.revoked_at.map(to_timestamp),
            revoked_by: self.revoked_by.map(|actor| actor.0),
            active: self.revoked_at.is_none(),
            revoke_reason: self.revoke_reason,
        }
    }
}

const GRANT_COLUMNS: &str =
    "grant_id, partner_id, tenant_id, customer_subject, email, display_name,
    decisions, severities, granted_by, granted_at, revoked_at, revoked_by, revoke_reason";

/// Grants a customer contact; an active grant of the same contact for the tenant is replaced.
pub async fn grant(
    connection: &mut PgConnection,
    grant: &CustomerGrant,
    now: DateTime<Utc>,
) -> Result<CustomerGrant, sqlx::Error> {
    sqlx::query(
        "UPDATE customer_grants SET revoked_at = $4, revoked_by = $5, revoke_reason = 'replaced by a new grant'
         WHERE partner_id = $1 AND tenant_id = $2 AND customer_subject = $3 AND revoked_at IS NULL",
    )
    .bind(&grant.partner_id)
    .bind(&grant.tenant_id)
    .bind(&grant.customer_subject)
    .bind(now)
    .bind(Json(common::Actor {
        kind: common::ActorKind::Principal.into(),
        principal: grant.granted_by.clone(),
        ..Default::default()
    }))
    .execute(&mut *connection)
    .await?;
    let row: GrantRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO customer_grants (grant_id, partner_id, tenant_id, customer_subject, email,
             display_name, decisions, severities, granted_by, granted_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING {GRANT_COLUMNS}"
    )))
    .bind(Uuid::now_v7())
    .bind(&grant.partner_id)
    .bind(&grant.tenant_id)
    .bind(&grant.customer_subject)
    .bind(&grant.email)
    .bind(&grant.display_name)
    .bind(&grant.decisions)
    .bind(&grant.severities)
    .bind(Json(grant.granted_by.clone().unwrap_or_default()))
    .bind(now)
    .fetch_one(connection)
    .await?;
    Ok(row.into_proto())
}

pub async fn get_grant<'c>(
    executor: impl PgExecutor<'c>,
    grant_id: Uuid,
) -> Result<Option<CustomerGrant>, sqlx::Error> {
    let row: Option<GrantRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {GRANT_COLUMNS} FROM customer_grants WHERE grant_id = $1"
    )))
    .bind(grant_id)
    .fetch_optional(executor)
    .await?;
    Ok(row.map(GrantRow::into_proto))
}

/// Revokes active grants: one (`grant_id`), or all of a tenant's (when offboarded).
pub async fn revoke<'c>(
    executor: impl PgExecutor<'c>,
    target: Revoked<'_>,
    actor: &common::Actor,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<Vec<CustomerGrant>, sqlx::Error> {
    let (grant_id, partner_id, tenant_id) = match target {
        Revoked::Grant(grant_id) => (Some(grant_id), None, None),
        Revoked::Tenant {
            partner_id,
            tenant_id,
        } => (None, Some(partner_id), Some(tenant_id)),
    };
    let rows: Vec<GrantRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE customer_grants SET revoked_at = $4, revoked_by = $5, revoke_reason = $6
         WHERE revoked_at IS NULL AND (grant_id = $1 OR (partner_id = $2 AND tenant_id = $3))
         RETURNING {GRANT_COLUMNS}"
    )))
    .bind(grant_id)
    .bind(partner_id)
    .bind(tenant_id)
    .bind(now)
    .bind(Json(actor))
    .bind(reason)
    .fetch_all(executor)
    .await?;
    Ok(rows.into_iter().map(GrantRow::into_proto).collect())
}

/// What to revoke.
pub enum Revoked<'a> {
    Grant(Uuid),
    Tenant {
        partner_id: &'a str,
        tenant_id: &'a str,
    },
}

/// A page of a partner's grants, newest first; the active ones only unless `include_revoked`.
pub async fn grants<'c>(
    executor: impl PgExecutor<'c>,
    partner_id: &str,
    tenant_id: &str,
    include_revoked: bool,
    offset: i64,
    limit: i64,
) -> Result<Vec<CustomerGrant>, sqlx::Error> {
    let rows: Vec<GrantRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {GRANT_COLUMNS} FROM customer_grants
         WHERE partner_id = $1 AND ($2 = '' OR tenant_id = $2) AND ($3 OR revoked_at IS NULL)
         ORDER BY granted_at DESC, grant_id DESC OFFSET $4 LIMIT $5"
    )))
    .bind(partner_id)
    .bind(tenant_id)
    .bind(include_revoked)
    .bind(offset)
    .bind(limit)
    .fetch_all(executor)
    .await?;
    Ok(rows.into_iter().map(GrantRow::into_proto).collect())
}
