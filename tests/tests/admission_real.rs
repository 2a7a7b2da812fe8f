//! The admission policies of `deploy/` and of the Helm chart, enforced by a real
//! kube-apiserver (`PORTWAY_TEST_CLUSTER=real`, `--features real-cluster`; issue 20,
//! defects 2 and 3).
//!
//! Each render (the three kustomize overlays, the chart's kubeadm values) is applied with
//! kubectl, RBAC is enforced, and each component's ServiceAccount, with a TokenRequest
//! token, attempts what its RBAC allows but its policy forbids:
//!
//! - the speaker may patch Services: it changes `portway.dev/announced-by` (set, moved,
//!   removed) and nothing else; a selector, ports, labels, finalizers or another annotation
//!   are refused, alone or beside the annotation;
//! - the controller may create and update DaemonSets in the hostport namespace: any shape
//!   but the svclb one is refused (host paths, host network, another ServiceAccount, another
//!   image, a command, privileged, another capability, no svclb labels, another name), and
//!   the real hostport provider, running as the controller, creates and replaces its own
//!   svclb DaemonSets and serves a Service.
//!
//! The sim stores admission policies but evaluates no CEL, so this suite runs on the real
//! world only (as faults_real does); deploy_manifests.rs checks on both worlds that the
//! policies are rendered, bound with `Deny` and matched to the right ServiceAccount and
//! image.

// The kustomize side's modules, shared with deploy_manifests.rs.
#[path = "deploy_manifests/checks.rs"]
mod checks;
#[path = "deploy_manifests/rbac.rs"]
mod rbac;
#[path = "deploy_manifests/render.rs"]
mod render;
#[path = "deploy_manifests/workloads.rs"]
mod workloads;

use checks::{check_objects, check_overlay};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::api::{Api, Patch, PatchParams, PostParams};
use portway_tests::helm::helm_or_skip;
#[allow(unused_imports)] // used by the modules above through `super::`
use render::{
    CONTROLLER_SA, NS, OVERLAYS, Rendered, SPEAKER_SA, deploy_dir, kubectl, parse_docs,
    render_text, s, strs,
};
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;
use workloads::{container, controller_args, mounted_config, validate_config};

use portway_tests::{Backend, SimNode, TestCluster, eventually};

const T: Duration = Duration::from_secs(60);
const SPEAKER_POLICY: &str = "portway-speaker-announced-by-only";
const SVCLB_POLICY: &str = "portway-controller-svclb-only";

/// A forbidden DaemonSet: its name, the edit that makes it, the words of the refusal.
type Case = (&'static str, fn(&mut Value), &'static str);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_speaker_may_change_only_the_announced_by_annotation() {
    let Some(kubectl) = kubectl("admission policies on a real API server") else {
        return;
    };
    for (what, text) in renders(&kubectl) {
        let c = real_cluster_with(&kubectl, &text).await;
        let admin: Api<Service> = Api::namespaced(c.client(), "default");
        let web = portway_tests::svc("web")
            .class(portway_tests::L2)
            .label("app", "web")
            .annotation("team", "blue")
            .build();
        admin
            .create(&PostParams::default(), &web)
            .await
            .expect("create");
        c.enforce_rbac(true).await.expect("enforce RBAC");
        let spk = c
            .client_as(&format!("system:serviceaccount:{NS}:{SPEAKER_SA}"))
            .await
            .expect("speaker client");
        let svcs: Api<Service> = Api::namespaced(spk, "default");
        let patch = |v: Value| {
            let svcs = svcs.clone();
            async move {
                svcs.patch("web", &PatchParams::default(), &Patch::Merge(&v))
                    .await
            }
        };
        let ann = |v: Value| json!({"metadata": {"annotations": {"portway.dev/announced-by": v}}});
        // The policy is loaded by the API server a moment after it is created: wait until a
        // forbidden dry run is refused by it.
        eventually(&format!("{what}: {SPEAKER_POLICY} enforced"), T, || async {
            let dry = PatchParams {
                dry_run: true,
                ..Default::default()
            };
            let r = svcs
                .patch(
                    "web",
                    &dry,
                    &Patch::Merge(json!({"metadata": {"labels": {"probe": "x"}}})),
                )
                .await;
            denied_by(&r, SPEAKER_POLICY).then_some(())
        })
        .await;

        // What the speaker does (ccm/src/speaker/feedback.rs): set, move, remove.
        for v in [json!("node-1"), json!("node-2"), Value::Null] {
            let r = patch(ann(v.clone())).await;
            assert!(r.is_ok(), "{what}: announced-by {v}: {r:?}");
        }

        // What it must not do, alone or beside the annotation.
        let forbidden = [
            (
                json!({"spec": {"selector": {"app": "evil"}}}),
                "may not change a Service's spec",
            ),
            (
                json!({"spec": {"ports": [{"port": 22, "protocol": "TCP"}]}}),
                "may not change a Service's spec",
            ),
            (
                json!({"metadata": {"labels": {"app": "evil"}}}),
                "may not change a Service's labels",
            ),
            (
                json!({"metadata": {"finalizers": ["example.com/hold"]}}),
                "finalizers or owners",
            ),
            (
                json!({"metadata": {"annotations": {"team": "red"}}}),
                "no annotation but portway.dev/announced-by",
            ),
            (
                json!({"metadata": {"annotations": {"team": null}}}),
                "no annotation but portway.dev/announced-by",
            ),
            (
                json!({"metadata": {"annotations": {"metallb.universe.tf/address-pool": "x"}}}),
                "no annotation but portway.dev/announced-by",
            ),
            (
                json!({"metadata": {"annotations": {"portway.dev/announced-by": "node-1"}},
                       "spec": {"selector": {"app": "evil"}}}),
                "may not change a Service's spec",
            ),
            (ann(json!("n".repeat(300))), "at most 253 characters"),
            // The conflict annotation moves a Service: only one that allowed it.
            (
                json!({"metadata": {"annotations": {"portway.dev/address-conflict": "10.0.0.9 mac=02:00:00:00:00:99"}}}),
                "only on a Service that set portway.dev/reallocate-on-conflict",
            ),
            (
                json!({"metadata": {"annotations": {"portway.dev/reallocate-on-conflict": "true"}}}),
                "no annotation but portway.dev/announced-by",
            ),
        ];
        for (p, message) in forbidden {
            let r = patch(p.clone()).await;
            assert!(
                denied_by(&r, SPEAKER_POLICY) && error_text(&r).contains(message),
                "{what}: the speaker's patch {p} must be refused with {message:?}: {r:?}"
            );
        }
        // RBAC still refuses what it never granted.
        assert!(forbidden_by_rbac(
            &svcs.delete("web", &Default::default()).await
        ));
        let status = json!({"status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.1"}]}}});
        assert!(forbidden_by_rbac(
            &svcs
                .patch_status("web", &PatchParams::default(), &Patch::Merge(&status))
                .await
        ));

        // On a Service that allowed moving, the speaker may write the conflict it saw.
        let movable = portway_tests::svc("movable")
            .class(portway_tests::L2)
            .annotation("portway.dev/reallocate-on-conflict", "true")
            .build();
        admin
            .create(&PostParams::default(), &movable)
            .await
            .expect("create");
        let conflict =
            |v: Value| json!({"metadata": {"annotations": {"portway.dev/address-conflict": v}}});
        let r = svcs
            .patch(
                "movable",
                &PatchParams::default(),
                &Patch::Merge(conflict(json!("10.0.0.9 mac=02:00:00:00:00:99 node=n1"))),
            )
            .await;
        assert!(
            r.is_ok(),
            "{what}: the conflict on an opted-in Service: {r:?}"
        );
        let r = svcs
            .patch(
                "movable",
                &PatchParams::default(),
                &Patch::Merge(conflict(json!("x".repeat(600)))),
            )
            .await;
        assert!(
            denied_by(&r, SPEAKER_POLICY) && error_text(&r).contains("at most 512 characters"),
            "{what}: an oversized conflict must be refused: {r:?}"
        );

        // Nothing of the Service changed but the annotation the speaker owns.
        let after = admin.get("web").await.expect("get");
        let labels = after.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels.get("app").map(String::as_str), Some("web"), "{what}");
        assert!(
            !labels.contains_key("probe"),
            "{what}: the dry run was not stored"
        );
        let anns = after.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(anns.get("team").map(String::as_str), Some("blue"), "{what}");
        assert!(!anns.contains_key("portway.dev/announced-by"), "{what}");
        assert!(after.metadata.finalizers.unwrap_or_default().is_empty());
        let spec = after.spec.expect("spec");
        assert_eq!(
            spec.selector
                .unwrap_or_default()
                .get("app")
                .map(String::as_str),
            Some("web"),
            "{what}"
        );
        c.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_may_write_only_svclb_daemonsets_and_its_own_are_admitted() {
    let Some(kubectl) = kubectl("admission policies on a real API server") else {
        return;
    };
    for (what, text) in renders(&kubectl) {
        let r = Rendered {
            overlay: what.clone(),
            objects: parse_docs(&text),
        };
        let w = check_objects(&r);
        let deploy = r.get("Deployment", NS, "portway-controller");
        let args = controller_args(deploy);
        let config_path = args.config.clone().expect("--config");
        let config = validate_config(
            &what,
            mounted_config(
                &r,
                deploy,
                container(deploy, "controller"),
                config_path.to_str().expect("UTF-8"),
            ),
        );
        let c = real_cluster_with(&kubectl, &text).await;
        for i in 1..=2 {
            c.add_node(SimNode::new(&format!("node-{i}")).ipv4(&format!("192.168.1.{}", 10 + i)))
                .await
                .expect("node");
        }
        c.enforce_rbac(true).await.expect("enforce RBAC");
        let sa = c
            .client_as(&format!("system:serviceaccount:{NS}:{CONTROLLER_SA}"))
            .await
            .expect("controller client");
        let ds_api: Api<DaemonSet> = Api::namespaced(sa.clone(), &w.hostport_namespace);
        let svclb = svclb_daemonset(&config.hostport, "probe", "0badc0de");
        eventually(&format!("{what}: {SVCLB_POLICY} enforced"), T, || async {
            let dry = PostParams {
                dry_run: true,
                ..Default::default()
            };
            let bad = variant(&svclb, "probe", |ds| {
                ds["spec"]["template"]["spec"]["serviceAccountName"] = json!("default")
            });
            denied_by(&ds_api.create(&dry, &bad).await, SVCLB_POLICY).then_some(())
        })
        .await;

        // Every way out of the svclb shape that RBAC alone would let through.
        let cases: Vec<Case> = vec![
            (
                "hostpath",
                |ds| {
                    let p = &mut ds["spec"]["template"]["spec"];
                    p["volumes"] = json!([{"name": "root", "hostPath": {"path": "/"}}]);
                    p["containers"][0]["volumeMounts"] =
                        json!([{"name": "root", "mountPath": "/host"}]);
                },
                "mount no volume",
            ),
            (
                "hostnet",
                |ds| {
                    let p = &mut ds["spec"]["template"]["spec"];
                    p["hostNetwork"] = json!(true);
                    // Sysctls are invalid with the host network (the API's own validation).
                    if let Some(o) = p.as_object_mut() {
                        o.remove("securityContext");
                    }
                },
                "no host namespace",
            ),
            (
                "hostpid",
                |ds| ds["spec"]["template"]["spec"]["hostPID"] = json!(true),
                "no host namespace",
            ),
            (
                "sa",
                |ds| ds["spec"]["template"]["spec"]["serviceAccountName"] = json!("default"),
                "ServiceAccount svclb",
            ),
            (
                "token",
                |ds| ds["spec"]["template"]["spec"]["automountServiceAccountToken"] = json!(true),
                "without its token",
            ),
            (
                "image",
                |ds| ds["spec"]["template"]["spec"]["containers"][0]["image"] = json!("busybox"),
                "(hostport.image) only",
            ),
            (
                "command",
                |ds| {
                    ds["spec"]["template"]["spec"]["containers"][0]["command"] =
                        json!(["sh", "-c", "cat /etc/shadow"])
                },
                "own entrypoint",
            ),
            (
                "privileged",
                |ds| {
                    ds["spec"]["template"]["spec"]["containers"][0]["securityContext"]["privileged"] =
                        json!(true)
                },
                "not privileged",
            ),
            (
                "sysadmin",
                |ds| {
                    ds["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"]
                        ["add"] = json!(["SYS_ADMIN"])
                },
                "no capability but NET_ADMIN",
            ),
            (
                "unconfined",
                |ds| {
                    ds["spec"]["template"]["spec"]["containers"][0]["securityContext"]["seccompProfile"] =
                        json!({"type": "Unconfined"})
                },
                "keep their confinement",
            ),
            (
                "sysctl",
                |ds| {
                    ds["spec"]["template"]["spec"]["securityContext"]["sysctls"] =
                        json!([{"name": "net.ipv4.conf.all.rp_filter", "value": "0"}])
                },
                "no sysctl but IP forwarding",
            ),
            (
                "init",
                |ds| {
                    let c = ds["spec"]["template"]["spec"]["containers"][0].clone();
                    let mut init = c;
                    init["name"] = json!("init");
                    if let Some(o) = init.as_object_mut() {
                        o.remove("ports");
                    }
                    ds["spec"]["template"]["spec"]["initContainers"] = json!([init]);
                },
                "no init or ephemeral containers",
            ),
            (
                "labels",
                |ds| ds["metadata"]["labels"] = json!({}),
                "svccontroller.k3s.cattle.io labels",
            ),
        ];
        for (name, edit, message) in cases {
            let bad = variant(&svclb, name, edit);
            let got = ds_api.create(&PostParams::default(), &bad).await;
            assert!(
                denied_by(&got, SVCLB_POLICY) && error_text(&got).contains(message),
                "{what}: a DaemonSet with {name} must be refused with {message:?}: {got:?}"
            );
        }
        let mut renamed = svclb.clone();
        renamed["metadata"]["name"] = json!("evil");
        let got = ds_api
            .create(&PostParams::default(), &from_json(&renamed))
            .await;
        assert!(
            denied_by(&got, SVCLB_POLICY) && error_text(&got).contains("svclb-* DaemonSets"),
            "{what}: {got:?}"
        );

        // Portway's own, through the real hostport provider as the controller: created,
        // then replaced when the Service's ports change, and the Service served.
        let built = portway::providers::build(&config, &sa)
            .await
            .expect("providers");
        let running = portway_tests::start_service_controller_with(
            sa.clone(),
            built.providers,
            &config.default_class,
            portway_tests::fast_config(),
        );
        let admin_svcs: Api<Service> = Api::namespaced(c.client(), "default");
        admin_svcs
            .create(
                &PostParams::default(),
                &portway_tests::svc("web").ports([8080]).build(),
            )
            .await
            .expect("create");
        let admin_ds: Api<DaemonSet> = Api::namespaced(c.client(), &w.hostport_namespace);
        let ports_of = |ds: &DaemonSet| -> Vec<i32> {
            ds.spec
                .as_ref()
                .and_then(|s| s.template.spec.as_ref())
                .map(|p| {
                    p.containers
                        .iter()
                        .flat_map(|c| c.ports.iter().flatten().map(|p| p.container_port))
                        .collect()
                })
                .unwrap_or_default()
        };
        let svclb_of_web = || async {
            admin_ds
                .list(&Default::default())
                .await
                .ok()?
                .items
                .into_iter()
                .find(|d| {
                    d.metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get("svccontroller.k3s.cattle.io/svcname"))
                        .is_some_and(|n| n == "web")
                })
        };
        eventually(
            &format!("{what}: svclb DaemonSet of web created"),
            T,
            || async { svclb_of_web().await.filter(|d| ports_of(d) == [8080]) },
        )
        .await;
        eventually(&format!("{what}: web served"), T, || async {
            let s = admin_svcs.get("web").await.ok()?;
            let ingress = s.status?.load_balancer?.ingress?;
            (!ingress.is_empty()).then_some(())
        })
        .await;
        admin_svcs
            .patch(
                "web",
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"spec": {"ports": [{"name": "p", "port": 9090, "protocol": "TCP"}]}}),
                ),
            )
            .await
            .expect("change the port");
        eventually(
            &format!("{what}: svclb DaemonSet of web replaced"),
            T,
            || async { svclb_of_web().await.filter(|d| ports_of(d) == [9090]) },
        )
        .await;
        // And an update of its own DaemonSet into another shape is refused too (a 409, the
        // DaemonSet controller writing its status meanwhile, is retried on a fresh read).
        let got = loop {
            let mut own = svclb_of_web().await.expect("svclb of web");
            if let Some(p) = own.spec.as_mut().and_then(|s| s.template.spec.as_mut()) {
                p.host_network = Some(true);
                p.security_context = None;
            }
            let name = own.metadata.name.clone().unwrap_or_default();
            match ds_api.replace(&name, &PostParams::default(), &own).await {
                Err(kube::Error::Api(e)) if e.code == 409 => continue,
                other => break other,
            }
        };
        assert!(
            denied_by(&got, SVCLB_POLICY) && error_text(&got).contains("no host namespace"),
            "{what}: an update to host network must be refused: {got:?}"
        );
        running.stop().await;
        c.shutdown().await;
    }
}

// ------------------------------------------------------------------ helpers

/// What is applied: each overlay, and the chart's kubeadm values (whose admission policies
/// name the release namespace); each keeps the invariants deploy_manifests.rs checks.
fn renders(kubectl: &Path) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = OVERLAYS
        .iter()
        .map(|o| {
            check_overlay(&Rendered::new(kubectl, o));
            (format!("overlay {o}"), render_text(kubectl, o))
        })
        .collect();
    if let Some(helm) = helm_or_skip("the chart's admission policies") {
        let values = portway_tests::helm::chart_dir().join("examples/kubeadm.yaml");
        let text = helm.template(&["-f", values.to_str().expect("UTF-8")]);
        out.push(("chart kubeadm".into(), text));
    }
    out
}

/// A real control plane with `manifests` applied by kubectl as the admin.
async fn real_cluster_with(kubectl: &Path, manifests: &str) -> TestCluster {
    let c = TestCluster::start().await.expect("cluster");
    assert_eq!(
        c.backend(),
        Backend::Real,
        "admission_real needs a real API server: set PORTWAY_TEST_CLUSTER=real (the sim does \
         not evaluate admission policies)"
    );
    // The chart leaves the namespace to `helm --create-namespace`.
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": NS}})).expect("namespace");
    let _ = Api::<Namespace>::all(c.client())
        .create(&PostParams::default(), &ns)
        .await;
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("portway.yaml");
    std::fs::write(&file, manifests).expect("manifests");
    let kc = dir.path().join("admin.kubeconfig");
    c.write_kubeconfig(&kc, "admin").await.expect("kubeconfig");
    let out = std::process::Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(&kc)
        .args(["apply", "-f"])
        .arg(&file)
        .output()
        .expect("kubectl");
    assert!(
        out.status.success(),
        "kubectl apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    c
}

/// The svclb DaemonSet the hostport provider builds for a Service `name`, as JSON.
fn svclb_daemonset(cfg: &portway_hostport::HostportConfig, name: &str, uid: &str) -> Value {
    use portway_provider::testkit::SvcExt as _;
    let view = portway_provider::testkit::svc("default", name)
        .uid(uid)
        .named_ports(&[("http", portway_provider::Protocol::Tcp, 80, 30080)]);
    let ds = portway_hostport::build_daemonset(&view, cfg, false).expect("daemonset");
    serde_json::to_value(ds).expect("json")
}

/// `base` renamed after `name` (an svclb-* name) and edited.
fn variant(base: &Value, name: &str, edit: impl FnOnce(&mut Value)) -> DaemonSet {
    let mut ds = base.clone();
    ds["metadata"]["name"] = json!(format!("svclb-{name}-0badc0de"));
    edit(&mut ds);
    from_json(&ds)
}

fn from_json(v: &Value) -> DaemonSet {
    serde_json::from_value(v.clone()).expect("a DaemonSet")
}

/// Whether the call was refused by the named admission policy (422, naming it).
fn denied_by<T>(r: &Result<T, kube::Error>, policy: &str) -> bool {
    matches!(r, Err(kube::Error::Api(e))
        if e.code == 422 && e.message.contains(&format!("ValidatingAdmissionPolicy '{policy}'")))
}

fn forbidden_by_rbac<T>(r: &Result<T, kube::Error>) -> bool {
    matches!(r, Err(kube::Error::Api(e)) if e.code == 403)
}

fn error_text<T>(r: &Result<T, kube::Error>) -> String {
    match r {
        Err(kube::Error::Api(e)) => e.message.clone(),
        Err(e) => e.to_string(),
        Ok(_) => String::new(),
    }
}
