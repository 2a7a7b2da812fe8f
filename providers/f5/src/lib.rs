//! The `portway.dev/f5` provider: pools and virtual servers on an F5 BIG-IP through iControl
//! REST, for data centres that already own the appliance.
//!
//! It is the correct, idempotent one the ecosystem lacks: it reads a Service's objects and
//! diffs before writing (no write when in sync, with what the device returns normalised
//! first: [`current`]; by name, with one whole-partition read per resync period shared by
//! every Service, so a reconcile costs the same at 10 or 1,000 Services: `snapshot`), changes only members with one PATCH per pool, runs anything larger as one
//! transaction in dependency order, publishes the VIP only after the commit, touches only
//! objects tagged with the Service's UID ([`tag`]), repairs drift on a resync period and
//! deletes only the nodes it created.
#![forbid(unsafe_code)]

mod client;
mod config;
pub mod current;
mod desired;
mod http;
mod names;
mod nodes;
mod plan;
mod provider;
mod reads;
mod session;
mod snapshot;
mod sync;
pub mod tag;

pub use client::BigIp;
pub use config::{
    ConfigIssue, F5Config, MemberMode, MonitorChoice, MonitorKind, MonitorSetting, Monitors,
    PerProtocol, SecretRef,
};
pub use current::Current;
pub use desired::{Desired, DesiredPool, desired};
pub use names::{destination, member_name, monitor_name, object_name, uri_name};
pub use nodes::NodeIndex;
pub use plan::{Command, Plan, needs_nodes, plan};
pub use provider::{CredentialsReader, F5Provider};
pub use session::Credentials;

/// The class this provider serves.
pub const CLASS: &str = "portway.dev/f5";
