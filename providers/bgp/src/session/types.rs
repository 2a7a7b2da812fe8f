//! The session's public types: its state, configuration, outputs and counters.

use crate::route::Family;
use serde::Serialize;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

/// RFC 4271 session states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum State {
    /// Not connected; waiting for start or for the reconnect backoff.
    Idle,
    /// A TCP connection attempt is in progress.
    Connect,
    /// The last attempt failed; waiting to retry.
    Active,
    /// Connected, our OPEN sent, waiting for the peer's.
    OpenSent,
    /// OPENs exchanged, waiting for the peer's KEEPALIVE.
    OpenConfirm,
    /// Up: routes are exchanged.
    Established,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Static parameters of a session.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionConfig {
    /// Our ASN.
    pub local_asn: u32,
    /// The ASN the peer must present.
    pub peer_asn: u32,
    /// Our BGP identifier.
    pub router_id: Ipv4Addr,
    /// Hold time we propose (seconds; 0 = none).
    pub hold_time: u16,
    /// Keepalive interval we use at most (seconds).
    pub keepalive_time: u16,
    /// Graceful restart time announced (RFC 4724); `None` (the default) omits the
    /// capability, so a router drops our routes as soon as the session does.
    pub graceful_restart_time: Option<u16>,
    /// IPv4 next hop when the session runs over IPv6.
    pub node_ipv4: Option<Ipv4Addr>,
    /// IPv6 next hop when the session runs over IPv4.
    pub node_ipv6: Option<Ipv6Addr>,
    /// How long a TCP connect may take.
    pub connect_timeout: Duration,
    /// Hold time while waiting for the peer's OPEN (RFC 4271 suggests 4 min).
    pub open_hold_time: Duration,
    /// First reconnect delay.
    pub backoff_min: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
}

impl SessionConfig {
    /// Defaults for everything but the identities.
    pub fn new(local_asn: u32, peer_asn: u32, router_id: Ipv4Addr) -> Self {
        Self {
            local_asn,
            peer_asn,
            router_id,
            hold_time: 90,
            keepalive_time: 30,
            graceful_restart_time: None,
            node_ipv4: None,
            node_ipv6: None,
            connect_timeout: Duration::from_secs(10),
            open_hold_time: Duration::from_secs(240),
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
        }
    }
}

/// What the driver must do next, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Open a TCP connection to the peer, then call `handle_connected` or
    /// `handle_connect_failed`.
    Connect,
    /// Send these bytes (one or more whole messages).
    Transmit(Vec<u8>),
    /// Flush what was transmitted, then close the connection.
    Disconnect,
}

/// Counters and facts about the session, for status and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionStats {
    /// UPDATE messages sent (End-of-RIB markers included).
    pub updates_sent: u64,
    /// End-of-RIB markers sent.
    pub end_of_rib_sent: u64,
    /// Prefixes the peer currently has from us.
    pub prefixes_advertised: usize,
    /// Times an Established session went down.
    pub flaps: u64,
    /// Times the session reached Established.
    pub established: u64,
    /// NOTIFICATIONs sent.
    pub notifications_sent: u64,
    /// NOTIFICATIONs received.
    pub notifications_received: u64,
    /// Why the session last failed, for humans.
    pub last_error: Option<String>,
    /// Negotiated hold time while up (seconds).
    pub hold_time: Option<u16>,
    /// Families negotiated while up.
    pub families: Vec<Family>,
    /// Whether both sides use 4-octet ASNs.
    pub four_octet_as: bool,
}
