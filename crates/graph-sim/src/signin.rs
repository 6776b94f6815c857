//! Entra ID's interactive endpoints, as documented for the Microsoft identity platform v2.0: admin
//! consent (`/{tenant}/v2.0/adminconsent`), the OpenID Connect authorization code flow with PKCE
//! (`/{tenant}/oauth2/v2.0/authorize`, then the token endpoint's `authorization_code` grant, which
//! returns an RS256 ID token), the device-code flow of command-line clients (RFC 8628:
//! `/{tenant}/oauth2/v2.0/devicecode`, then the `device_code` grant returning an RS256 access
//! token), the published signing keys (`/{tenant}/discovery/v2.0/keys`) and the discovery document.
//!
//! The simulator has no password page: `login_hint` (a parameter Entra accepts on both endpoints)
//! stands for the account that signs in. Without it, or for an account that does not exist, the
//! endpoint answers with a sign-in page and redirects nowhere, as Entra does until someone signs in.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand::Rng;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::model::{GLOBAL_ADMINISTRATOR, PRIVILEGED_ROLE_ADMINISTRATOR};
use crate::state::{Inner, SimState};

/// How long an authorization code can be redeemed (Entra: about 10 minutes).
const CODE_LIFETIME: Duration = Duration::from_secs(600);
/// Lifetime of an ID token (Entra: one hour).
const ID_TOKEN_LIFETIME: u64 = 3600;

/// One RSA signing key: its private half and its public JWK.
#[derive(Clone)]
pub struct SigningKey {
    pub key_id: String,
    encoding_key: EncodingKey,
    jwk: Value,
}

impl SigningKey {
    /// A fresh 2048-bit RSA key, as Entra signs with.
    pub fn generate() -> anyhow::Result<SigningKey> {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        use rsa::traits::PublicKeyParts;
        let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048)?;
        let der = private.to_pkcs1_der()?;
        let key_id = URL_SAFE_NO_PAD.encode(rand::rng().random::<[u8; 15]>());
        let jwk = json!({
            "kty": "RSA",
            "use": "sig",
            "kid": key_id,
            "x5t": key_id,
            "n": URL_SAFE_NO_PAD.encode(private.n().to_bytes_be()),
            "e": URL_SAFE_NO_PAD.encode(private.e().to_bytes_be()),
        });
        Ok(SigningKey {
            key_id,
            encoding_key: EncodingKey::from_rsa_der(der.as_bytes()),
            jwk,
        })
    }

    /// Signs `claims` as an RS256 JWT naming this key.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.key_id.clone());
        // Signing a JSON object with a valid RSA key does not fail.
        jsonwebtoken::encode(&header, claims, &self.encoding_key).unwrap_or_default()
    }
}

/// A code the authorize endpoint issued, waiting to be redeemed once.
#[derive(Debug, Clone)]
pub struct IssuedCode {
    client_id: String,
    redirect_uri: String,
    code_challenge: Option<String>,
    nonce: Option<String>,
    account: Account,
    issued_at: Instant,
}

/// Who signed in: a user of one simulated tenant, with its directory roles.
#[derive(Debug, Clone)]
struct Account {
    tenant_id: String,
    user_id: String,
    user_principal_name: String,
    display_name: String,
    /// Role template ids of the user's directory roles (the `wids` claim).
    roles: Vec<String>,
}

/// A device-code sign-in (RFC 8628) waiting for its user.
#[derive(Debug, Clone)]
pub struct DeviceCode {
    user_code: String,
    client_id: String,
    /// The API the token is for: the scope without `/.default`.
    resource: String,
    tenant_id: String,
    issued_at: Instant,
    /// The claims the user's sign-in adds (their app roles and the like), once approved.
    approved: Option<Value>,
}

pub fn router() -> Router<Arc<SimState>> {
    Router::new()
        .route("/{tenant}/oauth2/v2.0/devicecode", post(device_code))
        .route("/{tenant}/v2.0/adminconsent", get(admin_consent))
        .route("/{tenant}/oauth2/v2.0/authorize", get(authorize))
        .route("/{tenant}/discovery/v2.0/keys", get(keys))
        .route(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            get(discovery),
        )
}

/// The issuer of a tenant's v2.0 tokens.
pub fn issuer(base_url: &str, tenant_id: &str) -> String {
    format!("{base_url}/{tenant_id}/v2.0")
}

fn page(status: StatusCode, title: &str, detail: &str) -> Response {
    let body = format!(
        "<!doctype html><html><head><title>{title}</title></head><body><h1>{title}</h1><p>{detail}</p></body></html>"
    );
    (status, Html(body)).into_response()
}

fn sign_in_page() -> Response {
    page(
        StatusCode::OK,
        "Sign in to your account",
        "Enter your email, phone, or Skype. (graph-sim: pass login_hint.)",
    )
}

fn redirect(redirect_uri: &str, parameters: &[(&str, &str)]) -> Response {
    let Ok(mut location) = url::Url::parse(redirect_uri) else {
        return page(
            StatusCode::BAD_REQUEST,
            "Sorry, but we're having trouble signing you in.",
            "AADSTS90102: 'redirect_uri' value must be a valid absolute URI.",
        );
    };
    for (name, value) in parameters {
        location.query_pairs_mut().append_pair(name, value);
    }
    (
        StatusCode::FOUND,
        [(header::LOCATION, location.to_string())],
    )
        .into_response()
}

/// The account `login_hint` names, if it may sign in at the `authority` of the path (a tenant id,
/// one of its domains, `organizations` or `common`); otherwise the sign-in page's error.
fn account(inner: &Inner, authority: &str, login_hint: &str) -> Result<Account, String> {
    let found = inner.tenants.values().find_map(|tenant| {
        let users = tenant.resources.get("/users")?.as_array()?;
        let user = users.iter().find(|user| {
            user["userPrincipalName"]
                .as_str()
                .is_some_and(|upn| upn.eq_ignore_ascii_case(login_hint))
        })?;
        Some((tenant, user))
    });
    let Some((tenant, user)) = found else {
        return Err("AADSTS50034: The user account does not exist in the directory.".into());
    };
    let home = ["organizations", "common", &tenant.tenant_id, &tenant.domain]
        .iter()
        .any(|name| name.eq_ignore_ascii_case(authority));
    if !home {
        return Err(format!(
            "AADSTS50020: User account '{login_hint}' from identity provider does not exist in tenant '{authority}'."
        ));
    }
    let user_id = user["id"].as_str().unwrap_or_default().to_owned();
    let roles = tenant
        .resources
        .get("/roleManagement/directory/roleAssignments")
        .and_then(Value::as_array)
        .map(|assignments| {
            assignments
                .iter()
                .filter(|assignment| assignment["principalId"].as_str() == Some(&user_id))
                .filter_map(|assignment| assignment["roleDefinitionId"].as_str())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    Ok(Account {
        tenant_id: tenant.tenant_id.clone(),
        user_id,
        user_principal_name: login_hint.to_owned(),
        display_name: user["displayName"].as_str().unwrap_or_default().to_owned(),
        roles,
    })
}

fn unknown_client(state: &SimState, client_id: &str) -> Option<Response> {
    (client_id != state.config.client_id).then(|| {
        page(
            StatusCode::BAD_REQUEST,
            "Sorry, but we're having trouble signing you in.",
            &format!(
                "AADSTS700016: Application with identifier '{client_id}' was not found in the directory."
            ),
        )
    })
}

/// `GET /{tenant}/v2.0/adminconsent?client_id&scope&redirect_uri&state`: an administrator grants
/// the app's application permissions for the whole tenant.
async fn admin_consent(
    State(state): State<Arc<SimState>>,
    Path(authority): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let parameter = |name: &str| query.get(name).map(String::as_str).unwrap_or_default();
    if let Some(refusal) = unknown_client(&state, parameter("client_id")) {
        return refusal;
    }
    let login_hint = parameter("login_hint");
    if login_hint.is_empty() {
        return sign_in_page();
    }
    let mut inner = state.lock();
    let account = match account(&inner, &authority, login_hint) {
        Ok(account) => account,
        Err(error) => return page(StatusCode::OK, "Sign in to your account", &error),
    };
    let redirect_uri = parameter("redirect_uri");
    let can_consent = account
        .roles
        .iter()
        .any(|role| role == GLOBAL_ADMINISTRATOR || role == PRIVILEGED_ROLE_ADMINISTRATOR);
    if !can_consent {
        return redirect(
            redirect_uri,
            &[
                ("error", "access_denied"),
                (
                    "error_description",
                    "AADSTS90094: The grant requires admin permission.",
                ),
                ("state", parameter("state")),
            ],
        );
    }
    if let Some(tenant) = inner.tenants.get_mut(&account.tenant_id) {
        tenant.consented = true;
    }
    redirect(
        redirect_uri,
        &[
            ("admin_consent", "True"),
            ("tenant", &account.tenant_id),
            ("state", parameter("state")),
            ("scope", parameter("scope")),
        ],
    )
}

/// `GET /{tenant}/oauth2/v2.0/authorize`: the authorization code flow, code sent to `redirect_uri`.
async fn authorize(
    State(state): State<Arc<SimState>>,
    Path(authority): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let parameter = |name: &str| query.get(name).map(String::as_str).unwrap_or_default();
    if let Some(refusal) = unknown_client(&state, parameter("client_id")) {
        return refusal;
    }
    let redirect_uri = parameter("redirect_uri");
    let client_state = parameter("state");
    let fail = |error: &str, description: &str| {
        redirect(
            redirect_uri,
            &[
                ("error", error),
                ("error_description", description),
                ("state", client_state),
            ],
        )
    };
    if parameter("response_type") != "code" {
        return fail(
            "unsupported_response_type",
            "AADSTS700054: response_type 'id_token' is not enabled for the application.",
        );
    }
    if !parameter("scope").split(' ').any(|scope| scope == "openid") {
        return fail(
            "invalid_request",
            "AADSTS900144: The request body must contain the following parameter: 'scope' with 'openid'.",
        );
    }
    let code_challenge = query.get("code_challenge").cloned();
    if code_challenge.is_some() && parameter("code_challenge_method") != "S256" {
        return fail(
            "invalid_request",
            "AADSTS501491: Invalid size of Code_Challenge parameter.",
        );
    }
    let login_hint = parameter("login_hint");
    if login_hint.is_empty() {
        return sign_in_page();
    }
    let mut inner = state.lock();
    let account = match account(&inner, &authority, login_hint) {
        Ok(account) => account,
        Err(error) => return page(StatusCode::OK, "Sign in to your account", &error),
    };
    let code = URL_SAFE_NO_PAD.encode(rand::rng().random::<[u8; 32]>());
    inner.codes.insert(
        code.clone(),
        IssuedCode {
            client_id: parameter("client_id").to_owned(),
            redirect_uri: redirect_uri.to_owned(),
            code_challenge,
            nonce: query.get("nonce").cloned(),
            account,
            issued_at: Instant::now(),
        },
    );
    redirect(redirect_uri, &[("code", &code), ("state", client_state)])
}

/// Why a code could not be redeemed: (error, AADSTS code, description).
pub type CodeRefusal = (&'static str, u32, &'static str);

/// The token endpoint's `authorization_code` grant: the code once, for the client and redirect URI
/// it was issued to, with the PKCE verifier of its challenge (RFC 7636 S256). Returns the response.
pub fn redeem_code(
    state: &SimState,
    code: &str,
    redirect_uri: &str,
    code_verifier: &str,
) -> Result<Value, CodeRefusal> {
    let mut inner = state.lock();
    let Some(issued) = inner.codes.remove(code) else {
        return Err((
            "invalid_grant",
            54005,
            "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing refresh token.",
        ));
    };
    if issued.issued_at.elapsed() > CODE_LIFETIME {
        return Err((
            "invalid_grant",
            70008,
            "The provided authorization code or refresh token has expired due to inactivity.",
        ));
    }
    if issued.client_id != state.config.client_id || issued.redirect_uri != redirect_uri {
        return Err((
            "invalid_grant",
            500112,
            "The reply address does not match the reply address provided when requesting the authorization code.",
        ));
    }
    if let Some(challenge) = &issued.code_challenge {
        let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(code_verifier.as_bytes()));
        if code_verifier.is_empty() || computed != *challenge {
            return Err((
                "invalid_grant",
                501481,
                "The Code_Verifier does not match the code_challenge supplied in the authorization request.",
            ));
        }
    }
    let account = issued.account;
    let now = chrono::Utc::now().timestamp();
    let mut claims = json!({
        "aud": state.config.client_id,
        "iss": issuer(&state.base_url, &account.tenant_id),
        "iat": now,
        "nbf": now,
        "exp": now + ID_TOKEN_LIFETIME as i64,
        "name": account.display_name,
        "oid": account.user_id,
        "preferred_username": account.user_principal_name,
        "sub": URL_SAFE_NO_PAD.encode(Sha256::digest(format!("{}:{}", account.user_id, state.config.client_id))),
        "tid": account.tenant_id,
        "ver": "2.0",
        "wids": account.roles,
    });
    if let Some(nonce) = issued.nonce {
        claims["nonce"] = Value::String(nonce);
    }
    let id_token = inner.signing_keys.last().map(|key| key.sign(&claims));
    Ok(json!({
        "token_type": "Bearer",
        "scope": "openid profile email",
        "expires_in": ID_TOKEN_LIFETIME,
        "ext_expires_in": ID_TOKEN_LIFETIME,
        "access_token": format!("sim.delegated.{}", URL_SAFE_NO_PAD.encode(rand::rng().random::<[u8; 16]>())),
        "id_token": id_token,
    }))
}

/// `POST /{tenant}/oauth2/v2.0/devicecode`: starts a device-code sign-in for a public client.
async fn device_code(
    State(state): State<Arc<SimState>>,
    Path(tenant): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or_default();
    if field("client_id") != state.config.client_id {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_client", "error_description": "AADSTS700016: Application not found in the directory."})),
        )
            .into_response();
    }
    let resource = field("scope")
        .split(' ')
        .find(|scope| scope.ends_with("/.default"))
        .map(|scope| scope.trim_end_matches("/.default").to_owned())
        .unwrap_or_default();
    let device_code = URL_SAFE_NO_PAD.encode(rand::rng().random::<[u8; 32]>());
    let user_code: String = (0..9)
        .map(|_| char::from(b'A' + rand::rng().random_range(0..26u8)))
        .collect();
    let verification_uri = format!("{}/common/oauth2/deviceauth", state.base_url);
    state.lock().device_codes.insert(
        device_code.clone(),
        DeviceCode {
            user_code: user_code.clone(),
            client_id: field("client_id").to_owned(),
            resource,
            tenant_id: tenant,
            issued_at: Instant::now(),
            approved: None,
        },
    );
    Json(json!({
        "device_code": device_code,
        "user_code": user_code,
        "verification_uri": verification_uri,
        "expires_in": CODE_LIFETIME.as_secs(),
        "interval": 1,
        "message": format!("To sign in, use a web browser to open the page {verification_uri} and enter the code {user_code} to authenticate."),
    }))
    .into_response()
}

/// The user signs in at the verification page and enters `user_code`; `claims` are what their
/// account adds to the token (app roles and the like). False for an unknown code.
pub fn approve_device_code(state: &SimState, user_code: &str, claims: Value) -> bool {
    let mut inner = state.lock();
    match inner
        .device_codes
        .values_mut()
        .find(|pending| pending.user_code == user_code)
    {
        Some(pending) => {
            pending.approved = Some(claims);
            true
        }
        None => false,
    }
}

/// The token endpoint's device-code grant: `authorization_pending` until the user approved, then
/// an RS256 access token for the requested API, once.
pub fn redeem_device_code(
    state: &SimState,
    client_id: &str,
    device_code: &str,
) -> Result<Value, CodeRefusal> {
    let mut inner = state.lock();
    let Some(pending) = inner.device_codes.get(device_code).cloned() else {
        return Err((
            "invalid_grant",
            70000,
            "The provided value for the 'device_code' is not valid.",
        ));
    };
    if pending.client_id != client_id {
        return Err((
            "invalid_client",
            700016,
            "Application not found in the directory.",
        ));
    }
    if pending.issued_at.elapsed() > CODE_LIFETIME {
        inner.device_codes.remove(device_code);
        return Err((
            "expired_token",
            70020,
            "The provided device code has expired.",
        ));
    }
    let Some(approved) = pending.approved else {
        return Err((
            "authorization_pending",
            70016,
            "OAuth 2.0 device flow error. Authorization is pending. Continue polling.",
        ));
    };
    inner.device_codes.remove(device_code);
    let now = chrono::Utc::now().timestamp();
    let mut claims = json!({
        "aud": pending.resource,
        "iss": issuer(&state.base_url, &pending.tenant_id),
        "iat": now,
        "nbf": now,
        "exp": now + ID_TOKEN_LIFETIME as i64,
        "tid": pending.tenant_id,
        "ver": "2.0",
    });
    if let (Some(claims), Some(extra)) = (claims.as_object_mut(), approved.as_object()) {
        claims.extend(extra.clone());
    }
    let access_token = inner
        .signing_keys
        .last()
        .map(|key| key.sign(&claims))
        .unwrap_or_default();
    Ok(json!({
        "token_type": "Bearer",
        "scope": format!("{}/.default", pending.resource),
        "expires_in": ID_TOKEN_LIFETIME,
        "ext_expires_in": ID_TOKEN_LIFETIME,
        "access_token": access_token,
    }))
}

/// `GET /{tenant}/discovery/v2.0/keys`: every key in rotation, the newest signing now.
async fn keys(State(state): State<Arc<SimState>>) -> Json<Value> {
    let inner = state.lock();
    let keys: Vec<Value> = inner
        .signing_keys
        .iter()
        .map(|key| {
            let mut jwk = key.jwk.clone();
            jwk["issuer"] = Value::String(issuer(&state.base_url, "{tenantid}"));
            jwk
        })
        .collect();
    Json(json!({ "keys": keys }))
}

/// `GET /{tenant}/v2.0/.well-known/openid-configuration`.
async fn discovery(State(state): State<Arc<SimState>>, Path(tenant): Path<String>) -> Json<Value> {
    let base = &state.base_url;
    let issuer_tenant = if ["common", "organizations", "consumers"].contains(&tenant.as_str()) {
        "{tenantid}"
    } else {
        &tenant
    };
    Json(json!({
        "issuer": issuer(base, issuer_tenant),
        "authorization_endpoint": format!("{base}/{tenant}/oauth2/v2.0/authorize"),
        "device_authorization_endpoint": format!("{base}/{tenant}/oauth2/v2.0/devicecode"),
        "token_endpoint": format!("{base}/{tenant}/oauth2/v2.0/token"),
        "jwks_uri": format!("{base}/{tenant}/discovery/v2.0/keys"),
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "code_challenge_methods_supported": ["plain", "S256"],
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nonce", "name", "preferred_username", "oid", "tid", "ver"],
    }))
}
