//! The Graph connector over real HTTP against graph-sim: paging, `$select`, throttling with and
//! without `Retry-After`, bounded retries on 5xx, token caching and expiry, and missing consent.

use std::time::Duration;

use graph_sim::{Fault, GraphSim, SimConfig};
use scanner::Settings;
use scanner::graph::{GraphClient, GraphError, Meter};

async fn simulator(users_per_tenant: usize) -> GraphSim {
    picket_platform::runtime::install_crypto_provider();
    let config = SimConfig {
        tenants: 2,
        users_per_tenant,
        page_size: 100,
        ..SimConfig::default()
    };
    GraphSim::start(config, ([127, 0, 0, 1], 0).into())
        .await
        .expect("graph-sim starts")
}

fn client(sim: &GraphSim, max_retries: u32) -> GraphClient {
    let toml = format!(
        "[scanner]\nlogin_base_url = \"{base}\"\ngraph_base_url = \"{base}\"\ndefender_base_url = \"{base}\"\nclient_id = \"{id}\"\nclient_secret = \"{secret}\"\nmax_retries = {max_retries}\ninitial_backoff = \"50ms\"\nrequest_timeout = \"5s\"\ntoken_refresh_margin = \"60s\"\nforbidden_token_renewal = \"500ms\"\nconsent_link_keys = \"{keys}\"\n",
        base = sim.base_url(),
        id = sim.config().client_id,
        secret = sim.config().client_secret,
        keys = picket_testkit::consent_link_test_keys!(),
    );
    let settings: Settings =
        picket_testkit::service_settings(scanner::SERVICE, scanner::DEFAULTS, &toml);
    GraphClient::new(&settings).expect("client builds")
}

fn first_tenant(sim: &GraphSim) -> String {
    sim.tenant_ids().into_iter().next().expect("a tenant")
}

#[tokio::test]
async fn collection_pages_are_followed_and_select_is_applied() {
    let sim = simulator(250).await;
    let tenant = first_tenant(&sim);
    let users = client(&sim, 3)
        .get_all(
            &tenant,
            "/v1.0/users?$select=id,userPrincipalName&$top=100",
            &Meter::default(),
        )
        .await
        .expect("users");
    assert_eq!(users.len(), 250);
    assert!(
        users
            .iter()
            .all(|user| user.as_object().is_some_and(|object| object.len() == 2))
    );
    assert_eq!(sim.requests().len(), 3, "three pages of 100, 100 and 50");
}

#[tokio::test]
async fn throttled_request_waits_exactly_retry_after() {
    let sim = simulator(5).await;
    let tenant = first_tenant(&sim);
    sim.inject(
        &tenant,
        &[Fault::Throttle {
            retry_after: Some(0.6),
        }],
    );

    let organization = client(&sim, 3)
        .get(&tenant, "/v1.0/organization", &Meter::default())
        .await
        .expect("answered after the wait");
    assert_eq!(organization["value"][0]["id"], tenant.as_str());

    let requests = sim.requests();
    assert_eq!(
        requests
            .iter()
            .map(|request| request.status)
            .collect::<Vec<_>>(),
        [429, 200]
    );
    let gap = requests[1].at - requests[0].at;
    assert!(
        gap >= Duration::from_millis(600),
        "retried after {gap:?}, inside the Retry-After window"
    );
    assert!(
        gap < Duration::from_millis(900),
        "waited {gap:?}, much longer than asked"
    );
}

#[tokio::test]
async fn no_request_reaches_a_tenant_inside_its_retry_after_window() {
    let sim = simulator(5).await;
    let tenant = first_tenant(&sim);
    let client = std::sync::Arc::new(client(&sim, 3));
    sim.inject(
        &tenant,
        &[Fault::Throttle {
            retry_after: Some(0.5),
        }],
    );

    let get = |client: std::sync::Arc<GraphClient>, tenant: String| {
        tokio::spawn(async move {
            client
                .get(&tenant, "/v1.0/organization", &Meter::default())
                .await
        })
    };
    // The first request is throttled; the others start while its window is open.
    let mut calls = vec![get(client.clone(), tenant.clone())];
    tokio::time::sleep(Duration::from_millis(100)).await;
    calls.extend((0..5).map(|_| get(client.clone(), tenant.clone())));
    for call in calls {
        call.await.expect("joins").expect("answered");
    }

    let requests = sim.requests();
    let throttled = requests
        .iter()
        .find(|request| request.status == 429)
        .expect("one throttled request");
    let window_end = throttled.at + Duration::from_millis(500);
    let inside = requests
        .iter()
        .filter(|request| request.at > throttled.at && request.at < window_end)
        .count();
    assert_eq!(inside, 0, "requests sent inside the Retry-After window");
}

#[tokio::test]
async fn throttle_without_retry_after_backs_off_and_retries() {
    let sim = simulator(5).await;
    let tenant = first_tenant(&sim);
    sim.inject(
        &tenant,
        &[
            Fault::Throttle { retry_after: None },
            Fault::Throttle { retry_after: None },
        ],
    );
    client(&sim, 3)
        .get(&tenant, "/v1.0/organization", &Meter::default())
        .await
        .expect("answered after backing off");
    let statuses: Vec<u16> = sim
        .requests()
        .iter()
        .map(|request| request.status)
        .collect();
    assert_eq!(statuses, [429, 429, 200]);
}

#[tokio::test]
async fn server_errors_are_retried_a_bounded_number_of_times() {
    let sim = simulator(5).await;
    let tenant = first_tenant(&sim);
    sim.inject(&tenant, &[Fault::Unavailable; 5]);
    let client = client(&sim, 2);

    let error = client
        .get(&tenant, "/v1.0/organization", &Meter::default())
        .await
        .expect_err("gives up");
    assert!(
        matches!(error, GraphError::Unavailable { attempts: 3, .. }),
        "{error:?}"
    );
    assert_eq!(sim.requests().len(), 3, "the first attempt and two retries");
    let health = client.health(&tenant);
    assert_eq!(health.consecutive_failures, 1);
    assert!(
        health
            .last_error
            .as_deref()
            .is_some_and(|error| error.contains("unavailable")),
        "{health:?}"
    );

    // Two faults are left: the next call retries past them.
    client
        .get(&tenant, "/v1.0/organization", &Meter::default())
        .await
        .expect("recovers within its retries");
    assert_eq!(
        client.health(&tenant).consecutive_failures,
        0,
        "a success resets the count"
    );
}

#[tokio::test]
async fn token_is_cached_and_replaced_when_graph_says_it_expired() {
    let sim = simulator(5).await;
    let tenant = first_tenant(&sim);
    let client = client(&sim, 3);

    client
        .get(&tenant, "/v1.0/organization", &Meter::default())
        .await
        .expect("first call");
    client
        .get(&tenant, "/v1.0/subscribedSkus", &Meter::default())
        .await
        .expect("second call");
    assert_eq!(sim.tokens_issued(&tenant), 1, "one token for both calls");

    sim.expire_tokens();
    client
        .get(&tenant, "/v1.0/organization", &Meter::default())
        .await
        .expect("answered with a new token");
    assert_eq!(sim.tokens_issued(&tenant), 2);
    let statuses: Vec<u16> = sim
        .requests()
        .iter()
        .map(|request| request.status)
        .collect();
    assert_eq!(statuses, [200, 200, 401, 200]);
}

#[tokio::test]
async fn missing_consent_fails_with_entras_reason() {
    let sim = simulator(5).await;
    let tenant = first_tenant(&sim);
    sim.set_consent(&tenant, false);
    let client = client(&sim, 3);

    let error = client
        .get(&tenant, "/v1.0/organization", &Meter::default())
        .await
        .expect_err("no token without consent");
    match &error {
        GraphError::Token { error, description } => {
            assert_eq!(error, "unauthorized_client");
            assert!(description.starts_with("AADSTS7000229"), "{description}");
        }
        other => panic!("expected a token error, got {other:?}"),
    }
    assert!(
        sim.requests().is_empty(),
        "nothing reaches Graph without a token"
    );
    assert_eq!(client.health(&tenant).consecutive_failures, 1);
}

#[tokio::test]
async fn unknown_tenant_and_wrong_secret_are_token_errors() {
    let sim = simulator(5).await;
    let error = client(&sim, 3)
        .get(
            "00000000-0000-0000-0000-000000000000",
            "/v1.0/organization",
            &Meter::default(),
        )
        .await;
    assert!(
        matches!(error, Err(GraphError::Token { ref error, .. }) if error == "invalid_request"),
        "{error:?}"
    );
}

/// Mail folders as Graph v1.0 documents them: a well-known name (in any case) or an id; a name
/// outside the documented list (`rssfeeds`) is a malformed id, and an id of no folder is not found.
#[tokio::test]
async fn mail_folders_answer_to_documented_names_and_ids_only() {
    let sim = simulator(5).await;
    let tenant = first_tenant(&sim);
    let user = sim.resource(&tenant, "/users").expect("users")[0]["id"]
        .as_str()
        .expect("an id")
        .to_owned();
    let graph = client(&sim, 0);
    let folder =
        |name: &str| format!("/v1.0/users/{user}/mailFolders/{name}?$select=id,displayName");
    let deleted = graph
        .get(&tenant, &folder("DeletedItems"), &Meter::default())
        .await
        .expect("a well-known name, in any case");
    assert_eq!(deleted["displayName"], "Deleted Items");
    let by_id = graph
        .get(
            &tenant,
            &folder(deleted["id"].as_str().expect("id")),
            &Meter::default(),
        )
        .await
        .expect("its id");
    assert_eq!(by_id["displayName"], "Deleted Items");
    match graph
        .get(&tenant, &folder("rssfeeds"), &Meter::default())
        .await
    {
        Err(GraphError::Api { status, code, .. }) => {
            assert_eq!((status, code.as_str()), (400, "ErrorInvalidIdMalformed"));
        }
        other => panic!("rssfeeds is no well-known name: {other:?}"),
    }
    match graph
        .get(&tenant, &folder("AAMkAnotherMailboxes"), &Meter::default())
        .await
    {
        Err(GraphError::Api { status, code, .. }) => {
            assert_eq!((status, code.as_str()), (404, "ErrorItemNotFound"));
        }
        other => panic!("an id of no folder: {other:?}"),
    }
}

/// Defender alerts are filtered on status with `eq` only, as documented: graph-sim refuses `ne`
/// and `or` instead of guessing what Graph would do with them.
#[tokio::test]
async fn alerts_take_documented_filters_only() {
    let sim = simulator(5).await;
    let tenant = first_tenant(&sim);
    let graph = client(&sim, 0);
    let alerts = |filter: &str| {
        format!(
            "/v1.0/security/alerts_v2?$filter={}",
            scanner::graph::url_encode(filter)
        )
    };
    graph
        .get_all(&tenant, &alerts("status eq 'new'"), &Meter::default())
        .await
        .expect("eq is documented");
    for undocumented in [
        "status ne 'resolved'",
        "status eq 'new' or status eq 'inProgress'",
    ] {
        match graph
            .get_all(&tenant, &alerts(undocumented), &Meter::default())
            .await
        {
            Err(GraphError::Api { status, .. }) => assert_eq!(status, 400, "{undocumented}"),
            other => panic!("{undocumented}: {other:?}"),
        }
    }
}

/// A token Graph answers 403 is replaced, at most once per `forbidden_token_renewal` (500 ms
/// here): one issued before the permissions propagated is useless for its whole hour, but a
/// permission really missing does not cost a token per request.
#[tokio::test]
async fn a_forbidden_token_is_replaced_at_most_once_per_period() {
    let sim = simulator(5).await;
    let tenant = first_tenant(&sim);
    let graph = client(&sim, 0);
    sim.delay_permissions(&tenant, Duration::from_millis(500));
    let organization = "/v1.0/organization";
    let early = graph
        .get(&tenant, organization, &Meter::default())
        .await
        .expect_err("no permissions yet, even with a second token");
    assert_eq!(early.status(), 403);
    assert_eq!(sim.tokens_issued(&tenant), 2, "replaced once, not again");
    tokio::time::sleep(Duration::from_millis(600)).await;
    // The cached token still lacks the permissions: replaced once more, now that they arrived.
    graph
        .get(&tenant, organization, &Meter::default())
        .await
        .expect("a fresh token once the permissions propagated");
    assert_eq!(sim.tokens_issued(&tenant), 3);
    tokio::time::sleep(Duration::from_millis(600)).await;

    // A mailbox the app may never read: every request is refused, and no token is replaced.
    let user = sim.resource(&tenant, "/users").expect("users")[0]["id"]
        .as_str()
        .expect("an id")
        .to_owned();
    sim.deny_mailbox(&tenant, &user);
    let rules = format!("/v1.0/users/{user}/mailFolders/inbox/messageRules");
    for _ in 0..3 {
        let refused = graph
            .get(&tenant, &rules, &Meter::default())
            .await
            .expect_err("denied");
        assert_eq!(refused.status(), 403);
    }
    assert_eq!(
        sim.tokens_issued(&tenant),
        4,
        "one more token, not one per request"
    );
}

/// Users with signInActivity come at most 120 to a page, as Graph documents, whatever `$top`
/// asks: the scanner's `$top=999` read follows the pages.
#[tokio::test]
async fn users_with_sign_in_activity_come_120_to_a_page() {
    let sim = simulator(250).await;
    let tenant = first_tenant(&sim);
    sim.reset_tenant(
        &tenant,
        graph_sim::Profile::hardened(graph_sim::Licence::P1),
    );
    let users = client(&sim, 0)
        .get_all(
            &tenant,
            "/v1.0/users?$select=id,signInActivity&$top=999",
            &Meter::default(),
        )
        .await
        .expect("users");
    assert_eq!(users.len(), 250);
    assert_eq!(sim.requests().len(), 3, "pages of 120, 120 and 10");
}

/// Per-mailbox reads go 20 to a JSON batch; Graph throttles requests inside a batch one by one,
/// and only those are sent again, in a later batch, after their `Retry-After`.
#[tokio::test]
async fn batches_carry_twenty_requests_and_resend_only_the_throttled_ones() {
    let sim = simulator(45).await;
    let tenant = first_tenant(&sim);
    let client = client(&sim, 3);
    let users = client
        .get_all(&tenant, "/v1.0/users?$select=id", &Meter::default())
        .await
        .expect("users");
    let mut paths: Vec<String> = users
        .iter()
        .map(|user| {
            format!(
                "/v1.0/users/{}/mailFolders/inbox/messageRules",
                user["id"].as_str().expect("id")
            )
        })
        .collect();
    paths.push("/v1.0/users/no-such-user/mailFolders/inbox/messageRules".into());
    sim.inject(
        &tenant,
        &[Fault::Throttle {
            retry_after: Some(0.4),
        }; 3],
    );
    let meter = Meter::default();

    let answers = client.get_all_many(&tenant, &paths, &meter).await;

    assert_eq!(answers.len(), 46);
    assert!(answers[..45].iter().all(Result::is_ok), "{answers:?}");
    assert!(answers[45].as_ref().is_err_and(GraphError::is_not_found));
    // 46 requests and the three throttled ones again: 49 in three batches of 20, 20 and 9.
    assert_eq!(meter.requests(), 49);
    assert_eq!(meter.throttled(), 3);
    assert_eq!(meter.calls(), 3);
    assert_eq!(sim.batches(), 3);
    assert_eq!(
        sim.throttle_violations().len(),
        0,
        "{:?}",
        sim.throttle_violations()
    );
}

#[tokio::test]
async fn a_delta_round_follows_its_links_within_graph_only() {
    let sim = simulator(250).await;
    let client = client(&sim, 2);
    let tenant = first_tenant(&sim);
    let meter = Meter::default();

    let (users, link) = client
        .get_delta(&tenant, "/v1.0/users/delta?$select=id,displayName", &meter)
        .await
        .expect("a first round");
    assert_eq!(users.len(), 250);
    assert_eq!(meter.requests(), 3, "three pages of 100");
    assert!(link.starts_with(&sim.base_url()), "{link}");
    let (nothing, _) = client
        .get_delta(&tenant, &link, &meter)
        .await
        .expect("a round from the link");
    assert!(nothing.is_empty());

    // A link naming another host is not followed: the tenant's token would go with it.
    let sent = sim.requests().len();
    let foreign = link.replace(&sim.base_url(), "http://169.254.169.254");
    let refused = client.get_delta(&tenant, &foreign, &meter).await;
    assert!(
        matches!(&refused, Err(GraphError::Malformed(message)) if message.contains("outside Graph")),
        "{refused:?}"
    );
    assert_eq!(sim.requests().len(), sent);
}
