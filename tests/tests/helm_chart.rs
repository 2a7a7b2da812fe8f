//! The Helm chart (`deploy/helm/portway`) with the real helm binary (built from its Go
//! module by `scripts/helm build`):
//!
//! - `helm lint --strict` of the chart and of every documented values file
//!   (`deploy/helm/portway/examples/*.yaml`, each named in docs/helm.md);
//! - `helm template` of each of them keeps every invariant the kustomize overlays keep
//!   (tests/tests/deploy_manifests/checks.rs: workloads, the configuration both components
//!   read, RBAC that grants exactly what the code calls for that configuration);
//! - one source of truth: the values files of the three flavours render the same RBAC
//!   (effective permissions of each ServiceAccount), the same configuration, the same pod
//!   specs and the same objects as `kubectl kustomize deploy/overlays/<flavour>`;
//! - every key of docs/configuration.md is reachable under `config:` with the same name;
//! - `values.schema.json` refuses bad values naming the key.
//!
//! The install, upgrade and uninstall on the real control plane are in helm_e2e.rs. Needs
//! helm and `$PORTWAY_KUBECTL`; skips without them unless `PORTWAY_REQUIRE_PRIVILEGED=1`.

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
use portway_tests::helm::{Helm, chart_dir, helm_or_skip};
use rbac::effective;
#[allow(unused_imports)] // used by the modules above through `super::`
use render::{
    CONTROLLER_SA, NS, OVERLAYS, Rendered, SPEAKER_SA, deploy_dir, kubectl, parse_docs, s, strs,
};
use serde_json::Value;
use std::collections::BTreeSet;
use workloads::{container, controller_args, mounted_config};

/// The documented values files, and the overlay each one must equal.
const EXAMPLES: [(&str, Option<&str>); 6] = [
    ("kubeadm", Some("kubeadm")),
    ("k3s", Some("k3s")),
    ("k3s-full", Some("k3s-full")),
    ("bgp", None),
    ("hostport-only", None),
    ("full", None),
];

fn example(name: &str) -> String {
    chart_dir()
        .join("examples")
        .join(format!("{name}.yaml"))
        .to_str()
        .expect("UTF-8 path")
        .to_string()
}

/// `helm template` with these extra arguments, as rendered objects.
fn chart(helm: &Helm, what: &str, extra: &[&str]) -> Rendered {
    let objects = parse_docs(&helm.template(extra));
    assert!(!objects.is_empty(), "{what}: nothing rendered");
    Rendered {
        overlay: format!("chart {what}"),
        objects,
    }
}

/// A documented values file rendered for a cluster that has the Prometheus Operator's
/// ServiceMonitor (full.yaml enables one).
fn chart_example(helm: &Helm, name: &str) -> Rendered {
    let api = "monitoring.coreos.com/v1/ServiceMonitor";
    chart(helm, name, &["-f", &example(name), "--api-versions", api])
}

#[test]
fn the_examples_are_the_documented_values_files() {
    let on_disk: BTreeSet<String> = std::fs::read_dir(chart_dir().join("examples"))
        .expect("examples/")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(".yaml")
                .map(String::from)
        })
        .collect();
    let listed: BTreeSet<String> = EXAMPLES.iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(
        on_disk, listed,
        "every values file is tested, and only those"
    );
    let doc = std::fs::read_to_string(deploy_dir().join("../docs/helm.md")).expect("docs/helm.md");
    for name in listed {
        assert!(
            doc.contains(&format!("examples/{name}.yaml")),
            "docs/helm.md does not document examples/{name}.yaml"
        );
    }
}

#[test]
fn helm_lint_passes_for_the_chart_and_every_values_file() {
    let Some(helm) = helm_or_skip("helm lint") else {
        return;
    };
    let dir = chart_dir();
    let dir = dir.to_str().expect("UTF-8 path");
    let out = helm.ok(None, &["lint", "--strict", dir]);
    assert!(out.contains("0 chart(s) failed"), "{out}");
    for (name, _) in EXAMPLES {
        let out = helm.ok(None, &["lint", "--strict", dir, "-f", &example(name)]);
        assert!(out.contains("0 chart(s) failed"), "{name}: {out}");
    }
}

#[test]
fn every_values_file_renders_and_keeps_the_invariants_of_the_overlays() {
    let Some(helm) = helm_or_skip("helm template") else {
        return;
    };
    for (name, _) in EXAMPLES {
        let r = chart_example(&helm, name);
        let w = check_objects(&r);
        eprintln!("{name}: {} objects, {w:?}", r.objects.len());
        for o in &r.objects {
            // Helm installs crds/ verbatim, never templated: the CRDs cannot carry the
            // release's labels (and are compared with the overlays' CRDs instead).
            if s(o, "/kind") == "CustomResourceDefinition" {
                continue;
            }
            assert_eq!(
                s(o, "/metadata/labels/app.kubernetes.io~1managed-by"),
                "Helm",
                "{name}: {} {} lacks the chart's labels",
                s(o, "/kind"),
                s(o, "/metadata/name")
            );
        }
    }
    // What the files choose shows in the render.
    let hostport_only = chart_example(&helm, "hostport-only");
    assert!(
        hostport_only
            .find("DaemonSet", NS, "portway-speaker")
            .is_none()
    );
    assert!(effective(&hostport_only, SPEAKER_SA).is_empty());
    let full = chart_example(&helm, "full");
    let deploy = full.get("Deployment", NS, "portway-controller");
    assert_eq!(deploy.pointer("/spec/replicas"), Some(&Value::from(3)));
    let args = controller_args(deploy);
    assert_eq!(args.leader_elect_resource_name, "portway-ccm");
    assert_eq!(
        s(container(deploy, "controller"), "/image"),
        "registry.example.net/mirror/portway:0.1.0"
    );
}

/// The part of a workload that must not differ between chart and overlay: its spec, but
/// for the pod template's labels and annotations (the chart adds its own) and the
/// ConfigMap's name (kustomize adds a content hash; the chart a checksum annotation).
fn workload_spec(r: &Rendered, kind: &str, name: &str) -> Value {
    let mut spec = r
        .get(kind, NS, name)
        .get("spec")
        .cloned()
        .unwrap_or(Value::Null);
    if let Some(t) = spec.get_mut("template").and_then(Value::as_object_mut) {
        t.remove("metadata");
    }
    if let Some(volumes) = spec
        .pointer_mut("/template/spec/volumes")
        .and_then(Value::as_array_mut)
    {
        for v in volumes {
            if let Some(cm) = v.pointer_mut("/configMap/name") {
                *cm = Value::from("portway-config");
            }
        }
    }
    spec
}

/// The objects, by kind, namespace and name (the ConfigMap's hash suffix dropped).
fn inventory(r: &Rendered) -> BTreeSet<(String, String, String)> {
    r.objects
        .iter()
        .map(|o| {
            let name = s(o, "/metadata/name");
            let name = if s(o, "/kind") == "ConfigMap" {
                name.split_once("portway-config")
                    .map_or(name, |_| "portway-config")
            } else {
                name
            };
            (
                s(o, "/kind").to_string(),
                s(o, "/metadata/namespace").to_string(),
                name.to_string(),
            )
        })
        .collect()
}

/// The configuration file a rendered controller reads, as data.
fn config_of(r: &Rendered) -> Value {
    let deploy = r.get("Deployment", NS, "portway-controller");
    let args = controller_args(deploy);
    let path = args.config.expect("--config");
    let text = mounted_config(
        r,
        deploy,
        container(deploy, "controller"),
        path.to_str().expect("UTF-8"),
    );
    serde_yaml::from_str(text).expect("the configuration is YAML")
}

#[test]
fn the_chart_and_the_overlays_render_the_same_rbac_configuration_and_workloads() {
    let Some(helm) = helm_or_skip("chart and overlays agree") else {
        return;
    };
    let Some(kubectl) = kubectl("chart and overlays agree") else {
        return;
    };
    for overlay in OVERLAYS {
        assert!(
            EXAMPLES.iter().any(|(_, o)| *o == Some(overlay)),
            "the overlay {overlay} has no values file of the chart"
        );
    }
    for (name, overlay) in EXAMPLES {
        let Some(overlay) = overlay else { continue };
        let c = chart_example(&helm, name);
        let k = Rendered::new(&kubectl, overlay);
        // Both keep every invariant, so comparing them compares two correct renders.
        check_overlay(&k);
        check_objects(&c);
        for sa in [CONTROLLER_SA, SPEAKER_SA] {
            let (from_chart, from_overlay) = (effective(&c, sa), effective(&k, sa));
            assert_eq!(
                from_chart,
                from_overlay,
                "{name}: {sa}'s permissions differ; chart only: {:?}; overlay only: {:?}",
                from_chart.difference(&from_overlay).collect::<Vec<_>>(),
                from_overlay.difference(&from_chart).collect::<Vec<_>>()
            );
        }
        assert_eq!(
            config_of(&c),
            config_of(&k),
            "{name}: the configuration files differ"
        );
        for (kind, wname) in [
            ("Deployment", "portway-controller"),
            ("DaemonSet", "portway-speaker"),
        ] {
            assert_eq!(
                workload_spec(&c, kind, wname),
                workload_spec(&k, kind, wname),
                "{name}: the {kind} {wname} differs"
            );
        }
        // The admission policies are the same policies, rule for rule.
        for kind in [
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
        ] {
            for o in k.of_kind(kind) {
                let n = s(o, "/metadata/name");
                assert_eq!(
                    c.get(kind, "", n).get("spec"),
                    o.get("spec"),
                    "{name}: the {kind} {n} differs"
                );
            }
        }
        // Same objects, but for what each way of installing does on its own: the overlay
        // makes the namespace, the chart the metrics Services.
        let mut chart_objects = inventory(&c);
        chart_objects.retain(|(kind, _, n)| !(kind == "Service" && n.ends_with("-metrics")));
        let mut overlay_objects = inventory(&k);
        overlay_objects.retain(|(kind, _, _)| kind != "Namespace");
        assert_eq!(chart_objects, overlay_objects, "{name}: the objects differ");
    }
}

/// A drift is caught: the comparison fails when the chart grants one verb more.
#[test]
fn the_comparison_catches_a_drifted_rule() {
    let Some(helm) = helm_or_skip("chart drift is caught") else {
        return;
    };
    let mut c = chart_example(&helm, "kubeadm");
    let before = effective(&c, CONTROLLER_SA);
    for o in c.objects.iter_mut() {
        if s(o, "/kind") == "ClusterRole"
            && s(o, "/metadata/name") == "portway-controller"
            && let Some(rules) = o.get_mut("rules").and_then(Value::as_array_mut)
        {
            rules.push(
                serde_json::json!({"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]}),
            );
        }
    }
    assert_ne!(effective(&c, CONTROLLER_SA), before);
    assert!(std::panic::catch_unwind(|| check_objects(&c)).is_err());
}

/// docs/configuration.md's complete example, given as `config`, is the file the chart
/// renders: every key is reachable under its own name, nothing renamed or dropped.
#[test]
fn every_key_of_the_configuration_doc_is_reachable_under_config() {
    let Some(helm) = helm_or_skip("configuration keys reachable") else {
        return;
    };
    let doc = std::fs::read_to_string(deploy_dir().join("../docs/configuration.md"))
        .expect("docs/configuration.md");
    let block = doc
        .split_once("<!-- example: full -->")
        .and_then(|(_, rest)| rest.split_once("```yaml\n"))
        .and_then(|(_, rest)| rest.split_once("```"))
        .map(|(block, _)| block)
        .expect("the full example");
    let example: Value = serde_yaml::from_str(block).expect("YAML");
    let dir = tempfile::tempdir().expect("tmp");
    let values = dir.path().join("values.yaml");
    std::fs::write(
        &values,
        serde_json::to_string(&serde_json::json!({"config": example})).expect("JSON"),
    )
    .expect("write");
    let r = chart(
        &helm,
        "docs example",
        &["-f", values.to_str().expect("UTF-8")],
    );
    assert_eq!(config_of(&r), example);
    check_objects(&r);
}

/// Turning the hostport class off drops its Role (least privilege), and the checker agrees.
#[test]
fn hostport_off_may_only_remove_svclb_daemonsets() {
    let Some(helm) = helm_or_skip("hostport off") else {
        return;
    };
    // hostport off needs another default class (check-config refuses otherwise).
    let r = chart(
        &helm,
        "hostport off",
        &[
            "-f",
            &example("bgp"),
            "--set",
            "config.hostport.enabled=false",
        ],
    );
    let w = check_objects(&r);
    assert!(!w.hostport);
    let role = r
        .of_kind("Role")
        .find(|o| s(o, "/metadata/name") == "portway-hostport")
        .expect("the Role that removes what hostport left");
    assert_eq!(
        role["rules"],
        serde_json::json!([{"apiGroups": ["apps"], "resources": ["daemonsets"],
            "verbs": ["list", "delete"]}]),
        "no create, update or pods when hostport is off"
    );
}

/// The ServiceMonitor: refused with the reason when its CRD is missing, and selecting both
/// metrics Services' ports when it is there.
#[test]
fn the_service_monitor_needs_its_crd_and_scrapes_both_components() {
    let Some(helm) = helm_or_skip("ServiceMonitor") else {
        return;
    };
    let dir = chart_dir();
    let args = [
        "template",
        "portway",
        dir.to_str().expect("UTF-8"),
        "--set",
        "metrics.serviceMonitor.enabled=true",
        "--set",
        "metrics.service.enabled=true",
    ];
    let out = helm.run(None, &args);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("metrics.serviceMonitor.enabled") && err.contains("CRD"),
        "{err}"
    );
    let r = chart(
        &helm,
        "ServiceMonitor",
        &[
            "--set",
            "metrics.serviceMonitor.enabled=true",
            "--set",
            "metrics.service.enabled=true",
            "--api-versions",
            "monitoring.coreos.com/v1/ServiceMonitor",
        ],
    );
    let sm = r.get("ServiceMonitor", NS, "portway");
    let ports: BTreeSet<String> = sm
        .pointer("/spec/endpoints")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|e| s(e, "/port").to_string())
        .collect();
    for (svc, workload, kind) in [
        (
            "portway-controller-metrics",
            "portway-controller",
            "Deployment",
        ),
        ("portway-speaker-metrics", "portway-speaker", "DaemonSet"),
    ] {
        let service = r.get("Service", NS, svc);
        for (k, v) in service
            .pointer("/spec/selector")
            .and_then(Value::as_object)
            .expect("selector")
        {
            let labels = r
                .get(kind, NS, workload)
                .pointer("/spec/template/metadata/labels")
                .expect("pod labels");
            assert_eq!(labels.get(k), Some(v), "{svc} selects {workload}'s pods");
        }
        let port = service.pointer("/spec/ports/0").expect("a port");
        assert!(ports.contains(s(port, "/name")), "{svc}: port not scraped");
        let c = r
            .get(kind, NS, workload)
            .pointer("/spec/template/spec/containers/0/ports")
            .and_then(Value::as_array)
            .expect("container ports")
            .iter()
            .find(|p| s(p, "/name") == s(port, "/targetPort"))
            .unwrap_or_else(|| panic!("{svc}: targetPort is not a container port"))
            .clone();
        assert_eq!(c.get("containerPort"), port.get("port"), "{svc}");
        for (m, l) in sm
            .pointer("/spec/selector/matchLabels")
            .and_then(Value::as_object)
            .expect("matchLabels")
        {
            assert_eq!(
                service.pointer(&format!("/metadata/labels/{}", m.replace('/', "~1"))),
                Some(l)
            );
        }
    }
}

/// Bad values are refused before anything is applied, naming the key (`helm install` runs
/// the same schema check; helm_e2e.rs shows it against the real API server).
#[test]
fn bad_values_are_refused_naming_the_key() {
    let Some(helm) = helm_or_skip("values schema") else {
        return;
    };
    let dir = chart_dir();
    for (set, key) in [
        ("cluster=k8s", "/cluster"),
        ("controller.replicas=two", "/controller/replicas"),
        (
            "config.sevriceController.minRetryDelay=5s",
            "sevriceController",
        ),
        (
            "config.pools[0].addresses=192.168.1.0/24",
            "/config/pools/0/addresses",
        ),
        ("config.l2.gossipPort=70000", "/config/l2/gossipPort"),
        (
            "config.serviceController.minRetryDelay=5",
            "/config/serviceController/minRetryDelay",
        ),
        ("config.defaultClass=portway.dev/l3", "/config/defaultClass"),
        ("speaker.nodeSelecter.a=b", "nodeSelecter"),
        (
            "controller.leaderElection.leaseDuration=soon",
            "/controller/leaderElection/leaseDuration",
        ),
        // Two replicas without leader election would fight: refused with the fix.
        (
            "controller.leaderElection.enabled=false",
            "controller.replicas",
        ),
    ] {
        let out = helm.run(
            None,
            &[
                "template",
                "portway",
                dir.to_str().expect("UTF-8"),
                "--set",
                set,
            ],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{set} was accepted");
        assert!(
            err.contains(key),
            "{set}: the error does not name {key}:\n{err}"
        );
    }
}
