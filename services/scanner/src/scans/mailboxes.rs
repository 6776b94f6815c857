//! Inbox rules across polls. Reading every mailbox's rules every 15 minutes costs one request per
//! user and tenant; instead a monitoring poll reads the mailboxes of users who signed in during
//! its window or whom Identity Protection flags (where a compromise would make a rule), and a
//! sweep that reaches every mailbox once per `inbox_rule_sweep`. The others are carried from
//! their last read, so a rule found earlier stays found. A tenant's first poll (and any whose
//! previous poll is older than the sweep) reads every mailbox.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::checks::snapshot::{Snapshot, Source, timestamp};

/// Inbox rules and hiding folders as last read, by user id.
#[derive(Debug, Default, Clone)]
pub struct Carried {
    /// `{"userPrincipalName", "rules", "readAt"}` per mailbox with rules.
    pub mailboxes: Map<String, Value>,
    /// Hiding folders by name, per mailbox whose rules move mail.
    pub folders: Map<String, Value>,
}

pub async fn load(pool: &PgPool, tenant_id: Uuid) -> Result<Carried, sqlx::Error> {
    let rows: Vec<(String, Value, Option<Value>)> =
        sqlx::query_as("SELECT user_id, mailbox, folders FROM mailbox_rules WHERE tenant_id = $1")
            .bind(tenant_id)
            .fetch_all(pool)
            .await?;
    let mut carried = Carried::default();
    for (user_id, mailbox, folders) in rows {
        if let Some(folders) = folders {
            carried.folders.insert(user_id.clone(), folders);
        }
        carried.mailboxes.insert(user_id, mailbox);
    }
    Ok(carried)
}

/// Keeps what the snapshot holds of the tenant's mailboxes (read now or carried), when the poll
/// read inbox rules; the rows of mailboxes without rules go.
pub async fn save(
    connection: &mut PgConnection,
    tenant_id: Uuid,
    snapshot: &Snapshot,
) -> Result<(), sqlx::Error> {
    let Ok(Value::Object(mailboxes)) = snapshot.get(Source::InboxRules) else {
        return Ok(());
    };
    let folders = snapshot.get(Source::MailFolders).ok();
    let users: Vec<String> = mailboxes.keys().cloned().collect();
    let boxes: Vec<Value> = mailboxes.values().cloned().collect();
    let hiding: Vec<Option<Value>> = users
        .iter()
        .map(|user| folders.and_then(|folders| folders.get(user)).cloned())
        .collect();
    let read_at: Vec<DateTime<Utc>> = boxes
        .iter()
        .map(|mailbox| timestamp(&mailbox["readAt"]).unwrap_or(snapshot.now))
        .collect();
    sqlx::query("DELETE FROM mailbox_rules WHERE tenant_id = $1 AND NOT (user_id = ANY($2))")
        .bind(tenant_id)
        .bind(&users)
        .execute(&mut *connection)
        .await?;
    sqlx::query(
        "INSERT INTO mailbox_rules (tenant_id, user_id, mailbox, folders, read_at)
         SELECT $1, * FROM unnest($2::text[], $3::jsonb[], $4::jsonb[], $5::timestamptz[])
         ON CONFLICT (tenant_id, user_id) DO UPDATE
         SET mailbox = EXCLUDED.mailbox, folders = EXCLUDED.folders, read_at = EXCLUDED.read_at",
    )
    .bind(tenant_id)
    .bind(&users)
    .bind(&boxes)
    .bind(&hiding)
    .bind(&read_at)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// When the poll reads a mailbox's rules, as stored with them.
pub fn read_at(now: DateTime<Utc>) -> Value {
    json!(now.to_rfc3339_opts(SecondsFormat::Secs, true))
}

/// Where a user's mailbox falls in the sweep: a stable offset into it.
fn phase(user_id: &str, sweep: Duration) -> u64 {
    let digest = Sha256::digest(user_id.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first) % sweep.as_secs().max(1)
}

/// The mailboxes a monitoring poll reads (`None`: every one): the users who signed in since the
/// previous poll ended (`since`), the users Identity Protection flags, and the users whose turn
/// in the sweep came between `since` and `now`.
pub fn due(
    snapshot: &Snapshot,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
    sweep: Duration,
) -> Option<BTreeSet<String>> {
    let sweep_seconds = sweep.as_secs().max(1);
    let (since_at, since, now) = (since, since.timestamp(), now.timestamp());
    if now - since >= sweep_seconds as i64 {
        return None;
    }
    let (from, to) = (
        since.rem_euclid(sweep_seconds as i64) as u64,
        now.rem_euclid(sweep_seconds as i64) as u64,
    );
    let turn = |offset: u64| {
        if from <= to {
            (from..to).contains(&offset)
        } else {
            offset >= from || offset < to
        }
    };
    let mut due: BTreeSet<String> = snapshot
        .items(Source::Users)
        .unwrap_or_default()
        .iter()
        .filter_map(|user| user["id"].as_str())
        .filter(|id| turn(phase(id, sweep)))
        .map(str::to_owned)
        .collect();
    let signed_in = snapshot
        .items(Source::SignIns)
        .unwrap_or_default()
        .iter()
        .filter(|sign_in| timestamp(&sign_in["createdDateTime"]).is_some_and(|at| at >= since_at))
        .filter_map(|sign_in| sign_in["userId"].as_str());
    let risky = snapshot
        .items(Source::RiskyUsers)
        .unwrap_or_default()
        .iter()
        .filter_map(|user| user["id"].as_str());
    due.extend(signed_in.chain(risky).map(str::to_owned));
    Some(due)
}
