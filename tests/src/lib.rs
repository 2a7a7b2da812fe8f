//! Shared helpers of Portway's end-to-end and interop tests: chainable
//! builders for Services, a polling `eventually`, and the privileged-test
//! gate that skips locally but fails in CI.
#![forbid(unsafe_code)]

pub mod cluster;
pub mod helm;
pub mod process;
pub mod real;

pub use cluster::{Backend, TestCluster, Writes, backend};
pub use portway_sim::SimNode;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The hostport class.
pub const HOSTPORT: &str = "portway.dev/hostport";
/// The l2 class.
pub const L2: &str = "portway.dev/l2";
/// The bgp class.
pub const BGP: &str = "portway.dev/bgp";
/// The f5 class.
pub const F5: &str = "portway.dev/f5";

/// A chainable Service builder: `svc("web").class(L2).ports([80])`.
#[derive(Clone, Debug)]
pub struct SvcBuilder(Service);

/// Starts a LoadBalancer Service named `name` in `default` with port 80/TCP.
pub fn svc(name: &str) -> SvcBuilder {
    SvcBuilder(Service {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some("default".to_string()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("LoadBalancer".to_string()),
            selector: Some([("app".to_string(), name.to_string())].into()),
            ports: Some(vec![port(80, "TCP")]),
            ..Default::default()
        }),
        status: None,
    })
}

fn port(p: i32, proto: &str) -> ServicePort {
    ServicePort {
        name: Some(format!("{}-{p}", proto.to_lowercase())),
        port: p,
        protocol: Some(proto.to_string()),
        ..Default::default()
    }
}

impl SvcBuilder {
    fn spec(&mut self) -> &mut ServiceSpec {
        self.0.spec.get_or_insert_with(Default::default)
    }

    /// Sets `spec.loadBalancerClass`.
    pub fn class(mut self, class: &str) -> Self {
        self.spec().load_balancer_class = Some(class.to_string());
        self
    }

    /// Sets the namespace.
    pub fn namespace(mut self, ns: &str) -> Self {
        self.0.metadata.namespace = Some(ns.to_string());
        self
    }

    /// Replaces the ports with TCP ports.
    pub fn ports(mut self, ports: impl IntoIterator<Item = i32>) -> Self {
        self.spec().ports = Some(ports.into_iter().map(|p| port(p, "TCP")).collect());
        self
    }

    /// Adds a port with a protocol.
    pub fn port(mut self, p: i32, proto: &str) -> Self {
        self.spec()
            .ports
            .get_or_insert_with(Vec::new)
            .push(port(p, proto));
        self
    }

    /// Sets `spec.type`.
    pub fn type_(mut self, t: &str) -> Self {
        self.spec().type_ = Some(t.to_string());
        self
    }

    /// Adds an annotation.
    pub fn annotation(mut self, k: &str, v: &str) -> Self {
        self.0
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(k.to_string(), v.to_string());
        self
    }

    /// Adds a label.
    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.0
            .metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(k.to_string(), v.to_string());
        self
    }

    /// `externalTrafficPolicy: Local`.
    pub fn local(mut self) -> Self {
        self.spec().external_traffic_policy = Some("Local".to_string());
        self
    }

    /// `ipFamilyPolicy` and `ipFamilies`.
    pub fn families(mut self, policy: &str, families: &[&str]) -> Self {
        self.spec().ip_family_policy = Some(policy.to_string());
        self.spec().ip_families = Some(families.iter().map(|f| f.to_string()).collect());
        self
    }

    /// The Service.
    pub fn build(self) -> Service {
        self.0
    }
}

/// The first ingress address of a Service's status, if it has one.
pub fn ingress_ip(s: &Service) -> Option<String> {
    s.status
        .as_ref()?
        .load_balancer
        .as_ref()?
        .ingress
        .as_ref()?
        .first()?
        .ip
        .clone()
}

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Whether interop tests that need root, network namespaces or external
/// tools must run: `Ok(())` to run; `Err(reason)` to skip. Under
/// `PORTWAY_REQUIRE_PRIVILEGED=1` (CI) a missing prerequisite panics instead,
/// so CI can never go green by skipping.
pub fn privileged(what: &str, missing: Option<String>) -> Result<(), String> {
    let required = std::env::var("PORTWAY_REQUIRE_PRIVILEGED").is_ok_and(|v| v == "1");
    match missing {
        None => Ok(()),
        Some(reason) if required => {
            panic!("{what}: required (PORTWAY_REQUIRE_PRIVILEGED=1) but cannot run: {reason}")
        }
        Some(reason) => {
            eprintln!("SKIP {what}: {reason}");
            Err(reason)
        }
    }
}

/// Running controllers for a test: stop them with [`Running::stop`].
pub struct Running {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops the controller gracefully and waits for in-flight reconciles.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Controller settings for tests: fast retries and debounce.
pub fn fast_config() -> portway::config::ServiceControllerConfig {
    portway::config::ServiceControllerConfig {
        min_retry_delay: Duration::from_millis(100),
        max_retry_delay: Duration::from_millis(800),
        node_sync_debounce: Duration::from_millis(100),
        ..Default::default()
    }
}

/// Starts the service controller in-process with `providers`.
pub fn start_service_controller(
    client: kube::Client,
    providers: Vec<std::sync::Arc<dyn portway_provider::LoadBalancerProvider>>,
    default_class: &str,
) -> Running {
    start_service_controller_with(client, providers, default_class, fast_config())
}

/// Starts the service controller in-process with explicit settings.
pub fn start_service_controller_with(
    client: kube::Client,
    providers: Vec<std::sync::Arc<dyn portway_provider::LoadBalancerProvider>>,
    default_class: &str,
    cfg: portway::config::ServiceControllerConfig,
) -> Running {
    start_controller(portway::service::ServiceController::new(
        client,
        providers,
        default_class,
        cfg,
    ))
}

/// Runs a service controller configured by the test (e.g. with
/// [`pool_changes`](portway::service::ServiceController::pool_changes)).
pub fn start_controller(controller: portway::service::ServiceController) -> Running {
    init_tracing();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(controller.run(async move {
        let _ = rx.await;
    }));
    Running {
        stop: Some(tx),
        task,
    }
}

/// Starts the service controller in-process with the providers a configuration built
/// (retired classes included, as `portway controller` does).
pub fn start_built(
    client: kube::Client,
    built: portway::providers::Built,
    default_class: &str,
    cfg: portway::config::ServiceControllerConfig,
) -> Running {
    start_controller(
        portway::service::ServiceController::new(client, built.providers, default_class, cfg)
            .retired(built.retired)
            .allocator(built.vips),
    )
}

/// Logs to the test's captured output, filtered by `RUST_LOG` (default: warnings), so a
/// failing test shows what the controller complained about.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// The command prefix that runs a speaker with the capabilities its container gets and no
/// more: root with a bounding set of `NET_RAW` alone (the DaemonSet drops ALL and adds
/// NET_RAW), so an interop test fails if a code path needs another capability (issue 20:
/// NET_ADMIN was granted and is not needed). `setpriv` is util-linux's, in every Debian.
pub const SPEAKER_CAPS: [&str; 4] = [
    "setpriv",
    "--bounding-set=-all,+net_raw",
    "--inh-caps=-all",
    "--",
];

/// Builds the `portway` binary (in the profile of this test binary) and
/// returns its path; once per test binary.
pub fn portway_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| cargo_bin("portway", "portway")).clone()
}

/// `cargo build -p PACKAGE --bin BIN` in this test binary's profile.
pub fn cargo_bin(package: &str, bin: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    // target/<profile>/deps/<test>-<hash>
    let profile_dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>")
        .to_path_buf();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", package, "--bin", bin]);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let status = cmd
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .unwrap_or_else(|e| panic!("running cargo build for {bin}: {e}"));
    assert!(status.success(), "building {bin} failed");
    let path = profile_dir.join(bin);
    assert!(path.exists(), "{} missing after the build", path.display());
    path
}
