//! A Microsoft tenant binds only by proof, and only once: the attack of a hostile partner replayed
//! through the real consent callback, against graph-sim playing Entra ID.

mod common;

use common::{harness, location_of, state_of};
use picket_proto::tenants::v1 as tenants;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partner_cannot_take_over_a_tenant_by_naming_it_in_the_consent_redirect() {
    let mut harness = harness().await;
    let [victim_tenant, attacker_tenant] = [
        harness.sim.tenant_ids()[0].clone(),
        harness.sim.tenant_ids()[1].clone(),
    ];
    let victim = harness
        .connect(
            "p-victim",
            &victim_tenant,
            tenants::SubscriptionPlan::Standard,
        )
        .await;

    // The attacker's own onboarding names no tenant; its redirect names the victim's.
    let onboarded = harness.onboard("p-attacker", "").await;
    let state = state_of(&onboarded.consent_url);
    let (status, response) = harness
        .redirect(&format!(
            "state={state}&tenant={victim_tenant}&admin_consent=True"
        ))
        .await;
    assert_eq!(
        status, 302,
        "consent alone binds nothing: a sign-in follows"
    );
    // Even with a phished ordinary account of the victim's directory, the sign-in proves nothing.
    let ordinary_user = harness
        .sim
        .user_principal_name(&victim_tenant, None)
        .expect("a user without directory roles");
    let page = harness
        .consent_as(&ordinary_user, &location_of(&response))
        .await;
    assert!(!page.connected(), "{}", page.body);
    let attempt = harness
        .tenant("p-attacker", &onboarded.tenant.expect("tenant").tenant_id)
        .await;
    assert_eq!(attempt.state(), tenants::TenantState::ConsentFailed);
    assert_eq!(
        attempt.consent_failure(),
        tenants::ConsentFailure::SignInFailed
    );
    assert!(attempt.microsoft_tenant_id.is_empty());

    // With its own administrator, the attacker binds its own directory, never the one it named.
    let onboarded = harness.onboard("p-attacker", "").await;
    let state = state_of(&onboarded.consent_url);
    let (_, response) = harness
        .redirect(&format!(
            "state={state}&tenant={victim_tenant}&admin_consent=True"
        ))
        .await;
    let page = harness
        .consent_as(
            &harness.administrator(&attacker_tenant),
            &location_of(&response),
        )
        .await;
    assert!(page.connected(), "{}", page.body);
    let own = harness
        .tenant("p-attacker", &onboarded.tenant.expect("tenant").tenant_id)
        .await;
    assert_eq!(own.microsoft_tenant_id, attacker_tenant);

    let untouched = harness.tenant("p-victim", &victim).await;
    assert_eq!(untouched.state(), tenants::TenantState::Active);
    assert_eq!(untouched.microsoft_tenant_id, victim_tenant);
    harness.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complete_consent_takes_no_tenant_from_its_caller_and_no_forged_code() {
    let mut harness = harness().await;
    let onboarded = harness.onboard("p1", "").await;
    let tenant_id = onboarded.tenant.expect("tenant").tenant_id;
    let state = state_of(&onboarded.consent_url);
    let token = harness.env.partner_token("p1");

    let investigator = harness
        .client
        .complete_consent(harness.env.request(
            &harness.env.investigator_token("i1"),
            tenants::CompleteConsentRequest {
                state: state.clone(),
                admin_consent: true,
                ..Default::default()
            },
        ))
        .await
        .expect_err("investigators do not onboard");
    assert_eq!(investigator.code(), tonic::Code::PermissionDenied);

    let consented = harness
        .client
        .complete_consent(harness.env.request(
            &token,
            tenants::CompleteConsentRequest {
                state,
                admin_consent: true,
                ..Default::default()
            },
        ))
        .await
        .expect("consent recorded")
        .into_inner();
    assert_eq!(
        consented.tenant.expect("tenant").state(),
        tenants::TenantState::PendingConsent
    );
    let sign_in_state = state_of(&consented.sign_in_url)
        .split('&')
        .next()
        .unwrap_or_default()
        .to_owned();
    let forged = harness
        .client
        .complete_consent(harness.env.request(
            &token,
            tenants::CompleteConsentRequest {
                state: sign_in_state,
                code: "forged-code".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("handled")
        .into_inner()
        .tenant
        .expect("tenant");
    assert_eq!(forged.tenant_id, tenant_id);
    assert_eq!(forged.state(), tenants::TenantState::ConsentFailed);
    assert_eq!(
        forged.consent_failure(),
        tenants::ConsentFailure::SignInFailed
    );
    assert!(
        forged.state_reason.contains("AADSTS54005"),
        "{}",
        forged.state_reason
    );
    harness.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_microsoft_tenant_is_connected_through_one_picket_tenant_at_a_time() {
    let mut harness = harness().await;
    let microsoft_tenant = harness.sim.tenant_ids()[0].clone();
    let first = harness
        .connect(
            "p-first",
            &microsoft_tenant,
            tenants::SubscriptionPlan::Standard,
        )
        .await;

    // The tenant's own administrator follows a second partner's link (and then its first one's
    // again): the second binding is refused by name, the first stays as it was.
    for partner in ["p-second", "p-first"] {
        let onboarded = harness.onboard(partner, &microsoft_tenant).await;
        let page = harness
            .consent_as(
                &harness.administrator(&microsoft_tenant),
                &onboarded.consent_url,
            )
            .await;
        assert!(!page.connected(), "{}", page.body);
        let refused = harness
            .tenant(partner, &onboarded.tenant.expect("tenant").tenant_id)
            .await;
        assert_eq!(refused.state(), tenants::TenantState::ConsentFailed);
        assert_eq!(
            refused.consent_failure(),
            tenants::ConsentFailure::AlreadyConnected
        );
        assert!(refused.microsoft_tenant_id.is_empty());
    }
    let kept = harness.tenant("p-first", &first).await;
    assert_eq!(kept.state(), tenants::TenantState::Active);
    assert_eq!(kept.microsoft_tenant_id, microsoft_tenant);
    harness.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_of_microsofts_signing_keys_is_followed() {
    let mut harness = harness().await;
    let [first, second] = [
        harness.sim.tenant_ids()[0].clone(),
        harness.sim.tenant_ids()[1].clone(),
    ];
    harness
        .connect("p1", &first, tenants::SubscriptionPlan::Standard)
        .await;

    harness.sim.rotate_signing_key().expect("a new key");

    harness
        .connect("p1", &second, tenants::SubscriptionPlan::Standard)
        .await;
    harness.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_partners_consenting_at_once_bind_the_tenant_once() {
    let mut harness = harness().await;
    let microsoft_tenant = harness.sim.tenant_ids()[0].clone();
    let administrator = harness.administrator(&microsoft_tenant);
    let first = harness.onboard("p-first", &microsoft_tenant).await;
    let second = harness.onboard("p-second", &microsoft_tenant).await;

    let (first_page, second_page) = tokio::join!(
        harness.consent_as(&administrator, &first.consent_url),
        harness.consent_as(&administrator, &second.consent_url),
    );

    assert_eq!(
        [first_page.connected(), second_page.connected()]
            .iter()
            .filter(|connected| **connected)
            .count(),
        1,
        "exactly one binding: {} / {}",
        first_page.body,
        second_page.body
    );
    let mut states = Vec::new();
    for (partner, onboarded) in [("p-first", first), ("p-second", second)] {
        let tenant = harness
            .tenant(partner, &onboarded.tenant.expect("tenant").tenant_id)
            .await;
        states.push((tenant.state(), tenant.consent_failure()));
    }
    states.sort();
    assert_eq!(
        states,
        [
            (
                tenants::TenantState::Active,
                tenants::ConsentFailure::Unspecified
            ),
            (
                tenants::TenantState::ConsentFailed,
                tenants::ConsentFailure::AlreadyConnected
            ),
        ]
    );
    harness.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consent_link_is_shown_once_and_kept_only_as_a_hash() {
    let mut harness = harness().await;
    let onboarded = harness.onboard("p1", "").await;
    let state = state_of(&onboarded.consent_url);
    let tenant_id = onboarded.tenant.expect("tenant").tenant_id;

    let read = harness.tenant("p1", &tenant_id).await;
    assert!(read.consent_url.is_empty(), "{}", read.consent_url);
    let pool = harness.env.pool("scanner").await;
    let stored: String = sqlx::query_scalar("SELECT consent_state_hash FROM tenants")
        .fetch_one(&pool)
        .await
        .expect("the row");
    assert_ne!(stored, state);
    assert_eq!(stored.len(), 64, "a SHA-256 in hex");

    // The link shown once still leads to the consent.
    let (status, response) = harness
        .redirect(&format!("admin_consent=True&state={state}"))
        .await;
    assert_eq!(status, 302, "{response}");
    harness.finish().await;
}

/// Bindings made before one binding per Microsoft tenant was enforced: the migration that adds the
/// rule keeps the first and sets the later aside instead of failing on them (the SQL applied by
/// hand in order, against a real PostgreSQL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rule_migrates_over_duplicate_bindings_keeping_the_first() {
    use sqlx::Connection;

    let env = picket_testkit::TestEnv::new().await;
    let mut db = sqlx::PgConnection::connect(&env.database_url)
        .await
        .expect("the test database");
    for before in [
        include_str!("../migrations/20261123000001_tenants.sql"),
        include_str!("../migrations/20261123000002_scans.sql"),
    ] {
        sqlx::raw_sql(before)
            .execute(&mut db)
            .await
            .expect("migrated");
    }
    // Two partners hold one Microsoft tenant (spelt in two cases); a third holds another.
    sqlx::raw_sql(
        "INSERT INTO tenants (tenant_id, partner_id, microsoft_tenant_id, display_name, plan, state,
             consent_state, consent_expires_at, onboarded_by, created_at, activated_at, updated_at)
         VALUES
         (gen_random_uuid(), 'p-first', 'AAAA-1', 'Contoso', 'standard', 'active', 's1', now(),
          'staff@p-first', now() - interval '2 days', now() - interval '2 days', now()),
         (gen_random_uuid(), 'p-later', 'aaaa-1', 'Contoso', 'standard', 'active', 's2', now(),
          'staff@p-later', now() - interval '1 day', now() - interval '1 day', now()),
         (gen_random_uuid(), 'p-other', 'bbbb-2', 'Fabrikam', 'standard', 'active', 's3', now(),
          'staff@p-other', now(), now(), now())",
    )
    .execute(&mut db)
    .await
    .expect("bindings from before the rule");

    sqlx::raw_sql(include_str!(
        "../migrations/20261203000001_consent_proof.sql"
    ))
    .execute(&mut db)
    .await
    .expect("the rule applies over duplicate bindings");

    let tenants: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT partner_id, state, consent_failure, state_reason FROM tenants ORDER BY partner_id",
    )
    .fetch_all(&mut db)
    .await
    .expect("tenants");
    assert_eq!(
        tenants
            .iter()
            .map(|(partner, state, failure, _)| (
                partner.as_str(),
                state.as_str(),
                failure.as_str()
            ))
            .collect::<Vec<_>>(),
        [
            ("p-first", "active", ""),
            (
                "p-later",
                "consent_failed",
                "CONSENT_FAILURE_ALREADY_CONNECTED"
            ),
            ("p-other", "active", ""),
        ]
    );
    assert!(
        tenants[1]
            .3
            .contains("connected to Picket through another tenant first")
    );
    // From now on the database refuses a second active binding.
    let again = sqlx::query("UPDATE tenants SET state = 'active' WHERE partner_id = 'p-later'")
        .execute(&mut db)
        .await;
    assert!(again.is_err(), "a second active binding is refused");
    drop(db);
    env.teardown().await;
}
