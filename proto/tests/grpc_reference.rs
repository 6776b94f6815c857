//! `docs/grpc-api.md` documents every gRPC service and rpc: a heading `## <package>.<Service>` per
//! service with a `### <Rpc>` per rpc under it, and nothing that no longer exists.

use prost::Message;
use prost_types::FileDescriptorSet;

#[test]
fn the_grpc_reference_documents_every_service_and_rpc() {
    let reference =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/grpc-api.md"))
            .expect("docs/grpc-api.md");
    let descriptors =
        FileDescriptorSet::decode(picket_proto::FILE_DESCRIPTOR_SET).expect("descriptors");

    // What the contracts define: each service with its rpcs, in order.
    let mut defined = Vec::new();
    for file in &descriptors.file {
        for service in &file.service {
            let name = format!("{}.{}", file.package(), service.name());
            let rpcs: Vec<String> = service.method.iter().map(|m| m.name().to_owned()).collect();
            defined.push((name, rpcs));
        }
    }
    defined.sort();

    // What the reference documents: `## picket.…` headings with their `### ` rpcs.
    let mut documented: Vec<(String, Vec<String>)> = Vec::new();
    for line in reference.lines() {
        if let Some(service) = line.strip_prefix("## picket.") {
            documented.push((format!("picket.{}", service.trim()), Vec::new()));
        } else if let Some(rpc) = line.strip_prefix("### ")
            && let Some((_, rpcs)) = documented.last_mut()
        {
            rpcs.push(rpc.trim().to_owned());
        }
    }
    for (_, rpcs) in &mut documented {
        rpcs.sort();
    }
    documented.sort();
    for (_, rpcs) in &mut defined {
        rpcs.sort();
    }
    assert_eq!(
        documented, defined,
        "docs/grpc-api.md must have a `## <package>.<Service>` heading per service and a `### <Rpc>` per rpc"
    );
}
