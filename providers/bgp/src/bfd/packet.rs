//! The BFD control packet (RFC 5880 §4.1), mandatory section only.
//!
//! ```text
//!  0                   1                   2                   3
//!  |Vers |  Diag   |Sta|P|F|C|A|D|M|  Detect Mult  |    Length     |
//!  |                       My Discriminator                        |
//!  |                      Your Discriminator                       |
//!  |                    Desired Min TX Interval (µs)               |
//!  |                   Required Min RX Interval (µs)               |
//!  |                 Required Min Echo RX Interval (µs)            |
//! ```

use std::time::Duration;

/// Length of the mandatory section, all we send.
pub const LEN: usize = 24;

/// Session states as carried on the wire (RFC 5880 §4.1 "Sta").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub enum WireState {
    /// Held down by the administrator.
    AdminDown = 0,
    /// Down, or never up.
    Down = 1,
    /// Heard the other side, waiting for it to hear us.
    Init = 2,
    /// Both sides hear each other.
    Up = 3,
}

impl WireState {
    fn from_bits(b: u8) -> Self {
        match b & 3 {
            0 => WireState::AdminDown,
            1 => WireState::Down,
            2 => WireState::Init,
            _ => WireState::Up,
        }
    }
}

/// Diagnostic codes (RFC 5880 §4.1) we send or report.
pub mod diag {
    /// No diagnostic.
    pub const NONE: u8 = 0;
    /// Control Detection Time Expired: the other side went silent.
    pub const DETECTION_TIME_EXPIRED: u8 = 1;
    /// Neighbor Signaled Session Down.
    pub const NEIGHBOR_DOWN: u8 = 3;
    /// Administratively Down: we are stopping.
    pub const ADMIN_DOWN: u8 = 7;
}

/// One control packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Control {
    /// Why the sender's session last went down.
    pub diag: u8,
    /// The sender's session state.
    pub state: WireState,
    /// Poll: the sender changed its timers and wants a Final back.
    pub poll: bool,
    /// Final: the answer to a Poll.
    pub fin: bool,
    /// Detection time multiplier of the sender.
    pub detect_mult: u8,
    /// The sender's discriminator.
    pub my_discr: u32,
    /// The receiver's discriminator, as far as the sender knows it (0: not yet).
    pub your_discr: u32,
    /// How fast the sender would like to transmit.
    pub desired_min_tx: Duration,
    /// How fast the sender accepts packets (0: not at all).
    pub required_min_rx: Duration,
}

/// Why a received packet is dropped (RFC 5880 §6.8.6, first steps).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Malformed {
    /// Shorter than 24 bytes, or than its Length field.
    #[error("truncated")]
    Truncated,
    /// Not version 1.
    #[error("version {0}, not 1")]
    Version(u8),
    /// Detect Mult 0, Multipoint set or My Discriminator 0.
    #[error("invalid field")]
    Invalid,
    /// The Authentication bit is set; we run no authentication (RFC 5881 allows none).
    #[error("authentication present but not configured")]
    Authenticated,
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

impl Control {
    /// The wire form (24 bytes, no authentication, C/A/D/M clear).
    pub fn encode(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[0] = (1 << 5) | (self.diag & 0x1f);
        b[1] = ((self.state as u8) << 6) | (u8::from(self.poll) << 5) | (u8::from(self.fin) << 4);
        b[2] = self.detect_mult;
        b[3] = LEN as u8;
        b[4..8].copy_from_slice(&self.my_discr.to_be_bytes());
        b[8..12].copy_from_slice(&self.your_discr.to_be_bytes());
        b[12..16].copy_from_slice(&micros(self.desired_min_tx).to_be_bytes());
        b[16..20].copy_from_slice(&micros(self.required_min_rx).to_be_bytes());
        // Required Min Echo RX Interval 0: we do not loop echo packets back.
        b
    }

    /// Parses and checks a received packet (the checks of §6.8.6 that need no session).
    pub fn decode(b: &[u8]) -> Result<Control, Malformed> {
        if b.len() < LEN {
            return Err(Malformed::Truncated);
        }
        let version = b[0] >> 5;
        if version != 1 {
            return Err(Malformed::Version(version));
        }
        let len = usize::from(b[3]);
        if len < LEN || len > b.len() {
            return Err(Malformed::Truncated);
        }
        let word = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let flags = b[1];
        if flags & 0x04 != 0 {
            return Err(Malformed::Authenticated);
        }
        let multipoint = flags & 0x01 != 0;
        let my_discr = word(4);
        if b[2] == 0 || multipoint || my_discr == 0 {
            return Err(Malformed::Invalid);
        }
        Ok(Control {
            diag: b[0] & 0x1f,
            state: WireState::from_bits(flags >> 6),
            poll: flags & 0x20 != 0,
            fin: flags & 0x10 != 0,
            detect_mult: b[2],
            my_discr,
            your_discr: word(8),
            desired_min_tx: Duration::from_micros(word(12).into()),
            required_min_rx: Duration::from_micros(word(16).into()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip_and_known_bytes() {
        let c = Control {
            diag: diag::DETECTION_TIME_EXPIRED,
            state: WireState::Up,
            poll: true,
            fin: false,
            detect_mult: 3,
            my_discr: 0x0102_0304,
            your_discr: 7,
            desired_min_tx: Duration::from_millis(300),
            required_min_rx: Duration::from_millis(100),
        };
        let b = c.encode();
        // Version 1 and diag 1; Up (3) with P; 300 ms = 300000 µs = 0x000493E0.
        assert_eq!(&b[..4], &[0x21, 0xE0, 3, 24]);
        assert_eq!(&b[12..16], &[0x00, 0x04, 0x93, 0xE0]);
        assert_eq!(Control::decode(&b), Ok(c));
    }

    #[test]
    fn rejects_what_rfc_5880_discards() {
        let ok = Control {
            diag: 0,
            state: WireState::Down,
            poll: false,
            fin: false,
            detect_mult: 3,
            my_discr: 1,
            your_discr: 0,
            desired_min_tx: Duration::from_secs(1),
            required_min_rx: Duration::from_secs(1),
        }
        .encode();
        let mut v2 = ok;
        v2[0] = 2 << 5;
        assert_eq!(Control::decode(&v2), Err(Malformed::Version(2)));
        assert_eq!(Control::decode(&ok[..23]), Err(Malformed::Truncated));
        let mut zero_mult = ok;
        zero_mult[2] = 0;
        assert_eq!(Control::decode(&zero_mult), Err(Malformed::Invalid));
        let mut no_discr = ok;
        no_discr[4..8].fill(0);
        assert_eq!(Control::decode(&no_discr), Err(Malformed::Invalid));
        let mut auth = ok;
        auth[1] |= 0x04;
        assert_eq!(Control::decode(&auth), Err(Malformed::Authenticated));
        let mut long = ok;
        long[3] = 40;
        assert_eq!(Control::decode(&long), Err(Malformed::Truncated));
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Control::decode(&bytes);
        }
    }
}
