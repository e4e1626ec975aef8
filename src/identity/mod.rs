//! The identity provider: an OpenID Connect relying party (discovery, the authorization-code flow
//! with PKCE and nonce, ID token validation with asymmetric algorithms only and the JWKS refetched
//! on an unknown `kid`, userinfo, refresh, the IdP's end-session URL), or GitHub's OAuth 2.0 with
//! its REST API; `Provider` is what the rest of Vallum holds.

pub mod bounded;
mod github;
mod oidc;
mod provider;
mod registry;
pub mod workload;

pub use oidc::{
    check_claim_types, groups_from, unverified_issuer, Identity, IdpError, Oidc, PROTOCOL_CLAIMS,
};
pub use provider::Provider;
pub use registry::Providers;
