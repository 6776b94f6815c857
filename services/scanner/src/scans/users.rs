//! Users across polls, by delta query. Listing a tenant's users costs one request per 999 users on
//! every poll; instead a poll that needs no sign-in activity (which delta does not track) follows
//! the `@odata.deltaLink` the previous round ended with and gets only the users created, changed
//! or removed since, applied to the users kept here. A tenant's first round, or one whose link is
//! older than Microsoft keeps it (seven days), selects other properties than Picket now needs, or
//! is refused (410 Gone `syncStateNotFound`, or any answer saying the link is no good), reads
//! every user afresh. What a round learnt is saved with the poll's results, so a poll that dies
//! before committing leaves the previous link, which Graph answers again.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use serde_json::{Map, Value};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::graph::GraphError;

/// The user properties a poll reads: what inbox-rule targeting and the checks on users need.
pub const SELECT: &str = "id,displayName,userPrincipalName,accountEnabled,userType,onPremisesSyncEnabled,onPremisesImmutableId";

/// How long Microsoft keeps a directory object's delta token.
const LINK_LIFETIME: Duration = Duration::days(7);

/// A tenant's users as the last round left them, and where the next round starts.
#[derive(Debug, Default, Clone)]
pub struct Tracked {
    /// `None`: the next round reads every user.
    pub delta_link: Option<String>,
    pub users: Map<String, Value>,
}

/// The first request of a round that reads every user.
pub fn initial() -> String {
    format!("/v1.0/users/delta?$select={SELECT}")
}

pub async fn load(
    pool: &PgPool,
    tenant_id: Uuid,
    now: DateTime<Utc>,
) -> Result<Tracked, sqlx::Error> {
    let link: Option<(String, String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT delta_link, selected, synced_at FROM user_delta_links WHERE tenant_id = $1",
    )
    .bind(tenant_id)
    .fetch_optional(pool)
    .await?;
    let Some((delta_link, selected, synced_at)) = link else {
        return Ok(Tracked::default());
    };
    if selected != SELECT || now - synced_at >= LINK_LIFETIME {
        return Ok(Tracked::default());
    }
    let rows: Vec<(String, Value)> =
        sqlx::query_as("SELECT user_id, properties FROM directory_users WHERE tenant_id = $1")
            .bind(tenant_id)
            .fetch_all(pool)
            .await?;
    Ok(Tracked {
        delta_link: Some(delta_link),
        users: rows.into_iter().collect(),
    })
}

/// Whether Graph refused a round's link as no longer usable (expired, reset, unknown), so the
/// round starts over; a throttled, failed or forbidden request is an error like any other.
pub fn refused_link(error: &GraphError) -> bool {
    matches!(error.status(), 400 | 404 | 410) || matches!(error, GraphError::Malformed(_))
}

/// What a round learnt, to save with the poll.
#[derive(Debug, Clone, PartialEq)]
pub struct Synced {
    /// The link the round was asked to start from (`None`: there was none).
    pub from: Option<String>,
    pub delta_link: String,
    /// Every user was read: the kept ones are replaced.
    pub afresh: bool,
    /// Users created or changed, with their properties now.
    pub changed: BTreeMap<String, Value>,
    pub removed: BTreeSet<String>,
}

/// Applies a round's answers to the users kept (none, if the round read every user afresh):
/// a user comes with its selected properties, a removed one as `{"id", "@removed"}`; a user may
/// come more than once, the last answer holding. Returns every user now and what changed.
pub fn apply(
    tracked: &Tracked,
    answers: Vec<Value>,
    delta_link: String,
    afresh: bool,
) -> (Vec<Value>, Synced) {
    let mut users = if afresh {
        Map::new()
    } else {
        tracked.users.clone()
    };
    let mut changed = BTreeMap::new();
    let mut removed = BTreeSet::new();
    for answer in answers {
        let Value::Object(answer) = answer else {
            continue;
        };
        let Some(id) = answer.get("id").and_then(Value::as_str).map(str::to_owned) else {
            continue;
        };
        if answer.contains_key("@removed") {
            users.remove(&id);
            changed.remove(&id);
            removed.insert(id);
            continue;
        }
        let user = users
            .entry(id.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        for (key, value) in answer.into_iter().filter(|(key, _)| !key.starts_with('@')) {
            user[key] = value;
        }
        changed.insert(id.clone(), user.clone());
        removed.remove(&id);
    }
    let synced = Synced {
        from: tracked.delta_link.clone(),
        delta_link,
        afresh,
        changed,
        removed,
    };
    (users.into_iter().map(|(_, user)| user).collect(), synced)
}

/// Keeps what a round learnt, unless another poll of the tenant (one whose lease ran out while
/// it still ran) kept a round since this one started: then the users kept stay consistent with
/// that poll's link, and the next round starts from it.
pub async fn save(
    connection: &mut PgConnection,
    tenant_id: Uuid,
    synced: &Synced,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let stored: Option<String> = sqlx::query_scalar(
        "SELECT delta_link FROM user_delta_links WHERE tenant_id = $1 FOR UPDATE",
    )
    .bind(tenant_id)
    .fetch_optional(&mut *connection)
    .await?;
    // A link loaded as unusable (too old, other properties) was not started from.
    if synced.from.is_some() && stored != synced.from {
        tracing::info!(%tenant_id, "users delta round not kept: another poll kept a later one");
        return Ok(());
    }
    let removed: Vec<&String> = synced.removed.iter().collect();
    sqlx::query("DELETE FROM directory_users WHERE tenant_id = $1 AND ($2 OR user_id = ANY($3))")
        .bind(tenant_id)
        .bind(synced.afresh)
        .bind(&removed)
        .execute(&mut *connection)
        .await?;
    let ids: Vec<&String> = synced.changed.keys().collect();
    let properties: Vec<&Value> = synced.changed.values().collect();
    sqlx::query(
        "INSERT INTO directory_users (tenant_id, user_id, properties)
         SELECT $1, * FROM unnest($2::text[], $3::jsonb[])
         ON CONFLICT (tenant_id, user_id) DO UPDATE SET properties = EXCLUDED.properties",
    )
    .bind(tenant_id)
    .bind(&ids)
    .bind(&properties)
    .execute(&mut *connection)
    .await?;
    sqlx::query(
        "INSERT INTO user_delta_links (tenant_id, delta_link, selected, synced_at)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (tenant_id) DO UPDATE
         SET delta_link = EXCLUDED.delta_link, selected = EXCLUDED.selected,
             synced_at = EXCLUDED.synced_at",
    )
    .bind(tenant_id)
    .bind(&synced.delta_link)
    .bind(SELECT)
    .bind(now)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn kept() -> Tracked {
        let mut kept = Map::new();
        kept.insert(
            "a".into(),
            json!({"id": "a", "displayName": "Ann", "accountEnabled": true}),
        );
        kept.insert(
            "b".into(),
            json!({"id": "b", "displayName": "Bob", "accountEnabled": true}),
        );
        Tracked {
            delta_link: Some("link1".into()),
            users: kept,
        }
    }

    #[test]
    fn a_round_changes_adds_and_removes_the_kept_users() {
        let answers = vec![
            json!({"id": "a", "displayName": "Ann", "accountEnabled": false}),
            json!({"id": "c", "displayName": "Cy", "accountEnabled": true}),
            json!({"id": "b", "@removed": {"reason": "changed"}}),
        ];
        let (users, synced) = apply(&kept(), answers, "link2".into(), false);
        assert_eq!(
            users,
            vec![
                json!({"id": "a", "displayName": "Ann", "accountEnabled": false}),
                json!({"id": "c", "displayName": "Cy", "accountEnabled": true}),
            ]
        );
        assert_eq!(synced.changed.keys().collect::<Vec<_>>(), vec!["a", "c"]);
        assert_eq!(synced.removed, BTreeSet::from(["b".to_owned()]));
        assert!(!synced.afresh);
        assert_eq!(synced.from.as_deref(), Some("link1"));
    }

    #[test]
    fn only_the_properties_answered_change_and_the_last_answer_of_a_user_holds() {
        // Graph may answer only what changed (`Prefer: return=minimal`) and may replay a user.
        let answers = vec![
            json!({"id": "c", "@removed": {"reason": "deleted"}}),
            json!({"id": "a", "accountEnabled": false}),
            json!({"id": "c", "displayName": "Cy"}),
            json!({"id": "b", "displayName": "Bob", "@removed": {"reason": "changed"}}),
            json!({"id": "b", "displayName": "Bobby"}),
        ];
        let (users, synced) = apply(&kept(), answers, "link2".into(), false);
        assert_eq!(
            users,
            vec![
                json!({"id": "a", "displayName": "Ann", "accountEnabled": false}),
                json!({"id": "b", "displayName": "Bobby"}),
                json!({"id": "c", "displayName": "Cy"}),
            ]
        );
        assert!(synced.removed.is_empty());
        assert_eq!(synced.changed.len(), 3);
    }

    #[test]
    fn a_round_read_afresh_keeps_nothing_from_before() {
        let answers = vec![json!({"id": "c", "displayName": "Cy"})];
        let (users, synced) = apply(&kept(), answers, "link".into(), true);
        assert_eq!(users, vec![json!({"id": "c", "displayName": "Cy"})]);
        assert!(synced.afresh);
    }

    #[test]
    fn microsofts_documented_round_of_three_pages_reads_as_the_users_it_names() {
        // "Get incremental changes for users": the initial page holds a user removed for good.
        let pages = [
            json!([
                {"displayName": "Cameron White", "givenName": "Cameron", "surname": "White", "id": "ffff7b1a-13b6-477b-8c0c-380905cd99f7"},
                {"displayName": "Delia Dennis", "givenName": "Delia", "surname": "Dennis", "id": "605d1257-ffff-40b6-8e6f-528a53f5dc55"},
                {"id": "86462606-fde0-4fc4-9e0c-a20eb73e54c6", "@removed": {"reason": "deleted"}},
                {"displayName": "Conf Room Adams", "id": "6ea91a8d-e32e-41a1-b7bd-d2d185eed0e0"}
            ]),
            json!([
                {"displayName": "Mallory Cortez", "givenName": "Mallory", "surname": "Cortez", "id": "d8c37826-ffff-4cae-b348-e2725b1e814b"},
                {"displayName": "Diego Sicilian", "givenName": "Diego", "surname": "Sicilian", "id": "8b1ee412-cd8f-4d59-ffff-24010edb9f1f"}
            ]),
            json!([
                {"displayName": "Lidia Holloway", "givenName": "Lidia", "surname": "Holloway", "id": "25dcffff-959e-4ece-9973-e5d9b800e8cc"},
                {"displayName": "Patti Fernandez", "givenName": "Patti", "surname": "Fernandez", "id": "f6ede700-27d0-4c42-bfb9-4dffff43c74a"}
            ]),
        ];
        let answers: Vec<Value> = pages
            .into_iter()
            .flat_map(|page| page.as_array().cloned().unwrap_or_default())
            .collect();
        let (users, synced) = apply(&kept(), answers, "link".into(), true);
        assert_eq!(users.len(), 7);
        assert!(users.iter().all(|user| user.get("@removed").is_none()));
        assert_eq!(users[0]["displayName"], "Lidia Holloway");
        assert_eq!(synced.changed.len(), 7);
        assert!(
            !synced
                .changed
                .contains_key("86462606-fde0-4fc4-9e0c-a20eb73e54c6")
        );
    }

    #[test]
    fn only_a_refused_link_starts_the_round_over() {
        let api = |status: u16, code: &str| GraphError::Api {
            status,
            code: code.into(),
            message: String::new(),
        };
        assert!(refused_link(&api(410, "syncStateNotFound")));
        assert!(refused_link(&api(400, "BadRequest")));
        assert!(refused_link(&api(404, "Request_ResourceNotFound")));
        assert!(!refused_link(&api(403, "Authorization_RequestDenied")));
        assert!(!refused_link(&GraphError::Throttled { attempts: 3 }));
        assert!(!refused_link(&GraphError::Unavailable {
            attempts: 3,
            last: String::new()
        }));
    }
}
