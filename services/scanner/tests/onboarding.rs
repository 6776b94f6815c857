//! Onboarding against graph-sim and the real NATS and PostgreSQL: the consent URL, Microsoft's
//! redirects (granted, denied, wrong tenant, no token), the administrator's sign-in that proves the
//! tenant, one binding per Microsoft tenant, TenantOnboarded, a forwarded link that travels sealed,
//! and partner scope.

mod common;

use std::time::Duration;

use common::{harness, location_of, state_of};
use futures::StreamExt;
use picket_platform::sealing::{Keyring, consent_link_context};
use picket_proto::tenants::v1 as tenants;
use prost::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn granted_consent_activates_the_tenant_and_announces_it() {
    let mut harness = harness().await;
    let microsoft_tenant = harness.sim.tenant_ids()[0].clone();
    let mut announcements = harness
        .env
        .nats
        .subscribe(format!(
            "{}.tenants.v1.tenant_onboarded.>",
            harness.env.namespace
        ))
        .await
        .expect("subscribe");

    let onboarded = harness.onboard("p1", &microsoft_tenant).await;
    let tenant = onboarded.tenant.expect("tenant");
    assert_eq!(tenant.state(), tenants::TenantState::PendingConsent);
    assert!(onboarded.consent_url.starts_with(&format!(
        "{}/{microsoft_tenant}/v2.0/adminconsent?client_id=",
        harness.sim.base_url()
    )));

    let administrator = harness.administrator(&microsoft_tenant);
    let page = harness
        .consent_as(&administrator, &onboarded.consent_url)
        .await;
    assert!(page.connected(), "{}", page.body);

    let active = harness.tenant("p1", &tenant.tenant_id).await;
    assert_eq!(active.state(), tenants::TenantState::Active);
    assert_eq!(active.microsoft_tenant_id, microsoft_tenant);
    assert_eq!(active.primary_domain, "customer0000.onmicrosoft.com");

    let announcement = tokio::time::timeout(Duration::from_secs(20), announcements.next())
        .await
        .expect("TenantOnboarded is published")
        .expect("subscription open");
    assert!(
        announcement
            .subject
            .ends_with(&format!("p1.{}", tenant.tenant_id)),
        "{}",
        announcement.subject
    );

    // The administrator may consent twice; the second changes nothing.
    let again = harness
        .consent_as(&administrator, &onboarded.consent_url)
        .await;
    assert!(again.connected(), "{}", again.body);
    harness.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_consent_link_travels_sealed_for_the_notifier_only() {
    let mut harness = harness().await;
    let microsoft_tenant = harness.sim.tenant_ids()[0].clone();
    let onboarded = harness.onboard("p1", &microsoft_tenant).await;
    let tenant_id = onboarded.tenant.expect("tenant").tenant_id;
    let mut forwards = harness
        .env
        .nats
        .subscribe(format!(
            "{}.tenants.v1.consent_request_forwarded.>",
            harness.env.namespace
        ))
        .await
        .expect("subscribe");
    let forwarded = harness
        .client
        .forward_consent(harness.env.request(
            &harness.env.partner_token("p1"),
            tenants::ForwardConsentRequest {
                tenant_id: tenant_id.clone(),
                recipient_email: "it-admin@contoso.example".into(),
                recipient_name: "Grace".into(),
                message: "Please".into(),
            },
        ))
        .await
        .expect("forwarded")
        .into_inner();
    let state = state_of(&forwarded.consent_url);

    let published = tokio::time::timeout(Duration::from_secs(20), forwards.next())
        .await
        .expect("ConsentRequestForwarded is published")
        .expect("subscription open");
    // Neither the link nor its state is readable by anyone who hears the event...
    let payload = String::from_utf8_lossy(&published.payload);
    assert!(!payload.contains(&state), "the state travels in clear");
    assert!(
        !payload.contains("adminconsent"),
        "the link travels in clear"
    );
    // ...but the notifier, holding the consent-link keys, opens exactly the link the partner got,
    // and only as this partner's and tenant's.
    let event =
        tenants::ConsentRequestForwarded::decode(published.payload.clone()).expect("the event");
    let keys = Keyring::parse(&picket_testkit::consent_link_test_keys!().into()).expect("keys");
    let opened = keys
        .open(
            &event.sealed_consent_url,
            &consent_link_context("p1", &tenant_id),
        )
        .expect("the notifier opens it");
    assert_eq!(
        String::from_utf8(opened).expect("text"),
        forwarded.consent_url
    );
    assert!(
        keys.open(
            &event.sealed_consent_url,
            &consent_link_context("p2", &tenant_id)
        )
        .is_err(),
        "it opens as no other partner's"
    );
    harness.finish().await;
}

/// Entra takes a while to let the app in after consent: tokens issued meanwhile carry no
/// permissions and Graph answers them 403 for their whole hour. Onboarding waits it out with fresh
/// tokens instead of failing the tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consent_still_propagating_is_waited_for() {
    let mut harness = harness().await;
    let microsoft_tenant = harness.sim.tenant_ids()[0].clone();
    harness
        .sim
        .delay_permissions(&microsoft_tenant, Duration::from_secs(2));
    let onboarded = harness.onboard("p1", &microsoft_tenant).await;
    let page = harness
        .consent_as(
            &harness.administrator(&microsoft_tenant),
            &onboarded.consent_url,
        )
        .await;
    assert!(page.connected(), "{}", page.body);
    let tenant = harness
        .tenant("p1", &onboarded.tenant.expect("tenant").tenant_id)
        .await;
    assert_eq!(tenant.state(), tenants::TenantState::Active);
    let organization: Vec<u16> = harness
        .sim
        .requests()
        .into_iter()
        .filter(|request| request.path == "/v1.0/organization")
        .map(|request| request.status)
        .collect();
    assert!(
        organization.first() == Some(&403) && organization.last() == Some(&200),
        "refused while propagating, then read: {organization:?}"
    );
    assert!(
        harness.sim.tokens_issued(&microsoft_tenant) >= 2,
        "a token without permissions is not kept"
    );
    harness.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_consent_leaves_the_tenant_denied_with_the_reason() {
    let mut harness = harness().await;
    let onboarded = harness.onboard("p1", "").await;
    let state = state_of(&onboarded.consent_url);

    let (status, _) = harness
        .redirect(&format!("error=access_denied&error_description=AADSTS65004%3A+User+declined+to+consent&state={state}"))
        .await;
    assert_eq!(status, 200);

    let tenant = harness
        .tenant("p1", &onboarded.tenant.expect("tenant").tenant_id)
        .await;
    assert_eq!(tenant.state(), tenants::TenantState::ConsentDenied);
    assert_eq!(tenant.consent_failure(), tenants::ConsentFailure::Denied);
    assert_eq!(
        tenant.state_reason,
        "access_denied: AADSTS65004: User declined to consent"
    );
    harness.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_from_another_tenant_fails_as_wrong_tenant() {
    let mut harness = harness().await;
    let [expected, other] = [
        harness.sim.tenant_ids()[0].clone(),
        harness.sim.tenant_ids()[1].clone(),
    ];
    let onboarded = harness.onboard("p1", &expected).await;
    let state = state_of(&onboarded.consent_url);

    // The redirect names the expected tenant, but the administrator who signs in is another's.
    let (status, response) = harness
        .redirect(&format!(
            "tenant={expected}&admin_consent=True&state={state}"
        ))
        .await;
    assert_eq!(status, 302);
    let page = harness
        .consent_as(&harness.administrator(&other), &location_of(&response))
        .await;
    assert!(!page.connected(), "{}", page.body);

    let tenant = harness
        .tenant("p1", &onboarded.tenant.expect("tenant").tenant_id)
        .await;
    assert_eq!(tenant.state(), tenants::TenantState::ConsentFailed);
    assert_eq!(
        tenant.consent_failure(),
        tenants::ConsentFailure::WrongTenant
    );
    assert_eq!(
        tenant.state_reason,
        format!("the administrator signed in to tenant {other}, expected {expected}")
    );
    assert!(
        harness.sim.requests().is_empty(),
        "nothing is read from the wrong tenant"
    );
    harness.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_failure_leaves_the_tenant_failed_with_entras_reason() {
    let mut harness = harness().await;
    let microsoft_tenant = harness.sim.tenant_ids()[0].clone();
    harness.sim.set_consent(&microsoft_tenant, false);
    let onboarded = harness.onboard("p1", &microsoft_tenant).await;
    let state = state_of(&onboarded.consent_url);

    // A redirect claims consent that Entra never recorded; the administrator then signs in.
    let (_, response) = harness
        .redirect(&format!(
            "tenant={microsoft_tenant}&admin_consent=True&state={state}"
        ))
        .await;
    let administrator = harness.administrator(&microsoft_tenant);
    harness
        .consent_as(&administrator, &location_of(&response))
        .await;

    let tenant = harness
        .tenant("p1", &onboarded.tenant.expect("tenant").tenant_id)
        .await;
    assert_eq!(tenant.state(), tenants::TenantState::ConsentFailed);
    assert_eq!(
        tenant.consent_failure(),
        tenants::ConsentFailure::TokenFailed
    );
    assert!(
        tenant.state_reason.contains("AADSTS7000229"),
        "{}",
        tenant.state_reason
    );
    harness.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_consent_state_is_refused() {
    let harness = harness().await;
    let (status, _) = harness
        .redirect("tenant=x&admin_consent=True&state=forged")
        .await;
    assert_eq!(status, 400);
    harness.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partners_read_and_list_only_their_own_tenants() {
    let mut harness = harness().await;
    let onboarded = harness.onboard("p1", "").await;
    let tenant_id = onboarded.tenant.expect("tenant").tenant_id;
    let intruder = harness.env.partner_token("p2");

    let read = harness
        .client
        .get_tenant(harness.env.request(
            &intruder,
            tenants::GetTenantRequest {
                tenant_id: tenant_id.clone(),
            },
        ))
        .await
        .expect_err("refused");
    assert_eq!(read.code(), tonic::Code::NotFound);
    let listed = harness
        .client
        .list_tenants(
            harness
                .env
                .request(&intruder, tenants::ListTenantsRequest::default()),
        )
        .await
        .expect("p2 lists its own")
        .into_inner();
    assert!(listed.tenants.is_empty());
    let onboard_for_p1 = harness
        .client
        .onboard_tenant(harness.env.request(
            &intruder,
            tenants::OnboardTenantRequest {
                partner_id: "p1".into(),
                display_name: "x".into(),
                plan: tenants::SubscriptionPlan::Standard.into(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("refused");
    assert_eq!(onboard_for_p1.code(), tonic::Code::PermissionDenied);
    let no_plan = harness
        .client
        .onboard_tenant(harness.env.request(
            &harness.env.partner_token("p1"),
            tenants::OnboardTenantRequest {
                partner_id: "p1".into(),
                display_name: "x".into(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("refused");
    assert_eq!(no_plan.code(), tonic::Code::InvalidArgument);
    assert!(
        no_plan.message().starts_with("plan"),
        "{}",
        no_plan.message()
    );
    harness.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_tenant_gets_a_new_consent_link_that_replaces_the_old_one() {
    let mut harness = harness().await;
    let microsoft_tenant = harness.sim.tenant_ids()[0].clone();
    let onboarded = harness.onboard("p1", &microsoft_tenant).await;
    let tenant_id = onboarded.tenant.expect("tenant").tenant_id;
    let old_state = state_of(&onboarded.consent_url);
    harness
        .redirect(&format!(
            "error=access_denied&error_description=declined&state={old_state}"
        ))
        .await;

    let request = harness.env.request(
        &harness.env.partner_token("p1"),
        tenants::RequestConsentRequest {
            tenant_id: tenant_id.clone(),
        },
    );
    let renewed = harness
        .client
        .request_consent(request)
        .await
        .expect("a new link")
        .into_inner();

    assert_eq!(
        renewed.tenant.expect("tenant").state(),
        tenants::TenantState::PendingConsent
    );
    let new_state = state_of(&renewed.consent_url);
    assert_ne!(new_state, old_state);
    let (stale, _) = harness
        .redirect(&format!(
            "tenant={microsoft_tenant}&admin_consent=True&state={old_state}"
        ))
        .await;
    assert_eq!(stale, 400, "the old link no longer completes consent");
    let granted = harness
        .consent_as(
            &harness.administrator(&microsoft_tenant),
            &renewed.consent_url,
        )
        .await;
    assert!(granted.connected(), "{}", granted.body);
    assert_eq!(
        harness.tenant("p1", &tenant_id).await.state(),
        tenants::TenantState::Active
    );
    harness.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partner_changes_the_plan_and_name_of_its_tenant_and_a_bad_plan_is_named() {
    let mut harness = harness().await;
    let onboarded = harness.onboard("p1", "").await;
    let tenant_id = onboarded.tenant.expect("tenant").tenant_id;
    let token = harness.env.partner_token("p1");

    let updated = harness
        .client
        .update_tenant(harness.env.request(
            &token,
            tenants::UpdateTenantRequest {
                tenant_id: tenant_id.clone(),
                display_name: Some("Contoso Dental Group".into()),
                plan: Some(tenants::SubscriptionPlan::Premium.into()),
            },
        ))
        .await
        .expect("updated")
        .into_inner()
        .tenant
        .expect("tenant");
    assert_eq!(updated.display_name, "Contoso Dental Group");
    assert_eq!(updated.plan(), tenants::SubscriptionPlan::Premium);

    let refused = harness
        .client
        .update_tenant(harness.env.request(
            &token,
            tenants::UpdateTenantRequest {
                tenant_id,
                display_name: None,
                plan: Some(42),
            },
        ))
        .await
        .expect_err("not a plan");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused.message().starts_with("plan:"),
        "{}",
        refused.message()
    );
    harness.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_list_in_pages_and_a_foreign_page_token_is_named() {
    let mut harness = harness().await;
    let microsoft_tenants = harness.sim.tenant_ids();
    let mut onboarded = Vec::new();
    for microsoft_tenant in microsoft_tenants.iter().take(3) {
        let response = harness.onboard("p1", microsoft_tenant).await;
        onboarded.push(response.tenant.expect("tenant").tenant_id);
    }
    let token = harness.env.partner_token("p1");
    let mut listed = Vec::new();
    let mut page_token = String::new();
    let mut pages = 0;
    loop {
        let page = harness
            .client
            .list_tenants(harness.env.request(
                &token,
                tenants::ListTenantsRequest {
                    page_size: 2,
                    page_token: page_token.clone(),
                    ..Default::default()
                },
            ))
            .await
            .expect("a page")
            .into_inner();
        pages += 1;
        listed.extend(page.tenants.into_iter().map(|tenant| tenant.tenant_id));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(listed, onboarded, "every tenant once, oldest first");
    assert_eq!(pages, 2);

    let foreign = harness
        .client
        .list_tenants(harness.env.request(
            &token,
            tenants::ListTenantsRequest {
                page_token: "not-a-token".into(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("refused");
    assert_eq!(foreign.code(), tonic::Code::InvalidArgument);
    assert!(
        foreign.message().starts_with("page_token"),
        "{}",
        foreign.message()
    );
    harness.finish().await;
}
