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
use crate::metrics::Metrics;
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
    let ids: Vec<Uuid> = events.iter().map(|event| event.id).collect();
    let subjects: Vec<&str> = events.iter().map(|event| event.subject.as_str()).collect();
    let types: Vec<&str> = events
        .iter()
        .map(|event| event.event_type.as_str())
        .collect();
    let sources: Vec<&str> = events.iter().map(|event| event.source.as_str()).collect();
    let ce_subjects: Vec<&str> = events
        .iter()
        .map(|event| event.ce_subject.as_str())
        .collect();
    let times: Vec<DateTime<Utc>> = events.iter().map(|event| event.time).collect();
    let payloads: Vec<&[u8]> = events
        .iter()
        .map(|event| event.payload.as_slice())
        .collect();
    let trace_contexts: Vec<String> = events
        .iter()
        .map(|event| serde_json::to_string(&event.trace_context).unwrap_or_else(|_| "{}".into()))
        .collect();
    // WITH ORDINALITY keeps the events' order in the relay's sequence; the notification is sent
    // at commit, once however many events the transaction added.
    sqlx::query(
        "WITH added AS (
             INSERT INTO outbox (event_id, subject, event_type, source, ce_subject, occurred_at, payload, trace_context)
             SELECT id, subject, event_type, source, ce_subject, occurred_at, payload, trace_context::jsonb
             FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[], $7::bytea[], $8::text[])
                 WITH ORDINALITY AS e(id, subject, event_type, source, ce_subject, occurred_at, payload, trace_context, position)
             ORDER BY position)
         SELECT pg_notify(current_schema() || '_outbox', '')",
    )
    .bind(&ids)
    .bind(&subjects)
    .bind(&types)
    .bind(&sources)
    .bind(&ce_subjects)
    .bind(&times)
    .bind(&payloads)
    .bind(&trace_contexts)
    .execute(&mut *connection)
    .await?;
    Ok(())
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
        self.metrics.outbox_published.inc_by(sequences.len() as u64);
        Ok(sequences.len())
    }
}
