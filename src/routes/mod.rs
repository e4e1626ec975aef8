//! Routes: compiled from config (`compile`), indexed by host (`table`), matched on the single
//! normalised path (`path`).

pub mod compile;
mod matching;
pub mod path;
pub mod route;
mod shaping;
pub mod table;

pub use route::{Access, Action, HostHeader, PathMatch, PathRewrite, Route};
pub use table::RouteTable;
