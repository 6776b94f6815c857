//! The ledger's credit calls against real PostgreSQL and NATS: packs issued by the operator only,
//! balances read by their partner, idempotent retries, holds, and the books balancing.

use std::time::Duration;

use picket_proto::ledger::v1::{
    GetBalanceRequest, GetCreditTermsRequest, GetHoldRequest, HoldState, ListHoldsRequest,
    PlaceHoldRequest, PostHoldRequest, SetCreditTermsRequest, VoidHoldRequest,
};
use picket_testkit::TestEnv;

mod common;
use common::{assert_books_balance, purchase, start};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_issues_credits_once_per_key_and_the_partner_reads_its_balance() {
    let env = TestEnv::new().await;
    let (_ledger, mut client, _) = start(&env).await;
    let operator = env.operator_token();

    let bought = client
        .purchase_credits(env.request(&operator, purchase("order-1", 1200)))
        .await
        .expect("bought")
        .into_inner();
    assert!(!bought.replayed);
    let pack = bought.pack.expect("pack");
    assert_eq!(pack.minutes_purchased, 1200);
    assert_eq!(pack.minutes_remaining, 1200);
    assert_eq!(bought.balance.expect("balance").available_minutes, 1200);

    // A retry gets the first answer and buys nothing more; other fields under the key are refused.
    let again = client
        .purchase_credits(env.request(&operator, purchase("order-1", 1200)))
        .await
        .expect("retried")
        .into_inner();
    assert!(again.replayed);
    assert_eq!(again.pack.expect("pack").pack_id, pack.pack_id);
    let conflict = client
        .purchase_credits(env.request(&operator, purchase("order-1", 600)))
        .await
        .expect_err("same key, other minutes");
    assert_eq!(conflict.code(), Code::InvalidArgument);
    assert!(conflict.message().starts_with("idempotency_key:"));

    // The partner reads its own balance, and no one else's.
    let partner = env.partner_token("p1");
    let balance = client
        .get_balance(env.request(
            &partner,
            GetBalanceRequest {
                partner_id: "p1".into(),
            },
        ))
        .await
        .expect("balance")
        .into_inner()
        .balance
        .expect("balance");
    assert_eq!(balance.available_minutes, 1200);
    assert_eq!(balance.packs.len(), 1);
    assert!(balance.next_expiry_at.is_some());
    let other = client
        .get_balance(env.request(
            &env.partner_token("p2"),
            GetBalanceRequest {
                partner_id: "p1".into(),
            },
        ))
        .await
        .expect_err("not p2's");
    assert_eq!(other.code(), Code::PermissionDenied);

    // Only the operator issues credits.
    let refused = client
        .purchase_credits(env.request(&partner, purchase("order-2", 60)))
        .await
        .expect_err("partners do not issue credits");
    assert_eq!(refused.code(), Code::PermissionDenied);
    let bad = client
        .purchase_credits(env.request(&operator, purchase("order-3", 0)))
        .await
        .expect_err("nothing to buy");
    assert_eq!(bad.message(), "minutes: must be positive");

    assert_books_balance(&env).await;
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_retries_of_one_purchase_buy_once() {
    let env = TestEnv::new().await;
    let (_ledger, client, _) = start(&env).await;
    let operator = env.operator_token();
    let attempts = (0..8).map(|_| {
        let mut client = client.clone();
        let request = env.request(&operator, purchase("order-1", 600));
        tokio::spawn(async move { client.purchase_credits(request).await })
    });
    let mut pack_ids = Vec::new();
    for attempt in attempts {
        let response = attempt.await.expect("joined").expect("bought").into_inner();
        pack_ids.push(response.pack.expect("pack").pack_id);
    }
    pack_ids.dedup();
    assert_eq!(pack_ids.len(), 1, "one pack whatever the retries");
    let pool = env.pool("ledger").await;
    let transfers: i64 = sqlx::query_scalar("SELECT count(*) FROM transfers")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(transfers, 1);
    let changed = sqlx::query("UPDATE transfers SET amount = 1")
        .execute(&pool)
        .await;
    assert!(changed.is_err(), "transfers are immutable");
    assert_books_balance(&env).await;
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credit_terms_are_set_by_the_operator_and_read_by_the_partner() {
    let env = TestEnv::new().await;
    let (_ledger, mut client, _) = start(&env).await;
    let set = SetCreditTermsRequest {
        partner_id: "p1".into(),
        idempotency_key: "terms-1".into(),
        overdraft_limit_minutes: 120,
        low_balance_threshold_minutes: 300,
    };
    let refused = client
        .set_credit_terms(env.request(&env.partner_token("p1"), set.clone()))
        .await
        .expect_err("partners do not set their terms");
    assert_eq!(refused.code(), Code::PermissionDenied);
    client
        .set_credit_terms(env.request(&env.operator_token(), set))
        .await
        .expect("set");
    let terms = client
        .get_credit_terms(env.request(
            &env.partner_token("p1"),
            GetCreditTermsRequest {
                partner_id: "p1".into(),
            },
        ))
        .await
        .expect("terms")
        .into_inner()
        .terms
        .expect("terms");
    assert_eq!(terms.overdraft_limit_minutes, 120);
    assert_eq!(terms.low_balance_threshold_minutes, 300);
    assert_eq!(
        terms.updated_by.map(|by| by.subject).as_deref(),
        Some("operator")
    );
    env.teardown().await;
}

fn hold_request(key: &str, minutes: i64) -> PlaceHoldRequest {
    PlaceHoldRequest {
        partner_id: "p1".into(),
        idempotency_key: key.into(),
        minutes,
        description: "Estimated effort: mailbox compromise".into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_reserve_credits_until_posted_voided_or_expired() {
    let env = TestEnv::new().await;
    let (_ledger, mut client, _) = start(&env).await;
    let operator = env.operator_token();
    client
        .purchase_credits(env.request(&operator, purchase("order-1", 1200)))
        .await
        .expect("bought");

    let placed = client
        .place_hold(env.request(&operator, hold_request("hold-1", 500)))
        .await
        .expect("held")
        .into_inner();
    let hold = placed.hold.expect("hold");
    assert_eq!(hold.state(), HoldState::Pending);
    let balance = placed.balance.expect("balance");
    assert_eq!(
        (balance.available_minutes, balance.held_minutes),
        (700, 500)
    );

    // No overdraft: a hold beyond what is available is refused and writes nothing.
    let refused = client
        .place_hold(env.request(&operator, hold_request("hold-2", 701)))
        .await
        .expect_err("beyond the balance");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused.message().starts_with("minutes:"),
        "{}",
        refused.message()
    );

    // Posting part of the hold debits it and releases the rest.
    let posted = client
        .post_hold(env.request(
            &operator,
            PostHoldRequest {
                partner_id: "p1".into(),
                idempotency_key: "post-1".into(),
                hold_id: hold.hold_id.clone(),
                minutes: 300,
                ..Default::default()
            },
        ))
        .await
        .expect("posted")
        .into_inner();
    let posted_hold = posted.hold.expect("hold");
    assert_eq!(posted_hold.state(), HoldState::Posted);
    assert_eq!(posted_hold.posted_minutes, 300);
    let balance = posted.balance.expect("balance");
    assert_eq!((balance.available_minutes, balance.held_minutes), (900, 0));
    let again = client
        .void_hold(env.request(
            &operator,
            VoidHoldRequest {
                partner_id: "p1".into(),
                idempotency_key: "void-1".into(),
                hold_id: hold.hold_id.clone(),
                reason: "too late".into(),
            },
        ))
        .await
        .expect_err("posted already");
    assert_eq!(again.code(), Code::FailedPrecondition);

    // A hold left alone expires at its timeout, released by the next movement.
    let short = PlaceHoldRequest {
        timeout: Some(picket_platform::time::to_duration(Duration::from_millis(
            500,
        ))),
        ..hold_request("hold-3", 100)
    };
    let lapsing = client
        .place_hold(env.request(&operator, short))
        .await
        .expect("held")
        .into_inner()
        .hold
        .expect("hold");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let after = client
        .purchase_credits(env.request(&operator, purchase("order-2", 60)))
        .await
        .expect("bought")
        .into_inner()
        .balance
        .expect("balance");
    assert_eq!(after.held_minutes, 0);
    assert_eq!(after.available_minutes, 960);
    let expired = client
        .get_hold(env.request(
            &env.partner_token("p1"),
            GetHoldRequest {
                hold_id: lapsing.hold_id.clone(),
            },
        ))
        .await
        .expect("hold")
        .into_inner()
        .hold
        .expect("hold");
    assert_eq!(expired.state(), HoldState::Expired);
    let listed = client
        .list_holds(env.request(
            &env.partner_token("p1"),
            ListHoldsRequest {
                partner_id: "p1".into(),
                states: vec![HoldState::Posted.into()],
                ..Default::default()
            },
        ))
        .await
        .expect("listed")
        .into_inner()
        .holds;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].hold_id, hold.hold_id);

    assert_books_balance(&env).await;
    let pool = env.pool("ledger").await;
    let pending: i64 = sqlx::query_scalar(
        "SELECT (sum(debits_pending) + sum(credits_pending))::int8 FROM accounts",
    )
    .fetch_one(&pool)
    .await
    .expect("pending");
    assert_eq!(pending, 0, "every hold resolved, nothing pending");
    env.teardown().await;
}
