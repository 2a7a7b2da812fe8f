//! gobgpd in a network namespace, linked to the host by a veth pair: the router the BGP
//! speaker tests peer with (speaker_e2e.rs, bgp_live_e2e.rs). Needs root.
#![allow(dead_code)]

use serde_json::Value;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// Runs a command, failing with its stderr.
pub fn sh(args: &[&str]) -> Result<(), String> {
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

/// The node's side of the link (in the host namespace, where the in-process speaker runs).
pub const NODE_V4: &str = "10.199.78.1";
pub const NODE_V6: &str = "fd00:78::1";
/// gobgpd's side, in the router namespace.
pub const ROUTER_V4: &str = "10.199.78.2";
pub const ROUTER_ASN: u32 = 64512;
pub const NODE_ASN: u32 = 64513;
pub const PASSWORD: &str = "s3cret-md5";

/// A router namespace running gobgpd (passive, MD5), linked to the host by a veth pair.
/// Drop kills gobgpd and deletes the namespace and the link.
pub struct Router {
    ns: String,
    host_if: String,
    dir: std::path::PathBuf,
    gobgpd: Option<Child>,
}

impl Router {
    /// gobgpd with one neighbour, this node at NODE_V4 with PASSWORD.
    pub fn start() -> Result<Router, String> {
        Router::start_with(&[(NODE_V4, PASSWORD)], &[])
    }

    /// gobgpd with a neighbour per `(node address, password)`; the host side of the link
    /// also gets each node address, the router side each of `router_addrs` too.
    pub fn start_with(neighbors: &[(&str, &str)], router_addrs: &[&str]) -> Result<Router, String> {
        for tool in ["/usr/bin/gobgpd", "/usr/bin/gobgp"] {
            if !std::path::Path::new(tool).exists() {
                return Err(format!(
                    "{tool} missing (scripts/install-test-deps installs gobgpd)"
                ));
            }
        }
        let tag = format!("pwse{}", std::process::id() % 10_000_000);
        let mut r = Router {
            ns: format!("{tag}r"),
            host_if: format!("{tag}h"),
            dir: std::env::temp_dir().join(&tag),
            gobgpd: None,
        };
        let _ = sh(&["ip", "netns", "del", &r.ns]);
        let _ = sh(&["ip", "link", "del", &r.host_if]);
        sh(&["ip", "netns", "add", &r.ns])?;
        sh(&[
            "ip", "link", "add", &r.host_if, "type", "veth", "peer", "name", "eth0", "netns", &r.ns,
        ])?;
        sh(&[
            "ip",
            "addr",
            "add",
            &format!("{NODE_V4}/24"),
            "dev",
            &r.host_if,
        ])?;
        sh(&[
            "ip",
            "addr",
            "add",
            &format!("{NODE_V6}/64"),
            "dev",
            &r.host_if,
            "nodad",
        ])?;
        for (addr, _) in neighbors.iter().filter(|(a, _)| *a != NODE_V4) {
            sh(&[
                "ip",
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                &r.host_if,
            ])?;
        }
        sh(&["ip", "link", "set", &r.host_if, "up"])?;
        let n = ["ip", "-n", r.ns.as_str()];
        for addr in router_addrs {
            sh(&[
                &n[..],
                &["addr", "add", &format!("{addr}/24"), "dev", "eth0"],
            ]
            .concat())?;
        }
        sh(&[&n[..], &["link", "set", "lo", "up"]].concat())?;
        sh(&[
            &n[..],
            &["addr", "add", &format!("{ROUTER_V4}/24"), "dev", "eth0"],
        ]
        .concat())?;
        sh(&[
            &n[..],
            &["addr", "add", "fd00:78::2/64", "dev", "eth0", "nodad"],
        ]
        .concat())?;
        sh(&[&n[..], &["link", "set", "eth0", "up"]].concat())?;
        std::fs::create_dir_all(&r.dir).map_err(|e| e.to_string())?;
        let mut conf = format!(
            "[global.config]\n  as = {ROUTER_ASN}\n  router-id = \"{ROUTER_V4}\"\n  port = 179\n"
        );
        for (addr, password) in neighbors {
            conf += &format!(
                "[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{addr}\"\n    peer-as = {NODE_ASN}\n    auth-password = \"{password}\"\n"
            );
            conf += "  [neighbors.transport.config]\n    passive-mode = true\n";
            conf += "  [neighbors.timers.config]\n    hold-time = 9\n    keepalive-interval = 3\n";
            for fam in ["ipv4-unicast", "ipv6-unicast"] {
                conf += &format!(
                    "  [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = \"{fam}\"\n"
                );
            }
        }
        let path = r.dir.join("gobgpd.toml");
        std::fs::write(&path, conf).map_err(|e| e.to_string())?;
        let log = std::fs::File::create(r.dir.join("gobgpd.log")).map_err(|e| e.to_string())?;
        let child = Command::new("ip")
            .args(["netns", "exec", &r.ns, "gobgpd", "-f"])
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
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("gobgpd: {e}"))?;
        r.gobgpd = Some(child);
        let start = Instant::now();
        while r.gobgp(&["global"]).is_none() {
            if start.elapsed() > Duration::from_secs(10) {
                return Err("gobgpd's API did not answer in 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(r)
    }

    /// `gobgp ARGS -j` in the router namespace.
    pub fn gobgp(&self, args: &[&str]) -> Option<Value> {
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

    pub fn established(&self) -> bool {
        self.established_with(NODE_V4)
    }

    /// Whether the session with the neighbour at `addr` is Established.
    pub fn established_with(&self, addr: &str) -> bool {
        self.gobgp(&["neighbor", addr])
            .is_some_and(|n| n["state"]["session_state"].as_i64() == Some(6))
    }

    /// Prefix -> paths of the global RIB of `family` ("ipv4"/"ipv6").
    pub fn rib(&self, family: &str) -> serde_json::Map<String, Value> {
        match self.gobgp(&["global", "rib", "-a", family]) {
            Some(Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        }
    }

    /// The sorted prefixes of both families.
    pub fn prefixes(&self) -> Vec<String> {
        let mut all: Vec<String> = self.rib("ipv4").keys().cloned().collect();
        all.extend(self.rib("ipv6").keys().cloned());
        all.sort();
        all
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Ok(log) = std::fs::read_to_string(self.dir.join("gobgpd.log"))
        {
            let lines: Vec<&str> = log.lines().collect();
            eprintln!("--- gobgpd.log (last 30 lines) ---");
            for l in &lines[lines.len().saturating_sub(30)..] {
                eprintln!("{l}");
            }
        }
        if let Some(mut c) = self.gobgpd.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // gobgpd ran under `ip netns exec` (which execs it): anything left in the namespace
        // is ours.
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
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn attr(path: &Value, code: u64) -> Value {
    path["attrs"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["type"].as_u64() == Some(code)))
        .cloned()
        .unwrap_or(Value::Null)
}
