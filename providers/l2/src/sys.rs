//! The only FFI of the crate: AF_PACKET sockets and the interface list.
//!
//! One packet socket per interface receives ARP frames and ICMPv6
//! neighbour solicitations and advertisements (a classic BPF filter drops everything else in the
//! kernel, and `PACKET_IGNORE_OUTGOING` drops our own frames) and sends
//! complete Ethernet frames. The socket is created with protocol 0 (receives
//! nothing), gets its filter, and only then is bound to `ETH_P_ALL` on the
//! interface, so no unfiltered frame is ever queued.
//!
//! Interfaces come from `getifaddrs(3)`: name, index, flags, MAC and
//! addresses with prefix lengths.
#![allow(unsafe_code)]

use crate::frame::Mac;
use ipnet::IpNet;
use std::collections::BTreeMap;
use std::ffi::CStr;
use std::io;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// One network interface as the kernel reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SysInterface {
    /// Interface name (`eth0`).
    pub name: String,
    /// Interface index; 0 if the kernel reported no link-layer entry.
    pub index: u32,
    /// Ethernet address, if the link layer has a 6-byte one.
    pub mac: Option<Mac>,
    /// `IFF_UP`.
    pub up: bool,
    /// `IFF_RUNNING`: the link has carrier (operstate up). An interface that is up but
    /// lost its cable, or whose bridge port went down, has `up` without `running`.
    pub running: bool,
    /// `IFF_LOOPBACK`.
    pub loopback: bool,
    /// `IFF_BROADCAST`: ARP is possible.
    pub broadcast: bool,
    /// `IFF_NOARP`.
    pub noarp: bool,
    /// Addresses with their prefix lengths.
    pub addrs: Vec<IpNet>,
}

/// Lists the interfaces of the current network namespace.
pub fn interfaces() -> io::Result<Vec<SysInterface>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head we free with freeifaddrs below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut by_name: BTreeMap<String, SysInterface> = BTreeMap::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a non-null node of the list getifaddrs returned,
        // valid until freeifaddrs.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let name = unsafe { CStr::from_ptr(ifa.ifa_name) }
            .to_string_lossy()
            .into_owned();
        let entry = by_name.entry(name.clone()).or_insert_with(|| SysInterface {
            name,
            ..SysInterface::default()
        });
        let flags = ifa.ifa_flags;
        entry.up = flags & libc::IFF_UP as u32 != 0;
        entry.running = flags & libc::IFF_RUNNING as u32 != 0;
        entry.loopback = flags & libc::IFF_LOOPBACK as u32 != 0;
        entry.broadcast = flags & libc::IFF_BROADCAST as u32 != 0;
        entry.noarp = flags & libc::IFF_NOARP as u32 != 0;
        if ifa.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: ifa_addr is non-null and points to a sockaddr whose real
        // type is given by sa_family; each branch reads only that type.
        unsafe {
            match i32::from((*ifa.ifa_addr).sa_family) {
                libc::AF_PACKET => {
                    let ll = &*(ifa.ifa_addr as *const libc::sockaddr_ll);
                    entry.index = u32::try_from(ll.sll_ifindex).unwrap_or(0);
                    if ll.sll_halen == 6 {
                        let mut mac = [0u8; 6];
                        mac.copy_from_slice(&ll.sll_addr[..6]);
                        entry.mac = Some(mac);
                    }
                }
                libc::AF_INET => {
                    let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                    let prefix = if ifa.ifa_netmask.is_null() {
                        32
                    } else {
                        let mask = &*(ifa.ifa_netmask as *const libc::sockaddr_in);
                        u32::from_be(mask.sin_addr.s_addr).count_ones() as u8
                    };
                    if let Ok(net) = IpNet::new(IpAddr::V4(ip), prefix) {
                        entry.addrs.push(net);
                    }
                }
                libc::AF_INET6 => {
                    let sin6 = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                    let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                    let prefix = if ifa.ifa_netmask.is_null() {
                        128
                    } else {
                        let mask = &*(ifa.ifa_netmask as *const libc::sockaddr_in6);
                        mask.sin6_addr
                            .s6_addr
                            .iter()
                            .map(|b| b.count_ones())
                            .sum::<u32>() as u8
                    };
                    if let Ok(net) = IpNet::new(IpAddr::V6(ip), prefix) {
                        entry.addrs.push(net);
                    }
                }
                _ => {}
            }
        }
    }
    // SAFETY: `head` came from getifaddrs and is freed exactly once.
    unsafe { libc::freeifaddrs(head) };
    Ok(by_name.into_values().collect())
}

/// What a packet socket receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Receive {
    /// ARP requests and ICMPv6 neighbour solicitations: what the responder answers.
    Requests,
    /// Every ARP frame (requests and replies): for probes that count answers.
    AllArp,
}

/// Classic BPF: every ARP frame.
fn filter_all_arp() -> [libc::sock_filter; 4] {
    let op = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    [
        op(0x28, 0, 0, 12),     // ethertype
        op(0x15, 0, 1, 0x0806), // ARP? else drop
        op(0x06, 0, 0, 0xffff), // accept
        op(0x06, 0, 0, 0),      // drop
    ]
}

/// Classic BPF: accept every ARP frame (requests to answer; replies and announcements
/// that reveal another host using an owned address, see [`crate::claim`]) and ICMPv6
/// neighbour solicitations and advertisements that follow the IPv6 header directly;
/// drop everything else.
fn filter() -> [libc::sock_filter; 10] {
    const LDH_ABS: u16 = 0x28; // BPF_LD | BPF_H | BPF_ABS
    const LDB_ABS: u16 = 0x30; // BPF_LD | BPF_B | BPF_ABS
    const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K
    let op = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    [
        op(LDH_ABS, 0, 0, 12),   // 0: ethertype
        op(JEQ_K, 6, 0, 0x0806), // 1: ARP? -> 8 accept, else 2
        op(JEQ_K, 0, 6, 0x86dd), // 2: IPv6? else 9 drop
        op(LDB_ABS, 0, 0, 20),   // 3: next header
        op(JEQ_K, 0, 4, 58),     // 4: ICMPv6? else 9 drop
        op(LDB_ABS, 0, 0, 54),   // 5: ICMPv6 type
        op(JEQ_K, 1, 0, 135),    // 6: neighbour solicitation? -> 8 accept, else 7
        op(JEQ_K, 0, 1, 136),    // 7: neighbour advertisement? -> 8 accept, else 9 drop
        op(RET_K, 0, 0, 0xffff), // 8: accept
        op(RET_K, 0, 0, 0),      // 9: drop
    ]
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// A non-blocking AF_PACKET socket bound to one interface.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
}

impl PacketSocket {
    /// Opens the socket on interface `index` (needs CAP_NET_RAW), receiving requests.
    pub fn open(index: u32) -> io::Result<Self> {
        Self::open_for(index, Receive::Requests)
    }

    /// Opens the socket on interface `index`, receiving `what`.
    pub fn open_for(index: u32, what: Receive) -> io::Result<Self> {
        // SAFETY: plain syscall; the returned fd is owned right away.
        let raw = check(unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        })?;
        // SAFETY: `raw` is a fresh, valid fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let (requests, all_arp) = (filter(), filter_all_arp());
        let prog: &[libc::sock_filter] = match what {
            Receive::Requests => &requests,
            Receive::AllArp => &all_arp,
        };
        let fprog = libc::sock_fprog {
            len: prog.len() as u16,
            filter: prog.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: the kernel copies the program during the call; `prog`
        // outlives it. The option lengths match the passed types.
        unsafe {
            check(libc::setsockopt(
                raw,
                libc::SOL_SOCKET,
                libc::SO_ATTACH_FILTER,
                (&fprog as *const libc::sock_fprog).cast(),
                size_of::<libc::sock_fprog>() as libc::socklen_t,
            ))?;
            let one: libc::c_int = 1;
            check(libc::setsockopt(
                raw,
                libc::SOL_PACKET,
                libc::PACKET_IGNORE_OUTGOING,
                (&one as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            ))?;
        }
        // SAFETY: an all-zero sockaddr_ll is valid; we fill the fields bind
        // reads and pass its exact size.
        let mut sll: libc::sockaddr_ll = unsafe { zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        sll.sll_ifindex =
            i32::try_from(index).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: see above.
        check(unsafe {
            libc::bind(
                raw,
                (&sll as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        })?;
        Ok(Self { fd })
    }

    /// Opens the socket and registers it with the tokio reactor (read
    /// readiness only; sends never wait).
    pub fn open_async(index: u32) -> io::Result<tokio::io::unix::AsyncFd<Self>> {
        let sock = Self::open(index)?;
        // SAFETY: `PacketSocket` owns its fd (an OwnedFd that is never
        // replaced), so `as_raw_fd` returns the same open descriptor for as
        // long as the AsyncFd owns the socket.
        unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(sock, tokio::io::Interest::READABLE)
        }
        .map_err(|e| e.into_parts().1)
    }

    /// Reads one frame (truncated to `buf`); `WouldBlock` when none waits.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid for writes of its length.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// Sends one complete Ethernet frame on the bound interface.
    pub fn send(&self, frame: &[u8]) -> io::Result<usize> {
        // SAFETY: `frame` is valid for reads of its length.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}

impl AsRawFd for PacketSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// A rtnetlink socket subscribed to link and address changes: it wakes the speaker the
/// moment a cable is cut or an address goes, instead of at the next periodic scan. The
/// messages themselves are not parsed (the interfaces are listed again with
/// `getifaddrs`), so no netlink codec is needed.
#[derive(Debug)]
pub struct LinkWatch {
    fd: OwnedFd,
}

impl LinkWatch {
    /// Opens the socket and joins the link, IPv4 and IPv6 address groups (no privilege
    /// needed), registered with the tokio reactor.
    pub fn open_async() -> io::Result<tokio::io::unix::AsyncFd<Self>> {
        // SAFETY: plain syscall; the returned fd is owned right away.
        let raw = check(unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        })?;
        // SAFETY: `raw` is a fresh, valid fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: an all-zero sockaddr_nl is valid (pid 0: the kernel assigns one); we set
        // the family and groups and pass its exact size.
        let mut nl: libc::sockaddr_nl = unsafe { zeroed() };
        nl.nl_family = libc::AF_NETLINK as u16;
        nl.nl_groups =
            (libc::RTMGRP_LINK | libc::RTMGRP_IPV4_IFADDR | libc::RTMGRP_IPV6_IFADDR) as u32;
        // SAFETY: see above.
        check(unsafe {
            libc::bind(
                raw,
                (&nl as *const libc::sockaddr_nl).cast(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        })?;
        // SAFETY: `LinkWatch` owns its fd for as long as the AsyncFd holds it (as for
        // `PacketSocket::open_async`).
        unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(
                Self { fd },
                tokio::io::Interest::READABLE,
            )
        }
        .map_err(|e| e.into_parts().1)
    }

    /// Reads and discards every queued message; `Ok(true)` if there was any. An
    /// overflow (`ENOBUFS`: changes were lost) also counts as a change.
    pub fn drain(&self) -> io::Result<bool> {
        let mut buf = [0u8; 8192];
        let mut any = false;
        loop {
            // SAFETY: `buf` is valid for writes of its length.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n >= 0 {
                any = true;
                continue;
            }
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EAGAIN) => Ok(any),
                Some(libc::ENOBUFS) | Some(libc::EINTR) => {
                    any = true;
                    continue;
                }
                _ => Err(e),
            };
        }
    }
}

impl AsRawFd for LinkWatch {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_listed() {
        let all = interfaces().expect("getifaddrs");
        let lo = all
            .iter()
            .find(|i| i.name == "lo")
            .expect("lo exists in every namespace");
        assert!(lo.loopback);
        assert!(lo.index > 0);
    }

    /// The filter's jumps land where the comments say: run it on fixtures.
    #[test]
    fn filter_accepts_arp_and_neighbour_discovery_only() {
        use crate::fixtures::*;
        fn run(prog: &[libc::sock_filter], pkt: &[u8]) -> u32 {
            let (mut acc, mut pc) = (0u32, 0usize);
            loop {
                let i = prog[pc];
                match i.code {
                    0x28 => {
                        acc = u32::from(u16::from_be_bytes([
                            pkt[i.k as usize],
                            pkt[i.k as usize + 1],
                        ]))
                    }
                    0x30 => acc = u32::from(pkt[i.k as usize]),
                    0x15 => {
                        pc += 1 + usize::from(if acc == i.k { i.jt } else { i.jf });
                        continue;
                    }
                    0x06 => return i.k,
                    other => panic!("unexpected opcode {other:#x}"),
                }
                pc += 1;
            }
        }
        let prog = filter();
        for accepted in [
            &ARPING_REQUEST[..],
            &KERNEL_ARP_REQUEST,
            &ARPING_DAD_PROBE,
            &KERNEL_NS,
            &NDISC6_NS,
            &ARPING_GARP_REQUEST,
            // Replies and advertisements: another host using an address (conflicts).
            &KERNEL_ARP_REPLY,
            &ARPING_GARP_REPLY,
            &KERNEL_NA,
        ] {
            assert_ne!(run(&prog, accepted), 0);
        }
        assert_eq!(run(&prog, &ICMPV6_PORT_UNREACHABLE), 0);
    }
}
