//! A network-namespace lab for BGP interop: one router namespace running
//! gobgpd, FRR (zebra, bfdd, bgpd; [`frr`]) or BIRD 2 ([`bird`]), and up to three node
//! namespaces running `bgp-test-speaker`, all on one bridge (in a switch namespace, so
//! the host is never touched). Every daemon listens on the lab's addresses only.
//!
//! ```text
//!   <p>-r  198.51.100.1  2001:db8:1::1   gobgpd AS 64512, gRPC 127.0.0.1:50051
//!   <p>-n1 198.51.100.11 2001:db8:1::11  speaker (AS 64513 by default)
//!   <p>-n2 198.51.100.12 ...                       eth0 ─ p-XX ─ br0 in <p>-sw
//! ```
//!
//! Namespace names carry the test process id and a per-test tag, so tests
//! of one file run in parallel threads without collisions. [`Lab`]'s Drop
//! kills every process in the namespaces and deletes them, also when the
//! test panicked (then it prints the tails of the logs first).

#![allow(dead_code)]

pub mod bird;
pub mod frr;

use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

/// The router's ASN.
pub const ROUTER_ASN: u32 = 64512;
/// The nodes' ASN (eBGP to the router).
pub const NODE_ASN: u32 = 64513;
/// The router's IPv4 address.
pub const ROUTER_V4: &str = "198.51.100.1";

/// Node `i`'s IPv4 (0-based).
pub fn node_v4(i: usize) -> String {
    format!("198.51.100.{}", 11 + i)
}

/// Node `i`'s IPv6 (0-based).
pub fn node_v6(i: usize) -> String {
    format!("2001:db8:1::{:x}", 0x11 + i)
}

fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("spawn");
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The programs of gobgpd, the lab's default router.
pub const GOBGP: &[&str] = &["/usr/bin/gobgpd", "/usr/bin/gobgp"];

/// Why the lab cannot run here, if it cannot.
fn missing_prerequisite(tools: &[&str]) -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some("needs root for network namespaces".into());
    }
    for tool in tools {
        if !std::path::Path::new(tool).exists() {
            return Some(format!(
                "{tool} missing (scripts/install-test-deps installs gobgpd, frr and bird2)"
            ));
        }
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("iproute2 `ip` missing".into());
    }
    None
}

/// Polls `f` every 20 ms until it yields, or panics naming `what`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One gobgpd neighbor (a node).
#[derive(Clone, Debug)]
pub struct Neighbor {
    /// The node's address.
    pub address: String,
    /// The node's ASN.
    pub asn: u32,
    /// TCP MD5 password gobgpd expects.
    pub password: Option<String>,
}

/// The lab; see the module docs.
pub struct Lab {
    prefix: String,
    nodes: usize,
    /// Config files and logs.
    pub dir: PathBuf,
    gobgpd: Option<Child>,
}

impl Lab {
    /// Builds the topology, or returns `None` (after printing why) when the
    /// machine cannot run it and PORTWAY_REQUIRE_PRIVILEGED is not set.
    pub fn new(tag: &str, nodes: usize) -> Option<Lab> {
        Self::with_router(tag, nodes, GOBGP)
    }

    /// [`Lab::new`] for a router whose programs are `tools`.
    pub fn with_router(tag: &str, nodes: usize, tools: &[&str]) -> Option<Lab> {
        portway_tests::privileged(&format!("bgp lab {tag}"), missing_prerequisite(tools)).ok()?;
        let prefix = format!("pwb{}{tag}", std::process::id());
        let dir = std::env::temp_dir().join(&prefix);
        std::fs::create_dir_all(&dir).expect("lab dir");
        // FRR's daemons drop to the `frr` user and write their sockets and logs here.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let lab = Lab {
            prefix,
            nodes,
            dir,
            gobgpd: None,
        };
        let sw = lab.ns("sw");
        run(&["ip", "netns", "add", &sw]);
        run(&["ip", "-n", &sw, "link", "add", "br0", "type", "bridge"]);
        run(&["ip", "-n", &sw, "link", "set", "br0", "up"]);
        let mut members = vec![(
            "r".to_string(),
            ROUTER_V4.to_string(),
            "2001:db8:1::1".to_string(),
        )];
        members.extend((0..nodes).map(|i| (format!("n{}", i + 1), node_v4(i), node_v6(i))));
        for (role, v4, v6) in &members {
            let ns = lab.ns(role);
            let port = format!("p-{role}");
            run(&["ip", "netns", "add", &ns]);
            run(&[
                "ip", "-n", &sw, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                "netns", &ns,
            ]);
            run(&["ip", "-n", &sw, "link", "set", &port, "master", "br0"]);
            run(&["ip", "-n", &sw, "link", "set", &port, "up"]);
            run(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
            run(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{v4}/24"),
                "dev",
                "eth0",
            ]);
            run(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                "eth0",
                "nodad",
            ]);
            run(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
        }
        Some(lab)
    }

    /// The namespace name for a role (`r`, `sw`, `n1`...).
    pub fn ns(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }

    /// Node `i`'s namespace (0-based).
    pub fn node_ns(&self, i: usize) -> String {
        self.ns(&format!("n{}", i + 1))
    }

    /// Writes the gobgpd config (passive, 3/9 timers, graceful restart,
    /// IPv4 and IPv6 unicast) and starts it; returns once its API answers.
    pub fn start_gobgpd(&mut self, neighbors: &[Neighbor]) {
        let mut conf = format!(
            "[global.config]\n  as = {ROUTER_ASN}\n  router-id = \"{ROUTER_V4}\"\n  port = 179\n"
        );
        for n in neighbors {
            conf += &format!(
                "[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{}\"\n    peer-as = {}\n",
                n.address, n.asn
            );
            if let Some(pw) = &n.password {
                conf += &format!("    auth-password = \"{pw}\"\n");
            }
            conf += "  [neighbors.transport.config]\n    passive-mode = true\n";
            conf += "  [neighbors.timers.config]\n    hold-time = 9\n    keepalive-interval = 3\n";
            conf += "  [neighbors.graceful-restart.config]\n    enabled = true\n    restart-time = 60\n";
            for fam in ["ipv4-unicast", "ipv6-unicast"] {
                conf += &format!(
                    "  [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = \"{fam}\"\n    [neighbors.afi-safis.mp-graceful-restart.config]\n      enabled = true\n"
                );
            }
        }
        let path = self.dir.join("gobgpd.toml");
        std::fs::write(&path, conf).expect("write gobgpd.toml");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("gobgpd.log"))
            .expect("log");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns("r"), "gobgpd", "-f"])
            .arg(&path)
            .args([
                "-t",
                "toml",
                "-p",
                "-l",
                "info",
                "--api-hosts",
                "127.0.0.1:50051",
                "--pprof-disable",
            ])
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn gobgpd");
        self.gobgpd = Some(child);
        wait_for("gobgpd API", Duration::from_secs(10), || {
            self.gobgp(&["global"])
        });
    }

    /// Kills gobgpd abruptly (its sessions drop without NOTIFICATION).
    pub fn kill_gobgpd(&mut self) {
        if let Some(mut c) = self.gobgpd.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Runs `gobgp ARGS -j` in the router namespace; `None` if it fails.
    pub fn gobgp(&self, args: &[&str]) -> Option<Value> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns("r"), "gobgp"])
            .args(args)
            .arg("-j")
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// Runs `gobgp ARGS` (no JSON) in the router namespace; true on success.
    pub fn gobgp_ok(&self, args: &[&str]) -> bool {
        Command::new("ip")
            .args(["netns", "exec", &self.ns("r"), "gobgp"])
            .args(args)
            .status()
            .is_ok_and(|s| s.success())
    }

    /// gobgpd's view of a neighbor.
    pub fn neighbor(&self, address: &str) -> Option<Value> {
        self.gobgp(&["neighbor", address])
    }

    /// Whether gobgpd has the session with `address` Established.
    pub fn established(&self, address: &str) -> bool {
        self.neighbor(address)
            .is_some_and(|n| n["state"]["session_state"].as_i64() == Some(6))
    }

    /// The global RIB of `family` ("ipv4" / "ipv6"): prefix -> paths.
    pub fn rib(&self, family: &str) -> serde_json::Map<String, Value> {
        match self.gobgp(&["global", "rib", "-a", family]) {
            Some(Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        }
    }

    /// Starts a speaker in node `i`'s namespace, peering with the router.
    pub fn speaker(
        &self,
        i: usize,
        local_asn: u32,
        password: Option<&str>,
        extra: Value,
    ) -> SpeakerProc {
        let mut peer = json!({ "address": ROUTER_V4, "asn": ROUTER_ASN, "holdTime": "9s", "keepaliveTime": "3s" });
        if password.is_some() {
            peer["passwordSecret"] =
                json!({ "namespace": "portway-system", "name": "bgp-auth", "key": "password" });
        }
        if let (Value::Object(p), Value::Object(e)) = (&mut peer, extra) {
            p.extend(e);
        }
        let init = json!({
            "config": { "localASN": local_asn, "peers": [peer] },
            "node": { "name": format!("n{}", i + 1), "ipv4": node_v4(i), "ipv6": node_v6(i) },
            "password": password,
        });
        SpeakerProc::spawn(
            &self.node_ns(i),
            &self.dir.join(format!("speaker-n{}.log", i + 1)),
            init,
        )
    }

    /// Cuts node `i`'s cable at the switch: the router's own link stays up, as behind a
    /// real switch, so only BFD or the hold timer can tell.
    pub fn cut_cable(&self, i: usize) {
        run(&[
            "ip",
            "-n",
            &self.ns("sw"),
            "link",
            "set",
            &format!("p-n{}", i + 1),
            "down",
        ]);
    }

    /// Starts a logged daemon in the router namespace; Drop kills it with the namespace.
    pub fn spawn_in_router(&self, log: &str, args: &[&str]) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(log))
            .expect("log");
        Command::new("ip")
            .args(["netns", "exec", &self.ns("r")])
            .args(args)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {args:?}: {e}"))
    }

    /// Runs a command in the router namespace; its stdout, or `None` if it failed.
    pub fn in_router(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns("r")])
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn tail(&self, file: &str) {
        if let Ok(s) = std::fs::read_to_string(self.dir.join(file)) {
            let lines: Vec<&str> = s.lines().collect();
            eprintln!("--- {file} (last 30 lines) ---");
            for l in &lines[lines.len().saturating_sub(30)..] {
                eprintln!("{l}");
            }
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for f in ["gobgpd.log", "bgpd.log", "bfdd.log", "bird.log"] {
                self.tail(f);
            }
            for i in 0..self.nodes {
                self.tail(&format!("speaker-n{}.log", i + 1));
            }
        }
        self.kill_gobgpd();
        let mut roles = vec!["r".to_string(), "sw".to_string()];
        roles.extend((0..self.nodes).map(|i| format!("n{}", i + 1)));
        for role in roles {
            let ns = self.ns(&role);
            // Anything still running in the namespace (a speaker whose
            // handle leaked) is ours: kill it by pid, then delete.
            if let Ok(out) = Command::new("ip").args(["netns", "pids", &ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            }
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The `bgp-test-speaker` to run: cargo's, or `PORTWAY_BGP_TEST_SPEAKER` when set (a
/// copy taken right after the build, for a target directory shared between worktrees,
/// where another checkout's build replaces the one cargo names).
fn speaker_binary() -> std::ffi::OsString {
    std::env::var_os("PORTWAY_BGP_TEST_SPEAKER")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_bgp-test-speaker").into())
}

/// A `bgp-test-speaker` process in a node namespace.
pub struct SpeakerProc {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl SpeakerProc {
    fn spawn(ns: &str, log: &std::path::Path, init: Value) -> SpeakerProc {
        let log = std::fs::File::create(log).expect("speaker log");
        // With the speaker container's capabilities only (NET_RAW): TCP MD5 must not need more.
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(portway_tests::SPEAKER_CAPS)
            .arg(speaker_binary())
            .env("RUST_LOG", "portway_bgp=debug,info")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn bgp-test-speaker");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut s = SpeakerProc {
            child,
            stdin,
            stdout,
        };
        let ok = s.call(&init);
        assert_eq!(ok, json!({ "ok": true }), "speaker did not start");
        s
    }

    /// Sends one command line and reads the answer line.
    pub fn call(&mut self, cmd: &Value) -> Value {
        let stdin = self.stdin.as_mut().expect("speaker stdin open");
        // One write: Display on a Value would issue a syscall per token.
        stdin
            .write_all(format!("{cmd}\n").as_bytes())
            .expect("write to speaker");
        stdin.flush().expect("flush");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("read from speaker");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("speaker answered {line:?}: {e}"))
    }

    /// Replaces the routes: `{"203.0.113.10/32": {"communities": [...]}}`.
    pub fn set_routes(&mut self, routes: Value) {
        assert_eq!(
            self.call(&json!({ "routes": routes })),
            json!({ "ok": true })
        );
    }

    /// The status of the (only) peer.
    pub fn peer(&mut self) -> Value {
        self.call(&json!({ "status": true }))["peers"][0].clone()
    }

    /// Graceful stop: withdraw + Cease, then the process exits.
    pub fn shutdown(mut self) {
        let answer = self.call(&json!({ "shutdown": true }));
        assert_eq!(answer, json!({ "ok": true }));
        drop(self.stdin.take());
        let status = self.child.wait().expect("wait speaker");
        assert!(status.success(), "speaker exited with {status}");
    }

    /// A crash: SIGKILL, no NOTIFICATION.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A hung node agent: SIGSTOP. The kernel keeps its TCP connection alive, so only BFD
    /// (or the hold timer) notices. Drop still kills it.
    pub fn freeze(&self) {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "SIGSTOP {pid}");
    }
}

impl Drop for SpeakerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
