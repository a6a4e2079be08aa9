//! natter-cli: a native gRPC client for Natter, as a library (used by the `natter` binary,
//! tests and benchmarks).

pub mod client;
pub mod follow;
pub mod format;
pub mod send;
pub mod session;
