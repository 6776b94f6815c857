//! Test helpers shared by every crate's tests and the benchmark: [`TestEnv`] gives each test its own
//! PostgreSQL database and NATS subject namespace on the real servers, settings pointing at them,
//! and bearer tokens; [`WebhookReceiver`] is a real HTTP endpoint that records what it receives;
//! [`SmtpServer`] is a real SMTP server that stores what it receives; [`Browser`] follows the
//! consent flow's redirects as an administrator's browser would.

mod browser;
mod env;
mod receiver;
mod smtp;

pub use browser::{Browser, Page, consent_callback_settings};
pub use env::{TestEnv, init_test_tracing, service_settings};
pub use receiver::{
    ReceivedWebhook, WebhookReceiver, reference_library_accepts, verify_standard_webhook,
};
pub use smtp::{ReceivedMail, SmtpServer};

/// Why a dead letter was given up on (its reason header), or empty.
pub fn dead_letter_reason(message: &async_nats::Message) -> String {
    message
        .headers
        .as_ref()
        .and_then(|headers| headers.get(picket_platform::nats::consumer::DLQ_REASON))
        .map(|value| value.as_str().to_owned())
        .unwrap_or_default()
}

/// The Python with the tests' tools (aiosmtpd, standardwebhooks): `PICKET_TEST_PYTHON`, set by
/// `scripts/stack.sh run`, else the stack's virtualenv under the repository's `.dev`.
pub fn test_python() -> std::path::PathBuf {
    let python = std::env::var_os("PICKET_TEST_PYTHON").map_or_else(
        || {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../.dev/test-python/bin/python")
        },
        std::path::PathBuf::from,
    );
    assert!(
        python.exists(),
        "{} not found: run `scripts/stack.sh up` once, which installs the tests' Python tools",
        python.display()
    );
    python
}

/// Polls `check` every 50 ms until it returns `Some`, failing after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: std::time::Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
