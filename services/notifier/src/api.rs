//! ChannelService: partners manage their webhook endpoints and e-mail recipients, and read the
//! catalogue of event types. Endpoint updates (rotation, test sends) answer UNIMPLEMENTED so far.

use std::sync::Arc;

use chrono::Utc;
use picket_platform::Principal;
use picket_platform::auth::Role;
use picket_platform::grpc::{
    internal, next_offset_token, page_size, parse_offset_token, parse_uuid,
};
use picket_platform::nats::subjects::validate_token;
use picket_proto::common::v1 as common;
use picket_proto::notifications::v1 as notifications;
use picket_proto::notifications::v1::channel_service_server::ChannelService;
use sqlx::PgPool;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::catalog::{self, EVENT_TYPES};
use crate::egress::EgressPolicy;
use crate::signing::WebhookSecret;
use crate::store::{self, NewEndpoint, RecipientFields, RecipientRow};

pub struct ChannelApi {
    pool: PgPool,
    policy: Arc<EgressPolicy>,
}

impl ChannelApi {
    pub fn new(pool: PgPool, policy: Arc<EgressPolicy>) -> ChannelApi {
        ChannelApi { pool, policy }
    }
}

fn check_event_types(event_types: &[String]) -> Result<(), Status> {
    match event_types
        .iter()
        .find(|event_type| !EVENT_TYPES.contains(&event_type.as_str()))
    {
        Some(unknown) => Err(Status::invalid_argument(format!(
            "event_types: unknown event type {unknown}"
        ))),
        None => Ok(()),
    }
}

fn check_email(email: &str) -> Result<(), Status> {
    email
        .parse::<lettre::Address>()
        .map(|_| ())
        .map_err(|error| Status::invalid_argument(format!("email: {error}")))
}

fn check_severity(severity: i32) -> Result<(), Status> {
    common::Severity::try_from(severity)
        .map(|_| ())
        .map_err(|_| {
            Status::invalid_argument(format!("minimum_severity: {severity} is not a severity"))
        })
}

fn check_tenant(tenant_id: &str) -> Result<(), Status> {
    if tenant_id.is_empty() {
        return Ok(());
    }
    validate_token(tenant_id)
        .map_err(|error| Status::invalid_argument(format!("tenant_id: {error}")))
}

const DEFAULT_PAGE_SIZE: i64 = 50;
const MAX_PAGE_SIZE: i64 = 500;

impl ChannelApi {
    /// The recipient, if the principal manages its partner; another partner's is as good as
    /// missing.
    async fn managed_recipient(
        &self,
        principal: &Principal,
        recipient_id: Uuid,
    ) -> Result<RecipientRow, Status> {
        let recipient = store::get_recipients(&self.pool, &[recipient_id])
            .await
            .map_err(internal)?
            .pop()
            .filter(|recipient| principal.can_access_partner(&recipient.partner_id))
            .ok_or_else(|| Status::not_found(format!("recipient {recipient_id} not found")))?;
        principal.require_partner_manager(&recipient.partner_id)?;
        Ok(recipient)
    }
}

#[tonic::async_trait]
impl ChannelService for ChannelApi {
    async fn create_webhook_endpoint(
        &self,
        request: Request<notifications::CreateWebhookEndpointRequest>,
    ) -> Result<Response<notifications::CreateWebhookEndpointResponse>, Status> {
        let principal = Principal::of(&request)?.clone();
        let message = request.into_inner();
        principal.require_partner_manager(&message.partner_id)?;
        check_tenant(&message.tenant_id)?;
        self.policy
            .check_url(&message.url)
            .map_err(|error| Status::invalid_argument(format!("url: {error}")))?;
        check_event_types(&message.event_types)?;
        let secret = if message.secret.is_empty() {
            WebhookSecret::generate()
        } else {
            WebhookSecret::parse(&message.secret)
                .map_err(|error| Status::invalid_argument(format!("secret: {error}")))?;
            message.secret.clone()
        };
        let endpoint = store::insert_endpoint(
            &self.pool,
            &NewEndpoint {
                partner_id: &message.partner_id,
                tenant_id: &message.tenant_id,
                url: &message.url,
                secret: &secret,
                event_types: &message.event_types,
                description: &message.description,
            },
            Utc::now(),
        )
        .await
        .map_err(internal)?;
        tracing::info!(endpoint_id = %endpoint.endpoint_id, partner_id = %endpoint.partner_id, "webhook endpoint created");
        Ok(Response::new(
            notifications::CreateWebhookEndpointResponse {
                endpoint: Some(endpoint.to_proto()),
                secret,
            },
        ))
    }

    async fn get_webhook_endpoint(
        &self,
        request: Request<notifications::GetWebhookEndpointRequest>,
    ) -> Result<Response<notifications::GetWebhookEndpointResponse>, Status> {
        let principal = Principal::of(&request)?.clone();
        let endpoint_id = parse_uuid(&request.get_ref().endpoint_id, "endpoint_id")?;
        let endpoint = store::get_endpoint(&self.pool, endpoint_id)
            .await
            .map_err(internal)?
            .filter(|endpoint| {
                principal.can_access_partner(&endpoint.partner_id)
                    && principal.role != Role::Customer
            })
            .ok_or_else(|| Status::not_found(format!("endpoint {endpoint_id} not found")))?;
        Ok(Response::new(notifications::GetWebhookEndpointResponse {
            endpoint: Some(endpoint.to_proto()),
        }))
    }

    async fn list_webhook_endpoints(
        &self,
        request: Request<notifications::ListWebhookEndpointsRequest>,
    ) -> Result<Response<notifications::ListWebhookEndpointsResponse>, Status> {
        let principal = Principal::of(&request)?.clone();
        let message = request.into_inner();
        principal.require_partner_manager(&message.partner_id)?;
        let tenant_id = (!message.tenant_id.is_empty()).then_some(message.tenant_id.as_str());
        let endpoints = store::list_endpoints(
            &self.pool,
            &message.partner_id,
            tenant_id,
            message.include_disabled,
        )
        .await
        .map_err(internal)?;
        Ok(Response::new(notifications::ListWebhookEndpointsResponse {
            endpoints: endpoints.iter().map(store::EndpointRow::to_proto).collect(),
            ..Default::default()
        }))
    }

    async fn create_email_recipient(
        &self,
        request: Request<notifications::CreateEmailRecipientRequest>,
    ) -> Result<Response<notifications::CreateEmailRecipientResponse>, Status> {
        let principal = Principal::of(&request)?.clone();
        let message = request.into_inner();
        principal.require_partner_manager(&message.partner_id)?;
        check_tenant(&message.tenant_id)?;
        check_email(&message.email)?;
        check_event_types(&message.event_types)?;
        check_severity(message.minimum_severity)?;
        let recipient = store::insert_recipient(
            &self.pool,
            &message.partner_id,
            &message.tenant_id,
            &RecipientFields {
                email: &message.email,
                display_name: &message.display_name,
                event_types: &message.event_types,
                enabled: true,
                minimum_severity: message.minimum_severity,
                authority_owner_id: &message.authority_owner_id,
            },
            Utc::now(),
        )
        .await
        .map_err(internal)?
        .ok_or_else(|| {
            Status::already_exists(format!(
                "email: {} is a recipient of this partner and tenant already",
                message.email
            ))
        })?;
        tracing::info!(recipient_id = %recipient.recipient_id, partner_id = %recipient.partner_id, "e-mail recipient created");
        Ok(Response::new(notifications::CreateEmailRecipientResponse {
            recipient: Some(recipient.to_proto()),
        }))
    }

    async fn get_email_recipient(
        &self,
        request: Request<notifications::GetEmailRecipientRequest>,
    ) -> Result<Response<notifications::GetEmailRecipientResponse>, Status> {
        let principal = Principal::of(&request)?.clone();
        let recipient_id = parse_uuid(&request.get_ref().recipient_id, "recipient_id")?;
        let recipient = self.managed_recipient(&principal, recipient_id).await?;
        Ok(Response::new(notifications::GetEmailRecipientResponse {
            recipient: Some(recipient.to_proto()),
        }))
    }

    async fn list_email_recipients(
        &self,
        request: Request<notifications::ListEmailRecipientsRequest>,
    ) -> Result<Response<notifications::ListEmailRecipientsResponse>, Status> {
        let principal = Principal::of(&request)?.clone();
        let message = request.into_inner();
        principal.require_partner_manager(&message.partner_id)?;
        check_tenant(&message.tenant_id)?;
        let limit = page_size(message.page_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)?;
        let offset = parse_offset_token(&message.page_token)?;
        let tenant_id = (!message.tenant_id.is_empty()).then_some(message.tenant_id.as_str());
        let recipients =
            store::list_recipients(&self.pool, &message.partner_id, tenant_id, offset, limit)
                .await
                .map_err(internal)?;
        Ok(Response::new(notifications::ListEmailRecipientsResponse {
            next_page_token: next_offset_token(offset, recipients.len(), limit),
            recipients: recipients.iter().map(RecipientRow::to_proto).collect(),
        }))
    }

    async fn update_email_recipient(
        &self,
        request: Request<notifications::UpdateEmailRecipientRequest>,
    ) -> Result<Response<notifications::UpdateEmailRecipientResponse>, Status> {
        let principal = Principal::of(&request)?.clone();
        let message = request.into_inner();
        let recipient_id = parse_uuid(&message.recipient_id, "recipient_id")?;
        let current = self.managed_recipient(&principal, recipient_id).await?;
        if let Some(email) = &message.email {
            check_email(email)?;
        }
        if let Some(filter) = &message.event_types {
            check_event_types(&filter.event_types)?;
        }
        if let Some(severity) = message.minimum_severity {
            check_severity(severity)?;
        }
        let event_types = message
            .event_types
            .map_or(current.event_types.clone(), |filter| filter.event_types);
        let recipient = store::update_recipient(
            &self.pool,
            recipient_id,
            &RecipientFields {
                email: message.email.as_deref().unwrap_or(&current.email),
                display_name: message
                    .display_name
                    .as_deref()
                    .unwrap_or(&current.display_name),
                event_types: &event_types,
                enabled: message.enabled.unwrap_or(current.enabled),
                minimum_severity: message.minimum_severity.unwrap_or(current.minimum_severity),
                authority_owner_id: message
                    .authority_owner_id
                    .as_deref()
                    .unwrap_or(&current.authority_owner_id),
            },
            Utc::now(),
        )
        .await
        .map_err(|error| match error {
            sqlx::Error::Database(database) if database.is_unique_violation() => {
                Status::already_exists("email: a recipient of this partner and tenant already")
            }
            other => internal(other),
        })?
        .ok_or_else(|| Status::not_found(format!("recipient {recipient_id} not found")))?;
        Ok(Response::new(notifications::UpdateEmailRecipientResponse {
            recipient: Some(recipient.to_proto()),
        }))
    }

    async fn delete_email_recipient(
        &self,
        request: Request<notifications::DeleteEmailRecipientRequest>,
    ) -> Result<Response<notifications::DeleteEmailRecipientResponse>, Status> {
        let principal = Principal::of(&request)?.clone();
        let recipient_id = parse_uuid(&request.get_ref().recipient_id, "recipient_id")?;
        self.managed_recipient(&principal, recipient_id).await?;
        let recipient = store::delete_recipient(&self.pool, recipient_id)
            .await
            .map_err(internal)?
            .ok_or_else(|| Status::not_found(format!("recipient {recipient_id} not found")))?;
        tracing::info!(%recipient_id, "e-mail recipient deleted");
        Ok(Response::new(notifications::DeleteEmailRecipientResponse {
            recipient: Some(recipient.to_proto()),
        }))
    }

    async fn list_event_types(
        &self,
        _request: Request<notifications::ListEventTypesRequest>,
    ) -> Result<Response<notifications::ListEventTypesResponse>, Status> {
        Ok(Response::new(notifications::ListEventTypesResponse {
            event_types: catalog::event_types(),
        }))
    }
}
