//! The real control plane for one test: `portway-cluster up` (tests/cluster/) in a directory
//! of its own under `target/test-clusters/`, stopped when the test ends. Start-up takes about
//! 3 s once the binaries are built (`scripts/cluster build`, cached under `target/cluster/`).
//!
//! What the harness needs that a kube client does not give: a kubeconfig for any user
//! (ServiceAccounts get TokenRequest tokens, other users are impersonated by the admin),
//! the audit log read back as the write log the sim keeps, endpoints made by pods the fake
//! kubelet runs, and the faults only a real server has (restart kube-apiserver, compact etcd).

use anyhow::{Context as _, anyhow, bail};
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use portway_sim::WriteRecord;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::io::{BufRead as _, Seek as _};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Options of [`RealCluster::start`].
#[derive(Debug, Clone, Default)]
pub struct RealOptions {
    /// Address for kube-apiserver to bind and advertise (default 127.0.0.1).
    pub listen: Option<IpAddr>,
}

/// What `portway-cluster` wrote to `cluster.json`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Info {
    /// `https://IP:PORT` of kube-apiserver.
    pub url: String,
    /// The admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// The admin bearer token (group system:masters).
    pub token: String,
    /// The apiserver's CA certificate (PEM file).
    pub ca: PathBuf,
    /// etcd's client URL (plain HTTP on loopback).
    pub etcd: String,
    /// The audit log: every write, JSON lines.
    pub audit_log: PathBuf,
    /// What `/version` reports.
    pub version: String,
    /// Process ids by component.
    pub pids: std::collections::BTreeMap<String, u32>,
}

/// A running real control plane.
pub struct RealCluster {
    dir: PathBuf,
    child: Mutex<Option<Child>>,
    info: Info,
    client: kube::Client,
    audit_from: Mutex<u64>,
    markers: AtomicU64,
}

impl std::fmt::Debug for RealCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RealCluster")
            .field("url", &self.info.url)
            .field("dir", &self.dir)
            .finish()
    }
}

/// The workspace root (for `scripts/` and `target/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The directory with the control-plane binaries: `PORTWAY_CLUSTER_BIN`, or what
/// `scripts/cluster build` builds (once per test process; a cold build takes minutes).
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(dir) = std::env::var("PORTWAY_CLUSTER_BIN") {
            return Ok(PathBuf::from(dir));
        }
        let out = Command::new(workspace_root().join("scripts/cluster"))
            .arg("build")
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("running scripts/cluster build: {e}"))?;
        if !out.status.success() {
            return Err(format!("scripts/cluster build failed: {}", out.status));
        }
        Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    })
    .clone()
    .map_err(|e| anyhow!(e))
}

fn kubeconfig_text(url: &str, ca: &Path, user: &str, token: &str, act_as: Option<&str>) -> String {
    let ca = ca.display();
    let act_as = act_as
        .map(|u| format!("    as: {u:?}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: portway-test\n  cluster:\n    server: {url}\n    certificate-authority: {ca:?}\n\
         users:\n- name: {user:?}\n  user:\n    token: {token:?}\n{act_as}\
         contexts:\n- name: portway-test\n  context:\n    cluster: portway-test\n    user: {user:?}\n    namespace: default\n\
         current-context: portway-test\npreferences: {{}}\n"
    )
}

async fn client_from(text: &str) -> anyhow::Result<kube::Client> {
    let kc = kube::config::Kubeconfig::from_yaml(text)?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await?;
    Ok(kube::Client::try_from(cfg)?)
}

/// `system:serviceaccount:NS:NAME` split, if `user` is a ServiceAccount.
fn service_account(user: &str) -> Option<(&str, &str)> {
    let rest = user.strip_prefix("system:serviceaccount:")?;
    rest.split_once(':')
}

fn binding_name(user: &str) -> String {
    let clean: String = user
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    format!("portway-tests-admin-{}", clean.trim_matches('-'))
}

impl RealCluster {
    /// Starts a control plane in a new directory under `target/test-clusters/`.
    pub async fn start(opts: RealOptions) -> anyhow::Result<RealCluster> {
        let bin = bin_dir()?;
        let base = workspace_root().join("target/test-clusters");
        std::fs::create_dir_all(&base)?;
        let dir = tempfile::Builder::new()
            .prefix("cluster-")
            .tempdir_in(&base)?
            .keep();
        let log = std::fs::File::create(dir.join("supervisor.log"))?;
        let mut cmd = Command::new(bin.join("portway-cluster"));
        cmd.arg("up")
            .arg("--dir")
            .arg(&dir)
            .arg("--bin")
            .arg(&bin)
            .arg("--exit-with-parent")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some(ip) = opts.listen {
            cmd.arg("--listen").arg(ip.to_string());
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.join("portway-cluster").display()))?;
        let started = Instant::now();
        let ready = dir.join("ready");
        loop {
            if ready.exists() {
                break;
            }
            if let Some(status) = child.try_wait()? {
                let log = std::fs::read_to_string(dir.join("supervisor.log")).unwrap_or_default();
                bail!(
                    "the control plane in {} exited ({status}):\n{log}",
                    dir.display()
                );
            }
            if started.elapsed() > Duration::from_secs(180) {
                let _ = child.kill();
                bail!(
                    "the control plane in {} was not ready after 180 s",
                    dir.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let info: Info = serde_json::from_slice(&std::fs::read(dir.join("cluster.json"))?)?;
        let client = client_from(&std::fs::read_to_string(&info.kubeconfig)?).await?;
        Ok(RealCluster {
            dir,
            child: Mutex::new(Some(child)),
            info,
            client,
            audit_from: Mutex::new(0),
            markers: AtomicU64::new(0),
        })
    }

    /// The API server's URL.
    pub fn url(&self) -> &str {
        &self.info.url
    }

    /// What the supervisor reported.
    pub fn info(&self) -> &Info {
        &self.info
    }

    /// The cluster's directory (state and logs of every component under `logs/`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The admin client.
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// A kubeconfig for `user`: the admin's, a TokenRequest token for a ServiceAccount, or
    /// the admin impersonating anyone else.
    pub async fn kubeconfig_yaml(&self, user: &str) -> anyhow::Result<String> {
        let url = &self.info.url;
        if user == "admin" {
            return Ok(kubeconfig_text(
                url,
                &self.info.ca,
                user,
                &self.info.token,
                None,
            ));
        }
        if let Some((ns, name)) = service_account(user) {
            let token = self.service_account_token(ns, name).await?;
            return Ok(kubeconfig_text(url, &self.info.ca, user, &token, None));
        }
        Ok(kubeconfig_text(
            url,
            &self.info.ca,
            user,
            &self.info.token,
            Some(user),
        ))
    }

    /// A client for `user` (see [`RealCluster::kubeconfig_yaml`]).
    pub async fn client_as(&self, user: &str) -> anyhow::Result<kube::Client> {
        client_from(&self.kubeconfig_yaml(user).await?).await
    }

    /// A bound token for a ServiceAccount from the TokenRequest API, as kubelet gets for a
    /// pod; the account (and its namespace) is created first if missing.
    pub async fn service_account_token(&self, ns: &str, name: &str) -> anyhow::Result<String> {
        let namespaces: Api<Namespace> = Api::all(self.client());
        if namespaces.get_opt(ns).await?.is_none() {
            let obj: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}}))?;
            match namespaces.create(&PostParams::default(), &obj).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client(), ns);
        if accounts.get_opt(name).await?.is_none() {
            let obj: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": name}}))?;
            match accounts.create(&PostParams::default(), &obj).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
        let req = k8s_openapi::api::authentication::v1::TokenRequest {
            spec: k8s_openapi::api::authentication::v1::TokenRequestSpec {
                audiences: vec![],
                expiration_seconds: Some(24 * 3600),
                ..Default::default()
            },
            ..Default::default()
        };
        let tr = accounts
            .create_token_request(name, &PostParams::default(), &req)
            .await
            .with_context(|| format!("TokenRequest for {ns}/{name}"))?;
        tr.status
            .map(|s| s.token)
            .ok_or_else(|| anyhow!("TokenRequest for {ns}/{name} returned no token"))
    }

    async fn allowed(&self, user: &str) -> anyhow::Result<bool> {
        let mut groups = vec!["system:authenticated".to_string()];
        if let Some((ns, _)) = service_account(user) {
            groups.push("system:serviceaccounts".into());
            groups.push(format!("system:serviceaccounts:{ns}"));
        }
        let sar: SubjectAccessReview = serde_json::from_value(json!({
            "spec": {"user": user, "groups": groups,
                "resourceAttributes": {"verb": "escalate", "group": "rbac.authorization.k8s.io",
                    "resource": "clusterroles"}}}))?;
        let api: Api<SubjectAccessReview> = Api::all(self.client());
        let r = api.create(&PostParams::default(), &sar).await?;
        Ok(r.status.is_some_and(|s| s.allowed))
    }

    async fn wait_allowed(&self, user: &str, want: bool) -> anyhow::Result<()> {
        let start = Instant::now();
        while self.allowed(user).await? != want {
            if start.elapsed() > Duration::from_secs(10) {
                bail!("RBAC for {user} did not become allowed={want}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Binds `user` to cluster-admin (the sim's "RBAC off" for that user).
    pub async fn grant_admin(&self, user: &str) -> anyhow::Result<()> {
        let subject = match service_account(user) {
            Some((ns, name)) => json!({"kind": "ServiceAccount", "name": name, "namespace": ns}),
            None => json!({"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}),
        };
        let crb: ClusterRoleBinding = serde_json::from_value(json!({
            "metadata": {"name": binding_name(user), "labels": {"portway.dev/test-rbac-off": "true"}},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [subject]}))?;
        let api: Api<ClusterRoleBinding> = Api::all(self.client());
        match api.create(&PostParams::default(), &crb).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
        self.wait_allowed(user, true).await
    }

    /// Removes what [`RealCluster::grant_admin`] gave.
    pub async fn revoke_admin(&self, user: &str) -> anyhow::Result<()> {
        let api: Api<ClusterRoleBinding> = Api::all(self.client());
        match api
            .delete(&binding_name(user), &DeleteParams::default())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
        self.wait_allowed(user, false).await
    }

    /// See [`crate::cluster::TestCluster::set_endpoints`]: pods named `SERVICE-ep-NODE`
    /// carrying the Service's selector, bound to each node; then waits until the
    /// EndpointSlice controller publishes exactly those nodes as ready.
    pub async fn set_endpoints(
        &self,
        ns: &str,
        service: &str,
        nodes: &[&str],
    ) -> anyhow::Result<()> {
        let svc = Api::<Service>::namespaced(self.client(), ns)
            .get(service)
            .await?;
        let spec = svc.spec.clone().unwrap_or_default();
        let Some(selector) = spec.selector.clone().filter(|s| !s.is_empty()) else {
            bail!(
                "set_endpoints on the real server needs a Service with a selector ({ns}/{service} has none)"
            );
        };
        let pods: Api<Pod> = Api::namespaced(self.client(), ns);
        let owner_label = "portway.dev/test-endpoint-of";
        let existing = pods
            .list(&ListParams::default().labels(&format!("{owner_label}={service}")))
            .await?;
        let want: BTreeSet<String> = nodes.iter().map(|n| n.to_string()).collect();
        for p in &existing.items {
            let node = p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default();
            if !want.contains(&node) && p.metadata.deletion_timestamp.is_none() {
                let name = p.metadata.name.clone().unwrap_or_default();
                match pods.delete(&name, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        let ports: Vec<Value> = spec
            .ports
            .unwrap_or_default()
            .iter()
            .map(|p| {
                let mut port = json!({"containerPort": p.port, "protocol": p.protocol.clone().unwrap_or_else(|| "TCP".into())});
                match &p.target_port {
                    Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n)) => {
                        port["containerPort"] = json!(n)
                    }
                    Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s)) => {
                        port["name"] = json!(s)
                    }
                    None => {}
                }
                port
            })
            .collect();
        for node in &want {
            let name = format!("{service}-ep-{node}");
            let have = existing.items.iter().any(|p| {
                p.metadata.name.as_deref() == Some(name.as_str())
                    && p.metadata.deletion_timestamp.is_none()
            });
            if have {
                continue;
            }
            let mut labels = serde_json::Map::new();
            for (k, v) in &selector {
                labels.insert(k.clone(), json!(v));
            }
            labels.insert(owner_label.into(), json!(service));
            let pod: Pod = serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": ns, "labels": labels},
                "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10", "ports": ports}]}}))?;
            let start = Instant::now();
            loop {
                match pods.create(&PostParams::default(), &pod).await {
                    Ok(_) => break,
                    // A pod still finishing its deletion under the same name.
                    Err(kube::Error::Api(e))
                        if e.code == 409 && start.elapsed() < Duration::from_secs(30) => {}
                    // A new namespace's default ServiceAccount is not made yet.
                    Err(kube::Error::Api(e))
                        if e.code == 403
                            && e.message.contains("serviceaccount")
                            && start.elapsed() < Duration::from_secs(30) => {}
                    Err(e) => return Err(anyhow!("creating endpoint pod {ns}/{name}: {e}")),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let slices: Api<EndpointSlice> = Api::namespaced(self.client(), ns);
        let lp = ListParams::default().labels(&format!("kubernetes.io/service-name={service}"));
        let start = Instant::now();
        loop {
            let ready: BTreeSet<String> = slices
                .list(&lp)
                .await?
                .items
                .iter()
                .flat_map(|s| s.endpoints.iter())
                .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
                .filter_map(|e| e.node_name.clone())
                .collect();
            if ready == want {
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(30) {
                bail!("endpoints of {ns}/{service}: ready on {ready:?}, wanted {want:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Writes accepted since the last reset, from the audit log. A marker write is made and
    /// waited for first, so every write that completed before the call is in the answer.
    pub async fn writes(&self) -> Vec<WriteRecord> {
        let n = self.markers.fetch_add(1, Ordering::SeqCst);
        let marker = format!("portway-audit-marker-{n}");
        let cms: Api<k8s_openapi::api::core::v1::ConfigMap> =
            Api::namespaced(self.client(), "kube-public");
        let obj = serde_json::from_value(json!({"metadata": {"name": marker}})).unwrap_or_default();
        let marked = cms.create(&PostParams::default(), &obj).await.is_ok();
        let start = Instant::now();
        loop {
            let (records, seen) = self.read_audit(&marker);
            if seen || !marked || start.elapsed() > Duration::from_secs(5) {
                return records;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Forgets the writes so far.
    pub async fn reset_writes(&self) {
        let _ = self.writes().await;
        let len = std::fs::metadata(&self.info.audit_log)
            .map(|m| m.len())
            .unwrap_or(0);
        *self.audit_from.lock().unwrap_or_else(|p| p.into_inner()) = len;
    }

    fn read_audit(&self, marker: &str) -> (Vec<WriteRecord>, bool) {
        let from = *self.audit_from.lock().unwrap_or_else(|p| p.into_inner());
        let Ok(mut file) = std::fs::File::open(&self.info.audit_log) else {
            return (Vec::new(), false);
        };
        if file.seek(std::io::SeekFrom::Start(from)).is_err() {
            return (Vec::new(), false);
        }
        let now_wall = chrono::Utc::now();
        let now = Instant::now();
        let mut out = Vec::new();
        let mut seen = false;
        for line in std::io::BufReader::new(file).lines() {
            let Ok(line) = line else { break };
            let Ok(ev) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if ev["stage"] != "ResponseComplete" {
                continue;
            }
            let code = ev["responseStatus"]["code"].as_u64().unwrap_or(0);
            if !(200..300).contains(&code) {
                continue;
            }
            let obj = &ev["objectRef"];
            let name = obj["name"].as_str().unwrap_or_default().to_string();
            if obj["resource"] == "configmaps" && name.starts_with("portway-audit-marker-") {
                seen |= name == marker;
                continue;
            }
            let user = ev["impersonatedUser"]["username"]
                .as_str()
                .or_else(|| ev["user"]["username"].as_str())
                .unwrap_or_default()
                .to_string();
            // When the server received it: a write sent while the lease was held may complete after
            // a slow commit, and is still the sender's decision of that moment.
            let at = ev["requestReceivedTimestamp"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .and_then(|t| (now_wall - t.with_timezone(&chrono::Utc)).to_std().ok())
                .and_then(|ago| now.checked_sub(ago))
                .unwrap_or(now);
            out.push(WriteRecord {
                user,
                verb: ev["verb"].as_str().unwrap_or_default().to_string(),
                resource: obj["resource"].as_str().unwrap_or_default().to_string(),
                subresource: obj["subresource"].as_str().unwrap_or_default().to_string(),
                namespace: obj["namespace"].as_str().unwrap_or_default().to_string(),
                name,
                at,
            });
        }
        (out, seen)
    }

    fn pid_of(&self, component: &str) -> Option<u32> {
        let info: Info =
            serde_json::from_slice(&std::fs::read(self.dir.join("cluster.json")).ok()?).ok()?;
        info.pids.get(component).copied()
    }

    /// SIGKILLs kube-apiserver and returns once the supervisor started it again and it
    /// serves: every watch breaks, every client reconnects.
    pub async fn restart_apiserver(&self) -> anyhow::Result<()> {
        let old = self
            .pid_of("kube-apiserver")
            .context("no kube-apiserver pid")?;
        let status = Command::new("kill")
            .arg("-KILL")
            .arg(old.to_string())
            .status()?;
        if !status.success() {
            bail!("kill -KILL {old} failed");
        }
        let start = Instant::now();
        while self.pid_of("kube-apiserver").is_none_or(|p| p == old) {
            if start.elapsed() > Duration::from_secs(30) {
                bail!("kube-apiserver was not restarted");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let namespaces: Api<Namespace> = Api::all(self.client());
        while namespaces.get_opt("default").await.ok().flatten().is_none() {
            if start.elapsed() > Duration::from_secs(60) {
                bail!("kube-apiserver did not serve again after its restart");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Compacts etcd up to its current revision: resuming a watch from an older
    /// resourceVersion than the apiserver's watch cache holds then really gets 410 Gone.
    /// Returns the revision.
    pub async fn compact_etcd(&self) -> anyhow::Result<u64> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::new();
        let status: Value = http
            .post(format!("{}/v3/maintenance/status", self.info.etcd))
            .json(&json!({}))
            .send()
            .await?
            .json()
            .await?;
        let rev: u64 = status["header"]["revision"]
            .as_str()
            .and_then(|r| r.parse().ok())
            .context("etcd status has no revision")?;
        let resp = http
            .post(format!("{}/v3/kv/compaction", self.info.etcd))
            .json(&json!({"revision": rev.to_string(), "physical": true}))
            .send()
            .await?;
        if !resp.status().is_success() {
            bail!("etcd compaction: {}", resp.text().await.unwrap_or_default());
        }
        Ok(rev)
    }

    fn stop(&self) {
        if let Some(mut child) = self.child.lock().unwrap_or_else(|p| p.into_inner()).take() {
            // SIGKILL: the components die with it (their parent-death signal).
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops every component and removes the directory.
    pub async fn shutdown(self) {
        // Drop does it.
    }
}

impl Drop for RealCluster {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() || std::env::var_os("PORTWAY_KEEP_CLUSTER").is_some() {
            eprintln!(
                "the control plane's state and logs are kept in {}",
                self.dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
