//! Address pools as resources, live: the controller merges the configuration file's pools
//! with the `AddressPool` resources ([`merge`]), applies every change to the running
//! allocator and to the pools of the l2 and bgp classes ([`watch`]), and writes each pool's
//! usage into its status ([`status`]).
//!
//! ```text
//!   file pools ─┐
//!   AddressPools ─merge─> VipManager::reconfigure ─> providers allocate from the new pools
//!   L2AnnouncementPolicies / BGPAdvertisements ─> set_pools of the l2 / bgp handles
//!   allocator stats ─> AddressPool status (per family), every second and on change
//! ```

pub mod merge;
pub mod status;
pub mod watch;

pub use merge::{Merged, Refusal, merge};
pub use watch::{Handles, LivePools, start};

use crate::config::Config;
use crate::k8s::Client;
use std::time::Duration;

/// The live pools and their status writer, as `portway controller` runs them; dropping it
/// stops both.
pub struct Live {
    /// The watcher; give `pools.changes` to the service controller
    /// ([`crate::service::ServiceController::pool_changes`]).
    pub pools: LivePools,
    status: tokio::task::JoinHandle<()>,
}

impl Drop for Live {
    fn drop(&mut self) {
        self.status.abort();
    }
}

/// Starts watching pools for the built providers (see [`watch::start`]: returns once the
/// resources present now are applied, or after `settle`) and writing their status every
/// `status_every` and on each change. `instance` names this process in its events.
pub async fn run(
    client: Client,
    config: &Config,
    built: &crate::providers::Built,
    instance: &str,
    settle: Duration,
    status_every: Duration,
) -> Live {
    let events =
        crate::events::Events::new(client.clone(), crate::names::SERVICE_CONTROLLER, instance);
    let pools = start(client.clone(), config, Handles::of(built), events, settle).await;
    let watched = status::Watched::of(&pools);
    let vips = built.vips.share();
    let status = tokio::spawn(async move {
        status::write_loop(client, &watched, vips, status_every).await;
    });
    Live { pools, status }
}

#[cfg(test)]
mod tests;
