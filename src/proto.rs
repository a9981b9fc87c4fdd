//! Code generated from `proto/` by `build.rs`, and the encoded descriptor set
//! embedded once for server reflection, the policy table and the gateway.

/// Tenantry's own API, package `tenantry.v1`.
pub mod tenantry {
    /// Version 1 of the API.
    pub mod v1 {
        #![allow(clippy::doc_lazy_continuation, clippy::large_enum_variant)]
        include!(concat!(env!("OUT_DIR"), "/tenantry.v1.rs"));
    }
}

/// `google.api`: our minimal copy of the HTTP rules (REST transcoding) and the
/// official field behaviours (OpenAPI `required`, `readOnly`).
pub mod google {
    /// The `google.api` package.
    pub mod api {
        #![allow(clippy::doc_lazy_continuation)]
        include!(concat!(env!("OUT_DIR"), "/google.api.rs"));
    }
}

/// The encoded `FileDescriptorSet` of every file under `proto/`, with imports,
/// custom options and source comments.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/tenantry_descriptor.bin"));

/// The embedded descriptor set, decoded once on first use (update masks read
/// field names from it).
pub fn descriptors() -> &'static prost_reflect::DescriptorPool {
    static POOL: std::sync::OnceLock<prost_reflect::DescriptorPool> = std::sync::OnceLock::new();
    // Embedded at build time and decoded by every test: a failure is a build bug.
    POOL.get_or_init(|| {
        prost_reflect::DescriptorPool::decode(FILE_DESCRIPTOR_SET).expect("the embedded descriptors decode")
    })
}

/// The package all Tenantry services live in.
pub const PACKAGE: &str = "tenantry.v1";

/// A protobuf timestamp for a UTC time.
pub fn timestamp(time: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: time.timestamp(), nanos: time.timestamp_subsec_nanos() as i32 }
}

/// The UTC time of a protobuf timestamp, if it is a valid one.
pub fn from_timestamp(ts: &prost_types::Timestamp) -> Option<chrono::DateTime<chrono::Utc>> {
    u32::try_from(ts.nanos).ok().and_then(|nanos| chrono::DateTime::from_timestamp(ts.seconds, nanos))
}
