//! Rendering the kustomize overlays of `deploy/` and reading the objects back: shared by
//! the manifests' tests (deploy_manifests.rs) and the chart's (helm_chart.rs), which
//! checks the chart against the same invariants and against these renders.

use serde::Deserialize as _;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Where the manifests are.
pub(crate) fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// The overlays users apply; each must render and keep every invariant.
pub(crate) const OVERLAYS: [&str; 3] = ["k3s", "k3s-full", "kubeadm"];

/// The namespace of every Portway object except the hostport RBAC.
pub(crate) const NS: &str = "portway-system";
pub(crate) const CONTROLLER_SA: &str = "portway-controller";
pub(crate) const SPEAKER_SA: &str = "portway-speaker";

/// The kubectl to render with, or `None` (test skipped with a printed reason).
pub(crate) fn kubectl(what: &str) -> Option<PathBuf> {
    let missing = match std::env::var_os("PORTWAY_KUBECTL") {
        None => Some(
            "PORTWAY_KUBECTL is not set; run `eval \"$(scripts/install-test-deps)\"`".to_string(),
        ),
        Some(p) if !Path::new(&p).is_file() => Some(format!(
            "PORTWAY_KUBECTL={} does not exist",
            Path::new(&p).display()
        )),
        Some(_) => None,
    };
    portway_tests::privileged(what, missing).ok()?;
    std::env::var_os("PORTWAY_KUBECTL").map(PathBuf::from)
}

/// `kubectl kustomize deploy/overlays/<overlay>` as text.
pub(crate) fn render_text(kubectl: &Path, overlay: &str) -> String {
    let dir = deploy_dir().join("overlays").join(overlay);
    let out = std::process::Command::new(kubectl)
        .arg("kustomize")
        .arg(&dir)
        .output()
        .expect("run kubectl");
    assert!(
        out.status.success(),
        "kubectl kustomize {} failed:\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("kustomize prints UTF-8")
}

/// Every document of a multi-document YAML stream, as JSON values.
pub(crate) fn parse_docs(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).expect("rendered YAML parses"))
        .filter(|v| !v.is_null())
        .collect()
}

pub(crate) fn s<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

pub(crate) fn strs(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

/// The rendered objects of one overlay, with lookups.
pub(crate) struct Rendered {
    pub(crate) overlay: String,
    pub(crate) objects: Vec<Value>,
}

impl Rendered {
    pub(crate) fn new(kubectl: &Path, overlay: &str) -> Self {
        let objects = parse_docs(&render_text(kubectl, overlay));
        assert!(!objects.is_empty(), "{overlay}: nothing rendered");
        Rendered {
            overlay: overlay.to_string(),
            objects,
        }
    }

    pub(crate) fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.objects.iter().filter(move |o| s(o, "/kind") == kind)
    }

    pub(crate) fn find(&self, kind: &str, namespace: &str, name: &str) -> Option<&Value> {
        self.objects.iter().find(|o| {
            s(o, "/kind") == kind
                && s(o, "/metadata/name") == name
                && s(o, "/metadata/namespace") == namespace
        })
    }

    pub(crate) fn get(&self, kind: &str, namespace: &str, name: &str) -> &Value {
        self.find(kind, namespace, name)
            .unwrap_or_else(|| panic!("{}: no {kind} {namespace}/{name} rendered", self.overlay))
    }
}
