//! ChannelService: partners manage their webhook endpoints (with secret rotation and test sends)
//! and e-mail recipients, and read the catalogue of event types.

use std::sync::Arc;

use chrono::Utc;
use picket_platform::auth::{Role, check_tenant_id};
use picket_platform::grpc::{
    internal, next_offset_token, page_size, parse_offset_token, parse_uuid,
};
use picket_platform::sealing::Keyring;
use picket_platform::time::{from_duration, to_timestamp};
use picket_platform::{EventFactory, Principal};
use picket_proto::common::v1 as common;
use picket_proto::notifications::v1 as notifications;
use picket_proto::notifications::v1::channel_service_server::ChannelService;
use sqlx::PgPool;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::catalog::{self, EVENT_TYPES};
use crate::egress::EgressPolicy;
use crate::secrets;
use crate::signing::WebhookSecret;
use crate::store::{self, EndpointRow, NewEndpoint, RecipientFields, RecipientRow};
use crate::webhook::{AttemptOutcome, Disabling, WebhookSender, disable_and_tell};

pub struct ChannelApi {
    pool: PgPool,
    policy: Arc<EgressPolicy>,
    events: EventFactory,
    webhooks: WebhookSender,
    /// Seals the secrets it stores.
    keyring: Arc<Keyring>,
}

impl ChannelApi {
    pub fn new(
        pool: PgPool,
        policy: Arc<EgressPolicy>,
        events: EventFactory,
        webhooks: WebhookSender,
        keyring: Arc<Keyring>,
    ) -> ChannelApi {
        ChannelApi {
            pool,
            policy,
            events,
            webhooks,
            keyring,
        }
    }

    /// `secret` sealed for storage with the endpoint `endpoint_id`.
    fn sealed(&self, endpoint_id: Uuid, secret: &str) -> Result<secrets::SealedSecret, Status> {
        secrets::seal(&self.keyring, endpoint_id, secret).map_err(|error| {
            tracing::error!(%error, %endpoint_id, "cannot seal a webhook secret");
            Status::internal("internal error")
        })
    }

    /// The endpoint, if the principal manages its partner; another partner's is as good as
    /// missing.
    async fn managed_endpoint(
        &self,
        principal: &Principal,
        endpoint_id: Uuid,
    ) -> Result<EndpointRow, Status> {
        let endpoint = store::get_endpoint(&self.pool, endpoint_id)
            .await
            .map_err(internal)?
            .filter(|endpoint| principal.can_access_partner(&endpoint.partner_id))
            .ok_or_else(|| Status::not_found(format!("endpoint {endpoint_id} not found")))?;
        principal.require_partner_manager(&endpoint.partner_id)?;
        Ok(endpoint)
    }
}

/// A secret from a request (checked), or a new one when it is empty.
fn secret_or_generated(secret: &str) -> Result<String, Status> {
    if secret.is_empty() {
        return Ok(WebhookSecret::generate());
    }
    WebhookSecret::parse(secret)
        .map_err(|error| Status::invalid_argument(format!("secret: {error}")))?;
    Ok(secret.to_owned())
}

/// How long a rotated secret keeps signing when the request does not say.
const DEFAULT_ROTATION_OVERLAP: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

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
        check_tenant_id(&message.tenant_id)?;
        self.policy
            .check_url(&message.url)
            .map_err(|error| Status::invalid_argument(format!("url: {error}")))?;
        check_event_types(&message.event_types)?;
        let secret = secret_or_generated(&message.secret)?;
        let endpoint_id = Uuid::now_v7();
        let sealed = self.sealed(endpoint_id, &secret)?;
        let endpoint = store::insert_endpoint(
            &self.pool,
            &NewEndpoint {
                endpoint_id,
                partner_id: &message.partner_id,
                tenant_id: &message.tenant_id,
                url: &message.url,
                secret: &sealed,
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
        check_tenant_id(&message.tenant_id)?;
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
        check_tenant_id(&message.tenant_id)?;
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

    async fn update_webhook_endpoint(
        &self,
        request: Request<notifications::UpdateWebhookEndpointRequest>,
    ) -> Result<Response<notifications::UpdateWebhookEndpointResponse>, Status> {
        let principal = Principal::of(&request)?.clone();
        let message = request.into_inner();
        let endpoint_id = parse_uuid(&message.endpoint_id, "endpoint_id")?;
        let current = self.managed_endpoint(&principal, endpoint_id).await?;
        if let Some(url) = &message.url {
            self.policy
                .check_url(url)
                .map_err(|error| Status::invalid_argument(format!("url: {error}")))?;
        }
        if let Some(filter) = &message.event_types {
            check_event_types(&filter.event_types)?;
        }
        let now = Utc::now();
        let event_types = message
            .event_types
            .map_or(current.event_types.clone(), |filter| filter.event_types);
        let mut transaction = self.pool.begin().await.map_err(internal)?;
        let mut endpoint = store::update_endpoint(
            &mut transaction,
            endpoint_id,
            message.url.as_deref().unwrap_or(&current.url),
            &event_types,
            message
                .description
                .as_deref()
                .unwrap_or(&current.description),
            now,
        )
        .await
        .map_err(internal)?
        .ok_or_else(|| Status::not_found(format!("endpoint {endpoint_id} not found")))?;
        match message.enabled {
            Some(true) if !endpoint.enabled => {
                endpoint = store::enable_endpoint(&mut transaction, endpoint_id, now)
                    .await
                    .map_err(internal)?
                    .unwrap_or(endpoint);
            }
            Some(false) if endpoint.enabled => {
                let reason = format!("disabled by {}", principal.subject);
                let disabling = Disabling {
                    cause: notifications::EndpointDisableCause::Manual,
                    reason: &reason,
                    failing_since: endpoint.failing_since,
                    last_response_status: 0,
                };
                endpoint =
                    disable_and_tell(&mut transaction, &self.events, endpoint_id, &disabling)
                        .await
                        .map_err(internal)?
                        .unwrap_or(endpoint);
            }
            _ => {}
        }
        transaction.commit().await.map_err(internal)?;
        Ok(Response::new(
            notifications::UpdateWebhookEndpointResponse {
                endpoint: Some(endpoint.to_proto()),
            },
        ))
    }

    async fn delete_webhook_endpoint(
        &self,
        request: Request<notifications::DeleteWebhookEndpointRequest>,
    ) -> Result<Response<notifications::DeleteWebhookEndpointResponse>, Status> {
        let principal = Principal::of(&request)?.clone();
        let endpoint_id = parse_uuid(&request.get_ref().endpoint_id, "endpoint_id")?;
        self.managed_endpoint(&principal, endpoint_id).await?;
        let (endpoint, abandoned) = store::delete_endpoint(&self.pool, endpoint_id)
            .await
            .map_err(internal)?
            .ok_or_else(|| Status::not_found(format!("endpoint {endpoint_id} not found")))?;
        tracing::info!(%endpoint_id, abandoned, "webhook endpoint deleted");
        Ok(Response::new(
            notifications::DeleteWebhookEndpointResponse {
                endpoint: Some(endpoint.to_proto()),
                deliveries_abandoned: u32::try_from(abandoned).unwrap_or(u32::MAX),
            },
        ))
    }

    async fn rotate_webhook_secret(
        &self,
        request: Request<notifications::RotateWebhookSecretRequest>,
    ) -> Result<Response<notifications::RotateWebhookSecretResponse>, Status> {
        let principal = Principal::of(&request)?.clone();
        let message = request.into_inner();
        let endpoint_id = parse_uuid(&message.endpoint_id, "endpoint_id")?;
        self.managed_endpoint(&principal, endpoint_id).await?;
        let secret = secret_or_generated(&message.secret)?;
        let overlap = match &message.overlap {
            None => DEFAULT_ROTATION_OVERLAP,
            Some(overlap) => from_duration(overlap).ok_or_else(|| {
                Status::invalid_argument("overlap: must be a non-negative duration")
            })?,
        };
        let now = Utc::now();
        let previous_expires_at = (!overlap.is_zero())
            .then(|| chrono::Duration::from_std(overlap).ok())
            .flatten()
            .map(|overlap| now + overlap);
        let sealed = self.sealed(endpoint_id, &secret)?;
        let endpoint =
            store::rotate_secret(&self.pool, endpoint_id, &sealed, previous_expires_at, now)
                .await
                .map_err(internal)?
                .ok_or_else(|| Status::not_found(format!("endpoint {endpoint_id} not found")))?;
        tracing::info!(%endpoint_id, "webhook secret rotated");
        Ok(Response::new(notifications::RotateWebhookSecretResponse {
            endpoint: Some(endpoint.to_proto()),
            secret,
            previous_secret_expires_at: previous_expires_at.map(to_timestamp),
        }))
    }

    async fn send_test_webhook(
        &self,
        request: Request<notifications::SendTestWebhookRequest>,
    ) -> Result<Response<notifications::SendTestWebhookResponse>, Status> {
        let principal = Principal::of(&request)?.clone();
        let endpoint_id = parse_uuid(&request.get_ref().endpoint_id, "endpoint_id")?;
        let endpoint = self.managed_endpoint(&principal, endpoint_id).await?;
        let now = Utc::now();
        let webhook_id = Uuid::now_v7().to_string();
        let body = serde_json::json!({
            "type": "webhook.test",
            "timestamp": now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "data": {
                "partnerId": endpoint.partner_id,
                "endpointId": endpoint.endpoint_id.to_string(),
                "message": "A test message from Picket: this endpoint receives signed webhooks.",
            },
        })
        .to_string();
        let clock = std::time::Instant::now();
        let attempted = self.webhooks.send(&endpoint, &webhook_id, &body, now).await;
        let error = match attempted.outcome {
            AttemptOutcome::Delivered => String::new(),
            AttemptOutcome::Failed { error, .. } | AttemptOutcome::Fatal { error, .. } => error,
        };
        Ok(Response::new(notifications::SendTestWebhookResponse {
            attempt: Some(notifications::DeliveryAttempt {
                attempt_id: webhook_id.clone(),
                delivery_id: webhook_id,
                attempt_number: 1,
                started_at: Some(to_timestamp(now)),
                latency_ms: u32::try_from(clock.elapsed().as_millis()).unwrap_or(u32::MAX),
                response_status: u32::try_from(attempted.response_status).unwrap_or_default(),
                succeeded: error.is_empty(),
                error,
                response_excerpt: attempted.response_excerpt,
                requested_by: Some(principal.to_proto()),
                ..Default::default()
            }),
        }))
    }
}
