//! The incident-response retainer: credits and engagements, served by the ledger.

use clap::Subcommand;
use picket_proto::common::v1::TimeRange;
use picket_proto::ledger::v1::credit_ledger_service_client::CreditLedgerServiceClient;
use picket_proto::ledger::v1::engagement_service_client::EngagementServiceClient;
use picket_proto::ledger::v1::{
    Balance, EngagementState, GetBalanceRequest, GetStatementRequest, ListEngagementsRequest,
    LogWorkRequest, PurchaseCreditsRequest, StatementFormat, TransferKind,
};
use picket_proto::pbjson_types::{Duration, Timestamp};

use crate::Context;
use crate::output::{Table, choice, label, parse_duration, parse_time, time, write_stdout};

#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// The partner's available, held and remaining minutes.
    Balance,
    /// The statement of a period: opening and closing balance and every movement.
    Statement {
        /// First day (2026-11-01) or time, inclusive.
        #[arg(long, value_parser = parse_time)]
        from: Timestamp,
        /// Last day or time, exclusive.
        #[arg(long, value_parser = parse_time)]
        to: Timestamp,
        /// Print the CSV for accounting instead.
        #[arg(long)]
        csv: bool,
    },
    /// Adds prepaid minutes to the retainer (operators).
    Purchase {
        #[arg(long)]
        minutes: i64,
        /// How long the credits stay valid, such as 365d.
        #[arg(long, value_parser = parse_duration)]
        validity: Option<Duration>,
        /// The invoice or order this purchase settles.
        #[arg(long, default_value = "")]
        reference: String,
        /// Makes a retried purchase count once (default: a new key per call).
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Lists engagements (investigations drawing on the retainer).
    Engagements {
        /// Only engagements in these states (open, closed).
        #[arg(long = "state", value_parser = choice!(EngagementState))]
        states: Vec<i32>,
        #[arg(long, default_value_t = 50)]
        page_size: i32,
        #[arg(long, default_value = "")]
        page_token: String,
    },
    /// Logs an investigator's work on an engagement, drawing down the retainer.
    LogWork {
        engagement_id: String,
        #[arg(long)]
        minutes: i64,
        /// What was done.
        #[arg(long)]
        description: String,
        /// When it was done (default: now).
        #[arg(long, value_parser = parse_time)]
        performed_at: Option<Timestamp>,
        /// Makes a retried entry count once (default: a new key per call).
        #[arg(long)]
        idempotency_key: Option<String>,
    },
}

fn idempotency_key(given: Option<String>) -> String {
    given.unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

pub async fn ledger(context: &Context, command: LedgerCommand) -> anyhow::Result<()> {
    let service = context.ledger()?;
    let mut credits = CreditLedgerServiceClient::new(service.channel.clone());
    let mut engagements = EngagementServiceClient::new(service.channel.clone());
    let output = context.output;
    match command {
        LedgerCommand::Balance => {
            let response = service.answer(
                credits
                    .get_balance(GetBalanceRequest {
                        partner_id: context.partner()?,
                    })
                    .await,
            )?;
            output.show(&response, |response| {
                response
                    .balance
                    .as_ref()
                    .map(balance_record)
                    .unwrap_or_default()
            })
        }
        LedgerCommand::Statement { from, to, csv } => {
            let format = if csv {
                StatementFormat::Csv
            } else {
                StatementFormat::Proto
            };
            let response = service.answer(
                credits
                    .get_statement(GetStatementRequest {
                        partner_id: context.partner()?,
                        period: Some(TimeRange {
                            start_time: Some(from),
                            end_time: Some(to),
                        }),
                        format: format.into(),
                    })
                    .await,
            )?;
            if csv {
                return write_stdout(&String::from_utf8_lossy(&response.csv));
            }
            output.show(&response, |response| {
                let mut table = Table::new(&["when", "kind", "minutes", "balance", "description"]);
                let Some(statement) = &response.statement else {
                    return table;
                };
                table.row(vec![
                    time(&statement.period.as_ref().and_then(|p| p.start_time)),
                    "opening".into(),
                    String::new(),
                    statement.opening_balance_minutes.to_string(),
                    String::new(),
                ]);
                for line in &statement.lines {
                    table.row(vec![
                        time(&line.occurred_at),
                        label!(TransferKind, line.kind),
                        line.amount_minutes.to_string(),
                        line.balance_after_minutes.to_string(),
                        line.description.clone(),
                    ]);
                }
                table.row(vec![
                    time(&statement.period.as_ref().and_then(|p| p.end_time)),
                    "closing".into(),
                    String::new(),
                    statement.closing_balance_minutes.to_string(),
                    format!(
                        "purchased {}, used {}, expired {}",
                        statement.purchased_minutes,
                        statement.used_minutes,
                        statement.expired_minutes
                    ),
                ]);
                table
            })
        }
        LedgerCommand::Purchase {
            minutes,
            validity,
            reference,
            idempotency_key: key,
        } => {
            let response = service.answer(
                credits
                    .purchase_credits(PurchaseCreditsRequest {
                        partner_id: context.partner()?,
                        idempotency_key: idempotency_key(key),
                        minutes,
                        validity,
                        purchase_reference: reference,
                        ..PurchaseCreditsRequest::default()
                    })
                    .await,
            )?;
            output.show(&response, |response| {
                response
                    .balance
                    .as_ref()
                    .map(balance_record)
                    .unwrap_or_default()
            })
        }
        LedgerCommand::Engagements {
            states,
            page_size,
            page_token,
        } => {
            let response = service.answer(
                engagements
                    .list_engagements(ListEngagementsRequest {
                        partner_id: context.partner()?,
                        states,
                        page_size,
                        page_token,
                        ..ListEngagementsRequest::default()
                    })
                    .await,
            )?;
            output.list(&response, &response.next_page_token, |response| {
                let mut table = Table::new(&[
                    "engagement",
                    "tenant",
                    "state",
                    "opened",
                    "investigator",
                    "request",
                ]);
                for engagement in &response.engagements {
                    table.row(vec![
                        engagement.engagement_id.clone(),
                        engagement.tenant_id.clone(),
                        label!(EngagementState, engagement.state),
                        time(&engagement.opened_at),
                        engagement.investigator_subject.clone(),
                        engagement.request.clone(),
                    ]);
                }
                table
            })
        }
        LedgerCommand::LogWork {
            engagement_id,
            minutes,
            description,
            performed_at,
            idempotency_key: key,
        } => {
            let response = service.answer(
                engagements
                    .log_work(LogWorkRequest {
                        partner_id: context.partner()?,
                        idempotency_key: idempotency_key(key),
                        engagement_id,
                        minutes,
                        description,
                        performed_at,
                    })
                    .await,
            )?;
            output.show(&response, |response| {
                let mut table = response
                    .balance
                    .as_ref()
                    .map(balance_record)
                    .unwrap_or_default();
                if let Some(entry) = &response.entry {
                    table.field("work entry", &entry.work_entry_id);
                    table.field("minutes logged", entry.minutes.to_string());
                }
                table
            })
        }
    }
}

fn balance_record(balance: &Balance) -> Table {
    let mut table = Table::record();
    table.field("partner", &balance.partner_id);
    table.field("available minutes", balance.available_minutes.to_string());
    table.field("held minutes", balance.held_minutes.to_string());
    table.field("remaining minutes", balance.remaining_minutes.to_string());
    table.field(
        "overdraft limit",
        balance.overdraft_limit_minutes.to_string(),
    );
    if balance.next_expiry_minutes > 0 {
        table.field(
            "next expiry",
            format!(
                "{} minutes on {}",
                balance.next_expiry_minutes,
                time(&balance.next_expiry_at)
            ),
        );
    }
    table
}
