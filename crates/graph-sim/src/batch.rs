//! JSON batching, `POST /v1.0/$batch`: up to 20 requests in one call. As in Graph, each request is
//! admitted, throttled and answered on its own (a throttled one comes back `429` with its own
//! `Retry-After` while the others succeed), and the answers come back by id with their status,
//! headers and body.

use std::collections::HashMap;

use axum::Json;
use axum::body::{Bytes, to_bytes};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::routes::{bad_request, serve};
use crate::state::{Audience, SimState};

/// Graph's most requests in one batch.
const MOST: usize = 20;
/// The largest answer body read back into the batch.
const BODY_LIMIT: usize = 16 * 1024 * 1024;

/// One request of the batch: its path (below `/v1.0`) and query.
fn split(url: &str) -> (String, HashMap<String, String>) {
    let url = url.strip_prefix("/v1.0").unwrap_or(url);
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let query = url::form_urlencoded::parse(query.as_bytes())
        .map(|(key, value)| (key.into_owned(), value.into_owned()))
        .collect();
    let path = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    (path, query)
}

pub async fn answer(state: &SimState, headers: &HeaderMap, body: &[u8]) -> Response {
    let Ok(batch) = serde_json::from_slice::<Value>(body) else {
        return bad_request("Invalid batch payload format.");
    };
    let Some(requests) = batch["requests"].as_array() else {
        return bad_request("Invalid batch payload format: 'requests' is required.");
    };
    if requests.len() > MOST {
        return bad_request(&format!(
            "Invalid batch payload format: the number of requests exceeds the maximum of {MOST}."
        ));
    }
    let batch = {
        let mut inner = state.lock();
        inner.batches += 1;
        inner.batches
    };
    let mut responses = Vec::new();
    for request in requests {
        let id = request["id"].clone();
        let (Some(method), Some(url)) = (request["method"].as_str(), request["url"].as_str())
        else {
            return bad_request(
                "Invalid batch payload format: each request needs an id, a method and a url.",
            );
        };
        let Ok(method) = method.to_uppercase().parse::<Method>() else {
            return bad_request(&format!("Invalid method '{method}'."));
        };
        let (path, query) = split(url);
        let inner_body = match &request["body"] {
            Value::Null => Bytes::new(),
            body => Bytes::from(body.to_string()),
        };
        let answered = serve(
            state,
            method,
            &path,
            "/v1.0",
            headers,
            &query,
            &inner_body,
            Audience::Graph,
            Some(batch),
        );
        let status = answered.status().as_u16();
        let retry_after = answered
            .headers()
            .get("retry-after")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let bytes = to_bytes(answered.into_body(), BODY_LIMIT)
            .await
            .unwrap_or_default();
        let mut response_headers = json!({"Content-Type": "application/json"});
        if let Some(seconds) = retry_after {
            response_headers["Retry-After"] = json!(seconds);
        }
        let mut response = json!({"id": id, "status": status, "headers": response_headers});
        if !bytes.is_empty() {
            response["body"] = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        }
        responses.push(response);
    }
    (StatusCode::OK, Json(json!({"responses": responses}))).into_response()
}
