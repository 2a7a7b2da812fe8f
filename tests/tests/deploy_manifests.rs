//! The `deploy/` manifests: every overlay renders with the kustomize embedded in
//! Debian's kubectl 1.20 (the oldest one users are likely to hold), and what it
//! renders keeps the promises of the docs:
//!
//! - RBAC grants exactly what the code calls: the effective permissions of each
//!   ServiceAccount are computed from the rendered Roles, ClusterRoles and
//!   bindings and compared, both ways, with an allow-list derived from the code
//!   (one comment per entry naming the call). What the allow-list depends on
//!   (cloud-node controller on or off, the hostport namespace, the Lease name,
//!   Secret names) is read from the rendered args and configuration, so a
//!   manifest change that is not matched by the RBAC fails here.
//! - the controller: 2 replicas, host network, the uninitialized and
//!   control-plane tolerations, leader election, probes on the health port,
//!   flags that `portway controller` accepts;
//! - the speaker: host network and no capability but NET_RAW, metrics on loopback;
//! - the admission policies that narrow the speaker's Service patches and the
//!   controller's DaemonSets, matched to the ServiceAccounts and the configured image
//!   (what they refuse: admission_real.rs, on a real API server);
//! - the example ConfigMap parses and validates, section by section.
//!
//! The second part loads the rendered objects into the simulated API server
//! with `kubectl apply -f` and, with the sim's RBAC enforced, makes the calls
//! of each component as its ServiceAccount: allowed calls pass, neighbours of
//! them are refused with 403.
//!
//! Needs `$PORTWAY_KUBECTL` (scripts/install-test-deps); skips without it
//! unless `PORTWAY_REQUIRE_PRIVILEGED=1`. The configuration checks that need
//! no kubectl run always.

// A crate root's modules resolve next to it; these live in a folder of their own.
#[path = "deploy_manifests/checks.rs"]
mod checks;
#[path = "deploy_manifests/controller_rbac.rs"]
mod controller_rbac;
#[path = "deploy_manifests/rbac.rs"]
mod rbac;
#[path = "deploy_manifests/render.rs"]
mod render;
#[path = "deploy_manifests/sim.rs"]
mod sim;
#[path = "deploy_manifests/workloads.rs"]
mod workloads;

use checks::check_overlay;
use rbac::{Wiring, assert_same_perms, controller_allow_list, effective, perms};
use render::{CONTROLLER_SA, NS, Rendered, deploy_dir, kubectl, parse_docs};
// Re-exported to the modules of this test (`super::...`).
#[allow(unused_imports)]
use render::{OVERLAYS, SPEAKER_SA, render_text, s, strs};
use std::collections::BTreeSet;
use workloads::validate_config;

#[test]
fn every_overlay_renders_and_keeps_its_invariants() {
    let Some(kubectl) = kubectl("deploy manifests render with kubectl 1.20 kustomize") else {
        return;
    };
    for overlay in OVERLAYS {
        let r = Rendered::new(&kubectl, overlay);
        let w = check_overlay(&r);
        eprintln!("{overlay}: {} objects, {w:?}", r.objects.len());
    }
}

#[test]
fn overlays_differ_where_the_docs_say() {
    let Some(kubectl) = kubectl("deploy overlays differ as documented") else {
        return;
    };
    let wiring_of = |overlay: &str| check_overlay(&Rendered::new(&kubectl, overlay));
    let k3s = wiring_of("k3s");
    let full = wiring_of("k3s-full");
    let kubeadm = wiring_of("kubeadm");
    // docs/k3s.md option A keeps k3s's cloud controller for node init.
    assert!(!k3s.cloud_node);
    assert!(full.cloud_node && kubeadm.cloud_node);
    // svclb DaemonSets out of kube-system in every overlay (issue 20: creating workloads
    // in kube-system is close to cluster-admin), k3s-full included.
    assert_eq!(k3s.hostport_namespace, NS);
    assert_eq!(full.hostport_namespace, NS);
    assert_eq!(kubeadm.hostport_namespace, NS);
    for w in [&k3s, &full, &kubeadm] {
        assert_eq!(w.lease_namespace, NS);
        assert_eq!(w.lease_name, "portway-controller");
    }
}

/// A rule too many or too few is caught: the checker itself can fail.
#[test]
fn the_rbac_check_catches_an_extra_and_a_missing_rule() {
    let w = Wiring {
        cloud_node: true,
        lease_namespace: NS.into(),
        lease_name: "portway-controller".into(),
        hostport_namespace: NS.into(),
        hostport: true,
        speaker: true,
        f5_secret: (NS.into(), "bigip".into()),
        bgp_secrets: BTreeSet::from([(NS.to_string(), "bgp-auth".to_string())]),
    };
    let text = std::fs::read_to_string(deploy_dir().join("base/rbac-controller.yaml"))
        .expect("read rbac-controller.yaml")
        + "---\n"
        + &std::fs::read_to_string(deploy_dir().join("hostport-rbac/portway-system/rbac.yaml"))
            .expect("read hostport rbac");
    let r = Rendered {
        overlay: "base files".into(),
        objects: parse_docs(&text),
    };
    let granted = effective(&r, CONTROLLER_SA);
    let needed = controller_allow_list(&w);
    assert_eq!(granted, needed, "the base files are the kubeadm RBAC");

    let mut extra = granted.clone();
    extra.extend(perms("", "secrets", &["list"], None, None));
    assert!(std::panic::catch_unwind(|| assert_same_perms("t", "c", &extra, &needed)).is_err());
    let mut missing = granted.clone();
    missing.retain(|p| p.resource != "services/status");
    assert!(std::panic::catch_unwind(|| assert_same_perms("t", "c", &missing, &needed)).is_err());
    // Without the cloud node controller, node writes become extra.
    let k3s = Wiring {
        cloud_node: false,
        ..w
    };
    assert!(
        std::panic::catch_unwind(|| assert_same_perms(
            "t",
            "c",
            &granted,
            &controller_allow_list(&k3s)
        ))
        .is_err()
    );
}

/// The configuration file of deploy/ (every overlay's, since k3s-full keeps svclb in
/// portway-system too) is valid without kubectl too.
#[test]
fn deploy_config_files_are_valid() {
    let rel = "base/config.yaml";
    let path = deploy_dir().join(rel);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let config = validate_config(rel, &text);
    assert_eq!(config.default_class, "portway.dev/hostport", "{rel}");
}

/// The complete example of docs/configuration.md is valid, so the page
/// cannot drift from the parser.
#[test]
fn configuration_doc_example_is_valid() {
    let path = deploy_dir().join("../docs/configuration.md");
    let doc = std::fs::read_to_string(&path).expect("read docs/configuration.md");
    let marker = "<!-- example: full -->";
    let after = doc
        .split_once(marker)
        .map(|(_, rest)| rest)
        .expect("docs/configuration.md has the full-example marker");
    let block = after
        .split_once("```yaml\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .map(|(block, _)| block)
        .expect("a yaml block follows the marker");
    let config = validate_config("docs/configuration.md full example", block);
    assert!(config.l2.is_some() && config.bgp.is_some() && config.f5.is_some());
    let keys: serde_json::Value = serde_yaml::from_str(block).expect("yaml");
    for section in [
        "pools",
        "hostport",
        "l2",
        "bgp",
        "f5",
        "serviceController",
        "nodes",
    ] {
        assert!(
            keys.get(section).is_some(),
            "the full example shows every section: {section} is missing"
        );
    }
}
