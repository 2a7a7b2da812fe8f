//! The hop check of single-hop BFD (RFC 5881 §5): every packet received must carry TTL
//! (IPv4) or Hop Limit (IPv6) 255, which only a neighbour on the link can send.
//!
//! The kernel reports a datagram's TTL as ancillary data (`IP_RECVTTL`,
//! `IPV6_RECVHOPLIMIT`), read with `recvmsg`. socket2 sets the IPv6 option but not the
//! IPv4 one, and hands control messages back as raw bytes; `IP_MINTTL` (which would drop
//! them in the kernel) applies to TCP only. So this module makes the two calls itself:
//! with md5.rs, the crate's only `unsafe` code, each call on local, initialized values.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd};

/// Asks the kernel to report the TTL / Hop Limit of every datagram received on `socket`.
pub fn set_recv_ttl(socket: &impl AsFd, ipv6: bool) -> io::Result<()> {
    let (level, name) = if ipv6 {
        (libc::IPPROTO_IPV6, libc::IPV6_RECVHOPLIMIT)
    } else {
        (libc::IPPROTO_IP, libc::IP_RECVTTL)
    };
    let on: libc::c_int = 1;
    // SAFETY: the pointer and length describe `on`, a live c_int; the fd is open (borrowed).
    let rc = unsafe {
        libc::setsockopt(
            socket.as_fd().as_raw_fd(),
            level,
            name,
            (&raw const on).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// One datagram, non-blocking: its length, sender, and TTL / Hop Limit if reported.
pub fn recv_with_ttl(
    socket: &impl AsFd,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr, Option<u8>)> {
    // SAFETY (all blocks below): every pointer handed to the kernel points into a local
    // that outlives the call, with its true length; the CMSG_* macros walk only the
    // control buffer the kernel filled, bounded by msg_controllen; the address is read
    // as the family the kernel wrote into it.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut control = [0u64; 16];
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&raw mut addr).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    let n = unsafe { libc::recvmsg(socket.as_fd().as_raw_fd(), &raw mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut ttl = None;
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&raw const msg) };
    while !cmsg.is_null() {
        let (level, kind) = unsafe { ((*cmsg).cmsg_level, (*cmsg).cmsg_type) };
        if (level == libc::IPPROTO_IP && kind == libc::IP_TTL)
            || (level == libc::IPPROTO_IPV6 && kind == libc::IPV6_HOPLIMIT)
        {
            let v: libc::c_int =
                unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>()) };
            ttl = u8::try_from(v).ok();
        }
        cmsg = unsafe { libc::CMSG_NXTHDR(&raw const msg, cmsg) };
    }
    let from = match i32::from(addr.ss_family) {
        libc::AF_INET => {
            let a = unsafe { *(&raw const addr).cast::<libc::sockaddr_in>() };
            SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            ))
        }
        libc::AF_INET6 => {
            let a = unsafe { *(&raw const addr).cast::<libc::sockaddr_in6>() };
            SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            ))
        }
        other => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("datagram from address family {other}"),
            ));
        }
    };
    Ok((n as usize, from, ttl))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    #[test]
    fn reports_the_ttl_of_a_datagram() {
        let rx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        set_recv_ttl(&rx, false).expect("IP_RECVTTL");
        let tx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        for ttl in [255u32, 7] {
            tx.set_ttl(ttl).expect("ttl");
            tx.send_to(b"hello", rx.local_addr().expect("addr"))
                .expect("send");
            let mut buf = [0u8; 64];
            // Loopback delivers synchronously, so the datagram is queued already.
            let (n, from, got) = recv_with_ttl(&rx, &mut buf).expect("recv");
            assert_eq!(&buf[..n], b"hello");
            assert_eq!(from, tx.local_addr().expect("addr"));
            assert_eq!(got, Some(ttl as u8));
        }
        let mut buf = [0u8; 8];
        let e = recv_with_ttl(&rx, &mut buf).expect_err("nothing queued");
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn reports_the_hop_limit_over_ipv6() {
        let Ok(rx) = UdpSocket::bind("[::1]:0") else {
            return; // no IPv6 loopback on this machine
        };
        set_recv_ttl(&rx, true).expect("IPV6_RECVHOPLIMIT");
        let tx = UdpSocket::bind("[::1]:0").expect("bind");
        socket2::SockRef::from(&tx)
            .set_unicast_hops_v6(255)
            .expect("hops");
        tx.send_to(b"x", rx.local_addr().expect("addr"))
            .expect("send");
        let mut buf = [0u8; 8];
        let (_, _, got) = recv_with_ttl(&rx, &mut buf).expect("recv");
        assert_eq!(got, Some(255));
    }
}
