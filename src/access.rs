//! Who may ask what: source address lists (`allow-query`, `[transfer] allow`), TSIG
//! keys, and a zone's transfer policy. Plain data, checked by [`crate::config`] and
//! carried by the snapshot, so a reload swaps them together with the zones.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use hickory_proto::rr::Name;
use hickory_proto::rr::rdata::tsig::TsigAlgorithm;

/// A list of networks ("10.0.0.0/8", "192.0.2.1", "fd00::/8").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acl(Vec<(IpAddr, u8)>);

impl Acl {
    /// Parses one network; an address without a prefix is a single host.
    pub fn parse_net(text: &str) -> Option<(IpAddr, u8)> {
        let (ip, len) = match text.split_once('/') {
            Some((ip, len)) => (ip.parse::<IpAddr>().ok()?, Some(len.parse::<u8>().ok()?)),
            None => (text.parse::<IpAddr>().ok()?, None),
        };
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let len = len.unwrap_or(max);
        (len <= max).then_some((ip, len))
    }

    pub fn new(nets: Vec<(IpAddr, u8)>) -> Self {
        Self(nets)
    }

    /// Whether `ip` is inside one of the networks. An IPv4-mapped IPv6 source
    /// (`::ffff:10.0.0.1`, from a dual-stack socket) is matched as the IPv4 address.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.0.iter().any(|&(net, len)| contains(net, len, ip))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn contains(net: IpAddr, len: u8, ip: IpAddr) -> bool {
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

/// A `[[tsig-key]]`. Its secret never appears in `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct TsigKey {
    /// Lower-cased, fully qualified.
    pub name: Name,
    pub algorithm: TsigAlgorithm,
    pub secret: Vec<u8>,
}

impl fmt::Debug for TsigKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TsigKey")
            .field("name", &self.name)
            .field("algorithm", &self.algorithm)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// The algorithms `[[tsig-key]] algorithm` accepts, by their config names.
pub const ALGORITHMS: [(&str, TsigAlgorithm); 5] = [
    ("hmac-sha256", TsigAlgorithm::HmacSha256),
    ("hmac-sha384", TsigAlgorithm::HmacSha384),
    ("hmac-sha512", TsigAlgorithm::HmacSha512),
    ("hmac-sha224", TsigAlgorithm::HmacSha224),
    ("hmac-sha1", TsigAlgorithm::HmacSha1),
];

/// Who may transfer a zone, with which key, and whom to NOTIFY when it changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransferPolicy {
    /// Sources that may AXFR/IXFR; empty: nobody.
    pub allow: Acl,
    /// When set, a transfer must also be signed with this key.
    pub key: Option<Name>,
    /// NOTIFY targets on every serial change.
    pub notify: Vec<SocketAddr>,
    /// AXFR/IXFR only over TLS (XoT, RFC 9103): over plain TCP, REFUSED.
    pub require_tls: bool,
}

/// Whose NOTIFY a follower takes (RFC 1996 section 3.10): the primary's addresses,
/// signed with its key when `[follow] tsig-key` is set, for the catalog or a
/// followed zone. The addresses change when the primary's name resolves to others.
#[derive(Debug)]
pub struct FollowPeers {
    /// The primary's catalog zone, lower-cased.
    pub catalog: Name,
    /// When set, a NOTIFY must be signed with this key.
    pub key: Option<Name>,
    /// Who may transfer the followed zones from here, and whom to NOTIFY
    /// (`[transfer]`): followers can chain.
    pub transfer: std::sync::Arc<TransferPolicy>,
    primaries: arc_swap::ArcSwap<Vec<IpAddr>>,
}

impl FollowPeers {
    pub fn new(catalog: Name, key: Option<Name>, transfer: std::sync::Arc<TransferPolicy>) -> Self {
        Self {
            catalog,
            key,
            transfer,
            primaries: Default::default(),
        }
    }

    /// The primary's addresses, as last resolved.
    pub fn primaries(&self) -> Vec<IpAddr> {
        self.primaries.load().to_vec()
    }

    /// The primary's addresses, as last resolved.
    pub fn set_primaries(&self, ips: Vec<IpAddr>) {
        if **self.primaries.load() != ips {
            self.primaries.store(std::sync::Arc::new(ips));
        }
    }

    /// Whether `ip` is one of the primary's addresses (an IPv4-mapped IPv6 source
    /// as its IPv4 address).
    pub fn is_primary(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.primaries.load().contains(&ip)
    }
}

impl PartialEq for FollowPeers {
    fn eq(&self, other: &Self) -> bool {
        self.catalog == other.catalog
            && self.key == other.key
            && self.transfer == other.transfer
            && **self.primaries.load() == **other.primaries.load()
    }
}

impl Eq for FollowPeers {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_and_hosts() {
        let acl = Acl::new(
            ["10.0.0.0/8", "192.0.2.7", "fd00::/8", "0.0.0.0/0"][..3]
                .iter()
                .map(|s| Acl::parse_net(s).unwrap())
                .collect(),
        );
        for (ip, want) in [
            ("10.255.1.2", true),
            ("11.0.0.1", false),
            ("192.0.2.7", true),
            ("192.0.2.8", false),
            ("fd12::1", true),
            ("fe80::1", false),
            ("::ffff:10.1.2.3", true),
        ] {
            assert_eq!(acl.allows(ip.parse().unwrap()), want, "{ip}");
        }
        let all = Acl::new(vec![Acl::parse_net("0.0.0.0/0").unwrap()]);
        assert!(all.allows("203.0.113.9".parse().unwrap()));
        assert!(!all.allows("2001:db8::1".parse().unwrap()));
        for bad in ["10.0.0.0/33", "10.0.0/8", "fd00::/129", "x", "10.0.0.0/"] {
            assert_eq!(Acl::parse_net(bad), None, "{bad}");
        }
        assert!(!Acl::default().allows("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn a_key_never_shows_its_secret() {
        let key = TsigKey {
            name: Name::from_ascii("xfr-key.").unwrap(),
            algorithm: TsigAlgorithm::HmacSha256,
            secret: b"very-secret".to_vec(),
        };
        let shown = format!("{key:?}");
        assert!(
            !shown.contains("very-secret") && !shown.contains("118, 101"),
            "{shown}"
        );
    }
}
