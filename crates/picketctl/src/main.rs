//! `picketctl`: Picket from the command line, for operators and partners. Every command is a call
//! to one of the services' gRPC APIs (or, for `events tail`, a NATS subscription); results print as
//! tables for people or, with `--output json`, as the API's canonical protobuf JSON for scripts.

mod connect;
mod events;
mod incidents;
mod ledger;
mod login;
mod notifications;
mod offboarding;
mod output;
mod tenants;
mod token;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use connect::{Bearer, Endpoints, Service};
use output::{Format, Output};

#[derive(Debug, Parser)]
#[command(name = "picketctl", version, about, long_about = None)]
struct Cli {
    /// Bearer token for the gRPC APIs (`picketctl token mint` makes one for development).
    #[arg(long, env = "PICKET_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// Partner the command is about; defaults to the token's own partner.
    #[arg(long, env = "PICKET_PARTNER", global = true)]
    partner: Option<String>,
    /// How results are printed.
    #[arg(long, short, value_enum, default_value_t = Format::Table, global = true)]
    output: Format,
    #[command(flatten)]
    endpoints: Endpoints,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Customer tenants: onboard, list, show, forward consent.
    #[command(subcommand)]
    Tenants(tenants::TenantCommand),
    /// Configuration scans and monitoring polls.
    #[command(subcommand)]
    Scans(tenants::ScanCommand),
    /// Incidents: list, show, approve, mute, ignore.
    #[command(subcommand)]
    Incidents(incidents::IncidentCommand),
    /// Auto-approve rules: which fixes Picket applies without asking.
    #[command(subcommand)]
    Rules(incidents::RuleCommand),
    /// The authority map: who confirms, contains, decides and communicates.
    #[command(subcommand)]
    Authority(incidents::AuthorityCommand),
    /// Notification channels: webhook endpoints and e-mail recipients.
    #[command(subcommand)]
    Channels(notifications::ChannelCommand),
    /// Webhook and e-mail deliveries.
    #[command(subcommand)]
    Deliveries(notifications::DeliveryCommand),
    /// The incident-response retainer: balance, statement, engagements, logged work.
    #[command(subcommand)]
    Ledger(ledger::LedgerCommand),
    /// Offboarding a customer tenant: start, cancel, status, deletion certificate.
    #[command(subcommand)]
    Offboarding(offboarding::OffboardingCommand),
    /// Picket's events on NATS.
    #[command(subcommand)]
    Events(events::EventCommand),
    /// Bearer tokens.
    #[command(subcommand)]
    Token(token::TokenCommand),
}

/// What every command needs: where to print, whom it is about, how to reach the services.
#[derive(Debug)]
pub struct Context {
    pub output: Output,
    partner: Option<String>,
    endpoints: Endpoints,
    bearer: Bearer,
}

impl Context {
    /// The partner the command is about: `--partner`, else the token's own.
    pub fn partner(&self) -> anyhow::Result<String> {
        self.partner.clone().ok_or_else(|| {
            anyhow::anyhow!(
                "which partner? pass --partner or set PICKET_PARTNER (operator tokens carry none)"
            )
        })
    }

    pub fn scanner(&self) -> anyhow::Result<Service> {
        connect::service("scanner", &self.endpoints.scanner, self.bearer.clone())
    }

    pub fn prioritizer(&self) -> anyhow::Result<Service> {
        connect::service(
            "prioritizer",
            &self.endpoints.prioritizer,
            self.bearer.clone(),
        )
    }

    pub fn notifier(&self) -> anyhow::Result<Service> {
        connect::service("notifier", &self.endpoints.notifier, self.bearer.clone())
    }

    pub fn ledger(&self) -> anyhow::Result<Service> {
        connect::service("ledger", &self.endpoints.ledger, self.bearer.clone())
    }

    pub fn offboarding(&self) -> anyhow::Result<Service> {
        connect::service(
            "offboarding",
            &self.endpoints.offboarding,
            self.bearer.clone(),
        )
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("picketctl: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let partner = match cli.partner {
        Some(partner) => Some(partner),
        None => cli.token.as_deref().and_then(token::partner_of),
    };
    let context = Context {
        output: Output { format: cli.output },
        partner,
        endpoints: cli.endpoints,
        bearer: connect::bearer(cli.token.as_deref())?,
    };
    match cli.command {
        Command::Tenants(command) => tenants::tenants(&context, command).await,
        Command::Scans(command) => tenants::scans(&context, command).await,
        Command::Incidents(command) => incidents::incidents(&context, command).await,
        Command::Rules(command) => incidents::rules(&context, command).await,
        Command::Authority(command) => incidents::authority(&context, command).await,
        Command::Channels(command) => notifications::channels(&context, command).await,
        Command::Deliveries(command) => notifications::deliveries(&context, command).await,
        Command::Ledger(command) => ledger::ledger(&context, command).await,
        Command::Offboarding(command) => offboarding::offboarding(&context, command).await,
        Command::Events(command) => events::events(&context, command).await,
        Command::Token(command) => token::token(&context, command).await,
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }
}
