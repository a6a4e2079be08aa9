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
pub use encoded::{EncodedEvent, FramedEvent};

#[cfg(feature = "server")]
pub use server_codec::ServerCodec;

#[cfg(feature = "server")]
mod server_codec {
    use std::marker::PhantomData;

    use prost::Message;
    use tonic::codec::{BufferSettings, Codec};
    use tonic_prost::{ProstDecoder, ProstEncoder};

    /// First allocation of a call's encode and decode buffers: one event, frame or answer
    /// fits (they are a few hundred bytes), and a burst grows them as needed. tonic's
    /// default, 8 KiB each, is allocated up front for every call and kept while the call is
    /// open, which for a chat server means for every idle stream.
    const INITIAL_BUFFER: usize = 512;
    /// Encoded bytes gathered before they go to the connection: tonic's default. Events
    /// ready together still leave in one write.
    const YIELD_THRESHOLD: usize = 32 * 1024;

    /// The server's codec: prost, with [`INITIAL_BUFFER`] instead of tonic's 8 KiB.
    #[derive(Debug, Clone, Copy)]
    pub struct ServerCodec<T, U>(PhantomData<(T, U)>);

    impl<T, U> Default for ServerCodec<T, U> {
        fn default() -> Self {
            Self(PhantomData)
        }
    }

    impl<T, U> Codec for ServerCodec<T, U>
    where
        T: Message + Send + 'static,
        U: Message + Default + Send + 'static,
    {
        type Encode = T;
        type Decode = U;
        type Encoder = ProstEncoder<T>;
        type Decoder = ProstDecoder<U>;

        fn encoder(&mut self) -> Self::Encoder {
            ProstEncoder::new(BufferSettings::new(INITIAL_BUFFER, YIELD_THRESHOLD))
        }

        fn decoder(&mut self) -> Self::Decoder {
            ProstDecoder::new(BufferSettings::new(INITIAL_BUFFER, YIELD_THRESHOLD))
        }
    }
}

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

    /// An `Event` as one gRPC message on the wire: the 5-byte prefix (uncompressed, then the
    /// length, big-endian) and the encoding. A server's stream body writes it as is: an event
    /// fanned out to many streams is framed once, and a chunk of one event is these bytes,
    /// shared, not a copy.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct FramedEvent(Bytes);

    impl FramedEvent {
        /// Bytes before the encoding.
        pub const PREFIX: usize = 5;

        /// Frames an event's encoding (copied once). An encoding too long for a gRPC length
        /// (4 GiB) is framed with the largest one; [`FramedEvent::fits`] says so.
        pub fn from_encoding(encoding: &[u8]) -> Self {
            let mut framed = Self::prefixed(encoding.len());
            framed.put_slice(encoding);
            Self(framed.into())
        }

        /// A buffer holding the prefix of an encoding of `length` bytes, with room for it.
        fn prefixed(length: usize) -> Vec<u8> {
            let mut framed = Vec::with_capacity(Self::PREFIX + length);
            framed.push(0);
            framed.put_u32(u32::try_from(length).unwrap_or(u32::MAX));
            framed
        }

        /// The prefix and the encoding, as written to a stream.
        pub fn framed(&self) -> &Bytes {
            &self.0
        }

        /// The prefix and the encoding, as written to a stream.
        pub fn into_framed(self) -> Bytes {
            self.0
        }

        /// The event's encoding, without the prefix.
        pub fn encoding(&self) -> Bytes {
            self.0.slice(Self::PREFIX.min(self.0.len())..)
        }

        /// Whether the prefix holds the encoding's true length.
        pub fn fits(&self) -> bool {
            u32::try_from(self.0.len() - Self::PREFIX.min(self.0.len())).is_ok()
        }
    }

    impl From<&Event> for FramedEvent {
        fn from(event: &Event) -> Self {
            let mut framed = Self::prefixed(event.encoded_len());
            event
                .encode(&mut framed)
                .expect("a Vec has room for what it reserved");
            Self(framed.into())
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::v1::{Heartbeat, event};

        #[test]
        fn a_framed_event_is_one_grpc_message_of_its_encoding() {
            let event = Event {
                event: Some(event::Event::Heartbeat(Heartbeat { server_time: 42 })),
            };
            let framed = FramedEvent::from(&event);
            let encoding = event.encode_to_vec();
            assert_eq!(framed.framed()[0], 0, "not compressed");
            assert_eq!(
                framed.framed()[1..5],
                u32::try_from(encoding.len()).unwrap().to_be_bytes()
            );
            assert_eq!(framed.encoding(), encoding);
            assert!(framed.fits());
            assert_eq!(FramedEvent::from_encoding(&encoding), framed);
            assert_eq!(Event::decode(framed.encoding()).unwrap(), event);
        }

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
