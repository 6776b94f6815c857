//! The production NATS configuration (`deploy/nats/nats-server.conf`) on a real nats-server:
//! services run under their own users (only the provisioning user creates the streams, and
//! services wait for them; the ledger publishes its events; the offboarding service, the notifier
//! and the prioritizer create and read their consumers), a service is
//! refused a subject it does not own (a service confirms only its own purges), and the
//! integrators' user reads (through consumers under its own names, never a service's) but cannot
//! publish.

use std::process::Stdio;
use std::time::Duration;

use futures::StreamExt;
use picket_proto::ledger::v1::PurchaseCreditsRequest;
use picket_proto::ledger::v1::credit_ledger_service_client::CreditLedgerServiceClient;
use picket_testkit::{TestEnv, eventually};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const CONFIG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../deploy/nats/nats-server.conf"
);
const USERS: [&str; 7] = [
    "scanner",
    "prioritizer",
    "notifier",
    "ledger",
    "offboarding",
    "provisioner",
    "integrator",
];

/// The nats-server binary, as `scripts/stack.sh` finds it: on PATH, else Debian's.
fn nats_server() -> std::path::PathBuf {
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([std::path::PathBuf::from("/usr/sbin")])
        .map(|directory| directory.join("nats-server"))
        .find(|candidate| candidate.is_file())
        .expect("nats-server on PATH or in /usr/sbin: run scripts/stack.sh up, which installs it")
}

fn password(user: &str) -> String {
    format!("{user}-test-secret")
}

/// A nats-server on a free loopback port with the production configuration.
struct Server {
    child: std::process::Child,
    port: u16,
    store: std::path::PathBuf,
}

impl Server {
    async fn start() -> Server {
        Server::start_with_users("").await
    }

    /// The production configuration with `users` (user blocks) added to the PICKET account.
    async fn start_with_users(users: &str) -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("a free port")
            .local_addr()
            .expect("address")
            .port();
        let store = std::env::temp_dir().join(format!("picket-nats-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&store).expect("a store directory");
        // The production file as it is, but for where JetStream keeps its data.
        let config = std::fs::read_to_string(CONFIG)
            .expect("the configuration")
            .replace(
                "/data/jetstream",
                &store.join("jetstream").to_string_lossy(),
            )
            .replacen(
                "      # Integrators read:",
                &format!("{users}      # Integrators read:"),
                1,
            );
        let config_file = store.join("nats-server.conf");
        std::fs::write(&config_file, config).expect("write the configuration");
        let mut command = std::process::Command::new(nats_server());
        command
            .arg("-c")
            .arg(&config_file)
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for user in USERS {
            command.env(format!("{}_PASSWORD", user.to_uppercase()), password(user));
        }
        command.env("INTEGRATOR_P1_PASSWORD", password("integrator-p1"));
        let child = command.spawn().expect("nats-server starts");
        eventually(Duration::from_secs(10), "nats-server to listen", || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(|_| ())
        })
        .await;
        Server { child, port, store }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// A connection as `user`, and the server errors it is told of.
    async fn connect(&self, user: &str) -> (async_nats::Client, mpsc::UnboundedReceiver<String>) {
        let (errors, told) = mpsc::unbounded_channel();
        let client =
            async_nats::ConnectOptions::with_user_and_password(user.into(), password(user))
                .event_callback(move |event| {
                    let errors = errors.clone();
                    async move {
                        if let async_nats::Event::ServerError(error) = event {
                            let _closed = errors.send(error.to_string());
                        }
                    }
                })
                .connect(self.url())
                .await
                .expect("connects");
        (client, told)
    }

    fn stop(self) {
        drop(self);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _gone = self.child.kill();
        let _gone = self.child.wait();
        let _gone = std::fs::remove_dir_all(&self.store);
    }
}

/// Publishes `payload` on `subject` as `client` and expects the server to refuse it by name.
async fn assert_refused(
    client: &async_nats::Client,
    errors: &mut mpsc::UnboundedReceiver<String>,
    subject: &str,
    payload: &'static str,
) {
    client
        .publish(subject.to_owned(), payload.into())
        .await
        .expect("sent");
    client.flush().await.expect("flush");
    let refused = tokio::time::timeout(Duration::from_secs(5), errors.recv())
        .await
        .expect("refused in time")
        .expect("an error");
    assert!(
        refused.to_lowercase().contains("permissions violation") && refused.contains(subject),
        "{subject}: {refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_service_publishes_only_its_own_subjects_and_integrators_only_read() {
    let server = Server::start().await;
    let env = TestEnv::new().await;
    // Services run as their own users and leave the streams to the provisioning identity.
    let as_user = |user: &str| {
        format!(
            "[nats]\nurl = \"{}\"\nnamespace = \"picket\"\nuser = \"{user}\"\npassword = \"{}\"\n\
             provision_streams = false\n",
            server.url(),
            password(user)
        )
    };
    // The ledger, started before the streams exist, waits for them.
    let (platform, own) = env.settings(ledger::SERVICE, ledger::DEFAULTS, &as_user("ledger"));
    let mut starting = tokio::spawn(ledger::build(platform, own, CancellationToken::new()));
    assert!(
        tokio::time::timeout(Duration::from_secs(2), &mut starting)
            .await
            .is_err(),
        "the ledger does not start before the streams are provisioned"
    );
    // A service user may not make them: creating, updating or deleting a stream is refused.
    let (as_ledger, mut ledger_errors) = server.connect("ledger").await;
    for request in [
        "$JS.API.STREAM.CREATE.PICKET_LEDGER",
        "$JS.API.STREAM.UPDATE.PICKET_LEDGER",
        "$JS.API.STREAM.DELETE.PICKET_LEDGER",
    ] {
        assert_refused(&as_ledger, &mut ledger_errors, request, "{}").await;
    }
    // The provisioning identity makes them, as `<service> provision-streams` does in its Job.
    let (provisioning, _) = env.settings::<ledger::Settings>(
        ledger::SERVICE,
        ledger::DEFAULTS,
        &as_user("provisioner"),
    );
    picket_platform::nats::streams::provision_as("provisioner", &provisioning.nats)
        .await
        .expect("the provisioning user creates the streams");
    let ledger = tokio::time::timeout(Duration::from_secs(10), starting)
        .await
        .expect("the ledger starts once the streams exist")
        .expect("joined")
        .expect("the ledger starts as user ledger");
    // Services that consume start too: their users may create and read consumers on the streams
    // they read.
    let (platform, own) = env.settings(
        offboarding::SERVICE,
        offboarding::DEFAULTS,
        &as_user("offboarding"),
    );
    let offboarding = offboarding::build(platform, own, CancellationToken::new())
        .await
        .expect("the offboarding service starts as user offboarding");
    let notifier = picket_e2e::start_notifier(&env, &as_user("notifier")).await;
    let prioritizer = picket_e2e::start_prioritizer(&env, &as_user("prioritizer")).await;
    let (integrator, mut integrator_errors) = server.connect("integrator").await;
    let mut events = integrator
        .subscribe("picket.>")
        .await
        .expect("integrators subscribe");
    integrator.flush().await.expect("flush");
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", ledger.grpc_address()))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
    CreditLedgerServiceClient::new(channel)
        .purchase_credits(env.request(
            &env.operator_token(),
            PurchaseCreditsRequest {
                partner_id: "p1".into(),
                idempotency_key: "order-1".into(),
                minutes: 600,
                ..Default::default()
            },
        ))
        .await
        .expect("bought");
    let message = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("the event in time")
        .expect("a message");
    assert!(
        message
            .subject
            .starts_with("picket.ledger.v1.credits_purchased.p1"),
        "{}",
        message.subject
    );

    // The ledger's user may not publish an incident: the server refuses it and nobody gets it.
    assert_refused(
        &as_ledger,
        &mut ledger_errors,
        "picket.incidents.v1.incident_opened.p1.t1",
        "forged",
    )
    .await;
    // Each service confirms only its own purges: the scanner may publish on its confirmation
    // subject, never on the notifier's, so it cannot confirm the notifier's purge.
    let (as_scanner, mut scanner_errors) = server.connect("scanner").await;
    assert_refused(
        &as_scanner,
        &mut scanner_errors,
        "picket.offboarding.v1.purge_completed_by_notifier.p1.t1",
        "forged",
    )
    .await;
    as_scanner
        .publish(
            "picket.offboarding.v1.purge_completed_by_scanner.p1.t1",
            "its own".into(),
        )
        .await
        .expect("sent");
    as_scanner.flush().await.expect("flush");
    let own = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .expect("the scanner confirms its own purges")
        .expect("a message");
    assert_eq!(
        own.subject.as_str(),
        "picket.offboarding.v1.purge_completed_by_scanner.p1.t1"
    );
    // Consumers are allowed by exact name: the scanner may not pull from the prioritizer's.
    assert_refused(
        &as_scanner,
        &mut scanner_errors,
        "$JS.API.CONSUMER.MSG.NEXT.PICKET_FIXES.prioritizer-fixes",
        "{\"batch\":1}",
    )
    .await;
    // Integrators read, and publish nothing.
    assert_refused(
        &integrator,
        &mut integrator_errors,
        "picket.ledger.v1.credits_purchased.p1._",
        "forged",
    )
    .await;
    assert!(
        tokio::time::timeout(Duration::from_millis(500), events.next())
            .await
            .is_err(),
        "no forged event reached the integrator"
    );
    // Integrators read the streams through consumers under their own fixed names
    // (integrator-1 to integrator-3): created, pulled from and acked.
    let own = async_nats::jetstream::new(integrator.clone())
        .create_consumer_on_stream(
            async_nats::jetstream::consumer::pull::Config {
                durable_name: Some("integrator-1".into()),
                filter_subject: "picket.ledger.v1.>".into(),
                ack_policy: async_nats::jetstream::consumer::AckPolicy::Explicit,
                ..Default::default()
            },
            "PICKET_LEDGER",
        )
        .await
        .expect("the integrator creates a consumer under its own name");
    let mut pulled = own
        .batch()
        .max_messages(1)
        .expires(Duration::from_secs(5))
        .messages()
        .await
        .expect("the integrator pulls from its own consumer");
    let purchase = pulled
        .next()
        .await
        .expect("the purchase in time")
        .expect("a message");
    assert!(
        purchase
            .subject
            .starts_with("picket.ledger.v1.credits_purchased.p1"),
        "{}",
        purchase.subject
    );
    purchase
        .double_ack()
        .await
        .expect("the integrator acks on its own consumer");
    // But never from a service's consumer: pulling from the notifier's would take its events away.
    let (notifier_incidents, _, _) = notifier::routing::CONSUMERS
        .into_iter()
        .find(|(_, area, _)| *area == picket_proto::Area::Incidents)
        .expect("the notifier consumes incidents");
    assert_refused(
        &integrator,
        &mut integrator_errors,
        &format!("$JS.API.CONSUMER.MSG.NEXT.PICKET_INCIDENTS.{notifier_incidents}"),
        r#"{"batch":1}"#,
    )
    .await;
    // A service with a wrong password is not let in.
    let wrong =
        async_nats::ConnectOptions::with_user_and_password("scanner".into(), "guess".into())
            .connect(server.url())
            .await;
    assert!(wrong.is_err(), "a wrong password is refused");

    ledger.shutdown().await;
    offboarding.shutdown().await;
    notifier.shutdown().await;
    prioritizer.shutdown().await;
    env.teardown().await;
    server.stop();
}

/// The user `scripts/nats-integrator-user.sh` prints for partner `p1`.
fn partner_integrator_user() -> String {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scripts/nats-integrator-user.sh"
    );
    let output = std::process::Command::new("bash")
        .args([script, "p1"])
        .output()
        .expect("the script runs");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).expect("text")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partners_integrator_reads_that_partners_events_only() {
    let server = Server::start_with_users(&partner_integrator_user()).await;
    // The stream, as the provisioning identity makes it, and one event of each of two partners.
    let (as_provisioner, _) = server.connect("provisioner").await;
    async_nats::jetstream::new(as_provisioner)
        .create_stream(async_nats::jetstream::stream::Config {
            name: "PICKET_INCIDENTS".into(),
            subjects: vec!["picket.incidents.v1.>".into()],
            ..Default::default()
        })
        .await
        .expect("the stream");
    let (as_prioritizer, _) = server.connect("prioritizer").await;
    let jetstream = async_nats::jetstream::new(as_prioritizer);
    let (integrator, mut errors) = server.connect("integrator-p1").await;
    let mut live = integrator
        .subscribe("picket.*.v1.*.p1.>")
        .await
        .expect("its partner's subjects");
    integrator.flush().await.expect("flush");
    for partner in ["p2", "p1"] {
        jetstream
            .publish(
                format!("picket.incidents.v1.incident_opened.{partner}.t1"),
                partner.into(),
            )
            .await
            .expect("published")
            .await
            .expect("stored");
    }
    let first = tokio::time::timeout(Duration::from_secs(5), live.next())
        .await
        .expect("p1's event arrives")
        .expect("a message");
    assert_eq!(
        first.subject.as_str(),
        "picket.incidents.v1.incident_opened.p1.t1"
    );

    // Every partner's subjects: refused.
    let _everything = integrator.subscribe("picket.>").await.expect("sent");
    integrator.flush().await.expect("flush");
    let refused = tokio::time::timeout(Duration::from_secs(5), errors.recv())
        .await
        .expect("refused in time")
        .expect("an error");
    assert!(
        refused.to_lowercase().contains("permissions violation") && refused.contains("picket.>"),
        "{refused}"
    );

    // A durable consumer under its own name, filtered on its partner: created and read.
    let streams = async_nats::jetstream::new(integrator.clone());
    let own = streams
        .create_consumer_on_stream(
            async_nats::jetstream::consumer::pull::Config {
                name: Some("p1-1".into()),
                durable_name: Some("p1-1".into()),
                filter_subject: "picket.incidents.v1.*.p1.>".into(),
                ..Default::default()
            },
            "PICKET_INCIDENTS",
        )
        .await
        .expect("a consumer on its partner's subjects");
    let mut pulled = own
        .batch()
        .max_messages(5)
        .expires(Duration::from_secs(2))
        .messages()
        .await
        .expect("pull");
    let mut subjects = Vec::new();
    while let Some(message) = pulled.next().await {
        let message = message.expect("a message");
        subjects.push(message.subject.to_string());
        message.ack().await.expect("acked");
    }
    assert_eq!(subjects, ["picket.incidents.v1.incident_opened.p1.t1"]);

    // A consumer with no filter, or another partner's: refused by the server, by name.
    for (name, filter) in [("p1-2", ""), ("p1-3", "picket.incidents.v1.*.p2.>")] {
        let created = tokio::time::timeout(
            Duration::from_secs(2),
            streams.create_consumer_on_stream(
                async_nats::jetstream::consumer::pull::Config {
                    name: Some(name.into()),
                    durable_name: Some(name.into()),
                    filter_subject: filter.into(),
                    ..Default::default()
                },
                "PICKET_INCIDENTS",
            ),
        )
        .await;
        assert!(
            !matches!(created, Ok(Ok(_))),
            "{name} with filter {filter:?} was created"
        );
        let refused = tokio::time::timeout(Duration::from_secs(5), errors.recv())
            .await
            .expect("refused in time")
            .expect("an error");
        assert!(
            refused.to_lowercase().contains("permissions violation") && refused.contains(name),
            "{name}: {refused}"
        );
    }
    server.stop();
}
