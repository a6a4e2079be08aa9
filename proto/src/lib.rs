//! Natter's API contract, package `natter.v1`, compiled by tonic-prost-build.
//!
//! Features pick what is generated: `server` (service traits and the descriptor set for
//! reflection), `client` (native clients over tonic's transport) and `wasm-client` (clients
//! without transport, for `tonic-web-wasm-client` in the browser).

/// Generated messages, enums and clients of `natter.v1`.
pub mod v1 {
    #![allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
    tonic::include_proto!("natter.v1");

    /// Generated service traits. Their streaming RPCs send [`crate::EncodedEvent`]s.
    #[cfg(feature = "server")]
    pub mod server {
        #![allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
        include!(concat!(env!("OUT_DIR"), "/server/natter.v1.rs"));
    }
}

/// Encoded `FileDescriptorSet` of every natter.v1 file, served by gRPC reflection.
#[cfg(feature = "server")]
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("natter_descriptor");

#[cfg(feature = "server")]
pub use encoded::EncodedEvent;

#[cfg(feature = "server")]
mod encoded {
    use bytes::{Buf, BufMut, Bytes};
    use prost::{
        DecodeError, Message,
        encoding::{DecodeContext, WireType, skip_field},
    };

    use crate::v1::Event;

    /// An `Event` already in its protobuf encoding. Servers fan one event out to many
    /// streams: encoding it once and cloning the `Bytes` (a reference count) per stream
    /// replaces one serialisation per subscriber with one copy into the frame buffer.
    ///
    /// Send-only: decoding into it keeps nothing (clients decode `v1::Event`).
    #[derive(Clone, Debug, Default, PartialEq, Eq)]
    pub struct EncodedEvent(pub Bytes);

    impl From<&Event> for EncodedEvent {
        fn from(event: &Event) -> Self {
            Self(event.encode_to_vec().into())
        }
    }

    impl Message for EncodedEvent {
        fn encode_raw(&self, buf: &mut impl BufMut) {
            buf.put_slice(&self.0);
        }

        fn merge_field(
            &mut self,
            tag: u32,
            wire_type: WireType,
            buf: &mut impl Buf,
            ctx: DecodeContext,
        ) -> Result<(), DecodeError> {
            skip_field(wire_type, tag, buf, ctx)
        }

        fn encoded_len(&self) -> usize {
            self.0.len()
        }

        fn clear(&mut self) {
            self.0 = Bytes::new();
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::v1::{Heartbeat, event};

        #[test]
        fn encoded_events_decode_as_the_event() {
            let event = Event {
                event: Some(event::Event::Heartbeat(Heartbeat { server_time: 42 })),
            };
            let encoded = EncodedEvent::from(&event);
            let mut framed = Vec::new();
            encoded.encode(&mut framed).unwrap();
            assert_eq!(encoded.encoded_len(), framed.len());
            assert_eq!(Event::decode(framed.as_slice()).unwrap(), event);
        }
    }
}
