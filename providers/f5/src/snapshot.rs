//! What Portway knows of its partition between reads: every tagged object, by the Service UID
//! it is tagged with (pure; the provider holds it under a lock).
//!
//! Why: reading the whole partition for every reconcile makes each one cost the partition's
//! size, so converging N Services costs N² bytes and a resync of 1,000 Services in sync
//! reads the partition 1,000 times (issue 21, item 3). With the snapshot a reconcile reads
//! only its own objects, by name, and a whole-partition read (at `adopt` and every resync
//! period) is shared by every Service:
//!
//! - a full read is *installed*: each Service's objects in it serve the first reconcile of
//!   that Service that comes within one resync period without any read (the resync pass asks
//!   the controller to ensure every Service just after reading, so a resync of Services in
//!   sync is the read and nothing else);
//! - any other reconcile reads its objects by name (the names it wants and the names the
//!   snapshot holds for it), so drift is still seen by the next reconcile, as before;
//! - a Service the snapshot has no object of has none on the device, unless someone made them
//!   since the read: its create then meets 409 "already exists", which the provider already
//!   answers by reading (by name) and planning again, so it is not read first;
//! - what a reconcile wrote is *stored* (the objects as the plan made them), stamped, and a
//!   full read that started before that write does not overwrite it.

use crate::config::MonitorKind;
use crate::current::{Current, member_key};
use crate::desired::Desired;
use crate::nodes::NodeIndex;
use crate::tag::tagged_uid;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Instant;

/// One Service's objects as last read or written.
#[derive(Clone, Debug)]
struct Entry {
    objects: Current,
    /// The clock when they were stored; a full read that started before keeps them.
    stamp: u64,
    /// Installed from a full read and not used yet: the first reconcile before this
    /// instant may plan against them without reading.
    fresh_until: Option<Instant>,
    /// A write of this Service failed midway or its objects are otherwise in doubt: read
    /// them by name before planning.
    unsure: bool,
}

/// What the snapshot says of one Service, for its reconcile.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Known {
    /// Read with the partition moments ago: plan against it without reading.
    Fresh(Current),
    /// No object of this Service: nothing to read (a create that meets one is re-planned).
    Nothing,
    /// Objects held since an earlier read or write: read these names (and the wanted ones).
    Held(Current),
}

/// Portway's tagged objects in its partition, by Service UID.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    /// A full read was installed: a UID without entry has no object.
    loaded: bool,
    entries: BTreeMap<String, Entry>,
    clock: u64,
}

/// `current`'s tagged objects, split by UID.
pub(crate) fn by_uid(current: &Current) -> BTreeMap<String, Current> {
    let mut out: BTreeMap<String, Current> = BTreeMap::new();
    for (kind, m) in &current.monitors {
        if let Some(uid) = tagged_uid(m) {
            let e = out.entry(uid.to_string()).or_default();
            e.monitors.push((*kind, m.clone()));
        }
    }
    for p in &current.pools {
        if let Some(uid) = tagged_uid(p) {
            out.entry(uid.to_string())
                .or_default()
                .pools
                .push(p.clone());
        }
    }
    for v in &current.virtuals {
        if let Some(uid) = tagged_uid(v) {
            out.entry(uid.to_string())
                .or_default()
                .virtuals
                .push(v.clone());
        }
    }
    out
}

impl Snapshot {
    /// Whether a full read was installed.
    pub(crate) fn loaded(&self) -> bool {
        self.loaded
    }

    /// The clock to pass to [`Self::install`] for a read that starts now.
    pub(crate) fn clock(&self) -> u64 {
        self.clock
    }

    /// Installs a full read that started at clock `started`; its entries are fresh until
    /// `fresh_until`. What was stored since the read started stays.
    pub(crate) fn install(&mut self, read: &Current, started: u64, fresh_until: Instant) {
        self.entries.retain(|_, e| e.stamp > started);
        for (uid, objects) in by_uid(read) {
            self.entries.entry(uid).or_insert(Entry {
                objects,
                stamp: started,
                fresh_until: Some(fresh_until),
                unsure: false,
            });
        }
        self.loaded = true;
    }

    /// What is known of `uid` for a reconcile starting `now`; a fresh entry is used up.
    pub(crate) fn take(&mut self, uid: &str, now: Instant) -> Known {
        match self.entries.get_mut(uid) {
            None => Known::Nothing,
            Some(e) if e.unsure => Known::Held(e.objects.clone()),
            Some(e) if e.fresh_until.is_some_and(|t| now < t) => {
                e.fresh_until = None;
                Known::Fresh(e.objects.clone())
            }
            Some(e) if e.objects == Current::default() => Known::Nothing,
            Some(e) => Known::Held(e.objects.clone()),
        }
    }

    /// `uid`'s objects as just read by name or written (empty: none left).
    pub(crate) fn store(&mut self, uid: &str, objects: Current) {
        self.clock += 1;
        self.entries.insert(
            uid.to_string(),
            Entry {
                objects,
                stamp: self.clock,
                fresh_until: None,
                unsure: false,
            },
        );
    }

    /// `uid`'s objects are in doubt (a write failed, maybe midway): its next reconcile
    /// reads them by name, whatever the snapshot held.
    pub(crate) fn doubt(&mut self, uid: &str) {
        self.clock += 1;
        let e = self.entries.entry(uid.to_string()).or_insert(Entry {
            objects: Current::default(),
            stamp: 0,
            fresh_until: None,
            unsure: true,
        });
        e.unsure = true;
        e.fresh_until = None;
        e.stamp = self.clock;
    }

    /// Addresses that members of Portway's pools use, for node cleanup.
    pub(crate) fn used_addresses(&self) -> BTreeSet<IpAddr> {
        self.entries
            .values()
            .flat_map(|e| addresses(&e.objects))
            .collect()
    }

    /// The kinds of the monitors held: a resync reads these collections (besides the kinds
    /// its pools name), not every kind.
    pub(crate) fn monitor_kinds(&self) -> BTreeSet<MonitorKind> {
        self.entries
            .values()
            .flat_map(|e| e.objects.monitors.iter().map(|(k, _)| *k))
            .collect()
    }
}

/// The member addresses of `current`'s pools.
pub(crate) fn addresses(current: &Current) -> BTreeSet<IpAddr> {
    current
        .pools
        .iter()
        .flat_map(|p| p["members"].as_array().into_iter().flatten())
        .filter_map(member_key)
        .map(|(ip, _)| ip)
        .collect()
}

/// The objects as they are once `want` was applied with members naming nodes of `index`,
/// in the normalised form [`crate::current`] reads (planning `want` against them is empty).
pub(crate) fn applied(want: &Desired, index: &NodeIndex) -> Current {
    Current {
        monitors: want.monitors.clone(),
        pools: want
            .pools
            .iter()
            .map(|p| {
                let members: Vec<Value> = p
                    .members
                    .iter()
                    .map(|(ip, port)| {
                        let (mut m, _) = index.member(*ip, *port);
                        m["address"] = json!(ip.to_string());
                        m
                    })
                    .collect();
                let mut body = p.body.clone();
                body["members"] = json!(members);
                body
            })
            .collect(),
        virtuals: want.virtuals.clone(),
    }
}

/// The names to read for one Service: what it wants and what it is known to have.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Names {
    /// Monitors, with their kind.
    pub(crate) monitors: BTreeSet<(MonitorKind, String)>,
    /// Pools.
    pub(crate) pools: BTreeSet<String>,
    /// Virtual servers.
    pub(crate) virtuals: BTreeSet<String>,
}

fn name(o: &Value) -> Option<String> {
    o["name"].as_str().map(String::from)
}

impl Names {
    /// The names of `want`'s objects and of `have`'s.
    pub(crate) fn of(want: &Desired, have: &Current) -> Names {
        let mut n = Names::default();
        for (k, m) in want.monitors.iter().chain(&have.monitors) {
            n.monitors.extend(name(m).map(|s| (*k, s)));
        }
        let pools = want.pools.iter().map(|p| &p.body).chain(&have.pools);
        n.pools.extend(pools.filter_map(name));
        n.virtuals
            .extend(want.virtuals.iter().chain(&have.virtuals).filter_map(name));
        n
    }
}

#[cfg(test)]
#[path = "snapshot_tests.rs"]
mod tests;
