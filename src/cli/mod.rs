//! The client and operator commands beside `run`: `vallum login` and `vallum tcp` (clients of a
//! running gateway), `vallum sessions` and `vallum devices` (operators, against the shared
//! store), and the Pomerium migration report `check-config` prints.

pub mod args;
pub mod login;
pub mod migrate;
pub mod sessions;
pub mod tcp;
