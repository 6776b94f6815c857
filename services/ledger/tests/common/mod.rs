//! What the ledger's integration tests share: a ledger on a test environment, a purchase, and the
//! check that the books balance.

use picket_platform::Application;
use picket_proto::ledger::v1::PurchaseCreditsRequest;
use picket_proto::ledger::v1::credit_ledger_service_client::CreditLedgerServiceClient;
use picket_proto::ledger::v1::engagement_service_client::EngagementServiceClient;
use picket_testkit::TestEnv;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// A started ledger and clients of its two services.
pub async fn start(
    env: &TestEnv,
) -> (
    Application,
    CreditLedgerServiceClient<Channel>,
    EngagementServiceClient<Channel>,
) {
    start_with(env, "").await
}

/// A ledger started with `toml` over the test settings.
pub async fn start_with(
    env: &TestEnv,
    toml: &str,
) -> (
    Application,
    CreditLedgerServiceClient<Channel>,
    EngagementServiceClient<Channel>,
) {
    let (platform, own) = env.settings(ledger::SERVICE, ledger::DEFAULTS, toml);
    let application = ledger::build(platform, own, CancellationToken::new())
        .await
        .expect("ledger starts");
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", application.grpc_address()))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
    (
        application,
        CreditLedgerServiceClient::new(channel.clone()),
        EngagementServiceClient::new(channel),
    )
}

pub fn purchase(key: &str, minutes: i64) -> PurchaseCreditsRequest {
    PurchaseCreditsRequest {
        partner_id: "p1".into(),
        idempotency_key: key.into(),
        minutes,
        purchase_reference: "INV-2026-001".into(),
        description: "Retainer 20 h, 12 months".into(),
        ..Default::default()
    }
}

/// Debits equal credits across all accounts, and every account's sums equal its transfers.
pub async fn assert_books_balance(env: &TestEnv) {
    let pool = env.pool("ledger").await;
    let (debits, credits): (i64, i64) = sqlx::query_as(
        "SELECT COALESCE(sum(debits_posted), 0)::int8, COALESCE(sum(credits_posted), 0)::int8 FROM accounts",
    )
    .fetch_one(&pool)
    .await
    .expect("sums");
    assert_eq!(debits, credits, "debits equal credits");
    let disagreeing: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM accounts a WHERE
             a.debits_posted <> (SELECT COALESCE(sum(amount), 0) FROM transfers t
                 WHERE t.debit_account_id = a.account_id AND NOT t.pending)
          OR a.credits_posted <> (SELECT COALESCE(sum(amount), 0) FROM transfers t
                 WHERE t.credit_account_id = a.account_id AND NOT t.pending)",
    )
    .fetch_one(&pool)
    .await
    .expect("per account");
    assert_eq!(disagreeing, 0, "every account agrees with its transfers");
}
