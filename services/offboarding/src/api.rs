//! OffboardingService: a partner (or the operator) offboards one of its tenants, follows the
//! offboarding, cancels it before the purge, and reads the deletion certificate.

use chrono::Utc;
use picket_platform::Principal;
use picket_platform::auth::{Role, check_partner_id};
use picket_platform::grpc::{
    internal, next_offset_token, page_size, parse_each, parse_offset_token, parse_optional_uuid,
    parse_uuid,
};
use picket_platform::time::from_duration;
use picket_proto::offboarding::v1 as offboarding;
use picket_proto::offboarding::v1::offboarding_service_server::OffboardingService;
use tonic::{Request, Response, Status};

use crate::certificate;
use crate::offboardings::Offboardings;
use crate::saga::{self, Saga};
use crate::store;

pub struct OffboardingApi {
    offboardings: Offboardings,
}

impl OffboardingApi {
    pub fn new(offboardings: Offboardings) -> OffboardingApi {
        OffboardingApi { offboardings }
    }
}

const MAX_REASON: usize = 2_000;

/// Offboardings and their certificates are the partner's business: customers (whose access ends
/// when an offboarding starts) and investigators read none.
const READERS: &[Role] = &[Role::Operator, Role::Partner];

/// Lists span partners only for the operator.
fn listing_partner<'a>(principal: &Principal, partner_id: &'a str) -> Result<&'a str, Status> {
    principal.require_role(READERS)?;
    if partner_id.is_empty() {
        principal.require_role(&[Role::Operator])?;
    } else {
        check_partner_id(partner_id)?;
        principal.require_partner(partner_id)?;
    }
    Ok(partner_id)
}

#[tonic::async_trait]
impl OffboardingService for OffboardingApi {
    async fn offboard_tenant(
        &self,
        request: Request<offboarding::OffboardTenantRequest>,
    ) -> Result<Response<offboarding::OffboardTenantResponse>, Status> {
        let principal = Principal::of(&request)?.clone();
        let message = request.into_inner();
        principal.require_role(&[Role::Operator, Role::Partner])?;
        principal.require_partner_manager(&message.partner_id)?;
        if message.tenant_id.trim().is_empty() {
            return Err(Status::invalid_argument("tenant_id: is required"));
        }
        if message.reason.trim().is_empty() {
            return Err(Status::invalid_argument("reason: is required"));
        }
        if message.reason.len() > MAX_REASON {
            return Err(Status::invalid_argument(format!(
                "reason: at most {MAX_REASON} characters"
            )));
        }
        let retention = message
            .retention
            .as_ref()
            .map(|retention| {
                from_duration(retention)
                    .ok_or_else(|| Status::invalid_argument("retention: must not be negative"))
            })
            .transpose()?;
        let (offboarding, created) = self
            .offboardings
            .start(
                &message.partner_id,
                &message.tenant_id,
                &message.reason,
                retention,
                &principal.to_proto(),
            )
            .await?;
        Ok(Response::new(offboarding::OffboardTenantResponse {
            offboarding: Some(offboarding),
            created,
        }))
    }

    async fn get_offboarding(
        &self,
        request: Request<offboarding::GetOffboardingRequest>,
    ) -> Result<Response<offboarding::GetOffboardingResponse>, Status> {
        let principal = Principal::of(&request)?.clone();
        principal.require_role(READERS)?;
        let offboarding_id = parse_uuid(&request.get_ref().offboarding_id, "offboarding_id")?;
        let saga = self
            .offboardings
            .get(offboarding_id)
            .await
            .map_err(internal)?
            .filter(|saga| principal.can_access_partner(&saga.row.partner_id))
            .ok_or_else(|| {
                Status::not_found(format!("offboarding_id: no offboarding {offboarding_id}"))
            })?;
        Ok(Response::new(offboarding::GetOffboardingResponse {
            offboarding: Some(saga.to_proto(Utc::now())),
        }))
    }

    async fn list_offboardings(
        &self,
        request: Request<offboarding::ListOffboardingsRequest>,
    ) -> Result<Response<offboarding::ListOffboardingsResponse>, Status> {
        let principal = Principal::of(&request)?.clone();
        let message = request.into_inner();
        let partner_id = listing_partner(&principal, &message.partner_id)?;
        let states = parse_each(&message.states, "states", "an offboarding state", |value| {
            offboarding::OffboardingState::try_from(value)
                .ok()
                .and_then(saga::state_name)
        })?;
        let limit = page_size(message.page_size, 50, 500)?;
        let offset = parse_offset_token(&message.page_token)?;
        let pool = &self.offboardings.pool;
        let rows = store::list(
            pool,
            &store::Filter {
                partner_id,
                tenant_id: &message.tenant_id,
                states: &states,
            },
            offset,
            limit,
        )
        .await
        .map_err(internal)?;
        let ids: Vec<uuid::Uuid> = rows.iter().map(|row| row.offboarding_id).collect();
        let mut progress = store::progress(pool, &ids).await.map_err(internal)?;
        let now = Utc::now();
        let next_page_token = next_offset_token(offset, rows.len(), limit);
        let offboardings = rows
            .into_iter()
            .map(|row| {
                let (mine, rest) = progress
                    .drain(..)
                    .partition(|step| step.offboarding_id == row.offboarding_id);
                progress = rest;
                Saga {
                    row,
                    progress: mine,
                }
                .to_proto(now)
            })
            .collect();
        Ok(Response::new(offboarding::ListOffboardingsResponse {
            offboardings,
            next_page_token,
        }))
    }

    async fn cancel_offboarding(
        &self,
        request: Request<offboarding::CancelOffboardingRequest>,
    ) -> Result<Response<offboarding::CancelOffboardingResponse>, Status> {
        let principal = Principal::of(&request)?.clone();
        let message = request.into_inner();
        principal.require_role(&[Role::Operator, Role::Partner])?;
        let offboarding_id = parse_uuid(&message.offboarding_id, "offboarding_id")?;
        if message.reason.len() > MAX_REASON {
            return Err(Status::invalid_argument(format!(
                "reason: at most {MAX_REASON} characters"
            )));
        }
        let (offboarding, consent_required) = self
            .offboardings
            .cancel(
                offboarding_id,
                &message.reason,
                &principal.to_proto(),
                |row| {
                    if principal.can_access_partner(&row.partner_id) {
                        Ok(())
                    } else {
                        Err(Status::not_found(format!(
                            "offboarding_id: no offboarding {offboarding_id}"
                        )))
                    }
                },
            )
            .await?;
        Ok(Response::new(offboarding::CancelOffboardingResponse {
            offboarding: Some(offboarding),
            consent_required,
        }))
    }

    async fn get_deletion_certificate(
        &self,
        request: Request<offboarding::GetDeletionCertificateRequest>,
    ) -> Result<Response<offboarding::GetDeletionCertificateResponse>, Status> {
        let principal = Principal::of(&request)?.clone();
        principal.require_role(READERS)?;
        let message = request.into_inner();
        let certificate_id = parse_optional_uuid(&message.certificate_id, "certificate_id")?;
        let offboarding_id = parse_optional_uuid(&message.offboarding_id, "offboarding_id")?;
        if certificate_id.is_none() && offboarding_id.is_none() {
            return Err(Status::invalid_argument(
                "certificate_id: give it, or offboarding_id",
            ));
        }
        let format = offboarding::CertificateFormat::try_from(message.format)
            .map_err(|_| Status::invalid_argument("format: unknown certificate format"))?;
        let not_found = || Status::not_found("certificate_id: no such certificate");
        let row = store::certificate(&self.offboardings.pool, certificate_id, offboarding_id)
            .await
            .map_err(internal)?
            .filter(|row| principal.can_access_partner(&row.partner_id))
            .ok_or_else(not_found)?;
        let certificate = certificate::open(&row.body, &row.sha256)
            .ok_or_else(|| Status::data_loss("the certificate does not match its seal"))?;
        let (document, content_type) =
            certificate::render(&certificate, format).unwrap_or((Vec::new(), ""));
        Ok(Response::new(offboarding::GetDeletionCertificateResponse {
            certificate: Some(certificate),
            document,
            content_type: content_type.to_owned(),
        }))
    }

    async fn list_deletion_certificates(
        &self,
        request: Request<offboarding::ListDeletionCertificatesRequest>,
    ) -> Result<Response<offboarding::ListDeletionCertificatesResponse>, Status> {
        let principal = Principal::of(&request)?.clone();
        let message = request.into_inner();
        let partner_id = listing_partner(&principal, &message.partner_id)?;
        let limit = page_size(message.page_size, 50, 500)?;
        let offset = parse_offset_token(&message.page_token)?;
        let rows = store::certificates(
            &self.offboardings.pool,
            partner_id,
            &message.tenant_id,
            offset,
            limit,
        )
        .await
        .map_err(internal)?;
        Ok(Response::new(
            offboarding::ListDeletionCertificatesResponse {
                next_page_token: next_offset_token(offset, rows.len(), limit),
                certificates: rows
                    .iter()
                    .filter_map(|row| certificate::open(&row.body, &row.sha256))
                    .collect(),
            },
        ))
    }
}
