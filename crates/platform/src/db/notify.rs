//! Wake-ups through PostgreSQL LISTEN/NOTIFY: a writer notifies `<schema>_<topic>` in its
//! transaction, so a worker polling that table reacts at commit instead of at its next poll.

use sqlx::postgres::{PgListener, PgPool};

/// The channel of `topic` in `schema`, such as `notifier_deliveries`.
pub fn channel(schema: &str, topic: &str) -> String {
    format!("{schema}_{topic}")
}

/// Listens on a channel; `None` when that fails, and the caller simply polls.
pub async fn listen(pool: &PgPool, channel: &str) -> Option<PgListener> {
    let mut listener = PgListener::connect_with(pool).await.ok()?;
    listener.listen(channel).await.ok()?;
    Some(listener)
}

/// Returns at the next notification; never, once the listener is gone.
pub async fn next(listener: &mut Option<PgListener>) {
    match listener {
        Some(active) => {
            if active.recv().await.is_err() {
                // The connection dropped: fall back to polling rather than spinning.
                *listener = None;
            }
        }
        None => std::future::pending().await,
    }
}
