//! The prioritizer binary as a platform team runs it: invalid settings exit 64 naming the key;
//! SIGTERM drains and exits 0; `provision-streams` makes the streams with nothing but NATS settings
//! (what the provisioning Job runs) and an unknown argument exits 64 with the usage.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use picket_testkit::TestEnv;

const BINARY: &str = env!("CARGO_BIN_EXE_prioritizer");

#[test]
fn invalid_settings_exit_64_naming_the_key() {
    let output = Command::new(BINARY)
        .env("PICKET__AUTH__JWT_SECRET", "too-short")
        .output()
        .expect("the binary runs");
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("auth.jwt_secret"), "stderr: {stderr}");
}

#[test]
fn unparsable_environment_value_exits_64_naming_the_key() {
    let output = Command::new(BINARY)
        .env(
            "PICKET__AUTH__JWT_SECRET",
            "0123456789abcdef0123456789abcdef",
        )
        .env("PICKET__NATS__MAX_DELIVER", "many")
        .output()
        .expect("the binary runs");
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("nats.max_deliver"), "stderr: {stderr}");
}

#[test]
fn an_unknown_argument_exits_64_with_the_usage() {
    let output = Command::new(BINARY)
        .arg("--provision")
        .output()
        .expect("the binary runs");
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--provision") && stderr.contains("provision-streams"),
        "stderr: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provision_streams_makes_every_stream_and_exits_zero() {
    let env = TestEnv::new().await;
    // No database, no signing key: the Job has NATS settings only.
    let output = Command::new(BINARY)
        .arg("provision-streams")
        .env("PICKET__NATS__NAMESPACE", &env.namespace)
        .env("PICKET__NATS__STREAM_STORAGE", "memory")
        .env("PICKET__NATS__STREAM_MAX_AGE", "1h")
        .output()
        .expect("the binary runs");
    assert!(output.status.success(), "{output:?}");
    for area in picket_proto::Area::ALL {
        let name = env.subjects.stream_name(area);
        let mut stream = env.jetstream.get_stream(&name).await.expect("provisioned");
        let info = stream.info().await.expect("info");
        assert_eq!(info.config.max_age, Duration::from_secs(3600), "{name}");
    }
    env.jetstream
        .get_stream(env.subjects.dead_letter_stream())
        .await
        .expect("the dead-letter stream");
    // Run again with other settings, it updates them in place.
    let again = Command::new(BINARY)
        .arg("provision-streams")
        .env("PICKET__NATS__NAMESPACE", &env.namespace)
        .env("PICKET__NATS__STREAM_STORAGE", "memory")
        .env("PICKET__NATS__STREAM_MAX_AGE", "2h")
        .output()
        .expect("the binary runs");
    assert!(again.status.success(), "{again:?}");
    let name = env.subjects.stream_name(picket_proto::Area::Findings);
    let mut stream = env.jetstream.get_stream(&name).await.expect("provisioned");
    let info = stream.info().await.expect("info");
    assert_eq!(info.config.max_age, Duration::from_secs(7200));
    // A NATS that does not answer is a failure, not a hang: the Job retries.
    let unreachable = Command::new(BINARY)
        .arg("provision-streams")
        .env("PICKET__NATS__URL", "nats://127.0.0.1:1")
        .output()
        .expect("the binary runs");
    assert_eq!(unreachable.status.code(), Some(1), "{unreachable:?}");
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_exits_zero() {
    let env = TestEnv::new().await;
    let mut child = Command::new(BINARY)
        .env(
            "PICKET__AUTH__JWT_SECRET",
            "0123456789abcdef0123456789abcdef",
        )
        .env("PICKET__DATABASE__URL", &env.database_url)
        .env("PICKET__NATS__NAMESPACE", &env.namespace)
        .env("PICKET__NATS__STREAM_STORAGE", "memory")
        .env("PICKET__GRPC__LISTEN", "127.0.0.1:0")
        .env("PICKET__ADMIN__LISTEN", "127.0.0.1:0")
        .env("PICKET__TELEMETRY__LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let stdout = child.stdout.take().expect("stdout is piped");
    let ready_line = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .take_while(|_| Instant::now() < deadline)
            .find(|line| line.contains("service ready"))
    })
    .await
    .expect("reader joins")
    .expect("the service reports ready");
    let ready: serde_json::Value = serde_json::from_str(&ready_line).expect("json log line");
    assert!(
        ready["grpc"]
            .as_str()
            .is_some_and(|address| address.starts_with("127.0.0.1:"))
    );

    let signalled = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .expect("kill runs");
    assert!(signalled.success());
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("joins")
        .expect("waits");
    assert_eq!(status.code(), Some(0), "a drained shutdown exits 0");
    env.teardown().await;
}
