//! Every gRPC call is authenticated, and a partner never sees another partner's incident.

use std::time::Duration;

use picket_e2e::{channel, identity_provider_toml, start_prioritizer, suspicious_sign_in};
use picket_proto::incidents::v1::incident_service_client::IncidentServiceClient;
use picket_proto::incidents::v1::{GetIncidentRequest, ListIncidentsRequest};
use picket_testkit::{TestEnv, eventually};

async fn incident_of_partner_one(
    env: &TestEnv,
    client: &IncidentServiceClient<tonic::transport::Channel>,
) -> String {
    env.publish("scanner", &suspicious_sign_in("p1", "t1", "fp-1"))
        .await;
    let token = env.partner_token("p1");
    eventually(Duration::from_secs(20), "partner one's incident", || {
        let mut client = client.clone();
        let request = env.request(&token, ListIncidentsRequest::default());
        async move {
            let listed = client
                .list_incidents(request)
                .await
                .expect("list")
                .into_inner();
            listed
                .incidents
                .first()
                .map(|incident| incident.incident_id.clone())
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_without_a_valid_token_are_refused() {
    let env = TestEnv::new().await;
    let prioritizer = start_prioritizer(&env, "").await;
    let mut client = IncidentServiceClient::new(channel(&prioritizer).await);

    let missing = client
        .list_incidents(ListIncidentsRequest::default())
        .await
        .expect_err("refused");
    assert_eq!(missing.code(), tonic::Code::Unauthenticated);

    let garbage = client
        .list_incidents(env.request("not-a-jwt", ListIncidentsRequest::default()))
        .await
        .expect_err("refused");
    assert_eq!(garbage.code(), tonic::Code::Unauthenticated);

    let forged = picket_platform::auth::TokenAuthority::shared_key(
        "a-different-key-a-different-key-0123",
        "picket",
        "picket",
        Duration::from_secs(3600),
    )
    .mint(
        &picket_platform::Principal {
            subject: "mallory".into(),
            role: picket_platform::Role::Operator,
            partner_id: None,
            tenant_ids: vec![],
        },
        Duration::from_secs(60),
    )
    .expect("mint");
    let refused = client
        .list_incidents(env.request(&forged, ListIncidentsRequest::default()))
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);

    prioritizer.shutdown().await;
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partner_cannot_read_another_partners_incident() {
    let env = TestEnv::new().await;
    let prioritizer = start_prioritizer(&env, "").await;
    let mut client = IncidentServiceClient::new(channel(&prioritizer).await);
    let incident_id = incident_of_partner_one(&env, &client).await;
    let intruder = env.partner_token("p2");

    let read = client
        .get_incident(env.request(
            &intruder,
            GetIncidentRequest {
                incident_id: incident_id.clone(),
            },
        ))
        .await
        .expect_err("refused");
    assert_eq!(
        read.code(),
        tonic::Code::NotFound,
        "another partner's incident does not exist for p2"
    );

    let listed = client
        .list_incidents(env.request(&intruder, ListIncidentsRequest::default()))
        .await
        .expect("p2 lists its own incidents")
        .into_inner();
    assert!(listed.incidents.is_empty());

    let asked_for_p1 = client
        .list_incidents(env.request(
            &intruder,
            ListIncidentsRequest {
                partner_id: "p1".into(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("refused");
    assert_eq!(asked_for_p1.code(), tonic::Code::PermissionDenied);

    let owner = client
        .get_incident(env.request(
            &env.partner_token("p1"),
            GetIncidentRequest {
                incident_id: incident_id.clone(),
            },
        ))
        .await
        .expect("the owner reads it");
    assert_eq!(
        owner.into_inner().incident.expect("incident").incident_id,
        incident_id
    );

    let operator = client
        .get_incident(env.request(&env.operator_token(), GetIncidentRequest { incident_id }))
        .await;
    assert!(operator.is_ok(), "the operator sees every partner");

    let bad_id = client
        .get_incident(env.request(
            &env.partner_token("p1"),
            GetIncidentRequest {
                incident_id: "nope".into(),
            },
        ))
        .await
        .expect_err("refused");
    assert_eq!(bad_id.code(), tonic::Code::InvalidArgument);
    assert!(
        bad_id.message().starts_with("incident_id"),
        "names the field: {}",
        bad_id.message()
    );

    prioritizer.shutdown().await;
    env.teardown().await;
}

/// Claims as an identity provider issues them for Picket's API: the role as an app role.
fn provider_claims(
    sim: &graph_sim::GraphSim,
    tenant: &str,
    roles: &[&str],
    partner_id: Option<&str>,
    lifetime: i64,
) -> serde_json::Value {
    let now = chrono::Utc::now().timestamp();
    let mut claims = serde_json::json!({
        "iss": sim.issuer(tenant),
        "aud": "api://picket",
        "sub": "user-object-id",
        "iat": now,
        "nbf": now,
        "exp": now + lifetime,
        "roles": roles,
    });
    if let Some(partner_id) = partner_id {
        claims["partner_id"] = partner_id.into();
    }
    claims
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_from_an_identity_provider_are_verified_against_its_published_keys() {
    let env = TestEnv::new().await;
    let sim = graph_sim::GraphSim::start(Default::default(), ([127, 0, 0, 1], 0).into())
        .await
        .expect("graph-sim starts");
    let [tenant, other_tenant] = [sim.tenant_ids()[0].clone(), sim.tenant_ids()[1].clone()];
    let prioritizer = start_prioritizer(&env, &identity_provider_toml(&sim, &tenant)).await;
    let client = IncidentServiceClient::new(channel(&prioritizer).await);
    let call = |token: String| {
        let mut client = client.clone();
        let request = env.request(&token, ListIncidentsRequest::default());
        async move { client.list_incidents(request).await.map(|_| ()) }
    };
    let hour = 3600;
    let sign = |tenant: &str, roles: &[&str], partner_id: Option<&str>, lifetime: i64| {
        sim.sign(&provider_claims(&sim, tenant, roles, partner_id, lifetime))
    };

    call(sign(&tenant, &["operator"], None, hour))
        .await
        .expect("an operator app role is accepted");
    call(sign(&tenant, &["Partner"], Some("p1"), hour))
        .await
        .expect("a partner app role with its partner is accepted");

    let refused = [
        ("a development token", env.operator_token()),
        (
            "another audience",
            sim.sign(&{
                let mut claims = provider_claims(&sim, &tenant, &["operator"], None, hour);
                claims["aud"] = "api://another-app".into();
                claims
            }),
        ),
        (
            "another issuer",
            sign(&other_tenant, &["operator"], None, hour),
        ),
        ("an expired token", sign(&tenant, &["operator"], None, -600)),
        (
            "a token living longer than the maximum",
            sign(&tenant, &["operator"], None, 9 * hour),
        ),
        (
            "no Picket role",
            sign(&tenant, &["Directory.Read"], None, hour),
        ),
    ];
    for (what, token) in refused {
        let status = call(token).await.expect_err(what);
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{what}");
    }
    let stranger = graph_sim::GraphSim::start(Default::default(), ([127, 0, 0, 1], 0).into())
        .await
        .expect("a second issuer");
    let unpublished = stranger.sign(&provider_claims(&sim, &tenant, &["operator"], None, hour));
    assert_eq!(
        call(unpublished).await.expect_err("unknown key").code(),
        tonic::Code::Unauthenticated
    );

    // The provider rotates its key: tokens signed with the new one are accepted without a restart.
    sim.rotate_signing_key().expect("a new key");
    let rotated = sign(&tenant, &["operator"], None, hour);
    eventually(Duration::from_secs(20), "the new key to be fetched", || {
        let attempt = call(rotated.clone());
        async move { attempt.await.ok() }
    })
    .await;
    env.teardown().await;
}
