//! The scanner under test: an in-process scanner on its own database and subjects, against
//! graph-sim over real HTTP, with gRPC clients and helpers to connect tenants and wait for scans.

#![allow(dead_code)]

pub mod directory;
pub mod fixing;

use std::collections::BTreeMap;
use std::time::Duration;

use graph_sim::{GraphSim, SimConfig};
use picket_platform::Application;
use picket_proto::tenants::v1 as tenants;
use picket_proto::tenants::v1::scan_service_client::ScanServiceClient;
use picket_proto::tenants::v1::tenant_service_client::TenantServiceClient;
use picket_testkit::{TestEnv, eventually};
use tokio_util::sync::CancellationToken;

pub struct Harness {
    pub env: TestEnv,
    pub sim: GraphSim,
    pub scanner: Application,
    pub client: TenantServiceClient<tonic::transport::Channel>,
    pub scans: ScanServiceClient<tonic::transport::Channel>,
}

/// A scanner against graph-sim's two tenants, with default timings.
pub async fn harness() -> Harness {
    harness_with(SimConfig::default(), "").await
}

/// A scanner against graph-sim; `extra` is added to the `[scanner]` section.
pub async fn harness_with(config: SimConfig, extra: &str) -> Harness {
    let env = TestEnv::new().await;
    let sim = GraphSim::start(
        SimConfig {
            tenants: 2,
            ..config
        },
        ([127, 0, 0, 1], 0).into(),
    )
    .await
    .expect("graph-sim starts");
    let toml = format!(
        "[scanner]\nlogin_base_url = \"{base}\"\ngraph_base_url = \"{base}\"\ndefender_base_url = \"{base}\"\nclient_id = \"{id}\"\nclient_secret = \"{secret}\"\n{callback}initial_backoff = \"50ms\"\n{workers}{extra}",
        base = sim.base_url(),
        id = sim.config().client_id,
        secret = sim.config().client_secret,
        callback = picket_testkit::consent_callback_settings(),
        workers = if extra.contains("scan_workers") {
            ""
        } else {
            "scan_workers = 2\n"
        },
    );
    let (platform, own) =
        env.settings::<scanner::Settings>(scanner::SERVICE, scanner::DEFAULTS, &toml);
    let scanner = scanner::build(platform, own, CancellationToken::new())
        .await
        .expect("scanner starts");
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", scanner.grpc_address()))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
    Harness {
        env,
        sim,
        scanner,
        client: TenantServiceClient::new(channel.clone()),
        scans: ScanServiceClient::new(channel),
    }
}

impl Harness {
    pub async fn onboard(
        &mut self,
        partner_id: &str,
        microsoft_tenant: &str,
    ) -> tenants::OnboardTenantResponse {
        self.onboard_on_plan(
            partner_id,
            microsoft_tenant,
            tenants::SubscriptionPlan::Standard,
        )
        .await
    }

    pub async fn onboard_on_plan(
        &mut self,
        partner_id: &str,
        microsoft_tenant: &str,
        plan: tenants::SubscriptionPlan,
    ) -> tenants::OnboardTenantResponse {
        let request = tenants::OnboardTenantRequest {
            partner_id: partner_id.into(),
            display_name: "Contoso Dental".into(),
            microsoft_tenant: microsoft_tenant.into(),
            plan: plan.into(),
            idempotency_key: String::new(),
        };
        self.client
            .onboard_tenant(
                self.env
                    .request(&self.env.partner_token(partner_id), request),
            )
            .await
            .expect("onboarded")
            .into_inner()
    }

    /// A Global Administrator of a simulated tenant.
    pub fn administrator(&self, microsoft_tenant: &str) -> String {
        self.sim
            .user_principal_name(microsoft_tenant, Some(graph_sim::GLOBAL_ADMINISTRATOR))
            .expect("the tenant has a Global Administrator")
    }

    /// `account` opens `url` in a browser and follows Microsoft's and Picket's redirects, signing
    /// in where asked; returns the page it ends on.
    pub async fn consent_as(&self, account: &str, url: &str) -> picket_testkit::Page {
        picket_testkit::Browser::signed_in_as(account)
            .open(url)
            .await
            .expect("the browser reaches a page")
    }

    /// Follows Microsoft's redirect to the consent callback, as the admin's browser would.
    pub async fn redirect(&self, query: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let address = self
            .scanner
            .http_address(scanner::CONSENT_SERVER)
            .expect("consent server");
        let mut stream = tokio::net::TcpStream::connect(address)
            .await
            .expect("callback answers");
        let request = format!(
            "GET /consent/callback?{query} HTTP/1.1\r\nHost: picket\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("read");
        let status = response
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or(0);
        (status, response)
    }

    pub async fn tenant(&mut self, partner_id: &str, tenant_id: &str) -> tenants::Tenant {
        let request = tenants::GetTenantRequest {
            tenant_id: tenant_id.into(),
        };
        self.client
            .get_tenant(
                self.env
                    .request(&self.env.partner_token(partner_id), request),
            )
            .await
            .expect("readable")
            .into_inner()
            .tenant
            .expect("tenant")
    }

    /// Onboards a simulated tenant and completes its consent; returns Picket's tenant id.
    pub async fn connect(
        &mut self,
        partner_id: &str,
        microsoft_tenant: &str,
        plan: tenants::SubscriptionPlan,
    ) -> String {
        let onboarded = self
            .onboard_on_plan(partner_id, microsoft_tenant, plan)
            .await;
        let page = self
            .consent_as(
                &self.administrator(microsoft_tenant),
                &onboarded.consent_url,
            )
            .await;
        assert!(page.connected(), "{}", page.body);
        let tenant_id = onboarded.tenant.expect("tenant").tenant_id;
        let tenant = self.tenant(partner_id, &tenant_id).await;
        assert_eq!(
            tenant.state(),
            tenants::TenantState::Active,
            "{}",
            tenant.state_reason
        );
        tenant.tenant_id
    }

    /// Waits until the tenant has no queued or running scan and returns its scans, newest first.
    pub async fn settled_scans(&self, partner_id: &str, tenant_id: &str) -> Vec<tenants::ScanRun> {
        let token = self.env.partner_token(partner_id);
        eventually(Duration::from_secs(60), "the scans to finish", || {
            let request = self.env.request(
                &token,
                tenants::ListScansRequest {
                    tenant_id: tenant_id.into(),
                    ..Default::default()
                },
            );
            let mut client = self.scans.clone();
            async move {
                let scans = client.list_scans(request).await.ok()?.into_inner().scans;
                let open = scans.iter().any(|scan| {
                    matches!(
                        scan.state(),
                        tenants::ScanState::Queued | tenants::ScanState::Running
                    )
                });
                (!scans.is_empty() && !open).then_some(scans)
            }
        })
        .await
    }

    /// Runs a full scan on demand and returns it once every scan of the tenant settled.
    pub async fn rescan(&self, partner_id: &str, tenant_id: &str) -> tenants::ScanRun {
        self.scan_now(partner_id, tenant_id, tenants::ScanKind::Full)
            .await
    }

    /// Runs a scan of `kind` on demand and returns it once every scan of the tenant settled.
    pub async fn scan_now(
        &self,
        partner_id: &str,
        tenant_id: &str,
        kind: tenants::ScanKind,
    ) -> tenants::ScanRun {
        let request = self.env.request(
            &self.env.partner_token(partner_id),
            tenants::StartScanRequest {
                tenant_id: tenant_id.to_owned(),
                kind: kind.into(),
            },
        );
        let started = self
            .scans
            .clone()
            .start_scan(request)
            .await
            .expect("scan starts")
            .into_inner()
            .scan
            .expect("scan");
        self.settled_scans(partner_id, tenant_id)
            .await
            .into_iter()
            .find(|scan| scan.scan_id == started.scan_id)
            .expect("the rescan")
    }

    /// The latest result of each check, by check id.
    pub async fn results(
        &mut self,
        partner_id: &str,
        tenant_id: &str,
    ) -> BTreeMap<String, tenants::CheckResult> {
        let request = self.env.request(
            &self.env.partner_token(partner_id),
            tenants::ListCheckResultsRequest {
                tenant_id: tenant_id.into(),
                ..Default::default()
            },
        );
        self.scans
            .list_check_results(request)
            .await
            .expect("results")
            .into_inner()
            .results
            .into_iter()
            .map(|result| (result.check_id.clone(), result))
            .collect()
    }

    pub async fn finish(self) {
        self.scanner.shutdown().await;
        self.env.teardown().await;
    }
}

/// The `Location` of a raw HTTP response.
pub fn location_of(response: &str) -> String {
    response
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("location")
                .then(|| value.trim().to_owned())
        })
        .expect("the response redirects")
}

pub fn state_of(url: &str) -> String {
    url.split("state=")
        .nth(1)
        .expect("the consent url carries a state")
        .to_owned()
}
