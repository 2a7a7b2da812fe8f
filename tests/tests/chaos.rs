//! The chaos suite (issue 19): two `portway controller` processes electing a leader on the
//! test world (`PORTWAY_TEST_CLUSTER`), hostport, l2, bgp and f5 Services created, changed
//! (ports, labels, requested addresses, LoadBalancer <-> ClusterIP, class) and deleted at
//! about ten per second, while faults hit: the leader SIGKILLed, the leader SIGSTOPped past
//! its lease, both controllers down, the API server restarted (real world) or its watches
//! dropped, expired and its writes failed (sim), BIG-IP 503 storms.
//!
//! After the churn, with the faults cleared, it checks that the cluster converges and that
//! every invariant holds; during the churn, that no VIP moved without a spec change and
//! that each controller wrote only while it held the Lease. `PORTWAY_CHAOS_SECONDS`
//! (default 90) and `PORTWAY_CHAOS_SEED` (default 19) choose the run; `scripts/chaos`
//! runs long ones. Speakers, cables and routers are the L2 and BGP labs' (see
//! RELIABILITY.md).

#[path = "chaos/checks.rs"]
mod checks;
#[path = "chaos/churn.rs"]
mod churn;
#[path = "chaos/faults.rs"]
mod faults;
#[path = "chaos/world.rs"]
mod world;

use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn churn_with_faults_converges_and_keeps_every_invariant() {
    let seconds: u64 = std::env::var("PORTWAY_CHAOS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(90);
    let seed: u64 = std::env::var("PORTWAY_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(19);
    let mut w = world::World::start().await;
    let observer = checks::Observer::start(&w);
    let leases = checks::LeaseLog::start(&w);

    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut churn = churn::Churn::new(seed, &w);
    let mut faults = faults::Faults::new(seed);
    while Instant::now() < deadline {
        churn.step(&w).await;
        faults.maybe_inject(&mut w).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    faults.clear(&mut w).await;
    let churn_ended = Instant::now();

    let report = checks::converge(&w, &churn, Duration::from_secs(120)).await;
    let moves = observer.stop().await;
    let overlaps = leases.stop(&w).await;
    let world_name = format!("{:?}", w.cluster.backend()).to_lowercase();
    println!(
        "chaos: world={world_name} seed={seed} seconds={seconds} operations={} faults={} \
         converged_in={:.1}s {} vip_moves_without_spec_change={} writes_outside_lease={}",
        churn.operations,
        faults.summary(),
        report.converged_after.map_or(f64::NAN, |d| d.as_secs_f64()),
        report.summary(),
        moves.len(),
        overlaps.len(),
    );
    let _ = churn_ended;
    let mut failures = Vec::new();
    if !report.violations.is_empty() {
        failures.push(format!(
            "invariants violated:\n{}",
            report.violations.join("\n")
        ));
    }
    if !moves.is_empty() {
        failures.push(format!(
            "VIPs moved without a spec change:\n{}",
            moves.join("\n")
        ));
    }
    if !overlaps.is_empty() {
        failures.push(format!(
            "writes by a replica that did not hold the Lease:\n{}",
            overlaps.join("\n")
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    w.stop().await;
}
