//! Today's kubectl (1.33, `PORTWAY_KUBECTL`) on `portway sandbox`, typed as a user would:
//! the `create` subcommands (which send protobuf bodies), `get` with the real server's
//! columns (Tables, `-o wide`), `describe`, `edit` through `KUBE_EDITOR`, client-side and
//! server-side `apply` with a conflict between two managers, `wait --for`,
//! `delete --wait`, `get -w`, `events` and `explain`. Every check reads kubectl's output.
//! kubectl is required (the test fails, not skips) under `PORTWAY_REQUIRE_PRIVILEGED=1`.

use portway_tests::privileged;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
    home: tempfile::TempDir,
}

impl Kubectl {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .env("HOME", self.home.path())
            .env_remove("KUBECONFIG");
        cmd
    }

    fn run_with(
        &self,
        args: &[&str],
        stdin: Option<&str>,
        env: &[(&str, &str)],
    ) -> (bool, String, String) {
        let mut cmd = self.cmd(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("kubectl starts");
        if let Some(input) = stdin {
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

    fn run(&self, args: &[&str]) -> (bool, String, String) {
        self.run_with(args, None, &[])
    }

    fn ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.run(args);
        assert!(ok, "kubectl {args:?} failed:\n{out}\n{err}");
        out
    }

    fn ok_in(&self, args: &[&str], stdin: &str) -> String {
        let (ok, out, err) = self.run_with(args, Some(stdin), &[]);
        assert!(ok, "kubectl {args:?} failed:\n{out}\n{err}");
        out
    }
}

/// The header and the row of `name` of a `kubectl get` table, split on runs of spaces.
fn row<'a>(table: &'a str, name: &str) -> (Vec<&'a str>, Vec<&'a str>) {
    let mut lines = table.lines();
    let header = lines
        .next()
        .map(|h| {
            h.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let row = table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .map(|l| {
            l.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect()
        })
        .unwrap_or_else(|| panic!("no row {name} in:\n{table}"));
    (header, row)
}

fn cell<'a>(table: &'a str, name: &str, column: &str) -> &'a str {
    let (header, row) = row(table, name);
    let i = header
        .iter()
        .position(|h| *h == column)
        .unwrap_or_else(|| panic!("no column {column} in {header:?}:\n{table}"));
    row.get(i).copied().unwrap_or("")
}

fn kubectl_bin() -> Option<PathBuf> {
    kubectl_from("PORTWAY_KUBECTL", "kubectl 1.33 on portway sandbox")
}

fn kubectl_from(var: &str, what: &str) -> Option<PathBuf> {
    let missing = match std::env::var(var) {
        Ok(p) if Path::new(&p).exists() => return Some(PathBuf::from(p)),
        Ok(p) => format!("{var}={p} does not exist"),
        Err(_) => format!("{var} is not set (run `eval \"$(scripts/install-test-deps)\"`)"),
    };
    privileged(what, Some(missing)).ok();
    None
}

struct Sandbox(Child);

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Starts `portway sandbox` and a kubectl for its kubeconfig (the directory holds it).
fn sandbox(bin: PathBuf) -> (tempfile::TempDir, Sandbox, Kubectl) {
    let dir = tempfile::tempdir().expect("tmp");
    let kubeconfig = dir.path().join("sandbox.kubeconfig");
    let sandbox = Sandbox(
        Command::new(portway_tests::portway_bin())
            .args(["sandbox", "--demo-timeout", "90s"])
            .arg("--kubeconfig-out")
            .arg(&kubeconfig)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("portway sandbox starts"),
    );
    eventually("the sandbox's kubeconfig", || kubeconfig.exists());
    let k = Kubectl {
        bin,
        kubeconfig,
        home: tempfile::tempdir().expect("home"),
    };
    (dir, sandbox, k)
}

#[test]
fn kubectl_works_on_the_sandbox() {
    let Some(bin) = kubectl_bin() else {
        return;
    };
    let (dir, _sandbox, k) = sandbox(bin);

    // get svc: the real server's columns, each demo Service's address in EXTERNAL-IP.
    let demos = [
        ("demo-hostport", "10.0.0."),
        ("demo-l2", "192.168.100."),
        ("demo-bgp", "10.200.0."),
        ("demo-f5", "172.31.0."),
    ];
    eventually("every demo Service to get its address", || {
        let (ok, out, _) = k.run(&["get", "svc"]);
        ok && demos.iter().all(|(name, prefix)| {
            out.lines().any(|l| l.starts_with(name))
                && cell(&out, name, "EXTERNAL-IP").starts_with(prefix)
        })
    });
    let svcs = k.ok(&["get", "svc"]);
    let (header, _) = row(&svcs, "demo-l2");
    assert_eq!(
        header,
        [
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE"
        ],
        "{svcs}"
    );
    assert_eq!(cell(&svcs, "demo-l2", "TYPE"), "LoadBalancer");
    assert!(cell(&svcs, "demo-f5", "PORT(S)").contains("443:"), "{svcs}");
    let wide = k.ok(&["get", "svc", "-o", "wide"]);
    assert_eq!(cell(&wide, "demo-l2", "SELECTOR"), "app=demo-l2", "{wide}");

    // Nodes, -o wide included.
    let nodes = k.ok(&["get", "nodes", "-o", "wide"]);
    assert_eq!(cell(&nodes, "node-1", "STATUS"), "Ready", "{nodes}");
    assert!(
        cell(&nodes, "node-1", "INTERNAL-IP").starts_with("10.0.0."),
        "{nodes}"
    );

    // create: protobuf bodies from kubectl's typed clients.
    k.ok(&["create", "service", "loadbalancer", "lb1", "--tcp=80:8080"]);
    k.ok(&["create", "service", "clusterip", "cip", "--tcp=80:http"]);
    k.ok(&[
        "create",
        "service",
        "nodeport",
        "np",
        "--tcp=8080:80",
        "--node-port=30123",
    ]);
    assert_eq!(
        k.ok(&[
            "get",
            "svc",
            "cip",
            "-o",
            "jsonpath={.spec.ports[0].targetPort}"
        ]),
        "http"
    );
    let svcs = k.ok(&["get", "svc", "np", "cip"]);
    assert_eq!(cell(&svcs, "np", "PORT(S)"), "8080:30123/TCP", "{svcs}");
    assert_eq!(cell(&svcs, "cip", "EXTERNAL-IP"), "<none>", "{svcs}");
    eventually("lb1 to get an address from the default class", || {
        let out = k.ok(&["get", "svc", "lb1"]);
        cell(&out, "lb1", "EXTERNAL-IP").starts_with("10.0.0.")
    });
    k.ok(&[
        "create",
        "deployment",
        "web",
        "--image=nginx:1.27",
        "--replicas=2",
        "--port=80",
    ]);
    k.ok(&["create", "configmap", "cm1", "--from-literal=a=b"]);
    k.ok(&["create", "secret", "generic", "s1", "--from-literal=p=q"]);
    k.ok(&["create", "namespace", "team-a"]);
    k.ok(&["create", "serviceaccount", "robot", "-n", "team-a"]);
    assert_eq!(
        k.ok(&["get", "secret", "s1", "-o", "jsonpath={.data.p}"]),
        "cQ=="
    );

    // wait --for, and the Deployment's columns.
    k.ok(&[
        "wait",
        "--for=condition=Available",
        "deployment/web",
        "--timeout=60s",
    ]);
    let deploys = k.ok(&["get", "deployments", "-o", "wide"]);
    assert_eq!(cell(&deploys, "web", "READY"), "2/2", "{deploys}");
    assert_eq!(cell(&deploys, "web", "IMAGES"), "nginx:1.27", "{deploys}");

    // get on every kind kubectl users look at.
    let pods = k.ok(&["get", "pods", "-A", "-o", "wide"]);
    assert!(
        pods.lines()
            .next()
            .is_some_and(|h| h.contains("READY") && h.contains("NODE")),
        "{pods}"
    );
    let ds = k.ok(&["get", "daemonsets", "-A"]);
    assert!(
        ds.lines()
            .next()
            .is_some_and(|h| h.contains("DESIRED") && h.contains("NODE SELECTOR")),
        "{ds}"
    );
    let ns = k.ok(&["get", "namespaces"]);
    assert_eq!(cell(&ns, "team-a", "STATUS"), "Active", "{ns}");
    let sa = k.ok(&["get", "serviceaccounts", "-n", "team-a"]);
    assert!(sa.contains("robot") && sa.contains("default"), "{sa}");
    for args in [
        ["get", "endpointslices", "-A"],
        ["get", "leases", "-A"],
        ["get", "events", "-A"],
    ] {
        k.ok(&args);
    }
    let cms = k.ok(&["get", "configmaps"]);
    assert_eq!(cell(&cms, "cm1", "DATA"), "1", "{cms}");

    // describe.
    let d = k.ok(&["describe", "service", "lb1"]);
    assert!(
        d.contains("LoadBalancer Ingress:") && d.contains("Events:"),
        "{d}"
    );
    let d = k.ok(&["describe", "deployment", "web"]);
    assert!(d.contains("Replicas:") && d.contains("nginx:1.27"), "{d}");
    k.ok(&["describe", "node", "node-1"]);

    // edit through KUBE_EDITOR.
    let editor = dir.path().join("editor.sh");
    std::fs::write(
        &editor,
        "#!/bin/sh\nsed -i 's/^  a: b$/  a: edited/' \"$1\"\n",
    )
    .expect("editor");
    let status = Command::new("chmod")
        .arg("+x")
        .arg(&editor)
        .status()
        .expect("chmod");
    assert!(status.success());
    let editor_s = editor.display().to_string();
    let (ok, out, err) = k.run_with(
        &["edit", "configmap", "cm1"],
        None,
        &[("KUBE_EDITOR", &editor_s)],
    );
    assert!(ok, "kubectl edit failed:\n{out}\n{err}");
    assert_eq!(
        k.ok(&["get", "configmap", "cm1", "-o", "jsonpath={.data.a}"]),
        "edited"
    );

    // apply (client-side), twice.
    let manifest =
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\ndata:\n  x: \"1\"\n";
    k.ok_in(&["apply", "-f", "-"], manifest);
    k.ok_in(&["apply", "-f", "-"], &manifest.replace("\"1\"", "\"2\""));
    assert_eq!(
        k.ok(&["get", "configmap", "applied", "-o", "jsonpath={.data.x}"]),
        "2"
    );

    // apply --server-side: two managers, a conflict, then forced.
    let ssa = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\ndata:\n  x: \"1\"\n";
    k.ok_in(
        &["apply", "--server-side", "--field-manager=alice", "-f", "-"],
        ssa,
    );
    let (ok, out, err) = k.run_with(
        &["apply", "--server-side", "--field-manager=bob", "-f", "-"],
        Some(&ssa.replace("\"1\"", "\"2\"")),
        &[],
    );
    assert!(!ok, "a conflicting apply must fail:\n{out}\n{err}");
    assert!(
        err.contains("conflict") && err.contains("alice") && err.contains(".data.x"),
        "{err}"
    );
    k.ok_in(
        &[
            "apply",
            "--server-side",
            "--field-manager=bob",
            "--force-conflicts",
            "-f",
            "-",
        ],
        &ssa.replace("\"1\"", "\"2\""),
    );
    let managers = k.ok(&[
        "get",
        "configmap",
        "ssa",
        "--show-managed-fields",
        "-o",
        "jsonpath={.metadata.managedFields[*].manager}",
    ]);
    assert!(managers.contains("bob"), "{managers}");

    // get -w sees a change made after it started.
    let mut watch = k
        .cmd(&["get", "configmaps", "-w", "--no-headers"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("get -w");
    let stdout = watch.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    k.ok(&["create", "configmap", "watched", "--from-literal=k=v"]);
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut saw = false;
    while Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200))
            && line.starts_with("watched")
        {
            saw = true;
            break;
        }
    }
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(saw, "kubectl get -w did not show the new configmap");

    // delete --wait, then it is gone.
    k.ok(&["delete", "configmap", "cm1", "--wait=true", "--timeout=30s"]);
    let (ok, _, err) = k.run(&["get", "configmap", "cm1"]);
    assert!(!ok && err.contains("NotFound"), "{err}");
    k.ok(&[
        "delete",
        "deployment",
        "web",
        "--wait=true",
        "--timeout=60s",
    ]);
    k.ok(&[
        "delete",
        "namespace",
        "team-a",
        "--wait=true",
        "--timeout=60s",
    ]);

    // events and explain.
    let events = k.ok(&["events", "-A"]);
    assert!(
        events
            .lines()
            .next()
            .is_some_and(|h| h.contains("LAST SEEN")),
        "{events}"
    );
    let explain = k.ok(&["explain", "service.spec.loadBalancerClass"]);
    assert!(
        explain.contains("loadBalancerClass") && explain.contains("string"),
        "{explain}"
    );
}

/// A CustomResourceDefinition of the test's own, as Portway's CRDs are written: status
/// subresource, printer columns (one only in `-o wide`), a default and a CEL rule on a CIDR.
const WIDGET_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.demo.portway.dev
spec:
  group: demo.portway.dev
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wdg]}
  versions:
  - name: v1alpha1
    served: true
    storage: true
    subresources: {status: {}}
    additionalPrinterColumns:
    - {name: CIDR, type: string, jsonPath: .spec.cidr}
    - {name: Mode, type: string, jsonPath: .spec.mode}
    - {name: Port, type: integer, jsonPath: .spec.port, priority: 1}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [cidr]
            properties:
              cidr:
                type: string
                x-kubernetes-validations:
                - {rule: "isCIDR(self)", message: must be a CIDR such as 192.0.2.0/24}
              mode: {type: string, enum: [L2, BGP], default: L2}
              port: {type: integer, minimum: 1, maximum: 65535, default: 179}
          status:
            type: object
            x-kubernetes-preserve-unknown-fields: true
"#;

#[test]
fn kubectl_applies_and_gets_custom_resources_on_the_sandbox() {
    let Some(bin) = kubectl_bin() else {
        return;
    };
    let (_dir, _sandbox, k) = sandbox(bin);

    let out = k.ok_in(&["apply", "-f", "-"], WIDGET_CRD);
    assert!(
        out.contains(
            "customresourcedefinition.apiextensions.k8s.io/widgets.demo.portway.dev created"
        ),
        "{out}"
    );
    k.ok(&[
        "wait",
        "--for",
        "condition=Established",
        "crd/widgets.demo.portway.dev",
        "--timeout=30s",
    ]);
    let widget = |cidr: &str, mode: &str| {
        format!(
            "apiVersion: demo.portway.dev/v1alpha1\nkind: Widget\nmetadata: {{name: w1}}\n\
             spec: {{cidr: \"{cidr}\"{mode}}}\n"
        )
    };
    let out = k.ok_in(&["apply", "-f", "-"], &widget("10.0.0.0/24", ""));
    assert!(out.contains("widget.demo.portway.dev/w1 created"), "{out}");

    // get: the printer columns, the default filled in, the priority-1 column only wide.
    let table = k.ok(&["get", "widgets"]);
    let (header, _) = row(&table, "w1");
    assert_eq!(header, ["NAME", "CIDR", "MODE"], "{table}");
    assert_eq!(cell(&table, "w1", "CIDR"), "10.0.0.0/24");
    assert_eq!(cell(&table, "w1", "MODE"), "L2");
    let wide = k.ok(&["get", "wdg", "w1", "-o", "wide"]);
    assert_eq!(cell(&wide, "w1", "PORT"), "179", "{wide}");

    // A CIDR rule refuses a bad value, naming the field and the rule's message.
    let (ok, _, err) = k.run_with(&["apply", "-f", "-"], Some(&widget("10.0.0.0/33", "")), &[]);
    assert!(!ok, "a bad CIDR was accepted");
    assert!(
        err.contains("spec.cidr") && err.contains("must be a CIDR such as 192.0.2.0/24"),
        "{err}"
    );

    // A changed apply is a patch of the object (custom resources take merge patches).
    let out = k.ok_in(&["apply", "-f", "-"], &widget("10.0.0.0/24", ", mode: BGP"));
    assert!(
        out.contains("widget.demo.portway.dev/w1 configured"),
        "{out}"
    );
    let table = k.ok(&["get", "widget", "w1"]);
    assert_eq!(cell(&table, "w1", "MODE"), "BGP", "{table}");
    let json = k.ok(&["get", "widget", "w1", "-o", "jsonpath={.spec.cidr}"]);
    assert_eq!(json, "10.0.0.0/24");

    // Deleting the CRD takes its objects and its resource type with it.
    k.ok(&[
        "delete",
        "crd",
        "widgets.demo.portway.dev",
        "--wait=true",
        "--timeout=30s",
    ]);
    // kubectl caches discovery under $HOME/.kube/cache (up to 6 hours, as it does against
    // any server): with the cache from before the delete it would still map `widgets` and
    // print the server's 404 instead. A fresh cache directory per try makes it rediscover,
    // as a user's kubectl does once its cache expires or after `--cache-dir`.
    eventually("the widget type to go", || {
        let cache = tempfile::tempdir().expect("cache dir");
        let cache = cache.path().to_string_lossy().into_owned();
        let (ok, _, err) = k.run(&["get", "widgets", "--cache-dir", &cache]);
        !ok && err.contains("the server doesn't have a resource type \"widgets\"")
    });
}

/// The oldest kubectl the machines carry (`PORTWAY_KUBECTL_OLDEST`, 1.27) still does what
/// a user does first: lists with the server's columns, creates a LoadBalancer Service (a
/// protobuf body), applies YAML and deletes.
#[test]
fn the_oldest_kubectl_still_works_on_the_sandbox() {
    let Some(bin) = kubectl_from(
        "PORTWAY_KUBECTL_OLDEST",
        "the oldest kubectl on portway sandbox",
    ) else {
        return;
    };
    let (_dir, _sandbox, k) = sandbox(bin);
    eventually("the demo l2 Service's address", || {
        let (ok, out, _) = k.run(&["get", "svc"]);
        ok && out.lines().any(|l| l.starts_with("demo-l2"))
            && cell(&out, "demo-l2", "EXTERNAL-IP").starts_with("192.168.100.")
    });
    let svcs = k.ok(&["get", "svc"]);
    assert_eq!(cell(&svcs, "demo-l2", "TYPE"), "LoadBalancer", "{svcs}");
    let all = k.ok(&["get", "svc", "-A"]);
    assert!(
        all.starts_with("NAMESPACE") && all.contains("EXTERNAL-IP"),
        "{all}"
    );
    k.ok(&["create", "service", "loadbalancer", "old", "--tcp=80:8080"]);
    k.ok_in(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: old-cm\ndata:\n  a: b\n",
    );
    assert_eq!(
        k.ok(&["get", "cm", "old-cm", "-o", "jsonpath={.data.a}"]),
        "b"
    );
    eventually("the new Service's address", || {
        let (ok, out, _) = k.run(&["get", "svc", "old"]);
        ok && cell(&out, "old", "EXTERNAL-IP").starts_with("10.0.0.")
    });
    k.ok(&["delete", "svc", "old", "--wait=true"]);
    let (ok, _, err) = k.run(&["get", "svc", "old"]);
    assert!(!ok && err.contains("NotFound"), "{err}");
}
