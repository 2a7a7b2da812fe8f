//! `l2-test-speaker arp-probe`: counts double ARP answers during a handover.
//!
//! ```text
//! l2-test-speaker arp-probe --iface eth0 --target 198.51.100.100
//!                           [--interval-ms 2] [--duration-ms 3000]
//! ```
//!
//! Every `interval` it broadcasts `who-has TARGET tell 169.254.X.Y`, the sender address
//! carrying a 16-bit sequence number (the tag). An answer is unicast back to our MAC with
//! the tag as its target address, so each answer is matched to the request it answers,
//! whenever it arrives. At the end it prints, timestamped like every line of this binary:
//!
//! ```text
//! <ms> arp-probe probes=N answered=A double=D macs=02:..:11,02:..:12
//! <ms> double tag=T macs=M1,M2        (one line per request answered by two MACs)
//! <ms> gap longest_ms=G               (longest run of unanswered requests)
//! ```

use portway_l2::frame::{self, Mac};
use portway_l2::sys::{self, PacketSocket, Receive};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

fn mac_text(m: &Mac) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn tag_ip(seq: u16) -> Ipv4Addr {
    let [hi, lo] = seq.to_be_bytes();
    Ipv4Addr::new(169, 254, hi, lo)
}

/// Runs the probe; `Err` for bad arguments or a socket that cannot be opened.
pub fn run(
    emit: impl Fn(std::fmt::Arguments<'_>),
    flag: impl Fn(&str) -> Option<String>,
) -> Result<(), String> {
    let iface = flag("--iface").ok_or("--iface NAME is required")?;
    let target: Ipv4Addr = flag("--target")
        .ok_or("--target IPV4 is required")?
        .parse()
        .map_err(|e| format!("--target: {e}"))?;
    let ms = |name: &str, default: u64| -> Result<Duration, String> {
        Ok(Duration::from_millis(match flag(name) {
            Some(v) => v.parse().map_err(|e| format!("{name}: {e}"))?,
            None => default,
        }))
    };
    let interval = ms("--interval-ms", 2)?;
    let duration = ms("--duration-ms", 3000)?;
    let all = sys::interfaces().map_err(|e| format!("listing interfaces: {e}"))?;
    let local = all
        .iter()
        .find(|i| i.name == iface)
        .ok_or_else(|| format!("no interface {iface}"))?;
    let mac = local.mac.ok_or_else(|| format!("{iface} has no MAC"))?;
    let sock = PacketSocket::open_for(local.index, Receive::AllArp)
        .map_err(|e| format!("packet socket on {iface}: {e}"))?;
    let start = Instant::now();
    let mut answers: BTreeMap<u16, BTreeSet<Mac>> = BTreeMap::new();
    let mut sent_at: Vec<Instant> = Vec::new();
    let mut seq: u16 = 0;
    let mut next = start;
    let mut buf = [0u8; 2048];
    // Replies may trail the last request by a few milliseconds.
    let end = start + duration;
    let drain_end = end + Duration::from_millis(100);
    while Instant::now() < drain_end {
        let now = Instant::now();
        if now >= next && now < end && seq < u16::MAX {
            seq += 1;
            sock.send(&frame::arp_request(mac, tag_ip(seq), target))
                .map_err(|e| format!("sending: {e}"))?;
            sent_at.push(now);
            next += interval;
        }
        match sock.recv(&mut buf) {
            Ok(n) => {
                if let Some(r) = frame::parse_arp_reply(&buf[..n]) {
                    let o = r.target_ip.octets();
                    if r.sender_ip == target && o[0] == 169 && o[1] == 254 {
                        let tag = u16::from_be_bytes([o[2], o[3]]);
                        answers.entry(tag).or_default().insert(r.sender_mac);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_micros(200));
            }
            Err(e) => return Err(format!("receiving: {e}")),
        }
    }
    let macs: BTreeSet<Mac> = answers.values().flatten().copied().collect();
    let doubles: Vec<(&u16, &BTreeSet<Mac>)> =
        answers.iter().filter(|(_, m)| m.len() > 1).collect();
    let mut longest = Duration::ZERO;
    let mut gap_start: Option<Instant> = None;
    for (i, at) in sent_at.iter().enumerate() {
        let answered = answers.contains_key(&((i + 1) as u16));
        match (answered, gap_start) {
            (false, None) => gap_start = Some(*at),
            (true, Some(g)) => {
                longest = longest.max(at.saturating_duration_since(g));
                gap_start = None;
            }
            _ => {}
        }
    }
    if let (Some(g), Some(last)) = (gap_start, sent_at.last()) {
        longest = longest.max(last.saturating_duration_since(g));
    }
    emit(format_args!(
        "arp-probe probes={} answered={} double={} macs={}",
        sent_at.len(),
        answers.len(),
        doubles.len(),
        macs.iter().map(mac_text).collect::<Vec<_>>().join(",")
    ));
    for (tag, m) in doubles {
        emit(format_args!(
            "double tag={tag} macs={}",
            m.iter().map(mac_text).collect::<Vec<_>>().join(",")
        ));
    }
    emit(format_args!("gap longest_ms={}", longest.as_millis()));
    Ok(())
}
