//! The ledger's invariants under random use, through the real service on real PostgreSQL and
//! NATS: rounds of concurrent calls (purchases, holds, posts, voids, engagements, work, closes),
//! some retried with their key and some reusing a key with other fields, and after every round:
//! debits equal credits, every account equals its transfers, no partner below its overdraft
//! limit, every balance equal to its transfers, and every key applied once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::future::join_all;
use picket_platform::Principal;
use picket_platform::auth::Role;
use picket_proto::ledger::v1::credit_ledger_service_client::CreditLedgerServiceClient;
use picket_proto::ledger::v1::engagement_service_client::EngagementServiceClient;
use picket_proto::ledger::v1::{
    AssignInvestigatorRequest, Balance, CloseEngagementRequest, GetBalanceRequest, LogWorkRequest,
    OpenEngagementRequest, PlaceHoldRequest, PostHoldRequest, PurchaseCreditsRequest,
    RequestChannel, SetCreditTermsRequest, VoidHoldRequest,
};
use picket_testkit::TestEnv;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use sqlx::PgPool;
use tonic::transport::Channel;
use tonic::{Code, Status};

mod common;
use common::{assert_books_balance, purchase, start};

/// Partners per case; the second may overdraw by this much.
const PARTNERS: usize = 2;
const OVERDRAFT_LIMIT: i64 = 120;

#[derive(Debug, Clone)]
enum Op {
    Purchase(i64),
    Open(i64),
    Hold(i64),
    Post(usize, i64),
    Void(usize),
    Work(usize, i64),
    Close(usize),
    /// A key already used, sent with other fields: refused, nothing written.
    Reuse,
}

#[derive(Debug, Clone)]
struct Step {
    partner: usize,
    op: Op,
    /// Sent twice at once with the same key.
    retried: bool,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (1..400i64).prop_map(Op::Purchase),
        1 => (0..200i64).prop_map(Op::Open),
        1 => (1..200i64).prop_map(Op::Hold),
        1 => (0..8usize, 0..150i64).prop_map(|(hold, minutes)| Op::Post(hold, minutes)),
        1 => (0..8usize).prop_map(Op::Void),
        4 => (0..8usize, 1..150i64).prop_map(|(engagement, minutes)| Op::Work(engagement, minutes)),
        1 => (0..8usize).prop_map(Op::Close),
        1 => Just(Op::Reuse),
    ]
}

fn rounds() -> impl Strategy<Value = Vec<Vec<Step>>> {
    let step =
        (0..PARTNERS, op(), prop::bool::weighted(0.3)).prop_map(|(partner, op, retried)| Step {
            partner,
            op,
            retried,
        });
    prop::collection::vec(prop::collection::vec(step, 1..5), 1..10)
}

/// What a case knows of its partners: holds and engagements to name, keys that succeeded.
#[derive(Default)]
struct Known {
    holds: Vec<String>,
    engagements: Vec<String>,
    /// Key → operation, for calls that succeeded.
    keys: Vec<(String, &'static str)>,
}

struct Ledger {
    env: TestEnv,
    pool: PgPool,
    credits: CreditLedgerServiceClient<Channel>,
    engagements: EngagementServiceClient<Channel>,
    operator: String,
    investigator: String,
}

/// What one call did: its operation, key, and answer (the ids it made, or the refusal).
struct Outcome {
    partner: usize,
    operation: &'static str,
    key: String,
    answers: Vec<Result<Made, Status>>,
}

#[derive(Debug, Clone, PartialEq)]
struct Made {
    /// The ids the call created and the balance it reported, to compare a retry's answer.
    ids: Vec<String>,
    available: i64,
    replayed: bool,
}

impl Ledger {
    async fn call(
        &self,
        partner_id: &str,
        key: &str,
        op: &Op,
        known: &Known,
    ) -> Option<(&'static str, Result<Made, Status>)> {
        let mut credits = self.credits.clone();
        let mut engagements = self.engagements.clone();
        let pick = |list: &Vec<String>, index: usize| list.get(index % list.len().max(1)).cloned();
        let available =
            |balance: Option<Balance>| balance.map_or(0, |balance| balance.available_minutes);
        let operator = &self.operator;
        let answer = match op {
            Op::Purchase(minutes) => (
                "purchase",
                credits
                    .purchase_credits(self.env.request(
                        operator,
                        PurchaseCreditsRequest {
                            partner_id: partner_id.into(),
                            ..purchase(key, *minutes)
                        },
                    ))
                    .await
                    .map(|response| {
                        let response = response.into_inner();
                        Made {
                            ids: vec![response.pack.map(|pack| pack.pack_id).unwrap_or_default()],
                            available: available(response.balance),
                            replayed: response.replayed,
                        }
                    }),
            ),
            Op::Open(estimate) => {
                let opened = engagements
                    .open_engagement(self.env.request(
                        operator,
                        OpenEngagementRequest {
                            partner_id: partner_id.into(),
                            idempotency_key: key.into(),
                            request: "What happened?".into(),
                            channel: RequestChannel::Chat.into(),
                            estimated_minutes: *estimate,
                            ..Default::default()
                        },
                    ))
                    .await;
                if let Ok(response) = &opened
                    && let Some(engagement) = &response.get_ref().engagement
                {
                    // The investigator works only on what is assigned to them. A retried open may
                    // find the engagement closed already; the assignment then fails and changes
                    // nothing, which is what the books are checked for.
                    let assigned = engagements
                        .assign_investigator(self.env.request(
                            operator,
                            AssignInvestigatorRequest {
                                partner_id: partner_id.into(),
                                idempotency_key: format!("{key}-assign"),
                                engagement_id: engagement.engagement_id.clone(),
                                investigator_subject: "ines@picket".into(),
                            },
                        ))
                        .await;
                    if let Err(status) = assigned {
                        assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
                    }
                }
                (
                    "open",
                    opened.map(|response| {
                        let response = response.into_inner();
                        let engagement = response.engagement.unwrap_or_default();
                        Made {
                            ids: vec![engagement.engagement_id, engagement.hold_id],
                            available: 0,
                            replayed: response.replayed,
                        }
                    }),
                )
            }
            Op::Hold(minutes) => (
                "hold",
                credits
                    .place_hold(self.env.request(
                        operator,
                        PlaceHoldRequest {
                            partner_id: partner_id.into(),
                            idempotency_key: key.into(),
                            minutes: *minutes,
                            ..Default::default()
                        },
                    ))
                    .await
                    .map(|response| {
                        let response = response.into_inner();
                        Made {
                            ids: vec![response.hold.map(|hold| hold.hold_id).unwrap_or_default()],
                            available: available(response.balance),
                            replayed: response.replayed,
                        }
                    }),
            ),
            Op::Post(hold, minutes) => (
                "post",
                credits
                    .post_hold(self.env.request(
                        operator,
                        PostHoldRequest {
                            partner_id: partner_id.into(),
                            idempotency_key: key.into(),
                            hold_id: pick(&known.holds, *hold)?,
                            minutes: *minutes,
                            ..Default::default()
                        },
                    ))
                    .await
                    .map(|response| {
                        let response = response.into_inner();
                        Made {
                            ids: Vec::new(),
                            available: available(response.balance),
                            replayed: response.replayed,
                        }
                    }),
            ),
            Op::Void(hold) => (
                "void",
                credits
                    .void_hold(self.env.request(
                        operator,
                        VoidHoldRequest {
                            partner_id: partner_id.into(),
                            idempotency_key: key.into(),
                            hold_id: pick(&known.holds, *hold)?,
                            ..Default::default()
                        },
                    ))
                    .await
                    .map(|response| {
                        let response = response.into_inner();
                        Made {
                            ids: Vec::new(),
                            available: available(response.balance),
                            replayed: response.replayed,
                        }
                    }),
            ),
            Op::Work(engagement, minutes) => (
                "work",
                engagements
                    .log_work(self.env.request(
                        &self.investigator,
                        LogWorkRequest {
                            partner_id: partner_id.into(),
                            idempotency_key: key.into(),
                            engagement_id: pick(&known.engagements, *engagement)?,
                            minutes: *minutes,
                            description: "Investigated".into(),
                            ..Default::default()
                        },
                    ))
                    .await
                    .map(|response| {
                        let response = response.into_inner();
                        Made {
                            ids: vec![
                                response
                                    .entry
                                    .map(|entry| entry.work_entry_id)
                                    .unwrap_or_default(),
                            ],
                            available: available(response.balance),
                            replayed: response.replayed,
                        }
                    }),
            ),
            Op::Close(engagement) => (
                "close",
                engagements
                    .close_engagement(self.env.request(
                        operator,
                        CloseEngagementRequest {
                            partner_id: partner_id.into(),
                            idempotency_key: key.into(),
                            engagement_id: pick(&known.engagements, *engagement)?,
                            summary: "Done".into(),
                            ..Default::default()
                        },
                    ))
                    .await
                    .map(|response| {
                        let response = response.into_inner();
                        Made {
                            ids: Vec::new(),
                            available: available(response.balance),
                            replayed: response.replayed,
                        }
                    }),
            ),
            Op::Reuse => (
                "reuse",
                credits
                    .purchase_credits(self.env.request(
                        operator,
                        PurchaseCreditsRequest {
                            partner_id: partner_id.into(),
                            idempotency_key: key.into(),
                            // No generated purchase has this many minutes.
                            minutes: 7_777,
                            ..Default::default()
                        },
                    ))
                    .await
                    .map(|_| Made {
                        ids: Vec::new(),
                        available: 0,
                        replayed: false,
                    }),
            ),
        };
        Some(answer)
    }

    async fn balance(&self, partner_id: &str) -> Balance {
        self.credits
            .clone()
            .get_balance(self.env.request(
                &self.operator,
                GetBalanceRequest {
                    partner_id: partner_id.into(),
                },
            ))
            .await
            .expect("balance")
            .into_inner()
            .balance
            .expect("balance")
    }
}

/// Runs one case's rounds on fresh partners, checking the invariants after each round.
async fn run_case(ledger: &Ledger, case: usize, rounds: &[Vec<Step>]) -> Result<(), TestCaseError> {
    let partner_ids: Vec<String> = (0..PARTNERS)
        .map(|partner| format!("c{case}-p{partner}"))
        .collect();
    ledger
        .credits
        .clone()
        .set_credit_terms(ledger.env.request(
            &ledger.operator,
            SetCreditTermsRequest {
                partner_id: partner_ids[1].clone(),
                idempotency_key: "terms".into(),
                overdraft_limit_minutes: OVERDRAFT_LIMIT,
                ..Default::default()
            },
        ))
        .await
        .expect("terms set");
    let mut known: Vec<Known> = (0..PARTNERS).map(|_| Known::default()).collect();
    for (round, steps) in rounds.iter().enumerate() {
        let calls = steps.iter().enumerate().map(|(index, step)| {
            let partner_id = &partner_ids[step.partner];
            let known = &known[step.partner];
            let key = match step.op {
                Op::Reuse => known.keys.first().map(|(key, _)| key.clone()),
                _ => Some(format!("r{round}-s{index}")),
            };
            async move {
                let key = key?;
                let sends = if step.retried { 2 } else { 1 };
                let answers =
                    join_all((0..sends).map(|_| ledger.call(partner_id, &key, &step.op, known)))
                        .await;
                let operation = answers.first()?.as_ref()?.0;
                Some(Outcome {
                    partner: step.partner,
                    operation,
                    key,
                    answers: answers
                        .into_iter()
                        .flatten()
                        .map(|(_, answer)| answer)
                        .collect(),
                })
            }
        });
        let outcomes: Vec<Outcome> = join_all(calls).await.into_iter().flatten().collect();
        for outcome in outcomes {
            check_answers(&outcome)?;
            let Some(made) = outcome
                .answers
                .iter()
                .find_map(|answer| answer.as_ref().ok())
            else {
                continue;
            };
            let known = &mut known[outcome.partner];
            match outcome.operation {
                "reuse" => {}
                "hold" => known.holds.push(made.ids[0].clone()),
                "open" => {
                    known.engagements.push(made.ids[0].clone());
                    if !made.ids[1].is_empty() {
                        known.holds.push(made.ids[1].clone());
                    }
                }
                _ => {}
            }
            if outcome.operation != "reuse" {
                known.keys.push((outcome.key, outcome.operation));
            }
        }
        check_invariants(ledger, &partner_ids, &known).await?;
    }
    Ok(())
}

/// A retry answers as the first call did; a reused key is refused.
fn check_answers(outcome: &Outcome) -> Result<(), TestCaseError> {
    for answer in &outcome.answers {
        if let Err(status) = answer {
            let expected = if outcome.operation == "reuse" {
                vec![Code::InvalidArgument]
            } else {
                vec![
                    Code::FailedPrecondition,
                    Code::InvalidArgument,
                    Code::NotFound,
                ]
            };
            prop_assert!(
                expected.contains(&status.code()),
                "{} {}: {status:?}",
                outcome.operation,
                outcome.key
            );
        }
    }
    if outcome.operation == "reuse" {
        prop_assert!(
            outcome.answers.iter().all(Result::is_err),
            "a reused key is refused"
        );
        return Ok(());
    }
    let made: Vec<&Made> = outcome
        .answers
        .iter()
        .filter_map(|answer| answer.as_ref().ok())
        .collect();
    if made.len() == 2 {
        prop_assert_eq!(
            made.iter().filter(|made| !made.replayed).count(),
            1,
            "one of the two is the first"
        );
        prop_assert_eq!(&made[0].ids, &made[1].ids, "a retry gets the first answer");
        prop_assert_eq!(made[0].available, made[1].available);
    }
    Ok(())
}

async fn check_invariants(
    ledger: &Ledger,
    partner_ids: &[String],
    known: &[Known],
) -> Result<(), TestCaseError> {
    assert_books_balance(&ledger.env).await;
    let pool = &ledger.pool;
    // Pending sums agree with the holds' transfers: a HOLD adds, its post, void or expiry takes back.
    let disagreeing: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM accounts a WHERE
             a.debits_pending <> (SELECT COALESCE(sum(CASE WHEN kind = 'hold' THEN amount ELSE 0 END), 0)
                 FROM transfers t WHERE t.pending AND t.debit_account_id = a.account_id)
                 - (SELECT COALESCE(sum(CASE WHEN kind <> 'hold' THEN amount ELSE 0 END), 0)
                 FROM transfers t WHERE t.pending AND t.credit_account_id = a.account_id)
          OR a.credits_pending <> (SELECT COALESCE(sum(CASE WHEN kind = 'hold' THEN amount ELSE 0 END), 0)
                 FROM transfers t WHERE t.pending AND t.credit_account_id = a.account_id)
                 - (SELECT COALESCE(sum(CASE WHEN kind <> 'hold' THEN amount ELSE 0 END), 0)
                 FROM transfers t WHERE t.pending AND t.debit_account_id = a.account_id)",
    )
    .fetch_one(pool)
    .await
    .expect("pending sums");
    prop_assert_eq!(disagreeing, 0, "pending sums equal the holds' transfers");
    for (index, partner_id) in partner_ids.iter().enumerate() {
        let balance = ledger.balance(partner_id).await;
        let limit = if index == 1 { OVERDRAFT_LIMIT } else { 0 };
        prop_assert!(
            balance.available_minutes >= -limit,
            "{partner_id} below its limit: {balance:?}"
        );
        // No row before the partner's first call.
        let (posted, pending): (i64, i64) = sqlx::query_as(
            "SELECT credits_posted - debits_posted, debits_pending - credits_pending FROM accounts
             WHERE partner_id = $1 AND kind = 'partner_retainer'",
        )
        .bind(partner_id)
        .fetch_optional(pool)
        .await
        .expect("retainer")
        .unwrap_or_default();
        prop_assert_eq!(
            posted,
            balance.available_minutes + balance.held_minutes,
            "{} balance equals its transfers",
            partner_id
        );
        prop_assert_eq!(
            pending,
            balance.held_minutes,
            "{} holds equal their transfers",
            partner_id
        );
        let packs: i64 = balance
            .packs
            .iter()
            .map(|pack| pack.minutes_remaining)
            .sum();
        prop_assert_eq!(packs, balance.remaining_minutes);
        let mut applied: HashMap<&str, i64> = HashMap::new();
        for (key, operation) in &known[index].keys {
            let (table_count, expected) = match *operation {
                "purchase" => (
                    "SELECT count(*) FROM transfers WHERE partner_id = $1 AND idempotency_key = $2 AND kind = 'purchase'",
                    1,
                ),
                "hold" => (
                    "SELECT count(*) FROM transfers WHERE partner_id = $1 AND idempotency_key = $2 AND kind = 'hold'",
                    1,
                ),
                "work" => (
                    "SELECT count(*) FROM work_entries WHERE partner_id = $1 AND idempotency_key = $2",
                    1,
                ),
                _ => continue,
            };
            let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(table_count))
                .bind(partner_id)
                .bind(key)
                .fetch_one(pool)
                .await
                .expect("count");
            prop_assert_eq!(count, expected, "{} {} applied once", operation, key);
            *applied.entry(operation).or_default() += 1;
        }
        let keys: i64 =
            // The assignments that follow each open are the harness's, not the case's.
            sqlx::query_scalar("SELECT count(*) FROM idempotency_keys WHERE partner_id = $1 AND idempotency_key NOT LIKE '%-assign'")
                .bind(partner_id)
                .fetch_one(pool)
                .await
                .expect("keys");
        // Every succeeded call's key, plus the terms set at the start of the case.
        prop_assert_eq!(keys, known[index].keys.len() as i64 + i64::from(index == 1));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_concurrent_operations_keep_the_books() {
    let env = TestEnv::new().await;
    let (_application, credits, engagements) = start(&env).await;
    let ledger = Ledger {
        pool: env.pool("ledger").await,
        operator: env.operator_token(),
        investigator: env.token(&Principal {
            subject: "ines@picket".into(),
            role: Role::Investigator,
            partner_id: None,
            tenant_ids: Vec::new(),
        }),
        credits,
        engagements,
        env,
    };
    let cases = AtomicUsize::new(0);
    let mut runner = TestRunner::new(Config {
        cases: 16,
        failure_persistence: None,
        ..Config::default()
    });
    let handle = tokio::runtime::Handle::current();
    let result = tokio::task::block_in_place(|| {
        runner.run(&rounds(), |rounds| {
            let case = cases.fetch_add(1, Ordering::Relaxed);
            handle.block_on(run_case(&ledger, case, &rounds))
        })
    });
    if let Err(error) = result {
        panic!("{error}");
    }
    ledger.env.teardown().await;
}
