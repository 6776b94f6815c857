//! The transactional outbox: a service inserts its events in the transaction that changes its
//! state; the relay publishes them to JetStream with the event id as `Nats-Msg-Id`, then deletes
//! them. A crash between publish and delete republishes, and JetStream's de-duplication window
//! (plus the consumers' inbox) absorbs the duplicate.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgPool;
use sqlx::{PgConnection, Row};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::db::notify;
use crate::db::statement::{Arguments, column};
use crate::metrics::{EventLabels, Metrics};
use crate::nats::OutgoingEvent;

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
    poll_interval: Duration,
    metrics: Arc<Metrics>,
}

impl OutboxRelay {
    pub fn new(
        pool: PgPool,
        schema: String,
        jetstream: jetstream::Context,
        poll_interval: Duration,
        metrics: Arc<Metrics>,
    ) -> OutboxRelay {
        OutboxRelay {
            pool,
            schema,
            jetstream,
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
        for row in &rows {
            let trace_context: sqlx::types::Json<HashMap<String, String>> =
                row.try_get("trace_context")?;
            let event = OutgoingEvent {
                id: row.try_get::<Uuid, _>("event_id")?,
                event_type: row.try_get("event_type")?,
                source: row.try_get("source")?,
                subject: row.try_get("subject")?,
                ce_subject: row.try_get("ce_subject")?,
                time: row.try_get::<DateTime<Utc>, _>("occurred_at")?,
                payload: row.try_get("payload")?,
                trace_context: trace_context.0,
            };
            sequences.push(row.try_get::<i64, _>("seq")?);
            event_types.push(event.event_type.clone());
            // Sent in order on one connection; acks are awaited together below.
            let ack = self
                .jetstream
                .publish_with_headers(event.subject.clone(), event.headers(), event.payload.into())
                .await
                .map_err(|error| RelayError::Publish(error.into()))?;
            acks.push(ack);
        }
        for ack in acks {
            ack.await
                .map_err(|error| RelayError::Publish(error.into()))?;
        }
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
        Ok(sequences.len())
    }
}
