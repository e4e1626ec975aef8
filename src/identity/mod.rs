//! The OpenID Connect relying party: discovery, the authorization-code flow with PKCE and nonce,
//! ID token validation (asymmetric algorithms only, JWKS refetched on an unknown `kid`), userinfo,
//! refresh, and the IdP's end-session URL.

pub mod bounded;
mod oidc;

pub use oidc::{check_claim_types, groups_from, Identity, IdpError, Oidc, PROTOCOL_CLAIMS};
