//! Addresses and prefixes.
//!
//! IPv4 is held as an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`), so one
//! 16-byte key and one prefix arithmetic serve both families, and a client
//! seen as `::ffff:192.0.2.1` on a dual-stack socket is the same source as
//! `192.0.2.1`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Prefix length of the IPv4-mapped range inside IPv6.
const V4_MAPPED_PREFIX: u8 = 96;

/// A single address, family-independent.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct IpKey(pub [u8; 16]);

impl IpKey {
    pub fn from_ip(ip: IpAddr) -> IpKey {
        match ip {
            IpAddr::V4(v4) => IpKey(v4.to_ipv6_mapped().octets()),
            IpAddr::V6(v6) => IpKey(v6.octets()),
        }
    }

    /// From raw bytes as a host stack hands them over (4 or 16 bytes).
    pub fn from_bytes(b: &[u8]) -> Option<IpKey> {
        match b.len() {
            4 => Some(IpKey::from_ip(IpAddr::V4(Ipv4Addr::new(
                b[0], b[1], b[2], b[3],
            )))),
            16 => Some(IpKey(b.try_into().ok()?)),
            _ => None,
        }
    }

    pub fn is_v4(&self) -> bool {
        Ipv6Addr::from(self.0).to_ipv4_mapped().is_some()
    }

    pub fn to_ip(&self) -> IpAddr {
        let v6 = Ipv6Addr::from(self.0);
        match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        }
    }

    /// Parses `192.0.2.1`, `2001:db8::1` or `[2001:db8::1]`.
    pub fn parse(s: &str) -> Result<IpKey, ParseError> {
        let t = s.trim();
        let t = t
            .strip_prefix('[')
            .and_then(|x| x.strip_suffix(']'))
            .unwrap_or(t);
        t.parse::<IpAddr>()
            .map(IpKey::from_ip)
            .map_err(|_| ParseError::BadAddress(s.to_owned()))
    }

    /// The first `prefix` bits as one 128-bit mask.
    pub fn mask(prefix: u8) -> u128 {
        match prefix.min(128) {
            0 => 0,
            p => u128::MAX << (128 - p as u32),
        }
    }

    pub fn as_u128(&self) -> u128 {
        u128::from_be_bytes(self.0)
    }

    fn masked(&self, prefix: u8) -> IpKey {
        IpKey((self.as_u128() & Self::mask(prefix)).to_be_bytes())
    }
}

impl fmt::Display for IpKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.to_ip().fmt(f)
    }
}

impl fmt::Debug for IpKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IpKey({self})")
    }
}

/// An address prefix. `prefix` counts bits in the 128-bit (mapped) space;
/// a host is a /128.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Cidr {
    pub addr: IpKey,
    pub prefix: u8,
}

impl Cidr {
    pub const HOST: u8 = 128;

    pub fn host(ip: IpKey) -> Cidr {
        Cidr {
            addr: ip,
            prefix: Self::HOST,
        }
    }

    /// Builds a prefix in mapped space, clearing host bits.
    pub fn new(addr: IpKey, prefix: u8) -> Cidr {
        let prefix = prefix.min(128);
        Cidr {
            addr: addr.masked(prefix),
            prefix,
        }
    }

    /// Parses `10.0.0.0/8`, `2001:db8::/32` or a bare address (a host).
    /// Host bits set below the prefix are rejected: `10.0.0.1/8` is almost
    /// always a typo, and silently widening a ban or a whitelist is worse.
    pub fn parse(s: &str) -> Result<Cidr, ParseError> {
        let t = s.trim();
        let (addr_s, len_s) = match t.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (t, None),
        };
        let addr = IpKey::parse(addr_s).map_err(|_| ParseError::BadAddress(s.to_owned()))?;
        let family_bits: u8 = if addr.is_v4() { 32 } else { 128 };
        let len = match len_s {
            None => family_bits,
            Some(l) => match l.trim().parse::<u8>() {
                Ok(n) if n <= family_bits => n,
                _ => return Err(ParseError::BadPrefix(s.to_owned())),
            },
        };
        let prefix = if addr.is_v4() {
            V4_MAPPED_PREFIX + len
        } else {
            len
        };
        let cidr = Cidr::new(addr, prefix);
        if cidr.addr != addr {
            return Err(ParseError::HostBitsSet(s.to_owned()));
        }
        Ok(cidr)
    }

    pub fn contains(&self, ip: &IpKey) -> bool {
        ip.masked(self.prefix) == self.addr
    }

    pub fn is_host(&self) -> bool {
        self.prefix == Self::HOST
    }

    /// The prefix length as written for its family: 24 for `10.0.0.0/24`
    /// (which is /120 in mapped space), 64 for `2001:db8::/64`.
    pub fn family_prefix(&self) -> u8 {
        if self.addr.is_v4() && self.prefix >= V4_MAPPED_PREFIX {
            self.prefix - V4_MAPPED_PREFIX
        } else {
            self.prefix
        }
    }

    /// True when the two prefixes share any address: one contains the other.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.contains(&other.addr) || other.contains(&self.addr)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_host() {
            return self.addr.fmt(f);
        }
        if self.addr.is_v4() && self.prefix >= V4_MAPPED_PREFIX {
            write!(f, "{}/{}", self.addr, self.prefix - V4_MAPPED_PREFIX)
        } else {
            write!(f, "{}/{}", Ipv6Addr::from(self.addr.0), self.prefix)
        }
    }
}

impl fmt::Debug for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cidr({self})")
    }
}

/// Why an address or prefix was refused; each variant carries the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    BadAddress(String),
    BadPrefix(String),
    HostBitsSet(String),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::BadAddress(s) => write!(f, "'{s}' is not an IPv4 or IPv6 address"),
            ParseError::BadPrefix(s) => write!(f, "'{s}' has an invalid prefix length"),
            ParseError::HostBitsSet(s) => {
                write!(f, "'{s}' has host bits set below its prefix length")
            }
        }
    }
}

impl ParseError {
    /// What is wrong, without the input (for messages that show the input
    /// their own, bounded way).
    pub fn why(&self) -> &'static str {
        match self {
            ParseError::BadAddress(_) => "not an IPv4 or IPv6 address",
            ParseError::BadPrefix(_) => "invalid prefix length",
            ParseError::HostBitsSet(_) => "host bits set below the prefix length",
        }
    }
}

impl std::error::Error for ParseError {}

/// Parses a comma-separated list of prefixes (the `whitelist` modparam).
pub fn parse_cidr_list(s: &str) -> Result<Vec<Cidr>, ParseError> {
    s.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(Cidr::parse)
        .collect()
}

crate::shm_safe!(IpKey, Cidr);
