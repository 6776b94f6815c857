//! The ledger's tables: a partner's position is read into the engine's [`Retainer`] under the lock
//! of its `retainers` row, and what the engine decided is written back in the same transaction:
//! packs, the overdraft, immutable transfers and the accounts' running sums.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::engine::{self, Account, Hold, HoldState, Minutes, Pack, Retainer, TransferKind};

/// The operator's accounts, created by the first migration.
const ISSUED: Uuid = Uuid::from_u128(1);
const CONSUMED: Uuid = Uuid::from_u128(2);
const EXPIRED: Uuid = Uuid::from_u128(3);

/// What a mutating call's idempotency key says about it.
pub enum Claim {
    /// First use: go on, then [`finish_key`].
    Fresh,
    /// A retry: the first call's encoded answer.
    Replay(Vec<u8>),
    /// The key was used for another call or other fields.
    Conflict,
}

/// Claims `key` for this call (its operation and the SHA-256 of its request). A concurrent call
/// with the same key waits here until the first commits.
pub async fn claim_key(
    connection: &mut PgConnection,
    partner_id: &str,
    key: &str,
    operation: &str,
    request_sha256: &[u8],
    now: DateTime<Utc>,
) -> Result<Claim, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (partner_id, idempotency_key, operation, request_sha256, created_at)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
    )
    .bind(partner_id)
    .bind(key)
    .bind(operation)
    .bind(request_sha256)
    .bind(now)
    .execute(&mut *connection)
    .await?;
    if inserted.rows_affected() == 1 {
        return Ok(Claim::Fresh);
    }
    let (first_operation, first_sha256, response): (String, Vec<u8>, Option<Vec<u8>>) =
        sqlx::query_as(
            "SELECT operation, request_sha256, response FROM idempotency_keys
             WHERE partner_id = $1 AND idempotency_key = $2",
        )
        .bind(partner_id)
        .bind(key)
        .fetch_one(&mut *connection)
        .await?;
    Ok(match response {
        Some(response) if first_operation == operation && first_sha256 == request_sha256 => {
            Claim::Replay(response)
        }
        _ => Claim::Conflict,
    })
}

/// Stores the answer a retry of the claimed key gets.
pub async fn finish_key(
    connection: &mut PgConnection,
    partner_id: &str,
    key: &str,
    response: &[u8],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE idempotency_keys SET response = $3 WHERE partner_id = $1 AND idempotency_key = $2",
    )
    .bind(partner_id)
    .bind(key)
    .bind(response)
    .execute(connection)
    .await?;
    Ok(())
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RetainerRow {
    pub partner_id: String,
    pub overdrawn: i64,
    pub overdraft_limit: i64,
    pub low_balance_threshold: i64,
    pub terms_updated_at: Option<DateTime<Utc>>,
    pub terms_updated_by: String,
    pub terms_updated_role: i32,
}

const RETAINER_COLUMNS: &str = "partner_id, overdrawn, overdraft_limit, low_balance_threshold,
    terms_updated_at, terms_updated_by, terms_updated_role";

/// Locks a partner's position (creating it, and its retainer account, on first use).
pub async fn lock_retainer(
    connection: &mut PgConnection,
    partner_id: &str,
) -> Result<RetainerRow, sqlx::Error> {
    sqlx::query(
        "WITH retainer AS (INSERT INTO retainers (partner_id) VALUES ($1) ON CONFLICT DO NOTHING)
         INSERT INTO accounts (account_id, partner_id, kind) VALUES ($2, $1, 'partner_retainer')
         ON CONFLICT DO NOTHING",
    )
    .bind(partner_id)
    .bind(Uuid::now_v7())
    .execute(&mut *connection)
    .await?;
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {RETAINER_COLUMNS} FROM retainers WHERE partner_id = $1 FOR UPDATE"
    )))
    .bind(partner_id)
    .fetch_one(connection)
    .await
}

/// A partner's position without locking it (`None` before its first operation).
pub async fn retainer<'c>(
    executor: impl PgExecutor<'c>,
    partner_id: &str,
) -> Result<Option<RetainerRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {RETAINER_COLUMNS} FROM retainers WHERE partner_id = $1"
    )))
    .bind(partner_id)
    .fetch_optional(executor)
    .await
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PackRow {
    pub pack_id: Uuid,
    pub partner_id: String,
    pub purchased: i64,
    pub remaining: i64,
    pub used: i64,
    pub expired: i64,
    pub purchased_at: DateTime<Utc>,
    pub valid_from: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub purchase_reference: String,
    pub description: String,
    pub issued_by: String,
}

/// A partner's packs, oldest first (the order work draws on them).
pub async fn packs(
    connection: &mut PgConnection,
    partner_id: &str,
) -> Result<Vec<PackRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT pack_id, partner_id, purchased, remaining, used, expired, purchased_at, valid_from,
             expires_at, purchase_reference, description, issued_by
         FROM packs WHERE partner_id = $1 ORDER BY expires_at, purchased_at, pack_id",
    )
    .bind(partner_id)
    .fetch_all(connection)
    .await
}

#[derive(Debug, Clone, sqlx::FromRow)]
struct HoldRow {
    hold_id: Uuid,
    amount: i64,
    used: i64,
    expires_at: DateTime<Utc>,
}

/// The engine's view of a partner's position.
pub async fn position(
    connection: &mut PgConnection,
    row: &RetainerRow,
    packs: &[PackRow],
) -> Result<Retainer, sqlx::Error> {
    let holds: Vec<HoldRow> = sqlx::query_as(
        "SELECT hold_id, amount, used, expires_at FROM holds WHERE partner_id = $1 AND state = 'pending'",
    )
    .bind(&row.partner_id)
    .fetch_all(connection)
    .await?;
    Ok(Retainer {
        packs: packs
            .iter()
            .map(|pack| Pack {
                id: pack.pack_id,
                purchased: pack.purchased,
                remaining: pack.remaining,
                used: pack.used,
                expired: pack.expired,
                expires_at: pack.expires_at,
            })
            .collect(),
        holds: holds
            .into_iter()
            .map(|hold| {
                (
                    hold.hold_id,
                    Hold {
                        id: hold.hold_id,
                        amount: hold.amount,
                        used: hold.used,
                        state: HoldState::Pending,
                        expires_at: hold.expires_at,
                    },
                )
            })
            .collect(),
        overdrawn: row.overdrawn,
        overdraft_limit: row.overdraft_limit,
    })
}

/// What is recorded with the transfers of one call.
pub struct Recorded<'a> {
    pub partner_id: &'a str,
    pub idempotency_key: &'a str,
    pub description: &'a str,
    pub actor_subject: &'a str,
    pub actor_role: i32,
    pub now: DateTime<Utc>,
}

/// A hold the call placed, with what the engine does not know of it.
pub struct NewHold<'a> {
    pub hold_id: Uuid,
    pub engagement_id: Option<Uuid>,
    pub description: &'a str,
}

/// What the engine does not know of the packs and holds a call creates.
#[derive(Default)]
pub struct Created<'a> {
    pub pack: Option<NewPack<'a>>,
    pub hold: Option<NewHold<'a>>,
}

/// A pack the call bought, with what the engine does not know of it.
pub struct NewPack<'a> {
    pub pack_id: Uuid,
    pub valid_from: DateTime<Utc>,
    pub purchase_reference: &'a str,
    pub description: &'a str,
}

#[derive(Debug, Clone)]
pub struct TransferRow {
    pub transfer_id: Uuid,
    pub kind: TransferKind,
    pub debit_account_id: Uuid,
    pub credit_account_id: Uuid,
    pub amount: Minutes,
    pub pending: bool,
    pub pack_id: Option<Uuid>,
    pub hold_id: Option<Uuid>,
}

pub fn hold_state_name(state: HoldState) -> &'static str {
    match state {
        HoldState::Pending => "pending",
        HoldState::Closed => "closed",
        HoldState::Voided => "voided",
        HoldState::Expired => "expired",
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct HoldRecord {
    pub hold_id: Uuid,
    pub partner_id: String,
    pub engagement_id: Option<Uuid>,
    pub amount: i64,
    pub used: i64,
    pub state: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub description: String,
    pub created_by: String,
}

const HOLD_COLUMNS: &str = "hold_id, partner_id, engagement_id, amount, used, state, created_at,
    expires_at, resolved_at, description, created_by";

pub async fn hold<'c>(
    executor: impl PgExecutor<'c>,
    hold_id: Uuid,
) -> Result<Option<HoldRecord>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {HOLD_COLUMNS} FROM holds WHERE hold_id = $1"
    )))
    .bind(hold_id)
    .fetch_optional(executor)
    .await
}

/// A page of a partner's holds, newest first.
pub async fn holds<'c>(
    executor: impl PgExecutor<'c>,
    partner_id: &str,
    states: &[&str],
    engagement_id: Option<Uuid>,
    offset: i64,
    limit: i64,
) -> Result<Vec<HoldRecord>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {HOLD_COLUMNS} FROM holds
         WHERE partner_id = $1 AND (cardinality($2::text[]) = 0 OR state = ANY($2))
           AND ($3::uuid IS NULL OR engagement_id = $3)
         ORDER BY created_at DESC, hold_id DESC OFFSET $4 LIMIT $5"
    )))
    .bind(partner_id)
    .bind(states)
    .bind(engagement_id)
    .bind(offset)
    .bind(limit)
    .fetch_all(executor)
    .await
}

pub fn kind_name(kind: TransferKind) -> &'static str {
    match kind {
        TransferKind::Purchase => "purchase",
        TransferKind::Hold => "hold",
        TransferKind::HoldPost => "hold_post",
        TransferKind::HoldRelease => "hold_release",
        TransferKind::WorkDebit => "work_debit",
        TransferKind::Expiry => "expiry",
    }
}

/// Writes what the engine decided: the new and changed packs, the overdraft, the transfers and
/// the accounts' sums. Returns the transfers as recorded.
pub async fn persist(
    connection: &mut PgConnection,
    before: &Retainer,
    after: &Retainer,
    transfers: &[engine::Transfer],
    recorded: &Recorded<'_>,
    created: &Created<'_>,
) -> Result<Vec<TransferRow>, sqlx::Error> {
    for pack in &after.packs {
        match before.packs.iter().find(|old| old.id == pack.id) {
            Some(old) if old == pack => {}
            Some(_) => {
                sqlx::query(
                    "UPDATE packs SET remaining = $2, used = $3, expired = $4 WHERE pack_id = $1",
                )
                .bind(pack.id)
                .bind(pack.remaining)
                .bind(pack.used)
                .bind(pack.expired)
                .execute(&mut *connection)
                .await?;
            }
            None => {
                let details = created.pack.as_ref().filter(|new| new.pack_id == pack.id);
                sqlx::query(
                    "INSERT INTO packs (pack_id, partner_id, purchased, remaining, used, expired, purchased_at,
                         valid_from, expires_at, purchase_reference, description, issued_by)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                )
                .bind(pack.id)
                .bind(recorded.partner_id)
                .bind(pack.purchased)
                .bind(pack.remaining)
                .bind(pack.used)
                .bind(pack.expired)
                .bind(recorded.now)
                .bind(details.map_or(recorded.now, |new| new.valid_from))
                .bind(pack.expires_at)
                .bind(details.map_or("", |new| new.purchase_reference))
                .bind(details.map_or("", |new| new.description))
                .bind(recorded.actor_subject)
                .execute(&mut *connection)
                .await?;
            }
        }
    }
    for hold in after.holds.values() {
        match before.holds.get(&hold.id) {
            Some(old) if old == hold => {}
            Some(_) => {
                sqlx::query(
                    "UPDATE holds SET used = $2, state = $3,
                         resolved_at = CASE WHEN $3 = 'pending' THEN NULL ELSE $4 END
                     WHERE hold_id = $1",
                )
                .bind(hold.id)
                .bind(hold.used)
                .bind(hold_state_name(hold.state))
                .bind(recorded.now)
                .execute(&mut *connection)
                .await?;
            }
            None => {
                let details = created.hold.as_ref().filter(|new| new.hold_id == hold.id);
                sqlx::query(
                    "INSERT INTO holds (hold_id, partner_id, engagement_id, amount, used, state, created_at,
                         expires_at, description, created_by)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                )
                .bind(hold.id)
                .bind(recorded.partner_id)
                .bind(details.and_then(|new| new.engagement_id))
                .bind(hold.amount)
                .bind(hold.used)
                .bind(hold_state_name(hold.state))
                .bind(recorded.now)
                .bind(hold.expires_at)
                .bind(details.map_or("", |new| new.description))
                .bind(recorded.actor_subject)
                .execute(&mut *connection)
                .await?;
            }
        }
    }
    if after.overdrawn != before.overdrawn {
        sqlx::query("UPDATE retainers SET overdrawn = $2 WHERE partner_id = $1")
            .bind(recorded.partner_id)
            .bind(after.overdrawn)
            .execute(&mut *connection)
            .await?;
    }
    // Most calls begin with an expiry that moves nothing: no account to look up then.
    if transfers.is_empty() {
        return Ok(Vec::new());
    }
    let retainer_account: Uuid = sqlx::query_scalar(
        "SELECT account_id FROM accounts WHERE partner_id = $1 AND kind = 'partner_retainer'",
    )
    .bind(recorded.partner_id)
    .fetch_one(&mut *connection)
    .await?;
    let account_id = |account: Account| match account {
        Account::Retainer => retainer_account,
        Account::Issued => ISSUED,
        Account::Consumed => CONSUMED,
        Account::Expired => EXPIRED,
    };
    let rows: Vec<TransferRow> = transfers
        .iter()
        .map(|transfer| TransferRow {
            transfer_id: Uuid::now_v7(),
            kind: transfer.kind,
            debit_account_id: account_id(transfer.debit),
            credit_account_id: account_id(transfer.credit),
            amount: transfer.amount,
            pending: transfer.pending,
            pack_id: transfer.pack_id,
            hold_id: transfer.hold_id,
        })
        .collect();
    // Each account's change: (debits posted, credits posted, debits pending, credits pending). A
    // pending transfer that reverses a hold (release, or the part work used) takes its
    // reservation back off the accounts it was put on.
    let mut sums: BTreeMap<Uuid, [i64; 4]> = BTreeMap::new();
    for row in &rows {
        match (row.pending, row.kind) {
            (false, _) => {
                sums.entry(row.debit_account_id).or_default()[0] += row.amount;
                sums.entry(row.credit_account_id).or_default()[1] += row.amount;
            }
            (true, TransferKind::Hold) => {
                sums.entry(row.debit_account_id).or_default()[2] += row.amount;
                sums.entry(row.credit_account_id).or_default()[3] += row.amount;
            }
            (true, _) => {
                sums.entry(row.credit_account_id).or_default()[2] -= row.amount;
                sums.entry(row.debit_account_id).or_default()[3] -= row.amount;
            }
        }
    }
    let ids: Vec<Uuid> = rows.iter().map(|row| row.transfer_id).collect();
    let kinds: Vec<&str> = rows.iter().map(|row| kind_name(row.kind)).collect();
    let debits: Vec<Uuid> = rows.iter().map(|row| row.debit_account_id).collect();
    let credits: Vec<Uuid> = rows.iter().map(|row| row.credit_account_id).collect();
    let amounts: Vec<i64> = rows.iter().map(|row| row.amount).collect();
    let pending: Vec<bool> = rows.iter().map(|row| row.pending).collect();
    let packs: Vec<Option<Uuid>> = rows.iter().map(|row| row.pack_id).collect();
    let holds: Vec<Option<Uuid>> = rows.iter().map(|row| row.hold_id).collect();
    let accounts: Vec<Uuid> = sums.keys().copied().collect();
    let column = |index: usize| -> Vec<i64> { sums.values().map(|sum| sum[index]).collect() };
    sqlx::query(
        "WITH added AS (
             INSERT INTO transfers (transfer_id, partner_id, kind, debit_account_id, credit_account_id, amount,
                 pending, pack_id, hold_id, idempotency_key, description, actor_subject, actor_role, created_at)
             SELECT t.id, $9, t.kind, t.debit, t.credit, t.amount, t.pending, t.pack, t.hold, $10, $11, $12,
                 $13, $14
             FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::uuid[], $5::int8[], $6::bool[], $7::uuid[],
                 $8::uuid[]) AS t(id, kind, debit, credit, amount, pending, pack, hold))
         UPDATE accounts a SET debits_posted = a.debits_posted + s.debits_posted,
             credits_posted = a.credits_posted + s.credits_posted,
             debits_pending = a.debits_pending + s.debits_pending,
             credits_pending = a.credits_pending + s.credits_pending
         FROM unnest($15::uuid[], $16::int8[], $17::int8[], $18::int8[], $19::int8[])
             AS s(account_id, debits_posted, credits_posted, debits_pending, credits_pending)
         WHERE a.account_id = s.account_id",
    )
    .bind(&ids)
    .bind(&kinds)
    .bind(&debits)
    .bind(&credits)
    .bind(&amounts)
    .bind(&pending)
    .bind(&packs)
    .bind(&holds)
    .bind(recorded.partner_id)
    .bind(recorded.idempotency_key)
    .bind(recorded.description)
    .bind(recorded.actor_subject)
    .bind(recorded.actor_role)
    .bind(recorded.now)
    .bind(&accounts)
    .bind(column(0))
    .bind(column(1))
    .bind(column(2))
    .bind(column(3))
    .execute(connection)
    .await?;
    Ok(rows)
}

/// Sets a partner's overdraft limit and low-balance threshold.
pub async fn set_terms(
    connection: &mut PgConnection,
    partner_id: &str,
    overdraft_limit: i64,
    low_balance_threshold: i64,
    updated_by: (&str, i32),
    now: DateTime<Utc>,
) -> Result<RetainerRow, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE retainers SET overdraft_limit = $2, low_balance_threshold = $3, terms_updated_at = $4,
             terms_updated_by = $5, terms_updated_role = $6
         WHERE partner_id = $1 RETURNING {RETAINER_COLUMNS}"
    )))
    .bind(partner_id)
    .bind(overdraft_limit)
    .bind(low_balance_threshold)
    .bind(now)
    .bind(updated_by.0)
    .bind(updated_by.1)
    .fetch_one(connection)
    .await
}
