//! Why a Service is (or is not) reachable, node by node: a pure function of what the API
//! holds (the Service, the Nodes, its endpoints, the svclb pods, the speakers' events).

use crate::k8s::{Node, Service};
use crate::names::{AUTOSCALER_TAINT, EXCLUDE_LABEL, UNINITIALIZED_TAINT, parse_go_bool};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::collections::{BTreeMap, BTreeSet};

/// kubeadm's control-plane role label (nodes that also get [`EXCLUDE_LABEL`]).
const CONTROL_PLANE: &str = "node-role.kubernetes.io/control-plane";
const ENABLELB: &str = "svccontroller.k3s.cattle.io/enablelb";
const SVCNAME: &str = "svccontroller.k3s.cattle.io/svcname";
const SVCNAMESPACE: &str = "svccontroller.k3s.cattle.io/svcnamespace";

/// What the report is computed from.
pub struct Input<'a> {
    /// The Service.
    pub service: &'a Service,
    /// Its class after `defaultClass`, `None` when it is not a LoadBalancer.
    pub class: Option<&'a str>,
    /// Every Node.
    pub nodes: &'a [Node],
    /// The Service's EndpointSlices.
    pub slices: &'a [EndpointSlice],
    /// Every svclb pod (any Service's: they take ports from each other).
    pub svclb_pods: &'a [Pod],
    /// Events on the Service: (speaker's node, reason, message), newest last; the node is
    /// empty for the controller's own events.
    pub events: &'a [(String, String, String)],
}

/// One node's line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeLine {
    /// The node.
    pub node: String,
    /// Whether it carries the Service's traffic (announces, advertises, is a member).
    pub serves: bool,
    /// Why (not).
    pub reasons: Vec<String>,
}

/// The whole answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// Lines about the Service itself (class, address, its Serving condition).
    pub summary: Vec<String>,
    /// One line per node.
    pub nodes: Vec<NodeLine>,
}

fn label<'a>(n: &'a Node, k: &str) -> Option<&'a str> {
    n.metadata.labels.as_ref()?.get(k).map(String::as_str)
}

fn tainted(n: &Node, key: &str) -> bool {
    n.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|t| t.iter().any(|t| t.key == key))
}

/// Why a node may not carry load-balancer traffic at all (upstream's rules), if so.
pub fn ineligible(n: &Node) -> Option<String> {
    if n.metadata.deletion_timestamp.is_some() {
        return Some("the node is being deleted".into());
    }
    if let Some(v) = label(n, EXCLUDE_LABEL)
        && parse_go_bool(v) != Some(false)
    {
        let kubeadm = label(n, CONTROL_PLANE).is_some();
        return Some(format!(
            "excluded by label {EXCLUDE_LABEL}={v:?}{}; remove the label (or set it to \"false\") to let it serve",
            if kubeadm {
                " (kubeadm puts it on control-plane nodes: in a cluster of control-plane nodes only, no node serves)"
            } else {
                ""
            }
        ));
    }
    if tainted(n, UNINITIALIZED_TAINT) {
        return Some(format!(
            "not initialized yet (taint {UNINITIALIZED_TAINT}): the cloud node controller has not accepted it; see its events"
        ));
    }
    if tainted(n, AUTOSCALER_TAINT) {
        return Some("the cluster autoscaler is removing it".into());
    }
    None
}

/// Nodes with a ready endpoint of the Service.
fn ready_endpoint_nodes(slices: &[EndpointSlice]) -> BTreeSet<String> {
    slices
        .iter()
        .flat_map(|s| s.endpoints.iter())
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
        .filter_map(|e| e.node_name.clone())
        .collect()
}

fn ips(s: &Service) -> Vec<String> {
    s.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|l| l.ingress.as_ref())
        .map(|i| i.iter().filter_map(|x| x.ip.clone()).collect())
        .unwrap_or_default()
}

/// The report.
pub fn explain(input: &Input<'_>) -> Report {
    let svc = input.service;
    let name = format!(
        "{}/{}",
        svc.metadata.namespace.clone().unwrap_or_default(),
        svc.metadata.name.clone().unwrap_or_default()
    );
    let mut summary = Vec::new();
    let Some(class) = input.class else {
        summary.push(format!(
            "{name} is not of type LoadBalancer: no load balancer is made for it"
        ));
        return Report {
            summary,
            nodes: Vec::new(),
        };
    };
    let addrs = ips(svc);
    summary.push(format!(
        "{name}: class {class}, address {}",
        if addrs.is_empty() {
            "<pending>".to_string()
        } else {
            addrs.join(", ")
        }
    ));
    if let Some(served) = svc
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(crate::names::SERVED_CLASS))
        .filter(|s| s.as_str() != class)
    {
        summary.push(format!(
            "the class changed: {served} still holds the load balancer until it releases it"
        ));
    }
    if let Some(c) = svc
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.type_ == crate::service::condition::SERVING)
        })
    {
        summary.push(format!(
            "condition {}: {} ({}): {}",
            c.type_, c.status, c.reason, c.message
        ));
    }
    // The controller's newest word (an appliance's or a pool's trouble is said there).
    if let Some((_, reason, message)) = input.events.iter().rev().find(|(h, _, _)| h.is_empty()) {
        summary.push(format!("controller's last event {reason}: {message}"));
    }
    let local = svc
        .spec
        .as_ref()
        .and_then(|s| s.external_traffic_policy.as_deref())
        == Some("Local");
    let ready = ready_endpoint_nodes(input.slices);
    if local {
        summary.push(format!(
            "externalTrafficPolicy Local: only nodes with a ready endpoint may serve ({})",
            if ready.is_empty() {
                "none has one".to_string()
            } else {
                ready.iter().cloned().collect::<Vec<_>>().join(", ")
            }
        ));
    }
    let announced_by = svc
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(crate::names::ANNOUNCED_BY))
        .cloned();
    // The newest event from each node's speaker, per reason.
    let mut from_node: BTreeMap<&str, BTreeMap<&str, &str>> = BTreeMap::new();
    for (host, reason, message) in input.events.iter().filter(|(h, _, _)| !h.is_empty()) {
        from_node
            .entry(host.as_str())
            .or_default()
            .insert(reason.as_str(), message.as_str());
    }
    let allow_list = input.nodes.iter().any(|n| label(n, ENABLELB).is_some());
    let mut nodes = Vec::new();
    for n in input.nodes {
        let node = n.metadata.name.clone().unwrap_or_default();
        let mut reasons = Vec::new();
        let mut serves = false;
        if let Some(why) = ineligible(n) {
            reasons.push(why);
        } else if local && !ready.contains(&node) {
            reasons.push(
                "no ready endpoint of the Service on this node (externalTrafficPolicy Local)"
                    .into(),
            );
        } else {
            match class {
                crate::names::HOSTPORT => {
                    hostport_line(input, n, &node, allow_list, &mut serves, &mut reasons)
                }
                crate::names::L2 => match announced_by.as_deref() {
                    Some(owner) if owner == node => {
                        serves = true;
                        reasons.push(format!("announces {} over ARP/NDP", addrs.join(", ")));
                    }
                    Some(owner) => reasons.push(format!("standby: {owner} announces the address")),
                    None => reasons.push("no node says it announces the address (no speaker elected, no quorum, or no interface on its subnet: see this node's speaker events)".into()),
                },
                crate::names::BGP => {
                    serves = !addrs.is_empty();
                    reasons.push("advertises the address to its BGP peers (if its sessions are up: see its speaker events)".into());
                }
                crate::names::F5 => {
                    serves = !addrs.is_empty();
                    reasons.push("a BIG-IP pool member (memberMode nodeport) or hosts its pods (memberMode cluster)".into());
                }
                other => reasons.push(format!("{other} is not a Portway class")),
            }
        }
        for (reason, message) in from_node.get(node.as_str()).into_iter().flatten() {
            reasons.push(format!("speaker on this node said {reason}: {message}"));
        }
        nodes.push(NodeLine {
            node,
            serves,
            reasons,
        });
    }
    Report { summary, nodes }
}

fn hostport_line(
    input: &Input<'_>,
    n: &Node,
    node: &str,
    allow_list: bool,
    serves: &mut bool,
    reasons: &mut Vec<String>,
) {
    let svc = input.service;
    let (ns, name) = (
        svc.metadata.namespace.clone().unwrap_or_default(),
        svc.metadata.name.clone().unwrap_or_default(),
    );
    if allow_list && label(n, ENABLELB) != Some("true") {
        reasons.push(format!(
            "some nodes carry {ENABLELB}, this one not as \"true\": svclb pods run only on those"
        ));
        return;
    }
    let of = |p: &&Pod, ns: &str, name: &str| {
        let l = p.metadata.labels.clone().unwrap_or_default();
        l.get(SVCNAMESPACE).map(String::as_str) == Some(ns)
            && l.get(SVCNAME).map(String::as_str) == Some(name)
    };
    let on_node = |p: &Pod| pod_node(p) == Some(node);
    let mine: Vec<&Pod> = input
        .svclb_pods
        .iter()
        .filter(|p| of(p, &ns, &name))
        .collect();
    let own = mine.iter().copied().find(|p| on_node(p));
    let ready = own.is_some_and(|p| {
        p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    });
    if ready {
        *serves = true;
        reasons.push("runs a ready svclb pod: serves on the node's address".to_string());
        return;
    }
    // Not serving here: does another Service's running svclb pod hold its ports?
    let ports: BTreeSet<(i32, String)> = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default()
        .iter()
        .map(|p| (p.port, p.protocol.clone().unwrap_or_else(|| "TCP".into())))
        .collect();
    for p in input
        .svclb_pods
        .iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node))
        .filter(|p| !of(p, &ns, &name))
    {
        let held: Vec<String> = p
            .spec
            .iter()
            .flat_map(|s| &s.containers)
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|cp| {
                let hp = cp.host_port?;
                let proto = cp.protocol.clone().unwrap_or_else(|| "TCP".into());
                ports
                    .contains(&(hp, proto.clone()))
                    .then(|| format!("{proto}/{hp}"))
            })
            .collect();
        if !held.is_empty() {
            let l = p.metadata.labels.clone().unwrap_or_default();
            reasons.push(format!(
                "hostPort {} taken by Service {}/{}: its svclb pod cannot run here",
                held.join(", "),
                l.get(SVCNAMESPACE).cloned().unwrap_or_default(),
                l.get(SVCNAME).cloned().unwrap_or_default()
            ));
            return;
        }
    }
    reasons.push(if own.is_some() {
        "its svclb pod is not ready yet".to_string()
    } else {
        "no svclb pod of the Service on this node (yet)".to_string()
    });
}

/// The node a pod runs on, or (a DaemonSet pod not scheduled yet) the node its affinity
/// pins it to.
fn pod_node(p: &Pod) -> Option<&str> {
    let spec = p.spec.as_ref()?;
    if let Some(n) = spec.node_name.as_deref() {
        return Some(n);
    }
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|f| f.key == "metadata.name" && f.operator == "In")
        .and_then(|f| f.values.as_ref()?.first())
        .map(String::as_str)
}

/// The report as text.
pub fn render(r: &Report) -> String {
    let mut out = r.summary.join("\n");
    for n in &r.nodes {
        out.push_str(&format!(
            "\n  {} {}: {}",
            if n.serves { "+" } else { "-" },
            n.node,
            n.reasons.join("; ")
        ));
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn from<T: serde::de::DeserializeOwned>(v: Value) -> T {
        serde_json::from_value(v).expect("test object")
    }

    fn node(name: &str, labels: Value, taints: Value) -> Node {
        from(
            json!({ "metadata": { "name": name, "labels": labels }, "spec": { "taints": taints } }),
        )
    }

    fn svc(policy: &str, ingress: &[&str], annotations: Value) -> Service {
        let ingress: Vec<Value> = ingress.iter().map(|ip| json!({ "ip": ip })).collect();
        from(json!({
            "metadata": { "namespace": "ns", "name": "web", "annotations": annotations },
            "spec": { "type": "LoadBalancer", "externalTrafficPolicy": policy,
                      "ports": [{ "port": 80, "protocol": "TCP" }] },
            "status": { "loadBalancer": { "ingress": ingress } }
        }))
    }

    fn slice(ready_on: &[&str]) -> EndpointSlice {
        let eps: Vec<Value> = ready_on
            .iter()
            .map(|n| json!({ "addresses": ["10.0.0.1"], "nodeName": n, "conditions": { "ready": true } }))
            .collect();
        from(json!({ "metadata": { "name": "s" }, "addressType": "IPv4", "endpoints": eps }))
    }

    fn svclb(of: &str, on: &str, host_port: i32, ready: bool) -> Pod {
        from(json!({
            "metadata": { "name": format!("svclb-{of}-{on}"), "labels": {
                SVCNAME: of, SVCNAMESPACE: "ns" } },
            "spec": { "nodeName": on, "containers": [{ "name": "lb-tcp-80",
                "ports": [{ "containerPort": host_port, "hostPort": host_port, "protocol": "TCP" }] }] },
            "status": { "conditions": [{ "type": "Ready", "status": if ready { "True" } else { "False" } }] }
        }))
    }

    fn run(
        service: &Service,
        class: &str,
        nodes: &[Node],
        slices: &[EndpointSlice],
        pods: &[Pod],
        events: &[(&str, &str, &str)],
    ) -> Report {
        let events: Vec<(String, String, String)> = events
            .iter()
            .map(|(h, r, m)| (h.to_string(), r.to_string(), m.to_string()))
            .collect();
        explain(&Input {
            service,
            class: Some(class),
            nodes,
            slices,
            svclb_pods: pods,
            events: &events,
        })
    }

    fn line<'a>(r: &'a Report, n: &str) -> &'a NodeLine {
        r.nodes
            .iter()
            .find(|l| l.node == n)
            .expect("a line per node")
    }

    #[test]
    fn the_kubeadm_control_plane_label_is_named_as_the_trap_it_is() {
        let cp = node(
            "cp",
            json!({ EXCLUDE_LABEL: "", CONTROL_PLANE: "" }),
            json!([]),
        );
        let r = run(
            &svc("Cluster", &[], json!({})),
            crate::names::L2,
            &[cp],
            &[],
            &[],
            &[],
        );
        let l = line(&r, "cp");
        assert!(!l.serves);
        assert!(
            l.reasons[0].contains(EXCLUDE_LABEL) && l.reasons[0].contains("kubeadm"),
            "{l:?}"
        );
    }

    #[test]
    fn an_exclude_label_of_false_does_not_exclude_and_taints_do() {
        let keep = node("keep", json!({ EXCLUDE_LABEL: "false" }), json!([]));
        let new = node(
            "new",
            json!({}),
            json!([{ "key": UNINITIALIZED_TAINT, "effect": "NoSchedule" }]),
        );
        let gone = node(
            "gone",
            json!({}),
            json!([{ "key": AUTOSCALER_TAINT, "effect": "NoSchedule" }]),
        );
        let r = run(
            &svc(
                "Cluster",
                &["192.0.2.1"],
                json!({ crate::names::ANNOUNCED_BY: "keep" }),
            ),
            crate::names::L2,
            &[keep, new, gone],
            &[],
            &[],
            &[],
        );
        assert!(line(&r, "keep").serves);
        assert!(line(&r, "new").reasons[0].contains("not initialized"));
        assert!(line(&r, "gone").reasons[0].contains("autoscaler"));
    }

    #[test]
    fn local_policy_names_the_nodes_without_a_ready_endpoint() {
        let nodes = [
            node("a", json!({}), json!([])),
            node("b", json!({}), json!([])),
        ];
        let r = run(
            &svc("Local", &["192.0.2.1"], json!({})),
            crate::names::BGP,
            &nodes,
            &[slice(&["a"])],
            &[],
            &[],
        );
        assert!(line(&r, "a").serves);
        assert!(!line(&r, "b").serves);
        assert!(
            line(&r, "b").reasons[0].contains("no ready endpoint"),
            "{r:?}"
        );
    }

    #[test]
    fn l2_says_who_announces_and_passes_on_the_speakers_reasons() {
        let nodes = [
            node("a", json!({}), json!([])),
            node("b", json!({}), json!([])),
        ];
        let s = svc(
            "Cluster",
            &["192.0.2.1"],
            json!({ crate::names::ANNOUNCED_BY: "a" }),
        );
        let r = run(
            &s,
            crate::names::L2,
            &nodes,
            &[],
            &[],
            &[
                ("b", "NoInterface", "no interface on 192.0.2.0/24"),
                ("", "EnsuredLoadBalancer", "ok"),
            ],
        );
        assert!(line(&r, "a").serves);
        assert!(line(&r, "a").reasons[0].contains("announces 192.0.2.1"));
        assert!(line(&r, "b").reasons[0].contains("standby: a announces"));
        assert!(line(&r, "b").reasons[1].contains("NoInterface: no interface on 192.0.2.0/24"));
        assert!(
            r.summary
                .iter()
                .any(|l| l.contains("controller's last event EnsuredLoadBalancer"))
        );
        let nobody = run(
            &svc("Cluster", &[], json!({})),
            crate::names::L2,
            &nodes,
            &[],
            &[],
            &[],
        );
        assert!(line(&nobody, "a").reasons[0].contains("no quorum"));
    }

    #[test]
    fn bgp_lines_carry_the_session_state_the_speaker_reported() {
        let nodes = [node("a", json!({}), json!([]))];
        let r = run(
            &svc("Cluster", &["192.0.2.1"], json!({})),
            crate::names::BGP,
            &nodes,
            &[],
            &[],
            &[("a", "BGPSessionDown", "peer 10.0.0.1: hold timer expired")],
        );
        assert!(
            line(&r, "a")
                .reasons
                .iter()
                .any(|x| x.contains("BGPSessionDown"))
        );
    }

    #[test]
    fn a_hostport_taken_by_another_service_is_named() {
        let nodes = [
            node("a", json!({}), json!([])),
            node("b", json!({}), json!([])),
        ];
        // The DaemonSet controller pins its pending pod to b by affinity, not nodeName.
        let mut pending = svclb("web", "b", 80, false);
        let spec = pending.spec.as_mut().expect("built with a spec");
        spec.node_name = None;
        spec.affinity = Some(from(json!({ "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": { "nodeSelectorTerms": [
                { "matchFields": [{ "key": "metadata.name", "operator": "In", "values": ["b"] }] }
            ] } } })));
        let pods = [
            svclb("web", "a", 80, true),
            svclb("other", "b", 80, true),
            pending,
        ];
        let r = run(
            &svc("Cluster", &["10.0.0.1"], json!({})),
            crate::names::HOSTPORT,
            &nodes,
            &[],
            &pods,
            &[],
        );
        assert!(line(&r, "a").serves);
        assert!(!line(&r, "b").serves);
        assert!(
            line(&r, "b").reasons[0].contains("TCP/80 taken by Service ns/other"),
            "{r:?}"
        );
    }

    #[test]
    fn hostport_honours_the_k3s_allow_list() {
        let nodes = [
            node("a", json!({ ENABLELB: "true" }), json!([])),
            node("b", json!({}), json!([])),
        ];
        let pods = [svclb("web", "a", 80, false)];
        let r = run(
            &svc("Cluster", &[], json!({})),
            crate::names::HOSTPORT,
            &nodes,
            &[],
            &pods,
            &[],
        );
        assert_eq!(line(&r, "a").reasons[0], "its svclb pod is not ready yet");
        assert!(line(&r, "b").reasons[0].contains(ENABLELB));
    }

    #[test]
    fn a_changed_class_and_the_condition_are_summarised() {
        let mut s = svc(
            "Cluster",
            &[],
            json!({ crate::names::SERVED_CLASS: crate::names::L2 }),
        );
        s.status.as_mut().expect("built with a status").conditions = Some(vec![from(json!({
            "type": crate::service::condition::SERVING, "status": "False", "reason": "PoolExhausted",
            "message": "pool default is full", "lastTransitionTime": "2026-01-01T00:00:00Z" }))]);
        let r = run(&s, crate::names::BGP, &[], &[], &[], &[]);
        assert!(
            r.summary
                .iter()
                .any(|l| l.contains("l2 still holds") || l.contains("portway.dev/l2 still holds")),
            "{r:?}"
        );
        assert!(r.summary.iter().any(|l| l.contains("PoolExhausted")));
        let text = render(&r);
        assert!(text.starts_with("ns/web: class portway.dev/bgp, address <pending>"));
    }
}
