//! The simulated API server driven by clients nobody here wrote: `kubectl` from Debian's
//! `kubernetes-client` and the Python `kubernetes` client from PyPI (both installed by
//! `scripts/install-test-deps`, found through `PORTWAY_KUBECTL` and `PORTWAY_PYTHON`).

use portway_sim::SimCluster;
use portway_tests::privileged;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn tool(var: &str, what: &str) -> Option<PathBuf> {
    let missing = match std::env::var(var) {
        Ok(p) if Path::new(&p).exists() => return Some(PathBuf::from(p)),
        Ok(p) => format!("{var}={p} does not exist"),
        Err(_) => format!("{var} is not set (run `eval \"$(scripts/install-test-deps)\"`)"),
    };
    privileged(what, Some(missing)).ok();
    None
}

struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
    home: tempfile::TempDir,
}

impl Kubectl {
    fn run(&self, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .env("HOME", self.home.path())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("kubectl starts");
        if let Some(input) = stdin {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(input.as_bytes())
                .expect("write stdin");
        }
        let out = child.wait_with_output().expect("kubectl runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let (ok, out, err) = self.run(args, stdin);
        assert!(ok, "kubectl {args:?} failed:\n{out}\n{err}");
        out
    }
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_create_get_patch_watch_delete() {
    let Some(bin) = tool("PORTWAY_KUBECTL", "kubectl against the sim") else {
        return;
    };
    let sim = SimCluster::start().await.expect("sim");
    let dir = tempfile::tempdir().expect("tmp");
    let kubeconfig = dir.path().join("kubeconfig");
    sim.write_kubeconfig(&kubeconfig, "admin")
        .expect("kubeconfig");
    let k = Kubectl {
        bin,
        kubeconfig,
        home: tempfile::tempdir().expect("home"),
    };
    let manifest = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  labels: {app: web}\nspec:\n  type: LoadBalancer\n  ports:\n  - name: http\n    port: 80\n";
    let kk = std::sync::Arc::new(k);
    let k = kk.clone();
    tokio::task::spawn_blocking(move || {
        k.ok(&["create", "-f", "-"], Some(manifest));
        let svc = json(&k.ok(&["get", "svc", "web", "-o", "json"], None));
        assert_eq!(svc["spec"]["type"], "LoadBalancer");
        assert!(svc["spec"]["ports"][0]["nodePort"].as_u64().is_some());
        k.ok(
            &[
                "patch",
                "svc",
                "web",
                "--type",
                "merge",
                "-p",
                r#"{"metadata":{"labels":{"tier":"fe"}}}"#,
            ],
            None,
        );
        k.ok(
            &[
                "patch",
                "svc",
                "web",
                "--type",
                "json",
                "-p",
                r#"[{"op":"add","path":"/metadata/annotations","value":{"a":"b"}}]"#,
            ],
            None,
        );
        k.ok(
            &[
                "patch",
                "svc",
                "web",
                "--type",
                "strategic",
                "-p",
                r#"{"spec":{"ports":[{"name":"https","port":443}]}}"#,
            ],
            None,
        );
        let svc = json(&k.ok(&["get", "svc", "web", "-o", "json"], None));
        assert_eq!(svc["metadata"]["labels"]["tier"], "fe");
        assert_eq!(svc["metadata"]["annotations"]["a"], "b");
        assert_eq!(svc["spec"]["ports"].as_array().map(Vec::len), Some(2));
        // Short names and label selectors resolve through discovery.
        let names = k.ok(&["get", "svc", "-l", "tier=fe", "-o", "name"], None);
        assert_eq!(names.trim(), "service/web");
        k.ok(&["get", "no"], None);
        // A bad patch is refused with the server's message.
        let (ok, _, err) = k.run(
            &[
                "patch",
                "svc",
                "web",
                "--type",
                "merge",
                "-p",
                r#"{"spec":{"loadBalancerClass":"x"}}"#,
            ],
            None,
        );
        assert!(!ok && err.contains("loadBalancerClass"), "{err}");
    })
    .await
    .expect("kubectl steps");

    // `get -w` sees a change made after it started.
    let k = kk.clone();
    let mut child = Command::new(&k.bin)
        .arg("--kubeconfig")
        .arg(&k.kubeconfig)
        .args([
            "get",
            "svc",
            "web",
            "-w",
            "-o",
            "jsonpath={.metadata.labels.step}{\"\\n\"}",
        ])
        .env("HOME", k.home.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("watch starts");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let k2 = kk.clone();
    tokio::task::spawn_blocking(move || {
        k2.ok(&["label", "svc", "web", "step=two"], None);
    })
    .await
    .expect("label");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut saw = false;
    while Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200))
            && line.trim() == "two"
        {
            saw = true;
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(saw, "kubectl get -w did not show the change");

    let k = kk.clone();
    tokio::task::spawn_blocking(move || {
        // Events recorded through events.k8s.io/v1 show in `kubectl get events`.
        let ev = r#"{"apiVersion":"events.k8s.io/v1","kind":"Event","metadata":{"name":"web.1","namespace":"default"},"regarding":{"kind":"Service","name":"web","namespace":"default"},"reason":"EnsuredLoadBalancer","note":"Ensured load balancer","type":"Normal","action":"Ensure","reportingController":"portway","reportingInstance":"p-1","eventTime":"2026-11-22T10:00:00.000000Z"}"#;
        k.ok(&["create", "-f", "-"], Some(ev));
        let events = json(&k.ok(&["get", "events", "-o", "json"], None));
        assert!(
            events["items"].as_array().is_some_and(|i| i.iter().any(|e| e["reason"] == "EnsuredLoadBalancer" && e["message"] == "Ensured load balancer")),
            "{events}"
        );
        k.ok(&["delete", "svc", "web"], None);
        let (ok, _, err) = k.run(&["get", "svc", "web"], None);
        assert!(!ok && err.contains("not found"), "{err}");
    })
    .await
    .expect("kubectl steps");
    sim.shutdown().await;
}

const PY: &str = r#"
import sys, kubernetes
from kubernetes import client, config, watch
config.load_kube_config(sys.argv[1])
v1 = client.CoreV1Api()
for i in range(3):
    v1.create_namespaced_config_map("default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name=f"py-{i}")))
lst = v1.list_namespaced_config_map("default")
names = sorted(i.metadata.name for i in lst.items if i.metadata.name.startswith("py-"))
assert names == ["py-0", "py-1", "py-2"], names
rv = lst.metadata.resource_version
v1.patch_namespaced_config_map("py-1", "default", {"data": {"k": "v"}})
w = watch.Watch()
seen = []
for ev in w.stream(v1.list_namespaced_config_map, "default", resource_version=rv, timeout_seconds=5):
    seen.append((ev["type"], ev["object"].metadata.name))
    if ev["type"] == "MODIFIED":
        w.stop()
assert ("MODIFIED", "py-1") in seen, seen
try:
    for ev in watch.Watch().stream(v1.list_namespaced_config_map, "default", resource_version="1", timeout_seconds=5):
        pass
    print("no 410")
    sys.exit(1)
except client.exceptions.ApiException as e:
    assert e.status == 410, e
print("ok")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_list_watch_and_gone() {
    let Some(py) = tool("PORTWAY_PYTHON", "Python kubernetes client against the sim") else {
        return;
    };
    let sim = SimCluster::builder().history(3).start().await.expect("sim");
    let dir = tempfile::tempdir().expect("tmp");
    let kubeconfig = dir.path().join("kubeconfig");
    sim.write_kubeconfig(&kubeconfig, "admin")
        .expect("kubeconfig");
    let script = dir.path().join("client.py");
    std::fs::write(&script, PY).expect("script");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(py)
            .arg(&script)
            .arg(&kubeconfig)
            .output()
            .expect("python runs")
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("ok"),
        "python client failed:\n{stdout}\n{stderr}"
    );
    sim.shutdown().await;
}
