//! A simulated Kubernetes API server, kubelet and control-plane controllers.
//!
//! The sandbox, the fast test world and every benchmark need an API server that starts in
//! milliseconds. This crate serves the wire behaviour real clients rely on — discovery,
//! Tables, list/watch with resourceVersions, bookmarks and `410 Gone`, optimistic
//! concurrency, the four patch types and `managedFields`, status subresources, finalizers and
//! garbage collection, typed decoding and validation, JSON/YAML/protobuf bodies — so that code
//! which passes against it passes against a real cluster. The real kube-apiserver of
//! `tests/cluster/` judges it: the differential test (`tests/tests/sim_differential.rs`)
//! sends one corpus to both and fails on any difference; the README lists what is left.
#![forbid(unsafe_code)]

pub mod admission;
pub mod bigip;
pub mod cel;
mod controllers;
pub mod crd;
pub mod crd_schema;
mod crd_table;
pub mod defaults;
pub mod deletion;
pub mod discovery;
pub mod error;
pub mod events_view;
pub mod faults;
pub mod fields;
pub mod kinds;
pub mod managed;
pub mod openapi;
pub mod patch;
mod private_file;
pub mod protobuf;
pub mod rbac;
pub mod registry;
pub mod schema;
pub mod selectors;
mod server;
mod service_validation;
mod services;
pub mod store;
pub mod tables;
pub mod typed;
mod watch;
mod workloads;

pub use deletion::{DeleteOptions, Deleted};
pub use faults::{Faults, WriteLog, WriteRecord};
pub use private_file::write_private_file;
pub use registry::WriteOptions;
pub use store::Store;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Node;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How to start a simulated cluster.
#[derive(Debug, Clone)]
pub struct SimBuilder {
    listen: SocketAddr,
    kubelet: bool,
    daemonsets: bool,
    history: usize,
    bookmark_every: Duration,
    rbac: bool,
}

impl Default for SimBuilder {
    fn default() -> Self {
        SimBuilder {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            kubelet: true,
            daemonsets: true,
            history: 20_000,
            bookmark_every: Duration::from_secs(5),
            rbac: false,
        }
    }
}

impl SimBuilder {
    /// The address to listen on (port 0: any free port). Default `127.0.0.1:0`.
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// Whether the simulated scheduler + kubelet run (bind pods, make them Running/Ready).
    pub fn kubelet(mut self, on: bool) -> Self {
        self.kubelet = on;
        self
    }

    /// Whether the simulated DaemonSet controller runs.
    pub fn daemonsets(mut self, on: bool) -> Self {
        self.daemonsets = on;
        self
    }

    /// How many changes the watch history keeps; a watch from an older resourceVersion gets
    /// `410 Gone`. Default 20,000.
    pub fn history(mut self, changes: usize) -> Self {
        self.history = changes;
        self
    }

    /// How often watches that allow bookmarks receive one. Default 5 s.
    pub fn bookmark_every(mut self, every: Duration) -> Self {
        self.bookmark_every = every;
        self
    }

    /// Enforce RBAC for users other than `admin` from stored Roles and bindings.
    pub fn rbac(mut self, on: bool) -> Self {
        self.rbac = on;
        self
    }

    /// Starts serving.
    pub async fn start(self) -> anyhow::Result<SimCluster> {
        let writes = Arc::new(WriteLog::default());
        let store = Arc::new(Store::new(
            kinds::Kinds::new(kinds::builtin_kinds()),
            self.history,
            writes,
        ));
        let faults = Arc::new(Faults::default());
        let rbac = Arc::new(rbac::Rbac::default());
        rbac.set_enforced(self.rbac);
        let app = server::App {
            store: store.clone(),
            faults: faults.clone(),
            rbac: rbac.clone(),
            bookmark_every: self.bookmark_every,
        };
        let listener = tokio::net::TcpListener::bind(self.listen)
            .await
            .with_context(|| format!("binding the simulated API server to {}", self.listen))?;
        let addr = listener.local_addr()?;
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let router = server::router(app);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    let _ = stop_rx.await;
                })
                .await;
        });
        let workloads = tokio::spawn(workloads::run(
            store.clone(),
            workloads::Switches {
                kubelet: self.kubelet,
                daemonsets: self.daemonsets,
            },
        ));
        let url = format!("http://{addr}");
        let client = client_for(&url, rbac::ADMIN).await?;
        Ok(SimCluster {
            url,
            addr,
            store,
            faults,
            rbac,
            client,
            stop: Some(stop_tx),
            tasks: vec![server, workloads],
        })
    }
}

/// A node to register through [`SimCluster::add_node`], as a kubelet would.
#[derive(Debug, Clone, Default)]
pub struct SimNode {
    name: String,
    ipv4: Vec<String>,
    ipv6: Vec<String>,
    external: Vec<String>,
    labels: Vec<(String, String)>,
    annotations: Vec<(String, String)>,
    taints: Vec<(String, String, String)>,
    ready: bool,
}

impl SimNode {
    /// A Ready node with the usual kubelet labels.
    pub fn new(name: &str) -> Self {
        SimNode {
            name: name.to_string(),
            ready: true,
            ..Default::default()
        }
    }

    /// Adds an IPv4 InternalIP.
    pub fn ipv4(mut self, ip: &str) -> Self {
        self.ipv4.push(ip.to_string());
        self
    }

    /// Adds an IPv6 InternalIP.
    pub fn ipv6(mut self, ip: &str) -> Self {
        self.ipv6.push(ip.to_string());
        self
    }

    /// Adds an ExternalIP.
    pub fn external_ip(mut self, ip: &str) -> Self {
        self.external.push(ip.to_string());
        self
    }

    /// Adds a label.
    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.labels.push((k.to_string(), v.to_string()));
        self
    }

    /// Adds an annotation (e.g. `alpha.kubernetes.io/provided-node-ip`).
    pub fn annotation(mut self, k: &str, v: &str) -> Self {
        self.annotations.push((k.to_string(), v.to_string()));
        self
    }

    /// Adds a taint with an empty value.
    pub fn taint(mut self, key: &str, effect: &str) -> Self {
        self.taints
            .push((key.to_string(), String::new(), effect.to_string()));
        self
    }

    /// Registers the node as NotReady.
    pub fn not_ready(mut self) -> Self {
        self.ready = false;
        self
    }

    /// Registers without any address in status (a kubelet with `--cloud-provider=external`
    /// leaves addresses to the CCM).
    pub fn without_addresses(mut self) -> Self {
        self.ipv4.clear();
        self.ipv6.clear();
        self.external.clear();
        self
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The Node object a kubelet would register (status included), for a real API server
    /// as well as this one.
    pub fn manifest(&self) -> Value {
        let mut labels = serde_json::Map::new();
        labels.insert("kubernetes.io/hostname".into(), json!(self.name));
        labels.insert("kubernetes.io/os".into(), json!("linux"));
        labels.insert("kubernetes.io/arch".into(), json!("amd64"));
        for (k, v) in &self.labels {
            labels.insert(k.clone(), json!(v));
        }
        let annotations: serde_json::Map<String, Value> = self
            .annotations
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        let mut addresses = Vec::new();
        for ip in self.ipv4.iter().chain(&self.ipv6) {
            addresses.push(json!({"type": "InternalIP", "address": ip}));
        }
        for ip in &self.external {
            addresses.push(json!({"type": "ExternalIP", "address": ip}));
        }
        if !addresses.is_empty() {
            addresses.push(json!({"type": "Hostname", "address": self.name}));
        }
        let taints: Vec<Value> = self
            .taints
            .iter()
            .map(|(k, v, e)| {
                if v.is_empty() {
                    json!({"key": k, "effect": e})
                } else {
                    json!({"key": k, "value": v, "effect": e})
                }
            })
            .collect();
        let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
        let mut spec = json!({});
        if !taints.is_empty() {
            spec["taints"] = json!(taints);
        }
        json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": self.name, "labels": labels, "annotations": annotations},
            "spec": spec,
            "status": {
                "conditions": [ready_condition(self.ready, &now)],
                "addresses": addresses,
                "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                "nodeInfo": {"kubeletVersion": "v1.33.0", "osImage": "portway-sim",
                    "kernelVersion": "6.1.0", "containerRuntimeVersion": "containerd://1.7.0",
                    "operatingSystem": "linux", "architecture": "amd64",
                    "machineID": "", "systemUUID": "", "bootID": "", "kubeProxyVersion": ""},
            }
        })
    }
}

fn ready_condition(ready: bool, now: &str) -> Value {
    json!({"type": "Ready", "status": if ready { "True" } else { "False" },
        "reason": if ready { "KubeletReady" } else { "KubeletNotReady" },
        "message": if ready { "kubelet is posting ready status" } else { "simulated NotReady" },
        "lastHeartbeatTime": now, "lastTransitionTime": now})
}

/// A running simulated cluster.
pub struct SimCluster {
    url: String,
    addr: SocketAddr,
    store: Arc<Store>,
    faults: Arc<Faults>,
    rbac: Arc<rbac::Rbac>,
    client: kube::Client,
    stop: Option<oneshot::Sender<()>>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for SimCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimCluster")
            .field("url", &self.url)
            .finish()
    }
}

/// The kubeconfig that authenticates as `user` against `url`.
pub fn kubeconfig_yaml(url: &str, user: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: sim\n  cluster:\n    server: {url}\n\
         users:\n- name: {user:?}\n  user:\n    token: {token:?}\n\
         contexts:\n- name: sim\n  context:\n    cluster: sim\n    user: {user:?}\n    namespace: default\n\
         current-context: sim\npreferences: {{}}\n",
        token = rbac::token_for(user)
    )
}

async fn client_for(url: &str, user: &str) -> anyhow::Result<kube::Client> {
    let kc = kube::config::Kubeconfig::from_yaml(&kubeconfig_yaml(url, user))?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await?;
    Ok(kube::Client::try_from(cfg)?)
}

impl SimCluster {
    /// Starts a cluster with the defaults: loopback, any port, kubelet and DaemonSet
    /// controller on.
    pub async fn start() -> anyhow::Result<SimCluster> {
        SimBuilder::default().start().await
    }

    /// A builder for other settings.
    pub fn builder() -> SimBuilder {
        SimBuilder::default()
    }

    /// The server URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A client authenticated as `admin`.
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// A client authenticated as `user` (its writes are logged under that name; with RBAC on
    /// it gets only what bindings grant it). Service accounts are
    /// `system:serviceaccount:<ns>:<name>`.
    pub fn client_as(&self, user: &str) -> kube::Client {
        let kc = kube::config::Kubeconfig::from_yaml(&kubeconfig_yaml(&self.url, user));
        let url: http::Uri = self.url.parse().unwrap_or_default();
        let mut cfg = kube::Config::new(url);
        if let Ok(kc) = kc
            && let Some(token) = kc
                .auth_infos
                .first()
                .and_then(|a| a.auth_info.as_ref())
                .and_then(|a| a.token.clone())
        {
            cfg.auth_info.token = Some(token);
        }
        cfg.default_namespace = "default".into();
        kube::Client::try_from(cfg).unwrap_or_else(|_| self.client.clone())
    }

    /// The kubeconfig text for `user`.
    pub fn kubeconfig_yaml(&self, user: &str) -> String {
        kubeconfig_yaml(&self.url, user)
    }

    /// Writes a kubeconfig for `user` (for child processes, kubectl, Python): mode 0600,
    /// atomically, through no symbolic link ([`write_private_file`]).
    pub fn write_kubeconfig(&self, path: &Path, user: &str) -> anyhow::Result<()> {
        write_private_file(path, self.kubeconfig_yaml(user).as_bytes())
            .with_context(|| format!("writing kubeconfig {}", path.display()))
    }

    /// Fault injection.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// The write log.
    pub fn writes(&self) -> &WriteLog {
        self.store.writes()
    }

    /// The object store (direct access for helpers and benchmarks).
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Compacts the change history, as etcd compaction does on a real cluster: clients that
    /// resume from an older resourceVersion get `410 Gone` and must relist.
    pub fn compact(&self) -> u64 {
        self.store.compact()
    }

    /// Turns RBAC enforcement on or off.
    pub fn enforce_rbac(&self, on: bool) {
        self.rbac.set_enforced(on);
    }

    /// Registers a node as its kubelet would (Ready, addresses, capacity).
    pub async fn add_node(&self, node: SimNode) -> anyhow::Result<Node> {
        let kind = self.kind("nodes")?;
        let obj = self
            .store
            .create(&kind, "", node.manifest(), &WriteOptions::system("kubelet"))
            .map_err(|e| anyhow::anyhow!("adding node {}: {e}", node.name))?;
        Ok(serde_json::from_value(obj)?)
    }

    fn kind(&self, storage: &str) -> anyhow::Result<kinds::ResourceKind> {
        self.store
            .kind_of(storage)
            .ok_or_else(|| anyhow::anyhow!("kind {storage} is not served"))
    }

    /// Flips a node's Ready condition, as a kubelet that stops posting status would.
    pub async fn set_node_ready(&self, name: &str, ready: bool) -> anyhow::Result<()> {
        let kind = self.kind("nodes")?;
        let mut node = self
            .store
            .get(&kind, "", name)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
        let mut conds: Vec<Value> = node
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        conds.retain(|c| c["type"] != "Ready");
        conds.push(ready_condition(ready, &now));
        node["status"]["conditions"] = json!(conds);
        self.store
            .update(
                &kind,
                "",
                name,
                node,
                true,
                &WriteOptions::system("kubelet"),
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(())
    }

    /// Publishes an EndpointSlice for a Service with one ready endpoint on each named node
    /// (replacing the previous one), as the EndpointSlice controller would for its pods.
    pub async fn set_endpoints(
        &self,
        ns: &str,
        service: &str,
        nodes: &[&str],
    ) -> anyhow::Result<()> {
        let kind = self.kind("endpointslices")?;
        let svc_kind = self.kind("services")?;
        let svc = self
            .store
            .get(&svc_kind, ns, service)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let ports: Vec<Value> = svc
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .map(|ps| {
                ps.iter()
                    .map(|p| {
                        json!({"name": p.get("name").cloned().unwrap_or(json!("")),
                            "port": p.get("targetPort").and_then(Value::as_u64).or_else(|| p.get("port").and_then(Value::as_u64)),
                            "protocol": p.get("protocol").cloned().unwrap_or(json!("TCP"))})
                    })
                    .collect()
            })
            .unwrap_or_default();
        let endpoints: Vec<Value> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                json!({"addresses": [format!("10.42.250.{}", i + 1)],
                    "conditions": {"ready": true, "serving": true, "terminating": false},
                    "nodeName": n,
                    // As the EndpointSlice controller writes it: the pod behind the address.
                    "targetRef": {"kind": "Pod", "namespace": ns, "name": format!("{service}-ep-{n}")}})
            })
            .collect();
        let name = format!("{service}-sim");
        let obj = json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": ns,
                "labels": {"kubernetes.io/service-name": service,
                    "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": ports,
        });
        match self.store.get(&kind, ns, &name) {
            Ok(_) => self
                .store
                .update(
                    &kind,
                    ns,
                    &name,
                    obj,
                    false,
                    &WriteOptions::system("kube-controller-manager"),
                )
                .map(|_| ())
                .map_err(|e| anyhow::anyhow!("{e}")),
            Err(_) => self
                .store
                .create(
                    &kind,
                    ns,
                    obj,
                    &WriteOptions::system("kube-controller-manager"),
                )
                .map(|_| ())
                .map_err(|e| anyhow::anyhow!("{e}")),
        }
    }

    /// Stops serving and the simulated controllers.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.faults.drop_watches();
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

impl Drop for SimCluster {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Runs a simulated cluster as a process: serves on `listen`, writes an admin kubeconfig to
/// `kubeconfig_out`, and runs until `shutdown` completes (Ctrl-C in `portway sim`).
pub async fn serve(
    listen: SocketAddr,
    kubeconfig_out: &Path,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let sim = SimBuilder::default().listen(listen).start().await?;
    sim.write_kubeconfig(kubeconfig_out, rbac::ADMIN)?;
    tracing::info!(url = sim.url(), kubeconfig = %kubeconfig_out.display(), "simulated API server ready");
    shutdown.await;
    sim.shutdown().await;
    Ok(())
}
