//! Onboarding: the admin-consent URL a tenant is sent to, and completing consent (from the
//! redirect or CompleteConsent): a tenant turns active only once a token works and `/organization`
//! shows the consenting tenant; otherwise it keeps a clear state and reason.

use std::sync::Arc;

use chrono::Utc;
use picket_platform::EventFactory;
use picket_platform::db::outbox;
use picket_platform::time::to_timestamp;
use picket_proto::tenants::v1 as tenants;
use sqlx::PgPool;

use crate::graph::{GraphClient, GraphError, Meter, url_encode};
use crate::scans;
use crate::settings::ScannerSettings;
use crate::tenants::consent::{self, ConsentRefusal, ConsentResponse};
use crate::tenants::store::{self, TenantRow};

#[derive(Debug, thiserror::Error)]
pub enum CompleteError {
    #[error("no onboarding waits for this consent state")]
    UnknownState,
    #[error("storage: {0}")]
    Storage(#[from] sqlx::Error),
}

pub struct Onboarding {
    pub pool: PgPool,
    pub graph: Arc<GraphClient>,
    pub events: EventFactory,
    pub settings: ScannerSettings,
}

impl Onboarding {
    /// Microsoft's v2.0 admin-consent URL for the operator's app.
    pub fn consent_url(&self, tenant: &TenantRow) -> String {
        let authority = if tenant.microsoft_tenant.is_empty() {
            "organizations"
        } else {
            &tenant.microsoft_tenant
        };
        format!(
            "{}/{}/v2.0/adminconsent?client_id={}&scope={}&redirect_uri={}&state={}",
            self.settings.login_base_url.trim_end_matches('/'),
            url_encode(authority),
            url_encode(&self.settings.client_id),
            url_encode(crate::graph::GRAPH_SCOPE),
            url_encode(&self.settings.consent_redirect_uri),
            url_encode(&tenant.consent_state),
        )
    }

    /// Completes consent; a refusal is recorded on the tenant, not returned as an error.
    pub async fn complete(&self, response: &ConsentResponse) -> Result<TenantRow, CompleteError> {
        let tenant = store::find_by_consent_state(&self.pool, &response.state)
            .await?
            .ok_or(CompleteError::UnknownState)?;
        if tenant.is_active() {
            // Microsoft redirects again when an admin consents twice.
            return Ok(tenant);
        }
        let verdict = self.verify(&tenant, response).await;
        let now = Utc::now();
        match verdict {
            Err(refusal) => {
                let state = if refusal.is_denial() {
                    "consent_denied"
                } else {
                    "consent_failed"
                };
                tracing::info!(tenant_id = %tenant.tenant_id, reason = %refusal.reason, "consent did not complete");
                Ok(store::mark_refused(
                    &self.pool,
                    tenant.tenant_id,
                    state,
                    refusal.failure.as_str_name(),
                    &refusal.reason,
                    now,
                )
                .await?)
            }
            Ok(organization) => {
                let mut transaction = self.pool.begin().await?;
                // The first full scan runs now; later runs spread over their interval.
                let spread = |interval: std::time::Duration| {
                    now + chrono::Duration::from_std(interval.mul_f64(rand::random::<f64>()))
                        .unwrap_or_default()
                };
                let first_runs = store::FirstRuns {
                    configuration: now
                        + chrono::Duration::from_std(self.settings.configuration_interval)
                            .unwrap_or_default(),
                    monitoring: spread(self.settings.monitoring_interval),
                };
                let activated = store::activate(
                    &mut transaction,
                    tenant.tenant_id,
                    &organization.id,
                    &organization.default_domain,
                    &first_runs,
                    now,
                )
                .await?;
                let Some(active) = activated else {
                    return Ok(store::get_tenant(&self.pool, tenant.tenant_id)
                        .await?
                        .unwrap_or(tenant));
                };
                scans::store::queue(
                    &mut transaction,
                    &active.partner_id,
                    active.tenant_id,
                    tenants::ScanKind::Full,
                    "onboarding",
                    None,
                    now,
                )
                .await?;
                let onboarded = tenants::TenantOnboarded {
                    partner_id: active.partner_id.clone(),
                    tenant_id: active.tenant_id.to_string(),
                    tenant: Some(active.to_proto(String::new())),
                    onboarded_at: Some(to_timestamp(now)),
                    reconnected: false,
                };
                // Ids are validated at onboarding, so the subject always builds.
                if let Ok(event) = self.events.event(&onboarded, now) {
                    outbox::enqueue(&mut transaction, &event).await?;
                }
                transaction.commit().await?;
                tracing::info!(tenant_id = %active.tenant_id, microsoft_tenant_id = %active.microsoft_tenant_id, "tenant onboarded");
                Ok(active)
            }
        }
    }

    async fn verify(
        &self,
        tenant: &TenantRow,
        response: &ConsentResponse,
    ) -> Result<consent::Organization, ConsentRefusal> {
        if tenant.consent_expires_at < Utc::now() {
            return Err(ConsentRefusal {
                failure: tenants::ConsentFailure::InvalidState,
                reason: "the consent link expired; request a new one".into(),
            });
        }
        consent::check_response(response, &tenant.microsoft_tenant)?;
        let read = self
            .graph
            .get(
                &response.microsoft_tenant_id,
                "/v1.0/organization?$select=id,displayName,verifiedDomains",
                &Meter::default(),
            )
            .await;
        let organization = match read {
            Ok(body) => consent::parse_organization(&body).ok_or_else(|| ConsentRefusal {
                failure: tenants::ConsentFailure::OrganizationUnreadable,
                reason: "the organization response has no organization".into(),
            })?,
            Err(error @ GraphError::Token { .. }) => {
                return Err(ConsentRefusal {
                    failure: tenants::ConsentFailure::TokenFailed,
                    reason: error.to_string(),
                });
            }
            Err(error) => {
                return Err(ConsentRefusal {
                    failure: tenants::ConsentFailure::OrganizationUnreadable,
                    reason: error.to_string(),
                });
            }
        };
        consent::check_organization(
            &organization,
            &response.microsoft_tenant_id,
            &tenant.microsoft_tenant,
        )?;
        Ok(organization)
    }
}
