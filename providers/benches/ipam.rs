//! Allocator benchmark: fill a /16 IPv4 pool and release it, 100,000
//! allocations from an IPv6 /64, steady-state re-ensure and restart rebuild.
//! Prints total and per-operation times and the resident-memory growth.
//!
//! Run: `cargo bench -p portway-provider --bench ipam`

use portway_provider::ipam::testkit::svc;
use portway_provider::ipam::{Allocator, PoolConfig, Scope};
use portway_provider::{IpFamily, IpFamilyPolicy, LbService};
use std::time::{Duration, Instant};

/// `VmRSS` and `VmHWM` of this process in KiB, from /proc (0 where unavailable).
fn mem_kib() -> (u64, u64) {
    let Ok(text) = std::fs::read_to_string("/proc/self/status") else {
        return (0, 0);
    };
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn per_op(d: Duration, n: usize) -> String {
    format!(
        "{:>9.2} ms total, {:>7.0} ns/op",
        d.as_secs_f64() * 1e3,
        d.as_nanos() as f64 / n.max(1) as f64
    )
}

fn services(n: usize, v6: bool) -> Vec<LbService> {
    (0..n)
        .map(|i| {
            let mut s = svc("bench", &format!("svc-{i}"));
            if v6 {
                s.ip_families = vec![IpFamily::V6];
                s.ip_family_policy = IpFamilyPolicy::SingleStack;
            }
            s
        })
        .collect()
}

/// Times of one round, per phase.
#[derive(Default)]
struct Round {
    held: usize,
    fill: Duration,
    keep: Duration,
    adopt: Duration,
    release: Duration,
}

/// One round over a fresh allocator: fill (or allocate `svcs.len()`),
/// re-ensure all, rebuild a second allocator from the statuses, release all.
/// Returns the times and, when `measure`, prints the memory growth.
fn round(pool: &PoolConfig, svcs: &[LbService], measure: bool) -> Round {
    let scope = Scope::all();
    let mut r = Round::default();
    let (rss0, _) = mem_kib();
    let mut a = match Allocator::new(std::slice::from_ref(pool)) {
        Ok(a) => a,
        Err(e) => panic!("bench pool invalid: {e:?}"),
    };
    let t = Instant::now();
    for s in svcs {
        match a.allocate(s, &scope) {
            Ok(_) => r.held += 1,
            Err(_) => break,
        }
    }
    r.fill = t.elapsed();
    if measure {
        let (rss1, hwm1) = mem_kib();
        let grown = rss1.saturating_sub(rss0);
        let stats = &a.stats()[0];
        println!(
            "  pool total {} in use {} (full: {})",
            stats.total,
            stats.in_use,
            u128::from(stats.in_use) == stats.total
        );
        println!(
            "  memory    VmRSS +{grown} KiB for {} addresses ({:.0} B/address), VmHWM {hwm1} KiB",
            r.held,
            (grown as f64 * 1024.0) / r.held.max(1) as f64,
        );
    }
    let held = &svcs[..r.held];
    let t = Instant::now();
    for s in held {
        let _ = a.allocate(s, &scope);
    }
    r.keep = t.elapsed();

    let published: Vec<LbService> = held
        .iter()
        .map(|s| {
            let mut p = s.clone();
            p.current_ips = a.assigned(&s.key).map(<[_]>::to_vec).unwrap_or_default();
            p
        })
        .collect();
    let mut fresh = match Allocator::new(std::slice::from_ref(pool)) {
        Ok(a) => a,
        Err(e) => panic!("bench pool invalid: {e:?}"),
    };
    let t = Instant::now();
    let problems = fresh.adopt(&published, &scope);
    r.adopt = t.elapsed();
    assert!(problems.is_empty(), "rebuild reported {problems:?}");
    drop(fresh);
    drop(published);

    let t = Instant::now();
    for s in held {
        a.release(&s.key);
    }
    r.release = t.elapsed();
    assert_eq!(a.stats()[0].in_use, 0);
    if let Err(e) = a.check_invariants() {
        panic!("invariants broken after bench: {e}");
    }
    r
}

const ROUNDS: usize = 5;

fn report(name: &str, n: usize, mut times: Vec<Duration>) {
    times.sort();
    let best = times[0];
    let median = times[times.len() / 2];
    println!(
        "  {name:<28} best {}   median {}",
        per_op(best, n),
        per_op(median, n)
    );
}

fn scenario(title: &str, pool: PoolConfig, limit: Option<usize>, v6: bool) {
    println!("== {title}");
    let svcs = services(limit.unwrap_or(70_000), v6);
    let rounds: Vec<Round> = (0..ROUNDS).map(|i| round(&pool, &svcs, i == 0)).collect();
    let n = rounds[0].held;
    println!("  ({ROUNDS} rounds, {n} Services each)");
    report(
        "allocate (fill)",
        n,
        rounds.iter().map(|r| r.fill).collect(),
    );
    report(
        "re-ensure (keep)",
        n,
        rounds.iter().map(|r| r.keep).collect(),
    );
    report(
        "adopt (restart rebuild)",
        n,
        rounds.iter().map(|r| r.adopt).collect(),
    );
    report("release", n, rounds.iter().map(|r| r.release).collect());
}

fn run(which: usize) {
    match which {
        0 => scenario(
            "IPv4 /16 (10.0.0.0/16): allocate until full, release all",
            PoolConfig::new("v4", &["10.0.0.0/16"]),
            None,
            false,
        ),
        1 => scenario(
            "IPv4 10.0.0.1-10.0.255.254 (65,534 addresses): allocate until full, release all",
            PoolConfig::new("v4", &["10.0.0.1-10.0.255.254"]),
            None,
            false,
        ),
        2 => {
            let mut buggy = PoolConfig::new("v4", &["10.0.0.0/16"]);
            buggy.avoid_buggy_ips = true;
            scenario(
                "IPv4 /16 with avoidBuggyIPs: allocate until full, release all",
                buggy,
                None,
                false,
            )
        }
        _ => scenario(
            "IPv6 /64 (fd00::/64): 100,000 allocations, release all",
            PoolConfig::new("v6", &["fd00::/64"]),
            Some(100_000),
            true,
        ),
    }
}

/// Each scenario runs in its own process so that the resident-memory growth
/// is not hidden by memory freed by an earlier scenario.
fn main() {
    if let Some(n) = std::env::args().find_map(|a| a.strip_prefix("--scenario=").map(String::from))
    {
        run(n.parse().unwrap_or(0));
        return;
    }
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => panic!("cannot find the bench binary: {e}"),
    };
    for n in 0..4 {
        let status = std::process::Command::new(&exe)
            .arg(format!("--scenario={n}"))
            .status();
        match status {
            Ok(s) if s.success() => {}
            other => panic!("scenario {n} failed: {other:?}"),
        }
    }
}
