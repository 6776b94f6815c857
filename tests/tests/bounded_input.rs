//! Bounded input: every string field of every request of every rpc, sent 3 MB long, is refused by
//! name with its limit; malformed requests get a clear error; afterwards events still flow. And an
//! event the outbox relay can never publish is set aside without holding up the ones behind it.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use graph_sim::{GraphSim, SimConfig};
use picket_e2e::raw::{call, contracts, length_delimited};
use picket_e2e::{admin_get, channel, start_every_service, start_prioritizer, suspicious_sign_in};
use picket_platform::Application;
use picket_proto::incidents::v1::IncidentOpened;
use picket_testkit::{TestEnv, dead_letter_reason};
use prost::Message;
use prost_types::field_descriptor_proto::Type;

/// Every string field reachable from a message (nested messages to `depth`), as its dotted name
/// and a function that wraps a value into the encoded request.
fn string_fields(
    messages: &HashMap<String, prost_types::DescriptorProto>,
    type_name: &str,
    prefix: &str,
    path: &[i32],
    depth: usize,
    into: &mut Vec<(String, Vec<i32>)>,
) {
    let Some(message) = messages.get(type_name) else {
        return;
    };
    for field in &message.field {
        let name = format!("{prefix}{}", field.name());
        let mut numbers = path.to_vec();
        numbers.push(field.number());
        match field.r#type() {
            Type::String => into.push((name, numbers)),
            Type::Message if depth > 0 && !field.type_name().starts_with(".google.") => {
                string_fields(
                    messages,
                    field.type_name(),
                    &format!("{name}."),
                    &numbers,
                    depth - 1,
                    into,
                );
            }
            _ => {}
        }
    }
}

/// A request whose field at `numbers` (outermost first) holds `value`.
fn request_with(numbers: &[i32], value: &[u8]) -> Vec<u8> {
    numbers.iter().rev().fold(value.to_vec(), |inner, number| {
        length_delimited(*number, &inner)
    })
}

struct Picket {
    env: TestEnv,
    _sim: GraphSim,
    /// The services by protobuf package.
    applications: HashMap<&'static str, Application>,
}

async fn start_picket() -> Picket {
    let env = TestEnv::new().await;
    let sim = GraphSim::start(SimConfig::default(), ([127, 0, 0, 1], 0).into())
        .await
        .expect("graph-sim starts");
    let applications = start_every_service(&env, &sim, "")
        .await
        .into_iter()
        .collect();
    Picket {
        env,
        _sim: sim,
        applications,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_string_field_of_every_rpc_is_bounded_and_events_flow_afterwards() {
    let picket = start_picket().await;
    let (set, messages) = contracts();
    let token = picket.env.operator_token();
    let oversized = vec![b'x'; 3 * 1024 * 1024];
    let mut checked = 0;
    for file in &set.file {
        if file.service.is_empty() {
            continue;
        }
        let application = picket
            .applications
            .get(file.package())
            .unwrap_or_else(|| panic!("no service serves {}", file.package()));
        let channel = channel(application).await;
        for service in &file.service {
            for method in &service.method {
                let path = format!("/{}.{}/{}", file.package(), service.name(), method.name());
                let mut fields = Vec::new();
                string_fields(&messages, method.input_type(), "", &[], 3, &mut fields);
                for (name, numbers) in fields {
                    let status = call(&channel, &token, &path, request_with(&numbers, &oversized))
                        .await
                        .expect_err("a 3 MB field is refused");
                    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{path} {name}");
                    let limit = picket_proto::limits::text_limit(
                        name.rsplit('.').next().unwrap_or_default(),
                    );
                    assert_eq!(
                        status.message(),
                        format!("{name}: at most {limit} bytes"),
                        "{path}"
                    );
                    checked += 1;
                }
                // Malformed: a truncated length, a wire type protobuf does not have, and a length
                // running past the end.
                for malformed in [vec![0x0a, 0xff], vec![0x0f, 0x01], vec![0x0a, 0x05, 0x01]] {
                    let status = call(&channel, &token, &path, malformed)
                        .await
                        .expect_err("malformed input is refused");
                    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{path}");
                    assert_eq!(status.message(), "request: not a valid protobuf message");
                }
            }
        }
    }
    assert!(checked > 100, "only {checked} string fields checked");

    // Events flow as before: a suspicious sign-in still opens an incident.
    let mut opened = picket
        .env
        .nats
        .subscribe(format!(
            "{}.incidents.v1.incident_opened.>",
            picket.env.namespace
        ))
        .await
        .expect("subscribe");
    picket
        .env
        .publish("scanner", &suspicious_sign_in("p1", "t1", "fp-after"))
        .await;
    let message = tokio::time::timeout(Duration::from_secs(30), opened.next())
        .await
        .expect("an incident opens")
        .expect("subscription open");
    let event = IncidentOpened::decode(message.payload).expect("IncidentOpened");
    assert_eq!(event.incident.expect("incident").fingerprint, "fp-after");
    for (_, application) in picket.applications {
        application.shutdown().await;
    }
    picket.env.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_too_large_to_publish_is_set_aside_and_the_rest_flow() {
    let env = TestEnv::new().await;
    let mut dead_letters = env
        .nats
        .subscribe(env.subjects.dead_letter_subject("prioritizer"))
        .await
        .expect("subscribe");
    let mut opened = env
        .nats
        .subscribe(format!("{}.incidents.v1.incident_opened.>", env.namespace))
        .await
        .expect("subscribe");
    let prioritizer = start_prioritizer(&env, "").await;

    // An event larger than the server's 1 MB max_payload sits at the head of the outbox.
    let pool = env.pool(prioritizer::SERVICE).await;
    let mut oversized = picket_platform::nats::OutgoingEvent::new(
        &env.subjects,
        "prioritizer",
        &suspicious_sign_in("p1", "t1", "fp-huge"),
        chrono::Utc::now(),
    )
    .expect("valid ids");
    oversized.payload = vec![0; 2 * 1024 * 1024];
    let mut connection = pool.acquire().await.expect("connection");
    picket_platform::db::outbox::enqueue(&mut connection, &oversized)
        .await
        .expect("enqueued");
    env.publish("scanner", &suspicious_sign_in("p1", "t1", "fp-behind"))
        .await;

    let announced = tokio::time::timeout(Duration::from_secs(20), dead_letters.next())
        .await
        .expect("the event is announced as a dead letter")
        .expect("subscription open");
    let reason = dead_letter_reason(&announced);
    assert!(reason.contains("max payload"), "{reason}");
    let behind = tokio::time::timeout(Duration::from_secs(20), opened.next())
        .await
        .expect("the events behind it flow")
        .expect("subscription open");
    let event = IncidentOpened::decode(behind.payload).expect("IncidentOpened");
    assert_eq!(event.incident.expect("incident").fingerprint, "fp-behind");

    let (set_aside, left): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM outbox_set_aside WHERE event_id = $1),
                (SELECT count(*) FROM outbox WHERE event_id = $1)",
    )
    .bind(oversized.id)
    .fetch_one(&pool)
    .await
    .expect("query");
    assert_eq!((set_aside, left), (1, 0));
    let (_, metrics) = admin_get(&prioritizer, "/metrics").await;
    assert!(
        metrics.contains("picket_outbox_events_set_aside_total{event_type=\"picket.findings.v1.FindingObserved\"} 1"),
        "{metrics}"
    );
    prioritizer.shutdown().await;
    env.teardown().await;
}
