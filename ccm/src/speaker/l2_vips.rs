//! The l2 addresses the loop hands the L2 speaker: each Service's, and what changed since
//! the speaker was last told, so one changed Service costs the speaker its own addresses
//! ([`portway_l2::L2Speaker::update_vips`]) and not the whole list.
//!
//! Two Services may share an address (`portway.dev/allow-shared-ip`): the address is
//! placed once, by the first of them in namespace/name order, and stays while any holds it.

use super::ready::Key;
use portway_l2::VipInput;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Which Services hold each l2 address, written by the loop ([`L2Vips`]) and read by the
/// annotation keeper (`feedback.rs`): when the L2 speaker's state changes for a few
/// addresses, their Services are found by lookup, not by reading every Service's status.
#[derive(Clone, Debug, Default)]
pub(crate) struct Holders(Arc<RwLock<BTreeMap<IpAddr, BTreeSet<Key>>>>);

impl Holders {
    fn read(&self) -> RwLockReadGuard<'_, BTreeMap<IpAddr, BTreeSet<Key>>> {
        // Every write is a whole insert or remove of one entry: a panic in between leaves
        // a map that is at worst one Service behind, which the next full pass rebuilds.
        self.0.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, BTreeMap<IpAddr, BTreeSet<Key>>> {
        self.0.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a Service holds `ip`.
    pub(crate) fn contains(&self, ip: &IpAddr) -> bool {
        self.read().contains_key(ip)
    }

    /// The Services holding any of `ips`, each once.
    pub(crate) fn of_any<'a>(&self, ips: impl IntoIterator<Item = &'a IpAddr>) -> BTreeSet<Key> {
        let map = self.read();
        ips.into_iter()
            .filter_map(|ip| map.get(ip))
            .flatten()
            .cloned()
            .collect()
    }
}

/// Each Service's l2 addresses, indexed both ways.
#[derive(Debug, Default)]
pub(super) struct L2Vips {
    by_key: HashMap<Key, Vec<VipInput>>,
    by_ip: Holders,
    /// Addresses whose input may differ from what the speaker was last told.
    dirty: BTreeSet<IpAddr>,
}

impl L2Vips {
    /// An empty one whose index is `holders` (made before the loop's state, for the
    /// watches to read).
    pub(super) fn sharing(holders: Holders) -> Self {
        Self {
            by_ip: holders,
            ..Self::default()
        }
    }

    /// The address → Services index, to share with the annotation keeper.
    pub(super) fn holders(&self) -> Holders {
        self.by_ip.clone()
    }

    /// Forgets everything (a full pass follows, which hands over [`Self::all`]).
    pub(super) fn clear(&mut self) {
        self.by_key.clear();
        self.by_ip.write().clear();
        self.dirty.clear();
    }

    /// Sets one Service's addresses; true when they changed.
    pub(super) fn set(&mut self, key: &Key, vips: Vec<VipInput>) -> bool {
        let old = self.by_key.get(key).map_or(&[][..], Vec::as_slice);
        if old == vips.as_slice() {
            return false;
        }
        let mut by_ip = self.by_ip.write();
        for v in old {
            self.dirty.insert(v.ip);
            if let Some(keys) = by_ip.get_mut(&v.ip) {
                keys.remove(key);
                if keys.is_empty() {
                    by_ip.remove(&v.ip);
                }
            }
        }
        for v in &vips {
            self.dirty.insert(v.ip);
            by_ip.entry(v.ip).or_default().insert(key.clone());
        }
        drop(by_ip);
        match vips.is_empty() {
            true => self.by_key.remove(key),
            false => self.by_key.insert(key.clone(), vips),
        };
        true
    }

    /// The input of `ip`: its first Service's.
    fn input(&self, ip: &IpAddr) -> Option<&VipInput> {
        let key = self.by_ip.read().get(ip)?.first()?.clone();
        self.by_key.get(&key)?.iter().find(|v| v.ip == *ip)
    }

    /// Every address once, in address order.
    pub(super) fn all(&mut self) -> Vec<VipInput> {
        self.dirty.clear();
        let by_ip = self.by_ip.read();
        by_ip
            .iter()
            .filter_map(|(ip, keys)| {
                let key = keys.first()?;
                self.by_key.get(key)?.iter().find(|v| v.ip == *ip).cloned()
            })
            .collect()
    }

    /// What changed since the last [`Self::all`] or delta: the addresses to (re)place
    /// and those gone.
    pub(super) fn take_delta(&mut self) -> (Vec<VipInput>, Vec<IpAddr>) {
        let (mut set, mut gone) = (Vec::new(), Vec::new());
        for ip in std::mem::take(&mut self.dirty) {
            match self.input(&ip) {
                Some(v) => set.push(v.clone()),
                None => gone.push(ip),
            }
        }
        (set, gone)
    }

    /// Every Service's addresses (an address two Services share, twice).
    pub(super) fn each(&self) -> impl Iterator<Item = &VipInput> {
        self.by_key.values().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portway_provider::TrafficPolicy;

    fn vip(ip: &str, ready: &[&str]) -> VipInput {
        VipInput {
            ip: ip.parse().expect("ip"),
            traffic_policy: TrafficPolicy::Cluster,
            ready_nodes: ready.iter().map(|s| s.to_string()).collect(),
            scope: None,
        }
    }

    fn key(name: &str) -> Key {
        ("default".into(), name.into())
    }

    #[test]
    fn a_delta_names_only_the_changed_services_addresses() {
        let mut v = L2Vips::default();
        for i in 0..100 {
            v.set(
                &key(&format!("s{i}")),
                vec![vip(&format!("10.0.0.{i}"), &["n1"])],
            );
        }
        assert_eq!(v.all().len(), 100);
        assert_eq!(v.take_delta(), (vec![], vec![]));
        assert!(
            !v.set(&key("s7"), vec![vip("10.0.0.7", &["n1"])]),
            "unchanged"
        );
        assert!(v.set(&key("s7"), vec![vip("10.0.0.7", &["n2"])]));
        assert!(v.set(&key("s8"), vec![]));
        assert_eq!(
            v.take_delta(),
            (
                vec![vip("10.0.0.7", &["n2"])],
                vec!["10.0.0.8".parse().expect("ip")]
            )
        );
        assert_eq!(v.take_delta(), (vec![], vec![]));
        assert_eq!(v.all().len(), 99);
    }

    #[test]
    fn a_shared_address_stays_while_any_service_holds_it() {
        let mut v = L2Vips::default();
        v.set(&key("a"), vec![vip("10.0.0.1", &["n1"])]);
        v.set(&key("b"), vec![vip("10.0.0.1", &["n2"])]);
        assert_eq!(
            v.all(),
            vec![vip("10.0.0.1", &["n1"])],
            "the first Service's input"
        );
        v.set(&key("a"), vec![]);
        assert_eq!(v.take_delta(), (vec![vip("10.0.0.1", &["n2"])], vec![]));
        v.set(&key("b"), vec![]);
        assert_eq!(
            v.take_delta(),
            (vec![], vec!["10.0.0.1".parse().expect("ip")])
        );
        assert_eq!(v.each().count(), 0);
    }

    #[test]
    fn the_shared_index_names_each_addresss_services() {
        let mut v = L2Vips::default();
        let holders = v.holders();
        v.set(
            &key("a"),
            vec![vip("10.0.0.1", &["n1"]), vip("10.0.0.2", &["n1"])],
        );
        v.set(&key("b"), vec![vip("10.0.0.1", &["n2"])]);
        let ip = |s: &str| -> IpAddr { s.parse().expect("ip") };
        assert_eq!(
            holders.of_any(&[ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.3")]),
            BTreeSet::from([key("a"), key("b")])
        );
        v.set(&key("a"), vec![]);
        assert_eq!(holders.of_any(&[ip("10.0.0.2")]), BTreeSet::new());
        assert_eq!(
            holders.of_any(&[ip("10.0.0.1")]),
            BTreeSet::from([key("b")])
        );
        v.clear();
        assert_eq!(holders.of_any(&[ip("10.0.0.1")]), BTreeSet::new());
    }
}
