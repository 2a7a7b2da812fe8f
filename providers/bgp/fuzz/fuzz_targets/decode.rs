//! Arbitrary bytes from a "peer": the decoder and a session in OpenSent
//! and in Established must never panic, and everything the session sends
//! back must be whole, well-formed messages.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portway_bgp::session::{Output, Session, SessionConfig};
use portway_bgp::wire::{self, LocalOpen};
use std::net::Ipv4Addr;
use std::time::Instant;

fn session(established: bool, data: &[u8]) {
    let now = Instant::now();
    let mut s = Session::new(SessionConfig::new(64513, 64512, Ipv4Addr::new(10, 0, 0, 2)));
    s.start(now);
    s.handle_connected(now, "10.0.0.2:40000".parse().expect("addr"));
    if established {
        let open = LocalOpen {
            asn: 64512,
            hold_time: 9,
            bgp_id: Ipv4Addr::new(10, 0, 0, 1),
            graceful_restart: None,
        };
        s.handle_data(now, &wire::encode_open(&open).expect("encodes"));
        s.handle_data(now, &wire::keepalive());
    }
    s.handle_data(now, data);
    while let Some(o) = s.poll_output() {
        if let Output::Transmit(b) = o {
            assert!(matches!(wire::decode(&b), Ok(Some((_, n))) if n == b.len()));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some((_, n))) = wire::decode(rest) {
        rest = &rest[n..];
    }
    if let Err(n) = wire::decode(rest) {
        assert!(matches!(n.code, 1 | 2));
    }
    session(false, data);
    session(true, data);
});
