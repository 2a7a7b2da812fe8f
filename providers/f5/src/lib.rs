//! The `portway.dev/f5` provider: pools and virtual servers on an F5 BIG-IP through iControl
//! REST, for data centres that already own the appliance.
//!
//! It is the correct, idempotent one the ecosystem lacks: it reads the partition and diffs
//! before writing (no write when in sync), changes only members with one PATCH per pool,
//! runs anything larger as one transaction in dependency order, publishes the VIP only after
//! the commit, touches only objects tagged with the Service's UID, repairs drift on a resync
//! period and garbage-collects the nodes its members left behind.
#![forbid(unsafe_code)]

mod client;
mod config;
mod names;
mod plan;
mod provider;

pub use client::{BigIp, Credentials};
pub use config::{ConfigIssue, F5Config, MemberMode, SecretRef};
pub use names::{destination, member_name, object_name, uri_name};
pub use plan::{Command, Current, Desired, Plan, desired, plan};
pub use provider::F5Provider;

/// The class this provider serves.
pub const CLASS: &str = "portway.dev/f5";
