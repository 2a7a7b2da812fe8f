//! The property the cargo-fuzz target checks, as a proptest that runs in CI:
//! arbitrary bytes never panic the decoder or a session, and every error
//! becomes a well-formed NOTIFICATION.

use crate::session::{Output, Session, SessionConfig, State};
use crate::wire::{self, LocalOpen, Message};
use proptest::prelude::*;
use std::net::Ipv4Addr;
use std::time::Instant;

/// Decodes like a session would, checking each outcome.
fn check_decode(bytes: &[u8]) {
    let mut rest = bytes;
    loop {
        match wire::decode(rest) {
            Ok(None) => return,
            Ok(Some((_, n))) => {
                assert!((wire::HEADER_LEN..=wire::MAX_LEN).contains(&n) && n <= rest.len());
                rest = &rest[n..];
            }
            Err(notification) => {
                assert!(matches!(notification.code, 1 | 2), "{notification:?}");
                let encoded = notification.encode();
                assert!(matches!(
                    wire::decode(&encoded),
                    Ok(Some((Message::Notification(ref n), len))) if *n == notification && len == encoded.len()
                ));
                return;
            }
        }
    }
}

/// A session in `state` fed `bytes`: must not panic and must only emit
/// whole messages.
fn check_session(open_first: bool, bytes: &[u8]) {
    let now = Instant::now();
    let mut s = Session::new(SessionConfig::new(64513, 64512, Ipv4Addr::new(10, 0, 0, 2)));
    s.start(now);
    s.handle_connected(now, "10.0.0.2:40000".parse().expect("addr"));
    if open_first {
        let open = LocalOpen {
            asn: 64512,
            hold_time: 9,
            bgp_id: Ipv4Addr::new(10, 0, 0, 1),
            graceful_restart: None,
        };
        s.handle_data(now, &wire::encode_open(&open).expect("encodes"));
        s.handle_data(now, &wire::keepalive());
        assert_eq!(s.state(), State::Established);
    }
    s.handle_data(now, bytes);
    while let Some(o) = s.poll_output() {
        if let Output::Transmit(b) = o {
            assert!(matches!(wire::decode(&b), Ok(Some((_, n))) if n == b.len()));
        }
    }
}

/// A header that passes the framing checks, with random type and body.
fn framed() -> impl Strategy<Value = Vec<u8>> {
    (1u8..=5, proptest::collection::vec(any::<u8>(), 0..200)).prop_map(|(t, body)| {
        let mut m = vec![0xFF; 16];
        m.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
        m.push(t);
        m.extend(body);
        m
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        check_decode(&bytes);
        check_session(false, &bytes);
        check_session(true, &bytes);
    }

    #[test]
    fn decode_never_panics_on_framed_messages(msgs in proptest::collection::vec(framed(), 1..4)) {
        let bytes = msgs.concat();
        check_decode(&bytes);
        check_session(false, &bytes);
        check_session(true, &bytes);
    }
}
