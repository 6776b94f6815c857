//! The endpoints, with Microsoft's JSON shapes: the v2.0 token endpoint (client credentials), Graph
//! v1.0 resources with `@odata.context`, `@odata.nextLink` paging, `$select`, `$top`, `$filter`,
//! PATCH, PUT, POST and DELETE that change the tenant, JSON batches (`batch.rs`), the actions Picket's fixes call, Graph's error
//! body `{"error": {"code", "message", "innerError"}}`, and Defender for Endpoint's `/api/machines`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use axum::{Form, Json, Router};
use chrono::{DateTime, SecondsFormat, Utc};
use rand::Rng;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::mailbox;
use crate::model::{Tenant, well_known_folder_id};
use crate::profile::Licence;
use crate::state::{Audience, Fault, Inner, IssuedToken, RecordedRequest, SimState};

pub const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";
pub const DEFENDER_SCOPE: &str = "https://api.securitycenter.microsoft.com/.default";

pub fn router(state: Arc<SimState>) -> Router {
    Router::new()
        .route("/{tenant}/oauth2/v2.0/token", post(token))
        .route("/v1.0/{*path}", any(api))
        .route("/api/{*path}", any(api))
        .merge(crate::signin::router())
        .with_state(state)
}

#[derive(Deserialize)]
struct TokenRequest {
    grant_type: String,
    client_id: String,
    /// Absent for public clients (the device-code grant).
    #[serde(default)]
    client_secret: String,
    #[serde(default)]
    scope: String,
    /// The `authorization_code` grant's code, redirect URI and PKCE verifier.
    #[serde(default)]
    code: String,
    #[serde(default)]
    redirect_uri: String,
    #[serde(default)]
    code_verifier: String,
    #[serde(default)]
    device_code: String,
}

fn token_error(status: StatusCode, error: &str, code: u32, description: &str) -> Response {
    let body = json!({
        "error": error,
        "error_description": format!("AADSTS{code}: {description}"),
        "error_codes": [code],
        "timestamp": Utc::now().format("%Y-%m-%d %H:%M:%SZ").to_string(),
        "trace_id": Uuid::new_v4().to_string(),
        "correlation_id": Uuid::new_v4().to_string(),
    });
    (status, Json(body)).into_response()
}

fn invalid_client() -> Response {
    token_error(
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        7000215,
        "Invalid client secret provided.",
    )
}

/// The token endpoint's answer to a sign-in grant: the tokens, or Entra's error body.
fn granted(redeemed: Result<Value, crate::signin::CodeRefusal>) -> Response {
    match redeemed {
        Ok(response) => Json(response).into_response(),
        Err((error, code, description)) => {
            token_error(StatusCode::BAD_REQUEST, error, code, description)
        }
    }
}

async fn token(
    State(state): State<Arc<SimState>>,
    Path(tenant): Path<String>,
    Form(request): Form<TokenRequest>,
) -> Response {
    if request.grant_type == "urn:ietf:params:oauth:grant-type:device_code" {
        return granted(crate::signin::redeem_device_code(
            &state,
            &request.client_id,
            &request.device_code,
        ));
    }
    let confidential = request.client_id == state.config.client_id
        && request.client_secret == state.config.client_secret;
    if request.grant_type == "authorization_code" {
        if !confidential {
            return invalid_client();
        }
        return granted(crate::signin::redeem_code(
            &state,
            &request.code,
            &request.redirect_uri,
            &request.code_verifier,
        ));
    }
    if request.grant_type != "client_credentials" {
        return token_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type.",
        );
    }
    let audience = match request.scope.as_str() {
        GRAPH_SCOPE => Audience::Graph,
        DEFENDER_SCOPE => Audience::Defender,
        _ => {
            return token_error(
                StatusCode::BAD_REQUEST,
                "invalid_scope",
                1002012,
                "The provided value for scope is not valid.",
            );
        }
    };
    let mut inner = state.lock();
    let Some(known) = inner.tenants.get(&tenant) else {
        return token_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            &format!("Tenant '{tenant}' not found."),
        );
    };
    if !confidential {
        return invalid_client();
    }
    if !known.consented {
        return token_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            7000229,
            "The client application is missing service principal in the tenant.",
        );
    }
    // Entra leaves `roles` out of a token that carries none.
    let propagating = known
        .permissions_propagate_at
        .is_some_and(|propagated| Instant::now() < propagated);
    let roles = if propagating {
        BTreeSet::new()
    } else {
        crate::permissions::of_audience(audience, &known.granted)
    };
    let lifetime = state.config.token_lifetime;
    let issued_at = Utc::now().timestamp();
    let mut claims = json!({
        "aud": match audience {
            Audience::Graph => "https://graph.microsoft.com",
            Audience::Defender => "https://api.securitycenter.microsoft.com",
        },
        "iss": format!("https://sts.windows.net/{tenant}/"),
        "iat": issued_at,
        "nbf": issued_at,
        "exp": issued_at + i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX),
        "appid": request.client_id,
        "idtyp": "app",
        "tid": tenant,
        "uti": Uuid::new_v4().simple().to_string(),
    });
    if !roles.is_empty() {
        claims["roles"] = json!(roles);
    }
    let Some(signer) = inner.signing_keys.last() else {
        return token_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "temporarily_unavailable",
            50000,
            "No signing key.",
        );
    };
    let access_token = signer.sign(&claims);
    *inner.tokens_issued.entry(tenant.clone()).or_default() += 1;
    inner.tokens.insert(
        access_token.clone(),
        IssuedToken {
            tenant_id: tenant,
            audience,
            expires_at: Instant::now() + lifetime,
            roles,
        },
    );
    Json(json!({
        "token_type": "Bearer",
        "expires_in": lifetime.as_secs(),
        "ext_expires_in": lifetime.as_secs(),
        "access_token": access_token,
    }))
    .into_response()
}

pub(crate) fn graph_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
                "request-id": Uuid::new_v4().to_string(),
                "client-request-id": Uuid::new_v4().to_string(),
            },
        },
    });
    (status, Json(body)).into_response()
}

fn not_found(path: &str) -> Response {
    graph_error(
        StatusCode::NOT_FOUND,
        "Request_ResourceNotFound",
        &format!(
            "Resource '{path}' does not exist or one of its queried reference-property objects are not present."
        ),
    )
}

pub fn bad_request(message: &str) -> Response {
    graph_error(StatusCode::BAD_REQUEST, "Request_BadRequest", message)
}

/// What a request asks, as admission sees it.
struct Asked<'a> {
    method: &'a Method,
    /// The path without `/v1.0`.
    path: &'a str,
    /// The path as logged.
    recorded: &'a str,
    audience: Audience,
    selects_activity: bool,
}

/// The refusal of a token that lacks the permissions a request needs, in the workload's words.
fn insufficient(asked: &Asked, unmet: &[&[&str]]) -> Response {
    if asked.audience == Audience::Defender {
        let roles: Vec<&str> = unmet
            .iter()
            .flat_map(|any_of| any_of.iter().copied())
            .collect();
        return graph_error(
            StatusCode::FORBIDDEN,
            "Forbidden",
            &format!(
                "The application does not have any of the required application roles ({}) to access the resource.",
                roles.join(", ")
            ),
        );
    }
    if asked.path.contains("/mailFolders") {
        return graph_error(
            StatusCode::FORBIDDEN,
            "ErrorAccessDenied",
            "Access is denied. Check credentials and try again.",
        );
    }
    graph_error(
        StatusCode::FORBIDDEN,
        "Authorization_RequestDenied",
        "Insufficient privileges to complete the operation.",
    )
}

/// Authenticates a request, checks its token's permissions, logs it, and applies a scripted (or
/// random) fault if one is due.
fn admit(
    state: &SimState,
    inner: &mut Inner,
    headers: &HeaderMap,
    asked: &Asked,
) -> Result<String, Box<Response>> {
    let (method, path, audience) = (asked.method, asked.recorded, asked.audience);
    let token = headers
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or_default();
    let issued = inner.tokens.get(token).cloned();
    let mut retry_after = None;
    let (tenant_id, outcome) = match issued {
        None => (
            String::new(),
            Err(graph_error(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationToken",
                "Access token is empty or invalid.",
            )),
        ),
        Some(issued) if issued.expires_at <= Instant::now() => (
            issued.tenant_id,
            Err(graph_error(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationToken",
                "Lifetime validation failed, the token is expired.",
            )),
        ),
        Some(issued) if issued.audience != audience => (
            issued.tenant_id,
            Err(graph_error(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationToken",
                "Access token validation failure. Invalid audience.",
            )),
        ),
        Some(issued) => {
            let unmet = crate::permissions::unmet(
                audience,
                method,
                asked.path,
                asked.selects_activity,
                &issued.roles,
            );
            if !unmet.is_empty() {
                (issued.tenant_id, Err(insufficient(asked, &unmet)))
            } else {
                let mut fault = inner
                    .faults
                    .get_mut(&issued.tenant_id)
                    .and_then(|faults| faults.pop_front());
                if fault.is_none()
                    && state.config.throttle_probability > 0.0
                    && rand::rng().random_bool(state.config.throttle_probability.min(1.0))
                {
                    // Conditional access and Identity Protection throttle without Retry-After.
                    let silent = [
                        "/v1.0/identity/conditionalAccess",
                        "/v1.0/identityProtection",
                    ]
                    .iter()
                    .any(|prefix| path.starts_with(prefix));
                    fault = Some(Fault::Throttle {
                        retry_after: (!silent).then_some(state.config.throttle_retry_after),
                    });
                }
                let outcome = match fault {
                    None => Ok(()),
                    Some(Fault::Throttle { retry_after: after }) => {
                        let mut response = graph_error(
                            StatusCode::TOO_MANY_REQUESTS,
                            "TooManyRequests",
                            "Too many requests are being sent for this tenant. Please retry later.",
                        );
                        if let Some(seconds) = after
                            && let Ok(value) = HeaderValue::from_str(&seconds.to_string())
                        {
                            response.headers_mut().insert("retry-after", value);
                            retry_after = Some(seconds);
                        }
                        Err(response)
                    }
                    Some(Fault::Unavailable) => Err(graph_error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "serviceNotAvailable",
                        "The service is temporarily unavailable.",
                    )),
                };
                (issued.tenant_id, outcome)
            }
        }
    };
    let status = match &outcome {
        Ok(()) => 200,
        Err(response) => response.status().as_u16(),
    };
    inner.requests.push(RecordedRequest {
        tenant_id: tenant_id.clone(),
        method: method.to_string(),
        path: path.to_owned(),
        query: BTreeMap::new(),
        at: Instant::now(),
        status,
        retry_after,
        batch: None,
    });
    outcome.map(|()| tenant_id).map_err(Box::new)
}

/// A Graph feature the tenant's licences do not include.
fn licence_error(tenant: &Tenant, path: &str, query: &HashMap<String, String>) -> Option<Response> {
    let premium = || {
        graph_error(
            StatusCode::FORBIDDEN,
            "Authentication_RequestFromNonPremiumTenantOrB2CTenant",
            "Neither tenant is B2C or tenant doesn't have premium license",
        )
    };
    let licence = tenant.licence();
    let selects_activity = query
        .get("$select")
        .is_some_and(|selected| selected.contains("signInActivity"));
    if licence == Licence::Free
        && (path.starts_with("/auditLogs/signIns")
            || path.starts_with("/identity/conditionalAccess")
            || path.starts_with("/security/")
            || selects_activity)
    {
        return Some(premium());
    }
    if licence != Licence::P2 && path.starts_with("/identityProtection/") {
        return Some(graph_error(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "Your tenant is not licensed for this feature.",
        ));
    }
    None
}

/// Graph (`/v1.0/...`, Graph tokens) and Defender for Endpoint (`/api/...`, Defender tokens).
async fn api(
    State(state): State<Arc<SimState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    if !state.config.latency.is_zero() {
        tokio::time::sleep(state.config.latency).await;
    }
    let (prefix, path, audience) = match uri.path().strip_prefix("/v1.0") {
        Some(path) => ("/v1.0", path, Audience::Graph),
        None => ("", uri.path(), Audience::Defender),
    };
    if path == "/$batch" && method == Method::POST {
        return crate::batch::answer(&state, &headers, &body).await;
    }
    serve(
        &state, method, path, prefix, &headers, &query, &body, audience, None,
    )
}

#[allow(clippy::too_many_arguments)]
pub fn serve(
    state: &SimState,
    method: Method,
    path: &str,
    prefix: &str,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    body: &[u8],
    audience: Audience,
    batch: Option<u64>,
) -> Response {
    let mut inner = state.lock();
    let recorded = format!("{prefix}{path}");
    let asked = Asked {
        method: &method,
        path,
        recorded: &recorded,
        audience,
        selects_activity: query
            .get("$select")
            .is_some_and(|selected| selected.contains("signInActivity")),
    };
    let response = match admit(state, &mut inner, headers, &asked) {
        Ok(tenant_id) => answer(
            state, &mut inner, &tenant_id, method, path, prefix, query, body,
        ),
        Err(response) => *response,
    };
    // The request log holds what the tenant was answered, and what it was asked.
    if let Some(last) = inner.requests.last_mut() {
        last.status = response.status().as_u16();
        last.batch = batch;
        last.query = query
            .iter()
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
    }
    response
}

/// The answer to an admitted request of `tenant_id`.
#[allow(clippy::too_many_arguments)]
fn answer(
    state: &SimState,
    inner: &mut Inner,
    tenant_id: &str,
    method: Method,
    path: &str,
    prefix: &str,
    query: &HashMap<String, String>,
    body: &[u8],
) -> Response {
    let Some(tenant) = inner.tenants.get_mut(tenant_id) else {
        return not_found(path);
    };
    if path == "/organization" {
        return collection(
            &state.base_url,
            prefix,
            path,
            query,
            vec![tenant.organization()],
            state.config.page_size,
        );
    }
    if let Some(refused) = licence_error(tenant, path, query) {
        return refused;
    }
    if crate::sensitive::refused(tenant, &state.config.client_id, &method, path) {
        return graph_error(
            StatusCode::FORBIDDEN,
            "Authorization_RequestDenied",
            "Insufficient privileges to complete the operation.",
        );
    }
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(body) {
            Ok(body) => body,
            Err(error) => return bad_request(&format!("Invalid JSON body: {error}")),
        }
    };
    if method == Method::GET && path == "/users/delta" {
        let tracking = inner.deltas.entry(tenant_id.to_owned()).or_default();
        let link_base = format!("{}{prefix}{path}", state.base_url);
        return crate::delta::users(tracking, tenant, &link_base, query, state.config.page_size);
    }
    let context = Context {
        base_url: &state.base_url,
        prefix,
        page_size: state.config.page_size,
    };
    match method {
        Method::GET => get(tenant, &context, path, query),
        Method::PATCH => write(tenant, path, &body, false),
        Method::PUT => write(tenant, path, &body, true),
        Method::DELETE => delete(tenant, path),
        Method::POST => create_or_act(tenant, path, body),
        _ => graph_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "Request_BadRequest",
            "The HTTP method is not supported on this resource.",
        ),
    }
}

struct Context<'a> {
    base_url: &'a str,
    prefix: &'a str,
    page_size: usize,
}

/// Where a path points in a tenant.
enum Target {
    Singleton(String),
    Collection(String),
    Item(String, usize),
    Missing,
}

fn split_parent(path: &str) -> Option<(&str, &str)> {
    path.rsplit_once('/')
        .filter(|(parent, _)| !parent.is_empty())
}

fn resolve(tenant: &Tenant, path: &str) -> Target {
    match tenant.resources.get(path) {
        Some(Value::Array(_)) => return Target::Collection(path.to_owned()),
        Some(_) => return Target::Singleton(path.to_owned()),
        None => {}
    }
    if let Some((parent, id)) = split_parent(path)
        && let Some(Value::Array(items)) = tenant.resources.get(parent)
        && let Some(index) = items
            .iter()
            .position(|item| item["id"] == id || item["userPrincipalName"] == id)
    {
        return Target::Item(parent.to_owned(), index);
    }
    Target::Missing
}

/// A user's mailbox paths: `/users/{id}/mailFolders/...` of an existing user.
fn mailbox_path<'p>(tenant: &Tenant, path: &'p str) -> Option<(String, &'p str)> {
    let rest = path.strip_prefix("/users/")?;
    let (user, folder_path) = rest.split_once("/mailFolders/")?;
    let users = tenant.resources.get("/users")?.as_array()?;
    let user = users
        .iter()
        .find(|candidate| candidate["id"] == user || candidate["userPrincipalName"] == user)?;
    Some((user["id"].as_str()?.to_owned(), folder_path))
}

fn get(
    tenant: &Tenant,
    context: &Context,
    path: &str,
    query: &HashMap<String, String>,
) -> Response {
    let selected = query.get("$select").map(String::as_str);
    if let Some((user_id, _)) = mailbox_path(tenant, path)
        && tenant.denied_mailboxes.contains(&user_id)
    {
        return graph_error(
            StatusCode::FORBIDDEN,
            "ErrorAccessDenied",
            "Access is denied. Check credentials and try again.",
        );
    }
    match resolve(tenant, path) {
        Target::Collection(path) => {
            let mut items = tenant.resources[&path]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if let Some(expand) = query.get("$expand")
                && let Some(refused) = expand_principals(tenant, &path, expand, &mut items)
            {
                return refused;
            }
            collection(
                context.base_url,
                context.prefix,
                &path,
                query,
                items,
                context.page_size,
            )
        }
        Target::Singleton(path) => {
            let mut object = tenant.resources[&path].clone();
            // Child collections come inline, as authenticationMethodConfigurations does.
            let children = format!("{path}/");
            for (child, value) in tenant.resources.range(children.clone()..) {
                let Some(name) = child.strip_prefix(&children) else {
                    break;
                };
                if !name.contains('/') && value.is_array() {
                    object[name] = value.clone();
                }
            }
            let mut object = select(&object, selected);
            object["@odata.context"] = json!(format!(
                "https://graph.microsoft.com/v1.0/$metadata#{}/$entity",
                path.trim_start_matches('/')
            ));
            Json(object).into_response()
        }
        Target::Item(parent, index) => {
            let mut item = select(&tenant.resources[&parent][index], selected);
            item["@odata.context"] = json!(format!(
                "https://graph.microsoft.com/v1.0/$metadata#{}/$entity",
                parent.trim_start_matches('/')
            ));
            Json(item).into_response()
        }
        Target::Missing => match mailbox_path(tenant, path) {
            Some((_, "inbox/messageRules")) => collection(
                context.base_url,
                context.prefix,
                path,
                query,
                Vec::new(),
                context.page_size,
            ),
            Some((user_id, folder)) if !folder.contains('/') => {
                match mailbox::folder(&user_id, folder) {
                    Ok(folder) => {
                        let mut found = select(
                            &json!({
                                "id": folder.id,
                                "displayName": folder.display_name,
                                "parentFolderId": well_known_folder_id(&user_id, "msgfolderroot"),
                                "childFolderCount": 0,
                                "unreadItemCount": 0,
                                "totalItemCount": 0,
                                "isHidden": false,
                            }),
                            selected,
                        );
                        found["@odata.context"] = json!(
                            "https://graph.microsoft.com/v1.0/$metadata#users('id')/mailFolders/$entity"
                        );
                        Json(found).into_response()
                    }
                    Err(mailbox::Refusal::Malformed) => graph_error(
                        StatusCode::BAD_REQUEST,
                        "ErrorInvalidIdMalformed",
                        "Id is malformed.",
                    ),
                    Err(mailbox::Refusal::NotFound) => graph_error(
                        StatusCode::NOT_FOUND,
                        "ErrorItemNotFound",
                        "The specified object was not found in the store.",
                    ),
                }
            }
            _ => not_found(path),
        },
    }
}

/// `$expand=principal` of role assignments and eligibilities: each item's principal in full, with
/// its `@odata.type` (a deleted principal expands to null). Other collections ignore `$expand`.
/// The refusal of an expansion Graph does not have.
fn expand_principals(
    tenant: &Tenant,
    path: &str,
    expand: &str,
    items: &mut [Value],
) -> Option<Response> {
    let kind = path.strip_prefix("/roleManagement/directory/")?;
    if expand != "principal" {
        let kind = if kind.starts_with("roleEligibility") {
            "unifiedRoleEligibilityScheduleInstance"
        } else {
            "unifiedRoleAssignment"
        };
        return Some(bad_request(&format!(
            "Could not find a property named '{expand}' on type 'microsoft.graph.{kind}'."
        )));
    }
    let principal = |id: &Value| {
        [
            ("/users", "#microsoft.graph.user"),
            ("/groups", "#microsoft.graph.group"),
            ("/servicePrincipals", "#microsoft.graph.servicePrincipal"),
        ]
        .iter()
        .find_map(|(collection, odata_type)| {
            let mut found = tenant
                .resources
                .get(*collection)?
                .as_array()?
                .iter()
                .find(|object| object["id"] == *id)?
                .clone();
            found["@odata.type"] = json!(odata_type);
            Some(found)
        })
        .unwrap_or(Value::Null)
    };
    for item in items {
        item["principal"] = principal(&item["principalId"]);
    }
    None
}

/// Merges `patch` into `target`: objects recursively, everything else replaced.
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                match target.get_mut(key) {
                    Some(existing) if existing.is_object() && value.is_object() => {
                        merge(existing, value);
                    }
                    _ => {
                        target.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (target, patch) => *target = patch.clone(),
    }
}

fn write(tenant: &mut Tenant, path: &str, body: &Value, replace: bool) -> Response {
    if !body.is_object() {
        return bad_request("The request body must be a JSON object.");
    }
    let target = match resolve(tenant, path) {
        Target::Singleton(path) => tenant.resources.get_mut(&path),
        Target::Item(parent, index) => tenant
            .resources
            .get_mut(&parent)
            .and_then(|items| items.get_mut(index)),
        Target::Collection(_) | Target::Missing => None,
    };
    let Some(target) = target else {
        return not_found(path);
    };
    // A resource of a derived type in a polymorphic collection (an authentication method
    // configuration, say) is written only with its type named, as the documentation requires.
    if let Some(stored) = target.get("@odata.type").and_then(Value::as_str)
        && body.get("@odata.type").and_then(Value::as_str) != Some(stored)
    {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!(
                "The request body must name the resource's type: \"@odata.type\": \"{stored}\"."
            ),
        );
    }
    if replace {
        let id = target.get("id").cloned();
        *target = body.clone();
        if let Some(id) = id {
            target["id"] = id;
        }
    } else {
        merge(target, body);
    }
    StatusCode::NO_CONTENT.into_response()
}

fn delete(tenant: &mut Tenant, path: &str) -> Response {
    match resolve(tenant, path) {
        Target::Item(parent, index) => {
            if let Some(Value::Array(items)) = tenant.resources.get_mut(&parent) {
                items.remove(index);
            }
            StatusCode::NO_CONTENT.into_response()
        }
        _ => not_found(path),
    }
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn create_or_act(tenant: &mut Tenant, path: &str, body: Value) -> Response {
    match resolve(tenant, path) {
        Target::Collection(collection) => create(tenant, &collection, body),
        Target::Missing => act(tenant, path, body),
        Target::Singleton(_) | Target::Item(..) => graph_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "Request_BadRequest",
            "POST is not supported on this resource.",
        ),
    }
}

fn create(tenant: &mut Tenant, collection: &str, body: Value) -> Response {
    let Value::Object(mut item) = body else {
        return bad_request("The request body must be a JSON object.");
    };
    if collection == "/identity/conditionalAccess/policies" {
        for required in ["displayName", "state", "conditions"] {
            if !item.contains_key(required) {
                return bad_request(&format!("The property '{required}' is required."));
            }
        }
        item.insert("createdDateTime".into(), json!(now()));
        item.insert("modifiedDateTime".into(), Value::Null);
        // Graph answers with the built-in authentication strength expanded.
        if let Some(strength) = item
            .get_mut("grantControls")
            .and_then(|grant| grant.get_mut("authenticationStrength"))
            && strength["id"] == "00000000-0000-0000-0000-000000000004"
        {
            *strength = json!({
                "id": "00000000-0000-0000-0000-000000000004",
                "displayName": "Phishing-resistant MFA",
                "policyType": "builtIn",
                "allowedCombinations": ["windowsHelloForBusiness", "fido2", "x509CertificateMultiFactor"],
            });
        }
    }
    item.entry("id")
        .or_insert_with(|| json!(Uuid::new_v4().to_string()));
    let item = Value::Object(item);
    if let Some(Value::Array(items)) = tenant.resources.get_mut(collection) {
        items.push(item.clone());
    }
    (StatusCode::CREATED, Json(item)).into_response()
}

fn item_mut<'t>(tenant: &'t mut Tenant, path: &str) -> Option<&'t mut Value> {
    match resolve(tenant, path) {
        Target::Item(parent, index) => tenant
            .resources
            .get_mut(&parent)
            .and_then(|items| items.get_mut(index)),
        _ => None,
    }
}

/// The actions Picket's fixes call: `POST .../{action}`.
fn act(tenant: &mut Tenant, path: &str, body: Value) -> Response {
    let Some((parent, action)) = split_parent(path) else {
        return not_found(path);
    };
    match action {
        "revokeSignInSessions" if parent.starts_with("/users/") => {
            let Some(user) = item_mut(tenant, parent) else {
                return not_found(parent);
            };
            user["signInSessionsValidFromDateTime"] = json!(now());
            Json(json!({"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#Edm.Boolean", "value": true}))
                .into_response()
        }
        "removePassword" | "removeKey" => {
            let Some(key_id) = body["keyId"].as_str().map(str::to_owned) else {
                return bad_request("The property 'keyId' is required.");
            };
            let Some(owner) = item_mut(tenant, parent) else {
                return not_found(parent);
            };
            let field = if action == "removePassword" {
                "passwordCredentials"
            } else {
                "keyCredentials"
            };
            let Some(credentials) = owner[field].as_array_mut() else {
                return bad_request("The object has no credentials.");
            };
            let before = credentials.len();
            credentials.retain(|credential| credential["keyId"] != key_id.as_str());
            if credentials.len() == before {
                return graph_error(
                    StatusCode::NOT_FOUND,
                    "Request_ResourceNotFound",
                    &format!("No credential found with keyId '{key_id}'."),
                );
            }
            StatusCode::NO_CONTENT.into_response()
        }
        "confirmCompromised" | "dismiss" if parent == "/identityProtection/riskyUsers" => {
            let Some(user_ids) = body["userIds"].as_array() else {
                return bad_request("The property 'userIds' is required.");
            };
            let (level, risk_state) = if action == "confirmCompromised" {
                ("high", "confirmedCompromised")
            } else {
                ("none", "dismissed")
            };
            if let Some(Value::Array(risky)) = tenant.resources.get_mut(parent) {
                for user in risky
                    .iter_mut()
                    .filter(|user| user_ids.contains(&user["id"]))
                {
                    user["riskLevel"] = json!(level);
                    user["riskState"] = json!(risk_state);
                    user["riskLastUpdatedDateTime"] = json!(now());
                }
            }
            StatusCode::NO_CONTENT.into_response()
        }
        "isolate" | "unisolate" if parent.starts_with("/api/machines/") => {
            isolate(tenant, parent, action, &body)
        }
        _ => not_found(path),
    }
}

/// Defender for Endpoint's machine isolation: a machine action, refused while an isolation is in
/// force.
fn isolate(tenant: &mut Tenant, machine_path: &str, action: &str, body: &Value) -> Response {
    let Some(machine) = item_mut(tenant, machine_path) else {
        return not_found(machine_path);
    };
    let machine_id = machine["id"].clone();
    let device = machine["computerDnsName"].clone();
    let Some(comment) = body["Comment"].as_str() else {
        return bad_request("Comment is required.");
    };
    let kind = if action == "isolate" {
        "Isolate"
    } else {
        "Unisolate"
    };
    let actions = tenant
        .resources
        .entry("/api/machineactions".into())
        .or_insert_with(|| Value::Array(Vec::new()));
    let Value::Array(actions) = actions else {
        return not_found("/api/machineactions");
    };
    let in_force = actions
        .iter()
        .rev()
        .find(|existing| existing["machineId"] == machine_id)
        .is_some_and(|last| last["type"] == kind);
    if in_force {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "ActiveRequestAlreadyExists",
            &format!("Action type {kind} for machine {machine_id} is already in force."),
        );
    }
    let created = json!({
        "id": Uuid::new_v4().to_string(),
        "type": kind,
        "scope": body["IsolationType"].as_str().unwrap_or("Full"),
        "requestor": "picket",
        "requestorComment": comment,
        "status": "Succeeded",
        "machineId": machine_id,
        "computerDnsName": device,
        "creationDateTimeUtc": now(),
        "lastUpdateDateTimeUtc": now(),
    });
    actions.push(created.clone());
    (StatusCode::CREATED, Json(created)).into_response()
}

/// A `$filter` clause: `property op value`, the clauses joined by `and`.
struct Clause {
    property: String,
    operator: String,
    value: String,
}

/// Collections whose documentation shows `$filter` with `eq` only: another operator is refused
/// rather than guessed at.
const EQ_ONLY: [&str; 1] = ["/security/alerts_v2"];

fn parse_filter(path: &str, filter: &str) -> Result<Vec<Clause>, String> {
    if filter.contains(" or ") {
        return Err(format!(
            "Unsupported filter '{filter}': 'or' is not supported here."
        ));
    }
    let eq_only = EQ_ONLY.contains(&path);
    filter
        .split(" and ")
        .map(|clause| {
            let mut parts = clause.trim().splitn(3, ' ');
            let (Some(property), Some(operator), Some(value)) =
                (parts.next(), parts.next(), parts.next())
            else {
                return Err(format!("Invalid filter clause '{clause}'."));
            };
            if !["eq", "ne", "ge", "gt", "le", "lt"].contains(&operator)
                || (eq_only && operator != "eq")
            {
                return Err(format!("Unsupported operator '{operator}'."));
            }
            Ok(Clause {
                property: property.to_owned(),
                operator: operator.to_owned(),
                value: value.trim_matches('\'').to_owned(),
            })
        })
        .collect()
}

fn matches(item: &Value, clauses: &[Clause]) -> bool {
    clauses.iter().all(|clause| {
        let pointer = format!("/{}", clause.property);
        let actual = match item.pointer(&pointer) {
            Some(Value::String(text)) => text.clone(),
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        };
        let ordering = match (
            actual.parse::<DateTime<Utc>>(),
            clause.value.parse::<DateTime<Utc>>(),
        ) {
            (Ok(actual), Ok(wanted)) => actual.cmp(&wanted),
            _ => actual.as_str().cmp(clause.value.as_str()),
        };
        match clause.operator.as_str() {
            "eq" => ordering.is_eq(),
            "ne" => ordering.is_ne(),
            "ge" => ordering.is_ge(),
            "gt" => ordering.is_gt(),
            "le" => ordering.is_le(),
            _ => ordering.is_lt(),
        }
    })
}

/// Keeps only the `$select`ed properties.
pub(crate) fn select(item: &Value, selected: Option<&str>) -> Value {
    let Some(selected) = selected else {
        return item.clone();
    };
    let wanted: Vec<&str> = selected.split(',').map(str::trim).collect();
    let Some(object) = item.as_object() else {
        return item.clone();
    };
    Value::Object(
        object
            .iter()
            .filter(|(key, _)| wanted.contains(&key.as_str()) || key.starts_with("@odata"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    )
}

/// The largest page of users Graph answers when signInActivity is selected.
const SIGN_IN_ACTIVITY_PAGE: usize = 120;

/// A page of a collection, filtered and selected, with `@odata.nextLink` when more remain.
fn collection(
    base_url: &str,
    prefix: &str,
    path: &str,
    query: &HashMap<String, String>,
    mut items: Vec<Value>,
    page_size: usize,
) -> Response {
    let top = match query.get("$top").map(|top| top.parse::<usize>()) {
        None => page_size,
        Some(Ok(top)) if (1..=999).contains(&top) => top,
        Some(_) => {
            return graph_error(
                StatusCode::BAD_REQUEST,
                "Request_UnsupportedQuery",
                "Invalid page size specified: '$top'. Must be between 1 and 999 inclusive.",
            );
        }
    };
    // Users with signInActivity come at most 120 to a page, whatever $top asks (as documented).
    let with_activity = path == "/users"
        && query
            .get("$select")
            .is_some_and(|selected| selected.contains("signInActivity"));
    let top = if with_activity {
        top.min(SIGN_IN_ACTIVITY_PAGE)
    } else {
        top
    };
    let offset = match query.get("$skiptoken").map(|token| token.parse::<usize>()) {
        None => 0,
        Some(Ok(offset)) => offset,
        Some(Err(_)) => {
            return graph_error(
                StatusCode::BAD_REQUEST,
                "Directory_ExpiredPageToken",
                "The specified page token value has expired and can no longer be included in your request.",
            );
        }
    };
    if let Some(filter) = query.get("$filter") {
        match parse_filter(path, filter) {
            Ok(clauses) => items.retain(|item| matches(item, &clauses)),
            Err(message) => {
                return graph_error(
                    StatusCode::BAD_REQUEST,
                    "Request_UnsupportedQuery",
                    &message,
                );
            }
        }
    }
    if path.starts_with("/auditLogs/") {
        // Logs come newest first.
        let key = if path.ends_with("/signIns") {
            "createdDateTime"
        } else {
            "activityDateTime"
        };
        items.sort_by(|a, b| b[key].as_str().cmp(&a[key].as_str()));
    }
    let selected = query.get("$select").map(String::as_str);
    let total = items.len();
    let page: Vec<Value> = items
        .into_iter()
        .skip(offset)
        .take(top)
        .map(|item| select(&item, selected))
        .collect();
    let next_offset = offset + page.len();
    let mut body = json!({
        "@odata.context": format!("https://graph.microsoft.com/v1.0/$metadata#{}", path.trim_start_matches('/')),
        "value": page,
    });
    if next_offset < total {
        let mut link = url::form_urlencoded::Serializer::new(String::new());
        for (key, value) in query
            .iter()
            .filter(|(key, _)| !["$skiptoken", "$top"].contains(&key.as_str()))
        {
            link.append_pair(key, value);
        }
        link.append_pair("$top", &top.to_string());
        link.append_pair("$skiptoken", &next_offset.to_string());
        body["@odata.nextLink"] = json!(format!("{base_url}{prefix}{path}?{}", link.finish()));
    }
    Json(body).into_response()
}
