//! Users by delta query: a monitoring poll follows the `@odata.deltaLink` the previous round ended
//! with and reads only the users created, changed or removed since; the users it keeps then equal
//! what Graph holds. A link Graph refuses (expired: 410 Gone `syncStateNotFound`), or one older
//! than Graph keeps, starts the round over from every user, and the poll still succeeds.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use chrono::Utc;

use common::fixing::{FixHarness, PARTNER};
use graph_sim::{Licence, Profile, RecordedRequest};
use picket_proto::tenants::v1 as tenants;
use scanner::scans::users::{self, SELECT};
use serde_json::{Value, json};

/// What Graph holds of each user, as the scanner selects it.
fn graph_users(fixing: &FixHarness) -> BTreeMap<String, Value> {
    let users = fixing
        .harness
        .sim
        .resource(&fixing.microsoft_tenant, "/users")
        .expect("users");
    users
        .as_array()
        .expect("a collection")
        .iter()
        .map(|user| {
            let selected: serde_json::Map<String, Value> = SELECT
                .split(',')
                .filter_map(|key| Some((key.to_owned(), user.get(key)?.clone())))
                .collect();
            (
                user["id"].as_str().expect("id").to_owned(),
                Value::Object(selected),
            )
        })
        .collect()
}

/// The users the scanner keeps for the tenant.
async fn kept_users(fixing: &FixHarness) -> BTreeMap<String, Value> {
    let pool = fixing.harness.env.pool("scanner").await;
    let rows: Vec<(String, Value)> = sqlx::query_as(
        "SELECT u.user_id, u.properties FROM directory_users u
         JOIN tenants t USING (tenant_id) WHERE t.microsoft_tenant_id = $1",
    )
    .bind(&fixing.microsoft_tenant)
    .fetch_all(&pool)
    .await
    .expect("kept users");
    rows.into_iter().collect()
}

/// A monitoring poll, and the requests it sent for users.
async fn poll(fixing: &FixHarness) -> Vec<RecordedRequest> {
    let before = fixing.harness.sim.requests().len();
    let poll = fixing
        .harness
        .scan_now(PARTNER, &fixing.tenant_id, tenants::ScanKind::Monitoring)
        .await;
    assert_eq!(poll.state(), tenants::ScanState::Succeeded, "{poll:?}");
    fixing
        .harness
        .sim
        .requests()
        .into_iter()
        .skip(before)
        .filter(|request| request.path == "/v1.0/users" || request.path == "/v1.0/users/delta")
        .collect()
}

/// Since the last poll: a user removed, one renamed and disabled, one created.
fn change_the_directory(fixing: &FixHarness) -> (String, String, String) {
    let sim = &fixing.harness.sim;
    let tenant = &fixing.microsoft_tenant;
    let mut users = sim.resource(tenant, "/users").expect("users");
    let all = users.as_array_mut().expect("a collection");
    let removed = all.remove(4)["id"].as_str().expect("id").to_owned();
    all[2]["displayName"] = json!("Renamed Person");
    all[2]["accountEnabled"] = json!(false);
    let changed = all[2]["id"].as_str().expect("id").to_owned();
    let created = "0c0ffee0-0000-4000-8000-000000000001".to_owned();
    all.push(json!({
        "id": created,
        "displayName": "New Starter",
        "userPrincipalName": "new.starter@example.onmicrosoft.com",
        "accountEnabled": true,
        "userType": "Member",
        "onPremisesSyncEnabled": null,
        "onPremisesImmutableId": null,
    }));
    sim.set_resource(tenant, "/users", users);
    (removed, changed, created)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_reads_only_the_users_changed_since_the_last_round() {
    let fixing = FixHarness::start(Profile::weak(Licence::P2)).await;

    // The first poll reads every user, from the start of a round, without sign-in activity.
    let first = poll(&fixing).await;
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0].path, "/v1.0/users/delta");
    assert_eq!(
        first[0].query.get("$select").map(String::as_str),
        Some(SELECT)
    );
    assert_eq!(kept_users(&fixing).await, graph_users(&fixing));

    let (removed, changed, created) = change_the_directory(&fixing);
    let second = poll(&fixing).await;
    // One request, from the last round's link: nothing listed in full.
    assert_eq!(second.len(), 1, "{second:?}");
    assert!(second[0].query.contains_key("$deltatoken"), "{second:?}");
    let kept = kept_users(&fixing).await;
    assert_eq!(kept, graph_users(&fixing));
    assert!(!kept.contains_key(&removed));
    assert_eq!(kept[&changed]["accountEnabled"], json!(false));
    assert_eq!(kept[&created]["displayName"], json!("New Starter"));

    // Nothing changed: the round is one request again, and the users stay as they are.
    let third = poll(&fixing).await;
    assert_eq!(third.len(), 1, "{third:?}");
    assert_eq!(kept_users(&fixing).await, kept);

    // A poll that started from an older link (its lease ran out while it ran, and another poll
    // kept a round meanwhile) keeps nothing: this one would have emptied the users.
    let stale = users::Synced {
        from: Some(format!(
            "{}/v1.0/users/delta?$deltatoken=1",
            fixing.harness.sim.base_url()
        )),
        delta_link: "its link".into(),
        afresh: true,
        changed: BTreeMap::new(),
        removed: BTreeSet::new(),
    };
    let pool = fixing.harness.env.pool("scanner").await;
    let mut connection = pool.acquire().await.expect("a connection");
    let tenant_id = fixing.tenant_id.parse().expect("a tenant uuid");
    users::save(&mut connection, tenant_id, &stale, Utc::now())
        .await
        .expect("saved");
    drop(connection);
    pool.close().await;
    assert_eq!(kept_users(&fixing).await, kept);
    fixing.harness.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_graph_refuses_starts_the_round_over() {
    let fixing = FixHarness::start(Profile::weak(Licence::P2)).await;
    poll(&fixing).await;
    // Graph forgot the round's token (it keeps them seven days), and the directory changed.
    fixing
        .harness
        .sim
        .expire_delta_tokens(&fixing.microsoft_tenant);
    change_the_directory(&fixing);

    let requests = poll(&fixing).await;

    let answered: Vec<(u16, bool)> = requests
        .iter()
        .map(|request| (request.status, request.query.contains_key("$deltatoken")))
        .collect();
    assert_eq!(answered, vec![(410, true), (200, false)], "{requests:?}");
    assert_eq!(
        requests[1].query.get("$select").map(String::as_str),
        Some(SELECT)
    );
    assert_eq!(kept_users(&fixing).await, graph_users(&fixing));
    // The next poll follows the new round's link.
    let next = poll(&fixing).await;
    assert_eq!(next.len(), 1, "{next:?}");
    assert!(next[0].query.contains_key("$deltatoken"));

    // A link older than Graph keeps one (seven days) is not tried: the round starts afresh.
    let pool = fixing.harness.env.pool("scanner").await;
    sqlx::query("UPDATE user_delta_links SET synced_at = synced_at - interval '8 days'")
        .execute(&pool)
        .await
        .expect("the link ages");
    pool.close().await;
    let aged = poll(&fixing).await;
    assert_eq!(aged.len(), 1, "{aged:?}");
    assert!(!aged[0].query.contains_key("$deltatoken"), "{aged:?}");
    assert_eq!(
        aged[0].query.get("$select").map(String::as_str),
        Some(SELECT)
    );
    assert_eq!(kept_users(&fixing).await, graph_users(&fixing));
    fixing.harness.finish().await;
}
