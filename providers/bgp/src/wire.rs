//! BGP-4 framing and the small messages: what we decode from a peer, and the
//! OPEN / KEEPALIVE / NOTIFICATION we send. UPDATEs we send live in
//! [`crate::update`].
//!
//! Encoding of OPEN (and UPDATE) uses `netgauze-bgp-pkt`. Decoding is our
//! own on purpose and deliberately shallow: an outbound-only speaker acts on
//! four capabilities (multiprotocol, route refresh, graceful restart,
//! 4-octet AS) and ignores received routes, so the receive path walks the
//! capability TLVs by length and skips UPDATE bodies after checking the
//! header. Nothing a router adds (new capabilities, exotic attributes) can
//! then reset the session; only a broken header or OPEN does, and then with
//! the NOTIFICATION code RFC 4271 §6 prescribes.

use crate::route::Family;
use netgauze_bgp_pkt::BgpMessage;
use netgauze_bgp_pkt::capabilities::{
    BgpCapability, FourOctetAsCapability, GracefulRestartAddressFamily, GracefulRestartCapability,
    MultiProtocolExtensionsCapability,
};
use netgauze_bgp_pkt::open::{BgpOpenMessage, BgpOpenMessageParameter};
use netgauze_iana::address_family::AddressType;
use netgauze_parse_utils::WritablePdu;
use std::net::Ipv4Addr;

/// Length of the fixed header: marker (16), length (2), type (1).
pub const HEADER_LEN: usize = 19;
/// Largest message without the extended-message capability (RFC 4271).
pub const MAX_LEN: usize = 4096;

const T_OPEN: u8 = 1;
const T_UPDATE: u8 = 2;
const T_NOTIFICATION: u8 = 3;
const T_KEEPALIVE: u8 = 4;
const T_ROUTE_REFRESH: u8 = 5;

/// A NOTIFICATION, sent or received, kept as raw code/subcode/data so that
/// codes we do not know are still reported faithfully.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// Error code (RFC 4271 §4.5): 1 header, 2 OPEN, 3 UPDATE, 4 hold timer,
    /// 5 FSM, 6 Cease.
    pub code: u8,
    /// Error subcode, meaning depends on `code`.
    pub subcode: u8,
    /// Diagnostic data.
    pub data: Vec<u8>,
}

/// Cease subcodes (RFC 4486) we send or react to.
pub mod cease {
    /// We are shutting down on purpose.
    pub const ADMINISTRATIVE_SHUTDOWN: u8 = 2;
    /// The peer chose another connection over ours (RFC 4271 §6.8).
    pub const CONNECTION_COLLISION: u8 = 7;
    /// The BFD session went down (RFC 9384).
    pub const BFD_DOWN: u8 = 10;
}

impl Notification {
    /// Builds a NOTIFICATION.
    pub fn new(code: u8, subcode: u8, data: impl Into<Vec<u8>>) -> Self {
        Self {
            code,
            subcode,
            data: data.into(),
        }
    }

    /// Hold timer expired (code 4).
    pub fn hold_timer_expired() -> Self {
        Self::new(4, 0, [])
    }

    /// A message that is not valid in the current state (code 5, RFC 6608
    /// subcodes: 1 OpenSent, 2 OpenConfirm, 3 Established).
    pub fn fsm(subcode: u8) -> Self {
        Self::new(5, subcode, [])
    }

    /// Cease (code 6) with a subcode from [`cease`].
    pub fn cease(subcode: u8) -> Self {
        Self::new(6, subcode, [])
    }

    /// The wire form.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(2 + self.data.len());
        body.push(self.code);
        body.push(self.subcode);
        // Keep the whole message within MAX_LEN whatever the data.
        let room = MAX_LEN - HEADER_LEN - 2;
        body.extend_from_slice(&self.data[..self.data.len().min(room)]);
        frame(T_NOTIFICATION, &body)
    }

    /// Human-readable code and subcode, for logs and peer status.
    pub fn describe(&self) -> String {
        let code = match self.code {
            1 => "Message Header Error",
            2 => "OPEN Message Error",
            3 => "UPDATE Message Error",
            4 => "Hold Timer Expired",
            5 => "Finite State Machine Error",
            6 => "Cease",
            7 => "ROUTE-REFRESH Message Error",
            _ => "Unknown error code",
        };
        format!("{code} ({}/{})", self.code, self.subcode)
    }
}

/// A decoded message from the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// The peer's OPEN, reduced to what the session negotiates.
    Open(PeerOpen),
    /// An UPDATE; its content is skipped (we never install received routes).
    Update,
    /// The peer closes the session, telling us why.
    Notification(Notification),
    /// Liveness.
    Keepalive,
    /// The peer asks us to send a family again (RFC 2918).
    RouteRefresh {
        /// Address family identifier.
        afi: u16,
        /// Subsequent address family identifier.
        safi: u8,
    },
}

/// The parts of a peer's OPEN the session acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerOpen {
    /// The 2-byte "My Autonomous System" field (AS_TRANS for 4-byte ASNs).
    pub my_as: u16,
    /// Proposed hold time in seconds.
    pub hold_time: u16,
    /// BGP identifier.
    pub bgp_id: Ipv4Addr,
    /// The 4-octet AS capability's ASN, if the peer sent one (RFC 6793).
    pub asn4: Option<u32>,
    /// Multiprotocol capabilities (AFI, SAFI), in the order received.
    pub multiprotocol: Vec<(u16, u8)>,
    /// Route refresh capability (RFC 2918) seen.
    pub route_refresh: bool,
    /// Graceful restart capability (RFC 4724) seen.
    pub graceful_restart: bool,
}

impl PeerOpen {
    /// The peer's real ASN: from the 4-octet capability if present.
    pub fn asn(&self) -> u32 {
        self.asn4.unwrap_or(u32::from(self.my_as))
    }

    /// The families the peer offers. With no multiprotocol capability at all
    /// IPv4 unicast is implied (RFC 4760 §8).
    pub fn families(&self) -> Vec<Family> {
        if self.multiprotocol.is_empty() {
            return vec![Family::Ipv4];
        }
        Family::ALL
            .into_iter()
            .filter(|f| self.multiprotocol.contains(&f.afi_safi()))
            .collect()
    }
}

/// Wraps a body into a message with marker, length and type.
fn frame(msg_type: u8, body: &[u8]) -> Vec<u8> {
    let len = HEADER_LEN + body.len();
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&[0xFF; 16]);
    // Callers keep bodies below MAX_LEN, so the length fits in u16.
    out.extend_from_slice(&(len.min(usize::from(u16::MAX)) as u16).to_be_bytes());
    out.push(msg_type);
    out.extend_from_slice(body);
    out
}

/// A KEEPALIVE: just the header.
pub fn keepalive() -> Vec<u8> {
    frame(T_KEEPALIVE, &[])
}

/// What we put in our OPEN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalOpen {
    /// Our ASN; AS_TRANS goes into the 2-byte field when it does not fit.
    pub asn: u32,
    /// Hold time we propose, seconds.
    pub hold_time: u16,
    /// Our BGP identifier.
    pub bgp_id: Ipv4Addr,
    /// Graceful restart time we announce (seconds); `None` omits the capability.
    pub graceful_restart: Option<u16>,
}

/// Errors building a message; they mean a bug or absurd input, never a peer's fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The codec refused the message.
    #[error("cannot encode BGP message: {0}")]
    Codec(String),
}

/// Encodes any netgauze message.
pub(crate) fn write(msg: &BgpMessage) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::with_capacity(msg.len());
    msg.write(&mut out)
        .map_err(|e| EncodeError::Codec(e.to_string()))?;
    Ok(out)
}

/// Our OPEN: IPv4 and IPv6 unicast, route refresh, graceful restart and
/// 4-octet AS, always (the peer picks what it supports).
pub fn encode_open(o: &LocalOpen) -> Result<Vec<u8>, EncodeError> {
    let my_as = u16::try_from(o.asn).unwrap_or(crate::config::AS_TRANS as u16);
    let mut caps = vec![
        BgpCapability::MultiProtocolExtensions(MultiProtocolExtensionsCapability::new(
            AddressType::Ipv4Unicast,
        )),
        BgpCapability::MultiProtocolExtensions(MultiProtocolExtensionsCapability::new(
            AddressType::Ipv6Unicast,
        )),
        BgpCapability::RouteRefresh,
    ];
    if let Some(time) = o.graceful_restart {
        // Forwarding state is preserved: the node's data path (kube-proxy)
        // does not depend on this process, so a peer may keep our routes
        // while we restart. R=0: we never wait for the peer's EoR.
        let families = [AddressType::Ipv4Unicast, AddressType::Ipv6Unicast]
            .map(|t| GracefulRestartAddressFamily::new(true, t));
        caps.push(BgpCapability::GracefulRestartCapability(
            GracefulRestartCapability::new(false, false, time.min(4095), families),
        ));
    }
    caps.push(BgpCapability::FourOctetAs(FourOctetAsCapability::new(
        o.asn,
    )));
    let open = BgpOpenMessage::new(
        my_as,
        o.hold_time,
        o.bgp_id,
        [BgpOpenMessageParameter::new_capabilities(caps)],
    );
    write(&BgpMessage::Open(open))
}

/// Decodes the next message at the start of `buf`.
///
/// `Ok(None)` means more bytes are needed; `Ok(Some((msg, n)))` consumed `n`
/// bytes; `Err` is the NOTIFICATION to send before closing. The header is
/// checked as soon as its 19 bytes are there, before the body arrives.
pub fn decode(buf: &[u8]) -> Result<Option<(Message, usize)>, Notification> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    if buf[..16].iter().any(|b| *b != 0xFF) {
        return Err(Notification::new(1, 1, []));
    }
    let len_bytes = [buf[16], buf[17]];
    let len = usize::from(u16::from_be_bytes(len_bytes));
    let msg_type = buf[18];
    let bad_length = || Notification::new(1, 2, len_bytes);
    if !(HEADER_LEN..=MAX_LEN).contains(&len) {
        return Err(bad_length());
    }
    let min = match msg_type {
        T_OPEN => 29,
        T_UPDATE => 23,
        T_NOTIFICATION => 21,
        T_KEEPALIVE => 19,
        T_ROUTE_REFRESH => 23,
        other => return Err(Notification::new(1, 3, [other])),
    };
    let exact = matches!(msg_type, T_KEEPALIVE | T_ROUTE_REFRESH);
    if len < min || (exact && len != min) {
        return Err(bad_length());
    }
    if buf.len() < len {
        return Ok(None);
    }
    let body = &buf[HEADER_LEN..len];
    let msg = match msg_type {
        T_OPEN => Message::Open(decode_open(body)?),
        T_UPDATE => Message::Update,
        T_NOTIFICATION => Message::Notification(Notification::new(body[0], body[1], &body[2..])),
        T_KEEPALIVE => Message::Keepalive,
        _ => Message::RouteRefresh {
            afi: u16::from_be_bytes([body[0], body[1]]),
            safi: body[3],
        },
    };
    Ok(Some((msg, len)))
}

/// OPEN error (code 2) with a subcode.
fn open_error(subcode: u8, data: impl Into<Vec<u8>>) -> Notification {
    Notification::new(2, subcode, data)
}

/// Parses an OPEN body (at least 10 bytes, guaranteed by `decode`).
fn decode_open(body: &[u8]) -> Result<PeerOpen, Notification> {
    if body[0] != 4 {
        // Data: the largest version we support (RFC 4271 §6.2).
        return Err(open_error(1, [0, 4]));
    }
    let mut open = PeerOpen {
        my_as: u16::from_be_bytes([body[1], body[2]]),
        hold_time: u16::from_be_bytes([body[3], body[4]]),
        bgp_id: Ipv4Addr::new(body[5], body[6], body[7], body[8]),
        asn4: None,
        multiprotocol: Vec::new(),
        route_refresh: false,
        graceful_restart: false,
    };
    let opt_len = usize::from(body[9]);
    let params = &body[10..];
    if params.len() != opt_len {
        return Err(open_error(0, []));
    }
    let mut rest = params;
    while !rest.is_empty() {
        let [ptype, plen, ..] = rest else {
            return Err(open_error(0, []));
        };
        let end = 2 + usize::from(*plen);
        let Some(value) = rest.get(2..end) else {
            return Err(open_error(0, []));
        };
        if *ptype != 2 {
            // Only capabilities (RFC 5492) are defined today.
            return Err(open_error(4, [*ptype]));
        }
        decode_capabilities(value, &mut open)?;
        rest = &rest[end..];
    }
    Ok(open)
}

/// Walks capability TLVs; unknown codes are skipped (RFC 5492 §4), known
/// ones with a wrong length make the OPEN malformed (subcode 0).
fn decode_capabilities(mut caps: &[u8], open: &mut PeerOpen) -> Result<(), Notification> {
    while !caps.is_empty() {
        let [code, len, ..] = caps else {
            return Err(open_error(0, []));
        };
        let end = 2 + usize::from(*len);
        let Some(v) = caps.get(2..end) else {
            return Err(open_error(0, []));
        };
        match (*code, v) {
            (1, [a0, a1, _, safi]) => open
                .multiprotocol
                .push((u16::from_be_bytes([*a0, *a1]), *safi)),
            (2, []) => open.route_refresh = true,
            (64, v) if v.len() >= 2 && (v.len() - 2) % 4 == 0 => open.graceful_restart = true,
            (65, [a, b, c, d]) => open.asn4 = Some(u32::from_be_bytes([*a, *b, *c, *d])),
            (1 | 2 | 64 | 65, _) => return Err(open_error(0, [])),
            _ => {}
        }
        caps = &caps[end..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> LocalOpen {
        LocalOpen {
            asn: 4_200_000_001,
            hold_time: 90,
            bgp_id: Ipv4Addr::new(10, 0, 0, 2),
            graceful_restart: Some(120),
        }
    }

    #[test]
    fn open_round_trips_with_as_trans() {
        let bytes = encode_open(&local()).expect("encodes");
        let (msg, n) = decode(&bytes).expect("valid").expect("complete");
        assert_eq!(n, bytes.len());
        let Message::Open(o) = msg else {
            panic!("not an OPEN: {msg:?}")
        };
        assert_eq!(o.my_as, 23456);
        assert_eq!(o.asn(), 4_200_000_001);
        assert_eq!(o.hold_time, 90);
        assert_eq!(o.bgp_id, Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(o.families(), vec![Family::Ipv4, Family::Ipv6]);
        assert!(o.route_refresh && o.graceful_restart);
    }

    #[test]
    fn small_asn_goes_in_the_two_byte_field() {
        let bytes = encode_open(&LocalOpen {
            asn: 64512,
            ..local()
        })
        .expect("encodes");
        let Some((Message::Open(o), _)) = decode(&bytes).expect("valid") else {
            panic!()
        };
        assert_eq!((o.my_as, o.asn4), (64512, Some(64512)));
    }

    #[test]
    fn small_messages_round_trip() {
        assert_eq!(decode(&keepalive()), Ok(Some((Message::Keepalive, 19))));
        let n = Notification::cease(cease::ADMINISTRATIVE_SHUTDOWN);
        let bytes = n.encode();
        assert_eq!(decode(&bytes), Ok(Some((Message::Notification(n), 21))));
        let mut rr = frame(T_ROUTE_REFRESH, &[0, 2, 0, 1]);
        assert_eq!(
            decode(&rr),
            Ok(Some((Message::RouteRefresh { afi: 2, safi: 1 }, 23)))
        );
        rr.truncate(20);
        assert_eq!(
            decode(&rr),
            Ok(None),
            "partial message waits for more bytes"
        );
    }

    #[test]
    fn header_errors_have_rfc_codes() {
        let mut bad_marker = keepalive();
        bad_marker[3] = 0;
        assert_eq!(decode(&bad_marker), Err(Notification::new(1, 1, [])));
        let mut long = keepalive();
        long[16..18].copy_from_slice(&5000u16.to_be_bytes());
        assert_eq!(
            decode(&long),
            Err(Notification::new(1, 2, 5000u16.to_be_bytes()))
        );
        let mut short = keepalive();
        short[16..18].copy_from_slice(&18u16.to_be_bytes());
        assert_eq!(decode(&short).map_err(|n| (n.code, n.subcode)), Err((1, 2)));
        let ka_with_body = frame(T_KEEPALIVE, &[0]);
        assert_eq!(
            decode(&ka_with_body).map_err(|n| (n.code, n.subcode)),
            Err((1, 2))
        );
        let short_update = frame(T_UPDATE, &[0]);
        assert_eq!(
            decode(&short_update).map_err(|n| (n.code, n.subcode)),
            Err((1, 2))
        );
        let bad_type = frame(9, &[]);
        assert_eq!(decode(&bad_type), Err(Notification::new(1, 3, [9])));
    }

    #[test]
    fn open_errors_have_rfc_codes() {
        let good = encode_open(&local()).expect("encodes");
        let mut v3 = good.clone();
        v3[19] = 3;
        assert_eq!(decode(&v3), Err(Notification::new(2, 1, [0, 4])));
        // Optional parameter type 1 (deprecated authentication).
        let body = [4, 0xFC, 0, 0, 90, 10, 0, 0, 1, 3, 1, 1, 0];
        assert_eq!(
            decode(&frame(T_OPEN, &body)),
            Err(Notification::new(2, 4, [1]))
        );
        // Optional parameters length disagrees with the message length.
        let body = [4, 0xFC, 0, 0, 90, 10, 0, 0, 1, 9, 2, 0];
        assert_eq!(
            decode(&frame(T_OPEN, &body)).map_err(|n| (n.code, n.subcode)),
            Err((2, 0))
        );
        // 4-octet AS capability with a 2-byte value.
        let body = [4, 0xFC, 0, 0, 90, 10, 0, 0, 1, 4, 2, 2, 65, 0];
        assert_eq!(
            decode(&frame(T_OPEN, &body)).map_err(|n| (n.code, n.subcode)),
            Err((2, 0))
        );
    }

    #[test]
    fn unknown_capabilities_are_skipped() {
        // Capability 73 (FQDN) and 70 (enhanced route refresh) around an MP cap.
        let caps = [73, 3, 1, b'a', 0, 1, 4, 0, 2, 0, 1, 70, 0];
        let mut body = vec![
            4,
            0xFD,
            0xE8,
            0,
            0,
            10,
            0,
            0,
            1,
            (caps.len() + 2) as u8,
            2,
            caps.len() as u8,
        ];
        body.extend_from_slice(&caps);
        let Some((Message::Open(o), _)) = decode(&frame(T_OPEN, &body)).expect("valid") else {
            panic!()
        };
        assert_eq!(o.families(), vec![Family::Ipv6]);
        assert_eq!(o.asn(), 65000);
        assert_eq!(o.hold_time, 0);
    }
}
