//! Portway's BGP speaker: each node advertises load-balancer addresses as
//! host routes, with itself as next hop, to the routers in configuration.
//!
//! ```text
//!  caller (portway speaker)            this crate
//!  ─────────────────────────           ─────────────────────────────────────────────
//!  BgpConfig + NodeInfo ──spawn──►  Speaker ──► one tokio task per peer
//!  set_routes(full set) ─────────►      │         ├─ TCP (active connect, MD5, source addr)
//!  peer_states() / watch ◄────────      │         └─ Session: sans-IO RFC 4271 FSM
//!  shutdown().await ─────────────►      │              ├─ Adj-RIB-Out diff → packed UPDATEs
//!                                                      └─ OPEN/KEEPALIVE/NOTIFICATION, timers
//!                                    └─ BFD task (if a peer has `bfd:`) ──watch──► peer tasks
//! ```
//!
//! - [`config`]: the `bgp:` configuration section (DESIGN §7) and its
//!   validation with key paths.
//! - [`session`]: the protocol core, no I/O, time passed in. Unit tests run
//!   two sessions back to back on a virtual clock.
//! - [`wire`] / [`update`]: framing and messages. `netgauze-bgp-pkt` encodes
//!   OPEN and UPDATE; receiving is deliberately shallow (UPDATE bodies are
//!   skipped, unknown capabilities ignored), so odd routes from a router
//!   never reset the session.
//! - [`speaker`]: the tokio driver and the handle the node agent uses.
//! - [`bfd`]: BFD (RFC 5880/5881) per peer, so routers drop a dead node's routes in
//!   under a second; its own sans-IO session and one tokio task per speaker.
//! - `md5`: TCP MD5 signatures (RFC 2385), and `gtsm`: the TTL of received BFD packets;
//!   the only `unsafe` in the crate.
//!
//! The controller side (allocating addresses from pools for
//! `portway.dev/bgp` Services) is wired by the controller using
//! `portway-provider`'s allocator; this crate only needs the addresses.
//!
//! # Fuzzing the decoder
//!
//! `fuzz/` holds a cargo-fuzz target that feeds arbitrary bytes to
//! [`wire::decode`] and to a [`session::Session`] in every receiving state:
//!
//! ```text
//! cargo install cargo-fuzz            # needs a nightly toolchain
//! cd providers/bgp/fuzz && cargo +nightly fuzz run decode -- -max_total_time=300
//! ```
//!
//! CI instead runs a proptest with the same property (no panic, every
//! error is a well-formed NOTIFICATION): `cargo test -p portway-bgp decode_never_panics`.
#![deny(unsafe_code)]

pub mod bfd;
pub mod config;
#[allow(unsafe_code)]
mod gtsm;
#[allow(unsafe_code)]
mod md5;
mod peer_task;
mod rib_out;
pub mod route;
pub mod session;
pub mod speaker;
pub mod timer;
pub mod update;
pub mod wire;

#[cfg(test)]
mod fuzz_tests;

pub use bfd::BfdConfig;
pub use config::{AdvertisementConfig, BgpConfig, ConfigIssue, PeerConfig, SecretRef};
pub use route::{Community, Family, LargeCommunity, RouteAttrs, RouteSet, Routes};
pub use session::{Session, SessionConfig, SessionStats, State};
pub use speaker::{
    NodeInfo, PeerStatus, Reconfigured, Speaker, SpeakerError, SpeakerHandle, SpeakerOptions,
};
