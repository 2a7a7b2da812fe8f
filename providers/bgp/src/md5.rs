//! TCP MD5 signatures (RFC 2385) through `setsockopt(TCP_MD5SIG)`.
//!
//! No maintained crate exposes this option (libc has only the constant), so
//! the kernel's `struct tcp_md5sig` is mirrored here and installed on the
//! socket before `connect()`, which makes even the SYN signed. This is the
//! crate's only `unsafe` code: one FFI call with a pointer to a local value.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd};

/// Longest key the kernel accepts (`TCP_MD5SIG_MAXKEYLEN`).
pub const MAX_KEY_LEN: usize = 80;

/// `struct __kernel_sockaddr_storage`: 128 bytes, pointer aligned.
#[repr(C, align(8))]
struct SockaddrStorage([u8; 128]);

/// `struct tcp_md5sig` from `include/uapi/linux/tcp.h`.
#[repr(C)]
struct TcpMd5Sig {
    addr: SockaddrStorage,
    flags: u8,
    prefixlen: u8,
    keylen: u16,
    ifindex: i32,
    key: [u8; MAX_KEY_LEN],
}

const _: () = assert!(std::mem::size_of::<TcpMd5Sig>() == 216);

fn sockaddr(peer: IpAddr) -> SockaddrStorage {
    let mut s = [0u8; 128];
    match peer {
        IpAddr::V4(a) => {
            // sockaddr_in: family, port (0), address.
            s[0..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
            s[4..8].copy_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            // sockaddr_in6: family, port (0), flowinfo (0), address.
            s[0..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
            s[8..24].copy_from_slice(&a.octets());
        }
    }
    SockaddrStorage(s)
}

/// Signs every segment to and from `peer` on `socket` with `key`. Call it
/// before `connect()`; the socket's family must match `peer`'s.
pub fn set_md5sig(socket: &impl AsFd, peer: IpAddr, key: &[u8]) -> io::Result<()> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("TCP MD5 key must be 1..={MAX_KEY_LEN} bytes"),
        ));
    }
    let mut sig = TcpMd5Sig {
        addr: sockaddr(peer),
        flags: 0,
        prefixlen: 0,
        // Checked above: at most 80.
        keylen: key.len() as u16,
        ifindex: 0,
        key: [0; MAX_KEY_LEN],
    };
    sig.key[..key.len()].copy_from_slice(key);
    let fd = socket.as_fd().as_raw_fd();
    // SAFETY: `fd` is a live socket borrowed for this call; the pointer and
    // length describe `sig`, a fully initialised repr(C) value that outlives
    // the call, laid out as the kernel's `struct tcp_md5sig` (size asserted).
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_MD5SIG,
            (&raw const sig).cast::<libc::c_void>(),
            std::mem::size_of::<TcpMd5Sig>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installs_on_tcp_sockets_and_checks_length() {
        let v4 = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        set_md5sig(&v4, "127.0.0.1".parse().expect("ip"), b"s3cret")
            .expect("kernel accepts the key");
        let err =
            set_md5sig(&v4, "127.0.0.1".parse().expect("ip"), &[b'x'; 81]).expect_err("too long");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        if let Ok(v6) = std::net::TcpListener::bind("[::1]:0") {
            set_md5sig(&v6, "::1".parse().expect("ip"), b"s3cret").expect("kernel accepts the key");
        }
    }
}
