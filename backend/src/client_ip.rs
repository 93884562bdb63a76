//! Which address a request comes from: the socket's, unless the socket is a trusted reverse
//! proxy, in which case the right-most address of `X-Forwarded-For` that is not itself a
//! trusted proxy. Everything left of that entry was written by the client and is ignored, so
//! a client cannot choose the address its rate limits count against.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};

/// An IP address or a CIDR block (`10.0.0.0/8`, `fd00::/8`, `192.0.2.7`), as written in
/// `trusted_proxies`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IpBlock {
    network: IpAddr,
    prefix: u8,
}

/// A `trusted_proxies` entry that is neither an IP address nor a CIDR block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("trusted_proxies: {0:?} is not an IP address or a CIDR block (like 10.0.0.0/8 or fd00::/8)")]
pub struct InvalidIpBlock(String);

impl IpBlock {
    /// Whether `ip` is in the block. An IPv4 address mapped into IPv6 (`::ffff:a.b.c.d`, as a
    /// dual-stack socket reports IPv4 peers) matches the IPv4 blocks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for IpBlock {
    type Err = InvalidIpBlock;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidIpBlock(raw.to_owned());
        let (addr, prefix) = match raw.trim().split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (raw.trim(), None),
        };
        let network = canonical(addr.parse::<IpAddr>().map_err(|_| invalid())?);
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            // Digits only: `u8::from_str` would also take a leading `+`.
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p.parse::<u8>().map_err(|_| invalid())?,
            Some(_) => return Err(invalid()),
            None => max,
        };
        if prefix > max {
            return Err(invalid());
        }
        Ok(Self { network, prefix })
    }
}

impl TryFrom<String> for IpBlock {
    type Error = InvalidIpBlock;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        raw.parse()
    }
}

impl From<IpBlock> for String {
    fn from(block: IpBlock) -> Self {
        block.to_string()
    }
}

impl fmt::Display for IpBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// `::ffff:a.b.c.d` as `a.b.c.d`; anything else unchanged.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The client address of a request that came from `peer` with `headers`, given the trusted
/// proxies.
pub fn resolve(peer: IpAddr, headers: &HeaderMap, trusted: &[IpBlock]) -> IpAddr {
    let peer = canonical(peer);
    let is_trusted = |ip: IpAddr| trusted.iter().any(|b| b.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    // Several X-Forwarded-For headers are one list, in order.
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    // Walk from the proxy nearest to us towards the client. Each trusted hop appended the
    // address it received from; the first address no trusted proxy vouches for is the client.
    let mut client = peer;
    for entry in entries.iter().rev() {
        let Some(ip) = parse_entry(entry) else {
            // Garbage where a trusted proxy should have written an address: keep the last
            // address a trusted proxy did vouch for.
            break;
        };
        client = ip;
        if !is_trusted(ip) {
            break;
        }
    }
    client
}

/// An `X-Forwarded-For` entry: an address, possibly with a port (`192.0.2.1:4711`,
/// `[2001:db8::1]:4711`) as some proxies write it.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| entry.strip_prefix('[').and_then(|e| e.strip_suffix(']')).and_then(|e| e.parse().ok()))
        .map(canonical)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn blocks(list: &[&str]) -> Vec<IpBlock> {
        list.iter().map(|b| b.parse().expect("block")).collect()
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_str(v).expect("header"));
        }
        h
    }

    #[test]
    fn blocks_parse_and_match() {
        let b: IpBlock = "10.0.0.0/8".parse().expect("v4 block");
        assert!(b.contains(ip("10.200.3.4")));
        assert!(!b.contains(ip("11.0.0.1")));
        assert!(b.contains(ip("::ffff:10.1.2.3")), "IPv4-mapped IPv6 peers match IPv4 blocks");
        let single: IpBlock = "192.0.2.7".parse().expect("single address");
        assert_eq!(single.to_string(), "192.0.2.7/32");
        assert!(single.contains(ip("192.0.2.7")) && !single.contains(ip("192.0.2.8")));
        let v6: IpBlock = "fd00::/8".parse().expect("v6 block");
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")) && !v6.contains(ip("10.0.0.1")));
        let all: IpBlock = "0.0.0.0/0".parse().expect("everything");
        assert!(all.contains(ip("203.0.113.9")));
        for bad in ["", "10.0.0.0/33", "fd00::/129", "10.0.0/8", "10.0.0.0/", "10.0.0.0/+8", "localhost", "10.0.0.0/8/8"] {
            let err = bad.parse::<IpBlock>().expect_err(bad);
            assert!(err.to_string().contains("trusted_proxies"), "{err}");
        }
    }

    #[test]
    fn the_socket_address_counts_unless_it_is_a_trusted_proxy() {
        let trusted = blocks(&["10.0.0.0/8"]);
        // An untrusted peer cannot claim another address.
        assert_eq!(resolve(ip("203.0.113.5"), &xff(&["198.51.100.1"]), &trusted), ip("203.0.113.5"));
        // Nothing is trusted by default.
        assert_eq!(resolve(ip("10.0.0.2"), &xff(&["198.51.100.1"]), &[]), ip("10.0.0.2"));
        // A trusted proxy without the header: the proxy itself.
        assert_eq!(resolve(ip("10.0.0.2"), &HeaderMap::new(), &trusted), ip("10.0.0.2"));
    }

    #[test]
    fn the_right_most_untrusted_entry_is_the_client() {
        let trusted = blocks(&["10.0.0.0/8", "192.0.2.7"]);
        // The client forged the left-most entries; the proxies appended the rest.
        let headers = xff(&["1.1.1.1, 198.51.100.1, 203.0.113.5, 192.0.2.7"]);
        assert_eq!(resolve(ip("10.0.0.2"), &headers, &trusted), ip("203.0.113.5"));
        // Several headers are one list.
        let headers = xff(&["1.1.1.1, 203.0.113.5", "10.1.1.1"]);
        assert_eq!(resolve(ip("10.0.0.2"), &headers, &trusted), ip("203.0.113.5"));
        // Ports and brackets are tolerated.
        assert_eq!(resolve(ip("10.0.0.2"), &xff(&["203.0.113.5:4711"]), &trusted), ip("203.0.113.5"));
        assert_eq!(resolve(ip("10.0.0.2"), &xff(&["[2001:db8::1]:4711"]), &trusted), ip("2001:db8::1"));
        assert_eq!(resolve(ip("10.0.0.2"), &xff(&["[2001:db8::1]"]), &trusted), ip("2001:db8::1"));
        // Only trusted addresses: the left-most of them.
        assert_eq!(resolve(ip("10.0.0.2"), &xff(&["10.9.9.9, 10.0.0.3"]), &trusted), ip("10.9.9.9"));
        // Garbage stops the walk at the last vouched-for address.
        assert_eq!(resolve(ip("10.0.0.2"), &xff(&["203.0.113.5, nonsense, 10.0.0.3"]), &trusted), ip("10.0.0.3"));
        assert_eq!(resolve(ip("10.0.0.2"), &xff(&["nonsense, 203.0.113.5"]), &trusted), ip("203.0.113.5"));
        // A mapped IPv4 peer is recognised as the IPv4 proxy.
        assert_eq!(resolve(ip("::ffff:10.0.0.2"), &xff(&["203.0.113.5"]), &trusted), ip("203.0.113.5"));
    }
}
