//! A stand-alone L2 speaker for interop tests and benchmarks: the library's
//! [`L2Speaker`] fed from the command line instead of Kubernetes watches.
//!
//! ```text
//! l2-test-speaker --name n1 --addr 198.51.100.11 [--port 7947]
//!                 --peer n2=198.51.100.12 --peer n3=198.51.100.13
//!                 --vip 198.51.100.100 --vip 2001:db8:1::100@local=n2,n3
//!                 [--interface eth0] [--grace-ms 2000] [--api-reachable]
//!                 [--gossip-key KEY]... [--handover-wait-ms 1000]
//! ```
//!
//! Every node listed (itself and its peers) is a Node with no labels; a VIP
//! without `@local=` has Cluster policy with endpoints everywhere. Events go
//! to stdout, one line each: `<unix ms> <event> key=value…`, flushed at
//! once so a test can time them. Stdin takes `vips <spec>…` to replace the
//! VIPs, `exclude n1,n2` to drop those nodes from the Node view (as the
//! exclusion label does; `exclude` alone restores every node) and `quit` for
//! a graceful shutdown; SIGTERM and SIGINT also shut down gracefully, SIGKILL
//! is a crash. Gossip is accepted only from the listed nodes' addresses.
//!
//! Two helper modes make the same binary the data path of the tests:
//! - `l2-test-speaker serve --name n1 --port 8080`: a TCP server on
//!   `[::]:8080` (IPv4 too) that answers every connection with `n1\n`;
//! - `l2-test-speaker probe --target 198.51.100.100:8080 [--timeout-ms 50]
//!   [--interval-ms 10] [--once]`: connects again and again and prints
//!   `<unix ms> ok <name>` or `<unix ms> fail <error kind>` per attempt;
//! - `l2-test-speaker arp-probe …`: tagged ARP requests that count double
//!   answers (see `arp_probe.rs`).
#![forbid(unsafe_code)]

mod arp_probe;

use portway_l2::{
    GossipKeys, L2Config, L2Speaker, NodeInput, SpeakerConfig, SpeakerEvent, VipInput,
};
use portway_provider::TrafficPolicy;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::IpAddr;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

struct Args {
    name: String,
    addr: IpAddr,
    port: u16,
    peers: Vec<(String, IpAddr)>,
    vips: Vec<String>,
    interfaces: Vec<String>,
    grace: Duration,
    api_reachable: bool,
    keys: Vec<Vec<u8>>,
    handover_wait: Option<Duration>,
    garp_refresh: Option<Duration>,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mut args = Args {
        name: String::new(),
        addr: IpAddr::from([0, 0, 0, 0]),
        port: portway_l2::config::DEFAULT_GOSSIP_PORT,
        peers: Vec::new(),
        vips: Vec::new(),
        interfaces: Vec::new(),
        grace: Duration::from_secs(2),
        api_reachable: false,
        keys: Vec::new(),
        handover_wait: None,
        garp_refresh: None,
    };
    let mut have_addr = false;
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--name" => args.name = value()?,
            "--addr" => {
                args.addr = value()?.parse().map_err(|e| format!("--addr: {e}"))?;
                have_addr = true;
            }
            "--port" => args.port = value()?.parse().map_err(|e| format!("--port: {e}"))?,
            "--peer" => {
                let v = value()?;
                let (name, ip) = v.split_once('=').ok_or("--peer wants NAME=IP")?;
                args.peers.push((
                    name.to_string(),
                    ip.parse().map_err(|e| format!("--peer {v}: {e}"))?,
                ));
            }
            "--vip" => args.vips.push(value()?),
            "--interface" => args.interfaces.push(value()?),
            "--grace-ms" => {
                args.grace =
                    Duration::from_millis(value()?.parse().map_err(|e| format!("--grace-ms: {e}"))?)
            }
            "--api-reachable" => args.api_reachable = true,
            "--gossip-key" => args.keys.push(value()?.into_bytes()),
            "--handover-wait-ms" => {
                args.handover_wait = Some(Duration::from_millis(
                    value()?
                        .parse()
                        .map_err(|e| format!("--handover-wait-ms: {e}"))?,
                ))
            }
            "--garp-refresh-ms" => {
                args.garp_refresh = Some(Duration::from_millis(
                    value()?
                        .parse()
                        .map_err(|e| format!("--garp-refresh-ms: {e}"))?,
                ))
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if args.name.is_empty() || !have_addr {
        return Err("--name and --addr are required".into());
    }
    Ok(args)
}

/// `IP` (Cluster, endpoints on every node) or `IP@local=n1,n2`.
fn parse_vip(spec: &str, all_nodes: &BTreeSet<String>) -> Result<VipInput, String> {
    let (ip, local) = match spec.split_once("@local=") {
        Some((ip, nodes)) => (ip, Some(nodes)),
        None => (spec, None),
    };
    let ip: IpAddr = ip.parse().map_err(|e| format!("vip {spec}: {e}"))?;
    Ok(match local {
        Some(nodes) => VipInput {
            ip,
            traffic_policy: TrafficPolicy::Local,
            ready_nodes: nodes
                .split(',')
                .filter(|n| !n.is_empty())
                .map(str::to_string)
                .collect(),
            scope: None,
        },
        None => VipInput {
            ip,
            traffic_policy: TrafficPolicy::Cluster,
            ready_nodes: all_nodes.clone(),
            scope: None,
        },
    })
}

fn emit(line: std::fmt::Arguments<'_>) {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{ms} {line}");
    let _ = out.flush();
}

fn ms(d: Option<Duration>) -> String {
    d.map(|d| d.as_millis().to_string())
        .unwrap_or_else(|| "-".into())
}

fn main() -> ExitCode {
    let mode = std::env::args().nth(1);
    match mode.as_deref() {
        Some("serve") => serve(),
        Some("probe") => probe(),
        Some("arp-probe") => match arp_probe::run(emit, flag) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("l2-test-speaker arp-probe: {e}");
                ExitCode::FAILURE
            }
        },
        _ => speaker(),
    }
}

fn flag(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn serve() -> ExitCode {
    let name = flag("--name").unwrap_or_else(|| "?".into());
    let port: u16 = flag("--port").and_then(|p| p.parse().ok()).unwrap_or(8080);
    let listener = match std::net::TcpListener::bind(("::", port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("l2-test-speaker serve: {e}");
            return ExitCode::FAILURE;
        }
    };
    emit(format_args!("serving name={name} port={port}"));
    for mut conn in listener.incoming().map_while(Result::ok) {
        let _ = writeln!(conn, "{name}");
    }
    ExitCode::SUCCESS
}

fn probe() -> ExitCode {
    use std::io::BufRead;
    let Some(target) = flag("--target").and_then(|t| t.parse::<std::net::SocketAddr>().ok()) else {
        eprintln!("l2-test-speaker probe: --target IP:PORT is required");
        return ExitCode::from(2);
    };
    let timeout = Duration::from_millis(
        flag("--timeout-ms")
            .and_then(|t| t.parse().ok())
            .unwrap_or(50),
    );
    let interval = Duration::from_millis(
        flag("--interval-ms")
            .and_then(|t| t.parse().ok())
            .unwrap_or(10),
    );
    let once = std::env::args().any(|a| a == "--once");
    loop {
        let result = std::net::TcpStream::connect_timeout(&target, timeout).and_then(|conn| {
            conn.set_read_timeout(Some(Duration::from_millis(500)))?;
            let mut line = String::new();
            std::io::BufReader::new(conn).read_line(&mut line)?;
            Ok(line.trim().to_string())
        });
        match &result {
            Ok(name) => emit(format_args!("ok {name}")),
            Err(e) => emit(format_args!("fail {:?}", e.kind())),
        }
        if once {
            return if result.is_ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            };
        }
        std::thread::sleep(interval);
    }
}

#[tokio::main(flavor = "current_thread")]
async fn speaker() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("l2-test-speaker: {e}");
            return ExitCode::from(2);
        }
    };
    let mut nodes: BTreeMap<String, NodeInput> = BTreeMap::new();
    nodes.insert(
        args.name.clone(),
        NodeInput {
            labels: BTreeMap::new(),
            addrs: vec![args.addr],
        },
    );
    for (name, ip) in &args.peers {
        nodes.insert(
            name.clone(),
            NodeInput {
                labels: BTreeMap::new(),
                addrs: vec![*ip],
            },
        );
    }
    let all: BTreeSet<String> = nodes.keys().cloned().collect();
    let vips: Result<Vec<VipInput>, String> =
        args.vips.iter().map(|s| parse_vip(s, &all)).collect();
    let vips = match vips {
        Ok(v) => v,
        Err(e) => {
            eprintln!("l2-test-speaker: {e}");
            return ExitCode::from(2);
        }
    };
    let l2 = L2Config {
        interfaces: args.interfaces.clone(),
        gossip_port: args.port,
        garp_refresh: args
            .garp_refresh
            .unwrap_or(portway_l2::config::DEFAULT_GARP_REFRESH),
        ..L2Config::default()
    };
    let mut config = SpeakerConfig::new(args.name.clone(), args.addr, l2);
    config.startup_grace = args.grace;
    config.gossip_keys = GossipKeys::new(args.keys.clone());
    if let Some(w) = args.handover_wait {
        config.handover_wait = w;
    }
    let speaker = match L2Speaker::start(config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("l2-test-speaker: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut events = speaker.events();
    speaker.set_allowed(Some(
        nodes
            .iter()
            .map(|(n, i)| (n.clone(), i.addrs.iter().copied().collect()))
            .collect(),
    ));
    speaker.set_nodes(nodes.clone());
    speaker.set_vips(vips.clone());
    let mut current = vips;
    speaker.set_api_reachable(args.api_reachable);
    emit(format_args!("ready name={}", args.name));

    // tokio's stdin needs a feature the workspace does not enable; a thread
    // forwarding lines is all this needs.
    let (line_tx, mut stdin) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines().map_while(Result::ok) {
            if line_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut stdin_open = true;
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("l2-test-speaker: SIGTERM handler: {e}");
            return ExitCode::FAILURE;
        }
    };
    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Ok(SpeakerEvent::Takeover(t)) => emit(format_args!(
                    "takeover ip={} previous={} since_last_heard_ms={} since_detected_ms={}",
                    t.ip,
                    t.previous_owner.as_deref().unwrap_or("-"),
                    ms(t.since_last_heard),
                    ms(t.since_detected)
                )),
                Ok(SpeakerEvent::Released { ip, new_owner }) => {
                    emit(format_args!("release ip={ip} new_owner={}", new_owner.as_deref().unwrap_or("-")))
                }
                Ok(SpeakerEvent::Conflict { ip, mac, iface }) => emit(format_args!(
                    "conflict ip={ip} mac={} iface={iface}",
                    portway_l2::mac_text(&mac)
                )),
                Ok(SpeakerEvent::ConflictCleared { ip }) => emit(format_args!("conflict_cleared ip={ip}")),
                Ok(SpeakerEvent::MemberUp { name }) => emit(format_args!("member_up name={name}")),
                Ok(SpeakerEvent::MemberDown { name, graceful, silent_for }) => emit(format_args!(
                    "member_down name={name} graceful={graceful} silent_ms={}",
                    ms(silent_for)
                )),
                Ok(SpeakerEvent::Quorum(q)) => emit(format_args!(
                    "quorum may_announce={} reason={:?} live={} known={}",
                    q.may_announce, q.reason, q.live, q.known
                )),
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => emit(format_args!("lagged events={n}")),
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            },
            line = stdin.recv(), if stdin_open => match line {
                Some(line) => {
                    let mut words = line.split_whitespace();
                    match words.next() {
                        Some("quit") => break,
                        Some("exclude") => {
                            let out: BTreeSet<&str> = words.flat_map(|w| w.split(',')).collect();
                            let kept = nodes
                                .iter()
                                .filter(|(n, _)| !out.contains(n.as_str()))
                                .map(|(n, i)| (n.clone(), i.clone()))
                                .collect();
                            speaker.set_nodes(kept);
                            emit(format_args!("excluded nodes={}", out.into_iter().collect::<Vec<_>>().join(",")));
                        }
                        Some("vips") => {
                            let vips: Result<Vec<VipInput>, String> = words.map(|s| parse_vip(s, &all)).collect();
                            match vips {
                                // As `portway speaker` does between resyncs: only the
                                // changed addresses, so the labs exercise that path.
                                Ok(v) => {
                                    let set = v.iter().filter(|n| !current.contains(n)).cloned().collect();
                                    let gone = current
                                        .iter()
                                        .filter(|o| !v.iter().any(|n| n.ip == o.ip))
                                        .map(|o| o.ip)
                                        .collect();
                                    speaker.update_vips(set, gone);
                                    current = v;
                                }
                                Err(e) => emit(format_args!("error {e}")),
                            }
                        }
                        _ => emit(format_args!("error unknown command {line:?}")),
                    }
                }
                None => stdin_open = false,
            },
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    speaker.shutdown().await;
    emit(format_args!("stopped name={}", args.name));
    ExitCode::SUCCESS
}
