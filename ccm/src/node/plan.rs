//! What initializing or refreshing a node should change, as a pure function.
//!
//! Bare metal has no instance API, so the "cloud" answer is assembled from
//! what the node already says about itself: kubelet's
//! `alpha.kubernetes.io/provided-node-ip`, the k3s agent's address
//! annotations, Portway's `portway.dev/external-ip`, the addresses kubelet
//! reported and the hostname. The rules follow the upstream cloud node
//! controller: a provided node IP goes first and is the only address of its
//! type; if it matches none of the known addresses the node keeps its taint.

use crate::k8s::{Node, NodeAddress};
use std::collections::BTreeMap;
use std::net::IpAddr;

pub use crate::names::UNINITIALIZED_TAINT;
/// kubelet's record of `--node-ip` (comma list for dual-stack).
pub const PROVIDED_NODE_IP: &str = "alpha.kubernetes.io/provided-node-ip";
/// The k3s agent's InternalIP annotation (comma list).
pub const K3S_INTERNAL_IP: &str = "k3s.io/internal-ip";
/// The k3s agent's ExternalIP annotation (comma list).
pub const K3S_EXTERNAL_IP: &str = "k3s.io/external-ip";
/// The k3s agent's hostname annotation.
pub const K3S_HOSTNAME: &str = "k3s.io/hostname";
/// Portway's own ExternalIP annotation, for nodes behind NAT (comma list).
pub const EXTERNAL_IP: &str = "portway.dev/external-ip";
/// Portway's own InternalIP annotation (comma list): for a kubelet started without
/// `--node-ip`, which reports no address at all with `--cloud-provider=external` (1.29+).
pub const INTERNAL_IP: &str = "portway.dev/internal-ip";

/// Labels the initializer sets (GA and beta spellings, as upstream does).
const INSTANCE_TYPE: [&str; 2] = [
    "node.kubernetes.io/instance-type",
    "beta.kubernetes.io/instance-type",
];
const ZONE: [&str; 2] = [
    "topology.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/zone",
];
const REGION: [&str; 2] = [
    "topology.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/region",
];

/// Node-controller settings from the configuration file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeSettings {
    /// Value of the instance-type label; `portway` when empty.
    pub instance_type: String,
    /// Zone label value for every node, unless the node has one.
    pub zone: Option<String>,
    /// Region label value for every node, unless the node has one.
    pub region: Option<String>,
}

/// Why a node cannot be initialized yet.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// kubelet's `--node-ip` is not one of the node's known addresses.
    #[error(
        "provided node IP {ip} (annotation {PROVIDED_NODE_IP}) matches none of the node's addresses ({known}); fix kubelet's --node-ip or add the address to the node"
    )]
    ProvidedIpUnknown {
        /// The offending address.
        ip: String,
        /// The addresses that were known.
        known: String,
    },
    /// The node reports no address and no annotation gives one: kubelet ≥ 1.29 with
    /// `--cloud-provider=external` and no `--node-ip` (kubernetes PR #121028).
    #[error(
        "the node reports no InternalIP or ExternalIP and no annotation gives one (kubelet 1.29+ \
         with --cloud-provider=external sets none without --node-ip); start kubelet with \
         --node-ip=<address>, or set the k3s agent's node-ip, or annotate the node with \
         {INTERNAL_IP}=<address>; the node keeps its uninitialized taint until then"
    )]
    NoAddress,
    /// The annotation does not parse.
    #[error("annotation {annotation} has {value:?}, which is not a comma list of IP addresses")]
    BadAnnotation {
        /// Which annotation.
        annotation: &'static str,
        /// Its value.
        value: String,
    },
}

/// The writes that bring a node in line.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodePlan {
    /// `spec.providerID` to set (only when empty today).
    pub provider_id: Option<String>,
    /// Labels to add (never overwriting existing ones).
    pub labels: BTreeMap<String, String>,
    /// Whether to remove the uninitialized taint.
    pub remove_taint: bool,
    /// The complete address list, when it differs from today's.
    pub addresses: Option<Vec<NodeAddress>>,
    /// kubelet's provided IP changed on an initialized node: the InternalIPs it replaced
    /// and the new ones, for the log and the event.
    pub renumbered: Option<(Vec<String>, Vec<String>)>,
}

impl NodePlan {
    /// Whether the spec/metadata write is needed.
    pub fn needs_spec_write(&self) -> bool {
        self.provider_id.is_some() || !self.labels.is_empty() || self.remove_taint
    }
}

/// Whether the node still carries the uninitialized taint.
pub fn is_uninitialized(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|t| t.iter().any(|t| t.key == UNINITIALIZED_TAINT))
}

fn annotation_ips(node: &Node, key: &'static str) -> Result<Vec<IpAddr>, PlanError> {
    let Some(value) = node.metadata.annotations.as_ref().and_then(|a| a.get(key)) else {
        return Ok(Vec::new());
    };
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse().map_err(|_| PlanError::BadAnnotation {
                annotation: key,
                value: value.clone(),
            })
        })
        .collect()
}

fn push_unique(list: &mut Vec<NodeAddress>, type_: &str, address: String) {
    if !list
        .iter()
        .any(|a| a.type_ == type_ && a.address == address)
    {
        list.push(NodeAddress {
            type_: type_.to_string(),
            address,
        });
    }
}

/// The addresses the node should have. On an initialized node a provided IP that matches no
/// known address is kubelet's statement of truth after a renumbering (kubelet never
/// rewrites addresses that exist): it replaces the InternalIPs of its family. On a node
/// still tainted it is refused, as upstream does.
pub fn desired_addresses(node: &Node) -> Result<Vec<NodeAddress>, PlanError> {
    let initialized = !is_uninitialized(node);
    let existing: Vec<NodeAddress> = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.clone())
        .unwrap_or_default();
    let name = node.metadata.name.clone().unwrap_or_default();

    let mut internal: Vec<String> = annotation_ips(node, K3S_INTERNAL_IP)?
        .into_iter()
        .chain(annotation_ips(node, INTERNAL_IP)?)
        .map(|ip| ip.to_string())
        .collect();
    let mut external: Vec<String> = annotation_ips(node, K3S_EXTERNAL_IP)?
        .into_iter()
        .chain(annotation_ips(node, EXTERNAL_IP)?)
        .map(|ip| ip.to_string())
        .collect();
    // An annotation is the whole truth for its type, as in k3s's own cloud
    // provider: a node restarted with a new `--node-external-ip` loses the old
    // address. Without one, the addresses already there (kubelet's) are kept.
    let has = |key| {
        node.metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(key))
    };
    let internal_annotated = has(K3S_INTERNAL_IP) || has(INTERNAL_IP);
    let external_annotated = has(K3S_EXTERNAL_IP) || has(EXTERNAL_IP);
    for a in &existing {
        match a.type_.as_str() {
            "InternalIP" if !internal_annotated && !internal.contains(&a.address) => {
                internal.push(a.address.clone())
            }
            "ExternalIP" if !external_annotated && !external.contains(&a.address) => {
                external.push(a.address.clone())
            }
            _ => {}
        }
    }
    let hostname = node
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(K3S_HOSTNAME).cloned())
        .or_else(|| {
            existing
                .iter()
                .find(|a| a.type_ == "Hostname")
                .map(|a| a.address.clone())
        })
        .unwrap_or(name);

    let provided = annotation_ips(node, PROVIDED_NODE_IP)?;
    let mut out = Vec::new();
    if !provided.is_empty() {
        // Upstream: addresses matching the provided IP go first and are the
        // only ones of their type.
        let mut types_taken = Vec::new();
        for ip in &provided {
            let text = ip.to_string();
            let ty = if internal.contains(&text) {
                "InternalIP"
            } else if external.contains(&text) {
                "ExternalIP"
            } else if initialized {
                internal.retain(|a| {
                    a.parse::<IpAddr>()
                        .is_ok_and(|a| a.is_ipv4() != ip.is_ipv4())
                });
                internal.insert(0, text.clone());
                "InternalIP"
            } else {
                let known: Vec<String> = internal.iter().chain(&external).cloned().collect();
                return Err(PlanError::ProvidedIpUnknown {
                    ip: text,
                    known: if known.is_empty() {
                        "none".into()
                    } else {
                        known.join(", ")
                    },
                });
            };
            push_unique(&mut out, ty, text);
            types_taken.push(ty);
        }
        if !types_taken.contains(&"InternalIP") {
            for ip in internal {
                push_unique(&mut out, "InternalIP", ip);
            }
        }
        if !types_taken.contains(&"ExternalIP") {
            for ip in external {
                push_unique(&mut out, "ExternalIP", ip);
            }
        }
    } else {
        for ip in internal {
            push_unique(&mut out, "InternalIP", ip);
        }
        for ip in external {
            push_unique(&mut out, "ExternalIP", ip);
        }
    }
    if !out
        .iter()
        .any(|a| a.type_ == "InternalIP" || a.type_ == "ExternalIP")
    {
        return Err(PlanError::NoAddress);
    }
    push_unique(&mut out, "Hostname", hostname);
    Ok(out)
}

/// Everything to change on `node`: initialization (when tainted) and addresses.
pub fn plan(node: &Node, settings: &NodeSettings) -> Result<NodePlan, PlanError> {
    let addresses = desired_addresses(node)?;
    let current = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.clone())
        .unwrap_or_default();
    let internal_of = |list: &[NodeAddress]| -> Vec<String> {
        list.iter()
            .filter(|a| a.type_ == "InternalIP")
            .map(|a| a.address.clone())
            .collect()
    };
    let (before, after) = (internal_of(&current), internal_of(&addresses));
    let renumbered = (!is_uninitialized(node)
        && !before.is_empty()
        && before != after
        && !before.iter().all(|a| after.contains(a)))
    .then_some((before, after));
    let mut plan = NodePlan {
        addresses: (addresses != current).then_some(addresses),
        renumbered,
        ..Default::default()
    };
    if !is_uninitialized(node) {
        return Ok(plan);
    }
    let name = node.metadata.name.clone().unwrap_or_default();
    let has_provider_id = node
        .spec
        .as_ref()
        .and_then(|s| s.provider_id.as_deref())
        .is_some_and(|p| !p.is_empty());
    if !has_provider_id {
        plan.provider_id = Some(format!("portway://{name}"));
    }
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let instance_type = if settings.instance_type.is_empty() {
        "portway".to_string()
    } else {
        settings.instance_type.clone()
    };
    let mut want = |keys: [&str; 2], value: Option<String>| {
        // An existing GA label wins over config; beta mirrors it.
        let value = labels.get(keys[0]).cloned().or(value);
        if let Some(v) = value {
            for k in keys {
                if !labels.contains_key(k) {
                    plan.labels.insert(k.to_string(), v.clone());
                }
            }
        }
    };
    want(INSTANCE_TYPE, Some(instance_type));
    want(ZONE, settings.zone.clone());
    want(REGION, settings.region.clone());
    plan.remove_taint = true;
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::{ObjectMeta, Taint};
    use k8s_openapi::api::core::v1::{NodeSpec, NodeStatus};

    fn node(annotations: &[(&str, &str)], addrs: &[(&str, &str)], tainted: bool) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some("n1".into()),
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                taints: tainted.then(|| {
                    vec![Taint {
                        key: UNINITIALIZED_TAINT.into(),
                        value: Some("true".into()),
                        effect: "NoSchedule".into(),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                addresses: Some(
                    addrs
                        .iter()
                        .map(|(t, a)| NodeAddress {
                            type_: t.to_string(),
                            address: a.to_string(),
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
        }
    }

    fn addrs(list: &[NodeAddress]) -> Vec<(String, String)> {
        list.iter()
            .map(|a| (a.type_.clone(), a.address.clone()))
            .collect()
    }

    #[test]
    fn initializes_tainted_node() {
        let n = node(
            &[(PROVIDED_NODE_IP, "10.0.0.1")],
            &[("InternalIP", "10.0.0.1")],
            true,
        );
        let p = plan(&n, &NodeSettings::default()).expect("plan");
        assert_eq!(p.provider_id.as_deref(), Some("portway://n1"));
        assert!(p.remove_taint);
        assert_eq!(p.labels["node.kubernetes.io/instance-type"], "portway");
        assert_eq!(p.labels["beta.kubernetes.io/instance-type"], "portway");
        assert!(!p.labels.contains_key("topology.kubernetes.io/zone"));
        let a = p.addresses.expect("hostname added");
        assert_eq!(
            addrs(&a),
            [
                ("InternalIP".into(), "10.0.0.1".into()),
                ("Hostname".into(), "n1".into())
            ]
        );
    }

    #[test]
    fn wrong_provided_ip_is_refused() {
        let n = node(
            &[(PROVIDED_NODE_IP, "10.9.9.9")],
            &[("InternalIP", "10.0.0.1")],
            true,
        );
        let err = plan(&n, &NodeSettings::default()).expect_err("unknown");
        assert!(matches!(err, PlanError::ProvidedIpUnknown { ref ip, .. } if ip == "10.9.9.9"));
        assert!(err.to_string().contains("10.0.0.1"));
    }

    #[test]
    fn provided_ip_is_first_and_exclusive_and_dual_stack_is_whole() {
        let n = node(
            &[
                (PROVIDED_NODE_IP, "10.0.0.2,fd00::2"),
                (K3S_INTERNAL_IP, "10.0.0.1,10.0.0.2,fd00::2"),
                (EXTERNAL_IP, "203.0.113.7"),
            ],
            &[],
            true,
        );
        let p = plan(&n, &NodeSettings::default()).expect("plan");
        assert_eq!(
            addrs(&p.addresses.expect("addresses")),
            [
                ("InternalIP".into(), "10.0.0.2".into()),
                ("InternalIP".into(), "fd00::2".into()),
                ("ExternalIP".into(), "203.0.113.7".into()),
                ("Hostname".into(), "n1".into()),
            ]
        );
    }

    #[test]
    fn initialized_node_gets_only_address_refresh_and_no_write_when_same() {
        let n = node(
            &[],
            &[("InternalIP", "10.0.0.1"), ("Hostname", "n1")],
            false,
        );
        let p = plan(&n, &NodeSettings::default()).expect("plan");
        assert_eq!(p, NodePlan::default());
        assert!(!p.needs_spec_write());
    }

    #[test]
    fn existing_labels_and_provider_id_are_kept() {
        let mut n = node(&[], &[("InternalIP", "10.0.0.1")], true);
        n.metadata.labels = Some(
            [(
                "topology.kubernetes.io/zone".to_string(),
                "rack1".to_string(),
            )]
            .into(),
        );
        n.spec.as_mut().expect("spec").provider_id = Some("k3s://n1".into());
        let p = plan(
            &n,
            &NodeSettings {
                zone: Some("dc".into()),
                region: Some("eu".into()),
                ..Default::default()
            },
        )
        .expect("plan");
        assert_eq!(p.provider_id, None);
        assert!(!p.labels.contains_key("topology.kubernetes.io/zone"));
        assert_eq!(p.labels["failure-domain.beta.kubernetes.io/zone"], "rack1");
        assert_eq!(p.labels["topology.kubernetes.io/region"], "eu");
    }

    #[test]
    fn an_annotation_replaces_the_addresses_of_its_type() {
        // The node came back with a new external IP: the old one goes.
        let n = node(
            &[(K3S_EXTERNAL_IP, "203.0.113.9")],
            &[
                ("InternalIP", "10.0.0.1"),
                ("ExternalIP", "203.0.113.5"),
                ("Hostname", "n1"),
            ],
            false,
        );
        let p = plan(&n, &NodeSettings::default()).expect("plan");
        let got: Vec<(String, String)> = p
            .addresses
            .expect("a refresh")
            .into_iter()
            .map(|a| (a.type_, a.address))
            .collect();
        assert_eq!(
            got,
            [
                ("InternalIP".to_string(), "10.0.0.1".to_string()),
                ("ExternalIP".to_string(), "203.0.113.9".to_string()),
                ("Hostname".to_string(), "n1".to_string()),
            ]
        );
    }

    #[test]
    fn bad_annotation_is_named() {
        let n = node(&[(K3S_INTERNAL_IP, "ten.0.0.1")], &[], true);
        let err = plan(&n, &NodeSettings::default()).expect_err("bad");
        assert!(err.to_string().contains(K3S_INTERNAL_IP));
    }

    /// Issue 16 #2: no address and nothing that names one keeps the taint, with the fix.
    #[test]
    fn a_node_without_any_address_is_not_initialized() {
        let n = node(&[], &[], true);
        let err = plan(&n, &NodeSettings::default()).expect_err("no address");
        assert_eq!(err, PlanError::NoAddress);
        assert!(err.to_string().contains("--node-ip"), "{err}");
        assert!(err.to_string().contains(INTERNAL_IP), "{err}");
        let hostname_only = node(&[], &[("Hostname", "n1")], true);
        assert_eq!(
            plan(&hostname_only, &NodeSettings::default()),
            Err(PlanError::NoAddress)
        );
        let annotated = node(&[(INTERNAL_IP, "10.0.0.7")], &[], true);
        let p = plan(&annotated, &NodeSettings::default()).expect("plan");
        assert!(p.remove_taint);
        assert_eq!(
            addrs(&p.addresses.expect("addresses")),
            [
                ("InternalIP".into(), "10.0.0.7".into()),
                ("Hostname".into(), "n1".into())
            ]
        );
    }

    /// Issue 16 #3: kubelet restarted with a new --node-ip keeps its old addresses; the
    /// provided IP wins on an initialized node, per family.
    #[test]
    fn a_renumbered_initialized_node_gets_its_provided_ip() {
        let n = node(
            &[(PROVIDED_NODE_IP, "10.0.0.9")],
            &[
                ("InternalIP", "10.0.0.5"),
                ("InternalIP", "fd00::5"),
                ("Hostname", "n1"),
            ],
            false,
        );
        let p = plan(&n, &NodeSettings::default()).expect("plan");
        assert_eq!(
            addrs(p.addresses.as_ref().expect("addresses")),
            // Upstream: the provided IP's type holds only what was provided.
            [
                ("InternalIP".into(), "10.0.0.9".into()),
                ("Hostname".into(), "n1".into())
            ]
        );
        assert_eq!(
            p.renumbered,
            Some((
                vec!["10.0.0.5".to_string(), "fd00::5".to_string()],
                vec!["10.0.0.9".to_string()]
            ))
        );
        assert!(!p.needs_spec_write());
    }
}
