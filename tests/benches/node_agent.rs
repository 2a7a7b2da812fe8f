//! The node agent at scale (issue 21, item 2): `portway speaker` (its loop,
//! `portway::speaker::run_with`, in a child process of this bench so its CPU and memory are
//! its own) with N Services, half of class l2 and half of class bgp, M nodes and an
//! EndpointSlice for every Service, against the test world's API server.
//!
//! - BGP: gobgpd in a router network namespace, linked to the host (where the speaker runs)
//!   by a veth pair; `gobgp monitor global rib -j` timestamps each prefix entering the RIB.
//! - L2: the l2 addresses lie in a subnet of the same link; `tcpdump --immediate-mode` in the
//!   router namespace timestamps (kernel receive time) the speaker's first gratuitous ARP
//!   for each address, which the announcer sends when it starts answering for it (after
//!   its RFC 5227 probe of a new address, which is not counted).
//!
//! After the initial announcement (timed too), the bench changes 100 Services per second
//! (alternately l2 and bgp: a new address in the status), and reports per class the time
//! from the status write to the announcement (p50/p99/max), the speaker's CPU per change
//! (CPU during the churn minus its idle rate, divided by the changes) and its peak RSS.
//!
//! ```text
//! cargo bench -p portway-tests --bench node_agent -- [SERVICES] [NODES] [SECONDS] [RATE]
//! ```
//! The speaker runs with `MALLOC_ARENA_MAX=2`, as deploy/ sets it; set `MALLOC_ARENA_MAX`
//! to measure another value (glibc's default is 8 per core).
//! `PORTWAY_BENCH_WRAP=heaptrack` runs the speaker under heaptrack (where its heap goes).
//! `PORTWAY_NODE_AGENT_CHURN=l2` (or `bgp`) changes only Services of that class, so the CPU
//! per change is that path's alone. `PORTWAY_TEST_CLUSTER=real` runs it against the real
//! control plane.
//! Without arguments: 1,000 and 10,000 Services, 500 nodes, 20 s at 100 changes/s. Needs
//! root, gobgpd and tcpdump (skips otherwise; fails under PORTWAY_REQUIRE_PRIVILEGED=1).

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, Patch, PatchParams, PostParams};
use portway_tests::{SimNode, TestCluster};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const NODE_V4: &str = "10.199.80.1";
const ROUTER_V4: &str = "10.199.80.2";
/// The l2 pool; the link carries 10.201.255.254/16 so the speaker can announce into it.
const L2_BASE: u32 = 0x0AC9_0000; // 10.201.0.0
const L2_CHURN: u32 = 0x0AC9_8000; // 10.201.128.0
const BGP_BASE: u32 = 0x0AD2_0000; // 10.210.0.0
const BGP_CHURN: u32 = 0x0AD3_0000; // 10.211.0.0

type Seen = Arc<Mutex<HashMap<Ipv4Addr, Instant>>>;

fn sh(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args[0]))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn missing() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some("needs root for a network namespace".into());
    }
    ["/usr/bin/gobgpd", "/usr/bin/gobgp", "/usr/bin/tcpdump"]
        .iter()
        .find(|t| !std::path::Path::new(t).exists())
        .map(|t| format!("{t} missing (scripts/install-test-deps installs it)"))
}

/// The router namespace with gobgpd, its monitor and tcpdump; Drop removes everything.
struct Lab {
    ns: String,
    host_if: String,
    dir: tempfile::TempDir,
    children: Vec<Child>,
}

impl Lab {
    fn start(bgp: Seen, l2: Seen) -> Result<Lab, String> {
        let tag = format!("pwna{}", std::process::id() % 1_000_000);
        let mut lab = Lab {
            ns: format!("{tag}r"),
            host_if: format!("{tag}h"),
            dir: tempfile::tempdir().map_err(|e| e.to_string())?,
            children: vec![],
        };
        let _ = sh(&["ip", "netns", "del", &lab.ns]);
        let _ = sh(&["ip", "link", "del", &lab.host_if]);
        sh(&["ip", "netns", "add", &lab.ns])?;
        sh(&[
            "ip",
            "link",
            "add",
            &lab.host_if,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &lab.ns,
        ])?;
        for cidr in [&format!("{NODE_V4}/24"), "10.201.255.254/16"] {
            sh(&["ip", "addr", "add", cidr, "dev", &lab.host_if])?;
        }
        sh(&["ip", "link", "set", &lab.host_if, "up"])?;
        let n = ["ip", "-n", lab.ns.as_str()];
        sh(&[&n[..], &["link", "set", "lo", "up"]].concat())?;
        sh(&[
            &n[..],
            &["addr", "add", &format!("{ROUTER_V4}/24"), "dev", "eth0"],
        ]
        .concat())?;
        sh(&[&n[..], &["link", "set", "eth0", "up"]].concat())?;
        let conf = format!(
            "[global.config]\n  as = 64512\n  router-id = \"{ROUTER_V4}\"\n  port = 179\n\
             [[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{NODE_V4}\"\n    peer-as = 64513\n\
             \x20 [neighbors.transport.config]\n    passive-mode = true\n\
             \x20 [neighbors.timers.config]\n    hold-time = 9\n    keepalive-interval = 3\n\
             \x20 [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = \"ipv4-unicast\"\n"
        );
        let path = lab.dir.path().join("gobgpd.toml");
        std::fs::write(&path, conf).map_err(|e| e.to_string())?;
        let log =
            std::fs::File::create(lab.dir.path().join("gobgpd.log")).map_err(|e| e.to_string())?;
        let gobgpd = Command::new("ip")
            .args([
                "netns", "exec", &lab.ns, "gobgpd", "-t", "toml", "-p", "-l", "warn",
            ])
            .arg("-f")
            .arg(&path)
            .args(["--api-hosts", "127.0.0.1:50051", "--pprof-disable"])
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("gobgpd: {e}"))?;
        lab.children.push(gobgpd);
        let t0 = Instant::now();
        while lab.gobgp(&["global"]).is_none() {
            if t0.elapsed() > Duration::from_secs(10) {
                return Err("gobgpd's API did not answer in 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // The RIB stream: every prefix that enters, first time only.
        let mut monitor = Command::new("ip")
            .args([
                "netns", "exec", &lab.ns, "gobgp", "monitor", "global", "rib",
            ])
            .args(["-a", "ipv4", "-j"])
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("gobgp monitor: {e}"))?;
        let out = monitor.stdout.take().ok_or("monitor stdout")?;
        lab.children.push(monitor);
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let at = Instant::now();
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                let mut found = vec![];
                announced(&v, &mut found);
                let mut seen = bgp.lock().expect("lock");
                for ip in found {
                    seen.entry(ip).or_insert(at);
                }
            }
        });
        // Gratuitous ARP from the speaker, first time per address.
        let mut tcpdump = Command::new("ip")
            .args([
                "netns", "exec", &lab.ns, "tcpdump", "-l", "-n", "-i", "eth0",
            ])
            // A snapshot of 96 bytes (an ARP frame is 42-60): libpcap sizes its ring's slots
            // by the snapshot length, and with the default (256 KiB, capped at the MTU) a
            // refresh round of 3 frames per address overflowed the ring whenever tcpdump was
            // not scheduled in time: those addresses were counted a round (10 s) later.
            // `-tt`: the kernel's receive time, not when this thread read the line.
            .args(["--immediate-mode", "-B", "16384", "-s", "96", "-tt", "arp"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("tcpdump: {e}"))?;
        let out = tcpdump.stdout.take().ok_or("tcpdump stdout")?;
        lab.children.push(tcpdump);
        let epoch = (std::time::SystemTime::now(), Instant::now());
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let at = line
                    .split_whitespace()
                    .next()
                    .and_then(|t| t.parse::<f64>().ok())
                    .and_then(|t| {
                        let sent = std::time::UNIX_EPOCH + Duration::from_secs_f64(t);
                        epoch.1.checked_add(sent.duration_since(epoch.0).ok()?)
                    })
                    .unwrap_or_else(Instant::now);
                // "TIME ARP, Request who-has A tell A" or "ARP, Reply A is-at MAC": the first
                // address. Not the RFC 5227 probe ("tell 0.0.0.0") the speaker sends before
                // it answers for an address nobody announced: that is a question, not yet
                // the announcement.
                if line.contains("tell 0.0.0.0") {
                    continue;
                }
                let ip = line
                    .split([' ', ','])
                    .find_map(|t| t.parse::<Ipv4Addr>().ok());
                if let Some(ip) = ip.filter(|ip| u32::from(*ip) >> 16 == L2_BASE >> 16) {
                    l2.lock().expect("lock").entry(ip).or_insert(at);
                }
            }
        });
        // tcpdump needs a moment to attach.
        std::thread::sleep(Duration::from_millis(500));
        Ok(lab)
    }

    fn gobgp(&self, args: &[&str]) -> Option<Value> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns, "gobgp"])
            .args(args)
            .arg("-j")
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.ns])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-9", pid]).status();
            }
        }
        let _ = sh(&["ip", "netns", "del", &self.ns]);
        let _ = sh(&["ip", "link", "del", &self.host_if]);
    }
}

/// Prefixes announced (not withdrawn) in one monitor line.
fn announced(v: &Value, out: &mut Vec<Ipv4Addr>) {
    match v {
        Value::Array(a) => a.iter().for_each(|x| announced(x, out)),
        Value::Object(o) => {
            let withdrawn = o
                .get("withdrawal")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            if let Some(p) = o
                .get("nlri")
                .and_then(|n| n.get("prefix"))
                .and_then(Value::as_str)
            {
                if let (false, Some(Ok(ip))) = (withdrawn, p.split('/').next().map(str::parse)) {
                    out.push(ip);
                }
            } else {
                o.values().for_each(|x| announced(x, out));
            }
        }
        _ => {}
    }
}

/// User and system CPU of a process, from /proc.
fn cpu(pid: u32, tick: f64) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i)?.parse::<f64>().ok())
        .sum();
    Duration::from_secs_f64(ticks / tick)
}

fn status_kib(pid: u32, key: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0)
}

fn clock_tick() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if args.first().map(String::as_str) == Some("--child") {
        return rt.block_on(child(&args[1], &args[2]));
    }
    if portway_tests::privileged("node agent bench", missing()).is_err() {
        return Ok(());
    }
    let num = |i: usize, d: usize| -> anyhow::Result<usize> {
        Ok(args.get(i).map(|a| a.parse()).transpose()?.unwrap_or(d))
    };
    let cases = match args.first() {
        Some(_) => vec![num(0, 10_000)?],
        None => vec![1_000, 10_000],
    };
    let (nodes, secs, rate) = (num(1, 500)?, num(2, 20)?, num(3, 100)?);
    let world = format!("{:?}", portway_tests::backend()).to_lowercase();
    let mut rows = vec![];
    for services in cases {
        rows.extend(rt.block_on(run_case(services, nodes, secs, rate))?);
    }
    println!(
        "\n| world | services | nodes | class | changes | announced | p50 ms | p99 ms | max ms | initial s | speaker CPU ms/change | speaker idle CPU % | speaker peak RSS MiB |"
    );
    println!("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!("| {world} | {r}");
    }
    Ok(())
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1e3
}

async fn run_case(
    services: usize,
    nodes: usize,
    secs: usize,
    rate: usize,
) -> anyhow::Result<Vec<String>> {
    let bgp_seen: Seen = Arc::default();
    let l2_seen: Seen = Arc::default();
    let lab = Lab::start(bgp_seen.clone(), l2_seen.clone()).map_err(anyhow::Error::msg)?;
    let cluster = TestCluster::builder()
        .kubelet(false)
        .daemonsets(false)
        .start()
        .await?;
    let client = cluster.client();
    let ip = |base: u32, i: usize| Ipv4Addr::from(base + i as u32);
    // Nodes: n0 is this host; the others only exist in the API.
    let t0 = Instant::now();
    futures::future::try_join_all((0..nodes).map(|i| {
        let addr = if i == 0 {
            NODE_V4.to_string()
        } else {
            format!("10.198.{}.{}", i / 250, i % 250 + 1)
        };
        cluster.add_node(SimNode::new(&format!("n{i}")).ipv4(&addr))
    }))
    .await?;
    // Services, their statuses and one EndpointSlice each, 32 in flight.
    let half = services / 2;
    let kinds: Vec<(String, &str, Ipv4Addr)> = (0..services)
        .map(|i| {
            let (class, addr) = if i % 2 == 0 {
                ("portway.dev/l2", ip(L2_BASE, i / 2))
            } else {
                ("portway.dev/bgp", ip(BGP_BASE, i / 2))
            };
            (format!("s{i}"), class, addr)
        })
        .collect();
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    use futures::StreamExt;
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(kinds.iter().enumerate())
        .map(|(i, (name, class, addr))| {
            let (svcs, slices) = (svcs.clone(), slices.clone());
            async move {
                let svc: Service = serde_json::from_value(json!({
                    "metadata": { "name": name },
                    "spec": { "type": "LoadBalancer", "loadBalancerClass": class,
                        "allocateLoadBalancerNodePorts": false,
                        "ports": [{ "port": 80 }] }
                }))?;
                svcs.create(&PostParams::default(), &svc).await?;
                let status = json!({"status": {"loadBalancer": {"ingress": [{"ip": addr.to_string()}]}}});
                svcs.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
                    .await?;
                let slice: EndpointSlice = serde_json::from_value(json!({
                    "metadata": { "name": format!("{name}-a"), "labels": {
                        "kubernetes.io/service-name": name,
                        "endpointslice.kubernetes.io/managed-by": "bench.portway.dev" } },
                    "addressType": "IPv4",
                    "endpoints": [{ "addresses": [format!("10.244.{}.{}", i / 250 % 250, i % 250 + 1)],
                        "conditions": { "ready": true }, "nodeName": format!("n{}", i % nodes) }],
                    "ports": [{ "port": 8080, "protocol": "TCP" }]
                }))?;
                slices.create(&PostParams::default(), &slice).await?;
                Ok(())
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    results.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    eprintln!(
        "{services} Services, {nodes} nodes and the slices written in {:?}",
        t0.elapsed()
    );

    // The speaker.
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    cluster
        .write_kubeconfig(
            &kubeconfig,
            "system:serviceaccount:portway-system:portway-speaker",
        )
        .await?;
    let gossip = std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "pools:\n- name: lan\n  addresses: [10.201.0.0/16]\n- name: dc\n  addresses: [10.210.0.0/15]\n\
             l2:\n  pools: [lan]\n  gossipPort: {gossip}\n\
             bgp:\n  localASN: 64513\n  peers:\n  - address: {ROUTER_V4}\n    asn: 64512\n\
             \x20   holdTime: 9s\n    keepaliveTime: 3s\n  advertisements:\n  - pools: [dc]\n"
        ),
    )?;
    let started = Instant::now();
    // As deploy/ runs it (MALLOC_ARENA_MAX=2), unless the caller's environment says
    // otherwise (glibc defaults to 8 arenas per core).
    let arenas = std::env::var("MALLOC_ARENA_MAX").unwrap_or_else(|_| "2".into());
    println!("speaker: MALLOC_ARENA_MAX={arenas}");
    // PORTWAY_BENCH_WRAP (say `heaptrack`) runs the speaker under that tool (its CPU and
    // RSS figures are then the tool's process's, not the speaker's).
    let mut speaker = match std::env::var("PORTWAY_BENCH_WRAP") {
        Ok(tool) if !tool.is_empty() => {
            let mut c = Command::new(tool);
            c.arg(std::env::current_exe()?);
            c
        }
        _ => Command::new(std::env::current_exe()?),
    };
    let mut speaker = speaker
        .arg("--child")
        .arg(&kubeconfig)
        .arg(&config)
        .env("MALLOC_ARENA_MAX", &arenas)
        .stdin(Stdio::piped())
        .spawn()?;
    let pid = speaker.id();
    let tick = clock_tick();
    // Initial announcement: every address out.
    let initial = |seen: &Seen, base: u32| {
        let seen = seen.lock().expect("lock");
        (0..half).all(|i| seen.contains_key(&ip(base, i)))
    };
    let deadline = Instant::now() + Duration::from_secs(300);
    let (mut l2_initial, mut bgp_initial) = (None, None);
    let mut told = Instant::now();
    while l2_initial.is_none() || bgp_initial.is_none() {
        if told.elapsed() >= Duration::from_secs(1) {
            told = Instant::now();
            eprintln!(
                "{:.1} s: l2 {} bgp {} of {half} announced",
                started.elapsed().as_secs_f64(),
                l2_seen.lock().expect("lock").len(),
                bgp_seen.lock().expect("lock").len()
            );
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "initial announcement incomplete after 300 s: l2 {} bgp {} of {half}",
            l2_seen.lock().expect("lock").len(),
            bgp_seen.lock().expect("lock").len()
        );
        if l2_initial.is_none() && initial(&l2_seen, L2_BASE) {
            l2_initial = Some(started.elapsed());
        }
        if bgp_initial.is_none() && initial(&bgp_seen, BGP_BASE) {
            bgp_initial = Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("initial: l2 {l2_initial:?}, bgp {bgp_initial:?}");
    // Let the feedback (announced-by annotations of the l2 Services) settle, then the idle rate.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let idle_window = Duration::from_secs(5);
    let c0 = cpu(pid, tick);
    tokio::time::sleep(idle_window).await;
    let idle_rate = (cpu(pid, tick) - c0).as_secs_f64() / idle_window.as_secs_f64();

    // Churn: `rate` status changes per second, alternately an l2 and a bgp Service.
    let changes = secs * rate;
    let written: Arc<Mutex<Vec<(bool, Ipv4Addr, Instant)>>> = Arc::default();
    let c0 = cpu(pid, tick);
    let churn_start = Instant::now();
    let mut every = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut writes = vec![];
    let only = std::env::var("PORTWAY_NODE_AGENT_CHURN").ok();
    for k in 0..changes {
        every.tick().await;
        // Alternately, or only one class (to see each path's CPU per change).
        let (l2, j) = match only.as_deref() {
            Some("l2") => (true, k),
            Some("bgp") => (false, k),
            _ => (k % 2 == 0, k / 2),
        };
        let (name, addr) = if l2 {
            (format!("s{}", (j % half) * 2), ip(L2_CHURN, j))
        } else {
            (format!("s{}", (j % half) * 2 + 1), ip(BGP_CHURN, j))
        };
        let (svcs, written) = (svcs.clone(), written.clone());
        writes.push(tokio::spawn(async move {
            let status =
                json!({"status": {"loadBalancer": {"ingress": [{"ip": addr.to_string()}]}}});
            let at = Instant::now();
            let r = svcs
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                .await;
            if r.is_ok() {
                written.lock().expect("lock").push((l2, addr, at));
            }
        }));
    }
    for w in writes {
        w.await?;
    }
    let churn = churn_start.elapsed();
    // Everything written is announced (or 10 s pass).
    let all_out = || {
        let (l2, bgp) = (
            l2_seen.lock().expect("lock"),
            bgp_seen.lock().expect("lock"),
        );
        written.lock().expect("lock").iter().all(|(is_l2, a, _)| {
            if *is_l2 {
                l2.contains_key(a)
            } else {
                bgp.contains_key(a)
            }
        })
    };
    let wait = Instant::now();
    while !all_out() && wait.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let busy = cpu(pid, tick) - c0;
    let rss = status_kib(pid, "VmHWM:") / 1024.0;
    let window = churn_start.elapsed();
    let per_change =
        (busy.as_secs_f64() - idle_rate * window.as_secs_f64()).max(0.0) / changes as f64 * 1e3;
    eprintln!(
        "churn of {changes} in {churn:?}; speaker CPU {busy:?} over {window:?} (idle rate {:.1} %)",
        idle_rate * 100.0
    );

    drop(speaker.stdin.take());
    let _ = tokio::task::spawn_blocking(move || speaker.wait()).await;
    let written = written.lock().expect("lock").clone();
    let mut rows = vec![];
    for (class, is_l2, initial) in [("l2", true, l2_initial), ("bgp", false, bgp_initial)] {
        let seen = if is_l2 { &l2_seen } else { &bgp_seen };
        let seen = seen.lock().expect("lock");
        let ours: Vec<_> = written.iter().filter(|w| w.0 == is_l2).collect();
        let mut lat: Vec<Duration> = ours
            .iter()
            .filter_map(|(_, a, at)| seen.get(a).map(|t| t.saturating_duration_since(*at)))
            .collect();
        lat.sort();
        rows.push(format!(
            "{services} | {nodes} | {class} | {} | {} | {:.0} | {:.0} | {:.0} | {:.1} | {per_change:.2} | {:.1} | {rss:.1} |",
            ours.len(),
            lat.len(),
            pct(&lat, 0.5),
            pct(&lat, 0.99),
            pct(&lat, 1.0),
            initial.map_or(f64::NAN, |d| d.as_secs_f64()),
            idle_rate * 100.0,
        ));
    }
    cluster.shutdown().await;
    drop(lab);
    Ok(rows)
}

/// The speaker process: `portway speaker`'s loop until stdin closes.
async fn child(kubeconfig: &str, config: &str) -> anyhow::Result<()> {
    portway_tests::init_tracing();
    let client = portway::cli::client(Some(std::path::Path::new(kubeconfig))).await?;
    let config = portway::config::Config::load(Some(std::path::Path::new(config)))
        .map_err(|e| anyhow::anyhow!("config: {e}"))?;
    let stop = async {
        let _ = tokio::task::spawn_blocking(|| {
            let mut buf = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut buf)
        })
        .await;
    };
    portway::speaker::run_with(client, config, "n0".into(), stop).await?;
    let _ = std::io::stdout().flush();
    Ok(())
}
