//! What a kubelet would do with the chart's controller pods, since the fake kubelet of the
//! test control plane only marks pods Running: for every Running controller pod, a
//! `portway controller` process started from that pod's own container arguments and
//! environment, the ConfigMap it mounts as it is when the pod starts, and a token of the
//! pod's ServiceAccount; a pod deleted or being deleted gets SIGTERM (then SIGKILL after
//! its grace period), as kubelet sends.
//!
//! Only what cannot be the same on one machine is changed: `--bind-address=$(POD_IP)` binds
//! loopback (the pod IP is a fake node address) and `--secure-port` gets a free port, since
//! all "pods" share this host.

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, ListParams};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One `portway controller` process standing for a pod.
struct Proc {
    child: Child,
    /// The configuration file it was started with.
    config: String,
    log: PathBuf,
}

/// Runs the controller pods of the release as processes.
pub(crate) struct PodRunner {
    namespace: String,
    selector: String,
    dir: PathBuf,
    kubeconfig: PathBuf,
    procs: BTreeMap<String, Proc>,
    /// Every pod ever run, in order, with the configuration it read.
    pub(crate) history: Vec<(String, String)>,
}

impl PodRunner {
    /// A runner for pods matching `selector` in `namespace`, authenticating with
    /// `kubeconfig` (the pods' ServiceAccount); files under `dir`.
    pub(crate) fn new(namespace: &str, selector: &str, dir: &Path, kubeconfig: &Path) -> Self {
        PodRunner {
            namespace: namespace.to_string(),
            selector: selector.to_string(),
            dir: dir.to_path_buf(),
            kubeconfig: kubeconfig.to_path_buf(),
            procs: BTreeMap::new(),
            history: Vec::new(),
        }
    }

    /// Starts a process for each Running pod that has none and stops those whose pod is gone
    /// or terminating. Returns the names of the pods running now.
    pub(crate) async fn sync(&mut self, admin: &kube::Client) -> Vec<String> {
        let pods: Api<Pod> = Api::namespaced(admin.clone(), &self.namespace);
        let list = pods
            .list(&ListParams::default().labels(&self.selector))
            .await
            .expect("list controller pods");
        let running: Vec<&Pod> = list
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .collect();
        let names: Vec<String> = running
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        let gone: Vec<String> = self
            .procs
            .keys()
            .filter(|k| !names.contains(k))
            .cloned()
            .collect();
        for name in gone {
            if let Some(p) = self.procs.remove(&name) {
                stop(p, &name);
            }
        }
        for pod in running {
            let name = pod.metadata.name.clone().unwrap_or_default();
            if !self.procs.contains_key(&name) {
                let p = self.start(admin, pod).await;
                self.history.push((name.clone(), p.config.clone()));
                self.procs.insert(name, p);
            }
        }
        names
    }

    /// The configuration files the processes running now were started with.
    pub(crate) fn configs(&self) -> Vec<&str> {
        self.procs.values().map(|p| p.config.as_str()).collect()
    }

    /// Fails the test if a process exited on its own (it would have crashed in a pod too).
    pub(crate) fn assert_alive(&mut self) {
        for (name, p) in self.procs.iter_mut() {
            if let Ok(Some(status)) = p.child.try_wait() {
                let log = std::fs::read_to_string(&p.log).unwrap_or_default();
                panic!("the controller of pod {name} exited ({status}):\n{log}");
            }
        }
    }

    async fn start(&self, admin: &kube::Client, pod: &Pod) -> Proc {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let spec = pod.spec.as_ref().expect("pod spec");
        let c = spec
            .containers
            .iter()
            .find(|c| c.name == "controller")
            .expect("a controller container");
        // The ConfigMap the pod mounts, read now, as kubelet does at start.
        let cm_name = spec
            .volumes
            .iter()
            .flatten()
            .find_map(|v| v.config_map.as_ref().map(|c| c.name.clone()))
            .expect("a ConfigMap volume");
        let cms: Api<ConfigMap> = Api::namespaced(admin.clone(), &self.namespace);
        let config = cms
            .get(&cm_name)
            .await
            .expect("the pod's ConfigMap")
            .data
            .and_then(|d| d.get("config.yaml").cloned())
            .expect("config.yaml in the ConfigMap");
        let file = self.dir.join(format!("{name}.config.yaml"));
        std::fs::write(&file, &config).expect("write config");
        let env: BTreeMap<&str, String> = [
            ("POD_NAME", name.clone()),
            ("POD_NAMESPACE", self.namespace.clone()),
            ("POD_IP", "127.0.0.1".to_string()),
        ]
        .into();
        let port = portway_tests::process::free_port().to_string();
        let args: Vec<String> = c
            .args
            .iter()
            .flatten()
            .map(|a| expand(a, &env))
            .map(|a| {
                if a.starts_with("--config=") {
                    format!("--config={}", file.display())
                } else if a.starts_with("--secure-port=") {
                    format!("--secure-port={port}")
                } else {
                    a
                }
            })
            .collect();
        let log = self.dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("log file");
        let child = Command::new(portway_tests::portway_bin())
            .args(&args)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("start portway controller");
        eprintln!("pod {name}: portway {}", args.join(" "));
        Proc { child, config, log }
    }

    /// Stops every process (the test is over).
    pub(crate) fn stop_all(&mut self) {
        for (name, p) in std::mem::take(&mut self.procs) {
            stop(p, &name);
        }
    }

    /// How many processes run.
    pub(crate) fn len(&self) -> usize {
        self.procs.len()
    }
}

impl Drop for PodRunner {
    fn drop(&mut self) {
        for p in self.procs.values_mut() {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }
}

/// `$(VAR)` references replaced as kubelet does.
fn expand(arg: &str, env: &BTreeMap<&str, String>) -> String {
    let mut out = arg.to_string();
    for (k, v) in env {
        out = out.replace(&format!("$({k})"), v);
    }
    assert!(
        !out.contains("$("),
        "{arg}: a variable the pod does not define"
    );
    out
}

/// SIGTERM, then SIGKILL after 30 s (the pod's default grace period).
fn stop(mut p: Proc, name: &str) {
    let pid = p.child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if let Ok(Some(_)) = p.child.try_wait() {
            eprintln!("pod {name}: stopped after {:?}", start.elapsed());
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = p.child.kill();
    let _ = p.child.wait();
    eprintln!("pod {name}: killed after the grace period");
}
