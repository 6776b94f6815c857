//! ChannelService: partners manage their webhook endpoints. E-mail recipients and the endpoint
//! updates (rotation, test sends) arrive with the notification issue and answer UNIMPLEMENTED until
//! then.

use std::sync::Arc;

use chrono::Utc;
use picket_platform::Principal;
use picket_platform::auth::Role;
use picket_platform::grpc::{internal, parse_uuid};
use picket_platform::nats::subjects::validate_token;
use picket_proto::notifications::v1 as notifications;
use picket_proto::notifications::v1::channel_service_server::ChannelService;
use sqlx::PgPool;
use tonic::{Request, Response, Status};

use crate::catalog::EVENT_TYPES;
use crate::egress::EgressPolicy;
use crate::signing::WebhookSecret;
use crate::store::{self, NewEndpoint};

pub struct ChannelApi {
    pool: PgPool,
    policy: Arc<EgressPolicy>,
}

impl ChannelApi {
    pub fn new(pool: PgPool, policy: Arc<EgressPolicy>) -> ChannelApi {
        ChannelApi { pool, policy }
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
        if !message.tenant_id.is_empty() {
            validate_token(&message.tenant_id)
                .map_err(|error| Status::invalid_argument(format!("tenant_id: {error}")))?;
        }
        self.policy
            .check_url(&message.url)
            .map_err(|error| Status::invalid_argument(format!("url: {error}")))?;
        if let Some(unknown) = message
            .event_types
            .iter()
            .find(|event_type| !EVENT_TYPES.contains(&event_type.as_str()))
        {
            return Err(Status::invalid_argument(format!(
                "event_types: unknown event type {unknown}"
            )));
        }
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
}
