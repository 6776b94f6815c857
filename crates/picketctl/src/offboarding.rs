//! Offboarding a customer tenant, served by the offboarding service.

use std::path::PathBuf;

use clap::Subcommand;
use picket_proto::offboarding::v1::offboarding_service_client::OffboardingServiceClient;
use picket_proto::offboarding::v1::{
    CancelOffboardingRequest, CertificateFormat, GetDeletionCertificateRequest,
    GetOffboardingRequest, ListOffboardingsRequest, OffboardTenantRequest, Offboarding,
    OffboardingState,
};
use picket_proto::pbjson_types::Duration;

use crate::Context;
use crate::output::{Table, choice, duration, label, parse_duration, time, write_stdout};

#[derive(Debug, Subcommand)]
pub enum OffboardingCommand {
    /// Disconnects a tenant now and schedules the removal of its data.
    Start {
        tenant_id: String,
        /// Why, recorded on the deletion certificate.
        #[arg(long)]
        reason: String,
        /// How long data is kept before removal, such as 30d (default: the partner's setting).
        #[arg(long, value_parser = parse_duration)]
        retention: Option<Duration>,
    },
    /// Cancels an offboarding before its data is removed.
    Cancel {
        offboarding_id: String,
        #[arg(long)]
        reason: String,
    },
    /// Shows one offboarding, or lists the partner's.
    Status {
        offboarding_id: Option<String>,
        /// List only this tenant's offboardings.
        #[arg(long, default_value = "")]
        tenant: String,
    },
    /// Prints the deletion certificate of a completed offboarding.
    Certificate {
        offboarding_id: String,
        /// json, markdown or html.
        #[arg(long, value_parser = choice!(CertificateFormat), default_value = "markdown")]
        format: i32,
        /// Write here instead of standard output.
        #[arg(long)]
        file: Option<PathBuf>,
    },
}

pub async fn offboarding(context: &Context, command: OffboardingCommand) -> anyhow::Result<()> {
    let service = context.offboarding()?;
    let mut client = OffboardingServiceClient::new(service.channel.clone());
    let output = context.output;
    match command {
        OffboardingCommand::Start {
            tenant_id,
            reason,
            retention,
        } => {
            let response = service.answer(
                client
                    .offboard_tenant(OffboardTenantRequest {
                        partner_id: context.partner()?,
                        tenant_id,
                        reason,
                        retention,
                    })
                    .await,
            )?;
            output.show(&response, |response| {
                offboarding_record(response.offboarding.as_ref())
            })
        }
        OffboardingCommand::Cancel {
            offboarding_id,
            reason,
        } => {
            let response = service.answer(
                client
                    .cancel_offboarding(CancelOffboardingRequest {
                        offboarding_id,
                        reason,
                    })
                    .await,
            )?;
            output.show(&response, |response| {
                let mut table = offboarding_record(response.offboarding.as_ref());
                if response.consent_required {
                    table.field(
                        "next step",
                        "the customer must consent again (`picketctl tenants forward-consent`)",
                    );
                }
                table
            })
        }
        OffboardingCommand::Status {
            offboarding_id: Some(offboarding_id),
            ..
        } => {
            let response = service.answer(
                client
                    .get_offboarding(GetOffboardingRequest { offboarding_id })
                    .await,
            )?;
            output.show(&response, |response| {
                offboarding_record(response.offboarding.as_ref())
            })
        }
        OffboardingCommand::Status {
            offboarding_id: None,
            tenant,
        } => {
            let response = service.answer(
                client
                    .list_offboardings(ListOffboardingsRequest {
                        partner_id: context.partner()?,
                        tenant_id: tenant,
                        page_size: 100,
                        ..ListOffboardingsRequest::default()
                    })
                    .await,
            )?;
            output.list(&response, &response.next_page_token, |response| {
                let mut table =
                    Table::new(&["offboarding", "tenant", "state", "requested", "purge due"]);
                for offboarding in &response.offboardings {
                    table.row(vec![
                        offboarding.offboarding_id.clone(),
                        offboarding.tenant_id.clone(),
                        label!(OffboardingState, offboarding.state),
                        time(&offboarding.requested_at),
                        time(&offboarding.purge_due_at),
                    ]);
                }
                table
            })
        }
        OffboardingCommand::Certificate {
            offboarding_id,
            format,
            file,
        } => {
            let response = service.answer(
                client
                    .get_deletion_certificate(GetDeletionCertificateRequest {
                        offboarding_id,
                        format,
                        ..GetDeletionCertificateRequest::default()
                    })
                    .await,
            )?;
            match file {
                Some(path) => {
                    std::fs::write(&path, &response.document)
                        .map_err(|error| anyhow::anyhow!("{}: {error}", path.display()))?;
                    eprintln!("wrote {} ({})", path.display(), response.content_type);
                    Ok(())
                }
                None => write_stdout(&String::from_utf8_lossy(&response.document)),
            }
        }
    }
}

fn offboarding_record(offboarding: Option<&Offboarding>) -> Table {
    let mut table = Table::record();
    let Some(offboarding) = offboarding else {
        return table;
    };
    table.field("offboarding", &offboarding.offboarding_id);
    table.field("tenant", &offboarding.tenant_id);
    table.field("state", label!(OffboardingState, offboarding.state));
    table.field("reason", &offboarding.reason);
    table.field("retention", duration(&offboarding.retention));
    table.field("requested", time(&offboarding.requested_at));
    table.field("disconnected", time(&offboarding.disconnected_at));
    table.field("purge due", time(&offboarding.purge_due_at));
    table.field("completed", time(&offboarding.completed_at));
    table.field("cancelled", time(&offboarding.cancelled_at));
    table
}
