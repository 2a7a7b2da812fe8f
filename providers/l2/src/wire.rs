//! The envelope of every gossip datagram: a tag byte, and, once the cluster has a gossip
//! key, a timestamp and an HMAC-SHA256 over both and the body.
//!
//! ```text
//!   without a key:  tag | body
//!   with keys:      tag | unix ms (u64 BE) | body | HMAC-SHA256(key, tag | ms | body)
//! ```
//!
//! The key comes from a Secret shared by every speaker, as MetalLB's memberlist secret.
//! Several keys make a rotation possible without a flap: the first signs, every one
//! verifies; add the new key second on every node, then put it first, then drop the old one.
//! The timestamp bounds a replay to [`MAX_SKEW`] either way (clocks of a cluster are kept
//! by NTP; a node whose clock is off by more is refused and logged by its peers).
//!
//! HMAC comes from `ring` (already in the build for TLS, constant-time verification), not
//! hand-written.

use ring::hmac;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

/// A foca message.
pub(crate) const TAG_FOCA: u8 = 1;
/// A goodbye: `bump` u64 BE + node name.
pub(crate) const TAG_GOODBYE: u8 = 2;
/// A release (make-before-break): name length u8, node name, then addresses
/// (`4` + 4 bytes or `6` + 16 bytes each).
pub(crate) const TAG_RELEASE: u8 = 3;

/// How far a datagram's timestamp may be from the receiver's clock.
pub const MAX_SKEW: Duration = Duration::from_secs(60);

const TS_LEN: usize = 8;
const MAC_LEN: usize = 32;

/// The gossip keys, first one signing. Its `Debug` shows how many there are, never a byte.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct GossipKeys(Vec<Vec<u8>>);

impl std::fmt::Debug for GossipKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GossipKeys({} key(s), redacted)", self.0.len())
    }
}

impl GossipKeys {
    /// Keys in order of preference; empty ones are dropped (an empty key authenticates
    /// nothing).
    pub fn new(keys: Vec<Vec<u8>>) -> Self {
        Self(keys.into_iter().filter(|k| !k.is_empty()).collect())
    }

    /// No key: datagrams go out and are accepted unsigned.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many keys verify.
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

/// The keys ready for use.
pub(crate) struct Sealer(Vec<hmac::Key>);

impl Sealer {
    pub(crate) fn new(keys: &GossipKeys) -> Self {
        Self(
            keys.0
                .iter()
                .map(|k| hmac::Key::new(hmac::HMAC_SHA256, k))
                .collect(),
        )
    }

    /// Wraps `body` for the wire at wall-clock time `unix_ms`.
    pub(crate) fn seal(&self, unix_ms: u64, tag: u8, body: &[u8]) -> Vec<u8> {
        let Some(key) = self.0.first() else {
            let mut out = Vec::with_capacity(1 + body.len());
            out.push(tag);
            out.extend_from_slice(body);
            return out;
        };
        let mut out = Vec::with_capacity(1 + TS_LEN + body.len() + MAC_LEN);
        out.push(tag);
        out.extend_from_slice(&unix_ms.to_be_bytes());
        out.extend_from_slice(body);
        let mac = hmac::sign(key, &out);
        out.extend_from_slice(mac.as_ref());
        out
    }

    /// The tag and body of a datagram, or why it is refused.
    pub(crate) fn open<'a>(
        &self,
        unix_ms: u64,
        datagram: &'a [u8],
    ) -> Result<(u8, &'a [u8]), Refused> {
        let (&tag, rest) = datagram.split_first().ok_or(Refused::Malformed)?;
        if self.0.is_empty() {
            return Ok((tag, rest));
        }
        if rest.len() < TS_LEN + MAC_LEN {
            return Err(Refused::Unsigned);
        }
        let (signed, mac) = datagram.split_at(datagram.len() - MAC_LEN);
        if !self.0.iter().any(|k| hmac::verify(k, signed, mac).is_ok()) {
            return Err(Refused::BadSignature);
        }
        let (ts, body) = rest[..rest.len() - MAC_LEN].split_at(TS_LEN);
        let mut b = [0u8; TS_LEN];
        b.copy_from_slice(ts);
        let sent = u64::from_be_bytes(b);
        let skew = MAX_SKEW.as_millis() as u64;
        if sent.abs_diff(unix_ms) > skew {
            return Err(Refused::Stale);
        }
        Ok((tag, body))
    }
}

/// Why a datagram was dropped; counted per reason for the speaker's metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Refused {
    /// Empty or cut short.
    Malformed,
    /// Too short to carry a signature while a key is configured.
    Unsigned,
    /// No configured key produced this signature.
    BadSignature,
    /// Signed, but its timestamp is more than [`MAX_SKEW`] away (a replay, or a clock off).
    Stale,
    /// The sender's address is no Node's address, or the node it names is not a Node or
    /// does not have that address.
    UnknownSender,
    /// The membership is full.
    Full,
}

impl Refused {
    /// A short name for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Refused::Malformed => "malformed",
            Refused::Unsigned => "unsigned",
            Refused::BadSignature => "bad_signature",
            Refused::Stale => "stale",
            Refused::UnknownSender => "unknown_sender",
            Refused::Full => "full",
        }
    }
}

/// The body of a release datagram.
pub(crate) fn release_body(name: &str, ips: &[IpAddr]) -> Vec<u8> {
    let name = &name.as_bytes()[..name.len().min(255)];
    let mut out = Vec::with_capacity(1 + name.len() + ips.len() * 17);
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    for ip in ips {
        match ip {
            IpAddr::V4(v4) => {
                out.push(4);
                out.extend_from_slice(&v4.octets());
            }
            IpAddr::V6(v6) => {
                out.push(6);
                out.extend_from_slice(&v6.octets());
            }
        }
    }
    out
}

/// Addresses per release datagram: 64 IPv6 addresses and the longest node name stay under
/// the 1,400 bytes of a gossip datagram.
pub(crate) const RELEASE_CHUNK: usize = 64;

/// Reads a release body: the sender's node name and the addresses it let go.
pub(crate) fn parse_release(body: &[u8]) -> Option<(String, Vec<IpAddr>)> {
    let (&len, rest) = body.split_first()?;
    let len = usize::from(len);
    if rest.len() < len {
        return None;
    }
    let (name, mut rest) = rest.split_at(len);
    let name = std::str::from_utf8(name).ok()?.to_string();
    let mut ips = Vec::new();
    while let Some((&family, tail)) = rest.split_first() {
        let n = match family {
            4 => 4,
            6 => 16,
            _ => return None,
        };
        if tail.len() < n {
            return None;
        }
        let (ip, tail) = tail.split_at(n);
        ips.push(if n == 4 {
            let mut o = [0u8; 4];
            o.copy_from_slice(ip);
            IpAddr::V4(Ipv4Addr::from(o))
        } else {
            let mut o = [0u8; 16];
            o.copy_from_slice(ip);
            IpAddr::V6(Ipv6Addr::from(o))
        });
        rest = tail;
    }
    Some((name, ips))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(k: &[&[u8]]) -> Sealer {
        Sealer::new(&GossipKeys::new(k.iter().map(|k| k.to_vec()).collect()))
    }

    #[test]
    fn a_signed_datagram_opens_with_the_key_and_only_with_it() {
        let a = keys(&[b"secret-one"]);
        let d = a.seal(1_000_000, TAG_FOCA, b"hello");
        assert_eq!(a.open(1_000_500, &d), Ok((TAG_FOCA, &b"hello"[..])));
        assert_eq!(
            keys(&[b"other"]).open(1_000_500, &d),
            Err(Refused::BadSignature)
        );
        assert_eq!(keys(&[]).open(1_000_500, &d).map(|(t, _)| t), Ok(TAG_FOCA));
        // A node without the key sends unsigned datagrams: refused.
        let plain = keys(&[]).seal(1_000_000, TAG_GOODBYE, b"x");
        assert_eq!(a.open(1_000_000, &plain), Err(Refused::Unsigned));
        // One flipped bit anywhere.
        for i in 0..d.len() {
            let mut bad = d.clone();
            bad[i] ^= 1;
            assert!(a.open(1_000_500, &bad).is_err(), "byte {i}");
        }
    }

    #[test]
    fn rotation_accepts_every_listed_key_and_signs_with_the_first() {
        let old = keys(&[b"old"]);
        let both = keys(&[b"new", b"old"]);
        let new = keys(&[b"new"]);
        let from_old = old.seal(5, TAG_FOCA, b"a");
        let from_both = both.seal(5, TAG_FOCA, b"a");
        assert!(both.open(5, &from_old).is_ok());
        assert!(new.open(5, &from_both).is_ok());
        assert_eq!(old.open(5, &from_both), Err(Refused::BadSignature));
    }

    #[test]
    fn a_replay_outside_the_window_is_refused() {
        let a = keys(&[b"k"]);
        let d = a.seal(1_000_000, TAG_GOODBYE, b"bye");
        let skew = MAX_SKEW.as_millis() as u64;
        assert!(a.open(1_000_000 + skew, &d).is_ok());
        assert_eq!(a.open(1_000_001 + skew, &d), Err(Refused::Stale));
    }

    #[test]
    fn release_bodies_round_trip_and_garbage_is_refused() {
        let ips: Vec<IpAddr> = vec![
            "198.51.100.7".parse().expect("ip"),
            "2001:db8::7".parse().expect("ip"),
        ];
        let body = release_body("node-a", &ips);
        assert_eq!(parse_release(&body), Some(("node-a".to_string(), ips)));
        assert_eq!(parse_release(&[9, b'a']), None);
        assert_eq!(parse_release(&[1, b'a', 4, 1, 2]), None);
        assert_eq!(parse_release(&[1, b'a', 5]), None);
        let max = release_body(
            &"n".repeat(253),
            &vec!["2001:db8::1".parse().expect("ip"); RELEASE_CHUNK],
        );
        assert!(max.len() + 1 + TS_LEN + MAC_LEN <= 1400, "{}", max.len());
    }
}
