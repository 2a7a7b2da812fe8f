//! The RBAC model: effective permissions of a ServiceAccount computed from the
//! rendered objects, and the allow-lists derived from the code's calls.

use super::{NS, Rendered, s, strs};
use serde_json::Value;
use std::collections::BTreeSet;

/// One permission: a verb on a resource (with subresource) in a scope,
/// optionally on one named object.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Perm {
    pub(crate) group: String,
    pub(crate) resource: String,
    pub(crate) verb: String,
    /// `None`: cluster-wide (ClusterRoleBinding).
    pub(crate) namespace: Option<String>,
    /// `None`: any object.
    pub(crate) name: Option<String>,
}

pub(crate) fn perms(
    group: &str,
    resource: &str,
    verbs: &[&str],
    namespace: Option<&str>,
    name: Option<&str>,
) -> Vec<Perm> {
    verbs
        .iter()
        .map(|v| Perm {
            group: group.to_string(),
            resource: resource.to_string(),
            verb: v.to_string(),
            namespace: namespace.map(String::from),
            name: name.map(String::from),
        })
        .collect()
}

/// What the manifests configure that decides which calls the code makes.
#[derive(Debug)]
pub(crate) struct Wiring {
    /// `--controllers` enables the cloud node controller.
    pub(crate) cloud_node: bool,
    /// `--leader-elect-resource-namespace` (the pod's namespace) and `-name`.
    pub(crate) lease_namespace: String,
    pub(crate) lease_name: String,
    /// `hostport.namespace` (default kube-system).
    pub(crate) hostport_namespace: String,
    /// The hostport class is on (`hostport.enabled`, default true).
    pub(crate) hostport: bool,
    /// A speaker runs (l2 or bgp configured).
    pub(crate) speaker: bool,
    /// `f5.credentialsSecret` (default portway-system/bigip).
    pub(crate) f5_secret: (String, String),
    /// `bgp.peers[].passwordSecret` (default portway-system/bgp-auth).
    pub(crate) bgp_secrets: BTreeSet<(String, String)>,
}

/// The permissions `portway controller` needs, derived from the calls in the
/// code. Everything here is granted and nothing else may be.
pub(crate) fn controller_allow_list(w: &Wiring) -> BTreeSet<Perm> {
    let mut out = Vec::new();
    // ccm/src/service/mod.rs: Controller::for_stream(watcher(Api::<Service>::all))
    // lists and watches every Service; service/writes.rs adds/removes the finalizer
    // with `.patch(Patch::Strategic)`. No update (no replace) anywhere.
    out.extend(perms(
        "",
        "services",
        &["list", "watch", "patch"],
        None,
        None,
    ));
    // service/writes.rs: `.patch_status(Patch::Merge)` of status.loadBalancer.
    out.extend(perms("", "services/status", &["patch"], None, None));
    // service/mod.rs: reflector over Api::<Node>::all (eligible node set);
    // node/mod.rs: Controller::new(Api::<Node>::all).
    out.extend(perms("", "nodes", &["list", "watch"], None, None));
    if w.cloud_node {
        // node/mod.rs: `api.patch(Patch::Json)` for providerID, labels, taint.
        out.extend(perms("", "nodes", &["patch"], None, None));
        // node/mod.rs: `api.patch_status(Patch::Merge)` of status.addresses.
        out.extend(perms("", "nodes/status", &["patch"], None, None));
    }
    // service/mod.rs: reflector over Api::<Namespace>::all (namespaceSelector of pools).
    out.extend(perms("", "namespaces", &["list", "watch"], None, None));
    // ccm/src/events.rs: Api::<core::v1::Event>::namespaced(..).create and
    // .patch (count) in the Service's namespace, `default` for Nodes.
    let events = ["create", "patch"];
    out.extend(perms("", "events", &events, None, None));
    // service/watches.rs: reflector over Api::<EndpointSlice>::all when a provider
    // reads endpoints (hostport under Local policy, f5 memberMode cluster).
    let slices = ["list", "watch"];
    out.extend(perms(
        "discovery.k8s.io",
        "endpointslices",
        &slices,
        None,
        None,
    ));
    // ccm/src/pools/watch.rs: reflectors over AddressPools (applied to the allocator
    // live), L2AnnouncementPolicies and BGPAdvertisements (the pools each class uses).
    for res in [
        "addresspools",
        "l2announcementpolicies",
        "bgpadvertisements",
    ] {
        out.extend(perms("portway.dev", res, &["list", "watch"], None, None));
    }
    // ccm/src/pools/status.rs: `.patch_status(Patch::Merge)` of each pool's status.
    out.extend(perms(
        "portway.dev",
        "addresspools/status",
        &["patch"],
        None,
        None,
    ));
    // ccm/src/leader.rs: `api.create` of the Lease when absent (a create
    // carries no name for the authorizer, so it cannot be limited to one) ...
    let lease_ns = Some(w.lease_namespace.as_str());
    out.extend(perms(
        "coordination.k8s.io",
        "leases",
        &["create"],
        lease_ns,
        None,
    ));
    // ... and `api.get_opt` / `api.get` / `api.replace` (update) of that one Lease.
    let lease = Some(w.lease_name.as_str());
    out.extend(perms(
        "coordination.k8s.io",
        "leases",
        &["get", "update"],
        lease_ns,
        lease,
    ));
    // providers/hostport/src/provider.rs: `get_opt` of the Service's svclb
    // DaemonSet, `create`, `replace` (update) when the spec hash differs,
    // `delete` in ensure_deleted and for orphans, `list` (label svcname) at start.
    // With the class off (`hostport.enabled: false`) the retired provider only lists
    // and deletes what is left (`adopt`, `ensure_deleted`).
    let hp = Some(w.hostport_namespace.as_str());
    if !w.hostport {
        out.extend(perms("apps", "daemonsets", &["list", "delete"], hp, None));
    }
    if w.hostport {
        let ds = ["get", "list", "create", "update", "delete"];
        out.extend(perms("apps", "daemonsets", &ds, hp, None));
        // providers/hostport/src/provider.rs: reflector over Api::<Pod>::namespaced
        // (svclb pods: which nodes host a Ready one).
        out.extend(perms("", "pods", &["list", "watch"], hp, None));
        // providers/hostport/src/provider.rs `ensure_account`: `get_opt("svclb")`,
        // `create` when missing.
        out.extend(perms("", "serviceaccounts", &["get", "create"], hp, None));
    }
    // providers/f5/src/provider.rs: `get_opt` of f5.credentialsSecret.
    let (f5_ns, f5_name) = (Some(w.f5_secret.0.as_str()), Some(w.f5_secret.1.as_str()));
    out.extend(perms("", "secrets", &["get"], f5_ns, f5_name));
    out.into_iter().collect()
}

/// The permissions `portway speaker` needs, derived from its calls.
pub(crate) fn speaker_allow_list(w: &Wiring) -> BTreeSet<Perm> {
    let mut out = Vec::new();
    if !w.speaker {
        // No speaker runs: its account (if any) may do nothing.
        return BTreeSet::new();
    }
    // ccm/src/speaker/mod.rs: reflector over Api::<Service>::all (l2 and bgp
    // Services); `announce` writes `portway.dev/announced-by` with a merge patch.
    out.extend(perms(
        "",
        "services",
        &["list", "watch", "patch"],
        None,
        None,
    ));
    // ccm/src/speaker/mod.rs: reflector over Api::<Node>::all (labels, addresses).
    out.extend(perms("", "nodes", &["list", "watch"], None, None));
    // ccm/src/speaker/mod.rs: reflector over Api::<EndpointSlice>::all
    // (externalTrafficPolicy Local: ready local endpoints).
    out.extend(perms(
        "discovery.k8s.io",
        "endpointslices",
        &["list", "watch"],
        None,
        None,
    ));
    // ccm/src/speaker/mod.rs: Events::new(.., "portway-speaker", ..) on Services
    // (ccm/src/events.rs: core/v1 create, and patch for the count).
    out.extend(perms("", "events", &["create", "patch"], None, None));
    // ccm/src/speaker/live_pools.rs: reflectors over AddressPools and
    // L2AnnouncementPolicies (the l2 class's pools, live).
    for res in ["addresspools", "l2announcementpolicies"] {
        out.extend(perms("portway.dev", res, &["list", "watch"], None, None));
    }
    // ccm/src/speaker/live_bgp.rs: reflectors over BGPPeers and BGPAdvertisements
    // (the bgp section's peers and advertisements, live).
    for res in ["bgppeers", "bgpadvertisements"] {
        out.extend(perms("portway.dev", res, &["list", "watch"], None, None));
    }
    // ccm/src/speaker/peer_status.rs: `.patch_status(Patch::Apply)` of this node's
    // entry in each BGPPeer's status.sessions.
    out.extend(perms(
        "portway.dev",
        "bgppeers/status",
        &["patch"],
        None,
        None,
    ));
    // ccm/src/speaker/mod.rs `fetch_passwords`: `Api::<Secret>::get` of each
    // bgp.peers[].passwordSecret (TCP MD5).
    for (ns, name) in &w.bgp_secrets {
        out.extend(perms("", "secrets", &["get"], Some(ns), Some(name)));
    }
    // ccm/src/speaker/gossip_key.rs `follow`: `Api::<Secret>::get_opt` of the
    // --gossip-secret the DaemonSet passes (the L2 gossip key).
    out.extend(perms(
        "",
        "secrets",
        &["get"],
        Some(NS),
        Some("portway-gossip"),
    ));
    // ccm/src/speaker/mod.rs `follow_kube_proxy`: `Api::<ConfigMap>::get_opt` of
    // kube-system/kube-proxy (the IPVS strictARP trap).
    out.extend(perms(
        "",
        "configmaps",
        &["get"],
        Some("kube-system"),
        Some("kube-proxy"),
    ));
    out.into_iter().collect()
}

/// The effective permissions of `system:serviceaccount:<NS>:<sa>` from the
/// rendered RBAC objects. Panics on a dangling roleRef or a wildcard.
pub(crate) fn effective(r: &Rendered, sa: &str) -> BTreeSet<Perm> {
    let mut out = BTreeSet::new();
    let is_subject = |b: &Value| {
        b.get("subjects")
            .and_then(Value::as_array)
            .is_some_and(|subs| {
                subs.iter().any(|x| {
                    s(x, "/kind") == "ServiceAccount"
                        && s(x, "/name") == sa
                        && s(x, "/namespace") == NS
                })
            })
    };
    for binding in r
        .of_kind("ClusterRoleBinding")
        .chain(r.of_kind("RoleBinding"))
    {
        if !is_subject(binding) {
            continue;
        }
        let binding_ns = s(binding, "/metadata/namespace");
        let scope = (s(binding, "/kind") == "RoleBinding").then(|| binding_ns.to_string());
        let role = match s(binding, "/roleRef/kind") {
            "ClusterRole" => r.get("ClusterRole", "", s(binding, "/roleRef/name")),
            "Role" => r.get("Role", binding_ns, s(binding, "/roleRef/name")),
            other => panic!("{}: roleRef kind {other:?}", r.overlay),
        };
        let rules = role
            .get("rules")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for rule in &rules {
            let groups = strs(rule.get("apiGroups"));
            let resources = strs(rule.get("resources"));
            let verbs = strs(rule.get("verbs"));
            let names = strs(rule.get("resourceNames"));
            for list in [&groups, &resources, &verbs, &names] {
                assert!(
                    !list.iter().any(|x| x.contains('*')),
                    "{}: wildcard in {} rule {rule}",
                    r.overlay,
                    s(role, "/metadata/name")
                );
            }
            assert!(
                rule.get("nonResourceURLs").is_none(),
                "{}: nonResourceURLs are never needed: {rule}",
                r.overlay
            );
            let names: Vec<Option<String>> = if names.is_empty() {
                vec![None]
            } else {
                names.into_iter().map(Some).collect()
            };
            for g in &groups {
                for res in &resources {
                    for v in &verbs {
                        for n in &names {
                            out.insert(Perm {
                                group: g.clone(),
                                resource: res.clone(),
                                verb: v.clone(),
                                namespace: scope.clone(),
                                name: n.clone(),
                            });
                        }
                    }
                }
            }
        }
    }
    out
}

pub(crate) fn assert_same_perms(
    overlay: &str,
    who: &str,
    granted: &BTreeSet<Perm>,
    needed: &BTreeSet<Perm>,
) {
    let extra: Vec<_> = granted.difference(needed).collect();
    let missing: Vec<_> = needed.difference(granted).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "{overlay}: RBAC of {who} differs from what the code calls\n\
         granted but never called (remove from deploy/ or add the call to the allow-list):\n{extra:#?}\n\
         called but not granted:\n{missing:#?}"
    );
}
