//! A message that is not a valid event goes to the service's dead-letter subject with its reason,
//! and the consumer goes on with the next one.

use std::time::Duration;

use futures::StreamExt;
use picket_e2e::{start_prioritizer, suspicious_sign_in};
use picket_proto::findings::v1::FindingObserved;
use picket_testkit::{TestEnv, dead_letter_reason, eventually};

fn finding(fingerprint: &str) -> FindingObserved {
    suspicious_sign_in("p1", "t1", fingerprint)
}

async fn next_dead_letter(subscriber: &mut async_nats::Subscriber) -> async_nats::Message {
    tokio::time::timeout(Duration::from_secs(20), subscriber.next())
        .await
        .expect("a dead letter arrives")
        .expect("subscription open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn undecodable_messages_are_dead_lettered_and_the_consumer_goes_on() {
    let env = TestEnv::new().await;
    let mut dead_letters = env
        .nats
        .subscribe(env.subjects.dead_letter_subject("prioritizer"))
        .await
        .expect("subscribe");
    let prioritizer = start_prioritizer(&env, "").await;
    let subject = env.subjects.for_event(&finding("x")).expect("valid ids");

    // A payload that is not protobuf, under valid CloudEvents headers.
    let mut garbage = picket_platform::nats::OutgoingEvent::new(
        &env.subjects,
        "scanner",
        &finding("x"),
        chrono::Utc::now(),
    )
    .expect("valid ids");
    garbage.payload = b"\xff\xff\xff\xff".to_vec();
    env.publish_outgoing(&garbage).await;
    let first = next_dead_letter(&mut dead_letters).await;
    assert!(
        dead_letter_reason(&first).contains("undecodable event"),
        "reason: {}",
        dead_letter_reason(&first)
    );
    assert_eq!(
        first.payload.as_ref(),
        b"\xff\xff\xff\xff",
        "the original payload is kept"
    );

    // No CloudEvents headers at all.
    env.jetstream
        .publish(subject.clone(), "plain text".into())
        .await
        .expect("publish")
        .await
        .expect("ack");
    let second = next_dead_letter(&mut dead_letters).await;
    assert!(
        dead_letter_reason(&second).contains("no headers"),
        "reason: {}",
        dead_letter_reason(&second)
    );

    // A well-formed event that breaks a rule: no fingerprint.
    env.publish("scanner", &finding("")).await;
    let third = next_dead_letter(&mut dead_letters).await;
    assert!(
        dead_letter_reason(&third).contains("fingerprint is required"),
        "reason: {}",
        dead_letter_reason(&third)
    );

    // The consumer goes on: a valid finding still opens its incident.
    env.publish("scanner", &finding("fp-valid")).await;
    let pool = env.pool("prioritizer").await;
    eventually(
        Duration::from_secs(20),
        "the valid finding's incident",
        || {
            let pool = pool.clone();
            async move {
                let count: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM incidents WHERE fingerprint = 'fp-valid'",
                )
                .fetch_one(&pool)
                .await
                .expect("count");
                (count == 1).then_some(())
            }
        },
    )
    .await;

    prioritizer.shutdown().await;
    env.teardown().await;
}
