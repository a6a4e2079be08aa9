# Natter in one small image: natter-server and the web client it serves at /.
#
#   docker build -t natter .
#   docker run -p 8080:8080 -v natter-data:/data natter     (embedded store in /data)
#
# docker-compose.yml runs three of these behind nginx, sharing one Redis. The builder stages
# use the official Rust image (the workspace needs rustc >= 1.88, edition 2024); cargo-chef
# builds the dependencies in layers of their own, so a change to Natter's code rebuilds
# Natter only. The protobuf compiler comes from a crate (protoc-bin-vendored): no apt protoc.
# scripts/check-deploy lints this file (hadolint) without a Docker engine.

FROM rust:1.95-bookworm AS chef
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN cargo install cargo-chef --locked --version 0.1.77
WORKDIR /src

# The recipe: the workspace's manifests and Cargo.lock without the sources, so the cooked
# layers below stay cached until a dependency changes. Copying the whole context picks up
# new workspace members by itself; .dockerignore keeps target/, .git, secrets and data out.
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
# The web client's toolchain, installed the way scripts/build-web expects it: the wasm32
# target and wasm-bindgen-cli at the exact version natter-web pins, which scripts/lib.sh
# names (WASM_BINDGEN_VERSION) and installs without --locked (see the comment there). Only
# lib.sh is copied here, so this layer is rebuilt when that pin changes and not otherwise.
COPY scripts/lib.sh scripts/lib.sh
RUN source scripts/lib.sh && ensure_wasm_toolchain
COPY --from=planner /src/recipe.json recipe.json
# Dependencies only: the server's (release) and the web client's (wasm-release, for wasm32:
# the profile and target scripts/build-web builds with).
RUN cargo chef cook --release --locked --recipe-path recipe.json -p natter-server \
    && cargo chef cook --profile wasm-release --target wasm32-unknown-unknown --locked \
        --recipe-path recipe.json -p natter-web
COPY . .
# scripts/build-web writes frontend/dist (hashed, pre-gzipped assets and index.html).
RUN scripts/build-web \
    && cargo build --release --locked -p natter-server

# The runtime: the binary and the web client, nothing else. No ca-certificates: the server
# makes no TLS connections of its own (its Redis client is built without TLS).
FROM debian:bookworm-slim AS runtime
RUN groupadd --system --gid 10001 natter \
    && useradd --system --uid 10001 --gid natter --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin natter \
    && mkdir /data \
    && chown natter:natter /data
COPY --from=builder /src/target/release/natter-server /usr/local/bin/natter-server
COPY --from=builder /src/frontend/dist /app/web
WORKDIR /app
# NATTER_DATA_DIR holds the embedded store (and a generated JWT secret) when no Redis is
# given: mount a volume on /data to keep it. A new named volume takes the natter owner.
ENV NATTER_LISTEN=0.0.0.0:8080 NATTER_DATA_DIR=/data NATTER_STATIC_DIR=/app/web
EXPOSE 8080
# The natter user, by number: an orchestrator can then see it is not root (runAsNonRoot).
USER 10001:10001
# Ready = store and bus reachable and not draining: /readyz answers 200, else 503 (Redis
# down, or draining after SIGTERM). No curl in the image: bash's /dev/tcp speaks the HTTP/1.0
# request, on the port NATTER_LISTEN names.
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=3 \
    CMD ["bash", "-c", "l=${NATTER_LISTEN:-0.0.0.0:8080}; exec 3<>/dev/tcp/127.0.0.1/${l##*:} && printf 'GET /readyz HTTP/1.0\\r\\nhost: localhost\\r\\n\\r\\n' >&3 && head -n1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["/usr/local/bin/natter-server"]
