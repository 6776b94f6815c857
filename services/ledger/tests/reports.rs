//! What partners and staff read of the ledger, and what moves on its own: statements for a period
//! (with CSV), transfer, account and work listings, investigator assignment, recommendations, and
//! packs expiring on schedule with CreditsExpired.

use std::time::Duration;

use futures::StreamExt;
use picket_platform::Principal;
use picket_platform::auth::Role;
use picket_platform::time::{to_duration, to_timestamp};
use picket_proto::Event;
use picket_proto::common::v1::TimeRange;
use picket_proto::ledger::v1::{
    AccountKind, AssignInvestigatorRequest, CloseEngagementRequest, CreditsExpired,
    GetBalanceRequest, GetStatementRequest, ListAccountsRequest, ListTransfersRequest,
    ListWorkEntriesRequest, LogWorkRequest, OpenEngagementRequest, PackState,
    PurchaseCreditsRequest, RecommendationInput, RecordRecommendationsRequest, RequestChannel,
    StatementFormat, TransferKind,
};
use picket_testkit::TestEnv;
use prost::Message;
use tonic::Code;

mod common;
use common::{assert_books_balance, purchase, start, start_with};

fn investigator(env: &TestEnv, subject: &str) -> String {
    env.token(&Principal {
        subject: subject.into(),
        role: Role::Investigator,
        partner_id: None,
        tenant_ids: Vec::new(),
    })
}

fn work(key: &str, engagement_id: &str, minutes: i64, description: &str) -> LogWorkRequest {
    LogWorkRequest {
        partner_id: "p1".into(),
        idempotency_key: key.into(),
        engagement_id: engagement_id.into(),
        minutes,
        description: description.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_listings_and_assignment_show_every_movement() {
    let env = TestEnv::new().await;
    let (_ledger, mut credits, mut engagements) = start(&env).await;
    let operator = env.operator_token();
    let partner = env.partner_token("p1");
    let ines = investigator(&env, "ines@picket");
    let ivan = investigator(&env, "ivan@picket");
    let started = chrono::Utc::now() - chrono::Duration::minutes(1);
    credits
        .purchase_credits(env.request(&operator, purchase("order-1", 600)))
        .await
        .expect("bought");
    let engagement = engagements
        .open_engagement(env.request(
            &partner,
            OpenEngagementRequest {
                partner_id: "p1".into(),
                idempotency_key: "ask-1".into(),
                request: "Who read the CFO's mailbox?".into(),
                channel: RequestChannel::Email.into(),
                estimated_minutes: 200,
                ..Default::default()
            },
        ))
        .await
        .expect("opened")
        .into_inner()
        .engagement
        .expect("engagement");
    let engagement_id = engagement.engagement_id.clone();

    // Only the operator assigns; then only the assigned investigator (or staff) logs work.
    let assign = |key: &str| AssignInvestigatorRequest {
        partner_id: "p1".into(),
        idempotency_key: key.into(),
        engagement_id: engagement_id.clone(),
        investigator_subject: "ines@picket".into(),
    };
    let refused = engagements
        .assign_investigator(env.request(&partner, assign("assign-0")))
        .await
        .expect_err("partners do not assign");
    assert_eq!(refused.code(), Code::PermissionDenied);
    let assigned = engagements
        .assign_investigator(env.request(&operator, assign("assign-1")))
        .await
        .expect("assigned")
        .into_inner()
        .engagement
        .expect("engagement");
    assert_eq!(assigned.investigator_subject, "ines@picket");
    let refused = engagements
        .log_work(env.request(&ivan, work("work-0", &engagement_id, 30, "Looked around")))
        .await
        .expect_err("not ivan's engagement");
    assert_eq!(refused.code(), Code::PermissionDenied);
    engagements
        .log_work(env.request(
            &ines,
            work("work-1", &engagement_id, 90, "Sign-in logs, 14 days"),
        ))
        .await
        .expect("logged");
    engagements
        .log_work(env.request(
            &ines,
            work(
                "work-2",
                &engagement_id,
                60,
                "Mailbox audit, rules, \"forwarding\"",
            ),
        ))
        .await
        .expect("logged");
    let recorded = engagements
        .record_recommendations(env.request(
            &ines,
            RecordRecommendationsRequest {
                partner_id: "p1".into(),
                idempotency_key: "recommend-1".into(),
                engagement_id: engagement_id.clone(),
                recommendations: vec![
                    RecommendationInput {
                        title: "Block legacy authentication".into(),
                        ..Default::default()
                    },
                    RecommendationInput {
                        title: "Alert on new inbox rules".into(),
                        ..Default::default()
                    },
                ],
            },
        ))
        .await
        .expect("recorded")
        .into_inner()
        .engagement
        .expect("engagement");
    assert_eq!(recorded.recommendations.len(), 2);
    let closed = engagements
        .close_engagement(env.request(
            &ines,
            CloseEngagementRequest {
                partner_id: "p1".into(),
                idempotency_key: "close-1".into(),
                engagement_id: engagement_id.clone(),
                summary: "A phished session token".into(),
                recommendations: vec![RecommendationInput {
                    title: "Require compliant devices".into(),
                    ..Default::default()
                }],
            },
        ))
        .await
        .expect("closed")
        .into_inner();
    assert_eq!(closed.released_minutes, 50);
    assert_eq!(
        closed.engagement.expect("engagement").recommendations.len(),
        3
    );

    // The statement: 600 bought, 150 used, the estimate reserved and released line by line.
    let period = TimeRange {
        start_time: Some(to_timestamp(started)),
        end_time: Some(to_timestamp(
            chrono::Utc::now() + chrono::Duration::minutes(1),
        )),
    };
    let response = credits
        .get_statement(env.request(
            &partner,
            GetStatementRequest {
                partner_id: "p1".into(),
                period: Some(period),
                format: StatementFormat::Csv.into(),
            },
        ))
        .await
        .expect("statement")
        .into_inner();
    let statement = response.statement.expect("statement");
    assert_eq!(statement.opening_balance_minutes, 0);
    assert_eq!(statement.purchased_minutes, 600);
    assert_eq!(statement.used_minutes, 150);
    assert_eq!(statement.closing_balance_minutes, 450);
    assert_eq!(statement.held_minutes_at_end, 0);
    let kinds: Vec<(TransferKind, i64, i64)> = statement
        .lines
        .iter()
        .map(|line| (line.kind(), line.amount_minutes, line.held_change_minutes))
        .collect();
    assert_eq!(
        kinds,
        [
            (TransferKind::Purchase, 600, 0),
            (TransferKind::Hold, 0, 200),
            (TransferKind::HoldPost, 0, -90),
            (TransferKind::WorkDebit, -90, 0),
            (TransferKind::HoldPost, 0, -60),
            (TransferKind::WorkDebit, -60, 0),
            (TransferKind::HoldVoid, 0, -50),
        ]
    );
    assert_eq!(
        statement.lines.last().expect("lines").balance_after_minutes,
        450
    );
    let csv = String::from_utf8(response.csv).expect("UTF-8");
    let rows: Vec<&str> = csv.split("\r\n").filter(|row| !row.is_empty()).collect();
    assert_eq!(rows.len(), 8, "a header and one row per line: {csv}");
    assert!(rows[0].starts_with("occurred_at,kind,description,amount_minutes"));
    assert!(rows[4].contains(",work_debit,"), "{}", rows[4]);
    assert!(
        csv.contains("\"Mailbox audit, rules, \"\"forwarding\"\"\""),
        "free text is quoted: {csv}"
    );
    // Proto only unless CSV is asked for; another partner's statement is not the partner's to read.
    let proto_only = credits
        .get_statement(env.request(
            &partner,
            GetStatementRequest {
                partner_id: "p1".into(),
                period: Some(period),
                format: StatementFormat::Proto.into(),
            },
        ))
        .await
        .expect("statement")
        .into_inner();
    assert!(proto_only.csv.is_empty());
    let refused = credits
        .get_statement(env.request(
            &partner,
            GetStatementRequest {
                partner_id: "p2".into(),
                period: Some(period),
                format: StatementFormat::Csv.into(),
            },
        ))
        .await
        .expect_err("another partner's");
    assert_eq!(refused.code(), Code::PermissionDenied);
    let refused = credits
        .get_statement(env.request(
            &partner,
            GetStatementRequest {
                partner_id: "p1".into(),
                period: None,
                format: StatementFormat::Csv.into(),
            },
        ))
        .await
        .expect_err("a period is required");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(refused.message().starts_with("period:"), "{refused:?}");

    // Transfers of the engagement, work debits only, each post naming the hold it resolves.
    let transfers = credits
        .list_transfers(env.request(
            &partner,
            ListTransfersRequest {
                partner_id: "p1".into(),
                engagement_id: engagement_id.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("transfers")
        .into_inner()
        .transfers;
    assert_eq!(transfers.len(), 6, "all but the purchase: {transfers:?}");
    let hold = transfers
        .iter()
        .find(|transfer| transfer.kind() == TransferKind::Hold)
        .expect("the hold");
    assert!(
        transfers
            .iter()
            .filter(|transfer| transfer.kind() == TransferKind::HoldPost)
            .all(|post| post.pending_transfer_id == hold.transfer_id)
    );
    let debits = credits
        .list_transfers(env.request(
            &partner,
            ListTransfersRequest {
                partner_id: "p1".into(),
                kinds: vec![TransferKind::WorkDebit.into()],
                ..Default::default()
            },
        ))
        .await
        .expect("transfers")
        .into_inner()
        .transfers;
    assert_eq!(debits.len(), 2);
    assert!(debits.iter().all(|debit| !debit.work_entry_id.is_empty()));

    let entries = engagements
        .list_work_entries(env.request(
            &partner,
            ListWorkEntriesRequest {
                partner_id: "p1".into(),
                engagement_id: engagement_id.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("entries")
        .into_inner()
        .entries;
    let minutes: Vec<i64> = entries.iter().map(|entry| entry.minutes).collect();
    assert_eq!(minutes, [90, 60]);
    assert_eq!(
        entries[0].investigator.as_ref().expect("who").subject,
        "ines@picket"
    );

    // Accounts: the partner sees its retainer; staff see the operator's too.
    let own = credits
        .list_accounts(env.request(
            &partner,
            ListAccountsRequest {
                partner_id: "p1".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("accounts")
        .into_inner()
        .accounts;
    assert_eq!(own.len(), 1);
    assert_eq!(own[0].kind(), AccountKind::PartnerRetainer);
    assert_eq!(
        own[0].credits_posted_minutes - own[0].debits_posted_minutes,
        450
    );
    let refused = credits
        .list_accounts(env.request(&partner, ListAccountsRequest::default()))
        .await
        .expect_err("the operator's accounts are staff's");
    assert_eq!(refused.code(), Code::PermissionDenied);
    let all = credits
        .list_accounts(env.request(&operator, ListAccountsRequest::default()))
        .await
        .expect("accounts")
        .into_inner()
        .accounts;
    assert_eq!(all.len(), 4);
    let consumed = all
        .iter()
        .find(|account| account.kind() == AccountKind::OperatorConsumed)
        .expect("consumed");
    assert_eq!(consumed.credits_posted_minutes, 150);
    assert_books_balance(&env).await;
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packs_expire_on_schedule_and_the_partner_hears_of_it() {
    let env = TestEnv::new().await;
    let (_ledger, mut credits, _) =
        start_with(&env, "[ledger]\nexpiry_sweep_interval = \"200ms\"\n").await;
    let operator = env.operator_token();
    let subject = format!(
        "{}.{}.v1.{}.>",
        env.namespace,
        CreditsExpired::AREA.token(),
        CreditsExpired::TOKEN
    );
    let mut expiries = env.nats.subscribe(subject).await.expect("subscribe");
    let pack = credits
        .purchase_credits(env.request(
            &operator,
            PurchaseCreditsRequest {
                validity: Some(to_duration(Duration::from_secs(1))),
                ..purchase("order-short", 45)
            },
        ))
        .await
        .expect("bought")
        .into_inner()
        .pack
        .expect("pack");
    credits
        .purchase_credits(env.request(&operator, purchase("order-long", 600)))
        .await
        .expect("bought");

    // No call touches the partner: the sweep expires the short pack.
    let message = tokio::time::timeout(Duration::from_secs(10), expiries.next())
        .await
        .expect("CreditsExpired in time")
        .expect("a message");
    let expired = CreditsExpired::decode(message.payload).expect("decodes");
    assert_eq!(expired.pack_id, pack.pack_id);
    assert_eq!(expired.minutes, 45);
    assert_eq!(expired.available_minutes, 600);
    let balance = credits
        .get_balance(env.request(
            &operator,
            GetBalanceRequest {
                partner_id: "p1".into(),
            },
        ))
        .await
        .expect("balance")
        .into_inner()
        .balance
        .expect("balance");
    assert_eq!(balance.available_minutes, 600);
    let short = balance
        .packs
        .iter()
        .find(|candidate| candidate.pack_id == pack.pack_id)
        .expect("the short pack");
    assert_eq!(short.state(), PackState::Expired);
    assert_eq!(short.minutes_expired, 45);
    let transfers = credits
        .list_transfers(env.request(
            &operator,
            ListTransfersRequest {
                partner_id: "p1".into(),
                kinds: vec![TransferKind::Expiry.into()],
                ..Default::default()
            },
        ))
        .await
        .expect("transfers")
        .into_inner()
        .transfers;
    assert_eq!(
        transfers.len(),
        1,
        "expired once, however often the sweep runs"
    );
    assert_eq!(transfers[0].transfer_id, expired.transfer_id);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), expiries.next())
            .await
            .is_err(),
        "no second CreditsExpired"
    );
    assert_books_balance(&env).await;
    env.teardown().await;
}
