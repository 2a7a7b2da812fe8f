//! L2 failover benchmark: the owner of the VIPs crashes (speaker and server
//! SIGKILLed at once); how long until a TCP connection from the router
//! through the VIP is answered by the new owner, and how much of that is the
//! gossip's failure detection.
//!
//! Runs `PORTWAY_L2_BENCH_RUNS` rounds (default 5; BENCH-l2.md uses 20) in
//! the lab of `l2_interop` and prints p50/p99. Like every benchmark here it
//! asserts behaviour (the new owner is reached, the router's neighbour cache
//! holds its MAC), never a time.
//!
//! ```text
//! PORTWAY_L2_BENCH_RUNS=20 cargo test -p portway-tests --test l2_failover_bench -- --nocapture
//! ```

mod l2_lab;

use l2_lab::{Lab, VIP4, VIP6};
use std::time::Duration;

fn percentile(sorted: &[i64], p: f64) -> i64 {
    // Nearest rank.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

fn summary(name: &str, mut v: Vec<i64>) -> String {
    v.sort_unstable();
    format!(
        "{name:<34} n={:<3} p50={:>4} ms  p99={:>4} ms  min={:>4} ms  max={:>4} ms",
        v.len(),
        percentile(&v, 50.0),
        percentile(&v, 99.0),
        v[0],
        v[v.len() - 1]
    )
}

#[test]
fn failover_time_after_an_owner_crash() {
    let runs: usize = std::env::var("PORTWAY_L2_BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let Some(mut lab) = Lab::start("bench") else {
        return;
    };
    let p4 = lab.prober(VIP4);
    let p6 = lab.prober(VIP6);
    let (mut tcp4, mut tcp6, mut detect, mut takeover) = (vec![], vec![], vec![], vec![]);
    for run in 0..runs {
        let owner = lab.wait_owner(VIP4, Duration::from_secs(5)).expect("owner");
        let name = Lab::name(owner);
        assert!(
            lab.wait(Duration::from_secs(5), || p4.last_ok().as_deref()
                == Some(name.as_str())
                && p6.last_ok().as_deref() == Some(name.as_str())),
            "run {run}: probers reach the owner {name} before the crash"
        );
        let t0 = l2_lab::now_ms();
        lab.kill_node_processes(owner);
        let new = lab
            .wait_owner_except(VIP4, owner, Duration::from_secs(5))
            .expect("new owner");
        let new_name = Lab::name(new);
        let mut ok4 = None;
        let mut ok6 = None;
        assert!(
            lab.wait(Duration::from_secs(5), || {
                ok4 = p4.first_ok_from(t0, &new_name);
                ok6 = p6.first_ok_from(t0, &new_name);
                ok4.is_some() && ok6.is_some()
            }),
            "run {run}: TCP through the VIPs reaches {new_name}"
        );
        assert_eq!(
            lab.neigh(VIP4),
            Some(Lab::mac(new)),
            "run {run}: router's ARP cache"
        );
        assert_eq!(
            lab.neigh(VIP6),
            Some(Lab::mac(new)),
            "run {run}: router's neighbour cache"
        );
        let down = [1, 2, 3]
            .into_iter()
            .filter(|k| *k != owner)
            .filter_map(|k| lab.first_line_after(k, t0, &format!("member_down name={name}")))
            .map(|(t, _)| t - t0)
            .min()
            .expect("a survivor logged the departure");
        let taken = lab
            .first_line_after(new, t0, &format!("takeover ip={VIP4}"))
            .expect("takeover")
            .0
            - t0;
        let (f4, f6) = (ok4.unwrap_or(0) - t0, ok6.unwrap_or(0) - t0);
        println!(
            "run {run:>2}: {name} -> {new_name}: detection {down} ms, takeover {taken} ms, TCP v4 {f4} ms, v6 {f6} ms"
        );
        tcp4.push(f4);
        tcp6.push(f6);
        detect.push(down);
        takeover.push(taken);
        // Bring the node back; it takes its VIPs back (it wins the hash).
        lab.start_server(owner);
        lab.start_speaker(owner);
        assert!(
            lab.wait(Duration::from_secs(5), || [1, 2, 3]
                .iter()
                .all(|k| lab.live_count(*k) == 3)),
            "run {run}: cluster re-formed"
        );
        std::thread::sleep(Duration::from_millis(1500)); // let the takeover burst finish
    }
    println!("\nL2 failover, 3 speakers, owner SIGKILLed (speaker + server), {runs} runs:");
    println!("{}", summary("detection (kill -> member_down)", detect));
    println!(
        "{}",
        summary("takeover (kill -> takeover logged)", takeover)
    );
    println!("{}", summary("failover IPv4 (kill -> TCP ok)", tcp4));
    println!("{}", summary("failover IPv6 (kill -> TCP ok)", tcp6));
}

/// Issue 24, item 3: the owner's data link dies while the node lives (its gossip runs on
/// a management network, so the failure detector sees nothing). From the cut to the
/// takeover and to the first TCP answer through the VIP from the new owner.
#[test]
fn failover_time_after_the_owner_loses_its_link() {
    let runs: usize = std::env::var("PORTWAY_L2_BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let Some(lab) = Lab::start_with_mgmt("blink") else {
        return;
    };
    let p4 = lab.prober(VIP4);
    let (mut released, mut takeover, mut tcp4) = (vec![], vec![], vec![]);
    for run in 0..runs {
        let owner = lab.wait_owner(VIP4, Duration::from_secs(5)).expect("owner");
        let name = Lab::name(owner);
        assert!(
            lab.wait(Duration::from_secs(5), || p4.last_ok().as_deref()
                == Some(name.as_str())),
            "run {run}: the prober reaches the owner {name} before the cut"
        );
        let t0 = l2_lab::now_ms();
        lab.set_link(owner, false);
        let new = lab
            .wait_owner_except(VIP4, owner, Duration::from_secs(5))
            .expect("new owner");
        let new_name = Lab::name(new);
        let mut ok4 = None;
        assert!(
            lab.wait(Duration::from_secs(5), || {
                ok4 = p4.first_ok_from(t0, &new_name);
                ok4.is_some()
            }),
            "run {run}: TCP through the VIP reaches {new_name}"
        );
        let rel = lab
            .first_line_after(owner, t0, &format!("release ip={VIP4}"))
            .expect("the cut node released")
            .0
            - t0;
        let taken = lab
            .first_line_after(new, t0, &format!("takeover ip={VIP4}"))
            .expect("takeover")
            .0
            - t0;
        let f4 = ok4.unwrap_or(0) - t0;
        println!(
            "run {run:>2}: {name} -> {new_name}: released {rel} ms, takeover {taken} ms, TCP v4 {f4} ms"
        );
        released.push(rel);
        takeover.push(taken);
        tcp4.push(f4);
        lab.set_link(owner, true);
        assert!(
            lab.wait_owner_is(VIP4, owner, Duration::from_secs(5)),
            "run {run}: the owner took the VIP back with its link"
        );
        std::thread::sleep(Duration::from_millis(1500));
    }
    println!("\nL2 failover, 3 speakers, the owner's data link cut (gossip on eth1), {runs} runs:");
    println!("{}", summary("release (cut -> released)", released));
    println!("{}", summary("takeover (cut -> takeover logged)", takeover));
    println!("{}", summary("failover IPv4 (cut -> TCP ok)", tcp4));
}

/// Issue 21, item 4: 1,000 VIPs on the crashed node, not one. From the kill to the last
/// of its VIPs taken over by a survivor (all of them announced elsewhere).
#[test]
fn failover_time_with_a_thousand_vips_on_the_failed_node() {
    let runs: usize = std::env::var("PORTWAY_L2_BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let Some(mut lab) = Lab::start_with_bulk("bulk", 3000) else {
        return;
    };
    let (mut first, mut all) = (vec![], vec![]);
    let mut per_vip: Vec<i64> = Vec::new();
    for run in 0..runs {
        let owner = lab.wait_owner(VIP4, Duration::from_secs(5)).expect("owner");
        let survivors: Vec<usize> = (1..=3).filter(|k| *k != owner).collect();
        assert!(
            lab.wait(Duration::from_secs(10), || {
                let total: usize = (1..=3).map(|k| lab.owned_now(k).len()).sum();
                total == lab.bulk_vips().len() + 2
            }),
            "run {run}: every VIP placed before the crash: {:?}",
            (1..=3).map(|k| lab.owned_now(k).len()).collect::<Vec<_>>()
        );
        let victim = lab.owned_now(owner);
        let t0 = l2_lab::now_ms();
        lab.kill_node_processes(owner);
        let mut times: Vec<i64> = Vec::new();
        assert!(
            lab.wait(Duration::from_secs(10), || {
                let mut taken = std::collections::BTreeMap::new();
                for k in &survivors {
                    for (t, l) in lab.lines_after(*k, t0) {
                        if let Some(ip) = l
                            .strip_prefix("takeover ip=")
                            .and_then(|r| r.split_whitespace().next())
                            && victim.contains(ip)
                        {
                            taken.entry(ip.to_string()).or_insert(t - t0);
                        }
                    }
                }
                times = taken.into_values().collect();
                times.len() == victim.len()
            }),
            "run {run}: every VIP of the crashed node taken over: {} of {}",
            times.len(),
            victim.len()
        );
        times.sort_unstable();
        println!(
            "run {run:>2}: {} VIPs on {}: first {} ms, last {} ms",
            victim.len(),
            Lab::name(owner),
            times[0],
            times[times.len() - 1]
        );
        first.push(times[0]);
        all.push(times[times.len() - 1]);
        per_vip.extend(&times);
        lab.start_server(owner);
        lab.start_speaker(owner);
        assert!(
            lab.wait(Duration::from_secs(10), || [1, 2, 3]
                .iter()
                .all(|k| lab.live_count(*k) == 3)),
            "run {run}: cluster re-formed"
        );
        std::thread::sleep(Duration::from_millis(2500));
    }
    println!(
        "\nL2 failover, 3 speakers, 3,002 VIPs (about 1,000 on the crashed node), {runs} runs:"
    );
    println!("{}", summary("first VIP taken over", first));
    println!("{}", summary("last VIP taken over (all moved)", all));
    println!("{}", summary("per VIP, all runs", per_vip));
}
