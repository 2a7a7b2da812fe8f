//! What is recorded per held address and per Service, and the sharing rule.
//!
//! An address may be held by several Services only when they all carry the
//! same `portway.dev/allow-shared-ip` key, use the same backend (all
//! `Cluster`, or all `Local` with one pod selector) and no two of them use the
//! same protocol and port, as in MetalLB (`sharingOK`).

use crate::{LbService, Protocol, ServiceKey, TrafficPolicy};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

/// One held address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Holding {
    /// The pool it belongs to; `None` when no configured pool contains it
    /// any more (kept, reported, never moved).
    pub pool: Option<usize>,
    /// The sharing key every holder carries (`None` only with one holder).
    pub sharing_key: Option<String>,
    /// The pod selector for `Local` policy, `None` for `Cluster`; equal for all holders.
    pub backend: Option<BTreeMap<String, String>>,
    /// The Services holding it, with their ports (disjoint between holders).
    pub holders: Holders,
}

/// The holders of one address: almost always one, so a sorted `Vec` (one
/// small allocation) rather than a map (a whole B-tree node per address).
/// Keys are shared with the `services` map through `Arc`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Holders(Vec<(Arc<ServiceKey>, Ports)>);

/// A holder's ports, sorted; empty unless it has a sharing key.
pub(super) type Ports = Vec<(Protocol, u16)>;

impl Holders {
    /// A single holder.
    pub fn one(key: Arc<ServiceKey>, ports: Ports) -> Self {
        Self(vec![(key, ports)])
    }

    /// Holders with their ports, ordered by key.
    pub fn iter(&self) -> impl Iterator<Item = (&ServiceKey, &[(Protocol, u16)])> + Clone {
        self.0.iter().map(|(k, p)| (&**k, p.as_slice()))
    }

    /// Holder keys, ordered.
    pub fn keys(&self) -> impl Iterator<Item = &ServiceKey> {
        self.0.iter().map(|(k, _)| &**k)
    }

    /// Whether the Service is among the holders.
    pub fn contains_key(&self, key: &ServiceKey) -> bool {
        self.0.binary_search_by(|(k, _)| (**k).cmp(key)).is_ok()
    }

    /// Adds a holder, or replaces its ports when it holds already.
    pub fn insert(&mut self, key: &Arc<ServiceKey>, ports: Ports) {
        match self.0.binary_search_by(|(k, _)| (**k).cmp(key)) {
            Ok(i) => self.0[i].1 = ports,
            Err(i) => self.0.insert(i, (Arc::clone(key), ports)),
        }
    }

    /// Removes a holder if present.
    pub fn remove(&mut self, key: &ServiceKey) {
        if let Ok(i) = self.0.binary_search_by(|(k, _)| (**k).cmp(key)) {
            self.0.remove(i);
        }
    }

    /// Whether nobody holds the address (it is then freed).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many Services hold the address.
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

/// What one Service holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Assignment {
    /// Its addresses, ordered by `spec.ipFamilies`.
    pub ips: Vec<IpAddr>,
    /// The class that allocated them.
    pub owner: Option<String>,
}

/// What a Service brings to an address: identity and what decides sharing.
/// Ports are kept only with a sharing key: without one the address cannot
/// be shared and ports never matter, so most holdings store none.
pub(super) struct Claim {
    /// The Service, its key allocation shared with the allocator's records.
    pub key: Arc<ServiceKey>,
    /// What the Service holds now (empty when unknown), read once per call.
    pub held: Vec<IpAddr>,
    /// Whether the allocator has a record of the Service.
    pub known: bool,
    /// Whether the record was made by another class than the caller's.
    pub class_changed: bool,
    /// `portway.dev/allow-shared-ip`, `None` when absent or empty.
    pub sharing_key: Option<String>,
    /// The pod selector for `Local` policy, `None` for `Cluster`.
    pub backend: Option<BTreeMap<String, String>>,
    /// Sorted, deduplicated ports; empty without a sharing key.
    pub ports: Ports,
}

impl Claim {
    /// `key` is the Service's key, shared with the allocator's records when known.
    pub fn of(svc: &LbService, key: Arc<ServiceKey>) -> Self {
        let sharing_key = svc.sharing_key.clone().filter(|k| !k.is_empty());
        let mut ports: Vec<(Protocol, u16)> = if sharing_key.is_some() {
            svc.ports.iter().map(|p| (p.protocol, p.port)).collect()
        } else {
            Vec::new()
        };
        ports.sort_unstable();
        ports.dedup();
        Self {
            key,
            held: Vec::new(),
            known: false,
            class_changed: false,
            sharing_key,
            backend: (svc.external_traffic_policy == TrafficPolicy::Local)
                .then(|| svc.selector.clone()),
            ports,
        }
    }
}

/// The first port in both sorted lists.
pub(super) fn clash(a: &[(Protocol, u16)], b: &[(Protocol, u16)]) -> Option<(Protocol, u16)> {
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => return Some(a[i]),
        }
    }
    None
}

impl Holding {
    /// Whether `claim` may hold the address next to its other holders
    /// (MetalLB's `sharingOK`): same non-empty sharing key, same backend,
    /// no port/protocol in common. Err names a holder and the reason.
    pub fn compatible(&self, claim: &Claim) -> Result<(), (ServiceKey, String)> {
        let mut others = self.holders.iter().filter(|(k, _)| *k != &*claim.key);
        let Some((first, _)) = others.clone().next() else {
            return Ok(());
        };
        let Some(key) = &claim.sharing_key else {
            return Err((
                first.clone(),
                "sharing an address needs the same portway.dev/allow-shared-ip key on both \
                 Services, and this Service has none"
                    .to_string(),
            ));
        };
        match &self.sharing_key {
            None => {
                return Err((
                    first.clone(),
                    "the holder has no portway.dev/allow-shared-ip key".to_string(),
                ));
            }
            Some(k) if k != key => {
                return Err((
                    first.clone(),
                    format!("sharing keys differ ({key:?} here, {k:?} there)"),
                ));
            }
            Some(_) => {}
        }
        if self.backend != claim.backend {
            return Err((
                first.clone(),
                "Services sharing an address must all use externalTrafficPolicy Cluster, or all \
                 Local with the same pod selector"
                    .to_string(),
            ));
        }
        if let Some((holder, (proto, port))) =
            others.find_map(|(k, ports)| clash(ports, &claim.ports).map(|c| (k, c)))
        {
            return Err((
                holder.clone(),
                format!("port {proto}/{port} is used by both"),
            ));
        }
        Ok(())
    }
}
