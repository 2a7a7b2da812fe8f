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
        // -b: keep broadcasting, so a second responder would answer too.
        let out = self.in_router(&["arping", "-b", "-I", "eth0", "-c", "2", "-w", "2", ip]);
        let text = String::from_utf8_lossy(&out.stdout);
        let macs: BTreeSet<String> = text
            .lines()
            .filter_map(|l| Some(l.split_once('[')?.1.split_once(']')?.0.to_ascii_lowercase()))
            .collect();
        macs.into_iter().collect()
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
