//! What the simulated BIG-IP's REST traffic costs: counters of calls and bytes a benchmark
//! reads and resets per operation, and an optional latency model (off by default, so tests
//! run at loopback speed).
//!
//! The model: every call takes a fixed 20 ms, plus 0.1 ms per KiB of response body (about
//! 10 MB/s), slept after the request was served and outside the device's lock, so calls
//! from concurrent clients overlap as they do on a device's REST front end. Why these
//! figures: a by-name GET is quick while whole collections are slow and grow with the
//! configuration (joel74/POSH-LTM-Rest issue #182: "the virtual server name is part of the
//! REST endpoint URL and can be queried directly, it's quick", while listing about 130
//! virtuals took 2 to 3 s once warm); `GET /ltm/virtual?expandSubcollections=true` times out
//! at a few hundred virtuals on 14.1 (net-utilities/BigIPReport issue #74, "~250 virtual
//! servers", and "around 1350 virtual servers … mostly fails"). 20 ms is a LAN round trip
//! plus the REST worker's per-request cost; 10 MB/s is generous to large reads, so the
//! model understates what a whole-partition read costs on a real device rather than
//! overstating it.
//!
//! Bytes are HTTP bodies as sent and answered (headers not counted): request bodies as the
//! client sent them, response bodies as serialised.

use std::time::Duration;

/// A latency model: `per_call` plus `per_kib` for each KiB (1024 bytes) of response body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Latency {
    /// The fixed cost of one call (round trip and request handling).
    pub per_call: Duration,
    /// The cost of each KiB of response body (serialising and sending it).
    pub per_kib: Duration,
}

impl Latency {
    /// The model the f5 benchmarks use: 20 ms per call plus 0.1 ms per KiB of response
    /// (see the module docs for why).
    pub const DEVICE: Latency = Latency {
        per_call: Duration::from_millis(20),
        per_kib: Duration::from_micros(100),
    };

    /// How long a call answered with `response_bytes` of body takes.
    pub fn cost(&self, response_bytes: usize) -> Duration {
        // Nanosecond arithmetic in u128: a body of any size cannot overflow it.
        let per_kib = self.per_kib.as_nanos();
        let extra = per_kib * response_bytes as u128 / 1024;
        self.per_call + Duration::from_nanos(u64::try_from(extra).unwrap_or(u64::MAX))
    }
}

/// REST traffic counted since the last reset.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Every call, login and token calls included.
    pub calls: u64,
    /// `GET`s.
    pub reads: u64,
    /// Calls that change configuration (anything but a GET and the `/mgmt/shared/`
    /// session calls), transaction commands and commits included.
    pub writes: u64,
    /// Bytes of request bodies.
    pub request_bytes: u64,
    /// Bytes of response bodies.
    pub response_bytes: u64,
    /// The latency the model charged, summed over calls (zero when the model is off): the
    /// device's REST time, however much of it overlapped.
    pub modelled: Duration,
}

impl Traffic {
    /// Counts one call.
    pub(crate) fn record(
        &mut self,
        method: &str,
        path: &str,
        request_bytes: usize,
        response_bytes: usize,
        latency: Duration,
    ) {
        self.calls += 1;
        if method == "GET" {
            self.reads += 1;
        } else if !path.starts_with("/mgmt/shared/") {
            self.writes += 1;
        }
        self.request_bytes += request_bytes as u64;
        self.response_bytes += response_bytes as u64;
        self.modelled += latency;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_charges_per_call_and_per_kib_of_response() {
        let m = Latency::DEVICE;
        assert_eq!(m.cost(0), Duration::from_millis(20));
        assert_eq!(m.cost(1024), Duration::from_micros(20_100));
        // A 10 MiB partition read: 20 ms + 10240 x 0.1 ms.
        assert_eq!(m.cost(10 << 20), Duration::from_micros(20_000 + 1_024_000));
    }

    #[test]
    fn traffic_tells_reads_from_writes_and_sums_bytes() {
        let mut t = Traffic::default();
        t.record("POST", "/mgmt/shared/authn/login", 60, 500, Duration::ZERO);
        t.record(
            "GET",
            "/mgmt/tm/ltm/pool",
            0,
            3000,
            Duration::from_millis(20),
        );
        t.record(
            "PATCH",
            "/mgmt/tm/ltm/pool/~p~a",
            120,
            800,
            Duration::from_millis(20),
        );
        assert_eq!(
            t,
            Traffic {
                calls: 3,
                reads: 1,
                writes: 1,
                request_bytes: 180,
                response_bytes: 4300,
                modelled: Duration::from_millis(40),
            }
        );
    }
}
