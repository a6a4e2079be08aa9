//! natter-server: a real-time chat server. One listener speaks native gRPC (HTTP/2),
//! gRPC-Web (HTTP/1.1) and plain HTTP; see [`run`].
//!
//! The public surface is what a binary or a test needs: [`Config`], [`build`], [`run`] and
//! [`shutdown_signal`]; the seams with their two implementations (for their contract
//! tests); telemetry setup. Everything else is internal.

#![warn(missing_docs)]

mod api;
mod auth;
mod coalesce;
pub mod config;
mod connections;
mod convert;
mod domain;
pub mod embedded;
mod error;
mod http;
pub mod ids;
mod invalid;
mod listener;
mod metrics;
mod passwords;
mod rate_limits;
pub mod records;
pub mod redis;
pub mod seams;
mod server;
mod service;
mod stream;
pub mod telemetry;
mod views;
mod wake_marks;
mod web_calls;
mod web_headers;
mod wire;

pub use config::Config;
pub use server::{administer, build, run, shutdown_signal};
pub use service::Natter;
