//! Natter's API contract, package `natter.v1`, compiled by tonic-prost-build.
//!
//! Features pick what is generated: `server` (service traits and the descriptor set for
//! reflection), `client` (native clients over tonic's transport) and `wasm-client` (clients
//! without transport, for `tonic-web-wasm-client` in the browser).

/// Generated messages, enums, clients and servers of `natter.v1`.
pub mod v1 {
    #![allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
    tonic::include_proto!("natter.v1");
}

/// Encoded `FileDescriptorSet` of every natter.v1 file, served by gRPC reflection.
#[cfg(feature = "server")]
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("natter_descriptor");
