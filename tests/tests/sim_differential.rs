//! The differential test of the simulated API server: one corpus of requests
//! (`sim_differential/corpus.yaml`) sent to `portway-sim` and to the real kube-apiserver of
//! `tests/cluster/` (v1.37.2), step by step; each pair of responses is normalized
//! (`sim_differential/normalize.rs`: uids, timestamps, resourceVersions, generated names,
//! cluster IPs and node ports by shape) and compared, status code, media type and `Warning`
//! headers included. Any difference fails the test with both bodies shown.
//!
//! The real server is the judge: a difference is a bug of the sim, fixed there, or a
//! difference the README lists as an approximation, marked here in the step that shows it.
//!
//! It starts its own real control plane, so it needs the `real-cluster` feature and runs in
//! the real pass of `scripts/test`: where the control plane is missing
//! (`PORTWAY_CLUSTER_BIN` unset) it skips locally and fails under
//! `PORTWAY_REQUIRE_PRIVILEGED=1`.

#[path = "sim_differential/corpus.rs"]
mod corpus;
#[path = "sim_differential/normalize.rs"]
mod normalize;

use corpus::{Exchange, Step};
use portway_sim::SimCluster;
use portway_tests::real::{RealCluster, RealOptions};
use std::collections::BTreeMap;

const CORPUS: &str = include_str!("sim_differential/corpus.yaml");
/// The custom resources part: a CRD of the corpus's own (status subresource, printer
/// columns, a default, an enum, a pattern, CEL rules on CIDRs), its objects, its deletion.
const CRD_CORPUS: &str = include_str!("sim_differential/crd.yaml");

/// One server under test with the variables its responses gave (`save:`).
struct Side<'a> {
    name: &'static str,
    client: kube::Client,
    vars: BTreeMap<String, String>,
    world: World<'a>,
}

/// The server behind a side, for the steps that act on the cluster (`compact`).
enum World<'a> {
    Sim(&'a SimCluster),
    Real(&'a RealCluster),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_answers_like_kube_apiserver() {
    differential("corpus", CORPUS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_serves_custom_resources_like_kube_apiserver() {
    differential("crd", CRD_CORPUS).await;
}

/// Sends the corpus `text` to a sim and to a real server and fails on any difference; the
/// report is also written to `target/sim-differential-<name>.txt`.
async fn differential(name: &str, text: &str) {
    let missing = match std::env::var("PORTWAY_CLUSTER_BIN") {
        Ok(dir) if std::path::Path::new(&dir).join("kube-apiserver").exists() => None,
        Ok(dir) => Some(format!("PORTWAY_CLUSTER_BIN={dir} has no kube-apiserver")),
        Err(_) => Some("PORTWAY_CLUSTER_BIN is not set (scripts/cluster build)".to_string()),
    };
    if portway_tests::privileged("the sim/kube-apiserver differential test", missing).is_err() {
        return;
    }
    let steps: Vec<Step> = serde_yaml::from_str(text).expect("the corpus parses");
    let stats = corpus::stats(&steps);
    eprintln!("corpus: {stats}");
    let (sim, real) = tokio::join!(
        SimCluster::builder().history(corpus::SIM_HISTORY).start(),
        RealCluster::start(RealOptions::default())
    );
    let sim = sim.expect("sim starts");
    let real = real.expect("real control plane starts");
    let mut sides = [
        Side {
            name: "sim",
            client: sim.client(),
            vars: BTreeMap::new(),
            world: World::Sim(&sim),
        },
        Side {
            name: "real",
            client: real.client(),
            vars: BTreeMap::new(),
            world: World::Real(&real),
        },
    ];
    let mut failures = Vec::new();
    let mut summary = Vec::new();
    for step in &steps {
        let [s, r] = &mut sides;
        let (a, b) = tokio::join!(corpus::run(step, s), corpus::run(step, r));
        match (a, b) {
            (Ok(a), Ok(b)) => {
                if let Some((paths, diff)) = compare(step, &a, &b) {
                    summary.push(format!("  {:?}: {paths}", step.name));
                    failures.push(diff);
                }
            }
            (a, b) => {
                summary.push(format!("  {:?}: could not run", step.name));
                failures.push(format!(
                    "step {:?} could not run:\n  sim: {:?}\n  real: {:?}",
                    step.name,
                    a.err(),
                    b.err()
                ))
            }
        }
    }
    drop(sides);
    sim.shutdown().await;
    drop(real);
    let report = format!(
        "{} of {} steps differ between the sim and kube-apiserver ({stats}):\n{}\n\n{}",
        failures.len(),
        steps.len(),
        summary.join("\n"),
        failures.join("\n\n")
    );
    // The whole report, for reading beside the test's output.
    let _ = std::fs::write(
        portway_tests::real::workspace_root().join(format!("target/sim-differential-{name}.txt")),
        &report,
    );
    assert!(failures.is_empty(), "{report}");
}

/// Compares the normalized exchanges: `None` when equal, else the differing paths and the
/// report with both answers.
fn compare(step: &Step, sim: &Exchange, real: &Exchange) -> Option<(String, String)> {
    let mut problems = Vec::new();
    if let Some(want) = step.status
        && real.status != want
    {
        problems.push(format!(
            "the real server answered {} where the corpus expects {want}: the corpus is wrong",
            real.status
        ));
    }
    let a = normalize::exchange(step, sim);
    let b = normalize::exchange(step, real);
    let paths = normalize::differing_paths(&a, &b);
    if a != b {
        problems.push(format!(
            "differs at {paths:?}\n--- sim:\n{}\n--- real:\n{}",
            serde_json::to_string_pretty(&a).unwrap_or_default(),
            serde_json::to_string_pretty(&b).unwrap_or_default()
        ));
    }
    (!problems.is_empty()).then(|| {
        (
            format!("{paths:?}"),
            format!("step {:?}: {}", step.name, problems.join("\n")),
        )
    })
}
