//! The network-namespace lab shared by the L2 interop tests and benchmark:
//! a bridge, a router and three nodes, each node running `l2-test-speaker`
//! and its TCP server. Namespaces are named `pwl2-<pid>-<n>-<role>` and are
//! deleted (with every process in them) when the [`Lab`] is dropped.
#![allow(dead_code)] // each test file uses a different part

mod logs;
mod router;

use portway_tests::{cargo_bin, portway_bin};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The IPv4 VIP every node carries on `lo`.
pub const VIP4: &str = "198.51.100.100";
/// The IPv6 VIP every node carries on `lo`.
pub const VIP6: &str = "2001:db8:1::100";
const NODES: [usize; 3] = [1, 2, 3];
/// MAC of the foreign host's eth0 (see [`Lab::foreign`]).
pub const FOREIGN_MAC: &str = "02:00:00:00:00:99";
const PORT: u16 = 8080;
/// The gossip key every lab speaker holds (the gossip is signed, as in a cluster).
const GOSSIP_KEY: &str = "lab-gossip-key";

/// Wall-clock milliseconds, the clock `l2-test-speaker` stamps lines with.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Lines a child printed, with the timestamp it put in front of each.
type Lines = Arc<Mutex<Vec<(i64, String)>>>;

struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Lines,
}

impl Proc {
    fn spawn(cmd: Command) -> Proc {
        Self::spawn_reading(cmd, false)
    }

    /// `logs`: also read stderr (where `portway` logs) into the lines, echoing it to the
    /// test's stderr so a failure still shows it. Log lines carry no millisecond stamp: 0.
    fn spawn_reading(mut cmd: Command, logs: bool) -> Proc {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(if logs {
                Stdio::piped()
            } else {
                Stdio::inherit()
            })
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
        let lines: Lines = Arc::default();
        let out = child.stdout.take().expect("piped stdout");
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let (ts, rest) = line.split_once(' ').unwrap_or(("0", line.as_str()));
                let ts = ts.parse().unwrap_or(0);
                sink.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((ts, rest.to_string()));
            }
        });
        if let Some(err) = child.stderr.take() {
            let sink = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    eprintln!("{line}");
                    sink.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((0, line));
                }
            });
        }
        let stdin = child.stdin.take();
        Proc {
            child,
            stdin,
            lines,
        }
    }

    fn lines(&self) -> MutexGuard<'_, Vec<(i64, String)>> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Serializes the tests of a binary: they time failovers.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Serializes the labs of every test process on the machine: each joins the host to its
/// switch at the same address (10.77.0.2/24, [`Lab::host_link`]), so two test binaries
/// running at once would route each other's API traffic into the wrong lab.
fn machine_lock() -> std::fs::File {
    let path = std::env::temp_dir().join("portway-l2-lab.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    file.lock()
        .unwrap_or_else(|e| panic!("locking {}: {e}", path.display()));
    file
}

/// Why this machine cannot run the lab, if it cannot (checked once).
fn missing_privilege() -> Option<String> {
    static WHY: OnceLock<Option<String>> = OnceLock::new();
    WHY.get_or_init(check_privilege).clone()
}

fn check_privilege() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some("not root".into());
    }
    for tool in ["ip", "arping", "ndisc6", "iptables"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Some(format!("{tool} not installed (scripts/install-test-deps)"));
        }
    }
    let probe = format!("pwl2-{}-probe", std::process::id());
    let ok = Command::new("ip")
        .args(["netns", "add", &probe])
        .status()
        .is_ok_and(|s| s.success());
    let _ = Command::new("ip").args(["netns", "del", &probe]).status();
    if !ok {
        return Some("cannot create network namespaces".into());
    }
    None
}

/// Builds `l2-test-speaker` (in the profile of this test binary) and
/// returns its path; once per test binary. `PORTWAY_L2_SPEAKER_BIN` points
/// at a prebuilt one instead.
fn speaker_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("PORTWAY_L2_SPEAKER_BIN") {
            return PathBuf::from(bin);
        }
        cargo_bin("portway-l2", "l2-test-speaker")
    })
    .clone()
}

/// One lab: namespaces, speakers, servers.
pub struct Lab {
    prefix: String,
    /// Speakers gossip over a second network (`eth1`, 10.78.0.1k), so cutting the
    /// data link (`eth0`) leaves the node alive in the gossip.
    mgmt: bool,
    /// More VIPs every speaker places (10.80.x.y, in a /20 every node's eth0 holds).
    bulk_vips: Vec<String>,
    /// `--garp-refresh-ms` for the speakers (their default when `None`).
    garp_refresh_ms: Option<u64>,
    bin: PathBuf,
    speakers: [Option<Proc>; 4],
    servers: [Option<Proc>; 4],
    _serial: MutexGuard<'static, ()>,
    /// The machine-wide lock (see [`machine_lock`]), released when the lab drops.
    _machine: std::fs::File,
}

impl Lab {
    /// Builds the lab and starts three speakers and servers; `None` (after
    /// printing why) when the machine cannot, unless
    /// PORTWAY_REQUIRE_PRIVILEGED=1 makes that a failure.
    pub fn start(tag: &str) -> Option<Lab> {
        Lab::start_speakers(Lab::start_bare(tag)?)
    }

    /// [`Lab::start`] with a management network for the gossip: a node whose data link
    /// dies is still alive to its peers, the case the failure detector cannot see.
    pub fn start_with_mgmt(tag: &str) -> Option<Lab> {
        let mut lab = Lab::start_bare(tag)?;
        lab.add_mgmt_network();
        Lab::start_speakers(lab)
    }

    /// [`Lab::start`] with `n` more VIPs (10.80.1.0 up) for load: about a third of them
    /// land on each node.
    pub fn start_with_bulk(tag: &str, n: usize) -> Option<Lab> {
        let mut lab = Lab::start_bare(tag)?;
        for k in NODES {
            lab.must(&[
                "ip",
                "-n",
                &lab.ns(&Lab::name(k)),
                "addr",
                "add",
                &format!("10.80.0.1{k}/20"),
                "dev",
                "eth0",
            ]);
        }
        lab.bulk_vips = (0..n)
            .map(|i| format!("10.80.{}.{}", 1 + i / 250, 1 + i % 250))
            .collect();
        Lab::start_speakers(lab)
    }

    /// [`Lab::start`] with the speakers' refresh (and so their conflict re-probe) every
    /// `ms`, and a foreign host (see [`Lab::foreign`]) on the switch.
    pub fn start_with_refresh(tag: &str, ms: u64) -> Option<Lab> {
        let mut lab = Lab::start_bare(tag)?;
        lab.garp_refresh_ms = Some(ms);
        lab.add_foreign_host();
        Lab::start_speakers(lab)
    }

    /// Runs `args` in the foreign host's namespace (`x`: a host on the LAN that is no
    /// node, MAC [`FOREIGN_MAC`], 198.51.100.9/24 and 2001:db8:1::9/64 on its eth0).
    pub fn foreign(&self, args: &[&str]) {
        let ns = self.ns("x");
        let mut all = vec!["ip", "netns", "exec", ns.as_str()];
        all.extend_from_slice(args);
        self.must(&all);
    }

    fn add_foreign_host(&mut self) {
        let (sw, x) = (self.ns("sw"), self.ns("x"));
        self.must(&["ip", "netns", "add", &x]);
        self.must(&[
            "ip", "-n", &sw, "link", "add", "p-x", "type", "veth", "peer", "name", "eth0", "netns",
            &x,
        ]);
        self.must(&["ip", "-n", &sw, "link", "set", "p-x", "master", "br0"]);
        self.must(&["ip", "-n", &sw, "link", "set", "p-x", "up"]);
        self.must(&["ip", "-n", &x, "link", "set", "lo", "up"]);
        self.must(&[
            "ip",
            "-n",
            &x,
            "link",
            "set",
            "eth0",
            "address",
            FOREIGN_MAC,
        ]);
        self.must(&[
            "ip",
            "-n",
            &x,
            "addr",
            "add",
            "198.51.100.9/24",
            "dev",
            "eth0",
        ]);
        self.must(&[
            "ip",
            "-n",
            &x,
            "addr",
            "add",
            "2001:db8:1::9/64",
            "dev",
            "eth0",
            "nodad",
        ]);
        self.must(&["ip", "-n", &x, "link", "set", "eth0", "up"]);
    }

    /// The bulk VIPs.
    pub fn bulk_vips(&self) -> &[String] {
        &self.bulk_vips
    }

    fn start_speakers(mut lab: Lab) -> Option<Lab> {
        for k in NODES {
            lab.start_speaker(k);
        }
        assert!(
            lab.wait(Duration::from_secs(5), || NODES
                .iter()
                .all(|k| lab.live_count(*k) == 3)),
            "speakers did not form a cluster"
        );
        Some(lab)
    }

    /// The lab with the nodes' TCP servers but no speakers: the caller starts
    /// its own (see [`Lab::start_portway_speaker`]).
    pub fn start_bare(tag: &str) -> Option<Lab> {
        if let Some(why) = missing_privilege() {
            if std::env::var("PORTWAY_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
                panic!("L2 interop needs privileges: {why}");
            }
            eprintln!(
                "SKIP l2 interop ({tag}): {why}; set PORTWAY_REQUIRE_PRIVILEGED=1 to fail instead"
            );
            return None;
        }
        let bin = speaker_bin();
        let serial = serial();
        let machine = machine_lock();
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let prefix = format!(
            "pwl2-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        );
        let mut lab = Lab {
            prefix,
            mgmt: false,
            bulk_vips: Vec::new(),
            garp_refresh_ms: None,
            bin,
            speakers: Default::default(),
            servers: Default::default(),
            _serial: serial,
            _machine: machine,
        };
        lab.build();
        for k in NODES {
            lab.start_server(k);
        }
        Some(lab)
    }

    /// Joins the host (this test process) to the lab's switch: the host gets
    /// `10.77.0.2/24` on a veth whose other end is on the bridge, each node
    /// `10.77.0.1k/24` on its eth0. Returns the host's address, where a
    /// simulated API server can listen for the nodes' speakers. Cutting a
    /// node's cable cuts its API access too, as on a real node.
    pub fn host_link(&self) -> &'static str {
        const HOST: &str = "10.77.0.2";
        let host_if = format!(
            "pwh{}",
            self.prefix.trim_start_matches("pwl2-").replace('-', "")
        );
        let host_if: String = host_if.chars().take(15).collect();
        let sw = self.ns("sw");
        self.must(&[
            "ip", "link", "add", &host_if, "type", "veth", "peer", "name", "p-host", "netns", &sw,
        ]);
        self.must(&["ip", "-n", &sw, "link", "set", "p-host", "master", "br0"]);
        self.must(&["ip", "-n", &sw, "link", "set", "p-host", "up"]);
        self.must(&["ip", "addr", "add", &format!("{HOST}/24"), "dev", &host_if]);
        self.must(&["ip", "link", "set", &host_if, "up"]);
        for k in NODES {
            self.must(&[
                "ip",
                "-n",
                &self.ns(&Lab::name(k)),
                "addr",
                "add",
                &format!("10.77.0.1{k}/24"),
                "dev",
                "eth0",
            ]);
        }
        HOST
    }

    /// Starts (or restarts) `portway speaker` on node `k` with `kubeconfig`
    /// and `config`; its logs go to the test's stderr.
    pub fn start_portway_speaker(&mut self, k: usize, kubeconfig: &Path, config: &Path) {
        let mut cmd = Command::new("ip");
        // With the speaker container's capabilities only (NET_RAW).
        cmd.args(["netns", "exec", &self.ns(&Lab::name(k))])
            .args(portway_tests::SPEAKER_CAPS)
            .arg(portway_bin())
            .arg("speaker")
            .args(["--node-name", &Lab::name(k)])
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--config")
            .arg(config)
            .args(["--metrics-bind-address", "0.0.0.0:0"])
            // The speaker's `l2 state` lines carry the quorum verdict the tests read.
            .env("RUST_LOG", "warn,portway::speaker=info");
        self.speakers[k] = Some(Proc::spawn_reading(cmd, true));
    }

    /// Namespace name of a role (`r`, `n1`, `sw`).
    pub fn ns(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }

    /// Node name of node `k`.
    pub fn name(k: usize) -> String {
        format!("n{k}")
    }

    /// MAC of node `k`'s eth0, lower case (tool output is lowered to match).
    pub fn mac(k: usize) -> String {
        format!("02:00:00:00:00:1{k}")
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(args[0])
            .args(&args[1..])
            .output()
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    fn must(&self, args: &[&str]) {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn build(&mut self) {
        for role in ["sw", "r", "n1", "n2", "n3"] {
            self.must(&["ip", "netns", "add", &self.ns(role)]);
        }
        let sw = self.ns("sw");
        self.must(&[
            "ip",
            "-n",
            &sw,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "stp_state",
            "0",
        ]);
        self.must(&["ip", "-n", &sw, "link", "set", "br0", "up"]);
        for (role, mac) in [("r", "02:00:00:00:00:01".to_string())].into_iter().chain(
            NODES
                .iter()
                .map(|k| (["n1", "n2", "n3"][k - 1], Lab::mac(*k))),
        ) {
            let ns = self.ns(role);
            let port = format!("p-{role}");
            self.must(&[
                "ip", "-n", &sw, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                "netns", &ns,
            ]);
            self.must(&["ip", "-n", &sw, "link", "set", &port, "master", "br0"]);
            self.must(&["ip", "-n", &sw, "link", "set", &port, "up"]);
            self.must(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
            self.must(&["ip", "-n", &ns, "link", "set", "eth0", "address", &mac]);
            self.must(&[
                "ip",
                "netns",
                "exec",
                &ns,
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.eth0.accept_dad=0",
            ]);
        }
        let r = self.ns("r");
        self.must(&[
            "ip",
            "-n",
            &r,
            "addr",
            "add",
            "198.51.100.1/24",
            "dev",
            "eth0",
        ]);
        self.must(&[
            "ip",
            "-n",
            &r,
            "addr",
            "add",
            "2001:db8:1::1/64",
            "dev",
            "eth0",
            "nodad",
        ]);
        for k in NODES {
            let ns = self.ns(&Lab::name(k));
            self.must(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("198.51.100.1{k}/24"),
                "dev",
                "eth0",
            ]);
            self.must(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("2001:db8:1::1{k}/64"),
                "dev",
                "eth0",
                "nodad",
            ]);
            // The VIPs are local on every node, but only the owner's speaker
            // answers for them on the wire.
            self.must(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{VIP4}/32"),
                "dev",
                "lo",
            ]);
            self.must(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{VIP6}/128"),
                "dev",
                "lo",
                "nodad",
            ]);
            self.must(&[
                "ip",
                "netns",
                "exec",
                &ns,
                "sysctl",
                "-qw",
                "net.ipv4.conf.all.arp_ignore=1",
                "net.ipv4.conf.all.arp_announce=2",
            ]);
        }
        for role in ["r", "n1", "n2", "n3"] {
            self.must(&["ip", "-n", &self.ns(role), "link", "set", "eth0", "up"]);
        }
    }

    /// A second bridge `br1` with each node's `eth1` (10.78.0.1k/24) on it.
    fn add_mgmt_network(&mut self) {
        let sw = self.ns("sw");
        self.must(&["ip", "-n", &sw, "link", "add", "br1", "type", "bridge"]);
        self.must(&["ip", "-n", &sw, "link", "set", "br1", "up"]);
        for k in NODES {
            let ns = self.ns(&Lab::name(k));
            let port = format!("m-n{k}");
            self.must(&[
                "ip", "-n", &sw, "link", "add", &port, "type", "veth", "peer", "name", "eth1",
                "netns", &ns,
            ]);
            self.must(&["ip", "-n", &sw, "link", "set", &port, "master", "br1"]);
            self.must(&["ip", "-n", &sw, "link", "set", &port, "up"]);
            self.must(&[
                "ip",
                "-n",
                &ns,
                "link",
                "set",
                "eth1",
                "address",
                &format!("02:00:00:00:01:1{k}"),
            ]);
            self.must(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("10.78.0.1{k}/24"),
                "dev",
                "eth1",
            ]);
            self.must(&["ip", "-n", &ns, "link", "set", "eth1", "up"]);
        }
        self.mgmt = true;
    }

    /// Node `k`'s gossip address.
    fn gossip_addr(&self, k: usize) -> String {
        if self.mgmt {
            format!("10.78.0.1{k}")
        } else {
            format!("198.51.100.1{k}")
        }
    }

    /// Starts (or restarts) node `k`'s speaker.
    pub fn start_speaker(&mut self, k: usize) {
        let mut cmd = Command::new("ip");
        // With the speaker container's capabilities only (NET_RAW).
        cmd.args(["netns", "exec", &self.ns(&Lab::name(k))])
            .args(portway_tests::SPEAKER_CAPS)
            .arg(&self.bin);
        cmd.args([
            "--name",
            &Lab::name(k),
            "--addr",
            &self.gossip_addr(k),
            "--grace-ms",
            "1000",
            "--gossip-key",
            GOSSIP_KEY,
        ]);
        for j in NODES.iter().filter(|j| **j != k) {
            cmd.args(["--peer", &format!("n{j}={}", self.gossip_addr(*j))]);
        }
        cmd.args(["--vip", VIP4, "--vip", VIP6]);
        for v in &self.bulk_vips {
            cmd.args(["--vip", v]);
        }
        if let Some(ms) = self.garp_refresh_ms {
            cmd.args(["--garp-refresh-ms", &ms.to_string()]);
        }
        self.speakers[k] = Some(Proc::spawn(cmd));
    }

    /// Starts (or restarts) node `k`'s TCP server.
    pub fn start_server(&mut self, k: usize) {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns(&Lab::name(k))])
            .arg(&self.bin);
        cmd.args([
            "serve",
            "--name",
            &Lab::name(k),
            "--port",
            &PORT.to_string(),
        ]);
        let p = Proc::spawn(cmd);
        let ready = self.wait(Duration::from_secs(5), || {
            p.lines().iter().any(|(_, l)| l.starts_with("serving"))
        });
        assert!(ready, "server on n{k} did not start");
        self.servers[k] = Some(p);
    }

    /// SIGKILL node `k`'s speaker and server at once: a crashed node whose
    /// kernel still runs (it refuses connections to the VIP).
    pub fn kill_node_processes(&mut self, k: usize) {
        for p in [self.speakers[k].as_mut(), self.servers[k].as_mut()]
            .into_iter()
            .flatten()
        {
            let _ = p.child.kill();
        }
        for p in [self.speakers[k].as_mut(), self.servers[k].as_mut()]
            .into_iter()
            .flatten()
        {
            let _ = p.child.wait();
        }
    }

    /// SIGTERM node `k`'s speaker (graceful stop) and its server.
    pub fn stop_speaker(&mut self, k: usize) {
        if let Some(p) = self.speakers[k].as_mut() {
            let _ = Command::new("kill")
                .args(["-TERM", &p.child.id().to_string()])
                .status();
            let _ = p.child.wait();
        }
        if let Some(p) = self.servers[k].as_mut() {
            p.kill();
        }
    }

    /// Sends a stdin command (`exclude …`, `vips …`) to node `k`'s speaker only: the
    /// nodes of a cluster see an API change at different times.
    pub fn command(&mut self, k: usize, command: &str) {
        if let Some(stdin) = self.speakers[k].as_mut().and_then(|p| p.stdin.as_mut()) {
            let _ = writeln!(stdin, "{command}");
            let _ = stdin.flush();
        }
    }

    /// Sends a stdin command (`vips …`) to every running speaker.
    pub fn set_vips(&mut self, command: &str) {
        for p in self.speakers.iter_mut().flatten() {
            if let Some(stdin) = p.stdin.as_mut() {
                let _ = writeln!(stdin, "{command}");
                let _ = stdin.flush();
            }
        }
    }

    /// Brings node `k`'s bridge port down (cut cable) or up.
    pub fn set_link(&self, k: usize, up: bool) {
        let port = format!("p-n{k}");
        self.must(&[
            "ip",
            "-n",
            &self.ns("sw"),
            "link",
            "set",
            &port,
            if up { "up" } else { "down" },
        ]);
    }

    /// Drops (or restores) node `k`'s gossip traffic only; ARP and NDP
    /// still flow (iptables does not see them).
    pub fn partition_gossip(&self, k: usize, cut: bool) {
        let ns = self.ns(&Lab::name(k));
        for chain in ["INPUT", "OUTPUT"] {
            for port_flag in ["--dport", "--sport"] {
                self.must(&[
                    "ip",
                    "netns",
                    "exec",
                    &ns,
                    "iptables",
                    if cut { "-A" } else { "-D" },
                    chain,
                    "-p",
                    "udp",
                    port_flag,
                    "7947",
                    "-j",
                    "DROP",
                ]);
            }
        }
    }

    /// Polls `cond` every 20 ms until it holds or `limit` passes.
    pub fn wait(&self, limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
        let end = Instant::now() + limit;
        loop {
            if cond() {
                return true;
            }
            if Instant::now() > end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for p in self
            .speakers
            .iter_mut()
            .chain(self.servers.iter_mut())
            .flatten()
        {
            p.kill();
        }
        for role in ["r", "n1", "n2", "n3", "x", "sw"] {
            let ns = self.ns(role);
            // Anything else left in the namespace (a prober) goes too.
            if let Ok(out) = Command::new("ip").args(["netns", "pids", &ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            }
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        }
    }
}
