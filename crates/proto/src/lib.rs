//! Fengqiao protobuf contracts (`proto/fengqiao/<domain>/v1`), compiled with protox at build time.
//!
//! Generated code is grouped by protobuf package; short aliases follow below.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

/// Generated code, one module per protobuf package.
pub mod fengqiao {
    /// `fengqiao.common.v1`
    pub mod common {
        /// Version 1.
        pub mod v1 {
            tonic::include_proto!("fengqiao.common.v1");
        }
    }
    /// `fengqiao.inbox.v1`
    pub mod inbox {
        /// Version 1.
        pub mod v1 {
            tonic::include_proto!("fengqiao.inbox.v1");
        }
    }
    /// `fengqiao.router.v1`
    pub mod router {
        /// Version 1.
        pub mod v1 {
            tonic::include_proto!("fengqiao.router.v1");
        }
    }
    /// `fengqiao.policereferral.v1`
    pub mod policereferral {
        /// Version 1.
        pub mod v1 {
            tonic::include_proto!("fengqiao.policereferral.v1");
        }
    }
    /// `fengqiao.mediation.v1`
    pub mod mediation {
        /// Version 1.
        pub mod v1 {
            tonic::include_proto!("fengqiao.mediation.v1");
        }
    }
    /// `fengqiao.courtdiversion.v1`
    pub mod courtdiversion {
        /// Version 1.
        pub mod v1 {
            tonic::include_proto!("fengqiao.courtdiversion.v1");
        }
    }
    /// `fengqiao.judicialconfirmation.v1`
    pub mod judicialconfirmation {
        /// Version 1.
        pub mod v1 {
            tonic::include_proto!("fengqiao.judicialconfirmation.v1");
        }
    }
    /// `fengqiao.admindispute.v1`
    pub mod admindispute {
        /// Version 1.
        pub mod v1 {
            tonic::include_proto!("fengqiao.admindispute.v1");
        }
    }
}

/// Vendored googleapis annotations (`proto/google/api/`), so that clients can read the
/// `google.api.field_behavior` and `google.api.resource` options of the descriptor set.
pub mod google {
    /// `google.api`
    pub mod api {
        tonic::include_proto!("google.api");
    }
}

pub use fengqiao::admindispute::v1 as admindispute;
pub use fengqiao::common::v1 as common;
pub use fengqiao::courtdiversion::v1 as courtdiversion;
pub use fengqiao::inbox::v1 as inbox;
pub use fengqiao::judicialconfirmation::v1 as judicialconfirmation;
pub use fengqiao::mediation::v1 as mediation;
pub use fengqiao::policereferral::v1 as policereferral;
pub use fengqiao::router::v1 as router;

/// The encoded `FileDescriptorSet` of every Fengqiao proto, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/fengqiao_descriptor.bin"));

/// The encoded `FileDescriptorSet` of `google.rpc.Status` and `google/rpc/error_details.proto`
/// (vendored under `proto/google/rpc/`), for writing error details as JSON.
pub const RPC_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/google_rpc_descriptor.bin"));
