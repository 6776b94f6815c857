//! What partners and staff read of the ledger: packs, transfers, accounts, and statements for a
//! period (as protobuf lines and as CSV).

use chrono::{DateTime, Utc};
use picket_platform::text::csv_field;
use picket_platform::time::to_timestamp;
use picket_proto::common::v1 as common;
use picket_proto::ledger::v1 as ledger;
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

use crate::api::transfer_kind_proto;
use crate::engine::TransferKind;
use crate::store::{PackRow, TRANSFER_COLUMNS, TransferRecord};

/// A page of a partner's packs, newest first.
pub async fn packs<'c>(
    executor: impl PgExecutor<'c>,
    partner_id: &str,
    offset: i64,
    limit: i64,
) -> Result<Vec<PackRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT pack_id, partner_id, purchased, remaining, used, expired, purchased_at, valid_from,
             expires_at, purchase_reference, description, issued_by
         FROM packs WHERE partner_id = $1 ORDER BY purchased_at DESC, pack_id DESC OFFSET $2 LIMIT $3",
    )
    .bind(partner_id)
    .bind(offset)
    .bind(limit)
    .fetch_all(executor)
    .await
}

/// Which transfers to list.
pub struct TransferFilter<'a> {
    pub partner_id: &'a str,
    /// Stored kind names; empty for all.
    pub kinds: &'a [&'a str],
    pub from: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub engagement_id: Option<Uuid>,
}

#[derive(sqlx::FromRow)]
struct Listed {
    #[sqlx(flatten)]
    transfer: TransferRecord,
    pending_transfer_id: Option<Uuid>,
}

/// A page of a partner's transfers, oldest first, each with the HOLD transfer it resolves.
pub async fn transfers(
    pool: &PgPool,
    filter: &TransferFilter<'_>,
    offset: i64,
    limit: i64,
) -> Result<Vec<(TransferRecord, Option<Uuid>)>, sqlx::Error> {
    let rows: Vec<Listed> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {TRANSFER_COLUMNS},
             (SELECT h.transfer_id FROM transfers h
              WHERE h.hold_id = t.hold_id AND h.kind = 'hold' AND t.kind <> 'hold' LIMIT 1)
                 AS pending_transfer_id
         FROM transfers t
         WHERE partner_id = $1 AND (cardinality($2::text[]) = 0 OR kind = ANY($2))
           AND ($3::timestamptz IS NULL OR created_at >= $3) AND ($4::timestamptz IS NULL OR created_at < $4)
           AND ($5::uuid IS NULL OR engagement_id = $5)
         ORDER BY created_at, transfer_id OFFSET $6 LIMIT $7"
    )))
    .bind(filter.partner_id)
    .bind(filter.kinds)
    .bind(filter.from)
    .bind(filter.until)
    .bind(filter.engagement_id)
    .bind(offset)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| (row.transfer, row.pending_transfer_id))
        .collect())
}

#[derive(sqlx::FromRow)]
struct AccountRow {
    account_id: Uuid,
    partner_id: Option<String>,
    kind: String,
    debits_posted: i64,
    credits_posted: i64,
    debits_pending: i64,
    credits_pending: i64,
    created_at: DateTime<Utc>,
}

/// A page of accounts: one partner's, or all of them.
pub async fn accounts(
    pool: &PgPool,
    partner_id: Option<&str>,
    kinds: &[&str],
    offset: i64,
    limit: i64,
) -> Result<Vec<ledger::Account>, sqlx::Error> {
    let rows: Vec<AccountRow> = sqlx::query_as(
        "SELECT account_id, partner_id, kind, debits_posted, credits_posted, debits_pending,
             credits_pending, created_at
         FROM accounts WHERE ($1::text IS NULL OR partner_id = $1)
           AND (cardinality($2::text[]) = 0 OR kind = ANY($2))
         ORDER BY created_at, account_id OFFSET $3 LIMIT $4",
    )
    .bind(partner_id)
    .bind(kinds)
    .bind(offset)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let kind = match row.kind.as_str() {
                "partner_retainer" => ledger::AccountKind::PartnerRetainer,
                "operator_issued" => ledger::AccountKind::OperatorIssued,
                "operator_consumed" => ledger::AccountKind::OperatorConsumed,
                _ => ledger::AccountKind::OperatorExpired,
            };
            ledger::Account {
                account_id: row.account_id.to_string(),
                partner_id: row.partner_id.unwrap_or_default(),
                kind: kind.into(),
                pack_id: String::new(),
                debits_posted_minutes: row.debits_posted,
                credits_posted_minutes: row.credits_posted,
                debits_pending_minutes: row.debits_pending,
                credits_pending_minutes: row.credits_pending,
                created_at: Some(to_timestamp(row.created_at)),
            }
        })
        .collect())
}

/// A partner's statement for [`from`, `until`): the posted balance at both ends, what was bought,
/// used and expired, what is on hold at the end, and one line per transfer.
pub async fn statement(
    pool: &PgPool,
    partner_id: &str,
    from: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<ledger::Statement, sqlx::Error> {
    let mut statement = ledger::Statement {
        partner_id: partner_id.to_owned(),
        period: Some(common::TimeRange {
            start_time: Some(to_timestamp(from)),
            end_time: Some(to_timestamp(until)),
        }),
        generated_at: Some(to_timestamp(Utc::now())),
        ..Default::default()
    };
    let retainer: Option<Uuid> = sqlx::query_scalar(
        "SELECT account_id FROM accounts WHERE partner_id = $1 AND kind = 'partner_retainer'",
    )
    .bind(partner_id)
    .fetch_optional(pool)
    .await?;
    let Some(retainer) = retainer else {
        return Ok(statement);
    };
    let (opening, held_at_end): (i64, i64) = sqlx::query_as(
        "SELECT
             COALESCE(sum(CASE WHEN credit_account_id = $2 THEN amount ELSE -amount END)
                 FILTER (WHERE NOT pending AND created_at < $3), 0)::int8,
             COALESCE(sum(CASE WHEN kind = 'hold' THEN amount ELSE -amount END)
                 FILTER (WHERE pending AND created_at < $4), 0)::int8
         FROM transfers WHERE partner_id = $1 AND created_at < $4",
    )
    .bind(partner_id)
    .bind(retainer)
    .bind(from)
    .bind(until)
    .fetch_one(pool)
    .await?;
    let transfers: Vec<TransferRecord> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {TRANSFER_COLUMNS} FROM transfers
         WHERE partner_id = $1 AND created_at >= $2 AND created_at < $3
         ORDER BY created_at, transfer_id"
    )))
    .bind(partner_id)
    .bind(from)
    .bind(until)
    .fetch_all(pool)
    .await?;
    let mut balance = opening;
    for transfer in &transfers {
        let (amount, held_change) = match (transfer.pending, transfer.kind) {
            (false, _) if transfer.credit_account_id == retainer => (transfer.amount, 0),
            (false, _) => (-transfer.amount, 0),
            (true, TransferKind::Hold) => (0, transfer.amount),
            (true, _) => (0, -transfer.amount),
        };
        balance += amount;
        match transfer.kind {
            TransferKind::Purchase => statement.purchased_minutes += transfer.amount,
            TransferKind::WorkDebit => statement.used_minutes += transfer.amount,
            TransferKind::Expiry => statement.expired_minutes += transfer.amount,
            _ => {}
        }
        let id = |id: Option<Uuid>| id.map(|id| id.to_string()).unwrap_or_default();
        statement.lines.push(ledger::StatementLine {
            occurred_at: Some(to_timestamp(transfer.created_at)),
            kind: transfer_kind_proto(transfer.kind).into(),
            description: transfer.description.clone(),
            amount_minutes: amount,
            balance_after_minutes: balance,
            transfer_id: transfer.transfer_id.to_string(),
            pack_id: id(transfer.pack_id),
            engagement_id: id(transfer.engagement_id),
            work_entry_id: id(transfer.work_entry_id),
            hold_id: id(transfer.hold_id),
            held_change_minutes: held_change,
        });
    }
    statement.opening_balance_minutes = opening;
    statement.closing_balance_minutes = balance;
    statement.held_minutes_at_end = held_at_end;
    Ok(statement)
}

/// The statement as CSV (RFC 4180, UTF-8, header row, CRLF line ends).
pub fn csv(statement: &ledger::Statement) -> Vec<u8> {
    let mut csv = String::from(
        "occurred_at,kind,description,amount_minutes,balance_after_minutes,held_change_minutes,pack_id,engagement_id,work_entry_id,hold_id,transfer_id\r\n",
    );
    for line in &statement.lines {
        let occurred_at = line
            .occurred_at
            .as_ref()
            .and_then(picket_platform::time::from_timestamp)
            .map(|time| time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .unwrap_or_default();
        let kind = ledger::TransferKind::try_from(line.kind)
            .map(|kind| {
                kind.as_str_name()
                    .trim_start_matches("TRANSFER_KIND_")
                    .to_ascii_lowercase()
            })
            .unwrap_or_default();
        let fields = [
            occurred_at,
            kind,
            csv_field(&line.description),
            line.amount_minutes.to_string(),
            line.balance_after_minutes.to_string(),
            line.held_change_minutes.to_string(),
            line.pack_id.clone(),
            line.engagement_id.clone(),
            line.work_entry_id.clone(),
            line.hold_id.clone(),
            line.transfer_id.clone(),
        ];
        csv.push_str(&fields.join(","));
        csv.push_str("\r\n");
    }
    csv.into_bytes()
}
