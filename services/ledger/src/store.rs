//! The ledger's tables. A batch of credit-moving calls locks the `retainers` rows of its partners,
//! reads their packs, pending holds, engagements and keys, and writes back what changed in a few
//! set-based statements: packs, holds, engagements, immutable transfers, the accounts' running
//! sums, work entries and the keys' answers.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use picket_platform::db::outbox;
use picket_platform::db::statement::{Arguments, column};
use picket_platform::nats::OutgoingEvent;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::engagements::EngagementRow;
use crate::engine::{Account, HoldState, Minutes, TransferKind};

/// The operator's accounts, created by the first migration.
const ISSUED: Uuid = Uuid::from_u128(1);
const CONSUMED: Uuid = Uuid::from_u128(2);
const EXPIRED: Uuid = Uuid::from_u128(3);

/// The id of `account`, `retainer` being the partner's.
pub fn account_id(account: Account, retainer: Uuid) -> Uuid {
    match account {
        Account::Retainer => retainer,
        Account::Issued => ISSUED,
        Account::Consumed => CONSUMED,
        Account::Expired => EXPIRED,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RetainerRow {
    pub partner_id: String,
    /// The partner's retainer account.
    pub account_id: Uuid,
    pub overdrawn: i64,
    pub overdraft_limit: i64,
    pub low_balance_threshold: i64,
    pub terms_updated_at: Option<DateTime<Utc>>,
    pub terms_updated_by: String,
    pub terms_updated_role: i32,
}

const RETAINER_SELECT: &str = "SELECT r.partner_id, a.account_id, r.overdrawn, r.overdraft_limit,
        r.low_balance_threshold, r.terms_updated_at, r.terms_updated_by, r.terms_updated_role
    FROM retainers r JOIN accounts a ON a.partner_id = r.partner_id AND a.kind = 'partner_retainer'";

/// Locks the positions of `partner_ids` (sorted, so two batches cannot deadlock), creating them
/// and their retainer accounts on first use.
pub async fn lock(
    connection: &mut PgConnection,
    partner_ids: &[String],
) -> Result<Vec<RetainerRow>, sqlx::Error> {
    let select = format!(
        "{RETAINER_SELECT} WHERE r.partner_id = ANY($1) ORDER BY r.partner_id FOR UPDATE OF r"
    );
    let rows: Vec<RetainerRow> = sqlx::query_as(sqlx::AssertSqlSafe(select.clone()))
        .bind(partner_ids)
        .fetch_all(&mut *connection)
        .await?;
    if rows.len() == partner_ids.len() {
        return Ok(rows);
    }
    let accounts: Vec<Uuid> = partner_ids.iter().map(|_| Uuid::now_v7()).collect();
    sqlx::query(
        "WITH retainer AS (
             INSERT INTO retainers (partner_id) SELECT unnest($1::text[]) ORDER BY 1 ON CONFLICT DO NOTHING)
         INSERT INTO accounts (account_id, partner_id, kind)
         SELECT account, partner, 'partner_retainer' FROM unnest($2::uuid[], $1::text[]) AS a(account, partner)
         ON CONFLICT DO NOTHING",
    )
    .bind(partner_ids)
    .bind(&accounts)
    .execute(&mut *connection)
    .await?;
    sqlx::query_as(sqlx::AssertSqlSafe(select))
        .bind(partner_ids)
        .fetch_all(connection)
        .await
}

/// A partner's position without locking it (`None` before its first operation).
pub async fn retainer<'c>(
    executor: impl PgExecutor<'c>,
    partner_id: &str,
) -> Result<Option<RetainerRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{RETAINER_SELECT} WHERE r.partner_id = $1"
    )))
    .bind(partner_id)
    .fetch_optional(executor)
    .await
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, sqlx::FromRow)]
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

#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, sqlx::FromRow)]
pub struct HoldRecord {
    pub hold_id: Uuid,
    pub partner_id: String,
    pub engagement_id: Option<Uuid>,
    pub amount: i64,
    pub used: i64,
    #[sqlx(try_from = "String")]
    pub state: HoldState,
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

/// A mutating call's idempotency key: what it was used for and the answer a retry gets.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct KeyRow {
    pub partner_id: String,
    pub idempotency_key: String,
    pub operation: String,
    pub request_sha256: Vec<u8>,
    pub response: Vec<u8>,
    pub created_at: DateTime<Utc>,
}

/// What a batch reads of its partners once they are locked.
#[derive(Debug, Default)]
pub struct Read {
    pub packs: Vec<PackRow>,
    /// Pending only.
    pub holds: Vec<HoldRecord>,
    pub engagements: Vec<EngagementRow>,
    /// Among the keys asked for, those used already.
    pub keys: Vec<KeyRow>,
}

/// Which rows to read; empty lists read nothing of theirs.
pub struct Wanted<'a> {
    pub partner_ids: &'a [String],
    pub engagement_ids: &'a [Uuid],
    /// (partner, key) pairs.
    pub keys: (&'a [&'a str], &'a [&'a str]),
}

#[derive(sqlx::FromRow)]
struct ReadRow {
    kind: String,
    row: sqlx::types::Json<serde_json::Value>,
    request_sha256: Option<Vec<u8>>,
    response: Option<Vec<u8>>,
}

#[derive(serde::Deserialize)]
struct KeyFields {
    partner_id: String,
    idempotency_key: String,
    operation: String,
    created_at: DateTime<Utc>,
}

fn decoded<T: serde::de::DeserializeOwned>(row: serde_json::Value) -> Result<T, sqlx::Error> {
    serde_json::from_value(row).map_err(|error| sqlx::Error::Decode(Box::new(error)))
}

/// Reads packs, pending holds, engagements and used keys in one round trip (rows as JSON; the
/// keys' bytes beside them).
pub async fn read<'c>(
    executor: impl PgExecutor<'c>,
    wanted: &Wanted<'_>,
) -> Result<Read, sqlx::Error> {
    let rows: Vec<ReadRow> = sqlx::query_as(
        "SELECT 'pack' AS kind, to_jsonb(p) AS row, NULL::bytea AS request_sha256, NULL::bytea AS response
         FROM packs p WHERE p.partner_id = ANY($1)
         UNION ALL
         SELECT 'hold', to_jsonb(h), NULL, NULL FROM holds h WHERE h.partner_id = ANY($1) AND h.state = 'pending'
         UNION ALL
         SELECT 'engagement', to_jsonb(e), NULL, NULL FROM engagements e WHERE e.engagement_id = ANY($2)
         UNION ALL
         SELECT 'key', jsonb_build_object('partner_id', k.partner_id, 'idempotency_key', k.idempotency_key,
                 'operation', k.operation, 'created_at', k.created_at),
             k.request_sha256, k.response
         FROM idempotency_keys k JOIN unnest($3::text[], $4::text[]) AS u(partner_id, idempotency_key)
             USING (partner_id, idempotency_key)
         WHERE k.response IS NOT NULL",
    )
    .bind(wanted.partner_ids)
    .bind(wanted.engagement_ids)
    .bind(wanted.keys.0)
    .bind(wanted.keys.1)
    .fetch_all(executor)
    .await?;
    let mut read = Read::default();
    for ReadRow {
        kind,
        row,
        request_sha256,
        response,
    } in rows
    {
        match kind.as_str() {
            "pack" => read.packs.push(decoded(row.0)?),
            "hold" => read.holds.push(decoded(row.0)?),
            "engagement" => read.engagements.push(decoded(row.0)?),
            _ => {
                let fields: KeyFields = decoded(row.0)?;
                read.keys.push(KeyRow {
                    partner_id: fields.partner_id,
                    idempotency_key: fields.idempotency_key,
                    operation: fields.operation,
                    request_sha256: request_sha256.unwrap_or_default(),
                    response: response.unwrap_or_default(),
                    created_at: fields.created_at,
                });
            }
        }
    }
    // Each partner's packs oldest first: the order work draws on them.
    read.packs.sort_by(|a, b| {
        (&a.partner_id, a.expires_at, a.purchased_at, a.pack_id).cmp(&(
            &b.partner_id,
            b.expires_at,
            b.purchased_at,
            b.pack_id,
        ))
    });
    Ok(read)
}

/// An immutable movement of credits, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TransferRecord {
    pub transfer_id: Uuid,
    pub partner_id: String,
    #[sqlx(try_from = "String")]
    pub kind: TransferKind,
    pub debit_account_id: Uuid,
    pub credit_account_id: Uuid,
    pub amount: Minutes,
    pub pending: bool,
    pub pack_id: Option<Uuid>,
    pub hold_id: Option<Uuid>,
    pub engagement_id: Option<Uuid>,
    pub work_entry_id: Option<Uuid>,
    pub idempotency_key: String,
    pub description: String,
    pub actor_subject: String,
    pub actor_role: i32,
    pub created_at: DateTime<Utc>,
}

pub const TRANSFER_COLUMNS: &str = "transfer_id, partner_id, kind, debit_account_id,
    credit_account_id, amount, pending, pack_id, hold_id, engagement_id, work_entry_id,
    idempotency_key, description, actor_subject, actor_role, created_at";

/// A work entry as logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkEntryRow {
    pub work_entry_id: Uuid,
    pub engagement_id: Uuid,
    pub partner_id: String,
    pub investigator_subject: String,
    pub investigator_role: i32,
    pub minutes: i64,
    pub description: String,
    pub performed_at: DateTime<Utc>,
    pub logged_at: DateTime<Utc>,
    pub idempotency_key: String,
    /// (pack, minutes) drawn on, oldest first; no pack for the overdraft.
    pub debits: Vec<(Option<Uuid>, i64)>,
    pub transfer_ids: Vec<Uuid>,
}

/// What a batch changed, to be written in its transaction.
#[derive(Default)]
pub struct Changes<'a> {
    pub retainers: Vec<&'a RetainerRow>,
    pub packs: Vec<&'a PackRow>,
    pub holds: Vec<&'a HoldRecord>,
    pub engagements: Vec<&'a EngagementRow>,
    pub keys: Vec<&'a KeyRow>,
    pub transfers: &'a [TransferRecord],
    pub work_entries: &'a [WorkEntryRow],
    pub events: &'a [OutgoingEvent],
}

/// Writes a batch's changes in one statement, whose text does not change from batch to batch
/// (a table with nothing to write gets empty arrays), so it is prepared once.
pub async fn write(
    connection: &mut PgConnection,
    changes: &Changes<'_>,
) -> Result<(), sqlx::Error> {
    let mut arguments = Arguments::default();
    let transfers: Vec<&TransferRecord> = changes.transfers.iter().collect();
    let work_entries: Vec<&WorkEntryRow> = changes.work_entries.iter().collect();
    let parts = [
        retainers(&mut arguments, &changes.retainers)?,
        packs_written(&mut arguments, &changes.packs)?,
        holds_written(&mut arguments, &changes.holds)?,
        crate::engagements::written(&mut arguments, &changes.engagements)?,
        transfers_written(&mut arguments, &transfers)?,
        accounts_summed(&mut arguments, &transfers)?,
        work_entries_written(&mut arguments, &work_entries)?,
        keys_written(&mut arguments, &changes.keys)?,
        outbox::inserted(&mut arguments, changes.events)?,
    ];
    let statements: Vec<String> = parts
        .iter()
        .enumerate()
        .map(|(index, part)| format!("written_{index} AS ({part})"))
        .collect();
    let events = format!("written_{}", parts.len() - 1);
    let sql = format!(
        "WITH {} {}",
        statements.join(",\n"),
        outbox::wake_relay_after(&events)
    );
    sqlx::query_with(sqlx::AssertSqlSafe(sql), arguments.into_inner())
        .execute(connection)
        .await?;
    Ok(())
}

fn retainers(arguments: &mut Arguments, rows: &[&RetainerRow]) -> Result<String, sqlx::Error> {
    Ok(format!(
        "UPDATE retainers r SET overdrawn = u.overdrawn, overdraft_limit = u.overdraft_limit,
             low_balance_threshold = u.low_balance_threshold, terms_updated_at = u.updated_at,
             terms_updated_by = u.updated_by, terms_updated_role = u.updated_role
         FROM unnest({}::text[], {}::int8[], {}::int8[], {}::int8[], {}::timestamptz[], {}::text[],
             {}::int4[])
             AS u(partner_id, overdrawn, overdraft_limit, low_balance_threshold, updated_at, updated_by,
                 updated_role)
         WHERE r.partner_id = u.partner_id",
        arguments.bind(column(rows, |row| row.partner_id.as_str()))?,
        arguments.bind(column(rows, |row| row.overdrawn))?,
        arguments.bind(column(rows, |row| row.overdraft_limit))?,
        arguments.bind(column(rows, |row| row.low_balance_threshold))?,
        arguments.bind(column(rows, |row| row.terms_updated_at))?,
        arguments.bind(column(rows, |row| row.terms_updated_by.as_str()))?,
        arguments.bind(column(rows, |row| row.terms_updated_role))?,
    ))
}

fn packs_written(arguments: &mut Arguments, packs: &[&PackRow]) -> Result<String, sqlx::Error> {
    Ok(format!(
        "INSERT INTO packs (pack_id, partner_id, purchased, remaining, used, expired, purchased_at,
             valid_from, expires_at, purchase_reference, description, issued_by)
         SELECT * FROM unnest({}::uuid[], {}::text[], {}::int8[], {}::int8[], {}::int8[], {}::int8[],
             {}::timestamptz[], {}::timestamptz[], {}::timestamptz[], {}::text[], {}::text[], {}::text[])
         ON CONFLICT (pack_id) DO UPDATE SET remaining = EXCLUDED.remaining, used = EXCLUDED.used,
             expired = EXCLUDED.expired",
        arguments.bind(column(packs, |pack| pack.pack_id))?,
        arguments.bind(column(packs, |pack| pack.partner_id.as_str()))?,
        arguments.bind(column(packs, |pack| pack.purchased))?,
        arguments.bind(column(packs, |pack| pack.remaining))?,
        arguments.bind(column(packs, |pack| pack.used))?,
        arguments.bind(column(packs, |pack| pack.expired))?,
        arguments.bind(column(packs, |pack| pack.purchased_at))?,
        arguments.bind(column(packs, |pack| pack.valid_from))?,
        arguments.bind(column(packs, |pack| pack.expires_at))?,
        arguments.bind(column(packs, |pack| pack.purchase_reference.as_str()))?,
        arguments.bind(column(packs, |pack| pack.description.as_str()))?,
        arguments.bind(column(packs, |pack| pack.issued_by.as_str()))?,
    ))
}

fn holds_written(arguments: &mut Arguments, holds: &[&HoldRecord]) -> Result<String, sqlx::Error> {
    Ok(format!(
        "INSERT INTO holds (hold_id, partner_id, engagement_id, amount, used, state, created_at,
             expires_at, resolved_at, description, created_by)
         SELECT * FROM unnest({}::uuid[], {}::text[], {}::uuid[], {}::int8[], {}::int8[], {}::text[],
             {}::timestamptz[], {}::timestamptz[], {}::timestamptz[], {}::text[], {}::text[])
         ON CONFLICT (hold_id) DO UPDATE SET used = EXCLUDED.used, state = EXCLUDED.state,
             resolved_at = EXCLUDED.resolved_at",
        arguments.bind(column(holds, |hold| hold.hold_id))?,
        arguments.bind(column(holds, |hold| hold.partner_id.as_str()))?,
        arguments.bind(column(holds, |hold| hold.engagement_id))?,
        arguments.bind(column(holds, |hold| hold.amount))?,
        arguments.bind(column(holds, |hold| hold.used))?,
        arguments.bind(column(holds, |hold| hold.state.name()))?,
        arguments.bind(column(holds, |hold| hold.created_at))?,
        arguments.bind(column(holds, |hold| hold.expires_at))?,
        arguments.bind(column(holds, |hold| hold.resolved_at))?,
        arguments.bind(column(holds, |hold| hold.description.as_str()))?,
        arguments.bind(column(holds, |hold| hold.created_by.as_str()))?,
    ))
}

fn transfers_written(
    arguments: &mut Arguments,
    transfers: &[&TransferRecord],
) -> Result<String, sqlx::Error> {
    Ok(format!(
        "INSERT INTO transfers ({TRANSFER_COLUMNS})
         SELECT * FROM unnest({}::uuid[], {}::text[], {}::text[], {}::uuid[], {}::uuid[], {}::int8[],
             {}::bool[], {}::uuid[], {}::uuid[], {}::uuid[], {}::uuid[], {}::text[], {}::text[],
             {}::text[], {}::int4[], {}::timestamptz[])",
        arguments.bind(column(transfers, |transfer| transfer.transfer_id))?,
        arguments.bind(column(transfers, |transfer| transfer.partner_id.as_str()))?,
        arguments.bind(column(transfers, |transfer| transfer.kind.name()))?,
        arguments.bind(column(transfers, |transfer| transfer.debit_account_id))?,
        arguments.bind(column(transfers, |transfer| transfer.credit_account_id))?,
        arguments.bind(column(transfers, |transfer| transfer.amount))?,
        arguments.bind(column(transfers, |transfer| transfer.pending))?,
        arguments.bind(column(transfers, |transfer| transfer.pack_id))?,
        arguments.bind(column(transfers, |transfer| transfer.hold_id))?,
        arguments.bind(column(transfers, |transfer| transfer.engagement_id))?,
        arguments.bind(column(transfers, |transfer| transfer.work_entry_id))?,
        arguments.bind(column(transfers, |transfer| transfer.idempotency_key.as_str()))?,
        arguments.bind(column(transfers, |transfer| transfer.description.as_str()))?,
        arguments.bind(column(transfers, |transfer| transfer.actor_subject.as_str()))?,
        arguments.bind(column(transfers, |transfer| transfer.actor_role))?,
        arguments.bind(column(transfers, |transfer| transfer.created_at))?,
    ))
}

/// Adds the transfers to their accounts' running sums.
fn accounts_summed(
    arguments: &mut Arguments,
    transfers: &[&TransferRecord],
) -> Result<String, sqlx::Error> {
    // Each account's change: (debits posted, credits posted, debits pending, credits pending). A
    // pending transfer that reverses a hold (release, or the part work used) takes its
    // reservation back off the accounts it was put on.
    let mut sums: BTreeMap<Uuid, [i64; 4]> = BTreeMap::new();
    for transfer in transfers {
        let amount = transfer.amount;
        match (transfer.pending, transfer.kind) {
            (false, _) => {
                sums.entry(transfer.debit_account_id).or_default()[0] += amount;
                sums.entry(transfer.credit_account_id).or_default()[1] += amount;
            }
            (true, TransferKind::Hold) => {
                sums.entry(transfer.debit_account_id).or_default()[2] += amount;
                sums.entry(transfer.credit_account_id).or_default()[3] += amount;
            }
            (true, _) => {
                sums.entry(transfer.credit_account_id).or_default()[2] -= amount;
                sums.entry(transfer.debit_account_id).or_default()[3] -= amount;
            }
        }
    }
    let sum = |index: usize| -> Vec<i64> { sums.values().map(|sum| sum[index]).collect() };
    Ok(format!(
        "UPDATE accounts a SET debits_posted = a.debits_posted + s.debits_posted,
             credits_posted = a.credits_posted + s.credits_posted,
             debits_pending = a.debits_pending + s.debits_pending,
             credits_pending = a.credits_pending + s.credits_pending
         FROM unnest({}::uuid[], {}::int8[], {}::int8[], {}::int8[], {}::int8[])
             AS s(account_id, debits_posted, credits_posted, debits_pending, credits_pending)
         WHERE a.account_id = s.account_id",
        arguments.bind(sums.keys().copied().collect::<Vec<_>>())?,
        arguments.bind(sum(0))?,
        arguments.bind(sum(1))?,
        arguments.bind(sum(2))?,
        arguments.bind(sum(3))?,
    ))
}

fn work_entries_written(
    arguments: &mut Arguments,
    entries: &[&WorkEntryRow],
) -> Result<String, sqlx::Error> {
    let debits = column(entries, |entry| {
        let debits: Vec<serde_json::Value> = entry
            .debits
            .iter()
            .map(|(pack_id, minutes)| serde_json::json!({ "pack_id": pack_id, "minutes": minutes }))
            .collect();
        serde_json::Value::from(debits).to_string()
    });
    // Arrays of arrays do not unnest: each entry's transfer ids travel as an array literal.
    let transfer_ids = column(entries, |entry| {
        let ids: Vec<String> = entry.transfer_ids.iter().map(Uuid::to_string).collect();
        format!("{{{}}}", ids.join(","))
    });
    Ok(format!(
        "INSERT INTO work_entries (work_entry_id, engagement_id, partner_id, investigator_subject,
             investigator_role, minutes, description, performed_at, logged_at, idempotency_key, debits,
             transfer_ids)
         SELECT id, engagement, partner, subject, role, minutes, description, performed, logged, key,
             debits::jsonb, transfers::uuid[]
         FROM unnest({}::uuid[], {}::uuid[], {}::text[], {}::text[], {}::int4[], {}::int8[], {}::text[],
             {}::timestamptz[], {}::timestamptz[], {}::text[], {}::text[], {}::text[])
             AS e(id, engagement, partner, subject, role, minutes, description, performed, logged, key,
                 debits, transfers)",
        arguments.bind(column(entries, |entry| entry.work_entry_id))?,
        arguments.bind(column(entries, |entry| entry.engagement_id))?,
        arguments.bind(column(entries, |entry| entry.partner_id.as_str()))?,
        arguments.bind(column(entries, |entry| entry.investigator_subject.as_str()))?,
        arguments.bind(column(entries, |entry| entry.investigator_role))?,
        arguments.bind(column(entries, |entry| entry.minutes))?,
        arguments.bind(column(entries, |entry| entry.description.as_str()))?,
        arguments.bind(column(entries, |entry| entry.performed_at))?,
        arguments.bind(column(entries, |entry| entry.logged_at))?,
        arguments.bind(column(entries, |entry| entry.idempotency_key.as_str()))?,
        arguments.bind(debits)?,
        arguments.bind(transfer_ids)?,
    ))
}

fn keys_written(arguments: &mut Arguments, keys: &[&KeyRow]) -> Result<String, sqlx::Error> {
    Ok(format!(
        "INSERT INTO idempotency_keys (partner_id, idempotency_key, operation, request_sha256, response,
             created_at)
         SELECT * FROM unnest({}::text[], {}::text[], {}::text[], {}::bytea[], {}::bytea[],
             {}::timestamptz[])",
        arguments.bind(column(keys, |key| key.partner_id.as_str()))?,
        arguments.bind(column(keys, |key| key.idempotency_key.as_str()))?,
        arguments.bind(column(keys, |key| key.operation.as_str()))?,
        arguments.bind(column(keys, |key| key.request_sha256.as_slice()))?,
        arguments.bind(column(keys, |key| key.response.as_slice()))?,
        arguments.bind(column(keys, |key| key.created_at))?,
    ))
}

/// The partners with packs past their validity or holds past their timeout by `now`.
pub async fn lapsed<'c>(
    executor: impl PgExecutor<'c>,
    now: DateTime<Utc>,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT partner_id FROM packs WHERE remaining > 0 AND expires_at <= $1
         UNION SELECT partner_id FROM holds WHERE state = 'pending' AND expires_at <= $1",
    )
    .bind(now)
    .fetch_all(executor)
    .await
}
