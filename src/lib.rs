//! Vallum: an identity-aware gateway on Pingora that speaks Pomerium's configuration.
//!
//! Layers, each importing only the ones listed before it (tests/architecture.rs enforces it):
//! `clock`, `crypto`, `tls` (plain data) → `policy` → `config` → `telemetry` → `session` →
//! `identity`, `headers`, `upstream` → `routes` → `snapshot` → `acme` → `respond` → `authn` →
//! `proxy` → `server` → `demo`, `cli`. The control plane (`config`, `snapshot`, `acme`, `server`)
//! builds immutable snapshots and certificates; the data plane (`proxy`, `routes`, `upstream`,
//! `policy`) only reads them.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod acme;
pub mod authn;
pub mod cli;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod demo;
pub mod headers;
pub mod identity;
pub mod policy;
pub mod proxy;
pub mod respond;
pub mod routes;
pub mod server;
pub mod session;
pub mod snapshot;
pub mod telemetry;
pub mod text;
pub mod tls;
pub mod upstream;
