//! Starts Picket's services in-process against a [`TestEnv`], as the end-to-end tests and the
//! benchmark need them.

pub mod raw;

use graph_sim::GraphSim;
use picket_platform::Application;
use picket_platform::time::to_timestamp;
use picket_proto::common::v1::{FindingKind, Severity};
use picket_proto::findings::v1::FindingObserved;
use picket_proto::notifications::v1::channel_service_client::ChannelServiceClient;
use picket_proto::notifications::v1::delivery_service_client::DeliveryServiceClient;
use picket_testkit::TestEnv;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// The key-encryption key that seals webhook secrets in the tests, and only there.
macro_rules! notifier_test_secret_keys {
    () => {
        "test-1:yW0Oj8Wmg48xwAxBhsKPe4CQmFx4gsxChPDh1a/6OWw="
    };
}
pub const NOTIFIER_TEST_SECRET_KEYS: &str = notifier_test_secret_keys!();

/// Notifier settings for tests: loopback receivers allowed, fast retries, short claims, the tests'
/// key-encryption key for webhook secrets and their consent-link keys.
pub const NOTIFIER_TEST_TOML: &str = concat!(
    "[notifier]\nsecret_keys = \"",
    notifier_test_secret_keys!(),
    "\"\nconsent_link_keys = \"",
    picket_testkit::consent_link_test_keys!(),
    r#""
allowed_networks = ["127.0.0.0/8"]
allow_insecure_http = true
retry_schedule = ["200ms", "400ms", "800ms"]
retry_jitter = 0.0
webhook_timeout = "2s"
attempt_lease = "3s"
delivery_poll_interval = "100ms"
"#
);

pub async fn start_prioritizer(env: &TestEnv, extra_toml: &str) -> Application {
    let (platform, own) = env.settings(prioritizer::SERVICE, prioritizer::DEFAULTS, extra_toml);
    prioritizer::build(platform, own, CancellationToken::new())
        .await
        .expect("prioritizer starts")
}

pub async fn start_notifier(env: &TestEnv, extra_toml: &str) -> Application {
    let (platform, own) = env.settings_layered(
        notifier::SERVICE,
        notifier::DEFAULTS,
        &[NOTIFIER_TEST_TOML, extra_toml],
    );
    notifier::build(platform, own, CancellationToken::new())
        .await
        .expect("notifier starts")
}

pub async fn start_ledger(env: &TestEnv, extra_toml: &str) -> Application {
    let (platform, own) = env.settings(ledger::SERVICE, ledger::DEFAULTS, extra_toml);
    ledger::build(platform, own, CancellationToken::new())
        .await
        .expect("ledger starts")
}

pub async fn start_offboarding(env: &TestEnv, extra_toml: &str) -> Application {
    let (platform, own) = env.settings(offboarding::SERVICE, offboarding::DEFAULTS, extra_toml);
    offboarding::build(platform, own, CancellationToken::new())
        .await
        .expect("offboarding starts")
}

/// Every service against `sim`, by the protobuf package of its contracts; `offboarding_toml` is
/// the offboarding service's own settings.
pub async fn start_every_service(
    env: &TestEnv,
    sim: &GraphSim,
    offboarding_toml: &str,
) -> Vec<(&'static str, Application)> {
    vec![
        ("picket.tenants.v1", start_scanner(env, sim, "").await),
        ("picket.incidents.v1", start_prioritizer(env, "").await),
        ("picket.notifications.v1", start_notifier(env, "").await),
        ("picket.ledger.v1", start_ledger(env, "").await),
        (
            "picket.offboarding.v1",
            start_offboarding(env, offboarding_toml).await,
        ),
    ]
}

/// `[auth]` settings that verify tokens against graph-sim playing the operator's identity
/// provider (its tenant `tenant`), for Picket's API `api://picket`, with no shared key.
pub fn identity_provider_toml(sim: &GraphSim, tenant: &str) -> String {
    format!(
        "[auth]\njwt_secret = \"\"\njwks_uri = \"{}\"\nissuer = \"{}\"\naudience = \"api://picket\"\n",
        sim.jwks_uri(),
        sim.issuer(tenant)
    )
}

/// The scanner against a Graph simulator (login, Graph and Defender alike), with its operator
/// app's credentials.
pub async fn start_scanner(env: &TestEnv, sim: &GraphSim, extra_toml: &str) -> Application {
    let graph_base_url = sim.base_url();
    let config = sim.config();
    let toml = format!(
        "[scanner]\nlogin_base_url = \"{graph_base_url}\"\ngraph_base_url = \"{graph_base_url}\"\ndefender_base_url = \"{graph_base_url}\"\nclient_id = \"{}\"\nclient_secret = \"{}\"\n{}{extra_toml}",
        config.client_id,
        config.client_secret,
        picket_testkit::consent_callback_settings()
    );
    let (platform, own) = env.settings(scanner::SERVICE, scanner::DEFAULTS, &toml);
    scanner::build(platform, own, CancellationToken::new())
        .await
        .expect("scanner starts")
}

/// An administrator of `microsoft_tenant` consents at `consent_url` and signs in, in a browser;
/// returns the page Picket's consent callback ends on.
pub async fn consent_as_administrator(
    sim: &GraphSim,
    microsoft_tenant: &str,
    consent_url: &str,
) -> anyhow::Result<picket_testkit::Page> {
    let administrator = sim
        .user_principal_name(microsoft_tenant, Some(graph_sim::GLOBAL_ADMINISTRATOR))
        .ok_or_else(|| anyhow::anyhow!("{microsoft_tenant} has no Global Administrator"))?;
    picket_testkit::Browser::signed_in_as(&administrator)
        .open(consent_url)
        .await
}

/// A minimal HTTP/1.1 GET on the admin port, to keep an HTTP client out of this crate.
pub async fn admin_get(application: &Application, path: &str) -> (u16, String) {
    let address = application.admin_address();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("admin port answers");
    let request = format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("write request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("read response");
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// A gRPC channel to a running service.
pub async fn channel(application: &Application) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{}", application.grpc_address()))
        .expect("valid endpoint")
        .connect()
        .await
        .expect("connect to the service")
}

/// A suspicious sign-in: a monitoring finding, which always opens an incident.
pub fn suspicious_sign_in(partner_id: &str, tenant_id: &str, fingerprint: &str) -> FindingObserved {
    FindingObserved {
        partner_id: partner_id.into(),
        tenant_id: tenant_id.into(),
        fingerprint: fingerprint.into(),
        check_id: "MS.AAD.RISKY_SIGNIN".into(),
        kind: FindingKind::Monitoring.into(),
        severity: Severity::High.into(),
        title: "Sign-in from an impossible location".into(),
        description: "alice@contoso.example signed in from two countries within 5 minutes".into(),
        target: "alice@contoso.example".into(),
        theme: "identity".into(),
        recommended_fix: "Revoke the user's sessions and reset the password".into(),
        observed_at: Some(to_timestamp(chrono::Utc::now())),
        scan_id: "scan-1".into(),
        evidence: [("ip".to_owned(), "203.0.113.7".to_owned())].into(),
        ..Default::default()
    }
}

/// A notifier started for a test, with clients of its two APIs.
pub struct NotifierClient {
    pub env: TestEnv,
    pub application: Application,
    pub channels: ChannelServiceClient<Channel>,
    pub deliveries: DeliveryServiceClient<Channel>,
}

impl NotifierClient {
    /// A notifier on a new [`TestEnv`] with `extra_toml` over the test settings.
    pub async fn start(extra_toml: &str) -> NotifierClient {
        let env = TestEnv::new().await;
        let application = start_notifier(&env, extra_toml).await;
        let grpc = channel(&application).await;
        NotifierClient {
            env,
            application,
            channels: ChannelServiceClient::new(grpc.clone()),
            deliveries: DeliveryServiceClient::new(grpc),
        }
    }

    /// `message` as a call by staff of `partner_id`.
    pub fn request<T>(&self, partner_id: &str, message: T) -> tonic::Request<T> {
        self.env
            .request(&self.env.partner_token(partner_id), message)
    }
}
