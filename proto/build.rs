//! Generates the natter.v1 code. `protoc` comes from `protoc-bin-vendored`, so a fresh
//! machine needs no system protobuf compiler.

use std::{env, path::PathBuf};

const PROTOS: &[&str] = &[
    "natter/v1/types.proto",
    "natter/v1/auth.proto",
    "natter/v1/chat.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut prost_config = prost_build::Config::new();
    prost_config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);

    let server = env::var_os("CARGO_FEATURE_SERVER").is_some();
    let native_client = env::var_os("CARGO_FEATURE_CLIENT").is_some();
    let wasm_client = env::var_os("CARGO_FEATURE_WASM_CLIENT").is_some();
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    tonic_prost_build::configure()
        .build_server(false)
        .build_client(native_client || wasm_client)
        .build_transport(native_client)
        .file_descriptor_set_path(out_dir.join("natter_descriptor.bin"))
        .compile_with_config(prost_config, PROTOS, &["."])?;

    if server {
        // The services alone, in their own directory. Messages come from `crate::v1`, except
        // `Event`, which servers send as already-encoded bytes (`crate::EncodedEvent`): an
        // event fanned out to many streams is encoded once, not once per stream. The codec
        // starts each call's encode buffer small (`crate::ServerCodec`).
        let server_dir = out_dir.join("server");
        std::fs::create_dir_all(&server_dir)?;
        let mut prost_config = prost_build::Config::new();
        prost_config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
        tonic_prost_build::configure()
            .build_server(true)
            .build_client(false)
            .out_dir(&server_dir)
            .codec_path("crate::ServerCodec")
            .extern_path(".natter.v1.Event", "crate::EncodedEvent")
            .extern_path(".natter.v1", "crate::v1")
            .compile_with_config(prost_config, PROTOS, &["."])?;
    }

    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    Ok(())
}
