//! Compiles every `.proto` file under `picket/` with protox, so no system protoc is needed.

use std::path::{Path, PathBuf};

fn collect_protos(dir: &Path, found: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(&path, found)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            found.push(path);
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=picket");
    let mut proto_files = Vec::new();
    collect_protos(Path::new("picket"), &mut proto_files)?;
    proto_files.sort();
    let descriptors = protox::compile(&proto_files, ["."])?;

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let encoded = prost::Message::encode_to_vec(&descriptors);
    // Served by gRPC reflection; compile_fds does not write it itself.
    std::fs::write(out_dir.join("descriptor.bin"), &encoded)?;

    let mut prost_config = tonic_prost_build::Config::new();
    // `prost::Name` gives each event its fully qualified type, which is its CloudEvents `ce-type`.
    prost_config.enable_type_names();
    tonic_prost_build::configure()
        // Well-known types from pbjson-types serialize to canonical protobuf JSON (webhooks, tools).
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::pbjson_types")
        // Services implement only the rpcs their issue delivered; the rest answer UNIMPLEMENTED.
        .generate_default_stubs(true)
        .compile_fds_with_config(descriptors, prost_config)?;
    pbjson_build::Builder::new()
        .register_descriptors(&encoded)?
        .out_dir(&out_dir)
        .build(&[".picket"])?;
    Ok(())
}
