//! Helm for the chart tests (`deploy/helm/portway`): the binary built from its Go module by
//! `scripts/helm build` (tests/helm/, cached under `target/helm/`), or `PORTWAY_HELM`.
//!
//! Helm is an interop prerequisite like gobgpd or kubectl: a machine that cannot build it
//! skips the chart tests with a message, and under `PORTWAY_REQUIRE_PRIVILEGED=1` (CI) they
//! fail instead.

use crate::real::workspace_root;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// The helm binary: `PORTWAY_HELM`, or `scripts/helm build` (once per test process; a cold
/// build takes a few minutes).
pub fn helm_bin() -> Result<PathBuf, String> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("PORTWAY_HELM") {
            let p = PathBuf::from(p);
            return if p.is_file() {
                Ok(p)
            } else {
                Err(format!("PORTWAY_HELM={} does not exist", p.display()))
            };
        }
        let out = Command::new(workspace_root().join("scripts/helm"))
            .arg("build")
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("running scripts/helm build: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "scripts/helm build failed ({}); see its output above",
                out.status
            ));
        }
        Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    })
    .clone()
}

/// Helm for a test named `what`, or `None` after printing why it is skipped; panics under
/// `PORTWAY_REQUIRE_PRIVILEGED=1` when helm cannot be had.
pub fn helm_or_skip(what: &str) -> Option<Helm> {
    let bin = helm_bin();
    crate::privileged(what, bin.as_ref().err().cloned()).ok()?;
    bin.ok().map(Helm::new)
}

/// The chart's directory.
pub fn chart_dir() -> PathBuf {
    workspace_root().join("deploy/helm/portway")
}

/// A helm binary with a private home (no user's repositories, caches or plugins leak in).
#[derive(Debug, Clone)]
pub struct Helm {
    bin: PathBuf,
    home: PathBuf,
}

impl Helm {
    /// Helm at `bin`, its config and cache under `target/helm/home/`.
    pub fn new(bin: PathBuf) -> Helm {
        let home = workspace_root().join("target/helm/home");
        Helm { bin, home }
    }

    /// `helm ARGS` with an optional kubeconfig; the output whatever the exit status.
    pub fn run(&self, kubeconfig: Option<&Path>, args: &[&str]) -> Output {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args)
            .env("HELM_CONFIG_HOME", self.home.join("config"))
            .env("HELM_CACHE_HOME", self.home.join("cache"))
            .env("HELM_DATA_HOME", self.home.join("data"))
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null());
        if let Some(kc) = kubeconfig {
            cmd.arg("--kubeconfig").arg(kc);
        }
        cmd.output()
            .unwrap_or_else(|e| panic!("running {}: {e}", self.bin.display()))
    }

    /// `helm ARGS`, which must succeed; its standard output.
    pub fn ok(&self, kubeconfig: Option<&Path>, args: &[&str]) -> String {
        let out = self.run(kubeconfig, args);
        assert!(
            out.status.success(),
            "helm {} failed ({}):\n{}\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `helm template portway CHART -n portway-system --include-crds EXTRA...`: the rendered
    /// manifests, the chart's crds/ included so they are compared with the overlays' too.
    pub fn template(&self, extra: &[&str]) -> String {
        let chart = chart_dir();
        let chart = chart.to_str().expect("UTF-8 path");
        let mut args = vec![
            "template",
            "portway",
            chart,
            "-n",
            "portway-system",
            "--include-crds",
        ];
        args.extend_from_slice(extra);
        self.ok(None, &args)
    }
}
