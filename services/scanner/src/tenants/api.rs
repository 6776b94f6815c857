//! TenantService: partners onboard their customers' tenants and read only their own.

use std::sync::Arc;

use chrono::Utc;
use picket_platform::Principal;
use picket_platform::auth::Role;
use picket_platform::db::outbox;
use picket_platform::grpc::{internal, keyset_token, page_size, parse_keyset_token};
use picket_platform::sealing::consent_link_context;
use picket_platform::time::to_timestamp;
use picket_proto::tenants::v1 as tenants;
use picket_proto::tenants::v1::tenant_service_server::TenantService;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::tenants::consent::ConsentResponse;
use crate::tenants::onboarding::{CompleteError, Onboarding, Step};
use crate::tenants::store::{self, NewTenant, TenantRow};

const DEFAULT_PAGE_SIZE: i64 = 100;
const MAX_PAGE_SIZE: i64 = 500;

pub struct TenantApi {
    onboarding: Arc<Onboarding>,
}

impl TenantApi {
    pub fn new(onboarding: Arc<Onboarding>) -> TenantApi {
        TenantApi { onboarding }
    }

    /// A tenant as read later: its consent link was shown when issued and only its hash is kept.
    fn to_proto(&self, tenant: &TenantRow) -> tenants::Tenant {
        tenant.to_proto(String::new())
    }

    /// How long a consent link stays valid.
    fn consent_validity(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.onboarding.settings.consent_validity)
            .unwrap_or(chrono::Duration::days(7))
    }

    /// A new consent link for a tenant that is not active (the previous one stops working):
    /// the tenant after, the link, or FAILED_PRECONDITION for an active tenant.
    async fn issue_consent(&self, tenant: &TenantRow) -> Result<(TenantRow, String), Status> {
        let now = Utc::now();
        let state = new_consent_state();
        let renewed = store::renew_consent(
            &self.onboarding.pool,
            tenant.tenant_id,
            &state,
            now + self.consent_validity(),
            now,
        )
        .await
        .map_err(internal)?
        .ok_or_else(|| {
            Status::failed_precondition("tenant_id: the tenant is active and already consented")
        })?;
        let consent_url = self.onboarding.consent_url(&renewed, &state);
        Ok((renewed, consent_url))
    }
}

fn new_consent_state() -> String {
    // 244 random bits: the redirect's `state` is the only proof of which onboarding it answers.
    format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple())
}

/// A GUID or a domain name such as `contoso.onmicrosoft.com`.
fn valid_microsoft_tenant(value: &str) -> bool {
    Uuid::parse_str(value).is_ok()
        || (value.contains('.')
            && value.len() <= 253
            && value.split('.').all(|label| {
                !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            }))
}

#[tonic::async_trait]
impl TenantService for TenantApi {
    async fn onboard_tenant(
        &self,
        request: Request<tenants::OnboardTenantRequest>,
    ) -> Result<Response<tenants::OnboardTenantResponse>, Status> {
        let principal = Principal::of(&request)?.clone();
        let message = request.into_inner();
        principal.require_partner_manager(&message.partner_id)?;
        if message.display_name.trim().is_empty() {
            return Err(Status::invalid_argument("display_name: is required"));
        }
        let plan = tenants::SubscriptionPlan::try_from(message.plan)
            .ok()
            .and_then(store::plan_to_db)
            .ok_or_else(|| {
                Status::invalid_argument("plan: must be essentials, standard or premium")
            })?;
        if !message.microsoft_tenant.is_empty()
            && !valid_microsoft_tenant(&message.microsoft_tenant)
        {
            return Err(Status::invalid_argument(
                "microsoft_tenant: must be a tenant GUID or a domain name",
            ));
        }
        let now = Utc::now();
        let consent_state = new_consent_state();
        let tenant = store::insert_tenant(
            &self.onboarding.pool,
            &NewTenant {
                partner_id: &message.partner_id,
                display_name: message.display_name.trim(),
                microsoft_tenant: &message.microsoft_tenant,
                plan,
                consent_state: &consent_state,
                consent_expires_at: now + self.consent_validity(),
                onboarded_by: &principal.subject,
                idempotency_key: &message.idempotency_key,
            },
            now,
        )
        .await
        .map_err(internal)?;
        let (tenant, consent_url) =
            if tenant.consent_state_hash == store::state_hash(&consent_state) {
                let consent_url = self.onboarding.consent_url(&tenant, &consent_state);
                (tenant, consent_url)
            } else if tenant.is_active() {
                // A retried onboarding of a tenant connected since: nothing to consent to.
                (tenant, String::new())
            } else {
                // A retried onboarding: the first link cannot be shown again (only its hash is
                // kept), so a new one replaces it.
                self.issue_consent(&tenant).await?
            };
        Ok(Response::new(tenants::OnboardTenantResponse {
            tenant: Some(tenant.to_proto(consent_url.clone())),
            consent_url,
            consent_expires_at: Some(to_timestamp(tenant.consent_expires_at)),
        }))
    }

    async fn get_tenant(
        &self,
        request: Request<tenants::GetTenantRequest>,
    ) -> Result<Response<tenants::GetTenantResponse>, Status> {
        let principal = Principal::of(&request)?;
        let tenant = store::visible_tenant(
            &self.onboarding.pool,
            principal,
            &request.get_ref().tenant_id,
        )
        .await?;
        Ok(Response::new(tenants::GetTenantResponse {
            tenant: Some(self.to_proto(&tenant)),
        }))
    }

    async fn list_tenants(
        &self,
        request: Request<tenants::ListTenantsRequest>,
    ) -> Result<Response<tenants::ListTenantsResponse>, Status> {
        let principal = Principal::of(&request)?;
        principal.require_role(store::READERS)?;
        let message = request.get_ref();
        let partner_id = principal.partner_scope(&message.partner_id)?;
        let mut states = Vec::with_capacity(message.states.len());
        for value in &message.states {
            let state = tenants::TenantState::try_from(*value)
                .ok()
                .and_then(store::state_to_db)
                .ok_or_else(|| {
                    Status::invalid_argument(format!("states: {value} is not a tenant state"))
                })?;
            states.push(state);
        }
        let limit = page_size(message.page_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)?;
        let rows = store::list_tenants(
            &self.onboarding.pool,
            partner_id.as_deref(),
            &states,
            parse_keyset_token(&message.page_token)?,
            limit,
        )
        .await
        .map_err(internal)?;
        let next_page_token = match rows.last() {
            Some(last) if rows.len() as i64 == limit => {
                keyset_token(last.created_at, last.tenant_id)
            }
            _ => String::new(),
        };
        Ok(Response::new(tenants::ListTenantsResponse {
            tenants: rows.iter().map(|tenant| self.to_proto(tenant)).collect(),
            next_page_token,
        }))
    }

    async fn complete_consent(
        &self,
        request: Request<tenants::CompleteConsentRequest>,
    ) -> Result<Response<tenants::CompleteConsentResponse>, Status> {
        let principal = Principal::of(&request)?.clone();
        principal.require_role(&[Role::Operator, Role::Partner])?;
        let message = request.into_inner();
        if message.state.is_empty() {
            return Err(Status::invalid_argument("state: is required"));
        }
        let unknown = || Status::not_found("state: no onboarding waits for this consent");
        let waiting = self
            .onboarding
            .tenant_of_state(&message.state)
            .await
            .map_err(internal)?
            .filter(|tenant| principal.can_access_partner(&tenant.partner_id));
        if waiting.is_none() {
            return Err(unknown());
        }
        let response = ConsentResponse {
            state: message.state,
            tenant_hint: String::new(),
            admin_consent: message.admin_consent,
            code: message.code,
            error: message.error,
            error_description: message.error_description,
        };
        let (tenant, sign_in_url) = match self.onboarding.redirect(&response).await {
            Ok(Step::SignIn { tenant, url }) => (tenant, url),
            Ok(Step::Finished(tenant)) => (tenant, String::new()),
            Err(CompleteError::UnknownState) => return Err(unknown()),
            Err(CompleteError::Storage(error)) => return Err(internal(error)),
        };
        Ok(Response::new(tenants::CompleteConsentResponse {
            tenant: Some(self.to_proto(&tenant)),
            sign_in_url,
        }))
    }

    async fn update_tenant(
        &self,
        request: Request<tenants::UpdateTenantRequest>,
    ) -> Result<Response<tenants::UpdateTenantResponse>, Status> {
        let principal = Principal::of(&request)?;
        principal.require_role(&[Role::Operator, Role::Partner])?;
        let message = request.get_ref();
        let tenant =
            store::visible_tenant(&self.onboarding.pool, principal, &message.tenant_id).await?;
        let display_name = match message.display_name.as_deref().map(str::trim) {
            Some(name) if name.is_empty() || name.len() > 256 => {
                return Err(Status::invalid_argument(
                    "display_name: must be 1 to 256 characters",
                ));
            }
            other => other,
        };
        let plan = match message.plan {
            None => None,
            Some(value) => Some(
                tenants::SubscriptionPlan::try_from(value)
                    .ok()
                    .and_then(store::plan_to_db)
                    .ok_or_else(|| {
                        Status::invalid_argument(format!(
                            "plan: {value} is not a subscription plan"
                        ))
                    })?,
            ),
        };
        let updated = store::update_tenant(
            &self.onboarding.pool,
            tenant.tenant_id,
            display_name,
            plan,
            Utc::now(),
        )
        .await
        .map_err(internal)?;
        Ok(Response::new(tenants::UpdateTenantResponse {
            tenant: Some(self.to_proto(&updated)),
        }))
    }

    async fn request_consent(
        &self,
        request: Request<tenants::RequestConsentRequest>,
    ) -> Result<Response<tenants::RequestConsentResponse>, Status> {
        let principal = Principal::of(&request)?;
        principal.require_role(&[Role::Operator, Role::Partner])?;
        let tenant = store::visible_tenant(
            &self.onboarding.pool,
            principal,
            &request.get_ref().tenant_id,
        )
        .await?;
        let (renewed, consent_url) = self.issue_consent(&tenant).await?;
        Ok(Response::new(tenants::RequestConsentResponse {
            tenant: Some(self.to_proto(&renewed)),
            consent_url,
            consent_expires_at: Some(to_timestamp(renewed.consent_expires_at)),
        }))
    }

    async fn forward_consent(
        &self,
        request: Request<tenants::ForwardConsentRequest>,
    ) -> Result<Response<tenants::ForwardConsentResponse>, Status> {
        let principal = Principal::of(&request)?.clone();
        principal.require_role(&[Role::Operator, Role::Partner])?;
        let message = request.into_inner();
        let tenant =
            store::visible_tenant(&self.onboarding.pool, &principal, &message.tenant_id).await?;
        let email = message.recipient_email.trim();
        if email.len() > 254
            || email.split('@').count() != 2
            || email.starts_with('@')
            || !email.contains('.')
        {
            return Err(Status::invalid_argument(
                "recipient_email: is not an e-mail address",
            ));
        }
        if tenant.is_active() {
            return Err(Status::failed_precondition(
                "tenant_id: the tenant already consented",
            ));
        }
        // The link forwarded is a new one: the one shown before is kept only as a hash.
        let (tenant, consent_url) = self.issue_consent(&tenant).await?;
        let now = Utc::now();
        let tenant_id = tenant.tenant_id.to_string();
        let sealed_consent_url = self
            .onboarding
            .consent_links
            .seal(
                consent_url.as_bytes(),
                &consent_link_context(&tenant.partner_id, &tenant_id),
            )
            .map_err(|error| {
                tracing::error!(%error, "cannot seal the consent link");
                Status::internal("internal error")
            })?;
        let forwarded = tenants::ConsentRequestForwarded {
            partner_id: tenant.partner_id.clone(),
            tenant_id,
            tenant_display_name: tenant.display_name.clone(),
            sealed_consent_url,
            recipient_email: email.to_owned(),
            recipient_name: message.recipient_name.clone(),
            message: message.message.clone(),
            forwarded_at: Some(to_timestamp(now)),
            consent_expires_at: Some(to_timestamp(tenant.consent_expires_at)),
            forwarded_by: Some(principal.to_proto()),
        };
        let event = self
            .onboarding
            .events
            .event(&forwarded, now)
            .map_err(|error| Status::internal(error.to_string()))?;
        let mut connection = self.onboarding.pool.acquire().await.map_err(internal)?;
        outbox::enqueue(&mut connection, &event)
            .await
            .map_err(internal)?;
        Ok(Response::new(tenants::ForwardConsentResponse {
            tenant: Some(tenant.to_proto(consent_url.clone())),
            consent_url,
            forwarded_at: Some(to_timestamp(now)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn microsoft_tenant_is_a_guid_or_a_domain() {
        assert!(valid_microsoft_tenant(
            "86cc7763-2227-24a2-8af0-0a133fad517d"
        ));
        assert!(valid_microsoft_tenant("contoso.onmicrosoft.com"));
        assert!(!valid_microsoft_tenant("contoso"));
        assert!(!valid_microsoft_tenant("contoso..com"));
        assert!(!valid_microsoft_tenant("a b.com"));
    }
}
