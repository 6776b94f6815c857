//! picketctl as an operator uses it: the real binary against running services, real NATS and
//! PostgreSQL, and graph-sim for Microsoft Graph.

use std::process::{Output, Stdio};
use std::time::Duration;

use graph_sim::{GraphSim, SimConfig};
use picket_e2e::{
    admin_get, consent_as_administrator, start_ledger, start_notifier, start_offboarding,
    start_prioritizer, start_scanner,
};
use picket_platform::Application;
use picket_testkit::{TestEnv, eventually};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr, Command};

const PARTNER: &str = "partner-cli";

/// picketctl pointed at the test's services, with a partner token.
struct Cli {
    env: TestEnv,
    token: String,
    /// `--<service> <url>` flags of the services the test runs.
    endpoints: Vec<String>,
}

impl Cli {
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_picketctl"));
        command
            .env_clear()
            .args(&self.endpoints)
            .args(args)
            .stdin(Stdio::null());
        command
    }

    async fn run(&self, args: &[&str]) -> Output {
        let mut with_token = vec!["--token", &self.token];
        with_token.extend_from_slice(args);
        self.command(&with_token)
            .output()
            .await
            .expect("picketctl runs")
    }

    /// Starts `events tail` and waits until it is subscribed; the rest of its stderr comes along
    /// (dropping it would break the pipe it reports skipped messages on).
    async fn tail(&self, args: &[&str]) -> (Child, Lines<BufReader<ChildStderr>>) {
        let mut tail = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("events tail starts");
        let mut stderr = BufReader::new(tail.stderr.take().expect("stderr")).lines();
        let ready = stderr.next_line().await.expect("stderr readable");
        assert_eq!(
            ready.as_deref(),
            Some("waiting for events (Ctrl-C stops)...")
        );
        (tail, stderr)
    }

    /// Runs a command that must succeed, with `--output json`, and parses what it printed.
    async fn json(&self, args: &[&str]) -> Value {
        let mut json = vec!["--output", "json"];
        json.extend_from_slice(args);
        let output = self.run(&json).await;
        assert!(
            output.status.success(),
            "{args:?}: {}",
            text(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("picketctl prints JSON")
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The flags that point picketctl at running services: `[("scanner", &scanner), ...]`.
fn endpoints(services: &[(&str, &Application)]) -> Vec<String> {
    services
        .iter()
        .flat_map(|(name, application)| {
            [
                format!("--{name}"),
                format!("http://{}", application.grpc_address()),
            ]
        })
        .collect()
}

#[tokio::test]
async fn an_operator_takes_a_tenant_from_onboarding_to_a_fixed_incident() {
    let env = TestEnv::new().await;
    let sim = GraphSim::start(
        SimConfig {
            tenants: 1,
            ..SimConfig::default()
        },
        ([127, 0, 0, 1], 0).into(),
    )
    .await
    .expect("graph-sim starts");
    let scanner = start_scanner(&env, &sim, "").await;
    let prioritizer = start_prioritizer(&env, "").await;
    let cli = Cli {
        token: env.partner_token(PARTNER),
        endpoints: endpoints(&[("scanner", &scanner), ("prioritizer", &prioritizer)]),
        env,
    };

    let microsoft_tenant = sim.tenant_ids()[0].clone();
    let onboarded = cli
        .json(&[
            "tenants",
            "onboard",
            "--name",
            "Contoso Dental",
            "--microsoft-tenant",
            &microsoft_tenant,
        ])
        .await;
    let tenant_id = onboarded["tenant"]["tenantId"]
        .as_str()
        .expect("tenant id")
        .to_owned();
    assert_eq!(onboarded["tenant"]["state"], "TENANT_STATE_PENDING_CONSENT");
    // The administrator consents and signs in; Microsoft's redirects bring the browser back.
    let consent_url = onboarded["consentUrl"].as_str().expect("consent url");
    let page = consent_as_administrator(&sim, &microsoft_tenant, consent_url)
        .await
        .expect("the browser reaches a page");
    assert!(page.connected(), "{}", page.body);

    let listed = cli.run(&["tenants", "list"]).await;
    let table = text(&listed.stdout);
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    assert!(table.starts_with("TENANT "), "{table}");
    assert!(
        table.contains("Contoso Dental") && table.contains("active"),
        "{table}"
    );

    // The onboarding scan opens incidents; one with a fix is approved and Picket applies it.
    let incident_id = eventually(
        Duration::from_secs(60),
        "an incident with a fix",
        || async {
            let listed = cli.json(&["incidents", "list", "--state", "open"]).await;
            listed["incidents"].as_array().and_then(|incidents| {
                incidents
                    .iter()
                    .find(|incident| {
                        incident["tenantId"] == tenant_id.as_str()
                            && incident["fixAction"].is_string()
                    })
                    .map(|incident| incident["incidentId"].as_str().expect("id").to_owned())
            })
        },
    )
    .await;

    // Two `events tail`s are subscribed before the decision: one follows every incident event,
    // the other stops after the first.
    let tail_args = [
        "events",
        "tail",
        "--nats",
        "nats://127.0.0.1:4222",
        "--namespace",
        &cli.env.namespace,
        "--area",
        "incidents",
        "--partner",
        PARTNER,
    ];
    let (mut tail, _tail_stderr) = cli.tail(&tail_args).await;
    let (counted, _counted_stderr) = cli
        .tail(&[&tail_args[..], &["--count", "1"]].concat())
        .await;

    let approved = cli
        .json(&["incidents", "approve", &incident_id, "--comment", "fix it"])
        .await;
    assert_eq!(approved["incident"]["state"], "INCIDENT_STATE_AWAITING_FIX");
    assert_eq!(approved["decision"]["kind"], "DECISION_KIND_APPROVE");

    // Every incident event prints as one JSON line; other incidents may still be opening.
    let mut stdout = BufReader::new(tail.stdout.take().expect("stdout")).lines();
    let decided = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = stdout.next_line().await.expect("stdout readable") {
            let line: Value = serde_json::from_str(&line).expect("a JSON line");
            if line["type"] == "picket.incidents.v1.IncidentDecided" {
                return line;
            }
        }
        panic!("events tail ended before the decision");
    })
    .await
    .expect("events tail prints the decision");
    assert_eq!(
        decided["data"]["decision"]["incidentId"],
        incident_id.as_str()
    );
    assert_eq!(decided["data"]["partnerId"], PARTNER);
    assert!(
        decided["subject"]
            .as_str()
            .is_some_and(|subject| subject.ends_with(&format!(".{PARTNER}.{tenant_id}"))),
        "{decided}"
    );
    tail.kill().await.expect("events tail stops");
    let counted = tokio::time::timeout(Duration::from_secs(20), counted.wait_with_output())
        .await
        .expect("events tail --count 1 stops after one event")
        .expect("events tail exits");
    assert!(counted.status.success());
    assert_eq!(text(&counted.stdout).lines().count(), 1);

    eventually(
        Duration::from_secs(30),
        "the fix to resolve the incident",
        || async {
            let shown = cli.json(&["incidents", "show", &incident_id]).await;
            (shown["incident"]["state"] == "INCIDENT_STATE_RESOLVED").then_some(shown)
        },
    )
    .await;
    let shown = cli.run(&["incidents", "show", &incident_id]).await;
    let record = text(&shown.stdout);
    assert!(record.contains("state            resolved"), "{record}");
    assert!(record.contains("fix-applied"), "{record}");

    // The scanner counted Microsoft's answers to the scan and the fix.
    let (_, metrics) = admin_get(&scanner, "/metrics").await;
    assert!(
        metrics.contains(r#"picket_graph_responses_total{api="graph",status="200"}"#),
        "scanner metrics:\n{metrics}"
    );

    cli.env.teardown().await;
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_a_failing_exit_status() {
    let env = TestEnv::new().await;
    let prioritizer = start_prioritizer(&env, "").await;
    let cli = Cli {
        token: env.partner_token(PARTNER),
        endpoints: [
            endpoints(&[("prioritizer", &prioritizer)]),
            vec!["--scanner".into(), "http://127.0.0.1:1".into()],
        ]
        .concat(),
        env,
    };
    let failure = |output: &Output, code: i32, expected: &str| {
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(code), "{stderr}");
        assert!(
            stderr.contains(expected),
            "expected `{expected}` in: {stderr}"
        );
        assert!(
            output.stdout.is_empty(),
            "nothing on stdout: {}",
            text(&output.stdout)
        );
    };

    let no_token = cli
        .command(&["--partner", PARTNER, "incidents", "list"])
        .output()
        .await
        .expect("runs");
    failure(&no_token, 1, "no token: pass --token or set PICKET_TOKEN");

    let bad_state = cli.run(&["incidents", "list", "--state", "sideways"]).await;
    failure(&bad_state, 2, "`sideways` is not a known value");

    let unknown = cli
        .run(&["incidents", "show", "01a23792-0000-7000-8000-000000000000"])
        .await;
    failure(&unknown, 1, "not found");

    let other_partner = cli
        .run(&["--partner", "someone-else", "incidents", "list"])
        .await;
    failure(&other_partner, 1, "permission denied");

    let unreachable = cli.run(&["tenants", "list"]).await;
    failure(
        &unreachable,
        1,
        "cannot reach the scanner at http://127.0.0.1:1",
    );

    let forged = cli
        .command(&[
            "--token",
            "not.a.token",
            "incidents",
            "list",
            "--partner",
            PARTNER,
        ])
        .output()
        .await
        .expect("runs");
    failure(&forged, 1, "not authenticated");

    cli.env.teardown().await;
}

#[tokio::test]
async fn the_retainer_the_authority_map_and_the_channels_from_the_command_line() {
    let env = TestEnv::new().await;
    let prioritizer = start_prioritizer(&env, "").await;
    let notifier = start_notifier(&env, "").await;
    let ledger = start_ledger(&env, "").await;
    let offboarding = start_offboarding(&env, "").await;
    let operator = env.operator_token();
    let cli = Cli {
        token: env.partner_token(PARTNER),
        endpoints: endpoints(&[
            ("prioritizer", &prioritizer),
            ("notifier", &notifier),
            ("ledger", &ledger),
            ("offboarding", &offboarding),
        ]),
        env,
    };

    // The operator sells a pack; the partner sees it in its balance and statement.
    let purchase = cli
        .command(&[
            "--token",
            &operator,
            "--output",
            "json",
            "ledger",
            "purchase",
            "--partner",
            PARTNER,
            "--minutes",
            "600",
            "--validity",
            "365d",
            "--reference",
            "INV-1",
        ])
        .output()
        .await
        .expect("runs");
    assert!(purchase.status.success(), "{}", text(&purchase.stderr));
    let purchased: Value = serde_json::from_slice(&purchase.stdout).expect("JSON");
    assert_eq!(purchased["balance"]["availableMinutes"], "600");
    let balance = text(&cli.run(&["ledger", "balance"]).await.stdout);
    assert!(balance.contains("available minutes  600"), "{balance}");
    let statement = cli
        .run(&[
            "ledger",
            "statement",
            "--from",
            "2020-01-01",
            "--to",
            "2100-01-01",
            "--csv",
        ])
        .await;
    assert!(statement.status.success(), "{}", text(&statement.stderr));
    let csv = text(&statement.stdout);
    assert!(csv.starts_with("occurred_at,kind,"), "{csv}");
    assert!(
        csv.lines().any(|line| line.contains(",600,")),
        "the purchase is a line: {csv}"
    );
    let partner_purchase = cli.run(&["ledger", "purchase", "--minutes", "60"]).await;
    assert_eq!(partner_purchase.status.code(), Some(1));
    assert!(text(&partner_purchase.stderr).contains("permission denied"));

    // The authority map: shown per stage, validated (failing exactly when it has gaps), exported.
    let map = text(&cli.run(&["authority", "show"]).await.stdout);
    assert!(map.starts_with("STAGE "), "{map}");
    assert!(map.contains("detection-and-triage"), "{map}");
    let validated = cli.run(&["authority", "validate"]).await;
    let gap_count = cli
        .command(&["--token", &cli.token, "-o", "json", "authority", "validate"])
        .output()
        .await
        .expect("runs");
    let gap_count = serde_json::from_slice::<Value>(&gap_count.stdout).expect("JSON")["gaps"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(
        validated.status.success(),
        gap_count == 0,
        "{}",
        text(&validated.stderr)
    );
    let worksheet = cli.run(&["authority", "export", "--format", "csv"]).await;
    assert!(worksheet.status.success(), "{}", text(&worksheet.stderr));
    assert!(text(&worksheet.stdout).lines().count() > 1);

    // Auto-approve rules: created, listed, deleted.
    let rule = cli
        .json(&[
            "rules",
            "create",
            "--check",
            "MS.AAD.3.1v1",
            "--description",
            "MFA everywhere",
        ])
        .await;
    let rule_id = rule["rule"]["ruleId"].as_str().expect("rule id").to_owned();
    let rules = text(&cli.run(&["rules", "list"]).await.stdout);
    assert!(rules.contains(&rule_id) && rules.contains("all"), "{rules}");
    assert!(
        cli.run(&["rules", "delete", &rule_id])
            .await
            .status
            .success()
    );
    assert_eq!(text(&cli.run(&["rules", "list"]).await.stdout), "(none)\n");

    // Channels: an e-mail recipient added, listed, removed; no deliveries yet.
    let added = cli
        .json(&[
            "channels",
            "add-email",
            "--email",
            "soc@msp.example",
            "--name",
            "SOC",
        ])
        .await;
    let recipient_id = added["recipient"]["recipientId"]
        .as_str()
        .expect("id")
        .to_owned();
    let channels = text(&cli.run(&["channels", "list"]).await.stdout);
    assert!(
        channels.contains("soc@msp.example") && channels.contains("email"),
        "{channels}"
    );
    assert!(
        cli.run(&["channels", "remove-email", &recipient_id])
            .await
            .status
            .success()
    );
    assert_eq!(
        text(&cli.run(&["deliveries", "list"]).await.stdout),
        "(none)\n"
    );

    // Offboarding: nothing yet, and an unknown tenant is refused by name.
    assert_eq!(
        text(&cli.run(&["offboarding", "status"]).await.stdout),
        "(none)\n"
    );
    let unknown = cli
        .run(&["offboarding", "start", "no-such-tenant", "--reason", "left"])
        .await;
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        text(&unknown.stderr).contains("no-such-tenant"),
        "{}",
        text(&unknown.stderr)
    );

    cli.env.teardown().await;
}
