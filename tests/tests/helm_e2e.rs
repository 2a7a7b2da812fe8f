//! The chart on the real control plane (`PORTWAY_TEST_CLUSTER=real`, `--features
//! real-cluster`): `helm install`, `helm upgrade` with a changed pool and `helm uninstall`
//! with the real helm binary against kube-apiserver, with Portway's controllers running as
//! the chart's pods would (helm_e2e/pods.rs) and every Service's address watched
//! throughout (helm_e2e/watch.rs).
//!
//! What it shows: a bad value is refused by `helm install` itself, naming the key; the
//! release installs and its pods run; the controllers serve Services with only the RBAC the
//! chart grants (RBAC enforced); during the rolling upgrade no Service loses or changes its
//! address while the new configuration takes effect; `helm uninstall` leaves exactly what
//! docs/helm.md says, and the cleanup given there releases it.

#[path = "helm_e2e/pods.rs"]
mod pods;
#[path = "helm_e2e/watch.rs"]
mod watch;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use pods::PodRunner;
use portway_tests::helm::{Helm, chart_dir, helm_or_skip};
use portway_tests::{Backend, L2, SimNode, TestCluster, eventually, svc};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use watch::{AddressWatch, ips};

const NS: &str = "portway-system";
const T: Duration = Duration::from_secs(90);
const FINALIZER: &str = "service.kubernetes.io/load-balancer-cleanup";
const CONTROLLER_PODS: &str =
    "app.kubernetes.io/name=portway,app.kubernetes.io/component=controller";
/// The address the upgrade's new range holds and the old pool does not.
const NEW_RANGE_IP: &str = "192.168.1.105";

fn kubectl() -> Option<PathBuf> {
    let k = std::env::var_os("PORTWAY_KUBECTL").map(PathBuf::from);
    let missing = match &k {
        Some(p) if p.is_file() => None,
        Some(p) => Some(format!("PORTWAY_KUBECTL={} does not exist", p.display())),
        None => Some("PORTWAY_KUBECTL is not set (scripts/install-test-deps)".into()),
    };
    portway_tests::privileged("helm uninstall cleanup with kubectl", missing).ok()?;
    k
}

fn chart() -> String {
    chart_dir().to_str().expect("UTF-8 path").to_string()
}

fn example(name: &str) -> String {
    format!("{}/examples/{name}.yaml", chart())
}

/// Whether the object exists.
async fn exists<K>(api: &Api<K>, name: &str) -> bool
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.get_opt(name).await.expect("get").is_some()
}

fn finalizers(s: &Service) -> Vec<String> {
    s.metadata.finalizers.clone().unwrap_or_default()
}

/// `helm ARGS` against the cluster, in a blocking thread (helm --wait takes a while).
async fn helm_async(helm: &Helm, kc: &Path, args: &[&str]) -> std::process::Output {
    let (helm, kc) = (helm.clone(), kc.to_path_buf());
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        helm.run(Some(&kc), &a)
    })
    .await
    .expect("helm thread")
}

/// `helm COMMAND portway CHART -n portway-system --timeout 3m EXTRA...`.
async fn helm_release(
    helm: &Helm,
    kc: &Path,
    command: &str,
    extra: &[&str],
) -> std::process::Output {
    let chart = chart();
    let mut args = vec![command, "portway", &chart, "-n", NS, "--timeout", "3m"];
    args.extend_from_slice(extra);
    helm_async(helm, kc, &args).await
}

fn assert_ok(what: &str, out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Keeps the pod runner in step with the cluster until `done` says so (or panics after `T`).
async fn run_pods_until<F, Fut>(
    runner: &mut PodRunner,
    admin: &kube::Client,
    what: &str,
    mut done: F,
) where
    F: FnMut(Vec<String>) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        let running = runner.sync(admin).await;
        runner.assert_alive();
        if done(running).await {
            return;
        }
        assert!(
            start.elapsed() < T,
            "timed out after {T:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Keeps the pods running until the watched addresses satisfy `check`.
async fn until_addresses(
    runner: &mut PodRunner,
    admin: &kube::Client,
    watch: &AddressWatch,
    what: &str,
    check: impl Fn(&BTreeMap<String, Vec<String>>) -> bool,
) {
    run_pods_until(runner, admin, what, |_| {
        let ok = check(&watch.now());
        async move { ok }
    })
    .await
}

/// The bash block of docs/helm.md marked `<!-- test: cleanup -->`.
fn cleanup_script() -> String {
    let doc =
        std::fs::read_to_string(chart_dir().join("../../../docs/helm.md")).expect("docs/helm.md");
    doc.split_once("<!-- test: cleanup -->")
        .and_then(|(_, rest)| rest.split_once("```sh\n"))
        .and_then(|(_, rest)| rest.split_once("```"))
        .map(|(block, _)| block.to_string())
        .expect("docs/helm.md has the cleanup block")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn install_upgrade_uninstall_keep_every_address() {
    let Some(helm) = helm_or_skip("helm install/upgrade/uninstall on the real control plane")
    else {
        return;
    };
    let Some(kubectl) = kubectl() else { return };
    // Built before anything is timed (the first call runs cargo build).
    tokio::task::spawn_blocking(portway_tests::portway_bin)
        .await
        .expect("build portway");
    let c = TestCluster::start().await.expect("cluster");
    assert_eq!(
        c.backend(),
        Backend::Real,
        "helm_e2e runs on the real control plane: set PORTWAY_TEST_CLUSTER=real"
    );
    for (i, name) in ["node-1", "node-2"].iter().enumerate() {
        c.add_node(SimNode::new(name).ipv4(&format!("10.0.0.{}", i + 1)))
            .await
            .expect("node");
    }
    let admin = c.client();
    let dir = tempfile::tempdir().expect("tmp");
    let kc = dir.path().join("admin.kubeconfig");
    c.write_kubeconfig(&kc, "admin").await.expect("kubeconfig");

    // The namespace, as docs/helm.md says: privileged Pod Security.
    let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": NS,
        "labels": {"pod-security.kubernetes.io/enforce": "privileged"}}}))
    .expect("ns");
    Api::<Namespace>::all(admin.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("namespace");

    // A bad value: refused by `helm install` itself, naming the key; nothing applied.
    let out = helm_release(
        &helm,
        &kc,
        "install",
        &["--set", "config.l2.gossipPort=70000"],
    )
    .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("/config/l2/gossipPort"),
        "{err}"
    );
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), NS);
    assert!(!exists(&deployments, "portway-controller").await);

    // Install, and wait for the rollout as users do.
    let t = Instant::now();
    let kubeadm = example("kubeadm");
    let out = helm_release(&helm, &kc, "install", &["-f", &kubeadm, "--wait"]).await;
    assert_ok("helm install", &out);
    eprintln!("helm install --wait: {:.1} s", t.elapsed().as_secs_f64());
    let ds: Api<DaemonSet> = Api::namespaced(admin.clone(), NS);
    let speaker = ds.get("portway-speaker").await.expect("speaker DaemonSet");
    assert_eq!(
        speaker.status.as_ref().map(|s| s.number_ready),
        Some(2),
        "a speaker pod per node"
    );

    // The chart's pods run Portway as its ServiceAccount, with RBAC enforced: only what the
    // chart grants counts.
    c.enforce_rbac(true).await.expect("enforce RBAC");
    let sa_kc = dir.path().join("controller.kubeconfig");
    c.write_kubeconfig(
        &sa_kc,
        &format!("system:serviceaccount:{NS}:portway-controller"),
    )
    .await
    .expect("ServiceAccount kubeconfig");
    let mut runner = PodRunner::new(NS, CONTROLLER_PODS, dir.path(), &sa_kc);
    let watch = AddressWatch::start(admin.clone());

    let services: Api<Service> = Api::namespaced(admin.clone(), "default");
    // `first` takes the pool's first address and gives it back, so `vip` holds the second:
    // a controller that allocated afresh instead of rebuilding from the Services' status
    // would move `vip` (and the upgrade lists the new range first, so it would move it
    // there).
    services
        .create(&PostParams::default(), &svc("first").class(L2).build())
        .await
        .expect("create Service");
    until_addresses(&mut runner, &admin, &watch, "`first` served", |w| {
        w.get("default/first") == Some(&vec!["192.168.1.240".to_string()])
    })
    .await;
    services
        .create(
            &PostParams::default(),
            &svc("vip").class(L2).ports([443]).build(),
        )
        .await
        .expect("create Service");
    until_addresses(&mut runner, &admin, &watch, "`vip` served", |w| {
        w.get("default/vip").is_some_and(|i| !i.is_empty())
    })
    .await;
    services
        .delete("first", &DeleteParams::default())
        .await
        .expect("delete `first`");
    run_pods_until(&mut runner, &admin, "`first` released", |_| {
        let services = services.clone();
        async move { services.get_opt("first").await.ok().flatten().is_none() }
    })
    .await;
    for s in [
        svc("web").build(),
        svc("pinned")
            .class(L2)
            .annotation("portway.dev/load-balancer-ips", "192.168.1.245")
            .build(),
        // Asks for an address of the range the upgrade adds: pending until then.
        svc("later")
            .class(L2)
            .annotation("portway.dev/load-balancer-ips", NEW_RANGE_IP)
            .build(),
    ] {
        services
            .create(&PostParams::default(), &s)
            .await
            .expect("create Service");
    }
    let served = ["web", "vip", "pinned"];
    until_addresses(&mut runner, &admin, &watch, "the Services served", |w| {
        served.iter().all(|n| {
            w.get(&format!("default/{n}"))
                .is_some_and(|i| !i.is_empty())
        })
    })
    .await;
    // Both svclb pods are ready only a moment apart: `web` gets its second node's address
    // after its first, as with k3s. Wait for both before the upgrade is judged.
    until_addresses(&mut runner, &admin, &watch, "`web` on both nodes", |w| {
        w.get("default/web").is_some_and(|i| i.len() == 2)
    })
    .await;
    watch.mark();
    let before = watch.now();
    eprintln!("served before the upgrade: {before:?}");
    assert_eq!(before["default/pinned"], vec!["192.168.1.245".to_string()]);
    assert_eq!(before["default/vip"], vec!["192.168.1.241".to_string()]);
    assert!(
        before["default/later"].is_empty(),
        "{NEW_RANGE_IP} is in no pool yet"
    );
    let old_pods = runner.sync(&admin).await;
    assert_eq!(old_pods.len(), 2, "two controller replicas: {old_pods:?}");

    // Upgrade with a changed pool; keep the pods running while helm waits for the rollout.
    let upgrade_values = dir.path().join("upgrade.yaml");
    std::fs::write(
        &upgrade_values,
        "config:\n  pools:\n    - name: lan\n      addresses:\n        - 192.168.1.100-192.168.1.110\n        - 192.168.1.240-192.168.1.250\n",
    )
    .expect("values");
    let t = Instant::now();
    let upgrade = {
        let (helm, kc) = (helm.clone(), kc.clone());
        let values = upgrade_values.to_str().expect("UTF-8").to_string();
        tokio::spawn(async move {
            let extra = ["-f", &kubeadm, "-f", &values, "--wait"];
            helm_release(&helm, &kc, "upgrade", &extra).await
        })
    };
    let old = old_pods.clone();
    run_pods_until(
        &mut runner,
        &admin,
        "the rollout to replace both pods",
        |running| {
            let done = upgrade.is_finished()
                && running.len() == 2
                && running.iter().all(|p| !old.contains(p));
            async move { done }
        },
    )
    .await;
    assert_ok("helm upgrade", &upgrade.await.expect("helm thread"));
    eprintln!(
        "helm upgrade --wait and the rollout: {:.1} s",
        t.elapsed().as_secs_f64()
    );
    assert!(
        runner
            .configs()
            .iter()
            .all(|c| c.contains("192.168.1.100-192.168.1.110")),
        "the new pods read the new configuration"
    );
    // The new configuration is in effect: the pending Service gets its address.
    until_addresses(&mut runner, &admin, &watch, "`later` served", |w| {
        w.get("default/later") == Some(&vec![NEW_RANGE_IP.to_string()])
    })
    .await;
    // A little longer, for a late flip to show.
    run_pods_until(&mut runner, &admin, "a settling second", {
        let t = Instant::now();
        move |_| {
            let done = t.elapsed() > Duration::from_secs(2);
            async move { done }
        }
    })
    .await;
    let seen = watch.stop();
    eprintln!(
        "upgrade: {} Services watched with addresses, {} watch events, {} pods run in all, changes: {:?}",
        seen.first.len(),
        seen.events,
        runner.history.len(),
        seen.changes
    );
    assert_eq!(seen.first.len(), 4, "{:?}", seen.first);
    assert!(
        seen.changes.is_empty(),
        "addresses changed during the upgrade: {:?}",
        seen.changes
    );
    for name in served {
        let key = format!("default/{name}");
        assert_eq!(seen.now[&key], before[&key], "{name}");
    }

    // Uninstall: the chart's objects go; Portway's own stay, as docs/helm.md lists.
    let out = helm_async(
        &helm,
        &kc,
        &[
            "uninstall",
            "portway",
            "-n",
            NS,
            "--wait",
            "--timeout",
            "2m",
        ],
    )
    .await;
    assert_ok("helm uninstall", &out);
    run_pods_until(
        &mut runner,
        &admin,
        "the controller pods to go",
        |running| async move { running.is_empty() },
    )
    .await;
    runner.stop_all();
    assert_eq!(runner.len(), 0);
    assert!(!exists(&deployments, "portway-controller").await);
    assert!(!exists(&ds, "portway-speaker").await);
    let cms: Api<ConfigMap> = Api::namespaced(admin.clone(), NS);
    assert!(!exists(&cms, "portway-config").await);
    let roles: Api<ClusterRole> = Api::all(admin.clone());
    for r in ["portway-controller", "portway-speaker"] {
        assert!(!exists(&roles, r).await, "ClusterRole {r} left");
    }
    let all = services.list(&ListParams::default()).await.expect("list");
    for s in all
        .items
        .iter()
        .filter(|s| s.metadata.name.as_deref() != Some("kubernetes"))
    {
        let name = s.metadata.name.clone().unwrap_or_default();
        assert!(
            finalizers(s).iter().any(|f| f == FINALIZER),
            "{name} keeps the finalizer"
        );
        assert!(!ips(s).is_empty(), "{name} keeps its address");
    }
    let svclb = ds
        .list(&ListParams::default().labels("svccontroller.k3s.cattle.io/svcname"))
        .await
        .expect("list");
    assert_eq!(svclb.items.len(), 1, "the svclb DaemonSet of `web` stays");
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), NS);
    assert!(exists(&sas, "svclb").await);
    let leases: Api<Lease> = Api::namespaced(admin.clone(), NS);
    assert!(exists(&leases, "portway-controller").await);

    // The documented cleanup, run as written.
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).expect("bin");
    std::os::unix::fs::symlink(&kubectl, bin.join("kubectl")).expect("symlink");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = std::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", &cleanup_script()])
        .env("PATH", path)
        .env("KUBECONFIG", &kc)
        .output()
        .expect("bash");
    assert_ok("the cleanup of docs/helm.md", &out);
    for s in services
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
    {
        let name = s.metadata.name.clone().unwrap_or_default();
        assert!(
            !finalizers(&s).iter().any(|f| f == FINALIZER),
            "{name} still has the finalizer"
        );
        assert!(ips(&s).is_empty(), "{name} still publishes {:?}", ips(&s));
    }
    assert!(
        ds.list(&ListParams::default())
            .await
            .expect("list")
            .items
            .is_empty()
    );
    assert!(!exists(&sas, "svclb").await);
    assert!(!exists(&leases, "portway-controller").await);
    // And a Service can be deleted again.
    services
        .delete("web", &DeleteParams::default())
        .await
        .expect("delete");
    eventually("`web` to be deleted", Duration::from_secs(10), || async {
        services
            .get_opt("web")
            .await
            .ok()
            .flatten()
            .is_none()
            .then_some(())
    })
    .await;
    c.shutdown().await;
}
