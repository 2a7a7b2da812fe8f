//! The chaos world: three nodes, a simulated BIG-IP, a pool per VIP class (and one
//! requests-only pool for requested addresses, so a request never collides with an
//! automatic allocation), and two controller processes that can be killed, paused and
//! restarted.

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, PostParams};
use portway_sim::bigip::BigIpSim;
use portway_tests::process::{Controller, spawn_with_lease};
use portway_tests::{SimNode, TestCluster};
use serde_json::json;
use std::sync::Arc;

/// Lease 3 s, renew deadline 2 s, retry 0.5 s: failovers that fit a short run.
pub const LEASE: [&str; 3] = ["3s", "2s", "500ms"];
/// The controllers' users (their kubeconfigs and audit names).
pub const USERS: [&str; 2] = ["chaos-a", "chaos-b"];
/// Node addresses (hostport publishes them).
pub const NODES: [&str; 3] = ["10.0.0.1", "10.0.0.2", "10.0.0.3"];

/// Pools per class, as address prefixes (a /26 each).
pub const L2_PREFIX: &str = "192.168.77.";
pub const L2_REQUESTED_PREFIX: &str = "192.168.78.";
pub const BGP_PREFIX: &str = "198.51.100.";
pub const F5_PREFIX: &str = "203.0.113.";

pub struct World {
    pub cluster: TestCluster,
    pub bigip: Arc<BigIpSim>,
    pub dir: tempfile::TempDir,
    config: String,
    pub controllers: [Option<Controller>; 2],
}

impl World {
    pub async fn start() -> World {
        portway_tests::init_tracing();
        let cluster = TestCluster::start().await.expect("cluster");
        for (i, ip) in NODES.iter().enumerate() {
            cluster
                .add_node(SimNode::new(&format!("node-{}", i + 1)).ipv4(ip))
                .await
                .expect("node");
        }
        let ns: Namespace =
            serde_json::from_value(json!({"metadata": {"name": "portway-system"}})).expect("ns");
        let _ = Api::<Namespace>::all(cluster.client())
            .create(&PostParams::default(), &ns)
            .await;
        let secret: Secret = serde_json::from_value(json!({"metadata": {"name": "bigip"},
            "stringData": {"username": "admin", "password": "admin"}}))
        .expect("secret");
        Api::<Secret>::namespaced(cluster.client(), "portway-system")
            .create(&PostParams::default(), &secret)
            .await
            .expect("secret");
        let bigip = Arc::new(BigIpSim::start().await.expect("bigip"));
        let config = format!(
            r#"
serviceController: {{minRetryDelay: 500ms, maxRetryDelay: 5s, nodeSyncDebounce: 200ms}}
pools:
  - name: lan
    addresses: ["{L2_PREFIX}0/26"]
  - name: lan-requested
    addresses: ["{L2_REQUESTED_PREFIX}0/26"]
    autoAssign: false
  - name: dc
    addresses: ["{BGP_PREFIX}0/26"]
  - name: appliance
    addresses: ["{F5_PREFIX}0/26"]
l2:
  pools: [lan, lan-requested]
bgp:
  localASN: 64512
  peers: [{{address: 10.0.0.254, asn: 64500}}]
  advertisements: [{{pools: [dc]}}]
f5:
  url: {}
  credentialsSecret: {{namespace: portway-system, name: bigip}}
  pools: [appliance]
  resyncPeriod: 10s
"#,
            bigip.url()
        );
        let dir = tempfile::tempdir().expect("tmp");
        let mut w = World {
            cluster,
            bigip,
            dir,
            config,
            controllers: [None, None],
        };
        for i in 0..2 {
            w.start_controller(i).await;
        }
        w
    }

    pub async fn start_controller(&mut self, i: usize) {
        if self.controllers[i].is_none() {
            let c = spawn_with_lease(
                &self.cluster,
                self.dir.path(),
                USERS[i],
                &self.config,
                LEASE,
            )
            .await;
            self.controllers[i] = Some(c);
        }
    }

    pub fn stop_controller(&mut self, i: usize) {
        // Dropping kills the process (SIGKILL).
        self.controllers[i] = None;
    }

    pub fn pid(&self, i: usize) -> Option<u32> {
        self.controllers[i].as_ref().map(|c| c.child.id())
    }

    /// Which controller holds the Lease now, if either.
    pub async fn leader(&self) -> Option<usize> {
        let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
            Api::namespaced(self.cluster.client(), "default");
        let holder = leases
            .get_opt("portway-controller")
            .await
            .ok()
            .flatten()?
            .spec?
            .holder_identity?;
        USERS
            .iter()
            .position(|u| holder.starts_with(&format!("{u}_")))
    }

    pub async fn stop(mut self) {
        self.controllers = [None, None];
        self.cluster.shutdown().await;
    }
}
