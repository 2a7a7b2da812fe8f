//! Builds the providers the configuration enables.
//!
//! hostport is on unless disabled; l2, bgp and f5 are on when their section
//! is present. Until a provider crate lands, its class is served by a
//! `MockProvider` stand-in so the controller, the sandbox and the tests
//! exercise the full path.

use crate::config::Config;
use kube::Client;
use portway_provider::LoadBalancerProvider;
use portway_provider::mock::MockProvider;
use std::sync::Arc;

/// The providers for `config`.
pub async fn build(
    config: &Config,
    _client: &Client,
) -> anyhow::Result<Vec<Arc<dyn LoadBalancerProvider>>> {
    let mut out: Vec<Arc<dyn LoadBalancerProvider>> = Vec::new();
    out.push(Arc::new(MockProvider::new("portway.dev/hostport")));
    if config.l2.is_some() {
        out.push(Arc::new(MockProvider::new("portway.dev/l2")));
    }
    if config.bgp.is_some() {
        out.push(Arc::new(MockProvider::new("portway.dev/bgp")));
    }
    if config.f5.is_some() {
        out.push(Arc::new(MockProvider::new("portway.dev/f5")));
    }
    Ok(out)
}
