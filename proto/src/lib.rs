//! Picket's contracts: every gRPC service and event message, generated from `proto/picket` at build
//! time, and the event catalogue that ties each event to its area and subject token.

#![allow(clippy::doc_lazy_continuation, clippy::large_enum_variant)]

mod catalog;
pub mod limits;

pub use catalog::{Area, Event, EventVisitor, all_events, decode_event};
pub use pbjson_types;

/// One module per protobuf package: prost messages, tonic clients and servers, and serde in
/// canonical protobuf JSON.
macro_rules! packages {
    ($($area:ident => $package:literal),+ $(,)?) => {
        $(
            pub mod $area {
                pub mod v1 {
                    include!(concat!(env!("OUT_DIR"), "/", $package, ".rs"));
                    include!(concat!(env!("OUT_DIR"), "/", $package, ".serde.rs"));
                }
            }
        )+
    };
}

packages! {
    common => "picket.common.v1",
    tenants => "picket.tenants.v1",
    findings => "picket.findings.v1",
    fixes => "picket.fixes.v1",
    incidents => "picket.incidents.v1",
    notifications => "picket.notifications.v1",
    ledger => "picket.ledger.v1",
    offboarding => "picket.offboarding.v1",
}

/// The encoded `FileDescriptorSet` of every contract, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("descriptor");
