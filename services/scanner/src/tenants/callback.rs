//! The HTTP endpoint Microsoft redirects an admin to after consent:
//! `?tenant=…&admin_consent=True&state=…`, or `?error=…&error_description=…&state=…`.

use picket_platform::text::html_escape;
use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Html;
use axum::routing::get;

use crate::tenants::consent::ConsentResponse;
use crate::tenants::onboarding::{CompleteError, Onboarding};

pub const PATH: &str = "/consent/callback";

pub fn router(onboarding: Arc<Onboarding>) -> Router {
    Router::new()
        .route(PATH, get(callback))
        .with_state(onboarding)
}

fn page(status: StatusCode, title: &str, detail: &str) -> (StatusCode, Html<String>) {
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Picket: {title}</title></head>\
         <body><h1>{title}</h1><p>{}</p></body></html>",
        html_escape(detail)
    );
    (status, Html(body))
}

async fn callback(
    State(onboarding): State<Arc<Onboarding>>,
    Query(query): Query<HashMap<String, String>>,
) -> (StatusCode, Html<String>) {
    let parameter = |name: &str| query.get(name).cloned().unwrap_or_default();
    let response = ConsentResponse {
        state: parameter("state"),
        microsoft_tenant_id: parameter("tenant"),
        admin_consent: parameter("admin_consent").eq_ignore_ascii_case("true"),
        error: parameter("error"),
        error_description: parameter("error_description"),
    };
    if response.state.is_empty() {
        return page(
            StatusCode::BAD_REQUEST,
            "Consent link incomplete",
            "The link carries no state.",
        );
    }
    match onboarding.complete(&response).await {
        Ok(tenant) if tenant.is_active() => page(
            StatusCode::OK,
            "Connected",
            &format!(
                "Picket is connected to {} ({}). You can close this page.",
                tenant.display_name, tenant.primary_domain
            ),
        ),
        Ok(tenant) => page(
            StatusCode::OK,
            "Not connected",
            &format!("{}: {}", tenant.display_name, tenant.state_reason),
        ),
        Err(CompleteError::UnknownState) => page(
            StatusCode::BAD_REQUEST,
            "Unknown consent link",
            "No onboarding waits for this consent.",
        ),
        Err(CompleteError::Storage(error)) => {
            tracing::error!(%error, "consent callback failed");
            page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Try again",
                "Picket could not record the consent; reload this page.",
            )
        }
    }
}
