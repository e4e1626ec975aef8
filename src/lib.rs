//! Vallum: an identity-aware gateway on Pingora that speaks Pomerium's configuration.
//!
//! Control plane (`config`, `routes::compile`, `reload`) builds immutable snapshots
//! (`runtime::Runtime`); the data plane (`proxy`, `routes::table`, `upstream`) only reads them.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod authn;
pub mod config;
pub mod crypto;
pub mod demo;
pub mod headers;
pub mod identity;
pub mod login;
pub mod metrics;
pub mod mtls;
pub mod ops;
pub mod policy;
pub mod proxy;
pub mod redirect;
pub mod reload;
pub mod routes;
pub mod runtime;
pub mod server;
pub mod session;
pub mod tls;
pub mod tunnel;
pub mod upstream;
