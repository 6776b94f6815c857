//! The inbox: each consumed event id is applied once, in the same transaction as its effect.

use sqlx::PgConnection;

/// Records that `consumer` is applying `event_id`. Returns `false` when it already did, in which
/// case the caller commits nothing else and acks: the event is a redelivery.
pub async fn first_delivery(
    connection: &mut PgConnection,
    consumer: &str,
    event_id: &str,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO inbox (consumer, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(consumer)
    .bind(event_id)
    .execute(connection)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// Records that `consumer` is applying each of `event_ids` at once; returns those it had not
/// applied before (the others are redeliveries).
pub async fn first_deliveries(
    connection: &mut PgConnection,
    consumer: &str,
    event_ids: &[String],
) -> Result<std::collections::HashSet<String>, sqlx::Error> {
    let fresh: Vec<String> = sqlx::query_scalar(
        "INSERT INTO inbox (consumer, event_id) SELECT $1, unnest($2::text[])
         ON CONFLICT DO NOTHING RETURNING event_id",
    )
    .bind(consumer)
    .bind(event_ids)
    .fetch_all(connection)
    .await?;
    Ok(fresh.into_iter().collect())
}
