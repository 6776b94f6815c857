//! Where each Picket service listens and how calls to it are authenticated.

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Response, Status};

/// The gRPC address of each service.
#[derive(Debug, Clone, clap::Args)]
pub struct Endpoints {
    /// Scanner (tenants, scans).
    #[arg(
        long,
        env = "PICKET_SCANNER_URL",
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    pub scanner: String,
    /// Prioritizer (incidents, auto-approve rules, authority map).
    #[arg(
        long,
        env = "PICKET_PRIORITIZER_URL",
        default_value = "http://127.0.0.1:50052",
        global = true
    )]
    pub prioritizer: String,
    /// Notifier (channels, deliveries).
    #[arg(
        long,
        env = "PICKET_NOTIFIER_URL",
        default_value = "http://127.0.0.1:50053",
        global = true
    )]
    pub notifier: String,
    /// Ledger (credits, engagements).
    #[arg(
        long,
        env = "PICKET_LEDGER_URL",
        default_value = "http://127.0.0.1:50054",
        global = true
    )]
    pub ledger: String,
    /// Offboarding.
    #[arg(
        long,
        env = "PICKET_OFFBOARDING_URL",
        default_value = "http://127.0.0.1:50055",
        global = true
    )]
    pub offboarding: String,
}

/// Adds the bearer token to every call.
#[derive(Debug, Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let Some(token) = &self.0 else {
            return Err(Status::unauthenticated(
                "no token: pass --token or set PICKET_TOKEN (a development token comes from `picketctl token mint`)",
            ));
        };
        request
            .metadata_mut()
            .insert("authorization", token.clone());
        Ok(request)
    }
}

pub type Authenticated = InterceptedService<Channel, Bearer>;

/// A lazily connected channel to one service, named for error messages.
#[derive(Debug, Clone)]
pub struct Service {
    pub name: &'static str,
    pub url: String,
    pub channel: Authenticated,
}

pub fn bearer(token: Option<&str>) -> anyhow::Result<Bearer> {
    let value = token
        .map(|token| format!("Bearer {}", token.trim()).parse())
        .transpose()
        .map_err(|_| anyhow::anyhow!("the token is not a valid header value"))?;
    Ok(Bearer(value))
}

pub fn service(name: &'static str, url: &str, bearer: Bearer) -> anyhow::Result<Service> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|error| anyhow::anyhow!("--{name} {url}: {error}"))?;
    Ok(Service {
        name,
        url: url.to_owned(),
        channel: InterceptedService::new(endpoint.connect_lazy(), bearer),
    })
}

impl Service {
    /// The response of a call, or an error a person can act on.
    pub fn answer<T>(&self, result: Result<Response<T>, Status>) -> anyhow::Result<T> {
        result
            .map(Response::into_inner)
            .map_err(|status| self.error(status))
    }

    fn error(&self, status: Status) -> anyhow::Error {
        let message = status.message();
        match status.code() {
            Code::Unavailable => anyhow::anyhow!(
                "cannot reach the {} at {} ({message}); is Picket running? (`make run`, or --{} URL)",
                self.name,
                self.url,
                self.name
            ),
            Code::Unauthenticated => anyhow::anyhow!("not authenticated: {message}"),
            Code::PermissionDenied => anyhow::anyhow!("permission denied: {message}"),
            Code::InvalidArgument => anyhow::anyhow!("invalid request: {message}"),
            Code::NotFound => anyhow::anyhow!("not found: {message}"),
            Code::FailedPrecondition => anyhow::anyhow!("refused: {message}"),
            Code::AlreadyExists => anyhow::anyhow!("already exists: {message}"),
            Code::Aborted => anyhow::anyhow!("conflict, try again: {message}"),
            code => anyhow::anyhow!("the {} failed ({code:?}): {message}", self.name),
        }
    }
}
