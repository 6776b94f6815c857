//! Incidents, auto-approve rules and the authority map, served by the prioritizer.

use std::collections::HashMap;
use std::path::PathBuf;

use clap::Subcommand;
use picket_proto::common::v1::Severity;
use picket_proto::incidents::v1::authority_service_client::AuthorityServiceClient;
use picket_proto::incidents::v1::incident_service_client::IncidentServiceClient;
use picket_proto::incidents::v1::policy_service_client::PolicyServiceClient;
use picket_proto::incidents::v1::{
    ApproveIncidentRequest, AuthorityGap, AuthorityMap, AuthorityStage, AutoApproveScope,
    CreateAutoApproveRuleRequest, DeleteAutoApproveRuleRequest, ExportAuthorityWorksheetRequest,
    GapKind, GetAuthorityMapRequest, GetIncidentRequest, GetTimelineRequest, IgnoreIncidentRequest,
    Incident, IncidentState, ListAutoApproveRulesRequest, ListIncidentsRequest,
    MuteIncidentRequest, TimelineEntryKind, ValidateAuthorityMapRequest, WorksheetFormat,
};

use crate::Context;
use crate::output::{Table, choice, label, time, write_stdout};

#[derive(Debug, Subcommand)]
pub enum IncidentCommand {
    /// Lists incidents, newest first.
    List {
        /// Only this tenant's incidents.
        #[arg(long, default_value = "")]
        tenant: String,
        /// Only incidents in these states (open, awaiting-fix, muted, ignored, resolved, offboarded).
        #[arg(long = "state", value_parser = choice!(IncidentState))]
        states: Vec<i32>,
        /// Only incidents of these severities (low, medium, high, critical).
        #[arg(long = "severity", value_parser = choice!(Severity))]
        severities: Vec<i32>,
        #[arg(long, default_value_t = 50)]
        page_size: i32,
        #[arg(long, default_value = "")]
        page_token: String,
    },
    /// Shows one incident and its timeline.
    Show { incident_id: String },
    /// Approves the recommended fix: Picket applies it.
    Approve(Decide),
    /// Mutes the incident for the partner's mute period (four weeks by default).
    Mute(Decide),
    /// Ignores the incident: the same finding does not open one again.
    Ignore(Decide),
}

#[derive(Debug, clap::Args)]
pub struct Decide {
    incident_id: String,
    /// Why, recorded on the incident's timeline.
    #[arg(long, default_value = "")]
    comment: String,
    /// Refuse if the incident changed since this version (see `incidents show`).
    #[arg(long, default_value_t = 0)]
    expected_version: u64,
}

#[derive(Debug, Subcommand)]
pub enum RuleCommand {
    /// Lists the partner's auto-approve rules.
    List {
        #[arg(long, default_value = "")]
        tenant: String,
        #[arg(long, default_value = "")]
        check: String,
        #[arg(long, default_value_t = 100)]
        page_size: i32,
        #[arg(long, default_value = "")]
        page_token: String,
    },
    /// Approves one check's fixes automatically, for some tenants or all.
    Create {
        /// The check whose fixes are approved (see the scanner's catalogue).
        #[arg(long)]
        check: String,
        /// Tenants it covers; none means every tenant of the partner.
        #[arg(long = "tenant")]
        tenants: Vec<String>,
        #[arg(long, default_value = "")]
        description: String,
        /// Also approve the check's incidents open now.
        #[arg(long)]
        apply_to_open: bool,
    },
    /// Deletes a rule; incidents it approved keep their decision.
    Delete { rule_id: String },
}

#[derive(Debug, Subcommand)]
pub enum AuthorityCommand {
    /// Shows the partner's authority map (or a tenant's deviation from it).
    Show {
        #[arg(long, default_value = "")]
        tenant: String,
    },
    /// Checks the map in effect, or a draft in canonical JSON, for gaps; fails when there are any.
    Validate {
        #[arg(long, default_value = "")]
        tenant: String,
        /// A draft `AuthorityMap` in canonical protobuf JSON (as `authority show -o json` prints).
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Exports the map as a worksheet for the MSP's incident-response plan.
    Export {
        #[arg(long, default_value = "")]
        tenant: String,
        /// markdown, csv or html.
        #[arg(long, value_parser = choice!(WorksheetFormat), default_value = "markdown")]
        format: i32,
        /// Write here instead of standard output.
        #[arg(long)]
        file: Option<PathBuf>,
    },
}

pub async fn incidents(context: &Context, command: IncidentCommand) -> anyhow::Result<()> {
    let service = context.prioritizer()?;
    let mut client = IncidentServiceClient::new(service.channel.clone());
    let output = context.output;
    match command {
        IncidentCommand::List {
            tenant,
            states,
            severities,
            page_size,
            page_token,
        } => {
            let response = service.answer(
                client
                    .list_incidents(ListIncidentsRequest {
                        partner_id: context.partner()?,
                        tenant_id: tenant,
                        states,
                        severities,
                        page_size,
                        page_token,
                        ..ListIncidentsRequest::default()
                    })
                    .await,
            )?;
            output.list(&response, &response.next_page_token, |response| {
                let mut table =
                    Table::new(&["incident", "tenant", "severity", "state", "opened", "title"]);
                for incident in &response.incidents {
                    table.row(vec![
                        incident.incident_id.clone(),
                        incident.tenant_id.clone(),
                        label!(Severity, incident.severity),
                        label!(IncidentState, incident.state),
                        time(&incident.opened_at),
                        incident.title.clone(),
                    ]);
                }
                table
            })
        }
        IncidentCommand::Show { incident_id } => {
            let incident = service.answer(
                client
                    .get_incident(GetIncidentRequest {
                        incident_id: incident_id.clone(),
                    })
                    .await,
            )?;
            let timeline = service.answer(
                client
                    .get_timeline(GetTimelineRequest {
                        incident_id,
                        page_size: 100,
                        page_token: String::new(),
                    })
                    .await,
            )?;
            let both =
                serde_json::json!({ "incident": incident.incident, "timeline": timeline.entries });
            output.show(&both, |_| {
                let mut table = incident_record(incident.incident.as_ref());
                for entry in &timeline.entries {
                    table.field(
                        "timeline",
                        format!(
                            "{}  {}  {}",
                            time(&entry.occurred_at),
                            label!(TimelineEntryKind, entry.kind),
                            entry.summary
                        ),
                    );
                }
                table
            })
        }
        IncidentCommand::Approve(decide) => {
            let response = service.answer(
                client
                    .approve_incident(ApproveIncidentRequest {
                        incident_id: decide.incident_id,
                        comment: decide.comment,
                        expected_version: decide.expected_version,
                    })
                    .await,
            )?;
            output.show(&response, |response| {
                incident_record(response.incident.as_ref())
            })
        }
        IncidentCommand::Mute(decide) => {
            let response = service.answer(
                client
                    .mute_incident(MuteIncidentRequest {
                        incident_id: decide.incident_id,
                        comment: decide.comment,
                        expected_version: decide.expected_version,
                    })
                    .await,
            )?;
            output.show(&response, |response| {
                incident_record(response.incident.as_ref())
            })
        }
        IncidentCommand::Ignore(decide) => {
            let response = service.answer(
                client
                    .ignore_incident(IgnoreIncidentRequest {
                        incident_id: decide.incident_id,
                        comment: decide.comment,
                        expected_version: decide.expected_version,
                    })
                    .await,
            )?;
            output.show(&response, |response| {
                incident_record(response.incident.as_ref())
            })
        }
    }
}

fn incident_record(incident: Option<&Incident>) -> Table {
    let mut table = Table::record();
    let Some(incident) = incident else {
        return table;
    };
    table.field("incident", &incident.incident_id);
    table.field("tenant", &incident.tenant_id);
    table.field("title", &incident.title);
    table.field("severity", label!(Severity, incident.severity));
    table.field("state", label!(IncidentState, incident.state));
    table.field("check", &incident.check_id);
    table.field("target", &incident.target);
    table.field("recommended fix", &incident.recommended_fix);
    table.field("opened", time(&incident.opened_at));
    table.field("decision due", time(&incident.decision_due_at));
    table.field("muted until", time(&incident.muted_until));
    table.field("resolved", time(&incident.resolved_at));
    table.field("last fix error", &incident.last_fix_error);
    table.field("version", incident.version.to_string());
    table
}

pub async fn rules(context: &Context, command: RuleCommand) -> anyhow::Result<()> {
    let service = context.prioritizer()?;
    let mut client = PolicyServiceClient::new(service.channel.clone());
    let output = context.output;
    match command {
        RuleCommand::List {
            tenant,
            check,
            page_size,
            page_token,
        } => {
            let response = service.answer(
                client
                    .list_auto_approve_rules(ListAutoApproveRulesRequest {
                        partner_id: context.partner()?,
                        tenant_id: tenant,
                        check_id: check,
                        page_size,
                        page_token,
                    })
                    .await,
            )?;
            output.list(&response, &response.next_page_token, |response| {
                let mut table =
                    Table::new(&["rule", "check", "tenants", "approvals", "description"]);
                for rule in &response.rules {
                    let tenants = if rule.scope == i32::from(AutoApproveScope::AllTenants) {
                        "all".to_owned()
                    } else {
                        rule.tenant_ids.join(",")
                    };
                    table.row(vec![
                        rule.rule_id.clone(),
                        rule.check_id.clone(),
                        tenants,
                        rule.approvals.to_string(),
                        rule.description.clone(),
                    ]);
                }
                table
            })
        }
        RuleCommand::Create {
            check,
            tenants,
            description,
            apply_to_open,
        } => {
            let scope = if tenants.is_empty() {
                AutoApproveScope::AllTenants
            } else {
                AutoApproveScope::Tenants
            };
            let response = service.answer(
                client
                    .create_auto_approve_rule(CreateAutoApproveRuleRequest {
                        partner_id: context.partner()?,
                        check_id: check,
                        scope: scope.into(),
                        tenant_ids: tenants,
                        description,
                        apply_to_open_incidents: apply_to_open,
                    })
                    .await,
            )?;
            output.show(&response, |response| {
                let mut table = Table::record();
                if let Some(rule) = &response.rule {
                    table.field("rule", &rule.rule_id);
                    table.field("check", &rule.check_id);
                }
                table.field("approved now", response.approved_incident_ids.join(", "));
                table
            })
        }
        RuleCommand::Delete { rule_id } => {
            let response = service.answer(
                client
                    .delete_auto_approve_rule(DeleteAutoApproveRuleRequest { rule_id })
                    .await,
            )?;
            output.show(&response, |response| {
                let mut table = Table::record();
                if let Some(rule) = &response.rule {
                    table.field("deleted rule", &rule.rule_id);
                }
                table
            })
        }
    }
}

pub async fn authority(context: &Context, command: AuthorityCommand) -> anyhow::Result<()> {
    let service = context.prioritizer()?;
    let mut client = AuthorityServiceClient::new(service.channel.clone());
    let output = context.output;
    match command {
        AuthorityCommand::Show { tenant } => {
            let response = service.answer(
                client
                    .get_authority_map(GetAuthorityMapRequest {
                        partner_id: context.partner()?,
                        tenant_id: tenant,
                    })
                    .await,
            )?;
            output.show(&response, |response| {
                response.map.as_ref().map(map_table).unwrap_or_default()
            })
        }
        AuthorityCommand::Validate { tenant, file } => {
            let draft = file
                .map(|path| -> anyhow::Result<AuthorityMap> {
                    let text = std::fs::read_to_string(&path)
                        .map_err(|error| anyhow::anyhow!("{}: {error}", path.display()))?;
                    serde_json::from_str(&text).map_err(|error| {
                        anyhow::anyhow!(
                            "{} is not an AuthorityMap in JSON: {error}",
                            path.display()
                        )
                    })
                })
                .transpose()?;
            let response = service.answer(
                client
                    .validate_authority_map(ValidateAuthorityMapRequest {
                        partner_id: context.partner()?,
                        tenant_id: tenant,
                        draft,
                    })
                    .await,
            )?;
            output.show(&response, |response| gaps_table(&response.gaps))?;
            match response.gaps.len() {
                0 => Ok(()),
                gaps => anyhow::bail!("the authority map has {gaps} gap(s)"),
            }
        }
        AuthorityCommand::Export {
            tenant,
            format,
            file,
        } => {
            let response = service.answer(
                client
                    .export_authority_worksheet(ExportAuthorityWorksheetRequest {
                        partner_id: context.partner()?,
                        tenant_id: tenant,
                        format,
                    })
                    .await,
            )?;
            match file {
                Some(path) => {
                    std::fs::write(&path, &response.content)
                        .map_err(|error| anyhow::anyhow!("{}: {error}", path.display()))?;
                    eprintln!("wrote {} ({})", path.display(), response.content_type);
                    Ok(())
                }
                None => write_stdout(&String::from_utf8_lossy(&response.content)),
            }
        }
    }
}

fn map_table(map: &AuthorityMap) -> Table {
    let names: HashMap<&str, String> = map
        .owners
        .iter()
        .map(|owner| {
            let name = if owner.display_name.is_empty() {
                owner.role_name.clone()
            } else {
                format!("{} ({})", owner.display_name, owner.role_name)
            };
            (owner.owner_id.as_str(), name)
        })
        .collect();
    let named = |ids: &[String]| {
        ids.iter()
            .map(|id| {
                names
                    .get(id.as_str())
                    .cloned()
                    .unwrap_or_else(|| id.clone())
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut table = Table::new(&[
        "stage",
        "responsible",
        "accountable",
        "consulted",
        "informed",
    ]);
    for stage in &map.stages {
        table.row(vec![
            label!(AuthorityStage, stage.stage),
            named(&stage.responsible_owner_ids),
            named(&stage.accountable_owner_ids),
            named(&stage.consulted_owner_ids),
            named(&stage.informed_owner_ids),
        ]);
    }
    table
}

fn gaps_table(gaps: &[AuthorityGap]) -> Table {
    let mut table = Table::new(&["gap", "stage", "owner", "message"]);
    for gap in gaps {
        table.row(vec![
            label!(GapKind, gap.kind),
            label!(AuthorityStage, gap.stage),
            gap.owner_id.clone(),
            gap.message.clone(),
        ]);
    }
    table
}
