//! Every request is held to the limits of `picket_proto::limits` before any work: the gRPC server
//! reads the request (at most [`MAX_READ_BYTES`]), walks its protobuf encoding with the contract's
//! descriptors, and answers INVALID_ARGUMENT naming the first field over its limit (`message: at
//! most 4096 bytes`), or the request when it is larger than [`MAX_REQUEST_BYTES`] in all. Nothing
//! is decoded into a handler's types until then; a request that is not protobuf at all is refused
//! the same way.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http_body_util::BodyExt;
use picket_proto::limits::{MAX_READ_BYTES, MAX_REQUEST_BYTES, item_limit, text_limit};
use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use tonic::Status;
use tower::{Layer, Service};

/// Nested messages deeper than this are refused (prost itself stops at 100).
const MAX_DEPTH: usize = 32;

#[derive(Debug, Clone, Copy)]
enum Kind {
    Text,
    Message(usize),
    Varint,
    Fixed32,
    Fixed64,
}

#[derive(Debug)]
struct Field {
    name: String,
    kind: Kind,
    repeated: bool,
    text_limit: usize,
    item_limit: usize,
}

#[derive(Debug, Default)]
struct Shape {
    fields: HashMap<u32, Field>,
}

/// The shapes of every request message, by rpc path (`/picket.x.v1.Service/Method`).
#[derive(Debug, Default)]
pub struct RequestLimits {
    methods: HashMap<String, usize>,
    shapes: Vec<Shape>,
}

fn kind_of(field: &prost_types::FieldDescriptorProto, index: &HashMap<String, usize>) -> Kind {
    match field.r#type() {
        Type::String | Type::Bytes => Kind::Text,
        Type::Message | Type::Group => index
            .get(field.type_name())
            .map_or(Kind::Varint, |shape| Kind::Message(*shape)),
        Type::Fixed32 | Type::Sfixed32 | Type::Float => Kind::Fixed32,
        Type::Fixed64 | Type::Sfixed64 | Type::Double => Kind::Fixed64,
        _ => Kind::Varint,
    }
}

impl RequestLimits {
    /// The limits of the contracts in an encoded `FileDescriptorSet`.
    pub fn from_descriptors(encoded: &[u8]) -> Result<RequestLimits, prost::DecodeError> {
        let set = prost_types::FileDescriptorSet::decode(encoded)?;
        // Every message type (nested ones and map entries included) by its full name.
        let mut messages: Vec<(String, &prost_types::DescriptorProto)> = Vec::new();
        fn collect<'a>(
            prefix: &str,
            message: &'a prost_types::DescriptorProto,
            into: &mut Vec<(String, &'a prost_types::DescriptorProto)>,
        ) {
            let name = format!("{prefix}.{}", message.name());
            for nested in &message.nested_type {
                collect(&name, nested, into);
            }
            into.push((name, message));
        }
        for file in &set.file {
            for message in &file.message_type {
                collect(&format!(".{}", file.package()), message, &mut messages);
            }
        }
        let index: HashMap<String, usize> = messages
            .iter()
            .enumerate()
            .map(|(position, (name, _))| (name.clone(), position))
            .collect();
        let shapes = messages
            .iter()
            .map(|(_, message)| Shape {
                fields: message
                    .field
                    .iter()
                    .map(|field| {
                        let name = field.name().to_owned();
                        let shape = Field {
                            kind: kind_of(field, &index),
                            repeated: field.label() == Label::Repeated,
                            text_limit: text_limit(&name),
                            item_limit: item_limit(&name),
                            name,
                        };
                        (field.number() as u32, shape)
                    })
                    .collect(),
            })
            .collect();
        let mut methods = HashMap::new();
        for file in &set.file {
            for service in &file.service {
                for method in &service.method {
                    if let Some(shape) = index.get(method.input_type()) {
                        let path =
                            format!("/{}.{}/{}", file.package(), service.name(), method.name());
                        methods.insert(path, *shape);
                    }
                }
            }
        }
        Ok(RequestLimits { methods, shapes })
    }

    /// Checks one request message of the rpc at `path`; rpcs of other contracts pass.
    pub fn check(&self, path: &str, message: &[u8]) -> Result<(), Status> {
        if message.len() > MAX_REQUEST_BYTES {
            // Name the field if one is the cause; otherwise the request as a whole.
            if let Some(shape) = self.methods.get(path) {
                self.check_message(*shape, message, "", 0)?;
            }
            return Err(Status::invalid_argument(format!(
                "request: at most {MAX_REQUEST_BYTES} bytes"
            )));
        }
        match self.methods.get(path) {
            Some(shape) => self.check_message(*shape, message, "", 0),
            None => Ok(()),
        }
    }

    fn check_message(
        &self,
        shape: usize,
        mut message: &[u8],
        prefix: &str,
        depth: usize,
    ) -> Result<(), Status> {
        let malformed = || Status::invalid_argument("request: not a valid protobuf message");
        if depth > MAX_DEPTH {
            return Err(Status::invalid_argument(format!(
                "request: nested more than {MAX_DEPTH} levels"
            )));
        }
        let shape = &self.shapes[shape];
        let mut counts: HashMap<u32, usize> = HashMap::new();
        while message.has_remaining() {
            let key = prost::encoding::decode_varint(&mut message).map_err(|_| malformed())?;
            let number = (key >> 3) as u32;
            let wire_type = key & 7;
            let field = shape.fields.get(&number);
            let length = match wire_type {
                0 => {
                    prost::encoding::decode_varint(&mut message).map_err(|_| malformed())?;
                    *counts.entry(number).or_default() += 1;
                    continue;
                }
                1 => 8,
                5 => 4,
                2 => {
                    prost::encoding::decode_varint(&mut message).map_err(|_| malformed())? as usize
                }
                _ => return Err(malformed()),
            };
            if message.remaining() < length {
                return Err(malformed());
            }
            let (value, rest) = message.split_at(length);
            message = rest;
            let Some(field) = field else {
                continue;
            };
            let name = || format!("{prefix}{}", field.name);
            let items = match (wire_type, field.kind) {
                (2, Kind::Text) => {
                    if value.len() > field.text_limit {
                        return Err(Status::invalid_argument(format!(
                            "{}: at most {} bytes",
                            name(),
                            field.text_limit
                        )));
                    }
                    1
                }
                (2, Kind::Message(nested)) => {
                    self.check_message(nested, value, &format!("{}.", name()), depth + 1)?;
                    1
                }
                // Packed scalars: one item per varint, or per fixed-size value.
                (2, Kind::Varint) => value.iter().filter(|byte| **byte < 0x80).count(),
                (2, Kind::Fixed32) => value.len() / 4,
                (2, Kind::Fixed64) => value.len() / 8,
                _ => 1,
            };
            *counts.entry(number).or_default() += items;
        }
        for (number, count) in counts {
            if let Some(field) = shape.fields.get(&number)
                && field.repeated
                && count > field.item_limit
            {
                return Err(Status::invalid_argument(format!(
                    "{prefix}{}: at most {} items",
                    field.name, field.item_limit
                )));
            }
        }
        Ok(())
    }

    /// Checks every message of a gRPC request body (5-byte frame header, then the message).
    fn check_body(&self, path: &str, mut body: &[u8]) -> Result<(), Status> {
        while !body.is_empty() {
            if body.len() < 5 {
                return Err(Status::invalid_argument("request: not a gRPC message"));
            }
            let compressed = body[0] != 0;
            let length = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
            let rest = &body[5..];
            if rest.len() < length {
                return Err(Status::invalid_argument("request: not a gRPC message"));
            }
            // A compressed message is refused by tonic itself: no server accepts compression.
            if !compressed {
                self.check(path, &rest[..length])?;
            }
            body = &rest[length..];
        }
        Ok(())
    }
}

/// The layer in front of every gRPC server that enforces [`RequestLimits`].
#[derive(Clone)]
pub struct RequestLimitsLayer {
    limits: Arc<RequestLimits>,
}

impl RequestLimitsLayer {
    pub fn new(limits: Arc<RequestLimits>) -> RequestLimitsLayer {
        RequestLimitsLayer { limits }
    }
}

impl<S> Layer<S> for RequestLimitsLayer {
    type Service = Limited<S>;

    fn layer(&self, inner: S) -> Limited<S> {
        Limited {
            inner,
            limits: self.limits.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Limited<S> {
    inner: S,
    limits: Arc<RequestLimits>,
}

type Request = http::Request<tonic::body::Body>;
type Response = http::Response<tonic::body::Body>;

impl<S> Service<Request> for Limited<S>
where
    S: Service<Request, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        // The ready service answers this call; a fresh clone takes its place for the next one.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let limits = self.limits.clone();
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let read = http_body_util::Limited::new(body, MAX_READ_BYTES)
                .collect()
                .await;
            let bytes: Bytes = match read {
                Ok(collected) => collected.to_bytes(),
                Err(_) => {
                    return Ok(Status::resource_exhausted(format!(
                        "request: larger than {MAX_READ_BYTES} bytes"
                    ))
                    .into_http());
                }
            };
            if let Err(status) = limits.check_body(parts.uri.path(), &bytes) {
                tracing::debug!(rpc = parts.uri.path(), %status, "request refused by its limits");
                return Ok(status.into_http());
            }
            let body = tonic::body::Body::new(http_body_util::Full::new(bytes));
            inner.call(http::Request::from_parts(parts, body)).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use picket_proto::tenants::v1 as tenants;

    fn limits() -> RequestLimits {
        RequestLimits::from_descriptors(picket_proto::FILE_DESCRIPTOR_SET).expect("descriptors")
    }

    const FORWARD: &str = "/picket.tenants.v1.TenantService/ForwardConsent";

    #[test]
    fn a_field_over_its_limit_is_named_with_the_limit() {
        let request = tenants::ForwardConsentRequest {
            tenant_id: "t".into(),
            recipient_email: "a@b.c".into(),
            message: "x".repeat(3 * 1024 * 1024),
            ..Default::default()
        };
        let status = limits()
            .check(FORWARD, &request.encode_to_vec())
            .expect_err("refused");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(status.message(), "message: at most 4096 bytes");
    }

    #[test]
    fn fields_within_their_limits_pass_and_other_contracts_are_not_checked() {
        let request = tenants::ForwardConsentRequest {
            tenant_id: "t".into(),
            message: "x".repeat(4096),
            ..Default::default()
        };
        limits()
            .check(FORWARD, &request.encode_to_vec())
            .expect("within limits");
        limits()
            .check("/grpc.health.v1.Health/Check", &[0xff; 16])
            .expect("not a Picket contract");
    }

    #[test]
    fn nested_and_repeated_fields_are_held_to_their_limits() {
        use picket_proto::incidents::v1 as incidents;
        let path = "/picket.incidents.v1.AuthorityService/UpdateAuthorityMap";
        let owner = |name: String| incidents::AuthorityOwner {
            display_name: name,
            ..Default::default()
        };
        let with_owners = |owners: Vec<incidents::AuthorityOwner>| {
            incidents::UpdateAuthorityMapRequest {
                map: Some(incidents::AuthorityMap {
                    owners,
                    ..Default::default()
                }),
                ..Default::default()
            }
            .encode_to_vec()
        };
        let status = limits()
            .check(path, &with_owners(vec![owner("x".repeat(2000))]))
            .expect_err("a long name");
        assert_eq!(
            status.message(),
            "map.owners.display_name: at most 1024 bytes"
        );
        let status = limits()
            .check(
                path,
                &with_owners((0..257).map(|_| owner("o".into())).collect()),
            )
            .expect_err("too many owners");
        assert_eq!(status.message(), "map.owners: at most 256 items");
        let status = limits()
            .check(
                "/picket.incidents.v1.PolicyService/CreateAutoApproveRule",
                &incidents::CreateAutoApproveRuleRequest {
                    tenant_ids: (0..1001).map(|index| index.to_string()).collect(),
                    ..Default::default()
                }
                .encode_to_vec(),
            )
            .expect_err("too many tenants");
        assert_eq!(status.message(), "tenant_ids: at most 1000 items");
    }

    #[test]
    fn bytes_that_are_not_protobuf_are_refused_clearly() {
        let status = limits()
            .check(FORWARD, &[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01])
            .expect_err("refused");
        assert_eq!(status.message(), "request: not a valid protobuf message");
    }
}
