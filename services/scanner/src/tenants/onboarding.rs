//! Onboarding: the admin-consent URL a tenant is sent to, and completing consent (from the
//! redirects or CompleteConsent): after consent the administrator signs in, and a tenant turns
//! active only once that sign-in's ID token proves the Microsoft tenant, no other Picket tenant
//! holds it, a token works and `/organization` shows the same tenant; otherwise it keeps a clear
//! state and reason.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use picket_platform::EventFactory;
use picket_platform::db::outbox;
use picket_platform::sealing::Keyring;
use picket_platform::time::to_timestamp;
use picket_proto::tenants::v1 as tenants;
use sqlx::PgPool;

use crate::checks::catalogue::Catalogue;
use crate::graph::{Api, GraphClient, GraphError, Meter, url_encode};
use crate::scans::{self, access};
use crate::settings::ScannerSettings;
use crate::tenants::consent::{self, ConsentRefusal, ConsentResponse};
use crate::tenants::signin::{AdminSignIn, PendingSignIn, ProvenAdministrator};
use crate::tenants::store::{self, TenantRow};

#[derive(Debug, thiserror::Error)]
pub enum CompleteError {
    #[error("no onboarding waits for this consent state")]
    UnknownState,
    #[error("storage: {0}")]
    Storage(#[from] sqlx::Error),
}

/// The longest pause between two reads of a tenant whose consent is propagating.
const MAX_PROPAGATION_WAIT: Duration = Duration::from_secs(8);

/// Whether Graph's answer right after consent is the consent still propagating: the app unknown
/// to the tenant's token endpoint for now (AADSTS7000229, AADSTS700016: `unauthorized_client`),
/// or Graph refusing a token issued before the permissions arrived.
fn still_propagating(error: &GraphError) -> bool {
    match error {
        GraphError::Token { error, .. } => error == "unauthorized_client",
        GraphError::Api { status, .. } => matches!(status, 401 | 403),
        _ => false,
    }
}

/// How long the administrator has to sign in after consenting.
const SIGN_IN_VALIDITY: chrono::Duration = chrono::Duration::minutes(15);

/// Where a redirect leaves the onboarding.
pub enum Step {
    /// Consent was granted: the administrator signs in next, at `url`, to prove the tenant.
    SignIn { tenant: TenantRow, url: String },
    /// The tenant after the redirect: active, or refused with its reason.
    Finished(TenantRow),
}

fn already_connected() -> ConsentRefusal {
    ConsentRefusal {
        failure: tenants::ConsentFailure::AlreadyConnected,
        reason: "this Microsoft 365 tenant is already connected to Picket through another tenant; it must be offboarded there first".into(),
    }
}

pub struct Onboarding {
    pub pool: PgPool,
    pub graph: Arc<GraphClient>,
    /// Says which permissions a tenant must grant.
    pub catalogue: Arc<Catalogue>,
    pub sign_in: AdminSignIn,
    pub events: EventFactory,
    pub settings: ScannerSettings,
    /// Seals forwarded consent links for the notifier.
    pub consent_links: Keyring,
}

impl Onboarding {
    /// Microsoft's v2.0 admin-consent URL for the operator's app, carrying `state`.
    pub fn consent_url(&self, tenant: &TenantRow, state: &str) -> String {
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
            url_encode(state),
        )
    }

    /// Handles one of Microsoft's redirects: admin consent (answered with the sign-in that must
    /// follow) or the administrator's sign-in (which proves the tenant and activates it). A refusal
    /// is recorded on the tenant, not returned as an error.
    pub async fn redirect(&self, response: &ConsentResponse) -> Result<Step, CompleteError> {
        if response.code.is_empty()
            && let Some(tenant) = store::find_by_consent_state(&self.pool, &response.state).await?
        {
            return self.consented(tenant, response).await;
        }
        self.signed_in(response).await.map(Step::Finished)
    }

    /// The tenant a redirect's `state` belongs to, whichever of the two redirects it is.
    pub async fn tenant_of_state(&self, state: &str) -> Result<Option<TenantRow>, sqlx::Error> {
        if let Some(tenant) = store::find_by_consent_state(&self.pool, state).await? {
            return Ok(Some(tenant));
        }
        Ok(store::find_by_sign_in_state(&self.pool, state)
            .await?
            .map(|waiting| waiting.tenant))
    }

    async fn refuse(
        &self,
        tenant_id: uuid::Uuid,
        refusal: ConsentRefusal,
        now: chrono::DateTime<Utc>,
    ) -> Result<TenantRow, CompleteError> {
        let state = if refusal.is_denial() {
            "consent_denied"
        } else {
            "consent_failed"
        };
        tracing::info!(%tenant_id, reason = %refusal.reason, "consent did not complete");
        Ok(store::mark_refused(
            &self.pool,
            tenant_id,
            state,
            refusal.failure.as_str_name(),
            &refusal.reason,
            now,
        )
        .await?)
    }

    /// The admin-consent redirect: if consent was granted, the administrator signs in next.
    async fn consented(
        &self,
        tenant: TenantRow,
        response: &ConsentResponse,
    ) -> Result<Step, CompleteError> {
        if tenant.is_active() {
            // Microsoft redirects again when an admin consents twice.
            return Ok(Step::Finished(tenant));
        }
        let now = Utc::now();
        let checked = if tenant.consent_expires_at < now {
            Err(ConsentRefusal {
                failure: tenants::ConsentFailure::InvalidState,
                reason: "the consent link expired; request a new one".into(),
            })
        } else {
            consent::check_response(response, &tenant.microsoft_tenant)
        };
        if let Err(refusal) = checked {
            return Ok(Step::Finished(
                self.refuse(tenant.tenant_id, refusal, now).await?,
            ));
        }
        let pending = PendingSignIn::random();
        let expires_at = now + SIGN_IN_VALIDITY;
        match store::begin_sign_in(&self.pool, tenant.tenant_id, &pending, expires_at, now).await? {
            Some(waiting) => Ok(Step::SignIn {
                tenant: waiting,
                url: self.sign_in.authorize_url(&pending),
            }),
            // Activated meanwhile, through another consent.
            None => Ok(Step::Finished(
                store::get_tenant(&self.pool, tenant.tenant_id)
                    .await?
                    .unwrap_or(tenant),
            )),
        }
    }

    /// The sign-in redirect: the ID token proves the tenant; then a token and `/organization`.
    async fn signed_in(&self, response: &ConsentResponse) -> Result<TenantRow, CompleteError> {
        let waiting = store::find_by_sign_in_state(&self.pool, &response.state)
            .await?
            .ok_or(CompleteError::UnknownState)?;
        let tenant = waiting.tenant.clone();
        let now = Utc::now();
        let administrator = match self.prove(&waiting, response, now).await {
            Ok(administrator) => administrator,
            Err(refusal) => return self.refuse(tenant.tenant_id, refusal, now).await,
        };
        let microsoft_tenant_id = administrator.microsoft_tenant_id;
        if let Err(refusal) =
            consent::check_proven_tenant(&microsoft_tenant_id, &tenant.microsoft_tenant)
        {
            return self.refuse(tenant.tenant_id, refusal, now).await;
        }
        if store::held_elsewhere(&self.pool, &microsoft_tenant_id, tenant.tenant_id).await? {
            return self
                .refuse(tenant.tenant_id, already_connected(), now)
                .await;
        }
        match self.verify(&tenant, &microsoft_tenant_id).await {
            Err(refusal) => self.refuse(tenant.tenant_id, refusal, now).await,
            Ok(organization) => match self.activate(&tenant, &organization, now).await {
                Err(CompleteError::Storage(error)) if store::is_second_binding(&error) => {
                    self.refuse(tenant.tenant_id, already_connected(), now)
                        .await
                }
                activated => activated,
            },
        }
    }

    async fn prove(
        &self,
        waiting: &store::WaitingSignIn,
        response: &ConsentResponse,
        now: chrono::DateTime<Utc>,
    ) -> Result<ProvenAdministrator, ConsentRefusal> {
        let failed = |reason: String| ConsentRefusal {
            failure: tenants::ConsentFailure::SignInFailed,
            reason,
        };
        if !response.error.is_empty() {
            return Err(failed(format!(
                "the administrator did not sign in: {}: {}",
                response.error, response.error_description
            )));
        }
        if waiting.expires_at.is_none_or(|expires_at| expires_at < now) {
            return Err(ConsentRefusal {
                failure: tenants::ConsentFailure::InvalidState,
                reason: "the sign-in after consent expired; request a new consent link".into(),
            });
        }
        if response.code.is_empty() {
            return Err(failed("the sign-in redirect carries no code".into()));
        }
        self.sign_in
            .prove(&response.code, &waiting.verifier, &waiting.nonce)
            .await
    }

    async fn activate(
        &self,
        tenant: &TenantRow,
        organization: &consent::Organization,
        now: chrono::DateTime<Utc>,
    ) -> Result<TenantRow, CompleteError> {
        // What the tenant granted; a Graph token that cannot be had now leaves it to the first
        // scan, which follows at once.
        let missing = match access::granted(
            &self.graph,
            &self.catalogue,
            &organization.id,
            &[Api::Graph],
        )
        .await
        {
            Ok(granted) => access::missing(&self.catalogue, &granted),
            Err(error) => {
                tracing::warn!(microsoft_tenant_id = %organization.id, %error, "the permissions granted could not be read");
                Vec::new()
            }
        };
        if !missing.is_empty() {
            tracing::warn!(microsoft_tenant_id = %organization.id, missing = ?missing, "the tenant has not granted every permission Picket's app needs");
        }
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
            &store::Connected {
                microsoft_tenant_id: &organization.id,
                primary_domain: &organization.default_domain,
                missing_permissions: &missing,
            },
            &first_runs,
            now,
        )
        .await?;
        let Some(active) = activated else {
            return Ok(store::get_tenant(&self.pool, tenant.tenant_id)
                .await?
                .unwrap_or_else(|| tenant.clone()));
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

    async fn verify(
        &self,
        tenant: &TenantRow,
        microsoft_tenant_id: &str,
    ) -> Result<consent::Organization, ConsentRefusal> {
        let deadline = Instant::now() + self.settings.consent_propagation_timeout;
        let mut wait = Duration::from_millis(500);
        let read = loop {
            let read = self
                .graph
                .get(
                    microsoft_tenant_id,
                    "/v1.0/organization?$select=id,displayName,verifiedDomains",
                    &Meter::default(),
                )
                .await;
            match &read {
                Err(error) if still_propagating(error) && Instant::now() + wait < deadline => {
                    tracing::info!(microsoft_tenant_id, %error, ?wait, "consent still propagating: reading the organization again");
                    // A token issued meanwhile lacks the permissions for its whole life.
                    self.graph.forget_tenant(microsoft_tenant_id);
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(MAX_PROPAGATION_WAIT);
                }
                _ => break read,
            }
        };
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
        consent::check_organization(&organization, microsoft_tenant_id, &tenant.microsoft_tenant)?;
        Ok(organization)
    }
}
