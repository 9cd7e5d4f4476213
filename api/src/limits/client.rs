//! Which client a request comes from: the socket's peer, or, when that peer
//! is a trusted proxy (`TRUSTED_PROXIES`), the nearest address in
//! `X-Forwarded-For` that is not one, as nginx's `real_ip_recursive` reads it:
//! from the right, since only the entries our own proxies appended can be
//! believed and a client may write anything to the left of them.

use axum::http::HeaderMap;
use ipnet::IpNet;
use std::net::IpAddr;

/// The proxies whose `X-Forwarded-For` is believed.
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies(pub Vec<IpNet>);

impl TrustedProxies {
    fn trust(&self, addr: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&addr))
    }

    /// The client of a request that came from `peer` with `headers`.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.trust(peer) {
            return peer;
        }
        let mut client = peer;
        // Every `X-Forwarded-For` line, in order, is one list.
        let hops = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .collect::<Vec<_>>();
        for hop in hops.iter().rev() {
            let Ok(addr) = hop.trim().parse::<IpAddr>() else {
                // An entry no proxy of ours wrote: the last trusted hop stands.
                break;
            };
            client = addr.to_canonical();
            if !self.trust(client) {
                break;
            }
        }
        client
    }
}

/// The key a client is limited by: its IPv4 address, or its IPv6 /64 (one
/// subscriber is given at least a /64, so single v6 addresses cost nothing to
/// change).
pub fn limit_key(addr: IpAddr) -> u64 {
    match addr {
        IpAddr::V4(v4) => u64::from(u32::from(v4)),
        IpAddr::V6(v6) => (u128::from(v6) >> 64) as u64 | (1 << 63),
    }
}

/// `TRUSTED_PROXIES`'s entries: CIDRs, or single addresses.
pub fn parse_net(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("`{text}` is neither a CIDR (10.0.0.0/8) nor an address"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append("x-forwarded-for", HeaderValue::from_str(value).expect("test header"));
        }
        headers
    }

    fn proxies(nets: &[&str]) -> TrustedProxies {
        TrustedProxies(nets.iter().map(|net| parse_net(net).expect("test CIDR")).collect())
    }

    fn addr(text: &str) -> IpAddr {
        text.parse().expect("test address")
    }

    #[test]
    fn an_untrusted_peers_forwarded_for_is_ignored() {
        let headers = forwarded(&["203.0.113.9"]);
        assert_eq!(
            proxies(&["10.0.0.0/8"]).client(addr("198.51.100.7"), &headers),
            addr("198.51.100.7")
        );
        assert_eq!(
            TrustedProxies::default().client(addr("10.1.1.1"), &headers),
            addr("10.1.1.1")
        );
    }

    #[test]
    fn a_trusted_chain_is_read_from_the_right_to_the_first_untrusted_hop() {
        let trusted = proxies(&["10.0.0.0/8", "192.0.2.1"]);
        // The client wrote a lie on the left; our two proxies appended the rest.
        let headers = forwarded(&["1.2.3.4, 203.0.113.9", "192.0.2.1"]);
        assert_eq!(trusted.client(addr("10.0.0.5"), &headers), addr("203.0.113.9"));
        assert_eq!(trusted.client(addr("10.0.0.5"), &HeaderMap::new()), addr("10.0.0.5"));
        let garbage = forwarded(&["203.0.113.9, not-an-address"]);
        assert_eq!(trusted.client(addr("10.0.0.5"), &garbage), addr("10.0.0.5"));
    }

    #[test]
    fn ipv6_clients_are_limited_by_their_64_and_mapped_v4_as_v4() {
        assert_eq!(limit_key(addr("2001:db8::1")), limit_key(addr("2001:db8::ffff:2")));
        assert_ne!(limit_key(addr("2001:db8::1")), limit_key(addr("2001:db8:0:1::1")));
        let mapped = proxies(&[]).client(addr("::ffff:198.51.100.7"), &HeaderMap::new());
        assert_eq!(mapped, addr("198.51.100.7"));
    }
}
