//! The test world a suite runs against, chosen by one variable:
//! `PORTWAY_TEST_CLUSTER=sim` (the default: `portway-sim`, embedded, fast) or `real` (the
//! real control plane of `tests/cluster/`: kube-apiserver, etcd, kube-controller-manager,
//! kube-scheduler and a fake kubelet, one per test).
//!
//! [`TestCluster`] hides the difference so that test bodies do not branch: both start empty
//! but for what the real server makes itself (namespaces, the `kubernetes` Service), take
//! Nodes the way a kubelet registers them, publish endpoints through the endpoints machinery,
//! log every write with its user, and give clients for other users and ServiceAccounts.
//! "RBAC off" (the sim's default) is a cluster-admin binding for every user a test asks for;
//! [`TestCluster::enforce_rbac`] removes them so only what the test applied counts.
//! Faults that only one world can make are reached through [`TestCluster::sim`] and
//! [`TestCluster::real`], in suites of their own.

use crate::real::{RealCluster, RealOptions};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams, PostParams};
use portway_sim::{SimBuilder, SimCluster, SimNode, WriteRecord};
use std::net::IpAddr;
use std::path::Path;
use std::sync::Mutex;

/// Which world a test runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `portway-sim`.
    Sim,
    /// The real control plane.
    Real,
}

/// The backend named by `PORTWAY_TEST_CLUSTER` (unset: `sim`). Any other value is a mistake
/// that must not silently fall back to the sim.
pub fn backend() -> Backend {
    match std::env::var("PORTWAY_TEST_CLUSTER").as_deref() {
        Err(_) | Ok("") | Ok("sim") => Backend::Sim,
        Ok("real") => Backend::Real,
        Ok(other) => panic!("PORTWAY_TEST_CLUSTER={other:?}: expected `sim` or `real`"),
    }
}

/// How to start a [`TestCluster`].
#[derive(Debug, Clone)]
pub struct ClusterBuilder {
    sim: SimBuilder,
    listen: Option<IpAddr>,
    backend: Option<Backend>,
}

impl ClusterBuilder {
    /// Serve on this address (for clients in network namespaces); default loopback.
    pub fn listen(mut self, ip: IpAddr) -> Self {
        self.sim = self.sim.listen((ip, 0).into());
        self.listen = Some(ip);
        self
    }

    /// Sim only: whether its scheduler and kubelet run. The real world always has them.
    pub fn kubelet(mut self, on: bool) -> Self {
        self.sim = self.sim.kubelet(on);
        self
    }

    /// Sim only: whether its DaemonSet controller runs. The real world always has it.
    pub fn daemonsets(mut self, on: bool) -> Self {
        self.sim = self.sim.daemonsets(on);
        self
    }

    /// The sim whatever `PORTWAY_TEST_CLUSTER` says, for tests of the sim's own faults.
    pub fn sim_only(mut self) -> Self {
        self.backend = Some(Backend::Sim);
        self
    }

    /// Starts the world [`backend`] names.
    pub async fn start(self) -> anyhow::Result<TestCluster> {
        let world = match self.backend.unwrap_or_else(backend) {
            Backend::Sim => World::Sim(self.sim.start().await?),
            Backend::Real => World::Real(
                RealCluster::start(RealOptions {
                    listen: self.listen,
                })
                .await?,
            ),
        };
        Ok(TestCluster {
            world,
            rbac: Mutex::new(RbacState::default()),
        })
    }
}

enum World {
    Sim(SimCluster),
    Real(RealCluster),
}

/// Users given cluster-admin on the real server while RBAC is "off".
#[derive(Default)]
struct RbacState {
    enforced: bool,
    granted: Vec<String>,
}

/// A running test world.
pub struct TestCluster {
    world: World,
    rbac: Mutex<RbacState>,
}

impl std::fmt::Debug for TestCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCluster")
            .field("backend", &self.backend())
            .field("url", &self.url())
            .finish()
    }
}

/// Whether a user is one of the cluster's own components (the sim's controllers; the real
/// apiserver, controller manager, scheduler and kubelet), not a test or Portway.
pub fn is_system_user(user: &str) -> bool {
    user == portway_sim::store::SYSTEM_USER
        || (user.starts_with("system:") && !user.starts_with("system:serviceaccount:"))
}

/// A snapshot of accepted writes, oldest first.
#[derive(Debug, Clone, Default)]
pub struct Writes(pub Vec<WriteRecord>);

impl Writes {
    /// Every write.
    pub fn all(&self) -> Vec<WriteRecord> {
        self.0.clone()
    }

    /// Writes to one object (any subresource) by anyone but the cluster's own components.
    pub fn count_for(&self, resource: &str, namespace: &str, name: &str) -> usize {
        self.0
            .iter()
            .filter(|r| {
                r.resource == resource
                    && r.namespace == namespace
                    && r.name == name
                    && !is_system_user(&r.user)
            })
            .count()
    }

    /// Writes by one user.
    pub fn by_user(&self, user: &str) -> Vec<WriteRecord> {
        self.0.iter().filter(|r| r.user == user).cloned().collect()
    }

    /// Writes by anyone but the cluster's own components.
    pub fn not_system(&self) -> Vec<WriteRecord> {
        self.0
            .iter()
            .filter(|r| !is_system_user(&r.user))
            .cloned()
            .collect()
    }
}

impl TestCluster {
    /// Starts the world [`backend`] names with the defaults.
    pub async fn start() -> anyhow::Result<TestCluster> {
        Self::builder().start().await
    }

    /// A builder for other settings.
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder {
            sim: SimCluster::builder(),
            listen: None,
            backend: None,
        }
    }

    /// Which world this is.
    pub fn backend(&self) -> Backend {
        match self.world {
            World::Sim(_) => Backend::Sim,
            World::Real(_) => Backend::Real,
        }
    }

    /// The sim, for its fault injection; `None` on the real server.
    pub fn sim(&self) -> Option<&SimCluster> {
        match &self.world {
            World::Sim(s) => Some(s),
            World::Real(_) => None,
        }
    }

    /// The real control plane, for its faults (restarts, compaction); `None` on the sim.
    pub fn real(&self) -> Option<&RealCluster> {
        match &self.world {
            World::Real(r) => Some(r),
            World::Sim(_) => None,
        }
    }

    /// The API server's URL.
    pub fn url(&self) -> String {
        match &self.world {
            World::Sim(s) => s.url().to_string(),
            World::Real(r) => r.url().to_string(),
        }
    }

    /// A client with every permission (`admin`).
    pub fn client(&self) -> kube::Client {
        match &self.world {
            World::Sim(s) => s.client(),
            World::Real(r) => r.client(),
        }
    }

    /// A client authenticated as `user`; ServiceAccounts are
    /// `system:serviceaccount:<ns>:<name>` (on the real server: a TokenRequest token, the
    /// account and its namespace created if missing). While RBAC is not enforced the user may
    /// do everything, as on the sim.
    pub async fn client_as(&self, user: &str) -> anyhow::Result<kube::Client> {
        match &self.world {
            World::Sim(s) => Ok(s.client_as(user)),
            World::Real(r) => {
                self.grant_while_off(r, user).await?;
                r.client_as(user).await
            }
        }
    }

    /// The kubeconfig text for `user` (for child processes, kubectl, Python).
    pub async fn kubeconfig_yaml(&self, user: &str) -> anyhow::Result<String> {
        match &self.world {
            World::Sim(s) => Ok(s.kubeconfig_yaml(user)),
            World::Real(r) => {
                self.grant_while_off(r, user).await?;
                r.kubeconfig_yaml(user).await
            }
        }
    }

    /// Writes the kubeconfig for `user` atomically (a reader never sees half of it), mode
    /// 0600, through no symbolic link.
    pub async fn write_kubeconfig(&self, path: &Path, user: &str) -> anyhow::Result<()> {
        let text = self.kubeconfig_yaml(user).await?;
        portway_sim::write_private_file(path, text.as_bytes())?;
        Ok(())
    }

    /// Turns RBAC enforcement on (only bindings the test made count) or off.
    pub async fn enforce_rbac(&self, on: bool) -> anyhow::Result<()> {
        match &self.world {
            World::Sim(s) => {
                s.enforce_rbac(on);
                Ok(())
            }
            World::Real(r) => {
                let users = {
                    let mut st = self.rbac.lock().unwrap_or_else(|p| p.into_inner());
                    st.enforced = on;
                    st.granted.clone()
                };
                for user in users {
                    if on {
                        r.revoke_admin(&user).await?;
                    } else {
                        r.grant_admin(&user).await?;
                    }
                }
                Ok(())
            }
        }
    }

    async fn grant_while_off(&self, r: &RealCluster, user: &str) -> anyhow::Result<()> {
        if user == "admin" {
            return Ok(());
        }
        let grant = {
            let mut st = self.rbac.lock().unwrap_or_else(|p| p.into_inner());
            if !st.granted.iter().any(|u| u == user) {
                st.granted.push(user.to_string());
            }
            !st.enforced
        };
        if grant {
            r.grant_admin(user).await?;
        }
        Ok(())
    }

    /// Registers a node as its kubelet would (status included).
    pub async fn add_node(&self, node: SimNode) -> anyhow::Result<Node> {
        match &self.world {
            World::Sim(s) => s.add_node(node).await,
            World::Real(_) => {
                let nodes: Api<Node> = Api::all(self.client());
                let obj: Node = serde_json::from_value(node.manifest())?;
                Ok(nodes.create(&PostParams::default(), &obj).await?)
            }
        }
    }

    /// Sets a node's Ready condition, as a kubelet reports it.
    pub async fn set_node_ready(&self, name: &str, ready: bool) -> anyhow::Result<()> {
        match &self.world {
            World::Sim(s) => s.set_node_ready(name, ready).await,
            World::Real(_) => {
                let now = chrono_now();
                let (reason, message) = if ready {
                    ("KubeletReady", "kubelet is posting ready status")
                } else {
                    ("KubeletNotReady", "container runtime is down")
                };
                let patch = serde_json::json!({"status": {"conditions": [{
                    "type": "Ready", "status": if ready { "True" } else { "False" },
                    "reason": reason, "message": message,
                    "lastHeartbeatTime": now, "lastTransitionTime": now}]}});
                Api::<Node>::all(self.client())
                    .patch_status(name, &PatchParams::default(), &Patch::Strategic(&patch))
                    .await?;
                Ok(())
            }
        }
    }

    /// Gives the Service one ready endpoint on each named node (replacing the previous set)
    /// and returns once its EndpointSlices say so. The sim writes the slice; the real world
    /// runs a pod on each node, which the fake kubelet makes Ready and the EndpointSlice
    /// controller publishes.
    pub async fn set_endpoints(
        &self,
        ns: &str,
        service: &str,
        nodes: &[&str],
    ) -> anyhow::Result<()> {
        match &self.world {
            World::Sim(s) => s.set_endpoints(ns, service, nodes).await,
            World::Real(r) => r.set_endpoints(ns, service, nodes).await,
        }
    }

    /// Every write accepted so far (since the last [`TestCluster::reset_writes`]).
    pub async fn writes(&self) -> Writes {
        match &self.world {
            World::Sim(s) => Writes(s.writes().all()),
            World::Real(r) => Writes(r.writes().await),
        }
    }

    /// Forgets the writes so far, to measure one phase of a test.
    pub async fn reset_writes(&self) {
        match &self.world {
            World::Sim(s) => s.writes().reset(),
            World::Real(r) => r.reset_writes().await,
        }
    }

    /// Stops the world.
    pub async fn shutdown(self) {
        match self.world {
            World::Sim(s) => s.shutdown().await,
            World::Real(r) => r.shutdown().await,
        }
    }
}

fn chrono_now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}
