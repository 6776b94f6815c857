//! One authorization matrix, tested whole: every rpc of every service, read from the contract
//! descriptors (an rpc without a row fails the test), called by every kind of caller about the
//! data of partner `p1`: no token, an expired token, the operator, `p1`'s staff, another partner's
//! staff, a customer contact with and without a grant for the tenant, and an investigator with
//! and without the engagement assigned. Requests are built from the descriptors and filled with
//! the ids of real objects of `p1`, so a refusal is the authorization's and not a missing object.
//!
//! A caller is refused when the answer is PERMISSION_DENIED or NOT_FOUND (another partner's object
//! is as good as missing); any other answer (OK, or a refusal of the request itself such as
//! FAILED_PRECONDITION) means the call went through the authorization.

use std::collections::HashMap;
use std::time::Duration;

use graph_sim::{GraphSim, SimConfig};
use picket_e2e::raw::{call, contracts, length_delimited, varint};
use picket_e2e::{channel, consent_as_administrator, start_every_service, suspicious_sign_in};
use picket_platform::Application;
use picket_platform::auth::{Principal, Role};
use picket_proto::incidents::v1 as incidents;
use picket_proto::ledger::v1 as ledger;
use picket_proto::notifications::v1 as notifications;
use picket_proto::offboarding::v1 as offboarding;
use picket_proto::tenants::v1 as tenants;
use picket_testkit::{TestEnv, WebhookReceiver, eventually};
use prost_types::field_descriptor_proto::{Label, Type};

const PARTNER: &str = "p1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Caller {
    Operator,
    Partner,
    OtherPartner,
    GrantedCustomer,
    UngrantedCustomer,
    AssignedInvestigator,
    OtherInvestigator,
}

use Caller::*;

const CALLERS: [Caller; 7] = [
    Operator,
    Partner,
    OtherPartner,
    GrantedCustomer,
    UngrantedCustomer,
    AssignedInvestigator,
    OtherInvestigator,
];

/// The operator only.
const OPERATOR: &[Caller] = &[Operator];
/// The partner's own staff and the operator.
const STAFF: &[Caller] = &[Operator, Partner];
/// Staff, and a customer contact while its grant for the tenant lasts.
const STAFF_AND_GRANTED: &[Caller] = &[Operator, Partner, GrantedCustomer];
/// Whoever the partner's staff are, and an investigator on an engagement assigned to them.
const STAFF_AND_ASSIGNED: &[Caller] = &[Operator, Partner, AssignedInvestigator];
/// Staff, a customer contact while its grant lasts, and the investigator of an open engagement on
/// the tenant: who reads its incidents.
const INCIDENT_READERS: &[Caller] = &[Operator, Partner, GrantedCustomer, AssignedInvestigator];
/// The operator and the investigator the engagement is assigned to.
const ASSIGNED: &[Caller] = &[Operator, AssignedInvestigator];
/// Every authenticated caller: the check catalogue and the like, which hold no partner's data.
const ANYONE: &[Caller] = &CALLERS;

/// Whom each rpc lets through, by its path without the leading slash.
const MATRIX: &[(&str, &[Caller])] = &[
    // Tenants and scans (scanner).
    ("picket.tenants.v1.TenantService/OnboardTenant", STAFF),
    ("picket.tenants.v1.TenantService/GetTenant", STAFF),
    ("picket.tenants.v1.TenantService/ListTenants", STAFF),
    ("picket.tenants.v1.TenantService/UpdateTenant", STAFF),
    ("picket.tenants.v1.TenantService/ForwardConsent", STAFF),
    ("picket.tenants.v1.TenantService/CompleteConsent", STAFF),
    ("picket.tenants.v1.TenantService/RequestConsent", STAFF),
    ("picket.tenants.v1.ScanService/StartScan", STAFF),
    ("picket.tenants.v1.ScanService/GetScan", STAFF),
    ("picket.tenants.v1.ScanService/ListScans", STAFF),
    ("picket.tenants.v1.ScanService/CancelScan", STAFF),
    ("picket.tenants.v1.ScanService/ListChecks", ANYONE),
    ("picket.tenants.v1.ScanService/GetCheck", ANYONE),
    ("picket.tenants.v1.ScanService/ListThemes", ANYONE),
    ("picket.tenants.v1.ScanService/ListCheckResults", STAFF),
    // Incidents, policy and authority (prioritizer).
    (
        "picket.incidents.v1.IncidentService/GetIncident",
        INCIDENT_READERS,
    ),
    (
        "picket.incidents.v1.IncidentService/ListIncidents",
        INCIDENT_READERS,
    ),
    (
        "picket.incidents.v1.IncidentService/ApproveIncident",
        STAFF_AND_GRANTED,
    ),
    (
        "picket.incidents.v1.IncidentService/MuteIncident",
        STAFF_AND_GRANTED,
    ),
    (
        "picket.incidents.v1.IncidentService/IgnoreIncident",
        STAFF_AND_GRANTED,
    ),
    (
        "picket.incidents.v1.IncidentService/UnignoreIncident",
        STAFF_AND_GRANTED,
    ),
    ("picket.incidents.v1.IncidentService/OpenIncident", STAFF),
    (
        "picket.incidents.v1.IncidentService/ListQueue",
        STAFF_AND_GRANTED,
    ),
    (
        "picket.incidents.v1.IncidentService/ListRecommendations",
        STAFF_AND_GRANTED,
    ),
    (
        "picket.incidents.v1.IncidentService/GetTimeline",
        INCIDENT_READERS,
    ),
    (
        "picket.incidents.v1.PolicyService/CreateAutoApproveRule",
        STAFF,
    ),
    (
        "picket.incidents.v1.PolicyService/GetAutoApproveRule",
        STAFF,
    ),
    (
        "picket.incidents.v1.PolicyService/ListAutoApproveRules",
        STAFF,
    ),
    (
        "picket.incidents.v1.PolicyService/DeleteAutoApproveRule",
        STAFF,
    ),
    ("picket.incidents.v1.PolicyService/GetPartnerPolicy", STAFF),
    (
        "picket.incidents.v1.PolicyService/UpdatePartnerPolicy",
        STAFF,
    ),
    (
        "picket.incidents.v1.PolicyService/ListThemeLaunches",
        STAFF_AND_GRANTED,
    ),
    ("picket.incidents.v1.PolicyService/LaunchNextTheme", STAFF),
    (
        "picket.incidents.v1.AuthorityService/GetAuthorityMap",
        STAFF_AND_ASSIGNED,
    ),
    (
        "picket.incidents.v1.AuthorityService/GetStandardAuthorityMap",
        ANYONE,
    ),
    (
        "picket.incidents.v1.AuthorityService/UpdateAuthorityMap",
        STAFF,
    ),
    (
        "picket.incidents.v1.AuthorityService/ResetAuthorityMap",
        STAFF,
    ),
    (
        "picket.incidents.v1.AuthorityService/ListAuthorityMapHistory",
        STAFF,
    ),
    (
        "picket.incidents.v1.AuthorityService/ValidateAuthorityMap",
        STAFF,
    ),
    (
        "picket.incidents.v1.AuthorityService/ExportAuthorityWorksheet",
        STAFF,
    ),
    (
        "picket.incidents.v1.AuthorityService/CheckDecisionAuthority",
        STAFF_AND_GRANTED,
    ),
    (
        "picket.incidents.v1.AuthorityService/GrantCustomerAccess",
        STAFF,
    ),
    (
        "picket.incidents.v1.AuthorityService/RevokeCustomerAccess",
        STAFF,
    ),
    (
        "picket.incidents.v1.AuthorityService/ListCustomerGrants",
        STAFF,
    ),
    // Channels and deliveries (notifier).
    (
        "picket.notifications.v1.ChannelService/CreateWebhookEndpoint",
        STAFF,
    ),
    (
        "picket.notifications.v1.ChannelService/GetWebhookEndpoint",
        STAFF,
    ),
    (
        "picket.notifications.v1.ChannelService/ListWebhookEndpoints",
        STAFF,
    ),
    (
        "picket.notifications.v1.ChannelService/UpdateWebhookEndpoint",
        STAFF,
    ),
    (
        "picket.notifications.v1.ChannelService/DeleteWebhookEndpoint",
        STAFF,
    ),
    (
        "picket.notifications.v1.ChannelService/RotateWebhookSecret",
        STAFF,
    ),
    (
        "picket.notifications.v1.ChannelService/SendTestWebhook",
        STAFF,
    ),
    (
        "picket.notifications.v1.ChannelService/CreateEmailRecipient",
        STAFF,
    ),
    (
        "picket.notifications.v1.ChannelService/GetEmailRecipient",
        STAFF,
    ),
    (
        "picket.notifications.v1.ChannelService/ListEmailRecipients",
        STAFF,
    ),
    (
        "picket.notifications.v1.ChannelService/UpdateEmailRecipient",
        STAFF,
    ),
    (
        "picket.notifications.v1.ChannelService/DeleteEmailRecipient",
        STAFF,
    ),
    (
        "picket.notifications.v1.ChannelService/ListEventTypes",
        ANYONE,
    ),
    (
        "picket.notifications.v1.DeliveryService/ListDeliveries",
        STAFF,
    ),
    ("picket.notifications.v1.DeliveryService/GetDelivery", STAFF),
    (
        "picket.notifications.v1.DeliveryService/RedeliverDelivery",
        STAFF,
    ),
    (
        "picket.notifications.v1.DeliveryService/ReplayFailedDeliveries",
        STAFF,
    ),
    // The retainer and engagements (ledger).
    (
        "picket.ledger.v1.CreditLedgerService/PurchaseCredits",
        OPERATOR,
    ),
    ("picket.ledger.v1.CreditLedgerService/GetBalance", STAFF),
    (
        "picket.ledger.v1.CreditLedgerService/ListCreditPacks",
        STAFF,
    ),
    ("picket.ledger.v1.CreditLedgerService/ListTransfers", STAFF),
    ("picket.ledger.v1.CreditLedgerService/GetStatement", STAFF),
    ("picket.ledger.v1.CreditLedgerService/PlaceHold", ASSIGNED),
    ("picket.ledger.v1.CreditLedgerService/PostHold", ASSIGNED),
    ("picket.ledger.v1.CreditLedgerService/VoidHold", ASSIGNED),
    (
        "picket.ledger.v1.CreditLedgerService/GetHold",
        STAFF_AND_ASSIGNED,
    ),
    ("picket.ledger.v1.CreditLedgerService/ListHolds", STAFF),
    ("picket.ledger.v1.CreditLedgerService/GetCreditTerms", STAFF),
    (
        "picket.ledger.v1.CreditLedgerService/SetCreditTerms",
        OPERATOR,
    ),
    ("picket.ledger.v1.CreditLedgerService/ListAccounts", STAFF),
    ("picket.ledger.v1.EngagementService/OpenEngagement", STAFF),
    (
        "picket.ledger.v1.EngagementService/GetEngagement",
        STAFF_AND_ASSIGNED,
    ),
    (
        "picket.ledger.v1.EngagementService/ListEngagements",
        ANYONE_BUT_CUSTOMERS,
    ),
    (
        "picket.ledger.v1.EngagementService/AssignInvestigator",
        OPERATOR,
    ),
    ("picket.ledger.v1.EngagementService/LogWork", ASSIGNED),
    (
        "picket.ledger.v1.EngagementService/ListWorkEntries",
        STAFF_AND_ASSIGNED,
    ),
    (
        "picket.ledger.v1.EngagementService/RecordRecommendations",
        ASSIGNED,
    ),
    (
        "picket.ledger.v1.EngagementService/CloseEngagement",
        ASSIGNED,
    ),
    // Offboarding.
    (
        "picket.offboarding.v1.OffboardingService/OffboardTenant",
        STAFF,
    ),
    (
        "picket.offboarding.v1.OffboardingService/GetOffboarding",
        STAFF,
    ),
    (
        "picket.offboarding.v1.OffboardingService/ListOffboardings",
        STAFF,
    ),
    (
        "picket.offboarding.v1.OffboardingService/CancelOffboarding",
        STAFF,
    ),
    (
        "picket.offboarding.v1.OffboardingService/GetDeletionCertificate",
        STAFF,
    ),
    (
        "picket.offboarding.v1.OffboardingService/ListDeletionCertificates",
        STAFF,
    ),
];

/// Listing engagements: staff, and investigators, who see only their own assignments.
const ANYONE_BUT_CUSTOMERS: &[Caller] =
    &[Operator, Partner, AssignedInvestigator, OtherInvestigator];

/// Rpcs that end their target: each caller the matrix lets through gets a fresh one, so an
/// earlier caller's deletion is not mistaken for a refusal. (Rpcs that only change their target
/// answer a repeat with FAILED_PRECONDITION, which goes through.)
#[derive(Debug, Clone, Copy)]
enum Fresh {
    Endpoint,
    Recipient,
    Rule,
    Grant,
    Engagement,
    Hold,
}

fn fresh_for(path: &str) -> Option<Fresh> {
    Some(match path.rsplit('/').next()? {
        "DeleteWebhookEndpoint" => Fresh::Endpoint,
        "DeleteEmailRecipient" => Fresh::Recipient,
        "DeleteAutoApproveRule" => Fresh::Rule,
        "RevokeCustomerAccess" => Fresh::Grant,
        "CloseEngagement" => Fresh::Engagement,
        "PostHold" | "VoidHold" => Fresh::Hold,
        _ => return None,
    })
}

/// The running services and the objects of `p1` the requests name.
struct World {
    env: TestEnv,
    sim: GraphSim,
    receiver: WebhookReceiver,
    applications: Vec<Application>,
    channels: HashMap<String, tonic::transport::Channel>,
    /// Request field values by field name (ids of `p1`'s objects, and plausible text).
    values: HashMap<&'static str, String>,
    tokens: HashMap<Caller, String>,
}

/// A customer contact of `p1` whose token names `tenant`.
fn customer(subject: &str, tenant: &str) -> Principal {
    Principal {
        subject: subject.into(),
        role: Role::Customer,
        partner_id: Some(PARTNER.into()),
        tenant_ids: vec![tenant.to_owned()],
    }
}

fn request<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let value = format!("Bearer {token}").parse().expect("ascii token");
    request.metadata_mut().insert("authorization", value);
    request
}

impl World {
    async fn start() -> World {
        let env = TestEnv::new().await;
        let sim = GraphSim::start(
            SimConfig {
                tenants: 3,
                ..SimConfig::default()
            },
            ([127, 0, 0, 1], 0).into(),
        )
        .await
        .expect("graph-sim starts");
        let receiver = WebhookReceiver::start().await;
        let services =
            start_every_service(&env, &sim, "[offboarding]\ntick_interval = \"100ms\"\n").await;
        let mut channels = HashMap::new();
        for (package, application) in &services {
            channels.insert((*package).to_owned(), channel(application).await);
        }
        let token = |subject: &str, role: Role, partner_id: Option<&str>| {
            env.token(&Principal {
                subject: subject.into(),
                role,
                partner_id: partner_id.map(str::to_owned),
                tenant_ids: Vec::new(),
            })
        };
        let mut tokens = HashMap::from([
            (Operator, env.operator_token()),
            (Partner, env.partner_token(PARTNER)),
            (OtherPartner, env.partner_token("p2")),
            (
                AssignedInvestigator,
                token("ines@picket", Role::Investigator, None),
            ),
            (
                OtherInvestigator,
                token("ivan@picket", Role::Investigator, None),
            ),
        ]);
        let mut world = World {
            env,
            sim,
            receiver,
            applications: Vec::new(),
            channels,
            values: HashMap::new(),
            tokens: HashMap::new(),
        };
        let partner = tokens[&Partner].clone();
        let operator = tokens[&Operator].clone();

        // Three connected tenants (the second one offboarded already, the third one for the
        // OffboardTenant row) and one waiting for consent.
        let mut tenant_client = tenants::tenant_service_client::TenantServiceClient::new(
            world.channel("picket.tenants.v1"),
        );
        let mut connected = Vec::new();
        for microsoft_tenant in world.sim.tenant_ids() {
            let onboarded = tenant_client
                .onboard_tenant(request(
                    &partner,
                    tenants::OnboardTenantRequest {
                        partner_id: PARTNER.into(),
                        display_name: "Contoso".into(),
                        microsoft_tenant: microsoft_tenant.clone(),
                        plan: tenants::SubscriptionPlan::Standard.into(),
                        idempotency_key: String::new(),
                    },
                ))
                .await
                .expect("onboarded")
                .into_inner();
            let page =
                consent_as_administrator(&world.sim, &microsoft_tenant, &onboarded.consent_url)
                    .await
                    .expect("the browser reaches a page");
            assert!(page.connected(), "{}", page.body);
            connected.push(onboarded.tenant.expect("tenant").tenant_id);
        }
        let pending = tenant_client
            .onboard_tenant(request(
                &partner,
                tenants::OnboardTenantRequest {
                    partner_id: PARTNER.into(),
                    display_name: "Fabrikam".into(),
                    plan: tenants::SubscriptionPlan::Standard.into(),
                    ..Default::default()
                },
            ))
            .await
            .expect("onboarded")
            .into_inner();
        let consent_state = pending
            .consent_url
            .split("state=")
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        let tenant = connected[0].clone();
        let offboarded_tenant = connected[1].clone();
        tokens.insert(
            GrantedCustomer,
            world.env.token(&customer("it@contoso", &tenant)),
        );
        tokens.insert(
            UngrantedCustomer,
            world.env.token(&customer("guest@contoso", &tenant)),
        );
        world.tokens = tokens;

        // An incident, the customer's grant, an auto-approve rule, a scan.
        world
            .env
            .publish(
                "scanner",
                &suspicious_sign_in(PARTNER, &tenant, "fp-matrix"),
            )
            .await;
        let incident_client = incidents::incident_service_client::IncidentServiceClient::new(
            world.channel("picket.incidents.v1"),
        );
        let incident = eventually(Duration::from_secs(30), "the incident", || {
            let mut client = incident_client.clone();
            let listing = request(&partner, incidents::ListIncidentsRequest::default());
            async move {
                client
                    .list_incidents(listing)
                    .await
                    .ok()?
                    .into_inner()
                    .incidents
                    .into_iter()
                    .find(|incident| incident.fingerprint == "fp-matrix")
            }
        })
        .await;
        let grant = world.fresh(Fresh::Grant, &tenant).await;
        let values = HashMap::from([
            ("partner_id", PARTNER.to_owned()),
            ("tenant_id", tenant.clone()),
            ("incident_id", incident.incident_id.clone()),
            ("fingerprint", "fp-matrix".to_owned()),
            ("check_id", incident.check_id.clone()),
            ("grant_id", grant),
            ("state", consent_state),
            ("customer_subject", "it@contoso".to_owned()),
            ("investigator_subject", "ines@picket".to_owned()),
            ("email", "soc@msp.example".to_owned()),
            ("recipient_email", "admin@customer.example".to_owned()),
            ("url", world.receiver.url()),
            ("display_name", "Matrix".to_owned()),
            ("description", "the matrix".to_owned()),
            ("comment", "the matrix".to_owned()),
            ("reason", "the matrix".to_owned()),
            ("message", "the matrix".to_owned()),
            ("summary", "the matrix".to_owned()),
            ("request", "the matrix".to_owned()),
            ("override_reason", "the matrix".to_owned()),
            ("title", "Reset the admin's password".to_owned()),
            ("detail", "the matrix".to_owned()),
        ]);
        world.values = values;
        for fresh in [
            Fresh::Rule,
            Fresh::Endpoint,
            Fresh::Recipient,
            Fresh::Engagement,
        ] {
            let id = world.fresh(fresh, &tenant).await;
            let field = match fresh {
                Fresh::Rule => "rule_id",
                Fresh::Endpoint => "endpoint_id",
                Fresh::Recipient => "recipient_id",
                _ => "engagement_id",
            };
            world.values.insert(field, id);
        }
        let engagement = ledger::engagement_service_client::EngagementServiceClient::new(
            world.channel("picket.ledger.v1"),
        )
        .get_engagement(request(
            &operator,
            ledger::GetEngagementRequest {
                engagement_id: world.values["engagement_id"].clone(),
            },
        ))
        .await
        .expect("the engagement")
        .into_inner()
        .engagement
        .expect("engagement");
        world.values.insert("hold_id", engagement.hold_id);
        // The prioritizer hears of the assignment from the ledger: from then on the investigator
        // reads the incidents of the engagement's tenant.
        let investigator = world.tokens[&AssignedInvestigator].clone();
        eventually(
            Duration::from_secs(30),
            "the investigator reads the incident",
            || {
                let mut client = incident_client.clone();
                let get = request(
                    &investigator,
                    incidents::GetIncidentRequest {
                        incident_id: incident.incident_id.clone(),
                    },
                );
                async move { client.get_incident(get).await.ok() }
            },
        )
        .await;
        let scan = tenants::scan_service_client::ScanServiceClient::new(
            world.channel("picket.tenants.v1"),
        )
        .start_scan(request(
            &partner,
            tenants::StartScanRequest {
                tenant_id: tenant.clone(),
                kind: tenants::ScanKind::Configuration.into(),
            },
        ))
        .await
        .expect("a scan")
        .into_inner();
        world
            .values
            .insert("scan_id", scan.scan.expect("scan").scan_id);

        // A delivery of the incident to the endpoint, and an offboarding of the second tenant.
        let delivery_client = notifications::delivery_service_client::DeliveryServiceClient::new(
            world.channel("picket.notifications.v1"),
        );
        let delivery = eventually(Duration::from_secs(30), "a delivery", || {
            let mut client = delivery_client.clone();
            let listing = request(
                &partner,
                notifications::ListDeliveriesRequest {
                    partner_id: PARTNER.into(),
                    ..Default::default()
                },
            );
            async move {
                client
                    .list_deliveries(listing)
                    .await
                    .ok()?
                    .into_inner()
                    .deliveries
                    .into_iter()
                    .next()
            }
        })
        .await;
        world.values.insert("delivery_id", delivery.delivery_id);
        let offboardings = offboarding::offboarding_service_client::OffboardingServiceClient::new(
            world.channel("picket.offboarding.v1"),
        );
        let offboarding_id = eventually(Duration::from_secs(30), "the offboarding", || {
            let mut client = offboardings.clone();
            let start = request(
                &partner,
                offboarding::OffboardTenantRequest {
                    partner_id: PARTNER.into(),
                    tenant_id: offboarded_tenant.clone(),
                    reason: "contract ended".into(),
                    // Purged at once, so its deletion certificate is there to read.
                    retention: Some(Default::default()),
                },
            );
            async move {
                Some(
                    client
                        .offboard_tenant(start)
                        .await
                        .ok()?
                        .into_inner()
                        .offboarding?
                        .offboarding_id,
                )
            }
        })
        .await;
        eventually(Duration::from_secs(60), "the deletion certificate", || {
            let mut client = offboardings.clone();
            let read = request(
                &partner,
                offboarding::GetDeletionCertificateRequest {
                    offboarding_id: offboarding_id.clone(),
                    ..Default::default()
                },
            );
            async move { client.get_deletion_certificate(read).await.ok() }
        })
        .await;
        world.values.insert("offboarding_id", offboarding_id);
        world
            .values
            .insert("offboardable_tenant", connected[2].clone());
        world.applications = services
            .into_iter()
            .map(|(_, application)| application)
            .collect();
        world
    }

    fn channel(&self, package: &str) -> tonic::transport::Channel {
        self.channels
            .get(package)
            .unwrap_or_else(|| panic!("no service serves {package}"))
            .clone()
    }

    /// A new object of `kind` of `p1`, made by its staff (or the operator where only it may);
    /// returns its id.
    async fn fresh(&self, kind: Fresh, tenant: &str) -> String {
        let partner = self.tokens[&Partner].clone();
        let operator = self.tokens[&Operator].clone();
        let key = uuid::Uuid::new_v4().to_string();
        match kind {
            Fresh::Grant => {
                incidents::authority_service_client::AuthorityServiceClient::new(
                    self.channel("picket.incidents.v1"),
                )
                .grant_customer_access(request(
                    &partner,
                    incidents::GrantCustomerAccessRequest {
                        partner_id: PARTNER.into(),
                        tenant_id: tenant.into(),
                        customer_subject: if self.values.is_empty() {
                            "it@contoso".into()
                        } else {
                            format!("someone-{key}")
                        },
                        email: "it@contoso.example".into(),
                        ..Default::default()
                    },
                ))
                .await
                .expect("granted")
                .into_inner()
                .grant
                .expect("grant")
                .grant_id
            }
            Fresh::Rule => {
                incidents::policy_service_client::PolicyServiceClient::new(
                    self.channel("picket.incidents.v1"),
                )
                .create_auto_approve_rule(request(
                    &partner,
                    incidents::CreateAutoApproveRuleRequest {
                        partner_id: PARTNER.into(),
                        check_id: self.values["check_id"].clone(),
                        scope: incidents::AutoApproveScope::Tenants.into(),
                        tenant_ids: vec![tenant.into()],
                        description: "the matrix".into(),
                        apply_to_open_incidents: false,
                    },
                ))
                .await
                .expect("a rule")
                .into_inner()
                .rule
                .expect("rule")
                .rule_id
            }
            Fresh::Endpoint => {
                notifications::channel_service_client::ChannelServiceClient::new(
                    self.channel("picket.notifications.v1"),
                )
                .create_webhook_endpoint(request(
                    &partner,
                    notifications::CreateWebhookEndpointRequest {
                        partner_id: PARTNER.into(),
                        url: self.receiver.url(),
                        ..Default::default()
                    },
                ))
                .await
                .expect("an endpoint")
                .into_inner()
                .endpoint
                .expect("endpoint")
                .endpoint_id
            }
            Fresh::Recipient => {
                notifications::channel_service_client::ChannelServiceClient::new(
                    self.channel("picket.notifications.v1"),
                )
                .create_email_recipient(request(
                    &partner,
                    notifications::CreateEmailRecipientRequest {
                        partner_id: PARTNER.into(),
                        email: format!("soc-{key}@msp.example"),
                        ..Default::default()
                    },
                ))
                .await
                .expect("a recipient")
                .into_inner()
                .recipient
                .expect("recipient")
                .recipient_id
            }
            Fresh::Engagement | Fresh::Hold => {
                let mut credits =
                    ledger::credit_ledger_service_client::CreditLedgerServiceClient::new(
                        self.channel("picket.ledger.v1"),
                    );
                credits
                    .purchase_credits(request(
                        &operator,
                        ledger::PurchaseCreditsRequest {
                            partner_id: PARTNER.into(),
                            idempotency_key: format!("pack-{key}"),
                            minutes: 600,
                            ..Default::default()
                        },
                    ))
                    .await
                    .expect("credits");
                let mut engagements =
                    ledger::engagement_service_client::EngagementServiceClient::new(
                        self.channel("picket.ledger.v1"),
                    );
                let engagement = engagements
                    .open_engagement(request(
                        &partner,
                        ledger::OpenEngagementRequest {
                            partner_id: PARTNER.into(),
                            idempotency_key: format!("open-{key}"),
                            tenant_id: tenant.into(),
                            request: "What happened?".into(),
                            channel: ledger::RequestChannel::Chat.into(),
                            estimated_minutes: 60,
                            ..Default::default()
                        },
                    ))
                    .await
                    .expect("an engagement")
                    .into_inner()
                    .engagement
                    .expect("engagement");
                engagements
                    .assign_investigator(request(
                        &operator,
                        ledger::AssignInvestigatorRequest {
                            partner_id: PARTNER.into(),
                            idempotency_key: format!("assign-{key}"),
                            engagement_id: engagement.engagement_id.clone(),
                            investigator_subject: "ines@picket".into(),
                        },
                    ))
                    .await
                    .expect("assigned");
                match kind {
                    Fresh::Hold => engagement.hold_id,
                    _ => engagement.engagement_id,
                }
            }
        }
    }

    /// The request of `method` (its input type `type_name`) with every field this world has a
    /// value for, plus enums at their first value and a positive `minutes`.
    fn request_for(
        &self,
        messages: &HashMap<String, prost_types::DescriptorProto>,
        type_name: &str,
        overrides: &HashMap<&'static str, String>,
    ) -> Vec<u8> {
        let message = &messages[type_name];
        let mut encoded = Vec::new();
        for field in &message.field {
            let name = field.name();
            let value = overrides
                .get(name)
                .or_else(|| self.values.get(name))
                .cloned()
                .or_else(|| (name == "idempotency_key").then(|| uuid::Uuid::new_v4().to_string()));
            match field.r#type() {
                Type::String => {
                    if let Some(value) = value {
                        encoded.extend(length_delimited(field.number(), value.as_bytes()));
                    }
                }
                Type::Enum if field.label() != Label::Repeated => {
                    encoded.extend(varint(field.number(), 1));
                }
                Type::Int64 if name == "minutes" || name == "estimated_minutes" => {
                    encoded.extend(varint(field.number(), 1));
                }
                // One item where a list is required (an engagement's recommendations).
                Type::Message if name == "recommendations" => {
                    let item = self.request_for(messages, field.type_name(), overrides);
                    encoded.extend(length_delimited(field.number(), &item));
                }
                _ => {}
            }
        }
        encoded
    }
}

/// Whether an answer refused the caller: PERMISSION_DENIED, NOT_FOUND (another partner's object
/// is as good as missing), or, for a listing, nothing in it.
fn refused(answer: &Result<Vec<u8>, tonic::Status>) -> bool {
    match answer {
        Err(status) => matches!(
            status.code(),
            tonic::Code::PermissionDenied | tonic::Code::NotFound
        ),
        Ok(body) => body.is_empty(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_rpc_lets_through_exactly_the_callers_its_row_names() {
    let world = Box::pin(World::start()).await;
    let (set, messages) = contracts();
    let matrix: HashMap<&str, &[Caller]> = MATRIX.iter().copied().collect();
    let expired = world.env.expired_operator_token();
    let mut mismatches = Vec::new();
    let mut rpcs = 0;
    for file in &set.file {
        for service in &file.service {
            for method in &service.method {
                let path = format!("{}.{}/{}", file.package(), service.name(), method.name());
                let allowed = *matrix
                    .get(path.as_str())
                    .unwrap_or_else(|| panic!("{path} has no row in the matrix"));
                rpcs += 1;
                let channel = world.channel(file.package());
                let mut overrides: HashMap<&'static str, String> = HashMap::new();
                match method.name() {
                    "OffboardTenant" => {
                        overrides.insert("tenant_id", world.values["offboardable_tenant"].clone());
                    }
                    // The scanner's catalogue names its checks; the incident's is a detection's.
                    "GetCheck" => {
                        overrides.insert("check_id", "aad.legacy-auth-blocked".to_owned());
                    }
                    _ => {}
                }
                // Nobody unauthenticated gets through.
                for token in ["", expired.as_str()] {
                    let body = world.request_for(&messages, method.input_type(), &overrides);
                    let answer = call(&channel, token, &format!("/{path}"), body).await;
                    if !matches!(&answer, Err(status) if status.code() == tonic::Code::Unauthenticated)
                    {
                        mismatches.push(format!("{path}: no valid token answered {answer:?}"));
                    }
                }
                // The refused callers first, so an allowed caller's change does not decide for them.
                let order = CALLERS
                    .iter()
                    .filter(|caller| !allowed.contains(caller))
                    .chain(CALLERS.iter().filter(|caller| allowed.contains(caller)));
                for caller in order {
                    let mut overrides = overrides.clone();
                    if allowed.contains(caller)
                        && let Some(fresh) = fresh_for(&path)
                    {
                        let id = world.fresh(fresh, &world.values["tenant_id"]).await;
                        let field = match fresh {
                            Fresh::Endpoint => "endpoint_id",
                            Fresh::Recipient => "recipient_id",
                            Fresh::Rule => "rule_id",
                            Fresh::Grant => "grant_id",
                            Fresh::Engagement => "engagement_id",
                            Fresh::Hold => "hold_id",
                        };
                        overrides.insert(field, id);
                    }
                    let body = world.request_for(&messages, method.input_type(), &overrides);
                    let answer =
                        call(&channel, &world.tokens[caller], &format!("/{path}"), body).await;
                    // An allowed caller may find a listing empty; a refused one must see nothing.
                    let wrong = if allowed.contains(caller) {
                        matches!(&answer, Err(status) if refused(&Err(status.clone())))
                    } else {
                        !refused(&answer)
                    };
                    if wrong {
                        mismatches.push(format!(
                            "{path}: {caller:?} {} but got {answer:?}",
                            if allowed.contains(caller) {
                                "should go through"
                            } else {
                                "should be refused"
                            }
                        ));
                    }
                }
            }
        }
    }
    assert_eq!(
        rpcs,
        MATRIX.len(),
        "a row names an rpc the contracts do not have"
    );
    assert!(
        mismatches.is_empty(),
        "{} mismatches:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
    for application in world.applications {
        application.shutdown().await;
    }
    world.env.teardown().await;
}
