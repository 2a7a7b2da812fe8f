//! What the speakers say: ownership, membership and timings, read from
//! their event lines.

use super::{Lab, NODES};
use std::time::Duration;

impl Lab {
    /// Whether node `k`'s speaker (running) announces `ip`, from its log.
    pub fn announces(&self, k: usize, ip: &str) -> bool {
        let Some(p) = self.speakers[k].as_ref() else {
            return false;
        };
        let take = format!("takeover ip={ip} ");
        let release = format!("release ip={ip} ");
        let last = p
            .lines()
            .iter()
            .rev()
            .find(|(_, l)| {
                l.starts_with(&take) || l.starts_with(&release) || l.starts_with("stopped")
            })
            .map(|(_, l)| l.starts_with(&take));
        last == Some(true) && self.alive(k)
    }

    fn alive(&self, k: usize) -> bool {
        self.speakers[k]
            .as_ref()
            .is_some_and(|p| !p.lines().iter().any(|(_, l)| l.starts_with("stopped")))
            && self.speakers_running(k)
    }

    fn speakers_running(&self, k: usize) -> bool {
        // A killed child was waited for; its id no longer exists in /proc.
        self.speakers[k]
            .as_ref()
            .is_some_and(|p| std::path::Path::new(&format!("/proc/{}", p.child.id())).exists())
    }

    /// The single node announcing `ip` once exactly one does.
    pub fn wait_owner(&self, ip: &str, limit: Duration) -> Option<usize> {
        let mut found = None;
        self.wait(limit, || {
            let owners: Vec<usize> = NODES
                .iter()
                .copied()
                .filter(|k| self.announces(*k, ip))
                .collect();
            found = (owners.len() == 1).then(|| owners[0]);
            found.is_some()
        });
        found
    }

    /// Whether node `k` becomes the only announcer of `ip` within `limit`:
    /// after a heal, rendezvous hashing hands the VIP back to its first owner,
    /// and whichever node answered first may be about to release it.
    pub fn wait_owner_is(&self, ip: &str, k: usize, limit: Duration) -> bool {
        self.wait(limit, || {
            NODES.iter().all(|n| self.announces(*n, ip) == (*n == k))
        })
    }

    /// Like [`Self::wait_owner`], for an owner other than `old`.
    pub fn wait_owner_except(&self, ip: &str, old: usize, limit: Duration) -> Option<usize> {
        let mut found = None;
        self.wait(limit, || {
            let owners: Vec<usize> = NODES
                .iter()
                .copied()
                .filter(|k| *k != old && self.announces(*k, ip))
                .collect();
            found = (owners.len() == 1).then(|| owners[0]);
            found.is_some()
        });
        found
    }

    /// Live speakers in node `k`'s view, itself included (from its log).
    pub fn live_count(&self, k: usize) -> usize {
        let Some(p) = self.speakers[k].as_ref() else {
            return 0;
        };
        p.lines()
            .iter()
            .rev()
            .find_map(|(_, l)| {
                l.strip_prefix("quorum ")?
                    .split_whitespace()
                    .find_map(|kv| kv.strip_prefix("live="))?
                    .parse()
                    .ok()
            })
            .unwrap_or(0)
    }

    /// The first line of node `k`'s speaker at or after `t0` containing `what`.
    pub fn first_line_after(&self, k: usize, t0: i64, what: &str) -> Option<(i64, String)> {
        self.speakers[k]
            .as_ref()?
            .lines()
            .iter()
            .find(|(t, l)| *t >= t0 && l.contains(what))
            .cloned()
    }

    /// The addresses node `k`'s speaker announces now, from its takeover and release lines.
    pub fn owned_now(&self, k: usize) -> std::collections::BTreeSet<String> {
        let mut out = std::collections::BTreeSet::new();
        for (_, l) in self.lines_after(k, 0) {
            let ip = |rest: &str| rest.split_whitespace().next().map(str::to_string);
            if let Some(ip) = l.strip_prefix("takeover ip=").and_then(ip) {
                out.insert(ip);
            } else if let Some(ip) = l.strip_prefix("release ip=").and_then(ip) {
                out.remove(&ip);
            }
        }
        out
    }

    /// All of node `k`'s speaker lines at or after `t0`.
    pub fn lines_after(&self, k: usize, t0: i64) -> Vec<(i64, String)> {
        self.speakers[k]
            .as_ref()
            .map(|p| {
                p.lines()
                    .iter()
                    .filter(|(t, _)| *t >= t0)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }
}
