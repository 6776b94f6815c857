//! The gRPC server every service runs: grpc.health.v1, server reflection over every Picket contract,
//! and a tower layer that gives each call a span (child of the caller's `traceparent`) and records
//! go-grpc-prometheus style metrics.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use tonic::service::Routes;
use tower::{Layer, Service};
use tracing::Instrument;

use crate::metrics::{GrpcHandledLabels, GrpcLabels, Metrics};
use crate::telemetry::{self, HttpHeaders};

/// A storage failure as the caller sees it: logged in full here, `INTERNAL` without detail there.
pub fn internal(error: sqlx::Error) -> tonic::Status {
    tracing::error!(%error, "storage failed");
    tonic::Status::internal("internal error")
}

/// Parses a UUID request field; a bad one is `INVALID_ARGUMENT` naming the field.
pub fn parse_uuid(value: &str, field: &str) -> Result<uuid::Uuid, tonic::Status> {
    uuid::Uuid::parse_str(value)
        .map_err(|_| tonic::Status::invalid_argument(format!("{field}: must be a UUID")))
}

/// Parses an optional UUID request field: empty is `None`, a bad one is `INVALID_ARGUMENT` naming
/// the field.
pub fn parse_optional_uuid(value: &str, field: &str) -> Result<Option<uuid::Uuid>, tonic::Status> {
    (!value.is_empty())
        .then(|| parse_uuid(value, field))
        .transpose()
}

/// A positive duration request field, or `default` when it is unset; zero, negative or out of
/// range is `INVALID_ARGUMENT` naming the field.
pub fn positive_duration(
    value: Option<&picket_proto::pbjson_types::Duration>,
    default: chrono::Duration,
    field: &str,
) -> Result<chrono::Duration, tonic::Status> {
    let Some(value) = value else {
        return Ok(default);
    };
    crate::time::from_duration(value)
        .and_then(|duration| chrono::Duration::from_std(duration).ok())
        .filter(|duration| *duration > chrono::Duration::zero())
        .ok_or_else(|| {
            tonic::Status::invalid_argument(format!("{field}: must be a positive duration"))
        })
}

/// The page size of a list request: 0 asks for `default`, more than `max` gets `max`, and a
/// negative one is `INVALID_ARGUMENT` naming the field.
pub fn page_size(requested: i32, default: i64, max: i64) -> Result<i64, tonic::Status> {
    match i64::from(requested) {
        0 => Ok(default),
        size if size < 0 => Err(tonic::Status::invalid_argument(
            "page_size: must not be negative",
        )),
        size => Ok(size.min(max)),
    }
}

/// Parses each enum value of a repeated request field; a bad one is `INVALID_ARGUMENT` naming the
/// field and saying what it is not (`what`, such as "a severity").
pub fn parse_each<T>(
    values: &[i32],
    field: &str,
    what: &str,
    parse: impl Fn(i32) -> Option<T>,
) -> Result<Vec<T>, tonic::Status> {
    values
        .iter()
        .map(|value| {
            parse(*value).ok_or_else(|| {
                tonic::Status::invalid_argument(format!("{field}: {value} is not {what}"))
            })
        })
        .collect()
}

/// The bounds of a request's time range named `field`: (inclusive start, exclusive end), each
/// `None` when unset; an out-of-range bound is `INVALID_ARGUMENT` naming it.
#[allow(clippy::type_complexity)]
pub fn time_range(
    range: Option<&picket_proto::common::v1::TimeRange>,
    field: &str,
) -> Result<
    (
        Option<chrono::DateTime<chrono::Utc>>,
        Option<chrono::DateTime<chrono::Utc>>,
    ),
    tonic::Status,
> {
    let bound = |timestamp: Option<&picket_proto::pbjson_types::Timestamp>, name: &str| {
        timestamp
            .map(|timestamp| {
                crate::time::from_timestamp(timestamp).ok_or_else(|| {
                    tonic::Status::invalid_argument(format!("{field}.{name}: out of range"))
                })
            })
            .transpose()
    };
    Ok((
        bound(
            range.and_then(|range| range.start_time.as_ref()),
            "start_time",
        )?,
        bound(range.and_then(|range| range.end_time.as_ref()), "end_time")?,
    ))
}

fn invalid_page_token() -> tonic::Status {
    tonic::Status::invalid_argument("page_token: not a token from a previous page")
}

/// The page token after a row ordered by (time, id): `<microseconds>_<id>`.
pub fn keyset_token(at: chrono::DateTime<chrono::Utc>, id: uuid::Uuid) -> String {
    format!("{}_{id}", at.timestamp_micros())
}

/// The (time, id) a [`keyset_token`] names; `None` for the first page.
pub fn parse_keyset_token(
    token: &str,
) -> Result<Option<(chrono::DateTime<chrono::Utc>, uuid::Uuid)>, tonic::Status> {
    if token.is_empty() {
        return Ok(None);
    }
    let (micros, id) = token.split_once('_').ok_or_else(invalid_page_token)?;
    let at = micros
        .parse::<i64>()
        .ok()
        .and_then(chrono::DateTime::from_timestamp_micros)
        .ok_or_else(invalid_page_token)?;
    let id = uuid::Uuid::parse_str(id).map_err(|_| invalid_page_token())?;
    Ok(Some((at, id)))
}

/// The offset a page token of an offset-paged list names (0 for the first page).
pub fn parse_offset_token(token: &str) -> Result<i64, tonic::Status> {
    if token.is_empty() {
        return Ok(0);
    }
    token
        .parse::<i64>()
        .ok()
        .filter(|offset| *offset >= 0)
        .ok_or_else(invalid_page_token)
}

/// The token of the page after one that started at `offset` and returned `returned` of `limit`
/// rows (empty when that was the last page).
pub fn next_offset_token(offset: i64, returned: usize, limit: i64) -> String {
    if returned as i64 == limit {
        (offset + limit).to_string()
    } else {
        String::new()
    }
}

/// Adds reflection over Picket's contracts and the health service to `routes`, in both protocol
/// versions: `v1`, and `v1alpha`, the only one Python's grpcio-reflection, Postman and older grpcurl
/// builds speak.
pub fn with_reflection(routes: Routes) -> Result<Routes, tonic_reflection::server::Error> {
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(picket_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    Ok(routes
        .add_service(builder().build_v1()?)
        .add_service(builder().build_v1alpha()?))
}

#[derive(Clone)]
pub struct ObservabilityLayer {
    metrics: Arc<Metrics>,
}

impl ObservabilityLayer {
    pub fn new(metrics: Arc<Metrics>) -> ObservabilityLayer {
        ObservabilityLayer { metrics }
    }
}

impl<S> Layer<S> for ObservabilityLayer {
    type Service = Observability<S>;

    fn layer(&self, inner: S) -> Observability<S> {
        Observability {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Observability<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

/// Splits `/picket.incidents.v1.IncidentService/GetIncident` into service and method.
fn rpc_of(path: &str) -> (String, String) {
    let trimmed = path.trim_start_matches('/');
    match trimmed.split_once('/') {
        Some((service, method)) => (service.to_owned(), method.to_owned()),
        None => (trimmed.to_owned(), String::new()),
    }
}

/// The conventional name of a gRPC status code, as go-grpc-prometheus labels it.
fn code_name(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::Ok => "OK",
        tonic::Code::Cancelled => "Canceled",
        tonic::Code::Unknown => "Unknown",
        tonic::Code::InvalidArgument => "InvalidArgument",
        tonic::Code::DeadlineExceeded => "DeadlineExceeded",
        tonic::Code::NotFound => "NotFound",
        tonic::Code::AlreadyExists => "AlreadyExists",
        tonic::Code::PermissionDenied => "PermissionDenied",
        tonic::Code::ResourceExhausted => "ResourceExhausted",
        tonic::Code::FailedPrecondition => "FailedPrecondition",
        tonic::Code::Aborted => "Aborted",
        tonic::Code::OutOfRange => "OutOfRange",
        tonic::Code::Unimplemented => "Unimplemented",
        tonic::Code::Internal => "Internal",
        tonic::Code::Unavailable => "Unavailable",
        tonic::Code::DataLoss => "DataLoss",
        tonic::Code::Unauthenticated => "Unauthenticated",
    }
}

impl<S, RequestBody, ResponseBody> Service<http::Request<RequestBody>> for Observability<S>
where
    S: Service<http::Request<RequestBody>, Response = http::Response<ResponseBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    RequestBody: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, request: http::Request<RequestBody>) -> Self::Future {
        let (grpc_service, grpc_method) = rpc_of(request.uri().path());
        let span = tracing::info_span!(
            "grpc request",
            otel.kind = "server",
            rpc.service = %grpc_service,
            rpc.method = %grpc_method,
            rpc.grpc.status_code = tracing::field::Empty,
        );
        telemetry::set_parent_from(&span, &HttpHeaders(request.headers()));
        let labels = GrpcLabels {
            grpc_service,
            grpc_method,
            grpc_type: "unary",
        };
        self.metrics.grpc_started.get_or_create(&labels).inc();
        // The ready service answers this call; a fresh clone takes its place for the next one.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let started = Instant::now();
            let response = inner.call(request).instrument(span.clone()).await;
            // Unary errors come back as trailers-only responses: the status is in the headers.
            let code = match &response {
                Ok(response) => response
                    .headers()
                    .get("grpc-status")
                    .map(|value| tonic::Code::from_bytes(value.as_bytes()))
                    .unwrap_or(tonic::Code::Ok),
                Err(_) => tonic::Code::Internal,
            };
            span.record("rpc.grpc.status_code", code as i32);
            metrics
                .grpc_handling_seconds
                .get_or_create(&labels)
                .observe(started.elapsed().as_secs_f64());
            let handled = GrpcHandledLabels {
                grpc_service: labels.grpc_service,
                grpc_method: labels.grpc_method,
                grpc_type: labels.grpc_type,
                grpc_code: code_name(code).to_owned(),
            };
            metrics.grpc_handled.get_or_create(&handled).inc();
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_a_foreign_one_names_the_field() {
        let now = chrono::Utc::now();
        let id = uuid::Uuid::now_v7();
        let (at, parsed) = parse_keyset_token(&keyset_token(now, id))
            .expect("valid")
            .expect("a position");
        assert_eq!(
            (at.timestamp_micros(), parsed),
            (now.timestamp_micros(), id)
        );
        assert_eq!(parse_keyset_token("").expect("first page"), None);
        assert_eq!(
            parse_offset_token(&next_offset_token(0, 50, 50)).expect("valid"),
            50
        );
        assert_eq!(next_offset_token(0, 3, 50), "");
        for bad in ["nope", "12_not-a-uuid"] {
            let status = parse_keyset_token(bad).expect_err("refused");
            assert!(
                status.message().starts_with("page_token"),
                "{}",
                status.message()
            );
        }
        assert!(parse_offset_token("-4").is_err());
    }

    #[test]
    fn rpc_path_splits_into_service_and_method() {
        assert_eq!(
            rpc_of("/picket.incidents.v1.IncidentService/GetIncident"),
            (
                "picket.incidents.v1.IncidentService".to_owned(),
                "GetIncident".to_owned()
            )
        );
    }
}
