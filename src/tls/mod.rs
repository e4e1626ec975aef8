//! TLS facts as plain data: the server certificates to present, the trusted client CAs, and what
//! a handshake established about the client. No live state: the hooks that read these per
//! handshake are in `server::tls_hooks`.

pub mod certs;
pub mod client_ca;
pub mod fallback;
pub mod peer;

pub use certs::CertStore;
