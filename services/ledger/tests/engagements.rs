//! Engagements against real PostgreSQL and NATS: a partner asks for incident response with an
//! estimate, investigators' work is paid from the hold and the oldest pack first, the partner is
//! told when its credits run low, closing releases the rest, and concurrent work never overdraws.

use std::time::Duration;

use futures::StreamExt;
use picket_platform::Principal;
use picket_platform::auth::Role;
use picket_proto::Event;
use picket_proto::ledger::v1::engagement_service_client::EngagementServiceClient;
use picket_proto::ledger::v1::{
    AssignInvestigatorRequest, BalanceLow, CloseEngagementRequest, LogWorkRequest,
    OpenEngagementRequest, PlaceHoldRequest, PurchaseCreditsRequest, RecommendationInput,
    RequestChannel, SetCreditTermsRequest, VoidHoldRequest,
};
use picket_testkit::TestEnv;
use tonic::Code;

mod common;
use common::{assert_books_balance, purchase, start};

fn investigator(env: &TestEnv) -> String {
    env.token(&Principal {
        subject: "ines@picket".into(),
        role: Role::Investigator,
        partner_id: None,
        tenant_ids: Vec::new(),
    })
}

/// The operator assigns the engagement to the test's investigator, who may then work on it.
async fn assign_to_investigator(
    env: &TestEnv,
    engagements: &mut EngagementServiceClient<tonic::transport::Channel>,
    engagement_id: &str,
) {
    engagements
        .assign_investigator(env.request(
            &env.operator_token(),
            AssignInvestigatorRequest {
                partner_id: "p1".into(),
                idempotency_key: format!("assign-{engagement_id}"),
                engagement_id: engagement_id.into(),
                investigator_subject: "ines@picket".into(),
            },
        ))
        .await
        .expect("assigned");
}

fn work(key: &str, engagement_id: &str, minutes: i64) -> LogWorkRequest {
    LogWorkRequest {
        partner_id: "p1".into(),
        idempotency_key: key.into(),
        engagement_id: engagement_id.into(),
        minutes,
        description: "Reviewed sign-in logs and mailbox rules".into(),
        ..Default::default()
    }
}

fn open(key: &str, estimated_minutes: i64) -> OpenEngagementRequest {
    OpenEngagementRequest {
        partner_id: "p1".into(),
        idempotency_key: key.into(),
        tenant_id: "t1".into(),
        incident_id: "i-1".into(),
        request: "How did the attacker get in, and what did they read?".into(),
        channel: RequestChannel::Telephone.into(),
        partner_contact_name: "Sam (MSP SOC)".into(),
        estimated_minutes,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_is_paid_from_the_hold_and_the_oldest_pack_and_closing_releases_the_rest() {
    let env = TestEnv::new().await;
    let (_ledger, mut credits, mut engagements) = start(&env).await;
    let operator = env.operator_token();
    let partner = env.partner_token("p1");
    let investigator = investigator(&env);
    let later = credits
        .purchase_credits(env.request(&operator, purchase("order-1", 600)))
        .await
        .expect("bought")
        .into_inner()
        .pack
        .expect("pack");
    let sooner = credits
        .purchase_credits(env.request(
            &operator,
            PurchaseCreditsRequest {
                validity: Some(picket_platform::time::to_duration(Duration::from_secs(
                    30 * 86_400,
                ))),
                ..purchase("order-2", 300)
            },
        ))
        .await
        .expect("bought")
        .into_inner()
        .pack
        .expect("pack");
    credits
        .set_credit_terms(env.request(
            &operator,
            SetCreditTermsRequest {
                partner_id: "p1".into(),
                idempotency_key: "terms-1".into(),
                overdraft_limit_minutes: 0,
                low_balance_threshold_minutes: 400,
            },
        ))
        .await
        .expect("terms");
    let low_subject = format!(
        "{}.{}.v1.{}.>",
        env.namespace,
        BalanceLow::AREA.token(),
        BalanceLow::TOKEN
    );
    let mut lows = env.nats.subscribe(low_subject).await.expect("subscribe");

    // The partner asks, by telephone, with an estimate: a hold.
    let opened = engagements
        .open_engagement(env.request(&partner, open("ask-1", 200)))
        .await
        .expect("opened")
        .into_inner();
    let engagement = opened.engagement.expect("engagement");
    assert_eq!(engagement.held_minutes, 200);
    assert_eq!(engagement.channel(), RequestChannel::Telephone);
    let refused = engagements
        .log_work(env.request(&partner, work("work-0", &engagement.engagement_id, 10)))
        .await
        .expect_err("partners do not log work");
    assert_eq!(refused.code(), Code::PermissionDenied);
    // A tenant id that could not travel in a subject is named, not an internal error.
    let bad_tenant = engagements
        .open_engagement(env.request(
            &partner,
            OpenEngagementRequest {
                tenant_id: "t1.>".into(),
                ..open("ask-bad", 10)
            },
        ))
        .await
        .expect_err("refused");
    assert_eq!(bad_tenant.code(), Code::InvalidArgument);
    assert!(
        bad_tenant.message().starts_with("tenant_id:"),
        "{}",
        bad_tenant.message()
    );

    // Only once the engagement is assigned to them does an investigator work on it.
    let unassigned = engagements
        .log_work(env.request(
            &investigator,
            work("work-unassigned", &engagement.engagement_id, 10),
        ))
        .await
        .expect_err("not assigned yet");
    assert_eq!(unassigned.code(), Code::PermissionDenied);
    // Nor does an investigator touch its hold, or place one outside an engagement of theirs.
    let void = credits
        .void_hold(env.request(
            &investigator,
            VoidHoldRequest {
                partner_id: "p1".into(),
                idempotency_key: "void-unassigned".into(),
                hold_id: engagement.hold_id.clone(),
                reason: "not mine to void".into(),
            },
        ))
        .await
        .expect_err("not assigned");
    assert_eq!(void.code(), Code::PermissionDenied);
    let free_hold = credits
        .place_hold(env.request(
            &investigator,
            PlaceHoldRequest {
                partner_id: "p1".into(),
                idempotency_key: "hold-free".into(),
                minutes: 30,
                description: "a hold of my own".into(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("no engagement of theirs");
    assert_eq!(free_hold.code(), Code::PermissionDenied);
    assign_to_investigator(&env, &mut engagements, &engagement.engagement_id).await;

    // Work is paid from the hold, from the pack that expires first.
    let first = engagements
        .log_work(env.request(
            &investigator,
            work("work-1", &engagement.engagement_id, 250),
        ))
        .await
        .expect("logged")
        .into_inner();
    let entry = first.entry.expect("entry");
    assert_eq!(entry.debits.len(), 1);
    assert_eq!(entry.debits[0].pack_id, sooner.pack_id);
    let balance = first.balance.expect("balance");
    assert_eq!((balance.available_minutes, balance.held_minutes), (650, 0));

    // Crossing the threshold tells the partner, once.
    let second = engagements
        .log_work(env.request(
            &investigator,
            work("work-2", &engagement.engagement_id, 300),
        ))
        .await
        .expect("logged")
        .into_inner();
    let debits: Vec<(String, i64)> = second
        .entry
        .expect("entry")
        .debits
        .into_iter()
        .map(|debit| (debit.pack_id, debit.minutes))
        .collect();
    assert_eq!(
        debits,
        [(sooner.pack_id.clone(), 50), (later.pack_id.clone(), 250)]
    );
    assert_eq!(second.balance.expect("balance").available_minutes, 350);
    let low = tokio::time::timeout(Duration::from_secs(10), lows.next())
        .await
        .expect("BalanceLow in time")
        .expect("a message");
    assert!(!low.payload.is_empty());

    let closed = engagements
        .close_engagement(env.request(
            &investigator,
            CloseEngagementRequest {
                partner_id: "p1".into(),
                idempotency_key: "close-1".into(),
                engagement_id: engagement.engagement_id.clone(),
                summary: "Token theft through an AiTM phishing page.".into(),
                recommendations: vec![RecommendationInput {
                    title: "Require phishing-resistant MFA for admins".into(),
                    ..Default::default()
                }],
            },
        ))
        .await
        .expect("closed")
        .into_inner();
    assert_eq!(closed.released_minutes, 0, "the work used the whole hold");
    let closed_engagement = closed.engagement.expect("engagement");
    assert_eq!(closed_engagement.logged_minutes, 550);
    assert_eq!(closed_engagement.recommendations.len(), 1);
    let late = engagements
        .log_work(env.request(&investigator, work("work-3", &engagement.engagement_id, 10)))
        .await
        .expect_err("closed");
    assert_eq!(late.code(), Code::FailedPrecondition);

    // An estimate left unused is released when the engagement closes.
    let spare = engagements
        .open_engagement(env.request(&partner, open("ask-2", 100)))
        .await
        .expect("opened")
        .into_inner()
        .engagement
        .expect("engagement");
    let not_theirs = engagements
        .close_engagement(env.request(
            &investigator,
            CloseEngagementRequest {
                partner_id: "p1".into(),
                idempotency_key: "close-unassigned".into(),
                engagement_id: spare.engagement_id.clone(),
                summary: "Closing someone else's work.".into(),
                recommendations: Vec::new(),
            },
        ))
        .await
        .expect_err("an unassigned investigator does not close it");
    assert_eq!(not_theirs.code(), Code::PermissionDenied);
    assign_to_investigator(&env, &mut engagements, &spare.engagement_id).await;
    let released = engagements
        .close_engagement(env.request(
            &investigator,
            CloseEngagementRequest {
                partner_id: "p1".into(),
                idempotency_key: "close-2".into(),
                engagement_id: spare.engagement_id.clone(),
                summary: "Not needed after all.".into(),
                recommendations: Vec::new(),
            },
        ))
        .await
        .expect("closed")
        .into_inner();
    assert_eq!(released.released_minutes, 100);
    assert_eq!(released.balance.expect("balance").available_minutes, 350);
    assert_books_balance(&env).await;
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_work_never_overdraws_the_retainer() {
    let env = TestEnv::new().await;
    let (_ledger, mut credits, mut engagements) = start(&env).await;
    let operator = env.operator_token();
    let investigator = investigator(&env);
    credits
        .purchase_credits(env.request(&operator, purchase("order-1", 350)))
        .await
        .expect("bought");
    let engagement = engagements
        .open_engagement(env.request(&env.partner_token("p1"), open("ask-1", 0)))
        .await
        .expect("opened")
        .into_inner()
        .engagement
        .expect("engagement");
    assign_to_investigator(&env, &mut engagements, &engagement.engagement_id).await;
    let attempts: Vec<_> = (0..8)
        .map(|index| {
            let mut engagements = engagements.clone();
            let request = env.request(
                &investigator,
                work(&format!("work-{index}"), &engagement.engagement_id, 100),
            );
            tokio::spawn(async move { engagements.log_work(request).await })
        })
        .collect();
    let mut accepted = 0;
    for attempt in attempts {
        match attempt.await.expect("joined") {
            Ok(_) => accepted += 1,
            Err(status) => assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}"),
        }
    }
    assert_eq!(
        accepted, 3,
        "350 minutes pay for three 100-minute entries, not four"
    );
    let balance = credits
        .get_balance(env.request(
            &operator,
            picket_proto::ledger::v1::GetBalanceRequest {
                partner_id: "p1".into(),
            },
        ))
        .await
        .expect("balance")
        .into_inner()
        .balance
        .expect("balance");
    assert_eq!(balance.available_minutes, 50);
    assert_books_balance(&env).await;
    env.teardown().await;
}
