//! Configuration: Pomerium-compatible YAML in, a validated snapshot out.
//!
//! Pipeline: file text → `load::parse` (YAML, environment overrides, unknown keys) →
//! `raw::RawSettings` + `raw::RawRoute`s → `settings::compile` and `routes::compile`
//! (validation, every error collected) → `runtime::Snapshot`, which the proxy reads.

pub mod auth;
pub mod autocert;
pub mod breaker;
pub mod devices;
pub mod dns;
pub mod duration;
pub mod error;
pub mod forward_auth;
pub mod idp;
pub mod keys;
pub mod load;
pub mod locate;
pub mod mcp;
pub mod mcp_auth;
pub mod mcp_upstream;
pub mod mtls;
pub mod ops;
pub mod otel;
pub mod pem;
pub mod postgres;
pub mod raw;
pub mod route_idp;
pub mod secret;
pub mod settings;
pub mod storage;
pub mod workload;

pub use error::{ConfigError, ConfigErrors};
pub use settings::Settings;
