//! Compiles `taskplane/v1/*.proto` with protox (pure Rust, no system
//! `protoc`), generates the tonic services, and writes the encoded descriptor
//! set that server reflection serves.

use std::path::PathBuf;

use prost::Message;

const PROTOS: &[&str] = &[
    "taskplane/v1/task.proto",
    "taskplane/v1/registry.proto",
    "taskplane/v1/agent.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(PROTOS, ["."])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("taskplane_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        // An RPC named `Connect` would clash with the transport constructor
        // `connect`: clients are built from a `Channel` instead.
        .build_transport(false)
        .compile_fds(descriptors)?;
    Ok(())
}
