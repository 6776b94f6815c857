//! A gRPC client of raw protobuf bytes: for tests that send what no generated client would
//! (oversized or malformed requests) or build requests from the contract descriptors.

use std::collections::HashMap;

use bytes::{Buf, BufMut};
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// Sends and receives raw protobuf bytes, to send what no generated client would.
#[derive(Default)]
struct RawCodec;

struct RawEncoder;
struct RawDecoder;

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        destination: &mut EncodeBuf<'_>,
    ) -> Result<(), Self::Error> {
        destination.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, source: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Self::Error> {
        let mut bytes = vec![0; source.remaining()];
        source.copy_to_slice(&mut bytes);
        Ok(Some(bytes))
    }
}

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

/// Calls the rpc at `path` (`/package.Service/Method`) with `body` as its encoded request;
/// returns the encoded response.
pub async fn call(
    channel: &tonic::transport::Channel,
    token: &str,
    path: &str,
    body: Vec<u8>,
) -> Result<Vec<u8>, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|error| tonic::Status::unavailable(error.to_string()))?;
    let mut request = tonic::Request::new(body);
    let value = format!("Bearer {token}").parse().expect("ascii token");
    request.metadata_mut().insert("authorization", value);
    let path = path.parse().expect("an rpc path");
    grpc.unary(request, path, RawCodec)
        .await
        .map(tonic::Response::into_inner)
}

/// One length-delimited field (string, bytes or message) of number `field_number`.
pub fn length_delimited(field_number: i32, value: &[u8]) -> Vec<u8> {
    let mut encoded = Vec::with_capacity(value.len() + 10);
    prost::encoding::encode_key(
        field_number as u32,
        prost::encoding::WireType::LengthDelimited,
        &mut encoded,
    );
    prost::encoding::encode_varint(value.len() as u64, &mut encoded);
    encoded.extend_from_slice(value);
    encoded
}

/// One varint field (integer, enum or bool) of number `field_number`.
pub fn varint(field_number: i32, value: u64) -> Vec<u8> {
    let mut encoded = Vec::with_capacity(12);
    prost::encoding::encode_key(
        field_number as u32,
        prost::encoding::WireType::Varint,
        &mut encoded,
    );
    prost::encoding::encode_varint(value, &mut encoded);
    encoded
}

/// Every contract's descriptors, and its messages by full name (`.picket.x.v1.Name`).
pub fn contracts() -> (
    prost_types::FileDescriptorSet,
    HashMap<String, prost_types::DescriptorProto>,
) {
    let set = prost_types::FileDescriptorSet::decode(picket_proto::FILE_DESCRIPTOR_SET)
        .expect("the contracts' descriptors");
    let mut messages = HashMap::new();
    for file in &set.file {
        for message in &file.message_type {
            messages.insert(
                format!(".{}.{}", file.package(), message.name()),
                message.clone(),
            );
        }
    }
    (set, messages)
}
