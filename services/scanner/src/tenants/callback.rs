//! The HTTP endpoint Microsoft redirects an admin to, twice: after consent
//! (`?tenant=…&admin_consent=True&state=…`), which sends the admin on to sign in, and after that
//! sign-in (`?code=…&state=…`), which proves the tenant; or `?error=…&error_description=…&state=…`.

use picket_platform::text::html_escape;
use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;

use crate::tenants::consent::ConsentResponse;
use crate::tenants::onboarding::{CompleteError, Onboarding, Step};

pub const PATH: &str = "/consent/callback";

pub fn router(onboarding: Arc<Onboarding>) -> Router {
    Router::new()
        .route(PATH, get(callback))
        .with_state(onboarding)
}

fn page(status: StatusCode, title: &str, detail: &str) -> Response {
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Picket: {title}</title></head>\
         <body><h1>{title}</h1><p>{}</p></body></html>",
        html_escape(detail)
    );
    (status, Html(body)).into_response()
}

async fn callback(
    State(onboarding): State<Arc<Onboarding>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let parameter = |name: &str| query.get(name).cloned().unwrap_or_default();
    let response = ConsentResponse {
        state: parameter("state"),
        tenant_hint: parameter("tenant"),
        admin_consent: parameter("admin_consent").eq_ignore_ascii_case("true"),
        code: parameter("code"),
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
    match onboarding.redirect(&response).await {
        Ok(Step::SignIn { url, .. }) => (
            StatusCode::FOUND,
            [(header::LOCATION, url)],
            Html("<!doctype html><p>Consent recorded: sign in to confirm your directory.</p>"),
        )
            .into_response(),
        Ok(Step::Finished(tenant)) if tenant.is_active() => page(
            StatusCode::OK,
            "Connected",
            &format!(
                "Picket is connected to {} ({}). You can close this page.",
                tenant.display_name, tenant.primary_domain
            ),
        ),
        Ok(Step::Finished(tenant)) => page(
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
