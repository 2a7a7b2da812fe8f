//! Where one VIP may be announced from: the nodes and interfaces the announcement
//! policies covering its pool allow (`L2AnnouncementPolicy`, MetalLB's `L2Advertisement`).
//!
//! The scope travels inside each [`crate::VipInput`], so every speaker applies the same
//! restriction to the same address and the election stays a pure function of shared
//! inputs: a node the scope does not select is never a candidate, whatever its hash, and
//! the owner answers only on the scope's interfaces. The node labels it is matched against
//! are the API's (the same on every speaker), not the gossip's.
//!
//! Several policies covering one pool are a union, as in MetalLB: a node may announce if
//! any of them selects it, and the owner answers on any interface any of them lists; one
//! of them with no selector (or no interface) means every node (or every interface).

use crate::iface::InterfaceChoice;
use portway_provider::ipam::LabelSelector;
use std::collections::{BTreeMap, BTreeSet};

/// The restriction of one VIP, from the policies covering its pool.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VipScope {
    /// The policies that cover the pool (for messages: which one to fix).
    pub policies: Vec<String>,
    /// Nodes that may announce: one selector must match; `None` means every node.
    pub nodes: Option<Vec<LabelSelector>>,
    /// Interfaces to answer on; `None` means the node's default choice (the configured
    /// `l2.interfaces`, or those whose subnet holds the address).
    pub interfaces: Option<BTreeSet<String>>,
}

impl VipScope {
    /// Whether a node with these labels may announce the VIP.
    pub fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        self.nodes
            .as_ref()
            .is_none_or(|any| any.iter().any(|s| s.matches(labels)))
    }

    /// Where the owner answers for the VIP.
    pub fn interface_choice(&self) -> InterfaceChoice {
        match &self.interfaces {
            Some(names) => InterfaceChoice::Named(names.clone()),
            None => InterfaceChoice::Auto,
        }
    }

    /// Adds one more policy's terms: a union of nodes and of interfaces, where an
    /// unrestricted side (`None`) absorbs the other.
    pub fn union(
        &mut self,
        policy: &str,
        nodes: Option<Vec<LabelSelector>>,
        interfaces: Option<BTreeSet<String>>,
    ) {
        let first = self.policies.is_empty();
        self.policies.push(policy.to_string());
        if first {
            self.nodes = nodes;
            self.interfaces = interfaces;
            return;
        }
        self.nodes = absorbing_union(self.nodes.take(), nodes);
        self.interfaces = absorbing_union(self.interfaces.take(), interfaces);
    }
}

/// Both restrictions together; an unrestricted side (`None`) makes the union unrestricted.
fn absorbing_union<C: Extend<T> + IntoIterator<Item = T>, T>(
    a: Option<C>,
    b: Option<C>,
) -> Option<C> {
    let (mut a, b) = (a?, b?);
    a.extend(b);
    Some(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn sel(k: &str, v: &str) -> LabelSelector {
        LabelSelector {
            match_labels: labels(&[(k, v)]),
            ..LabelSelector::default()
        }
    }

    fn names(n: &[&str]) -> BTreeSet<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn two_policies_select_the_union_of_nodes_and_interfaces() {
        let mut s = VipScope::default();
        s.union("a", Some(vec![sel("zone", "a")]), Some(names(&["eth1"])));
        s.union("b", Some(vec![sel("zone", "b")]), Some(names(&["eth2"])));
        assert!(s.selects(&labels(&[("zone", "a")])));
        assert!(s.selects(&labels(&[("zone", "b")])));
        assert!(!s.selects(&labels(&[("zone", "c")])));
        assert!(!s.selects(&labels(&[])));
        assert_eq!(
            s.interface_choice(),
            InterfaceChoice::Named(names(&["eth1", "eth2"]))
        );
        assert_eq!(s.policies, ["a", "b"]);
    }

    #[test]
    fn an_unrestricted_policy_absorbs_the_others() {
        let mut s = VipScope::default();
        s.union(
            "narrow",
            Some(vec![sel("zone", "a")]),
            Some(names(&["eth1"])),
        );
        s.union("wide", None, None);
        assert!(s.selects(&labels(&[("zone", "c")])));
        assert_eq!(s.interface_choice(), InterfaceChoice::Auto);
        // In either order.
        let mut s = VipScope::default();
        s.union("wide", None, None);
        s.union(
            "narrow",
            Some(vec![sel("zone", "a")]),
            Some(names(&["eth1"])),
        );
        assert!(s.selects(&labels(&[])));
        assert_eq!(s.interface_choice(), InterfaceChoice::Auto);
    }
}
