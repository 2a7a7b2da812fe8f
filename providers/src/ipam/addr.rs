//! Addresses as integers, and the `addresses` entries of a pool.
//!
//! The allocator works on `u128` values with a family tag so that IPv4 and
//! IPv6 share one code path: an IPv4 address is its 32-bit value widened, an
//! IPv6 address its 128-bit value. The two families never share a map (the
//! IPv4 value 10.0.0.1 and the IPv6 value ::a00:1 are equal integers), so every
//! per-family structure is an array indexed by [`fam_idx`].

use crate::IpFamily;
use ipnet::IpNet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Index of a family in the per-family arrays: IPv4 is 0, IPv6 is 1.
pub(crate) fn fam_idx(family: IpFamily) -> usize {
    match family {
        IpFamily::V4 => 0,
        IpFamily::V6 => 1,
    }
}

/// The family stored at a per-family array index.
pub(crate) fn fam_of_idx(idx: usize) -> IpFamily {
    if idx == 0 { IpFamily::V4 } else { IpFamily::V6 }
}

/// How the user writes a family in messages.
pub(crate) fn fam_name(family: IpFamily) -> &'static str {
    match family {
        IpFamily::V4 => "IPv4",
        IpFamily::V6 => "IPv6",
    }
}

/// The integer form of an address.
pub(crate) fn to_u128(ip: IpAddr) -> (IpFamily, u128) {
    match ip {
        IpAddr::V4(v4) => (IpFamily::V4, u128::from(u32::from(v4))),
        IpAddr::V6(v6) => (IpFamily::V6, u128::from(v6)),
    }
}

/// The address of an integer; IPv4 values are truncated to 32 bits, which is
/// exact for every value the allocator stores (they come from IPv4 ranges).
pub(crate) fn from_u128(family: IpFamily, value: u128) -> IpAddr {
    match family {
        IpFamily::V4 => IpAddr::V4(Ipv4Addr::from(value as u32)),
        IpFamily::V6 => IpAddr::V6(Ipv6Addr::from(value)),
    }
}

/// Whether `avoidBuggyIPs` excludes this address: IPv4 addresses ending in
/// `.0` or `.255`, which some old firmwares treat as broadcast (MetalLB's
/// `ipConfusesBuggyFirmwares`). IPv6 has no such addresses.
pub(crate) fn is_buggy(family: IpFamily, value: u128) -> bool {
    family == IpFamily::V4 && matches!(value & 0xff, 0 | 0xff)
}

/// How many multiples of 256 lie in `lo..=hi` (IPv4 values only, so no overflow).
fn multiples_of_256(lo: u128, hi: u128) -> u128 {
    if hi < lo {
        return 0;
    }
    (hi / 256 + 1).saturating_sub(lo.div_ceil(256))
}

/// One parsed `addresses` entry: an inclusive range of one family.
///
/// CIDRs, `first-last` ranges and single addresses all become this, so the
/// allocator and the overlap check need only one shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AddrRange {
    /// The family of both ends.
    pub family: IpFamily,
    /// The first address, as an integer.
    pub first: u128,
    /// The last address (inclusive), as an integer.
    pub last: u128,
}

impl AddrRange {
    /// Parses a CIDR (`192.168.1.0/24`, `fd00::/64`), a range
    /// (`192.168.1.240-192.168.1.250`, spaces around `-` allowed) or a single
    /// address. The error is a message saying what would fix the entry.
    ///
    /// A CIDR with host bits set (`192.168.1.5/24`) means its network, as in
    /// MetalLB (Go's `net.ParseCIDR`), so migrated configurations keep working.
    pub fn parse(text: &str) -> Result<Self, String> {
        let s = text.trim();
        if s.is_empty() {
            return Err(
                "empty address entry: write a CIDR (192.168.1.0/24), a range \
                        (192.168.1.240-192.168.1.250) or one address"
                    .to_string(),
            );
        }
        if let Some((a, b)) = s.split_once('-') {
            let first: IpAddr = a.trim().parse().map_err(|_| {
                format!(
                    "{:?} is not an IP address; a range is written first-last, \
                     e.g. 192.168.1.240-192.168.1.250",
                    a.trim()
                )
            })?;
            let last: IpAddr = b.trim().parse().map_err(|_| {
                format!(
                    "{:?} is not an IP address; a range is written first-last, \
                     e.g. 192.168.1.240-192.168.1.250",
                    b.trim()
                )
            })?;
            let (fa, va) = to_u128(first);
            let (fb, vb) = to_u128(last);
            if fa != fb {
                return Err(format!(
                    "range {s} mixes {} and {}: both ends must be of one family; \
                     write two entries, one per family",
                    fam_name(fa),
                    fam_name(fb)
                ));
            }
            if va > vb {
                return Err(format!(
                    "range {s} is reversed: the first address must not be greater than the \
                     last; write {last}-{first}"
                ));
            }
            return Ok(Self {
                family: fa,
                first: va,
                last: vb,
            });
        }
        if s.contains('/') {
            let net: IpNet = s.parse().map_err(|_| {
                format!(
                    "{s:?} is not a valid CIDR; write an address and a prefix length within the \
                     family's size, e.g. 192.168.1.0/24 or fd00::/64"
                )
            })?;
            let net = net.trunc();
            let (family, first) = to_u128(net.network());
            let (_, last) = to_u128(net.broadcast());
            return Ok(Self {
                family,
                first,
                last,
            });
        }
        let ip: IpAddr = s.parse().map_err(|_| {
            format!(
                "{s:?} is not an address: write a CIDR (192.168.1.0/24), a range \
                 (192.168.1.240-192.168.1.250) or one address"
            )
        })?;
        let (family, v) = to_u128(ip);
        Ok(Self {
            family,
            first: v,
            last: v,
        })
    }

    /// Whether the address lies in this range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let (f, v) = to_u128(ip);
        f == self.family && self.first <= v && v <= self.last
    }

    /// Whether two ranges share an address.
    pub fn overlaps(&self, other: &AddrRange) -> bool {
        self.family == other.family && self.first <= other.last && other.first <= self.last
    }

    /// How many addresses the range holds, saturating at `u128::MAX` for `::/0`.
    pub fn len(&self) -> u128 {
        (self.last - self.first).saturating_add(1)
    }

    /// Always false: a range holds at least one address. Present for clippy's
    /// `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// How many addresses of the range the allocator may hand out:
    /// all of them, less `.0`/`.255` IPv4 addresses when `avoid_buggy`.
    pub fn usable(&self, avoid_buggy: bool) -> u128 {
        if !avoid_buggy || self.family == IpFamily::V6 {
            return self.len();
        }
        let zeros = multiples_of_256(self.first, self.last);
        let ffs = multiples_of_256(self.first + 1, self.last + 1);
        self.len() - zeros - ffs
    }
}

impl fmt::Display for AddrRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a = from_u128(self.family, self.first);
        if self.first == self.last {
            write!(f, "{a}")
        } else {
            write!(f, "{a}-{}", from_u128(self.family, self.last))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> AddrRange {
        AddrRange::parse(s).expect("valid in test")
    }

    #[test]
    fn parses_every_form() {
        let c = r("192.168.1.0/24");
        assert_eq!(c.family, IpFamily::V4);
        assert_eq!(c.len(), 256);
        assert_eq!(
            r("192.168.1.5/24"),
            c,
            "host bits mean the network, as in MetalLB"
        );
        assert_eq!(r(" 10.0.0.1 - 10.0.0.3 ").len(), 3);
        assert_eq!(r("10.0.0.7").len(), 1);
        let v6 = r("fd00::/64");
        assert_eq!(v6.family, IpFamily::V6);
        assert_eq!(v6.len(), 1u128 << 64);
        assert_eq!(r("fd00::1-fd00::ff").len(), 255);
        assert_eq!(r("::/0").len(), u128::MAX, "saturates");
    }

    #[test]
    fn rejects_with_a_fix() {
        for (bad, hint) in [
            ("", "empty"),
            ("10.0.0.300", "not an address"),
            ("10.0.0.0/33", "not a valid CIDR"),
            ("10.0.0.5-10.0.0.1", "reversed"),
            ("10.0.0.1-fd00::1", "mixes IPv4 and IPv6"),
            ("10.0.0.1-x", "not an IP address"),
        ] {
            let err = AddrRange::parse(bad).expect_err(bad);
            assert!(err.contains(hint), "{bad}: {err}");
        }
    }

    #[test]
    fn usable_counts_skip_buggy_addresses() {
        assert_eq!(r("10.0.0.0/24").usable(true), 254);
        assert_eq!(r("10.0.0.0/16").usable(true), 65536 - 512);
        assert_eq!(r("10.0.0.255-10.0.1.0").usable(true), 0);
        assert_eq!(r("10.0.0.254-10.0.1.1").usable(true), 2);
        assert_eq!(r("10.0.0.0/32").usable(true), 0);
        assert_eq!(
            r("fd00::/120").usable(true),
            256,
            "IPv6 has no buggy addresses"
        );
        assert!(is_buggy(IpFamily::V4, 0x0a00_00ff));
        assert!(!is_buggy(IpFamily::V6, 0xff));
    }
}
