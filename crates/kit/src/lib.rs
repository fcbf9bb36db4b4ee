//! Server kit shared by every Fengqiao service.
//!
//! - [`config`]: flags, environment and file, `--dump-config`;
//! - [`telemetry`]: JSON logs, OpenTelemetry spans, W3C trace context in and out;
//! - [`metrics`]: Prometheus text on the admin port;
//! - [`auth`]: signed bearer tokens and the verified [`auth::Identity`];
//! - [`error`]: the one mapping of errors to `tonic::Status` with `google.rpc` details, and
//!   [`reason`]: the one catalogue of stable error reasons;
//! - [`gateway`]: JSON over HTTP for every RPC, from the contracts' `google.api.http` rules;
//! - [`server`]: the per-RPC middleware, health, reflection and graceful shutdown;
//! - [`client`]: channels and interceptors for calling other services;
//! - [`module`]: what a service crate gives the binary to be started (the service registry);
//! - [`memory`]: freed heap memory given back to the system after a burst;
//! - [`time`], [`etag`], [`validate`]: the conversions and checks every service shares.
//! - [`agency`], [`deliveries`], [`lifecycle`], [`records`], [`acts`]: what the agency
//!   services' handlers, inboxes, transition tables, stores and acts on records share;
//!   [`handler`]: the gRPC impls that forward to inherent handlers and the steps around them;
//!   [`transfers`]: the transfer states, the case snapshot and the create-transfer request;
//!   [`sequenced`]: rows appended to a record's numbered list.

pub mod acts;
pub mod agency;
pub mod auth;
pub mod client;
pub mod config;
pub mod deliveries;
pub mod error;
pub mod etag;
pub mod gateway;
pub mod handler;
pub mod idem;
pub mod inbox;
pub mod lifecycle;
pub mod memory;
pub mod metrics;
pub mod module;
pub mod pii;
pub mod pull;
pub mod reason;
pub mod records;
pub mod sequenced;
pub mod server;
pub mod telemetry;
pub mod time;
pub mod transfers;
pub mod validate;

pub use auth::Identity;
pub use error::{ApiError, Error, FieldViolation, Reason};
