//! `picketctl token login` against graph-sim playing the operator's Entra ID: the device-code
//! flow gives an access token that a service verifying the issuer's keys accepts.

use std::process::Stdio;
use std::time::Duration;

use graph_sim::{GraphSim, SimConfig};
use picket_e2e::{channel, identity_provider_toml, start_prioritizer};
use picket_proto::incidents::v1::ListIncidentsRequest;
use picket_proto::incidents::v1::incident_service_client::IncidentServiceClient;
use picket_testkit::TestEnv;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_from_the_device_code_sign_in_is_accepted_by_the_services() {
    let env = TestEnv::new().await;
    let sim = GraphSim::start(SimConfig::default(), ([127, 0, 0, 1], 0).into())
        .await
        .expect("graph-sim starts");
    let tenant = sim.tenant_ids()[0].clone();
    let prioritizer = start_prioritizer(&env, &identity_provider_toml(&sim, &tenant)).await;

    let mut login = tokio::process::Command::new(env!("CARGO_BIN_EXE_picketctl"))
        .args([
            "token",
            "login",
            "--issuer",
            &sim.issuer(&tenant),
            "--client-id",
            &sim.config().client_id,
            "--scope",
            "api://picket/.default",
        ])
        .env_remove("PICKET_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("picketctl runs");
    let mut instructions = BufReader::new(login.stderr.take().expect("stderr")).lines();
    let shown = tokio::time::timeout(Duration::from_secs(20), instructions.next_line())
        .await
        .expect("instructions in time")
        .expect("readable")
        .expect("a line");
    let user_code = shown
        .split("enter the code ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no code in {shown:?}"));

    // The user opens the page and signs in; their account carries Picket's partner app role.
    assert!(sim.approve_device_code(
        user_code,
        serde_json::json!({"sub": "alice", "roles": ["partner"], "partner_id": "p1"}),
    ));
    let status = tokio::time::timeout(Duration::from_secs(30), login.wait())
        .await
        .expect("login finishes")
        .expect("exit status");
    assert!(status.success(), "picketctl token login failed");
    let mut token = String::new();
    login
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut token)
        .await
        .expect("the token");

    let mut incidents = IncidentServiceClient::new(channel(&prioritizer).await);
    incidents
        .list_incidents(env.request(token.trim(), ListIncidentsRequest::default()))
        .await
        .expect("the service accepts the token");
    prioritizer.shutdown().await;
    env.teardown().await;
}
