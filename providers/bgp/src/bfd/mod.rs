//! BFD, Bidirectional Forwarding Detection (RFC 5880), single hop over UDP (RFC 5881),
//! asynchronous mode, one session per BGP peer that asks for it.
//!
//! Why: a BGP session notices a dead node only when its hold timer runs out (90 s by
//! default, 3 s at the very least). With BFD the router exchanges small UDP packets with
//! the node every few hundred milliseconds and drops the node's BGP session, and so its
//! routes, after `detectMultiplier` of them are missed: 3 × 300 ms by default.
//!
//! ```text
//!  Speaker ──spawns──► BfdTask (one per speaker, only if a selected peer has `bfd:`)
//!                        ├─ UDP 0.0.0.0:3784 / [::]:3784, TTL of every packet checked = 255
//!                        ├─ per peer: UDP socket from a port in 49152..=65535, TTL 255
//!                        └─ per peer: BfdSession (sans-IO, [`session`]) ──watch──► PeerTask
//!                                                                   Up→Down: BGP session reset
//! ```
//!
//! - [`packet`]: the 24-byte control packet (no authentication section: RFC 5881 allows
//!   none for single hop, where the TTL check guards against off-link packets).
//! - [`session`]: the state machine of RFC 5880 §6.8, time passed in.
//! - [`driver`]: the tokio task that owns the sockets and demultiplexes by discriminator.
//!
//! No crate was taken: none on crates.io is both maintained and sans-IO (`rust-bfd` on
//! GitHub is an unpublished daemon that owns its sockets and tasks; `packet-dissector-bfd`
//! only decodes). The packet is 24 fixed bytes and the state machine a page of the RFC.

use portway_provider::ConfigIssue;
use serde::{Deserialize, Serialize};
use std::time::Duration;

pub mod driver;
pub mod packet;
pub mod session;

pub use session::{BfdSession, BfdState, BfdStatus, BfdTimers};

/// UDP port of single-hop BFD control packets (RFC 5881 §4).
pub const CONTROL_PORT: u16 = 3784;

/// A peer's `bfd:` settings, as MetalLB's BFDProfile (same names, same defaults).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BfdConfig {
    /// The slowest rate at which we accept the router's packets (RequiredMinRxInterval).
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub receive_interval: Duration,
    /// The rate at which we would like to send (DesiredMinTxInterval); the router may ask
    /// for a slower one.
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub transmit_interval: Duration,
    /// Packets missed in a row before the router declares us down (DetectMult).
    #[serde(default = "default_multiplier")]
    pub detect_multiplier: u8,
}

fn default_interval() -> Duration {
    Duration::from_millis(300)
}
fn default_multiplier() -> u8 {
    3
}

impl Default for BfdConfig {
    fn default() -> Self {
        Self {
            receive_interval: default_interval(),
            transmit_interval: default_interval(),
            detect_multiplier: default_multiplier(),
        }
    }
}

/// Bounds of the intervals, as MetalLB's (10 ms .. 60 s, whole milliseconds).
const MIN_INTERVAL: Duration = Duration::from_millis(10);
const MAX_INTERVAL: Duration = Duration::from_secs(60);

impl BfdConfig {
    /// Appends every problem, with key paths under `base` (`bgp.peers[0].bfd`).
    pub fn validate(&self, base: &str, out: &mut Vec<ConfigIssue>) {
        for (key, d) in [
            ("receiveInterval", self.receive_interval),
            ("transmitInterval", self.transmit_interval),
        ] {
            if d.subsec_nanos() % 1_000_000 != 0 || d < MIN_INTERVAL || d > MAX_INTERVAL {
                out.push(ConfigIssue::new(
                    format!("{base}.{key}"),
                    "must be whole milliseconds, 10ms..=60s (e.g. 300ms)",
                ));
            }
        }
        if self.detect_multiplier < 2 {
            out.push(ConfigIssue::new(
                format!("{base}.detectMultiplier"),
                "must be 2..=255 (packets missed before the session is down; 3 is usual)",
            ));
        }
    }

    /// The session timers these settings ask for.
    pub fn timers(&self) -> BfdTimers {
        BfdTimers {
            desired_min_tx: self.transmit_interval,
            required_min_rx: self.receive_interval,
            detect_mult: self.detect_multiplier,
        }
    }
}
