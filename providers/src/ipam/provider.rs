//! The controller side of the l2 and bgp classes: a provider whose whole job is to hand out
//! and take back addresses from the shared allocator.
//!
//! Announcing the address is the node speakers' work (ARP/NDP or BGP); they read it from the
//! Service's status. Both classes need exactly the same controller-side behaviour, so it lives
//! here once and the two crates construct it with their class.

use super::VipManager;
use crate::{LbNode, LbService, LbStatus, LoadBalancerProvider, ProviderError, ServiceKey};
use async_trait::async_trait;

/// A provider that only allocates virtual IPs (classes whose data plane runs on the nodes).
pub struct VipProvider {
    class: String,
    vips: VipManager,
}

impl VipProvider {
    /// A provider for `class` drawing from `vips` (a handle scoped to the class's pools).
    pub fn new(class: impl Into<String>, vips: VipManager) -> Self {
        VipProvider {
            class: class.into(),
            vips,
        }
    }

    /// The allocator handle, for metrics.
    pub fn vips(&self) -> &VipManager {
        &self.vips
    }
}

#[async_trait]
impl LoadBalancerProvider for VipProvider {
    fn class(&self) -> &str {
        &self.class
    }

    async fn adopt(&self, existing: &[LbService]) -> Vec<(ServiceKey, ProviderError)> {
        // Addresses outside every pool come back as `Orphaned` from `adopt` itself.
        self.vips.adopt(existing)
    }

    async fn ensure(&self, svc: &LbService, _nodes: &[LbNode]) -> Result<LbStatus, ProviderError> {
        self.vips.ensure(svc)
    }

    async fn update(&self, _svc: &LbService, _nodes: &[LbNode]) -> Result<(), ProviderError> {
        // Which node announces is decided by the speakers; nothing to converge here.
        Ok(())
    }

    async fn ensure_deleted(&self, svc: &LbService) -> Result<(), ProviderError> {
        self.vips.release(&svc.key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipam::parse_pools;

    fn manager() -> VipManager {
        let pools = parse_pools(&[
            serde_json::json!({"name": "lan", "addresses": ["192.0.2.10-192.0.2.11"]}),
        ])
        .expect("pools");
        VipManager::new(&pools).expect("manager")
    }

    #[tokio::test]
    async fn allocates_keeps_and_releases() {
        let m = manager();
        let p = VipProvider::new(
            "portway.dev/l2",
            m.scoped("portway.dev/l2", &["lan".into()]),
        );
        let svc = LbService {
            key: ServiceKey::new("default", "a"),
            ..Default::default()
        };
        let first = p.ensure(&svc, &[]).await.expect("ip");
        assert_eq!(p.ensure(&svc, &[]).await.expect("same"), first);
        assert_eq!(m.get(&svc.key), Some(first.clone()));
        p.ensure_deleted(&svc).await.expect("release");
        assert_eq!(m.get(&svc.key), None);
    }

    /// An address held outside every pool is reported once, for its own Service only
    /// (another class's orphan is that class's to report).
    #[tokio::test]
    async fn adopt_reports_each_orphan_once_and_only_for_its_class() {
        let m = manager();
        let l2 = VipProvider::new(
            "portway.dev/l2",
            m.scoped("portway.dev/l2", &["lan".into()]),
        );
        let bgp = VipProvider::new(
            "portway.dev/bgp",
            m.scoped("portway.dev/bgp", &["lan".into()]),
        );
        let held = |name: &str, ip: &str| LbService {
            key: ServiceKey::new("default", name),
            current_ips: vec![ip.parse().expect("ip")],
            ..Default::default()
        };
        assert_eq!(bgp.adopt(&[held("b", "198.51.100.9")]).await.len(), 1);
        let problems = l2.adopt(&[held("a", "198.51.100.7")]).await;
        let keys: Vec<&ServiceKey> = problems.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, [&ServiceKey::new("default", "a")], "{problems:?}");
    }
}
