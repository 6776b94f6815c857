//! Proof of the consenting tenant. Microsoft's admin-consent redirect names a `tenant`, but anyone
//! can type that parameter; what binds a Microsoft tenant is the OpenID Connect sign-in of an
//! administrator right after consent (authorization code with PKCE, RFC 7636): the ID token the
//! token endpoint returns for the code, verified against Microsoft's published keys, carries the
//! tenant (`tid`), the administrator's directory roles (`wids`) and our `nonce`.
//!
//! The `wids` claim is emitted when the app registration sets `groupMembershipClaims` to
//! `DirectoryRole` or `All` (deploy/README.md); only Global Administrators and Privileged Role
//! Administrators can grant tenant-wide consent to application permissions, so only they prove a
//! binding.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use picket_platform::oidc::{KeySet, Verifier};
use picket_proto::tenants::v1 as tenants;
use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::graph::url_encode;
use crate::settings::ScannerSettings;
use crate::tenants::consent::ConsentRefusal;

/// Directory roles that can grant admin consent to application permissions (role template ids).
pub const CONSENTING_ROLES: [&str; 2] = [
    "62e90394-69f5-4237-9190-012177145e10", // Global Administrator
    "e8611ab8-c189-46e8-94e1-60213ab1f814", // Privileged Role Administrator
];

/// A sign-in Picket started: the `state` the redirect brings back, the PKCE verifier and the nonce.
#[derive(Debug, Clone)]
pub struct PendingSignIn {
    pub state: String,
    pub verifier: String,
    pub nonce: String,
}

impl PendingSignIn {
    /// A sign-in with fresh random values.
    pub fn random() -> PendingSignIn {
        let random = || URL_SAFE_NO_PAD.encode(rand::rng().random::<[u8; 32]>());
        PendingSignIn {
            state: random(),
            verifier: random(),
            nonce: random(),
        }
    }

    fn challenge(&self) -> String {
        URL_SAFE_NO_PAD.encode(Sha256::digest(self.verifier.as_bytes()))
    }
}

/// What the ID token proved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvenAdministrator {
    pub microsoft_tenant_id: String,
    /// The administrator's user principal name, for the record.
    pub user: String,
}

#[derive(Debug, Deserialize)]
struct IdTokenClaims {
    tid: String,
    #[serde(default)]
    nonce: String,
    #[serde(default)]
    wids: Vec<String>,
    #[serde(default)]
    preferred_username: String,
}

#[derive(Debug, Deserialize)]
struct TokenResponse {
    id_token: Option<String>,
}

fn refusal(reason: impl Into<String>) -> ConsentRefusal {
    ConsentRefusal {
        failure: tenants::ConsentFailure::SignInFailed,
        reason: reason.into(),
    }
}

/// The `tid` a token claims, read before its signature is checked: it only chooses which issuer
/// the verification then demands (Microsoft's multi-tenant validation: `iss` must be the issuer of
/// the token's own tenant).
fn claimed_tenant(id_token: &str) -> Option<String> {
    let payload = id_token.split('.').nth(1)?;
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    claims["tid"].as_str().map(str::to_owned)
}

/// The sign-in endpoints of the operator's app and Microsoft's published keys.
pub struct AdminSignIn {
    http: reqwest::Client,
    login_base_url: String,
    client_id: String,
    client_secret: SecretString,
    redirect_uri: String,
    keys: Arc<KeySet>,
}

impl AdminSignIn {
    pub fn new(http: reqwest::Client, settings: &ScannerSettings) -> AdminSignIn {
        let login_base_url = settings.login_base_url.trim_end_matches('/').to_owned();
        // The ID token comes straight from Microsoft's token endpoint, never from the browser,
        // so a key id not held yet is a rotation: fetch at once.
        let keys = Arc::new(KeySet::new(
            http.clone(),
            format!("{login_base_url}/common/discovery/v2.0/keys"),
            std::time::Duration::ZERO,
        ));
        AdminSignIn {
            http,
            login_base_url,
            client_id: settings.client_id.clone(),
            client_secret: settings.client_secret.clone(),
            redirect_uri: settings.consent_redirect_uri.clone(),
            keys,
        }
    }

    /// Where the administrator signs in after consenting (any work or school account: the token
    /// says which tenant it belongs to).
    pub fn authorize_url(&self, pending: &PendingSignIn) -> String {
        format!(
            "{}/organizations/oauth2/v2.0/authorize?client_id={}&response_type=code&response_mode=query&scope={}&redirect_uri={}&state={}&nonce={}&code_challenge={}&code_challenge_method=S256",
            self.login_base_url,
            url_encode(&self.client_id),
            url_encode("openid profile"),
            url_encode(&self.redirect_uri),
            url_encode(&pending.state),
            url_encode(&pending.nonce),
            url_encode(&pending.challenge()),
        )
    }

    /// Redeems the code for an ID token and verifies it: Microsoft's signature, our app as
    /// audience, the issuer of the tenant it names, our nonce, and a role that can grant consent.
    pub async fn prove(
        &self,
        code: &str,
        verifier: &str,
        nonce: &str,
    ) -> Result<ProvenAdministrator, ConsentRefusal> {
        let id_token = self.redeem(code, verifier).await?;
        let tenant = claimed_tenant(&id_token)
            .filter(|tenant| uuid::Uuid::parse_str(tenant).is_ok())
            .ok_or_else(|| refusal("the ID token names no tenant"))?;
        let issuer = format!("{}/{tenant}/v2.0", self.login_base_url);
        let claims: IdTokenClaims = Verifier::new(self.keys.clone(), &issuer, &self.client_id)
            .verify(&id_token)
            .await
            .map_err(|error| refusal(format!("the ID token does not verify: {error}")))?;
        if claims.nonce.is_empty() || claims.nonce != nonce {
            return Err(refusal("the ID token does not carry this sign-in's nonce"));
        }
        let can_consent = claims
            .wids
            .iter()
            .any(|role| CONSENTING_ROLES.contains(&role.as_str()));
        if !can_consent {
            return Err(refusal(format!(
                "{} is not a Global Administrator or Privileged Role Administrator of the tenant",
                claims.preferred_username
            )));
        }
        Ok(ProvenAdministrator {
            microsoft_tenant_id: claims.tid,
            user: claims.preferred_username,
        })
    }

    async fn redeem(&self, code: &str, verifier: &str) -> Result<String, ConsentRefusal> {
        let form = [
            ("grant_type", "authorization_code"),
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.client_secret.expose_secret()),
            ("code", code),
            ("redirect_uri", self.redirect_uri.as_str()),
            ("code_verifier", verifier),
            ("scope", "openid profile"),
        ];
        let response = self
            .http
            .post(format!(
                "{}/organizations/oauth2/v2.0/token",
                self.login_base_url
            ))
            .form(&form)
            .send()
            .await
            .map_err(|error| refusal(format!("the token endpoint did not answer: {error}")))?;
        let status = response.status();
        let body = response.bytes().await.unwrap_or_default();
        if !status.is_success() {
            let description: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            return Err(refusal(format!(
                "the sign-in code was refused: {}",
                description["error_description"]
                    .as_str()
                    .unwrap_or(status.as_str())
            )));
        }
        serde_json::from_slice::<TokenResponse>(&body)
            .ok()
            .and_then(|response| response.id_token)
            .ok_or_else(|| refusal("the token endpoint returned no ID token"))
    }
}
