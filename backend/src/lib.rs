//! natter-server: a real-time chat server. One listener speaks native gRPC (HTTP/2),
//! gRPC-Web (HTTP/1.1) and plain HTTP; see `server::run`.

pub mod api;
pub mod auth;
pub mod config;
pub mod convert;
pub mod domain;
pub mod embedded;
pub mod error;
pub mod http;
mod listener;
pub mod metrics;
pub mod passwords;
pub mod records;
pub mod redis;
pub mod seams;
pub mod server;
pub mod service;
pub mod stream;
pub mod telemetry;
mod wire;

pub use config::Config;
pub use server::{build, run, shutdown_signal};
