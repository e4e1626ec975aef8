//! Everything Vallum answers by itself: the `Reply` it writes, the pages it draws, and the one
//! place (`refusal`) that turns a typed refusal into a response.

pub mod grpc;
pub mod mcp;
pub mod pages;
pub mod refusal;
pub mod reply;
