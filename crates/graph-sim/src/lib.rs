//! graph-sim: the Microsoft Entra token endpoint, the Microsoft Graph endpoints Picket reads and
//! writes, and Defender for Endpoint's machine isolation, for N synthetic tenants generated from a
//! seed, over real HTTP. Each tenant has a [`Profile`]: licences, misconfigurations and suspicious
//! activity; writes change its state so a re-scan sees a fix. Tests script throttling (429 with
//! `Retry-After`) and faults per tenant, expire tokens, withdraw consent, and read a log of every
//! request. The JSON follows Microsoft's documented shapes, so the same client talks to real Graph.
//! It also plays Entra ID's interactive side: admin consent, the OpenID Connect sign-in of an
//! administrator with an RS256 ID token, and the keys that verify it (see `signin`).

mod batch;
mod delta;
mod mailbox;
mod model;
mod permissions;
mod profile;
mod routes;
mod sensitive;
mod signin;
mod state;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub use model::{
    GLOBAL_ADMINISTRATOR, MIN_USERS, PRIVILEGED_AUTHENTICATION_ADMINISTRATOR,
    PRIVILEGED_ROLE_ADMINISTRATOR, Tenant,
};
pub use profile::{Activity, Licence, Profile, Weakness};
pub use routes::{DEFENDER_SCOPE, GRAPH_SCOPE};
use serde_json::Value;
pub use state::{Fault, RecordedRequest, SimConfig};
use state::{Inner, SimState};

pub struct GraphSim {
    address: SocketAddr,
    state: Arc<SimState>,
    server: tokio::task::JoinHandle<()>,
}

impl GraphSim {
    /// Generates the tenants and serves them on `address` (port 0 picks a free one).
    pub async fn start(config: SimConfig, address: SocketAddr) -> std::io::Result<GraphSim> {
        let listener = tokio::net::TcpListener::bind(address).await?;
        let address = listener.local_addr()?;
        let mut inner = Inner::default();
        inner
            .signing_keys
            .push(signin::SigningKey::generate().map_err(std::io::Error::other)?);
        for index in 0..config.tenants {
            let tenant = model::generate_tenant(
                config.seed,
                index,
                config.users_per_tenant,
                None,
                &config.client_id,
            );
            inner.tenants.insert(tenant.tenant_id.clone(), tenant);
        }
        let state = Arc::new(SimState {
            config,
            base_url: format!("http://{address}"),
            inner: Mutex::new(inner),
        });
        let router = routes::router(state.clone());
        let server = tokio::spawn(async move {
            let _ignored = axum::serve(listener, router).await;
        });
        Ok(GraphSim {
            address,
            state,
            server,
        })
    }

    /// Base URL of both the login and the Graph endpoints.
    pub fn base_url(&self) -> String {
        self.state.base_url.clone()
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn config(&self) -> &SimConfig {
        &self.state.config
    }

    /// Tenant ids, in generation order.
    pub fn tenant_ids(&self) -> Vec<String> {
        let mut tenants: Vec<(String, String)> = self
            .state
            .lock()
            .tenants
            .values()
            .map(|tenant| (tenant.display_name.clone(), tenant.tenant_id.clone()))
            .collect();
        tenants.sort();
        tenants
            .into_iter()
            .map(|(_, tenant_id)| tenant_id)
            .collect()
    }

    pub fn tenant(&self, tenant_id: &str) -> Option<Tenant> {
        self.state.lock().tenants.get(tenant_id).cloned()
    }

    /// Regenerates a tenant with `profile`, keeping its id, consent and tokens.
    pub fn reset_tenant(&self, tenant_id: &str, profile: Profile) {
        self.regenerate(tenant_id, Some(profile), self.state.config.users_per_tenant);
    }

    /// Builds `tenant_id` again with `users` users and the profile its seed drew, as a larger
    /// customer among small ones.
    pub fn resize_tenant(&self, tenant_id: &str, users: usize) {
        self.regenerate(tenant_id, None, users);
    }

    fn regenerate(&self, tenant_id: &str, profile: Option<Profile>, users: usize) {
        let mut inner = self.state.lock();
        let Some(tenant) = inner.tenants.get_mut(tenant_id) else {
            return;
        };
        let consented = tenant.consented;
        let granted = std::mem::take(&mut tenant.granted);
        *tenant = model::generate_tenant(
            self.state.config.seed,
            tenant.index,
            users,
            profile,
            &self.state.config.client_id,
        );
        tenant.consented = consented;
        tenant.granted = granted;
    }

    /// The application permissions an administrator granted the operator's app in `tenant_id`,
    /// as when consenting to an app registration that asks for these only; tokens issued from
    /// now on carry them.
    pub fn grant_permissions(&self, tenant_id: &str, permissions: &[&str]) {
        if let Some(tenant) = self.state.lock().tenants.get_mut(tenant_id) {
            tenant.granted = permissions.iter().map(|name| (*name).to_owned()).collect();
        }
    }

    /// Forgets the delta tokens `/users/delta` issued for `tenant_id`, as when they expire: a
    /// round from one is answered 410 Gone.
    pub fn expire_delta_tokens(&self, tenant_id: &str) {
        if let Some(tracking) = self.state.lock().deltas.get_mut(tenant_id) {
            tracking.expire();
        }
    }

    /// The JSON at a Graph path (without `/v1.0`) of a tenant: a collection as an array.
    pub fn resource(&self, tenant_id: &str, path: &str) -> Option<Value> {
        let inner = self.state.lock();
        inner.tenants.get(tenant_id)?.resources.get(path).cloned()
    }

    /// Replaces the JSON at a Graph path of a tenant.
    pub fn set_resource(&self, tenant_id: &str, path: &str, value: Value) {
        if let Some(tenant) = self.state.lock().tenants.get_mut(tenant_id) {
            tenant.resources.insert(path.to_owned(), value);
        }
    }

    /// Requests that reached a tenant while a `Retry-After` it had been sent was still running
    /// (other than requests of the same JSON batch, which arrived with the throttled one).
    pub fn throttle_violations(&self) -> Vec<RecordedRequest> {
        let inner = self.state.lock();
        let mut windows: std::collections::HashMap<&str, (Instant, Option<u64>)> =
            Default::default();
        let mut violations = Vec::new();
        for request in &inner.requests {
            if windows
                .get(request.tenant_id.as_str())
                .is_some_and(|(until, batch)| {
                    request.at < *until && (request.batch.is_none() || request.batch != *batch)
                })
            {
                violations.push(request.clone());
            }
            if let Some(seconds) = request.retry_after {
                windows.insert(
                    &request.tenant_id,
                    (
                        request.at + std::time::Duration::from_secs_f64(seconds),
                        request.batch,
                    ),
                );
            }
        }
        violations
    }

    /// JSON batches answered so far.
    pub fn batches(&self) -> u64 {
        self.state.lock().batches
    }

    /// The next requests of `tenant_id` get these faults, one each, in order.
    pub fn inject(&self, tenant_id: &str, faults: &[Fault]) {
        self.state
            .lock()
            .faults
            .entry(tenant_id.to_owned())
            .or_default()
            .extend(faults.iter().copied());
    }

    /// After the next admin consent to `tenant_id`, its permissions take `delay` to propagate, as
    /// Entra's do: tokens issued meanwhile carry no roles, and Graph answers them 403
    /// Authorization_RequestDenied for as long as they live.
    pub fn delay_permissions(&self, tenant_id: &str, delay: std::time::Duration) {
        if let Some(tenant) = self.state.lock().tenants.get_mut(tenant_id) {
            tenant.permissions_propagate_at = Some(Instant::now() + delay);
        }
    }

    /// Keeps the operator's app from the mailbox of `user_id`, as an Exchange application access
    /// policy does: its mail folders and rules answer 403 ErrorAccessDenied.
    pub fn deny_mailbox(&self, tenant_id: &str, user_id: &str) {
        if let Some(tenant) = self.state.lock().tenants.get_mut(tenant_id) {
            tenant.denied_mailboxes.insert(user_id.to_owned());
        }
    }

    /// Withdraws (or grants) admin consent: without it the token endpoint refuses the tenant.
    pub fn set_consent(&self, tenant_id: &str, consented: bool) {
        if let Some(tenant) = self.state.lock().tenants.get_mut(tenant_id) {
            tenant.consented = consented;
        }
    }

    /// Makes every token issued so far expired.
    pub fn expire_tokens(&self) {
        let now = Instant::now();
        for token in self.state.lock().tokens.values_mut() {
            token.expires_at = now;
        }
    }

    /// How many tokens the token endpoint issued for `tenant_id`.
    pub fn tokens_issued(&self, tenant_id: &str) -> usize {
        self.state
            .lock()
            .tokens_issued
            .get(tenant_id)
            .copied()
            .unwrap_or_default()
    }

    /// The issuer of `tenant_id`'s v2.0 tokens (`iss`).
    pub fn issuer(&self, tenant_id: &str) -> String {
        signin::issuer(&self.state.base_url, tenant_id)
    }

    /// Where the signing keys are published (the same for every tenant, as in Entra).
    pub fn jwks_uri(&self) -> String {
        format!("{}/common/discovery/v2.0/keys", self.state.base_url)
    }

    /// Publishes a new signing key and signs with it from now on; the old one stays published.
    pub fn rotate_signing_key(&self) -> anyhow::Result<()> {
        let key = signin::SigningKey::generate()?;
        self.state.lock().signing_keys.push(key);
        Ok(())
    }

    /// The user at the device-code verification page enters `user_code` and signs in; `claims`
    /// are what their account adds to the access token (app roles, partner). False if unknown.
    pub fn approve_device_code(&self, user_code: &str, claims: Value) -> bool {
        signin::approve_device_code(&self.state, user_code, claims)
    }

    /// Signs `claims` with the current key, as Entra signs the tokens it issues for an API.
    pub fn sign(&self, claims: &Value) -> String {
        let inner = self.state.lock();
        inner
            .signing_keys
            .last()
            .map(|key| key.sign(claims))
            .unwrap_or_default()
    }

    /// The user principal name of a user of `tenant_id` holding `role` (a role template id), or
    /// holding no directory role when `role` is `None`: who signs in at the interactive endpoints.
    pub fn user_principal_name(&self, tenant_id: &str, role: Option<&str>) -> Option<String> {
        let inner = self.state.lock();
        let tenant = inner.tenants.get(tenant_id)?;
        let assignments = tenant
            .resources
            .get("/roleManagement/directory/roleAssignments")?
            .as_array()?;
        let roles_of = |user_id: &str| -> Vec<&str> {
            assignments
                .iter()
                .filter(|assignment| assignment["principalId"].as_str() == Some(user_id))
                .filter_map(|assignment| assignment["roleDefinitionId"].as_str())
                .collect()
        };
        tenant
            .resources
            .get("/users")?
            .as_array()?
            .iter()
            .find(|user| {
                let roles = roles_of(user["id"].as_str().unwrap_or_default());
                match role {
                    Some(role) => roles.contains(&role),
                    None => roles.is_empty(),
                }
            })
            .and_then(|user| user["userPrincipalName"].as_str())
            .map(str::to_owned)
    }

    /// Every Graph request the simulator received (token requests excluded).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.lock().requests.clone()
    }
}

impl Drop for GraphSim {
    fn drop(&mut self) {
        self.server.abort();
    }
}
