//! Integration tests: one binary, real sockets on free ports, the real `vallum` executable, real
//! upstream servers. Modules follow the checklist.

mod support;

mod apple;
mod authorize;
mod autocert;
mod balancing;
mod breaker;
mod cli;
mod compat;
mod demo;
mod devices;
mod dns;
mod docs;
mod downstream_tls;
pub mod fleet;
mod forward_auth;
mod github;
mod grpc;
mod headers;
mod idp_bearer;
mod lifecycle;
mod logging;
mod mtls;
mod ops;
mod paths;
mod pomerium_keys;
mod portal;
mod postgres;
pub mod programmatic;
mod reload;
mod rewrites;
mod route_client_ca;
mod routing;
mod security;
mod serverless;
mod shutdown;
pub mod signin;
mod split;
mod store;
mod traces;
mod tunnels;
mod unix_sockets;
mod upgrade;
mod upstream_tls;
mod websockets;
mod workload;
