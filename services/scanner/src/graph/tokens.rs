//! OAuth2 client credentials per tenant, cached per (tenant, resource) and replaced before expiry.
//! One fetch at a time per key, so a scan's parallel requests share one token request. A token
//! Graph answers 403 is replaced, at most once per `forbidden_renewal` for its key: one issued
//! while consent was still propagating carries no permissions for its whole hour, while a
//! permission really missing then costs a token a minute, not one per request. The permissions a
//! token carries (its `roles` claim) are read from it for the scanner to skip what it may not do.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::graph::GraphError;

#[derive(Clone)]
struct CachedToken {
    access_token: SecretString,
    expires_at: Instant,
    /// The application permissions the token carries; `None` when it does not say.
    roles: Option<BTreeSet<String>>,
}

/// The `roles` claim of a JWT access token, read without verifying it: Microsoft signs it for the
/// API, and the scanner only uses it to know what the API will refuse. `None` when the token is
/// not a JWT (Microsoft may change its format); an empty set when it carries no roles.
fn token_roles(access_token: &str) -> Option<BTreeSet<String>> {
    use base64::Engine;
    let payload = access_token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let claims = claims.as_object()?;
    Some(
        claims
            .get("roles")
            .and_then(serde_json::Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|role| role.as_str().map(str::to_owned))
            .collect(),
    )
}

/// A key's token, and when one was last dropped for a 403.
#[derive(Default)]
struct SlotState {
    token: Option<CachedToken>,
    dropped_forbidden_at: Option<Instant>,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: u64,
}

#[derive(Deserialize)]
struct TokenErrorResponse {
    error: String,
    #[serde(default)]
    error_description: String,
}

type Slot = Arc<Mutex<SlotState>>;

pub struct TokenCache {
    http: reqwest::Client,
    login_base_url: String,
    client_id: String,
    client_secret: SecretString,
    refresh_margin: Duration,
    forbidden_renewal: Duration,
    slots: std::sync::Mutex<HashMap<(String, String), Slot>>,
}

impl TokenCache {
    pub fn new(
        http: reqwest::Client,
        login_base_url: String,
        client_id: String,
        client_secret: SecretString,
        refresh_margin: Duration,
        forbidden_renewal: Duration,
    ) -> TokenCache {
        TokenCache {
            http,
            login_base_url,
            client_id,
            client_secret,
            refresh_margin,
            forbidden_renewal,
            slots: Default::default(),
        }
    }

    fn slot(&self, tenant_id: &str, scope: &str) -> Slot {
        let mut slots = self
            .slots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        slots
            .entry((tenant_id.to_owned(), scope.to_owned()))
            .or_default()
            .clone()
    }

    /// A token for `scope` in `tenant_id`, fetched when missing or about to expire.
    pub async fn token(&self, tenant_id: &str, scope: &str) -> Result<SecretString, GraphError> {
        Ok(self.current(tenant_id, scope).await?.access_token)
    }

    async fn current(&self, tenant_id: &str, scope: &str) -> Result<CachedToken, GraphError> {
        let slot = self.slot(tenant_id, scope);
        let mut state = slot.lock().await;
        if let Some(token) = state.token.as_ref()
            && token.expires_at > Instant::now() + self.refresh_margin
        {
            return Ok(token.clone());
        }
        let fresh = self.fetch(tenant_id, scope).await?;
        state.token = Some(fresh.clone());
        Ok(fresh)
    }

    /// The permissions the tenant's token for `scope` carries; when `complete` says they fall
    /// short, the token is replaced (as after a 403, at most once per `forbidden_renewal`) in case
    /// it was issued before consent propagated, and the new one's are returned.
    pub async fn roles(
        &self,
        tenant_id: &str,
        scope: &str,
        complete: impl Fn(&BTreeSet<String>) -> bool,
    ) -> Result<Option<BTreeSet<String>>, GraphError> {
        let token = self.current(tenant_id, scope).await?;
        let Some(roles) = token.roles else {
            return Ok(None);
        };
        if complete(&roles)
            || !self
                .renew_after_forbidden(tenant_id, scope, token.access_token.expose_secret())
                .await
        {
            return Ok(Some(roles));
        }
        Ok(self.current(tenant_id, scope).await?.roles)
    }

    /// Forgets every token of `tenant_id` (its tokens are dropped when it is offboarded); returns
    /// whether it held any.
    pub fn forget(&self, tenant_id: &str) -> bool {
        let mut slots = self
            .slots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let before = slots.len();
        slots.retain(|(tenant, _), _| tenant != tenant_id);
        slots.len() != before
    }

    /// Forgets the token, after Graph refused it.
    pub async fn invalidate(&self, tenant_id: &str, scope: &str) {
        self.slot(tenant_id, scope).lock().await.token = None;
    }

    /// After Graph answered `used` with 403: whether to try again with another token. The token
    /// is dropped unless one was dropped for a 403 less than `forbidden_renewal` ago; when
    /// another request replaced `used` meanwhile, the new one is tried.
    pub async fn renew_after_forbidden(&self, tenant_id: &str, scope: &str, used: &str) -> bool {
        let slot = self.slot(tenant_id, scope);
        let mut state = slot.lock().await;
        let replaced = state
            .token
            .as_ref()
            .is_some_and(|token| token.access_token.expose_secret() != used);
        if replaced {
            return true;
        }
        let now = Instant::now();
        if state
            .dropped_forbidden_at
            .is_some_and(|dropped| now < dropped + self.forbidden_renewal)
        {
            return false;
        }
        state.token = None;
        state.dropped_forbidden_at = Some(now);
        true
    }

    async fn fetch(&self, tenant_id: &str, scope: &str) -> Result<CachedToken, GraphError> {
        let url = format!(
            "{}/{tenant_id}/oauth2/v2.0/token",
            self.login_base_url.trim_end_matches('/')
        );
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.client_secret.expose_secret()),
            ("scope", scope),
        ];
        let requested_at = Instant::now();
        let response = self
            .http
            .post(url)
            .form(&form)
            .send()
            .await
            .map_err(GraphError::transport)?;
        let status = response.status();
        let body = response.bytes().await.map_err(GraphError::transport)?;
        if !status.is_success() {
            let refused: TokenErrorResponse =
                serde_json::from_slice(&body).unwrap_or(TokenErrorResponse {
                    error: format!("http_{}", status.as_u16()),
                    error_description: String::from_utf8_lossy(&body).chars().take(200).collect(),
                });
            return Err(GraphError::Token {
                error: refused.error,
                description: refused.error_description,
            });
        }
        let token: TokenResponse = serde_json::from_slice(&body)
            .map_err(|error| GraphError::Malformed(format!("token response: {error}")))?;
        Ok(CachedToken {
            roles: token_roles(&token.access_token),
            access_token: SecretString::from(token.access_token),
            expires_at: requested_at + Duration::from_secs(token.expires_in),
        })
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;

    use super::*;

    fn jwt(claims: &serde_json::Value) -> String {
        let encode = |value: &serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
        };
        format!(
            "{}.{}.c2lnbmF0dXJl",
            encode(&serde_json::json!({"typ": "JWT", "alg": "RS256"})),
            encode(claims)
        )
    }

    #[test]
    fn the_roles_claim_is_read_and_its_absence_means_none_granted() {
        let with = jwt(&serde_json::json!({"roles": ["Policy.Read.All", "User.Read.All"]}));
        assert_eq!(
            token_roles(&with),
            Some(BTreeSet::from([
                "Policy.Read.All".to_owned(),
                "User.Read.All".to_owned()
            ]))
        );
        let without = jwt(&serde_json::json!({"aud": "https://graph.microsoft.com"}));
        assert_eq!(token_roles(&without), Some(BTreeSet::new()));
        assert_eq!(token_roles("opaque-token"), None);
    }
}
