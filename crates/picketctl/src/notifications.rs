//! Channels (webhook endpoints, e-mail recipients) and deliveries, served by the notifier.

use clap::Subcommand;
use picket_proto::common::v1::Severity;
use picket_proto::notifications::v1::channel_service_client::ChannelServiceClient;
use picket_proto::notifications::v1::delivery_service_client::DeliveryServiceClient;
use picket_proto::notifications::v1::{
    CreateEmailRecipientRequest, CreateWebhookEndpointRequest, DeleteEmailRecipientRequest,
    DeleteWebhookEndpointRequest, Delivery, DeliveryChannel, DeliveryStatus, GetDeliveryRequest,
    ListDeliveriesRequest, ListEmailRecipientsRequest, ListWebhookEndpointsRequest,
    RedeliverDeliveryRequest, SendTestWebhookRequest,
};

use crate::Context;
use crate::output::{Table, choice, label, time};

#[derive(Debug, Subcommand)]
pub enum ChannelCommand {
    /// Lists the partner's webhook endpoints and e-mail recipients.
    List {
        /// Include endpoints that are disabled.
        #[arg(long)]
        all: bool,
    },
    /// Adds a webhook endpoint; prints its signing secret once.
    AddWebhook {
        /// HTTPS URL that receives the events.
        #[arg(long)]
        url: String,
        /// Only this tenant's events (default: every tenant and partner-wide events).
        #[arg(long, default_value = "")]
        tenant: String,
        /// Event types delivered, such as incident.opened (default: all; see the AsyncAPI document).
        #[arg(long = "event")]
        events: Vec<String>,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Adds an e-mail recipient.
    AddEmail {
        #[arg(long)]
        email: String,
        #[arg(long, default_value = "")]
        name: String,
        #[arg(long, default_value = "")]
        tenant: String,
        #[arg(long = "event")]
        events: Vec<String>,
        /// Only events at least this severe (low, medium, high, critical).
        #[arg(long, value_parser = choice!(Severity))]
        minimum_severity: Option<i32>,
    },
    /// Sends a test event to a webhook endpoint and shows the attempt.
    TestWebhook { endpoint_id: String },
    /// Deletes a webhook endpoint; its pending deliveries are abandoned.
    RemoveWebhook { endpoint_id: String },
    /// Deletes an e-mail recipient.
    RemoveEmail { recipient_id: String },
}

#[derive(Debug, Subcommand)]
pub enum DeliveryCommand {
    /// Lists deliveries, newest first.
    List {
        #[arg(long, default_value = "")]
        tenant: String,
        /// Only deliveries in these states (pending, succeeded, failed, ...).
        #[arg(long = "status", value_parser = choice!(DeliveryStatus))]
        statuses: Vec<i32>,
        #[arg(long, default_value = "")]
        endpoint: String,
        #[arg(long, default_value = "")]
        event_type: String,
        #[arg(long, default_value_t = 50)]
        page_size: i32,
        #[arg(long, default_value = "")]
        page_token: String,
    },
    /// Shows one delivery and its attempts.
    Show { delivery_id: String },
    /// Delivers again (with --force even if it already succeeded).
    Redeliver {
        delivery_id: String,
        #[arg(long)]
        force: bool,
    },
}

pub async fn channels(context: &Context, command: ChannelCommand) -> anyhow::Result<()> {
    let service = context.notifier()?;
    let mut client = ChannelServiceClient::new(service.channel.clone());
    let output = context.output;
    match command {
        ChannelCommand::List { all } => {
            let partner_id = context.partner()?;
            let webhooks = service.answer(
                client
                    .list_webhook_endpoints(ListWebhookEndpointsRequest {
                        partner_id: partner_id.clone(),
                        include_disabled: all,
                        page_size: 100,
                        ..ListWebhookEndpointsRequest::default()
                    })
                    .await,
            )?;
            let emails = service.answer(
                client
                    .list_email_recipients(ListEmailRecipientsRequest {
                        partner_id,
                        page_size: 100,
                        ..ListEmailRecipientsRequest::default()
                    })
                    .await,
            )?;
            let both = serde_json::json!({
                "webhookEndpoints": webhooks.endpoints,
                "emailRecipients": emails.recipients,
            });
            output.show(&both, |_| {
                let mut table = Table::new(&[
                    "channel",
                    "id",
                    "destination",
                    "tenant",
                    "events",
                    "enabled",
                ]);
                let events = |types: &[String]| {
                    if types.is_empty() {
                        "all".to_owned()
                    } else {
                        types.join(",")
                    }
                };
                for endpoint in &webhooks.endpoints {
                    table.row(vec![
                        "webhook".into(),
                        endpoint.endpoint_id.clone(),
                        endpoint.url.clone(),
                        endpoint.tenant_id.clone(),
                        events(&endpoint.event_types),
                        endpoint.enabled.to_string(),
                    ]);
                }
                for recipient in &emails.recipients {
                    table.row(vec![
                        "email".into(),
                        recipient.recipient_id.clone(),
                        recipient.email.clone(),
                        recipient.tenant_id.clone(),
                        events(&recipient.event_types),
                        recipient.enabled.to_string(),
                    ]);
                }
                table
            })
        }
        ChannelCommand::AddWebhook {
            url,
            tenant,
            events,
            description,
        } => {
            let response = service.answer(
                client
                    .create_webhook_endpoint(CreateWebhookEndpointRequest {
                        partner_id: context.partner()?,
                        tenant_id: tenant,
                        url,
                        secret: String::new(),
                        event_types: events,
                        description,
                    })
                    .await,
            )?;
            output.show(&response, |response| {
                let mut table = Table::record();
                if let Some(endpoint) = &response.endpoint {
                    table.field("endpoint", &endpoint.endpoint_id);
                    table.field("url", &endpoint.url);
                }
                table.field("signing secret", &response.secret);
                table
            })
        }
        ChannelCommand::AddEmail {
            email,
            name,
            tenant,
            events,
            minimum_severity,
        } => {
            let response = service.answer(
                client
                    .create_email_recipient(CreateEmailRecipientRequest {
                        partner_id: context.partner()?,
                        tenant_id: tenant,
                        email,
                        display_name: name,
                        event_types: events,
                        minimum_severity: minimum_severity.unwrap_or_default(),
                        authority_owner_id: String::new(),
                    })
                    .await,
            )?;
            output.show(&response, |response| {
                let mut table = Table::record();
                if let Some(recipient) = &response.recipient {
                    table.field("recipient", &recipient.recipient_id);
                    table.field("email", &recipient.email);
                }
                table
            })
        }
        ChannelCommand::TestWebhook { endpoint_id } => {
            let response = service.answer(
                client
                    .send_test_webhook(SendTestWebhookRequest { endpoint_id })
                    .await,
            )?;
            output.show(&response, |response| {
                let mut table = Table::record();
                if let Some(attempt) = &response.attempt {
                    table.field("response status", attempt.response_status.to_string());
                    table.field("latency", format!("{} ms", attempt.latency_ms));
                    table.field("error", &attempt.error);
                }
                table
            })
        }
        ChannelCommand::RemoveWebhook { endpoint_id } => {
            let response = service.answer(
                client
                    .delete_webhook_endpoint(DeleteWebhookEndpointRequest { endpoint_id })
                    .await,
            )?;
            output.show(&response, |response| {
                let mut table = Table::record();
                if let Some(endpoint) = &response.endpoint {
                    table.field("deleted endpoint", &endpoint.endpoint_id);
                }
                table.field(
                    "deliveries abandoned",
                    response.deliveries_abandoned.to_string(),
                );
                table
            })
        }
        ChannelCommand::RemoveEmail { recipient_id } => {
            let response = service.answer(
                client
                    .delete_email_recipient(DeleteEmailRecipientRequest { recipient_id })
                    .await,
            )?;
            output.show(&response, |response| {
                let mut table = Table::record();
                if let Some(recipient) = &response.recipient {
                    table.field("deleted recipient", &recipient.recipient_id);
                }
                table
            })
        }
    }
}

pub async fn deliveries(context: &Context, command: DeliveryCommand) -> anyhow::Result<()> {
    let service = context.notifier()?;
    let mut client = DeliveryServiceClient::new(service.channel.clone());
    let output = context.output;
    match command {
        DeliveryCommand::List {
            tenant,
            statuses,
            endpoint,
            event_type,
            page_size,
            page_token,
        } => {
            let response = service.answer(
                client
                    .list_deliveries(ListDeliveriesRequest {
                        partner_id: context.partner()?,
                        tenant_id: tenant,
                        statuses,
                        endpoint_id: endpoint,
                        event_type,
                        page_size,
                        page_token,
                        ..ListDeliveriesRequest::default()
                    })
                    .await,
            )?;
            output.list(&response, &response.next_page_token, |response| {
                let mut table = Table::new(&[
                    "delivery",
                    "channel",
                    "event",
                    "status",
                    "attempts",
                    "created",
                    "destination",
                ]);
                for delivery in &response.deliveries {
                    table.row(vec![
                        delivery.delivery_id.clone(),
                        label!(DeliveryChannel, delivery.channel),
                        delivery.event_type.clone(),
                        label!(DeliveryStatus, delivery.status),
                        delivery.attempt_count.to_string(),
                        time(&delivery.created_at),
                        delivery.destination.clone(),
                    ]);
                }
                table
            })
        }
        DeliveryCommand::Show { delivery_id } => {
            let response = service.answer(
                client
                    .get_delivery(GetDeliveryRequest { delivery_id })
                    .await,
            )?;
            output.show(&response, |response| {
                let mut table = delivery_record(response.delivery.as_ref());
                for attempt in &response.attempts {
                    table.field(
                        "attempt",
                        format!(
                            "#{} {} status {} in {} ms {}",
                            attempt.attempt_number,
                            time(&attempt.started_at),
                            attempt.response_status,
                            attempt.latency_ms,
                            attempt.error
                        ),
                    );
                }
                table
            })
        }
        DeliveryCommand::Redeliver { delivery_id, force } => {
            let response = service.answer(
                client
                    .redeliver_delivery(RedeliverDeliveryRequest { delivery_id, force })
                    .await,
            )?;
            output.show(&response, |response| {
                delivery_record(response.delivery.as_ref())
            })
        }
    }
}

fn delivery_record(delivery: Option<&Delivery>) -> Table {
    let mut table = Table::record();
    let Some(delivery) = delivery else {
        return table;
    };
    table.field("delivery", &delivery.delivery_id);
    table.field("channel", label!(DeliveryChannel, delivery.channel));
    table.field("destination", &delivery.destination);
    table.field(
        "event",
        format!("{} {}", delivery.event_type, delivery.event_id),
    );
    table.field("status", label!(DeliveryStatus, delivery.status));
    table.field("attempts", delivery.attempt_count.to_string());
    table.field("next attempt", time(&delivery.next_attempt_at));
    table.field("last error", &delivery.last_error);
    table
}
