//! What the router namespace sees: `arping`, `ndisc6`, its neighbour
//! table, and TCP connections through the VIPs.

use super::{Lab, PORT, Proc};
use std::collections::BTreeSet;
use std::process::{Command, Output};

impl Lab {
    fn in_router(&self, args: &[&str]) -> Output {
        let r = self.ns("r");
        let mut all = vec!["ip", "netns", "exec", r.as_str()];
        all.extend_from_slice(args);
        self.run(&all)
    }

    /// MACs that answered `arping` from the router (2 broadcast probes), sorted.
    pub fn arping(&self, ip: &str) -> Vec<String> {
        self.arping_from("r", "eth0", ip)
    }

    /// MACs that answered `arping` sent from `iface` in the namespace of `role`.
    pub fn arping_from(&self, role: &str, iface: &str, ip: &str) -> Vec<String> {
        let ns = self.ns(role);
        // -b: keep broadcasting, so a second responder would answer too.
        let out = self.run(&[
            "ip", "netns", "exec", &ns, "arping", "-b", "-I", iface, "-c", "2", "-w", "2", ip,
        ]);
        let text = String::from_utf8_lossy(&out.stdout);
        let macs: BTreeSet<String> = text
            .lines()
            .filter_map(|l| Some(l.split_once('[')?.1.split_once(']')?.0.to_ascii_lowercase()))
            .collect();
        macs.into_iter().collect()
    }

    /// A second link on node `k`: a veth pair in its namespace, `name` (no address, the
    /// node's side) and `{name}p` with `addr` (a host on that link), both up. An address
    /// of the lab's LAN is not reachable over it.
    pub fn add_side_link(&self, k: usize, name: &str, addr: &str) {
        let ns = self.ns(&Lab::name(k));
        let peer = format!("{name}p");
        self.must(&[
            "ip", "-n", &ns, "link", "add", name, "type", "veth", "peer", "name", &peer,
        ]);
        self.must(&["ip", "-n", &ns, "addr", "add", addr, "dev", &peer]);
        for link in [name, peer.as_str()] {
            self.must(&["ip", "-n", &ns, "link", "set", link, "up"]);
        }
    }

    /// MACs that answered `ndisc6 -m` (waits for duplicates), sorted.
    pub fn ndisc6(&self, ip: &str) -> Vec<String> {
        let out = self.in_router(&[
            "ndisc6", "-m", "-q", "-n", "-r", "2", "-w", "400", ip, "eth0",
        ]);
        let macs: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim().to_ascii_lowercase())
            .filter(|l| l.len() == 17)
            .collect();
        macs.into_iter().collect()
    }

    /// The router's neighbour entry for `ip` (its MAC), if any.
    pub fn neigh(&self, ip: &str) -> Option<String> {
        let out = self.run(&[
            "ip",
            "-n",
            &self.ns("r"),
            "neigh",
            "show",
            ip,
            "dev",
            "eth0",
        ]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let mut words = text.split_whitespace();
        words.find(|w| *w == "lladdr")?;
        words.next().map(str::to_ascii_lowercase)
    }

    /// One TCP connection from the router to the VIP: the node that answered.
    pub fn tcp(&self, ip: &str) -> Option<String> {
        let target = if ip.contains(':') {
            format!("[{ip}]:{PORT}")
        } else {
            format!("{ip}:{PORT}")
        };
        let bin = self.bin.to_string_lossy().to_string();
        let out = self.in_router(&[
            &bin,
            "probe",
            "--target",
            &target,
            "--once",
            "--timeout-ms",
            "300",
        ]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.split_whitespace()
            .nth(2)
            .filter(|_| text.contains(" ok "))
            .map(str::to_string)
    }

    /// Starts a prober in the router that connects to `ip` continuously.
    pub fn prober(&self, ip: &str) -> Prober {
        let target = if ip.contains(':') {
            format!("[{ip}]:{PORT}")
        } else {
            format!("{ip}:{PORT}")
        };
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns("r")]).arg(&self.bin);
        cmd.args([
            "probe",
            "--target",
            &target,
            "--timeout-ms",
            "50",
            "--interval-ms",
            "5",
        ]);
        Prober(Proc::spawn(cmd))
    }
}

/// What `l2-test-speaker arp-probe` saw.
#[derive(Debug, Default)]
pub struct ArpProbeSummary {
    /// Tagged requests sent.
    pub probes: usize,
    /// Requests answered at least once.
    pub answered: usize,
    /// Requests answered by two MACs or more.
    pub double: usize,
    /// Every MAC that answered.
    pub macs: Vec<String>,
    /// Longest run of unanswered requests.
    pub longest_gap_ms: i64,
    /// The `double …` lines.
    pub doubles: Vec<String>,
}

/// A running tagged ARP probe in the router.
pub struct ArpProbe(Proc);

impl ArpProbe {
    /// Waits for the probe to finish and reads its summary.
    pub fn finish(mut self) -> ArpProbeSummary {
        let _ = self.0.child.wait();
        // The reader thread may still be copying the last lines.
        std::thread::sleep(std::time::Duration::from_millis(50));
        let mut out = ArpProbeSummary::default();
        for (_, line) in self.0.lines().iter() {
            let field = |k: &str| {
                line.split_whitespace()
                    .find_map(|w| w.strip_prefix(k))
                    .map(str::to_string)
            };
            let num = |k: &str| field(k).and_then(|v| v.parse().ok()).unwrap_or(0);
            if line.starts_with("arp-probe ") {
                out.probes = num("probes=") as usize;
                out.answered = num("answered=") as usize;
                out.double = num("double=") as usize;
                out.macs = field("macs=")
                    .map(|m| {
                        m.split(',')
                            .filter(|s| !s.is_empty())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default();
            } else if line.starts_with("gap ") {
                out.longest_gap_ms = num("longest_ms=");
            } else if line.starts_with("double ") {
                out.doubles.push(line.clone());
            }
        }
        out
    }
}

impl Lab {
    /// Starts a tagged ARP probe for `ip` in the router: a request every 2 ms for
    /// `duration`, each answer matched to its request (see `arp_probe.rs`).
    pub fn arp_probe(&self, ip: &str, duration: std::time::Duration) -> ArpProbe {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns("r")]).arg(&self.bin);
        cmd.args([
            "arp-probe",
            "--iface",
            "eth0",
            "--target",
            ip,
            "--interval-ms",
            "2",
            "--duration-ms",
            &duration.as_millis().to_string(),
        ]);
        ArpProbe(Proc::spawn(cmd))
    }
}

/// A running TCP prober in the router.
pub struct Prober(Proc);

impl Prober {
    /// Time of the first successful connection at or after `t0` answered by
    /// `name`.
    pub fn first_ok_from(&self, t0: i64, name: &str) -> Option<i64> {
        let want = format!("ok {name}");
        self.0
            .lines()
            .iter()
            .find(|(t, l)| *t >= t0 && *l == want)
            .map(|(t, _)| *t)
    }

    /// The node that answered last.
    pub fn last_ok(&self) -> Option<String> {
        self.0
            .lines()
            .iter()
            .rev()
            .find_map(|(_, l)| l.strip_prefix("ok ").map(str::to_string))
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.0.kill();
    }
}
