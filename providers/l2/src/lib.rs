//! Portway's L2 mode, node side: which node answers ARP/NDP for each
//! LoadBalancer IP, and the answering itself.
//!
//! ```text
//!            gossip (SWIM, UDP :7947)                 API (via the caller)
//!   peers <──────────────────────────> Membership     Nodes, Services, EndpointSlices
//!                                         │ live speakers + their networks   │
//!                                         v                                  v
//!                                   election::elect  <── VipInput per IP, node labels
//!                                         │ owner per IP (rendezvous hashing),
//!                                         │ quorum verdict (split-brain rule)
//!                                         v
//!                                   Announcer ── AF_PACKET ──> ARP replies, NAs,
//!                                   (ArpNdpResponder core)     gratuitous ARP / NA
//! ```
//!
//! [`L2Speaker`] wires the three together for `portway speaker`; each part is
//! usable and tested alone. The pure parts ([`owner()`], [`quorum()`],
//! [`election`], [`frame`], [`ArpNdpResponder`], [`MembershipCore`]) take
//! time as an argument and do no I/O; the drivers ([`Announcer`],
//! [`Membership`]) are thin tokio loops around them. All FFI (packet
//! sockets, `getifaddrs`) lives in the `sys` module.
//!
//! See `docs/l2.md` for the behaviour, the configuration keys and the
//! failover figures.
#![deny(unsafe_code)]

mod actor;
pub mod announcer;
pub mod claim;
pub mod config;
pub mod election;
pub mod frame;
pub mod gossip;
pub mod iface;
pub mod membership;
pub mod owner;
pub mod responder;
pub mod scope;
pub mod speaker;
pub mod sys;
mod timetable;
pub mod wire;

#[cfg(test)]
mod fixtures;

pub use announcer::{
    Announcer, AnnouncerConfig, AnnouncerStatus, ConflictSeen, OwnedDelta, mac_text,
};
pub use config::{L2Config, L2ConfigError};
pub use election::{
    Election, ElectionInput, Ineligible, ScoreCache, VipInput, elect, elect_cached, elect_some,
};
pub use gossip::{Membership, MembershipConfig, MembershipView};
pub use iface::InterfaceChoice;
pub use membership::{Departure, MembershipCore, MembershipEvent, MembershipTuning, SpeakerId};
pub use owner::{Quorum, QuorumReason, owner, quorum};
pub use responder::{AnnounceTiming, ArpNdpResponder, InterfaceInfo, InterfaceStats, Transmit};
pub use scope::VipScope;
pub use speaker::{
    DEFAULT_HANDOVER_WAIT, L2Speaker, NodeInput, SpeakerConfig, SpeakerError, SpeakerEvent,
    SpeakerStatus, Takeover,
};
pub use wire::{GossipKeys, Refused};
