//! Which local interfaces may carry a VIP, and which networks this node
//! publishes to its peers for the election's interface eligibility.
//!
//! An interface is usable when it is up, not loopback, broadcast-capable,
//! ARP-enabled, has an Ethernet MAC and is not enslaved to a bridge or bond
//! (its master answers instead; MetalLB applies the same rules). With
//! `l2.interfaces` empty, a VIP goes on the usable interfaces whose subnet
//! holds it; with a list, on the listed usable interfaces.

use crate::frame::Mac;
use crate::responder::InterfaceInfo;
use crate::sys::SysInterface;
use ipnet::IpNet;
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv6Addr};

/// Where a VIP is answered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum InterfaceChoice {
    /// The configured `l2.interfaces`, or else those whose subnet holds the IP.
    #[default]
    Auto,
    /// Exactly these interfaces (if usable).
    Named(BTreeSet<String>),
}

/// A local interface with what the announcer needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalInterface {
    /// Kernel view.
    pub sys: SysInterface,
    /// Enslaved to a bridge or bond (`/sys/class/net/NAME/master` exists).
    pub enslaved: bool,
}

impl LocalInterface {
    /// Whether ARP/NDP can be answered here.
    pub fn usable(&self) -> bool {
        let s = &self.sys;
        s.up && s.running
            && !s.loopback
            && s.broadcast
            && !s.noarp
            && s.mac.is_some()
            && s.index > 0
            && !self.enslaved
    }

    fn mac(&self) -> Option<Mac> {
        self.sys.mac
    }

    /// Its first IPv6 link-local address.
    pub fn link_local(&self) -> Option<Ipv6Addr> {
        self.sys.addrs.iter().find_map(|n| match n.addr() {
            IpAddr::V6(v6) if v6.is_unicast_link_local() => Some(v6),
            _ => None,
        })
    }

    /// The responder's view of it.
    pub fn info(&self) -> Option<InterfaceInfo> {
        Some(InterfaceInfo {
            name: self.sys.name.clone(),
            mac: self.mac()?,
            link_local: self.link_local(),
        })
    }
}

/// Reads the interfaces of this network namespace.
pub fn scan() -> std::io::Result<Vec<LocalInterface>> {
    Ok(crate::sys::interfaces()?
        .into_iter()
        .map(|sys| {
            let enslaved = std::path::Path::new("/sys/class/net")
                .join(&sys.name)
                .join("master")
                .exists();
            LocalInterface { sys, enslaved }
        })
        .collect())
}

fn is_link_local(net: &IpNet) -> bool {
    match net.addr() {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_unicast_link_local(),
    }
}

/// The addresses of the usable interfaces: never announced as VIPs, since answering ARP
/// for a node's own address would steal it (issue 20, defect 5). Addresses on loopback
/// or ARP-less interfaces (kube-ipvs0, or a VIP bound to `lo` on purpose) do not count.
pub fn local_addrs(ifaces: &[LocalInterface]) -> BTreeSet<IpAddr> {
    ifaces
        .iter()
        .filter(|i| i.usable())
        .flat_map(|i| i.sys.addrs.iter().map(IpNet::addr))
        .collect()
}

/// The networks this node can announce into, published in its gossip
/// identity: the subnets of its usable interfaces, or everything when one
/// of the configured `l2.interfaces` is usable here.
pub fn announce_nets(configured: &[String], ifaces: &[LocalInterface]) -> Vec<IpNet> {
    let usable = ifaces.iter().filter(|i| i.usable());
    if !configured.is_empty() {
        return if usable.clone().any(|i| configured.contains(&i.sys.name)) {
            vec![IpNet::V4(Default::default()), IpNet::V6(Default::default())]
        } else {
            Vec::new()
        };
    }
    let nets: BTreeSet<IpNet> = usable
        .flat_map(|i| i.sys.addrs.iter())
        .filter(|n| !is_link_local(n))
        .map(IpNet::trunc)
        .collect();
    nets.into_iter().collect()
}

/// The usable interfaces that answer for `ip` under `choice`.
pub fn interfaces_for(
    ip: IpAddr,
    choice: &InterfaceChoice,
    configured: &[String],
    ifaces: &[LocalInterface],
) -> BTreeSet<String> {
    ifaces
        .iter()
        .filter(|i| i.usable())
        .filter(|i| match choice {
            InterfaceChoice::Named(names) => names.contains(&i.sys.name),
            InterfaceChoice::Auto if !configured.is_empty() => configured.contains(&i.sys.name),
            InterfaceChoice::Auto => i.sys.addrs.iter().any(|n| n.contains(&ip)),
        })
        .map(|i| i.sys.name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(name: &str, addrs: &[&str]) -> LocalInterface {
        LocalInterface {
            sys: SysInterface {
                name: name.into(),
                index: 2,
                mac: Some([2, 0, 0, 0, 0, 1]),
                up: true,
                running: true,
                loopback: false,
                broadcast: true,
                noarp: false,
                addrs: addrs.iter().map(|a| a.parse().expect("net")).collect(),
            },
            enslaved: false,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn auto_choice_follows_subnets() {
        let mut lo = iface("lo", &["127.0.0.1/8", "198.51.100.100/32"]);
        lo.sys.loopback = true;
        let mut down = iface("eth2", &["198.51.100.5/24"]);
        down.sys.up = false;
        let mut port = iface("eth3", &["198.51.100.6/24"]);
        port.enslaved = true;
        let ifaces = vec![
            iface(
                "eth0",
                &["198.51.100.11/24", "2001:db8:1::11/64", "fe80::1/64"],
            ),
            iface("eth1", &["10.1.0.2/16"]),
            lo,
            down,
            port,
        ];
        let none = &[];
        assert_eq!(
            interfaces_for(ip("198.51.100.100"), &InterfaceChoice::Auto, none, &ifaces),
            ["eth0".to_string()].into()
        );
        assert_eq!(
            interfaces_for(ip("10.1.200.1"), &InterfaceChoice::Auto, none, &ifaces),
            ["eth1".to_string()].into()
        );
        assert!(interfaces_for(ip("192.0.2.1"), &InterfaceChoice::Auto, none, &ifaces).is_empty());
        assert_eq!(
            interfaces_for(ip("2001:db8:1::100"), &InterfaceChoice::Auto, none, &ifaces),
            ["eth0".to_string()].into()
        );
        let nets: Vec<String> = announce_nets(none, &ifaces)
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(nets, ["10.1.0.0/16", "198.51.100.0/24", "2001:db8:1::/64"]);
    }

    /// A cut cable (or a bridge port taken down) leaves the interface up without carrier:
    /// it must stop carrying VIPs and its subnet must leave the published networks, so
    /// the peers elect another owner (issue 24, item 3).
    #[test]
    fn an_interface_without_carrier_carries_nothing() {
        let mut eth0 = iface("eth0", &["198.51.100.11/24"]);
        eth0.sys.running = false;
        let ifaces = vec![eth0, iface("eth1", &["10.1.0.2/16"])];
        assert!(
            interfaces_for(ip("198.51.100.100"), &InterfaceChoice::Auto, &[], &ifaces).is_empty()
        );
        let nets: Vec<String> = announce_nets(&[], &ifaces)
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(nets, ["10.1.0.0/16"]);
        assert_eq!(local_addrs(&ifaces), [ip("10.1.0.2")].into());
    }

    #[test]
    fn configured_interfaces_take_every_ip() {
        let ifaces = vec![iface("eth0", &["198.51.100.11/24"]), iface("eth1", &[])];
        let configured = vec!["eth1".to_string(), "eth9".to_string()];
        assert_eq!(
            interfaces_for(
                ip("192.0.2.1"),
                &InterfaceChoice::Auto,
                &configured,
                &ifaces
            ),
            ["eth1".to_string()].into()
        );
        let nets: Vec<String> = announce_nets(&configured, &ifaces)
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(nets, ["0.0.0.0/0", "::/0"]);
        assert!(announce_nets(&["eth9".to_string()], &ifaces).is_empty());
        let named = InterfaceChoice::Named(["eth0".to_string()].into());
        assert_eq!(
            interfaces_for(ip("192.0.2.1"), &named, &configured, &ifaces),
            ["eth0".to_string()].into()
        );
    }

    #[test]
    fn scan_sees_this_namespace() {
        let all = scan().expect("scan");
        assert!(all.iter().any(|i| i.sys.loopback && !i.usable()));
    }
}
