//! Integration tests of natter-server: one binary, one module per area (zero2prod style).

#![allow(unreachable_pub)]

mod abuse;
mod accounts;
mod bad_input;
mod bad_input_calls;
mod cluster;
mod grpc_web;
mod heartbeats;
mod helpers;
mod limits;
mod messages;
mod moderation;
mod persistence;
mod presence;
mod probes;
mod pubsub;
mod rate_limits;
mod redis_durability;
mod redis_server;
mod rooms;
mod scale;
mod sessions;
mod slow_readers;
mod store_contract;
mod storms;
mod streams;
mod stuck_readers;
