//! Deterministic, charset-safe, bounded names and the iControl REST path encodings.

use sha2::{Digest, Sha256};
use std::net::IpAddr;

/// Longest object name we generate (AS3 allows 190; stay well inside).
const MAX: usize = 120;

fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// `pw_<ns>_<name>_<proto>_<port>[_v6]`, only `[A-Za-z0-9_]`, starting with a letter; a long
/// name keeps its head and gets a hash of the whole so it stays unique.
pub fn object_name(ns: &str, name: &str, proto: &str, port: u16, v6: bool) -> String {
    let raw = format!(
        "pw_{}_{}_{}_{port}{}",
        clean(ns),
        clean(name),
        proto.to_lowercase(),
        if v6 { "_v6" } else { "" }
    );
    if raw.len() <= MAX {
        return raw;
    }
    let hash = hex::encode(&Sha256::digest(raw.as_bytes())[..6]);
    format!("{}_{hash}", &raw[..MAX - 13])
}

/// `~Partition~Name` for object URIs, with `%` sent as `%25`.
pub fn uri_name(partition: &str, name: &str) -> String {
    format!("~{partition}~{name}").replace('%', "%25")
}

/// A virtual's destination: `/<P>/<ip>:<port>`, IPv6 `/<P>/<ip>.<port>`.
pub fn destination(partition: &str, ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(_) => format!("/{partition}/{ip}:{port}"),
        IpAddr::V6(_) => format!("/{partition}/{ip}.{port}"),
    }
}

/// A pool member's name from its node's name: `node:port`, or `node.port` when the node's
/// name is an IPv6 address (f5devcentral/f5-cccl `f5_cccl/resource/ltm/pool_member.py`).
pub fn member_name(node: &str, port: u16) -> String {
    if node.contains(':') {
        format!("{node}.{port}")
    } else {
        format!("{node}:{port}")
    }
}

/// The name of the monitor Portway makes for the pool `base` (kind suffix included, so a
/// new kind is a new name in the one name space monitors share).
pub fn monitor_name(base: &str, kind: crate::config::MonitorKind) -> String {
    format!("{base}_{}", kind.suffix())
}

/// `addr` without `%<rd>`: how Portway compares an address of the partition's default
/// route domain, which the device writes with or without the suffix (an F5 engineer on
/// f5devcentral/f5-cccl PR #196: "Typically, it doesn't, but it's also not consistent").
pub fn strip_rd(addr: &str, rd: u32) -> &str {
    addr.strip_suffix(&format!("%{rd}") as &str).unwrap_or(addr)
}

/// The host part of `host:port` or IPv6 `host.port`, and the port.
pub fn split_host_port(name: &str) -> Option<(&str, u16)> {
    let (host, port) = if name.matches(':').count() > 1 {
        name.rsplit_once('.')?
    } else {
        name.rsplit_once(':')?
    };
    Some((host, port.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_safe_bounded_and_unique() {
        assert_eq!(
            object_name("default", "web-app", "TCP", 80, false),
            "pw_default_web_app_tcp_80"
        );
        let long = "x".repeat(250);
        let a = object_name("ns", &long, "TCP", 80, false);
        let b = object_name("ns", &(long.clone() + "y"), "TCP", 80, false);
        assert!(a.len() <= MAX && b.len() <= MAX);
        assert_ne!(a, b);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
    }

    #[test]
    fn paths_and_destinations() {
        assert_eq!(uri_name("portway", "a%1"), "~portway~a%251");
        assert_eq!(
            destination("p", "203.0.113.10".parse().expect("ip"), 80),
            "/p/203.0.113.10:80"
        );
        assert_eq!(
            destination("p", "2001:db8::10".parse().expect("ip"), 80),
            "/p/2001:db8::10.80"
        );
        assert_eq!(member_name("fd00::1", 30080), "fd00::1.30080");
        assert_eq!(member_name("10.0.0.1", 30080), "10.0.0.1:30080");
        assert_eq!(strip_rd("10.0.0.1%2", 2), "10.0.0.1");
        assert_eq!(strip_rd("10.0.0.1%22", 2), "10.0.0.1%22");
        assert_eq!(split_host_port("fd00::1%2.80"), Some(("fd00::1%2", 80)));
        assert_eq!(split_host_port("web1:80"), Some(("web1", 80)));
    }
}
