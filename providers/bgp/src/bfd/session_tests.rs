//! Two sessions back to back on a virtual clock; packets go through the wire codec.

use super::*;

fn timers(ms: u64) -> BfdTimers {
    BfdTimers {
        desired_min_tx: Duration::from_millis(ms),
        required_min_rx: Duration::from_millis(ms),
        detect_mult: 3,
    }
}

/// A pair and the virtual clock; `link` false drops everything (a cut cable).
struct Pair {
    a: BfdSession,
    b: BfdSession,
    now: Instant,
    link: bool,
    /// (time, sender is a, packet) of everything sent.
    sent: Vec<(Instant, bool, Control)>,
}

impl Pair {
    fn new(a: BfdTimers, b: BfdTimers) -> Self {
        let now = Instant::now();
        Pair {
            a: BfdSession::new(a, 11, 1, now),
            b: BfdSession::new(b, 22, 2, now),
            now,
            link: true,
            sent: Vec::new(),
        }
    }

    fn pump(&mut self) {
        loop {
            let mut moved = false;
            while let Some(p) = self.a.poll_transmit() {
                moved = true;
                self.sent.push((self.now, true, p));
                let decoded = Control::decode(&p.encode()).expect("valid");
                if self.link {
                    self.b.handle_packet(self.now, &decoded);
                }
            }
            while let Some(p) = self.b.poll_transmit() {
                moved = true;
                self.sent.push((self.now, false, p));
                let decoded = Control::decode(&p.encode()).expect("valid");
                if self.link {
                    self.a.handle_packet(self.now, &decoded);
                }
            }
            if !moved {
                return;
            }
        }
    }

    /// Runs every deadline up to `until`.
    fn run_until(&mut self, until: Instant) {
        self.pump();
        loop {
            let next = [self.a.poll_timeout(), self.b.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(t) if t <= until => {
                    self.now = self.now.max(t);
                    self.a.handle_timeout(self.now);
                    self.b.handle_timeout(self.now);
                    self.pump();
                }
                _ => break,
            }
        }
        self.now = until;
    }

    fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }
}

#[test]
fn three_way_handshake_reaches_up_and_speeds_up_with_a_poll() {
    let mut p = Pair::new(timers(100), timers(100));
    p.run_for(Duration::from_secs(3));
    assert_eq!((p.a.state(), p.b.state()), (BfdState::Up, BfdState::Up));
    assert_eq!(p.a.remote_discr(), 22);
    assert_eq!(p.b.remote_discr(), 11);
    // The Poll of the speed-up was answered with a Final, and polling stopped.
    assert!(p.sent.iter().any(|(_, _, c)| c.poll));
    assert!(p.sent.iter().any(|(_, _, c)| c.fin && !c.poll));
    let last = p.sent.iter().rev().find(|(_, a, _)| *a).expect("sent").2;
    assert!(!last.poll);
    assert_eq!(last.desired_min_tx, Duration::from_millis(100));
    // Once Up, a's periodic packets come every 75..=100 ms.
    let start = p.now;
    p.run_for(Duration::from_secs(1));
    let times: Vec<Instant> = p
        .sent
        .iter()
        .filter(|(t, a, _)| *a && *t >= start)
        .map(|(t, _, _)| *t)
        .collect();
    assert!(times.len() >= 10, "{} packets in 1 s", times.len());
    for w in times.windows(2) {
        let gap = w[1] - w[0];
        assert!(
            gap >= Duration::from_millis(75) && gap <= Duration::from_millis(100),
            "{gap:?}"
        );
    }
    assert_eq!(p.a.status().ups, 1);
    assert_eq!(p.a.status().detection_time_ms, Some(300));
}

#[test]
fn slow_while_not_up() {
    let mut p = Pair::new(timers(100), timers(100));
    p.link = false;
    p.run_for(Duration::from_secs(5));
    let a_times: Vec<Instant> = p
        .sent
        .iter()
        .filter(|(_, a, _)| *a)
        .map(|(t, ..)| *t)
        .collect();
    assert!(
        a_times.len() >= 4 && a_times.len() <= 7,
        "{}",
        a_times.len()
    );
    for w in a_times.windows(2) {
        assert!(w[1] - w[0] >= Duration::from_millis(750));
    }
    assert!(
        p.sent
            .iter()
            .all(|(_, _, c)| c.desired_min_tx == Duration::from_secs(1))
    );
    assert_eq!(p.a.state(), BfdState::Down);
}

#[test]
fn a_silent_peer_is_down_within_the_detection_time() {
    let mut p = Pair::new(timers(100), timers(100));
    p.run_for(Duration::from_secs(3));
    assert_eq!(p.a.state(), BfdState::Up);
    p.link = false;
    let cut = p.now;
    // Not before two intervals (the last packet may have just arrived)...
    p.run_for(Duration::from_millis(200));
    assert_eq!(p.a.state(), BfdState::Up);
    // ...and by 3 × 100 ms after the last packet heard.
    p.run_for(Duration::from_millis(101));
    assert_eq!(p.a.state(), BfdState::Down);
    assert!(p.now - cut <= Duration::from_millis(301));
    assert_eq!(p.a.status().last_diag, diag::DETECTION_TIME_EXPIRED);
    assert_eq!((p.a.status().ups, p.a.status().downs), (1, 1));
    assert_eq!(p.a.remote_discr(), 0);
    // The cable back: up again.
    p.link = true;
    p.run_for(Duration::from_secs(4));
    assert_eq!((p.a.state(), p.b.state()), (BfdState::Up, BfdState::Up));
    assert_eq!(p.a.status().ups, 2);
}

#[test]
fn the_slower_side_sets_the_pace_and_the_detection_time() {
    // a wants 50 ms, b accepts one packet every 200 ms only; b sends every 300 ms.
    let b = BfdTimers {
        desired_min_tx: Duration::from_millis(300),
        required_min_rx: Duration::from_millis(200),
        detect_mult: 5,
    };
    let mut p = Pair::new(timers(50), b);
    p.run_for(Duration::from_secs(3));
    assert_eq!(p.a.state(), BfdState::Up);
    // a: detection = b's mult (5) × max(a's rx 50, b's tx 300) = 1500 ms.
    assert_eq!(p.a.status().detection_time_ms, Some(1500));
    let start = p.now;
    p.run_for(Duration::from_secs(2));
    let a_times: Vec<Instant> = p
        .sent
        .iter()
        .filter(|(t, a, c)| *a && *t >= start && !c.fin)
        .map(|(t, ..)| *t)
        .collect();
    for w in a_times.windows(2) {
        assert!(
            w[1] - w[0] >= Duration::from_millis(150),
            "{:?}",
            w[1] - w[0]
        );
    }
}

#[test]
fn stop_says_admin_down_and_the_peer_goes_down_with_diag_3() {
    let mut p = Pair::new(timers(100), timers(100));
    p.run_for(Duration::from_secs(3));
    p.a.stop(p.now);
    p.pump();
    assert_eq!(p.a.state(), BfdState::AdminDown);
    assert_eq!(p.b.state(), BfdState::Down);
    assert_eq!(p.b.status().last_diag, diag::NEIGHBOR_DOWN);
    let last = p.sent.iter().rev().find(|(_, a, _)| *a).expect("sent").2;
    assert_eq!(
        (last.state, last.diag),
        (WireState::AdminDown, diag::ADMIN_DOWN)
    );
    // a sends nothing more.
    let n = p.sent.len();
    p.run_for(Duration::from_secs(2));
    assert!(p.sent[n..].iter().all(|(_, a, _)| !*a));
}

#[test]
fn foreign_or_premature_packets_are_ignored() {
    let now = Instant::now();
    let mut s = BfdSession::new(timers(100), 5, 9, now);
    let up_without_discr = Control {
        diag: 0,
        state: WireState::Up,
        poll: false,
        fin: false,
        detect_mult: 3,
        my_discr: 77,
        your_discr: 0,
        desired_min_tx: Duration::from_secs(1),
        required_min_rx: Duration::from_secs(1),
    };
    s.handle_packet(now, &up_without_discr);
    assert_eq!((s.state(), s.remote_discr()), (BfdState::Down, 0));
    let not_ours = Control {
        your_discr: 6,
        ..up_without_discr
    };
    s.handle_packet(now, &not_ours);
    assert_eq!((s.state(), s.remote_discr()), (BfdState::Down, 0));
    // A peer that asks for no packets at all (Required Min RX 0) gets none.
    let quiet = Control {
        state: WireState::Down,
        required_min_rx: Duration::ZERO,
        ..up_without_discr
    };
    s.handle_packet(now, &quiet);
    while s.poll_transmit().is_some() {}
    assert_eq!(s.state(), BfdState::Init);
    s.handle_timeout(now + Duration::from_millis(500));
    assert_eq!(s.poll_transmit(), None);
}

#[test]
fn a_peer_that_speeds_up_is_served_at_once() {
    // The router accepts one packet a second while Down, 100 ms once Up; a packet planned
    // on the slow rate must not keep us silent past its new, short detection time.
    let now = Instant::now();
    let mut s = BfdSession::new(timers(100), 5, 3, now);
    let slow = Control {
        diag: 0,
        state: WireState::Init,
        poll: false,
        fin: false,
        detect_mult: 3,
        my_discr: 9,
        your_discr: 5,
        desired_min_tx: Duration::from_secs(1),
        required_min_rx: Duration::from_secs(1),
    };
    s.handle_packet(now, &slow);
    assert_eq!(s.state(), BfdState::Up);
    while s.poll_transmit().is_some() {}
    assert!(s.poll_timeout().expect("tx") >= now + Duration::from_millis(750));
    let t = now + Duration::from_millis(20);
    let fast = Control {
        state: WireState::Up,
        poll: true,
        desired_min_tx: Duration::from_millis(100),
        required_min_rx: Duration::from_millis(100),
        ..slow
    };
    s.handle_packet(t, &fast);
    assert!(s.poll_transmit().expect("final").fin);
    assert!(s.poll_timeout().expect("tx") <= t + Duration::from_millis(100));
}
