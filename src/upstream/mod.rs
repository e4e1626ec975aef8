//! Upstream pools: the backends of a route's `to`, how one is picked, how they are health-checked,
//! and how the connection to one is made (TLS, client certificate, timeouts).

pub mod breaker;
pub mod compile;
pub mod dns;
mod grpc_health;
mod health;
pub mod outlier;
mod pool;
pub mod serverless;

pub use health::{HealthKind, HealthSpec};
pub use pool::{InFlight, LbPolicy, Picked, Pool, PoolSpec, UpstreamTarget, UpstreamTls};
