//! taskplane's wire API, package `taskplane.v1`.
//!
//! - [`v1`]: messages and the generated `TaskService`, `RegistryService` and
//!   `AgentService` clients and servers (built from a `tonic::transport::Channel`).
//! - [`FILE_DESCRIPTOR_SET`]: the encoded descriptors, well-known types
//!   included, that server reflection serves.
//! - [`json`]: lossless-as-possible conversion between `google.protobuf.Struct`
//!   and `serde_json`, used wherever payloads and results cross the wire.
//! - [`names`]: the grammar of task type and domain names.
//! - [`trace`]: the W3C `traceparent` a task carries from client to handler.

#![warn(missing_docs)]

pub mod codec;
pub mod json;
pub mod limits;
pub mod names;
pub mod trace;

/// Generated code for `taskplane.v1`; never edited by hand. It is checked
/// in (`src/generated/`), so building this crate needs no protobuf
/// compiler; `tests/generated_code.rs` compiles the protos again and fails
/// (rewriting the files) when they and the code disagree.
pub mod v1 {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    include!("generated/taskplane.v1.rs");
}

impl v1::TaskStatus {
    /// The status's name without the enum's `TASK_STATUS_` prefix
    /// (`PENDING`, `COMPLETED`, …): how the CLI and the console show it.
    pub fn short_name(self) -> &'static str {
        self.as_str_name().trim_start_matches("TASK_STATUS_")
    }
}

/// The encoded `FileDescriptorSet` of every taskplane proto and its imports.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!("generated/taskplane_descriptor.bin");

pub use prost_types;

#[cfg(test)]
mod tests {
    use super::v1::TaskStatus;

    #[test]
    fn a_status_is_shown_without_its_enum_prefix() {
        assert_eq!(TaskStatus::Completed.short_name(), "COMPLETED");
        assert_eq!(TaskStatus::Dead.short_name(), "DEAD");
    }
}
