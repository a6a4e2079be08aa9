//! The PROXY protocol (v1 text, v2 binary): whether a connection starts with a header, and
//! the client address it carries; and who may send one.

use std::net::SocketAddr;

use ipnet::IpNet;
use ppp::{HeaderResult, PartialResult};

/// The start of a v1 header.
const V1_SIGNATURE: &[u8] = b"PROXY ";
/// The start of a v2 header.
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// Addresses allowed to speak the PROXY protocol.
#[derive(Debug, Clone, Default)]
pub(crate) struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub(crate) fn new(nets: Vec<IpNet>) -> Self {
        Self(nets)
    }

    pub(super) fn trusts(&self, peer: &SocketAddr) -> bool {
        let ip = peer.ip().to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }
}

/// What the first bytes of a connection are.
#[derive(Debug, PartialEq)]
pub(super) enum Start {
    /// Too few bytes to tell.
    NeedMore,
    /// Not a PROXY header: the client's own protocol (HTTP/1.1 or the HTTP/2 preface).
    Plain,
    /// A PROXY header: the source address it carries (none for `UNKNOWN`/`LOCAL`) and its
    /// length, or why it is malformed.
    Proxy(Result<(Option<SocketAddr>, usize), String>),
}

pub(super) fn classify(bytes: &[u8]) -> Start {
    let could_be = |signature: &[u8]| {
        let n = bytes.len().min(signature.len());
        bytes[..n] == signature[..n]
    };
    let v1 = could_be(V1_SIGNATURE);
    let v2 = could_be(V2_SIGNATURE);
    if !v1 && !v2 {
        return Start::Plain;
    }
    if (v1 && bytes.len() < V1_SIGNATURE.len()) || (v2 && bytes.len() < V2_SIGNATURE.len()) {
        return Start::NeedMore;
    }
    let header = HeaderResult::parse(bytes);
    if header.is_incomplete() {
        return Start::NeedMore;
    }
    Start::Proxy(match header {
        HeaderResult::V1(Ok(header)) => Ok((v1_source(&header.addresses), header.header.len())),
        HeaderResult::V2(Ok(header)) => Ok((v2_source(&header.addresses), header.len())),
        HeaderResult::V1(Err(e)) => Err(e.to_string()),
        HeaderResult::V2(Err(e)) => Err(e.to_string()),
    })
}

fn v1_source(addresses: &ppp::v1::Addresses) -> Option<SocketAddr> {
    match addresses {
        ppp::v1::Addresses::Tcp4(a) => Some((a.source_address, a.source_port).into()),
        ppp::v1::Addresses::Tcp6(a) => Some((a.source_address, a.source_port).into()),
        ppp::v1::Addresses::Unknown => None,
    }
}

fn v2_source(addresses: &ppp::v2::Addresses) -> Option<SocketAddr> {
    match addresses {
        ppp::v2::Addresses::IPv4(a) => Some((a.source_address, a.source_port).into()),
        ppp::v2::Addresses::IPv6(a) => Some((a.source_address, a.source_port).into()),
        ppp::v2::Addresses::Unix(_) | ppp::v2::Addresses::Unspecified => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_protocols_are_told_apart_from_proxy_headers() {
        assert_eq!(classify(b""), Start::NeedMore);
        assert_eq!(classify(b"PRO"), Start::NeedMore);
        assert_eq!(classify(b"PRI * HTTP/2.0\r\n"), Start::Plain);
        assert_eq!(classify(b"POST /natter.v1"), Start::Plain);
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Start::Plain);
        assert_eq!(
            classify(b"PROXY TCP4 127.0.0.2 127.0.0.1 5"),
            Start::NeedMore
        );
        assert_eq!(classify(b"\r\n\r\n\0\r"), Start::NeedMore);
    }

    #[test]
    fn v1_headers_give_the_client_address_and_their_length() {
        let header = b"PROXY TCP4 127.0.0.2 127.0.0.1 40000 8080\r\n";
        let mut bytes = header.to_vec();
        bytes.extend_from_slice(b"GET / HTTP/1.1\r\n");
        assert_eq!(
            classify(&bytes),
            Start::Proxy(Ok((Some("127.0.0.2:40000".parse().unwrap()), header.len())))
        );
        assert_eq!(classify(b"PROXY UNKNOWN\r\n"), Start::Proxy(Ok((None, 15))));
        assert!(matches!(
            classify(b"PROXY TCP4 nonsense here at all\r\n"),
            Start::Proxy(Err(_))
        ));
    }

    #[test]
    fn v2_headers_give_the_client_address_and_their_length() {
        let mut bytes = V2_SIGNATURE.to_vec();
        bytes.extend_from_slice(&[0x21, 0x11, 0, 12]);
        bytes.extend_from_slice(&[127, 0, 0, 2, 127, 0, 0, 1, 0x9c, 0x40, 0x1f, 0x90]);
        bytes.extend_from_slice(b"PRI * HTTP/2.0");
        assert_eq!(
            classify(&bytes),
            Start::Proxy(Ok((Some("127.0.0.2:40000".parse().unwrap()), 28)))
        );
    }

    #[test]
    fn only_listed_addresses_are_trusted() {
        let trusted = TrustedProxies::new(vec![
            "127.0.0.1/32".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ]);
        assert!(trusted.trusts(&"127.0.0.1:1".parse().unwrap()));
        assert!(trusted.trusts(&"10.9.8.7:1".parse().unwrap()));
        assert!(trusted.trusts(&"[::ffff:127.0.0.1]:1".parse().unwrap()));
        assert!(!trusted.trusts(&"127.0.0.2:1".parse().unwrap()));
        assert!(!TrustedProxies::default().trusts(&"127.0.0.1:1".parse().unwrap()));
    }
}
