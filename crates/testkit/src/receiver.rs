//! A real webhook endpoint on loopback that records every request, can be told to fail or to be
//! slow, and verifies Standard Webhooks signatures.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

#[derive(Debug, Clone)]
pub struct ReceivedWebhook {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: Bytes,
    pub received_at: Instant,
    /// The status the receiver answered with.
    pub answered: u16,
}

impl ReceivedWebhook {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("webhook body is JSON")
    }
}

/// One scripted answer: a status and, when set, a `Retry-After` in seconds.
type Scripted = (u16, Option<u32>);

#[derive(Default)]
struct Behaviour {
    /// Answers to give before falling back to 200.
    scripted: VecDeque<Scripted>,
    delay: Duration,
}

#[derive(Clone, Default)]
struct Shared {
    received: Arc<Mutex<Vec<ReceivedWebhook>>>,
    behaviour: Arc<Mutex<Behaviour>>,
}

pub struct WebhookReceiver {
    address: SocketAddr,
    shared: Shared,
    server: tokio::task::JoinHandle<()>,
}

fn header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

async fn receive(
    State(shared): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let ((status, retry_after), delay) = {
        let mut behaviour = shared.behaviour.lock().expect("receiver lock");
        (
            behaviour.scripted.pop_front().unwrap_or((200, None)),
            behaviour.delay,
        )
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    shared
        .received
        .lock()
        .expect("receiver lock")
        .push(ReceivedWebhook {
            id: header(&headers, "webhook-id"),
            timestamp: header(&headers, "webhook-timestamp"),
            signature: header(&headers, "webhook-signature"),
            body,
            received_at: Instant::now(),
            answered: status,
        });
    let mut response =
        axum::response::Response::new(axum::body::Body::from(format!("answered {status}")));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    if let Some(seconds) = retry_after {
        response
            .headers_mut()
            .insert(axum::http::header::RETRY_AFTER, seconds.into());
    }
    response
}

impl WebhookReceiver {
    pub async fn start() -> WebhookReceiver {
        let shared = Shared::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let address = listener.local_addr().expect("receiver address");
        let router = Router::new()
            .route("/hook", post(receive))
            .with_state(shared.clone());
        let server = tokio::spawn(async move {
            let _ignored = axum::serve(listener, router).await;
        });
        WebhookReceiver {
            address,
            shared,
            server,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.address)
    }

    /// Answer the next requests with these statuses, then 200 again.
    pub fn answer_next_with(&self, statuses: &[u16]) {
        self.shared
            .behaviour
            .lock()
            .expect("receiver lock")
            .scripted
            .extend(statuses.iter().map(|status| (*status, None)));
    }

    /// Answer the next request with `status` and a `Retry-After` of `seconds`.
    pub fn answer_next_with_retry_after(&self, status: u16, seconds: u32) {
        self.shared
            .behaviour
            .lock()
            .expect("receiver lock")
            .scripted
            .push_back((status, Some(seconds)));
    }

    /// Wait this long before answering each request.
    pub fn set_delay(&self, delay: Duration) {
        self.shared.behaviour.lock().expect("receiver lock").delay = delay;
    }

    /// Requests received so far, without copying them.
    pub fn received_count(&self) -> usize {
        self.shared.received.lock().expect("receiver lock").len()
    }

    pub fn received(&self) -> Vec<ReceivedWebhook> {
        self.shared.received.lock().expect("receiver lock").clone()
    }

    /// Ids of the webhooks answered with success, each once.
    pub fn delivered_ids(&self) -> std::collections::BTreeSet<String> {
        self.received()
            .into_iter()
            .filter(|webhook| (200..300).contains(&webhook.answered))
            .map(|webhook| webhook.id)
            .collect()
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Whether the Standard Webhooks reference library (`standardwebhooks` from PyPI, installed by
/// `scripts/stack.sh up`) accepts a received webhook for `secret`; `Err` says why not.
pub fn reference_library_accepts(secret: &str, webhook: &ReceivedWebhook) -> Result<(), String> {
    use std::io::Write;
    const VERIFY: &str = "import json, sys\n\
from standardwebhooks.webhooks import Webhook\n\
message = json.load(sys.stdin)\n\
Webhook(message['secret']).verify(message['body'], message['headers'])\n";
    let input = serde_json::json!({
        "secret": secret,
        "body": String::from_utf8_lossy(&webhook.body),
        "headers": {
            "webhook-id": webhook.id,
            "webhook-timestamp": webhook.timestamp,
            "webhook-signature": webhook.signature,
        },
    });
    let mut child = std::process::Command::new(crate::test_python())
        .args(["-c", VERIFY])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|error| format!("cannot run the reference verifier: {error}"))?;
    child
        .stdin
        .take()
        .ok_or("no stdin")?
        .write_all(input.to_string().as_bytes())
        .map_err(|error| error.to_string())?;
    let output = child
        .wait_with_output()
        .map_err(|error| error.to_string())?;
    if output.status.success() {
        return Ok(());
    }
    Err(String::from_utf8_lossy(&output.stderr).into_owned())
}

/// Checks a webhook against a `whsec_` secret as the Standard Webhooks spec says: some `v1,`
/// signature must equal base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")).
pub fn verify_standard_webhook(secret: &str, webhook: &ReceivedWebhook) -> bool {
    let Some(encoded_key) = secret.strip_prefix("whsec_") else {
        return false;
    };
    let Ok(key) = STANDARD.decode(encoded_key) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&key) else {
        return false;
    };
    mac.update(format!("{}.{}.", webhook.id, webhook.timestamp).as_bytes());
    mac.update(&webhook.body);
    let expected = STANDARD.encode(mac.finalize().into_bytes());
    webhook
        .signature
        .split(' ')
        .filter_map(|candidate| candidate.strip_prefix("v1,"))
        .any(|signature| signature == expected)
}
