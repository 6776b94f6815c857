//! DeliveryService: the log of every delivery and attempt, a redelivery by hand and the bulk replay
//! of a time range's failures. A redelivery keeps the delivery id, so the receiver sees the same
//! `webhook-id` and can tell it has the message already. Partners see and act on their own
//! deliveries; operator staff on any partner's.

use picket_platform::Principal;
use picket_platform::auth::Role;
use picket_platform::grpc::{
    internal, keyset_token, page_size, parse_each, parse_keyset_token, parse_optional_uuid,
    parse_uuid, time_range,
};
use picket_proto::notifications::v1 as notifications;
use picket_proto::notifications::v1::delivery_service_server::DeliveryService;
use sqlx::PgPool;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::store::{self, DeliveryFilter, DeliveryRow};

const DEFAULT_PAGE_SIZE: i64 = 50;
const MAX_PAGE_SIZE: i64 = 500;

pub struct DeliveryApi {
    pool: PgPool,
}

impl DeliveryApi {
    pub fn new(pool: PgPool) -> DeliveryApi {
        DeliveryApi { pool }
    }

    /// The delivery, if the principal may see it; another partner's is as good as missing.
    async fn visible_delivery(
        &self,
        principal: &Principal,
        delivery_id: Uuid,
    ) -> Result<DeliveryRow, Status> {
        principal.require_role(&[Role::Operator, Role::Investigator, Role::Partner])?;
        store::get_delivery(&self.pool, delivery_id)
            .await
            .map_err(internal)?
            .filter(|delivery| principal.can_access_partner(&delivery.partner_id))
            .ok_or_else(|| Status::not_found(format!("delivery {delivery_id} not found")))
    }
}

fn optional(value: &str) -> Option<String> {
    (!value.is_empty()).then(|| value.to_owned())
}

fn statuses(values: &[i32]) -> Result<Vec<&'static str>, Status> {
    parse_each(values, "statuses", "a delivery status", |value| {
        notifications::DeliveryStatus::try_from(value)
            .ok()
            .and_then(store::status_name)
    })
}

#[tonic::async_trait]
impl DeliveryService for DeliveryApi {
    async fn list_deliveries(
        &self,
        request: Request<notifications::ListDeliveriesRequest>,
    ) -> Result<Response<notifications::ListDeliveriesResponse>, Status> {
        let principal = Principal::of(&request)?.clone();
        let message = request.into_inner();
        principal.require_role(&[Role::Operator, Role::Investigator, Role::Partner])?;
        let partner_id = principal.partner_scope(&message.partner_id)?;
        let (created_from, created_before) = time_range(message.created.as_ref(), "created")?;
        let channel = notifications::DeliveryChannel::try_from(message.channel).map_err(|_| {
            Status::invalid_argument(format!(
                "channel: {} is not a delivery channel",
                message.channel
            ))
        })?;
        let recipient_id = parse_optional_uuid(&message.recipient_id, "recipient_id")?;
        let limit = page_size(message.page_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)?;
        let filter = DeliveryFilter {
            partner_id,
            tenant_id: optional(&message.tenant_id),
            statuses: statuses(&message.statuses)?,
            created_from,
            created_before,
            endpoint_id: parse_optional_uuid(&message.endpoint_id, "endpoint_id")?,
            recipient_id,
            channel: store::channel_name(channel),
            event_type: optional(&message.event_type),
            event_id: optional(&message.event_id),
        };
        let after = parse_keyset_token(&message.page_token)?;
        let deliveries = store::list_deliveries(&self.pool, &filter, after, limit)
            .await
            .map_err(internal)?;
        let next_page_token = match deliveries.last() {
            Some(last) if deliveries.len() as i64 == limit => {
                keyset_token(last.created_at, last.delivery_id)
            }
            _ => String::new(),
        };
        Ok(Response::new(notifications::ListDeliveriesResponse {
            deliveries: deliveries.iter().map(DeliveryRow::to_proto).collect(),
            next_page_token,
        }))
    }

    async fn get_delivery(
        &self,
        request: Request<notifications::GetDeliveryRequest>,
    ) -> Result<Response<notifications::GetDeliveryResponse>, Status> {
        let principal = Principal::of(&request)?.clone();
        let delivery_id = parse_uuid(&request.get_ref().delivery_id, "delivery_id")?;
        let delivery = self.visible_delivery(&principal, delivery_id).await?;
        let attempts = store::attempts_of(&self.pool, delivery_id)
            .await
            .map_err(internal)?;
        Ok(Response::new(notifications::GetDeliveryResponse {
            delivery: Some(delivery.to_proto()),
            attempts: attempts.iter().map(store::AttemptRow::to_proto).collect(),
        }))
    }

    async fn redeliver_delivery(
        &self,
        request: Request<notifications::RedeliverDeliveryRequest>,
    ) -> Result<Response<notifications::RedeliverDeliveryResponse>, Status> {
        let principal = Principal::of(&request)?.clone();
        let message = request.into_inner();
        let delivery_id = parse_uuid(&message.delivery_id, "delivery_id")?;
        let delivery = self.visible_delivery(&principal, delivery_id).await?;
        principal.require_partner_manager(&delivery.partner_id)?;
        match delivery.status.as_str() {
            "failed" | "dead" => {}
            "succeeded" if message.force => {}
            "succeeded" => {
                return Err(Status::failed_precondition(
                    "delivery succeeded already; set force to send it again",
                ));
            }
            _ => {
                return Err(Status::failed_precondition(
                    "delivery is waiting for its first attempt already",
                ));
            }
        }
        let enabled = match (delivery.endpoint_id, delivery.recipient_id) {
            (Some(endpoint_id), _) => store::get_endpoint(&self.pool, endpoint_id)
                .await
                .map_err(internal)?
                .is_some_and(|endpoint| endpoint.enabled),
            (None, Some(recipient_id)) => store::get_recipients(&self.pool, &[recipient_id])
                .await
                .map_err(internal)?
                .first()
                .is_some_and(|recipient| recipient.enabled),
            // An e-mail to the address its event named has nothing to disable.
            (None, None) => delivery.direct,
        };
        if !enabled {
            return Err(Status::failed_precondition(format!(
                "{} is disabled; enable it before redelivering",
                delivery.destination
            )));
        }
        let requested_by = principal.to_proto();
        let delivery = store::redeliver(
            &self.pool,
            delivery_id,
            &store::Request {
                trigger: "manual_redelivery",
                subject: &requested_by.subject,
                role: requested_by.role,
                replay_id: None,
            },
        )
        .await
        .map_err(internal)?
        .ok_or_else(|| Status::not_found(format!("delivery {delivery_id} not found")))?;
        tracing::info!(%delivery_id, subject = %requested_by.subject, "delivery redelivered by hand");
        Ok(Response::new(notifications::RedeliverDeliveryResponse {
            delivery: Some(delivery.to_proto()),
        }))
    }

    async fn replay_failed_deliveries(
        &self,
        request: Request<notifications::ReplayFailedDeliveriesRequest>,
    ) -> Result<Response<notifications::ReplayFailedDeliveriesResponse>, Status> {
        let principal = Principal::of(&request)?.clone();
        let message = request.into_inner();
        principal.require_partner_manager(&message.partner_id)?;
        let (created_from, created_before) = time_range(message.created.as_ref(), "created")?;
        if created_from.is_none() {
            return Err(Status::invalid_argument("created.start_time: is required"));
        }
        let mut statuses = statuses(&message.statuses)?;
        if statuses.contains(&"pending") {
            return Err(Status::invalid_argument(
                "statuses: pending deliveries are due already",
            ));
        }
        if statuses.is_empty() {
            statuses = vec!["failed", "dead"];
        }
        let filter = DeliveryFilter {
            partner_id: Some(message.partner_id.clone()),
            tenant_id: optional(&message.tenant_id),
            statuses,
            created_from,
            created_before,
            endpoint_id: parse_optional_uuid(&message.endpoint_id, "endpoint_id")?,
            recipient_id: None,
            channel: None,
            event_type: optional(&message.event_type),
            event_id: None,
        };
        let replay_id = Uuid::now_v7();
        let requested_by = principal.to_proto();
        let replayed = store::replay(
            &self.pool,
            &filter,
            &store::Request {
                trigger: "bulk_replay",
                subject: &requested_by.subject,
                role: requested_by.role,
                replay_id: Some(replay_id),
            },
            message.dry_run,
        )
        .await
        .map_err(internal)?;
        tracing::info!(
            %replay_id,
            partner_id = %message.partner_id,
            replayed = replayed.replayed,
            skipped = replayed.skipped,
            dry_run = message.dry_run,
            "failed deliveries replayed"
        );
        Ok(Response::new(
            notifications::ReplayFailedDeliveriesResponse {
                deliveries_replayed: u32::try_from(replayed.replayed).unwrap_or(u32::MAX),
                replay_id: replay_id.to_string(),
                deliveries_skipped: u32::try_from(replayed.skipped).unwrap_or(u32::MAX),
            },
        ))
    }
}
