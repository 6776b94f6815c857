//! Tenants and scans, served by the scanner.

use clap::Subcommand;
use picket_proto::tenants::v1::scan_service_client::ScanServiceClient;
use picket_proto::tenants::v1::tenant_service_client::TenantServiceClient;
use picket_proto::tenants::v1::{
    ForwardConsentRequest, GetScanRequest, GetTenantRequest, ListScansRequest, ListTenantsRequest,
    OnboardTenantRequest, ScanKind, ScanRun, ScanState, StartScanRequest, SubscriptionPlan, Tenant,
    TenantState,
};

use crate::Context;
use crate::output::{Table, choice, label, time};

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Registers a customer's Microsoft 365 tenant and prints the admin-consent link.
    Onboard {
        /// Name shown to the MSP.
        #[arg(long)]
        name: String,
        /// The customer's Microsoft tenant id or verified domain (contoso.onmicrosoft.com).
        #[arg(long)]
        microsoft_tenant: String,
        /// essentials, standard or premium.
        #[arg(long, value_parser = choice!(SubscriptionPlan), default_value = "standard")]
        plan: i32,
        /// Makes a retried onboarding return the first one's tenant.
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Lists the partner's tenants.
    List {
        /// Only tenants in these states (pending-consent, active, disconnected, ...).
        #[arg(long = "state", value_parser = choice!(TenantState))]
        states: Vec<i32>,
        #[arg(long, default_value_t = 100)]
        page_size: i32,
        #[arg(long, default_value = "")]
        page_token: String,
    },
    /// Shows one tenant.
    Show { tenant_id: String },
    /// E-mails the admin-consent link to the customer's administrator.
    ForwardConsent {
        tenant_id: String,
        /// The administrator's e-mail address.
        #[arg(long)]
        email: String,
        /// The administrator's name, for the greeting.
        #[arg(long, default_value = "")]
        name: String,
        /// A note from the MSP.
        #[arg(long, default_value = "")]
        message: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ScanCommand {
    /// Starts a scan of one tenant now.
    Start {
        tenant_id: String,
        /// configuration, monitoring or full.
        #[arg(long, value_parser = choice!(ScanKind), default_value = "configuration")]
        kind: i32,
    },
    /// Lists scans, newest first.
    List {
        /// Only this tenant's scans.
        #[arg(long, default_value = "")]
        tenant: String,
        /// Only scans in these states (queued, running, succeeded, partial, failed, cancelled).
        #[arg(long = "state", value_parser = choice!(ScanState))]
        states: Vec<i32>,
        #[arg(long, default_value_t = 50)]
        page_size: i32,
        #[arg(long, default_value = "")]
        page_token: String,
    },
    /// Shows one scan with its counts and errors.
    Show { scan_id: String },
}

pub async fn tenants(context: &Context, command: TenantCommand) -> anyhow::Result<()> {
    let service = context.scanner()?;
    let mut client = TenantServiceClient::new(service.channel.clone());
    let output = context.output;
    match command {
        TenantCommand::Onboard {
            name,
            microsoft_tenant,
            plan,
            idempotency_key,
        } => {
            let response = service.answer(
                client
                    .onboard_tenant(OnboardTenantRequest {
                        partner_id: context.partner()?,
                        display_name: name,
                        microsoft_tenant,
                        plan,
                        idempotency_key: idempotency_key.unwrap_or_default(),
                    })
                    .await,
            )?;
            output.show(&response, |response| {
                let mut table = tenant_record(response.tenant.as_ref());
                table.field("consent link", &response.consent_url);
                table.field("link expires", time(&response.consent_expires_at));
                table
            })
        }
        TenantCommand::List {
            states,
            page_size,
            page_token,
        } => {
            let response = service.answer(
                client
                    .list_tenants(ListTenantsRequest {
                        partner_id: context.partner()?,
                        states,
                        page_size,
                        page_token,
                    })
                    .await,
            )?;
            output.list(&response, &response.next_page_token, |response| {
                let mut table =
                    Table::new(&["tenant", "name", "domain", "plan", "state", "last scan"]);
                for tenant in &response.tenants {
                    table.row(vec![
                        tenant.tenant_id.clone(),
                        tenant.display_name.clone(),
                        tenant.primary_domain.clone(),
                        label!(SubscriptionPlan, tenant.plan),
                        label!(TenantState, tenant.state),
                        time(&tenant.last_configuration_scan_at),
                    ]);
                }
                table
            })
        }
        TenantCommand::Show { tenant_id } => {
            let response =
                service.answer(client.get_tenant(GetTenantRequest { tenant_id }).await)?;
            output.show(&response, |response| {
                tenant_record(response.tenant.as_ref())
            })
        }
        TenantCommand::ForwardConsent {
            tenant_id,
            email,
            name,
            message,
        } => {
            let response = service.answer(
                client
                    .forward_consent(ForwardConsentRequest {
                        tenant_id,
                        recipient_email: email,
                        recipient_name: name,
                        message,
                    })
                    .await,
            )?;
            output.show(&response, |response| {
                let mut table = tenant_record(response.tenant.as_ref());
                table.field("consent link", &response.consent_url);
                table.field("forwarded", time(&response.forwarded_at));
                table
            })
        }
    }
}

fn tenant_record(tenant: Option<&Tenant>) -> Table {
    let mut table = Table::record();
    let Some(tenant) = tenant else {
        return table;
    };
    table.field("tenant", &tenant.tenant_id);
    table.field("partner", &tenant.partner_id);
    table.field("name", &tenant.display_name);
    table.field("microsoft tenant", &tenant.microsoft_tenant_id);
    table.field("domain", &tenant.primary_domain);
    table.field("plan", label!(SubscriptionPlan, tenant.plan));
    table.field("state", label!(TenantState, tenant.state));
    table.field("state reason", &tenant.state_reason);
    table.field("created", time(&tenant.created_at));
    table.field("activated", time(&tenant.activated_at));
    table.field("last scan", time(&tenant.last_configuration_scan_at));
    table.field("last poll", time(&tenant.last_monitoring_poll_at));
    if let Some(health) = &tenant.access_health {
        table.field("last graph error", &health.last_error);
    }
    if !tenant.missing_permissions.is_empty() {
        table.field(
            "missing permissions",
            format!(
                "{} (an administrator must consent again)",
                tenant.missing_permissions.join(", ")
            ),
        );
    }
    table
}

pub async fn scans(context: &Context, command: ScanCommand) -> anyhow::Result<()> {
    let service = context.scanner()?;
    let mut client = ScanServiceClient::new(service.channel.clone());
    let output = context.output;
    match command {
        ScanCommand::Start { tenant_id, kind } => {
            let response = service.answer(
                client
                    .start_scan(StartScanRequest { tenant_id, kind })
                    .await,
            )?;
            output.show(&response, |response| scan_record(response.scan.as_ref()))
        }
        ScanCommand::List {
            tenant,
            states,
            page_size,
            page_token,
        } => {
            let response = service.answer(
                client
                    .list_scans(ListScansRequest {
                        partner_id: context.partner()?,
                        tenant_id: tenant,
                        states,
                        page_size,
                        page_token,
                        ..ListScansRequest::default()
                    })
                    .await,
            )?;
            output.list(&response, &response.next_page_token, |response| {
                let mut table = Table::new(&[
                    "scan", "tenant", "kind", "state", "queued", "failed", "findings",
                ]);
                for scan in &response.scans {
                    table.row(vec![
                        scan.scan_id.clone(),
                        scan.tenant_id.clone(),
                        label!(ScanKind, scan.kind),
                        label!(ScanState, scan.state),
                        time(&scan.queued_at),
                        scan.checks_failed.to_string(),
                        scan.findings_observed.to_string(),
                    ]);
                }
                table
            })
        }
        ScanCommand::Show { scan_id } => {
            let response = service.answer(client.get_scan(GetScanRequest { scan_id }).await)?;
            output.show(&response, |response| scan_record(response.scan.as_ref()))
        }
    }
}

fn scan_record(scan: Option<&ScanRun>) -> Table {
    let mut table = Table::record();
    let Some(scan) = scan else {
        return table;
    };
    table.field("scan", &scan.scan_id);
    table.field("tenant", &scan.tenant_id);
    table.field("kind", label!(ScanKind, scan.kind));
    table.field("state", label!(ScanState, scan.state));
    table.field("queued", time(&scan.queued_at));
    table.field("started", time(&scan.started_at));
    table.field("finished", time(&scan.finished_at));
    table.field(
        "checks",
        format!(
            "{} evaluated, {} passed, {} failed, {} not applicable, {} not evaluated (missing permissions), {} errored",
            scan.checks_evaluated,
            scan.checks_passed,
            scan.checks_failed,
            scan.checks_not_applicable,
            scan.checks_not_evaluated,
            scan.checks_errored
        ),
    );
    table.field(
        "findings",
        format!(
            "{} observed, {} cleared",
            scan.findings_observed, scan.findings_cleared
        ),
    );
    for error in &scan.errors {
        table.field(
            "error",
            format!("{} {}: {}", error.check_id, error.resource, error.message),
        );
    }
    table
}
