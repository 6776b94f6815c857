//! The transactional outbox: a service inserts its events in the transaction that changes its
//! state; the relay publishes them to JetStream with the event id as `Nats-Msg-Id`, then deletes
//! them. A crash between publish and delete republishes, and JetStream's de-duplication window
//! (plus the consumers' inbox) absorbs the duplicate. An event that can never be published (larger
//! than the server's `max_payload`) does not hold up the ones behind it: it is moved to
//! `outbox_set_aside` with the reason, announced on the service's dead-letter subject, and counted.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::context::PublishErrorKind;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgPool;
use sqlx::{PgConnection, Row};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::db::notify;
use crate::db::statement::{Arguments, column};
use crate::metrics::{EventLabels, Metrics};
use crate::nats::OutgoingEvent;
use crate::nats::consumer::{DLQ_REASON, DLQ_SUBJECT};
use crate::nats::envelope::NATS_MSG_ID;

/// Rows relayed per transaction.
const BATCH_SIZE: i64 = 256;

/// Wakes the relay of the current schema's outbox (see [`notify::channel`]).
const TOPIC: &str = "outbox";

/// Adds `event` to the outbox within the caller's transaction.
pub async fn enqueue(
    connection: &mut PgConnection,
    event: &OutgoingEvent,
) -> Result<(), sqlx::Error> {
    enqueue_all(connection, std::slice::from_ref(event)).await
}

/// Adds `events` to the outbox within the caller's transaction and wakes the relays, in one
/// statement.
pub async fn enqueue_all(
    connection: &mut PgConnection,
    events: &[OutgoingEvent],
) -> Result<(), sqlx::Error> {
    if events.is_empty() {
        return Ok(());
    }
    let mut arguments = Arguments::default();
    let sql = format!(
        "WITH added AS ({}) {}",
        inserted(&mut arguments, events)?,
        wake_relay_after("added")
    );
    sqlx::query_with(sqlx::AssertSqlSafe(sql), arguments.into_inner())
        .execute(&mut *connection)
        .await?;
    Ok(())
}

/// The statement that adds `events` to the outbox, returning their ids: a part of a larger
/// statement, followed by [`wake_relay_after`].
pub fn inserted(
    arguments: &mut Arguments,
    events: &[OutgoingEvent],
) -> Result<String, sqlx::Error> {
    let events: Vec<&OutgoingEvent> = events.iter().collect();
    let trace_contexts = column(&events, |event| {
        serde_json::to_string(&event.trace_context).unwrap_or_else(|_| "{}".into())
    });
    // WITH ORDINALITY keeps the events' order in the relay's sequence.
    Ok(format!(
        "INSERT INTO outbox (event_id, subject, event_type, source, ce_subject, occurred_at, payload,
             trace_context)
         SELECT id, subject, event_type, source, ce_subject, occurred_at, payload, trace_context::jsonb
         FROM unnest({}::uuid[], {}::text[], {}::text[], {}::text[], {}::text[], {}::timestamptz[],
             {}::bytea[], {}::text[])
             WITH ORDINALITY AS e(id, subject, event_type, source, ce_subject, occurred_at, payload,
                 trace_context, position)
         ORDER BY position
         RETURNING event_id",
        arguments.bind(column(&events, |event| event.id))?,
        arguments.bind(column(&events, |event| event.subject.as_str()))?,
        arguments.bind(column(&events, |event| event.event_type.as_str()))?,
        arguments.bind(column(&events, |event| event.source.as_str()))?,
        arguments.bind(column(&events, |event| event.ce_subject.as_str()))?,
        arguments.bind(column(&events, |event| event.time))?,
        arguments.bind(column(&events, |event| event.payload.as_slice()))?,
        arguments.bind(trace_contexts)?,
    ))
}

/// The final query of a statement whose part `cte` ran [`inserted`]: wakes the relays at commit
/// when it added any event (once, however many).
pub fn wake_relay_after(cte: &str) -> String {
    format!(
        "SELECT pg_notify(current_schema() || '_{TOPIC}', '') WHERE EXISTS (SELECT 1 FROM {cte})"
    )
}

#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("publish: {0}")]
    Publish(#[from] async_nats::Error),
}

pub struct OutboxRelay {
    pool: PgPool,
    schema: String,
    jetstream: jetstream::Context,
    /// Where an event set aside is announced (the service's dead-letter subject).
    dead_letter_subject: String,
    poll_interval: Duration,
    metrics: Arc<Metrics>,
}

/// An event the server will never take, with why.
struct SetAside {
    sequence: i64,
    event: OutgoingEvent,
    size: usize,
    reason: String,
}

impl OutboxRelay {
    pub fn new(
        pool: PgPool,
        schema: String,
        jetstream: jetstream::Context,
        dead_letter_subject: String,
        poll_interval: Duration,
        metrics: Arc<Metrics>,
    ) -> OutboxRelay {
        OutboxRelay {
            pool,
            schema,
            jetstream,
            dead_letter_subject,
            poll_interval,
            metrics,
        }
    }

    pub async fn run(self, shutdown: CancellationToken) {
        let mut listener = notify::listen(&self.pool, &notify::channel(&self.schema, TOPIC)).await;
        while !shutdown.is_cancelled() {
            match self.relay_batch().await {
                Ok(relayed) if relayed == BATCH_SIZE as usize => continue,
                Ok(_) => {}
                Err(error) => {
                    self.metrics.outbox_publish_failures.inc();
                    tracing::warn!(%error, "outbox relay failed, retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(self.poll_interval) => {}
                () = notify::next(&mut listener) => {}
            }
        }
        tracing::info!("outbox relay stopped");
    }

    async fn relay_batch(&self) -> Result<usize, RelayError> {
        let mut transaction = self.pool.begin().await?;
        let rows = sqlx::query(
            "SELECT seq, event_id, subject, event_type, source, ce_subject, occurred_at, payload, trace_context
             FROM outbox ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED",
        )
        .bind(BATCH_SIZE)
        .fetch_all(&mut *transaction)
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let mut sequences = Vec::with_capacity(rows.len());
        let mut event_types = Vec::with_capacity(rows.len());
        let mut acks = Vec::with_capacity(rows.len());
        let mut set_aside = Vec::new();
        for row in &rows {
            let trace_context: sqlx::types::Json<HashMap<String, String>> =
                row.try_get("trace_context")?;
            let mut event = OutgoingEvent {
                id: row.try_get::<Uuid, _>("event_id")?,
                event_type: row.try_get("event_type")?,
                source: row.try_get("source")?,
                subject: row.try_get("subject")?,
                ce_subject: row.try_get("ce_subject")?,
                time: row.try_get::<DateTime<Utc>, _>("occurred_at")?,
                payload: row.try_get("payload")?,
                trace_context: trace_context.0,
            };
            let sequence = row.try_get::<i64, _>("seq")?;
            let payload = std::mem::take(&mut event.payload);
            let size = payload.len();
            // Sent in order on one connection; acks are awaited together below.
            let published = self
                .jetstream
                .publish_with_headers(event.subject.clone(), event.headers(), payload.into())
                .await;
            match published {
                Ok(ack) => {
                    sequences.push(sequence);
                    event_types.push(event.event_type);
                    acks.push(ack);
                }
                // The client refuses it before sending: no retry will ever succeed.
                Err(error) if error.kind() == PublishErrorKind::MaxPayloadExceeded => {
                    set_aside.push(SetAside {
                        sequence,
                        event,
                        size,
                        reason: error.to_string(),
                    });
                }
                Err(error) => return Err(RelayError::Publish(error.into())),
            }
        }
        for ack in acks {
            ack.await
                .map_err(|error| RelayError::Publish(error.into()))?;
        }
        self.set_aside(&mut transaction, &set_aside).await?;
        sqlx::query("DELETE FROM outbox WHERE seq = ANY($1)")
            .bind(&sequences)
            .execute(&mut *transaction)
            .await?;
        transaction.commit().await?;
        for event_type in event_types {
            self.metrics
                .events_published
                .get_or_create(&EventLabels { event_type })
                .inc();
        }
        for aside in set_aside {
            tracing::error!(
                event_id = %aside.event.id,
                event_type = %aside.event.event_type,
                subject = %aside.event.subject,
                bytes = aside.size,
                reason = %aside.reason,
                "outbox event set aside: it can never be published"
            );
            self.metrics
                .outbox_events_set_aside
                .get_or_create(&EventLabels {
                    event_type: aside.event.event_type,
                })
                .inc();
        }
        Ok(rows.len())
    }

    /// Announces each event on the dead-letter subject (its CloudEvents headers and the reason,
    /// without the payload the server refused), then moves its row to `outbox_set_aside`.
    async fn set_aside(
        &self,
        transaction: &mut PgConnection,
        set_aside: &[SetAside],
    ) -> Result<(), RelayError> {
        if set_aside.is_empty() {
            return Ok(());
        }
        for aside in set_aside {
            let mut headers = aside.event.headers();
            let reason = format!("{} ({} bytes)", aside.reason, aside.size);
            headers.insert(DLQ_REASON, reason.as_str());
            headers.insert(DLQ_SUBJECT, aside.event.subject.as_str());
            // Announced once, however often this batch is retried.
            let dead_letter_id = format!("outbox-{}", aside.event.id);
            headers.insert(NATS_MSG_ID, dead_letter_id.as_str());
            self.jetstream
                .publish_with_headers(self.dead_letter_subject.clone(), headers, Bytes::new())
                .await
                .map_err(|error| RelayError::Publish(error.into()))?
                .await
                .map_err(|error| RelayError::Publish(error.into()))?;
        }
        let sequences: Vec<i64> = set_aside.iter().map(|aside| aside.sequence).collect();
        let reasons: Vec<&str> = set_aside
            .iter()
            .map(|aside| aside.reason.as_str())
            .collect();
        sqlx::query(
            "WITH moved AS (DELETE FROM outbox WHERE seq = ANY($1) RETURNING *)
             INSERT INTO outbox_set_aside (seq, event_id, subject, event_type, source, ce_subject,
                 occurred_at, payload, trace_context, reason)
             SELECT m.seq, m.event_id, m.subject, m.event_type, m.source, m.ce_subject,
                 m.occurred_at, m.payload, m.trace_context, r.reason
             FROM moved m JOIN unnest($1::bigint[], $2::text[]) AS r(seq, reason) USING (seq)",
        )
        .bind(&sequences)
        .bind(&reasons)
        .execute(transaction)
        .await?;
        Ok(())
    }
}
