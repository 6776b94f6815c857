//! Webhook signing secrets at rest: sealed under `notifier.secret_keys` (envelope encryption,
//! `picket_platform::sealing`), bound to their endpoint's id, opened only to sign a request. At
//! start the notifier seals any secret still stored in the clear (rows from before sealing) and
//! re-wraps those under a key-encryption key that is no longer the first, so rotating the key is:
//! put the new one first, restart, then drop the old one.

use chrono::{DateTime, Utc};
use picket_platform::sealing::{Keyring, SealError};
use sqlx::PgPool;
use uuid::Uuid;

use crate::signing::WebhookSecret;
use crate::store::EndpointRow;

/// A secret as stored: the sealed blob, the key that wraps it, and a hint to tell it apart.
pub struct SealedSecret {
    pub sealed: Vec<u8>,
    pub key_id: String,
    pub hint: String,
}

/// The last four characters: enough to tell two secrets apart, never enough to use one.
fn hint_of(secret: &str) -> String {
    let characters: Vec<char> = secret.chars().collect();
    characters[characters.len().saturating_sub(4)..]
        .iter()
        .collect()
}

/// Seals `secret` (a `whsec_` value) for the endpoint `endpoint_id`.
pub fn seal(keyring: &Keyring, endpoint_id: Uuid, secret: &str) -> Result<SealedSecret, SealError> {
    Ok(SealedSecret {
        sealed: keyring.seal(secret.as_bytes(), endpoint_id.as_bytes())?,
        key_id: keyring.current_id().to_owned(),
        hint: hint_of(secret),
    })
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{0}")]
    Sealing(#[from] SealError),
    #[error("is not a webhook secret: {0}")]
    Secret(String),
}

fn open(keyring: &Keyring, endpoint_id: Uuid, sealed: &[u8]) -> Result<WebhookSecret, OpenError> {
    let bytes = keyring.open(sealed, endpoint_id.as_bytes())?;
    let text = String::from_utf8(bytes).map_err(|error| OpenError::Secret(error.to_string()))?;
    WebhookSecret::parse(&text).map_err(|error| OpenError::Secret(error.to_string()))
}

/// The secrets that sign a request to `endpoint` at `now`: the current one, and the previous one
/// while a rotation's overlap lasts.
pub fn signing_secrets(
    keyring: &Keyring,
    endpoint: &EndpointRow,
    now: DateTime<Utc>,
) -> Result<Vec<WebhookSecret>, OpenError> {
    let previous = endpoint.previous_secret_sealed.as_ref().filter(|_| {
        endpoint
            .previous_secret_expires_at
            .is_some_and(|expiry| expiry > now)
    });
    [endpoint.secret_sealed.as_ref(), previous]
        .into_iter()
        .flatten()
        .map(|sealed| open(keyring, endpoint.endpoint_id, sealed))
        .collect()
}

#[derive(sqlx::FromRow)]
struct StoredSecrets {
    endpoint_id: Uuid,
    secret: Option<String>,
    previous_secret: Option<String>,
    secret_sealed: Option<Vec<u8>>,
    previous_secret_sealed: Option<Vec<u8>>,
}

/// One stored secret brought to the current key: sealed if it was clear, re-wrapped if another
/// key wraps it; `None` when it needs nothing.
fn brought_current(
    keyring: &Keyring,
    endpoint_id: Uuid,
    clear: Option<&String>,
    sealed: Option<&Vec<u8>>,
) -> Result<Option<Vec<u8>>, SealError> {
    match (clear, sealed) {
        (Some(clear), _) => keyring
            .seal(clear.as_bytes(), endpoint_id.as_bytes())
            .map(Some),
        (None, Some(sealed)) => keyring.rewrap(sealed),
        (None, None) => Ok(None),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("endpoint {endpoint_id}: {error}")]
    Sealing { endpoint_id: Uuid, error: SealError },
}

/// Seals every secret still in the clear and re-wraps every one under an older key; returns how
/// many endpoints changed. Safe to run on several replicas at once: each writes a valid value.
pub async fn bring_current(pool: &PgPool, keyring: &Keyring) -> Result<usize, StartError> {
    let rows: Vec<StoredSecrets> = sqlx::query_as(
        "SELECT endpoint_id, secret, previous_secret, secret_sealed, previous_secret_sealed
         FROM webhook_endpoints
         WHERE secret IS NOT NULL OR previous_secret IS NOT NULL
            OR secret_key_id IS DISTINCT FROM $1 OR previous_secret_sealed IS NOT NULL",
    )
    .bind(keyring.current_id())
    .fetch_all(pool)
    .await?;
    let mut changed = 0;
    for row in rows {
        let failed = |error| StartError::Sealing {
            endpoint_id: row.endpoint_id,
            error,
        };
        let secret = brought_current(
            keyring,
            row.endpoint_id,
            row.secret.as_ref(),
            row.secret_sealed.as_ref(),
        )
        .map_err(failed)?;
        let previous = brought_current(
            keyring,
            row.endpoint_id,
            row.previous_secret.as_ref(),
            row.previous_secret_sealed.as_ref(),
        )
        .map_err(failed)?;
        if secret.is_none() && previous.is_none() && row.secret.is_none() {
            continue;
        }
        let hint = row.secret.as_deref().map(hint_of);
        sqlx::query(
            "UPDATE webhook_endpoints SET secret = NULL, previous_secret = NULL,
                 secret_sealed = coalesce($2, secret_sealed),
                 previous_secret_sealed = coalesce($3, previous_secret_sealed),
                 secret_key_id = $4, secret_hint = coalesce($5, secret_hint)
             WHERE endpoint_id = $1",
        )
        .bind(row.endpoint_id)
        .bind(secret)
        .bind(previous)
        .bind(keyring.current_id())
        .bind(hint)
        .execute(pool)
        .await?;
        changed += 1;
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hint_is_the_last_four_characters() {
        assert_eq!(hint_of("whsec_abcdefgh"), "efgh");
        assert_eq!(hint_of("abc"), "abc");
    }
}
