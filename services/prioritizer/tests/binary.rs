//! The prioritizer binary as a platform team runs it: invalid settings exit 64 naming the key;
//! SIGTERM drains and exits 0.

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
