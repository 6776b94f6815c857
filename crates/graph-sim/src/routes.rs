//! The endpoints, with Microsoft's JSON shapes: the v2.0 token endpoint (client credentials) and
//! Graph v1.0 resources with `@odata.context`, `@odata.nextLink` paging, `$select`, `$top`, and
//! Graph's error body `{"error": {"code", "message", "innerError"}}`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::model::Tenant;
use crate::state::{Fault, IssuedToken, RecordedRequest, SimState};

pub fn router(state: Arc<SimState>) -> Router {
    Router::new()
        .route("/{tenant}/oauth2/v2.0/token", post(token))
        .route("/v1.0/organization", get(organization))
        .route("/v1.0/users", get(users))
        .route("/v1.0/subscribedSkus", get(subscribed_skus))
        .with_state(state)
}

#[derive(Deserialize)]
struct TokenRequest {
    grant_type: String,
    client_id: String,
    client_secret: String,
    scope: String,
}

fn token_error(status: StatusCode, error: &str, code: u32, description: &str) -> Response {
    let body = json!({
        "error": error,
        "error_description": format!("AADSTS{code}: {description}"),
        "error_codes": [code],
        "timestamp": chrono::Utc::now().format("%Y-%m-%d %H:%M:%SZ").to_string(),
        "trace_id": Uuid::new_v4().to_string(),
        "correlation_id": Uuid::new_v4().to_string(),
    });
    (status, Json(body)).into_response()
}

async fn token(
    State(state): State<Arc<SimState>>,
    Path(tenant): Path<String>,
    Form(request): Form<TokenRequest>,
) -> Response {
    if request.grant_type != "client_credentials" {
        return token_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type.",
        );
    }
    if request.scope != "https://graph.microsoft.com/.default" {
        return token_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            1002012,
            "The provided value for scope is not valid.",
        );
    }
    let mut inner = state.lock();
    let Some(known) = inner.tenants.get(&tenant) else {
        return token_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            &format!("Tenant '{tenant}' not found."),
        );
    };
    if request.client_id != state.config.client_id
        || request.client_secret != state.config.client_secret
    {
        return token_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000215,
            "Invalid client secret provided.",
        );
    }
    if !known.consented {
        return token_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            7000229,
            "The client application is missing service principal in the tenant.",
        );
    }
    let access_token = format!("sim.{}", Uuid::new_v4().simple());
    let lifetime = state.config.token_lifetime;
    *inner.tokens_issued.entry(tenant.clone()).or_default() += 1;
    inner.tokens.insert(
        access_token.clone(),
        IssuedToken {
            tenant_id: tenant,
            expires_at: Instant::now() + lifetime,
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

fn graph_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "request-id": Uuid::new_v4().to_string(),
                "client-request-id": Uuid::new_v4().to_string(),
            },
        },
    });
    (status, Json(body)).into_response()
}

/// Authenticates a Graph request, logs it, and applies a scripted fault if one is due.
fn admit(state: &SimState, headers: &HeaderMap, path: &str) -> Result<String, Box<Response>> {
    let token = headers
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or_default();
    let mut inner = state.lock();
    let issued = inner.tokens.get(token).cloned();
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
        Some(issued) => {
            let fault = inner
                .faults
                .get_mut(&issued.tenant_id)
                .and_then(|faults| faults.pop_front());
            let outcome = match fault {
                None => Ok(()),
                Some(Fault::Throttle { retry_after }) => {
                    let mut response = graph_error(
                        StatusCode::TOO_MANY_REQUESTS,
                        "TooManyRequests",
                        "Too many requests are being sent for this tenant. Please retry later.",
                    );
                    if let Some(seconds) = retry_after
                        && let Ok(value) = HeaderValue::from_str(&seconds.to_string())
                    {
                        response.headers_mut().insert("retry-after", value);
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
    };
    let status = match &outcome {
        Ok(()) => 200,
        Err(response) => response.status().as_u16(),
    };
    inner.requests.push(RecordedRequest {
        tenant_id: tenant_id.clone(),
        method: "GET".into(),
        path: path.to_owned(),
        at: Instant::now(),
        status,
    });
    outcome.map(|()| tenant_id).map_err(Box::new)
}

fn collection(context: &str, value: Vec<Value>, next_link: Option<String>) -> Response {
    let mut body = json!({
        "@odata.context": format!("https://graph.microsoft.com/v1.0/$metadata#{context}"),
        "value": value,
    });
    if let Some(link) = next_link {
        body["@odata.nextLink"] = Value::String(link);
    }
    Json(body).into_response()
}

/// Keeps only the `$select`ed properties.
fn select(item: &Value, selected: Option<&str>) -> Value {
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
            .filter(|(key, _)| wanted.contains(&key.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    )
}

/// A collection read from the calling tenant, after authentication and scripted faults.
fn tenant_collection(
    state: &SimState,
    headers: &HeaderMap,
    path: &str,
    context: &str,
    read: impl Fn(&Tenant) -> Vec<Value>,
) -> Response {
    let tenant_id = match admit(state, headers, path) {
        Ok(tenant_id) => tenant_id,
        Err(response) => return *response,
    };
    let inner = state.lock();
    let items = inner.tenants.get(&tenant_id).map(read).unwrap_or_default();
    collection(context, items, None)
}

async fn organization(State(state): State<Arc<SimState>>, headers: HeaderMap) -> Response {
    tenant_collection(
        &state,
        &headers,
        "/v1.0/organization",
        "organization",
        |tenant| vec![tenant.organization()],
    )
}

async fn subscribed_skus(State(state): State<Arc<SimState>>, headers: HeaderMap) -> Response {
    tenant_collection(
        &state,
        &headers,
        "/v1.0/subscribedSkus",
        "subscribedSkus",
        |tenant| tenant.subscribed_skus.clone(),
    )
}

async fn users(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let tenant_id = match admit(&state, &headers, "/v1.0/users") {
        Ok(tenant_id) => tenant_id,
        Err(response) => return *response,
    };
    let top = match query.get("$top").map(|top| top.parse::<usize>()) {
        None => state.config.page_size,
        Some(Ok(top)) if (1..=999).contains(&top) => top,
        Some(_) => {
            return graph_error(
                StatusCode::BAD_REQUEST,
                "Request_UnsupportedQuery",
                "Invalid page size specified: '$top'. Must be between 1 and 999 inclusive.",
            );
        }
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
    let selected = query.get("$select").map(String::as_str);
    let inner = state.lock();
    let all = inner
        .tenants
        .get(&tenant_id)
        .map(|tenant| tenant.users.as_slice())
        .unwrap_or_default();
    let page: Vec<Value> = all
        .iter()
        .skip(offset)
        .take(top)
        .map(|user| select(user, selected))
        .collect();
    let next_offset = offset + page.len();
    let next_link = (next_offset < all.len()).then(|| {
        let select_part = selected
            .map(|selected| format!("&$select={selected}"))
            .unwrap_or_default();
        format!(
            "{}/v1.0/users?$top={top}&$skiptoken={next_offset}{select_part}",
            state.base_url
        )
    });
    collection("users", page, next_link)
}
