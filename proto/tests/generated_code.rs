//! The checked-in generated code (`src/generated/`) is what the protos
//! compile to today. The protos are compiled with protox (pure Rust: no
//! system `protoc`); the same descriptor set is the input of code
//! generation and what server reflection serves, so the two cannot disagree.
//!
//! After a change to a `.proto` file, run `cargo test -p taskplane-proto`:
//! this test rewrites the stale files, fails once saying so, and passes
//! from then on. Commit the rewritten files with the change.

use std::path::{Path, PathBuf};

use prost::Message;

const PROTOS: &[&str] = &[
    "taskplane/v1/task.proto",
    "taskplane/v1/registry.proto",
    "taskplane/v1/agent.proto",
    "taskplane/v1/schedule.proto",
];

/// The generated files, by name: the Rust code and the descriptor set.
const GENERATED: &[&str] = &["taskplane.v1.rs", "taskplane_descriptor.bin"];

/// Compiles the protos into `out_dir`.
fn generate(out_dir: &Path) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let descriptors = protox::compile(PROTOS, [root]).expect("the protos compile");
    std::fs::write(
        out_dir.join("taskplane_descriptor.bin"),
        descriptors.encode_to_vec(),
    )
    .unwrap();
    tonic_prost_build::configure()
        // An RPC named `Connect` would clash with the transport constructor
        // `connect`: clients are built from a `Channel` instead.
        .build_transport(false)
        // Undecodable bytes are INVALID_ARGUMENT (src/codec.rs).
        .codec_path("crate::codec::WireCodec")
        .out_dir(out_dir)
        .compile_fds(descriptors)
        .expect("the code generates");
}

#[test]
fn the_checked_in_code_is_what_the_protos_generate() {
    let fresh = tempfile::tempdir().unwrap();
    generate(fresh.path());
    let checked_in = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/generated");
    let mut stale = Vec::new();
    for name in GENERATED {
        let generated = std::fs::read(fresh.path().join(name)).unwrap();
        let kept = std::fs::read(checked_in.join(name)).unwrap_or_default();
        if generated != kept {
            std::fs::write(checked_in.join(name), generated).unwrap();
            stale.push(*name);
        }
    }
    assert!(
        stale.is_empty(),
        "src/generated/{stale:?} did not match the protos and were rewritten: \
         build again and commit them"
    );
}
