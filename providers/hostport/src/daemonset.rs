//! The svclb DaemonSet of a Service, exactly as k3s ServiceLB builds it (pure, no IO).

use crate::config::HostportConfig;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Toleration;
use portway_provider::{IpFamily, LbService, ProviderError, TrafficPolicy};
use serde_json::json;
use sha2::{Digest, Sha256};

/// Label: the Service's name.
pub const SVCNAME: &str = "svccontroller.k3s.cattle.io/svcname";
/// Label: the Service's namespace.
pub const SVCNAMESPACE: &str = "svccontroller.k3s.cattle.io/svcnamespace";
/// Label: whether the DaemonSet has a node selector (`"true"`/`"false"`).
pub const NODESELECTOR: &str = "svccontroller.k3s.cattle.io/nodeselector";
/// Node label: once any node has it, only `true` nodes carry svclb pods.
pub const ENABLELB: &str = "svccontroller.k3s.cattle.io/enablelb";
/// Node and Service label: svclb pods go only to nodes of the Service's pool.
pub const LBPOOL: &str = "svccontroller.k3s.cattle.io/lbpool";
/// Service annotation: the svclb pods' priority class.
pub const PRIORITY_ANNOTATION: &str = "svccontroller.k3s.cattle.io/priorityclassname";
/// Service annotation: extra tolerations (JSON or YAML list).
pub const TOLERATIONS_ANNOTATION: &str = "svccontroller.k3s.cattle.io/tolerations";
/// Annotation on the DaemonSet: hash of what we wrote, so a re-sync compares what we own
/// and not the fields the API server defaults.
pub(crate) const SPEC_HASH: &str = "portway.dev/spec-hash";
const EXCLUDE: &str = "node.kubernetes.io/exclude-from-external-load-balancers";

/// `svclb-<name cut to 48, trailing '-' trimmed>-<first 8 chars of the uid>` (k3s).
pub fn daemonset_name(name: &str, uid: &str) -> String {
    let cut: String = name.chars().take(48).collect();
    let uid8: String = uid.chars().take(8).collect();
    format!("svclb-{}-{uid8}", cut.trim_end_matches('-'))
}

fn tolerations(svc: &LbService) -> Result<Vec<Toleration>, ProviderError> {
    let mut out = vec![
        Toleration {
            key: Some("node-role.kubernetes.io/master".into()),
            operator: Some("Exists".into()),
            effect: Some("NoSchedule".into()),
            ..Default::default()
        },
        Toleration {
            key: Some("node-role.kubernetes.io/control-plane".into()),
            operator: Some("Exists".into()),
            effect: Some("NoSchedule".into()),
            ..Default::default()
        },
        Toleration {
            key: Some("CriticalAddonsOnly".into()),
            operator: Some("Exists".into()),
            ..Default::default()
        },
    ];
    let Some(raw) = svc.annotations.get(TOLERATIONS_ANNOTATION) else {
        return Ok(out);
    };
    let field = format!("metadata.annotations[{TOLERATIONS_ANNOTATION}]");
    let extra: Vec<Toleration> = serde_json::from_str(raw)
        .or_else(|_| serde_yaml::from_str(raw))
        .map_err(|e| {
            ProviderError::invalid(
                &field,
                format!("not a JSON or YAML list of tolerations ({e}); e.g. [{{\"key\":\"k\",\"operator\":\"Exists\"}}]"),
            )
        })?;
    for (i, mut t) in extra.into_iter().enumerate() {
        let op = t.operator.clone().unwrap_or_else(|| "Equal".into());
        if op != "Equal" && op != "Exists" {
            return Err(ProviderError::invalid(
                &field,
                format!("toleration {i}: operator {op:?} must be Equal or Exists"),
            ));
        }
        if t.key.as_deref().unwrap_or("").is_empty() && op != "Exists" {
            return Err(ProviderError::invalid(
                &field,
                format!("toleration {i}: an empty key requires operator Exists"),
            ));
        }
        if op == "Exists" && !t.value.as_deref().unwrap_or("").is_empty() {
            return Err(ProviderError::invalid(
                &field,
                format!("toleration {i}: operator Exists takes no value"),
            ));
        }
        t.operator = Some(op);
        out.push(t);
    }
    Ok(out)
}

/// `SRC_RANGES`: the ranges the controller's view resolved (spec.loadBalancerSourceRanges,
/// else the legacy annotation, parsed and checked), in spec order, else everything. The
/// annotation is not read again here: its raw text may hold empty items (`","`) that
/// klipper-lb rejects. As k3s: ranges that are exactly `0.0.0.0/0` on a Service with IPv6
/// get `::/0` too, or its IPv6 traffic would be dropped.
fn source_ranges(svc: &LbService) -> String {
    let v6 = svc.ip_families.contains(&IpFamily::V6);
    let everything_v4 =
        svc.source_ranges.len() == 1 && svc.source_ranges[0].to_string() == "0.0.0.0/0";
    let widened = everything_v4 && v6;
    if !svc.source_ranges.is_empty() && !widened {
        return svc
            .source_ranges
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
    }
    if v6 {
        "0.0.0.0/0,::/0".into()
    } else {
        "0.0.0.0/0".into()
    }
}

/// The DaemonSet for `svc`. `allow_list`: some node carries the `enablelb` label.
pub fn build_daemonset(
    svc: &LbService,
    cfg: &HostportConfig,
    allow_list: bool,
) -> Result<DaemonSet, ProviderError> {
    let name = daemonset_name(&svc.key.name, &svc.uid);
    let local = svc.external_traffic_policy == TrafficPolicy::Local;
    let ranges = source_ranges(svc);
    let cluster_ips = svc
        .cluster_ips
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let mut containers = Vec::new();
    for p in &svc.ports {
        let proto = p.protocol.as_str();
        let mut env = vec![
            json!({"name": "SRC_PORT", "value": p.port.to_string()}),
            json!({"name": "SRC_RANGES", "value": ranges}),
            json!({"name": "DEST_PROTO", "value": proto}),
        ];
        if local {
            let Some(np) = p.node_port else {
                return Err(ProviderError::invalid(
                    "spec.allocateLoadBalancerNodePorts",
                    "externalTrafficPolicy Local forwards to the nodePort; allocate nodePorts (remove allocateLoadBalancerNodePorts: false)",
                ));
            };
            env.push(json!({"name": "DEST_PORT", "value": np.to_string()}));
            env.push(json!({"name": "DEST_IPS", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIPs"}}}));
        } else {
            env.push(json!({"name": "DEST_PORT", "value": p.port.to_string()}));
            env.push(json!({"name": "DEST_IPS", "value": cluster_ips}));
        }
        let cname = format!("lb-{}-{}", proto.to_lowercase(), p.port);
        containers.push(json!({
            "name": cname,
            "image": cfg.image,
            "imagePullPolicy": "IfNotPresent",
            "ports": [{"name": cname, "containerPort": p.port, "hostPort": p.port, "protocol": proto}],
            "env": env,
            "securityContext": {"capabilities": {"add": ["NET_ADMIN"]}},
        }));
    }
    let mut sysctls = Vec::new();
    for f in &svc.ip_families {
        match f {
            IpFamily::V4 => sysctls.push(json!({"name": "net.ipv4.ip_forward", "value": "1"})),
            IpFamily::V6 => {
                sysctls.push(json!({"name": "net.ipv6.conf.all.forwarding", "value": "1"}))
            }
        }
    }
    let mut node_selector = serde_json::Map::new();
    if allow_list {
        node_selector.insert(ENABLELB.into(), json!("true"));
        // k3s ignores an empty value; a selector `lbpool: ""` would match no node.
        if let Some(pool) = svc.labels.get(LBPOOL).filter(|p| !p.is_empty()) {
            node_selector.insert(LBPOOL.into(), json!(pool));
        }
    }
    let priority = svc
        .annotations
        .get(PRIORITY_ANNOTATION)
        .cloned()
        .unwrap_or_else(|| cfg.priority_class_name.clone());
    let labels = json!({
        SVCNAME: svc.key.name, SVCNAMESPACE: svc.key.namespace,
        NODESELECTOR: if allow_list { "true" } else { "false" },
    });
    let pod_labels = json!({"app": name, SVCNAME: svc.key.name, SVCNAMESPACE: svc.key.namespace});
    let mut pod_spec = json!({
        "serviceAccountName": "svclb",
        "automountServiceAccountToken": false,
        "priorityClassName": priority,
        "containers": containers,
        "tolerations": tolerations(svc)?,
        // Upstream CCM rule (not k3s): nodes excluded from load balancers carry no svclb
        // pod. A value Go's strconv.ParseBool reads as false includes the node (terms are
        // ORed), as the controller's node set does; anything else excludes it.
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {"matchExpressions": [{"key": EXCLUDE, "operator": "DoesNotExist"}]},
                {"matchExpressions": [{"key": EXCLUDE, "operator": "In", "values": portway_provider::GO_BOOL_FALSE}]},
            ]}}},
    });
    if !sysctls.is_empty() {
        pod_spec["securityContext"] = json!({"sysctls": sysctls});
    }
    if !node_selector.is_empty() {
        pod_spec["nodeSelector"] = serde_json::Value::Object(node_selector);
    }
    let spec = json!({
        "selector": {"matchLabels": {"app": name}},
        "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
        "template": {"metadata": {"labels": pod_labels}, "spec": pod_spec},
    });
    let hash = hex::encode(
        &Sha256::digest(serde_json::to_vec(&(&labels, &spec)).unwrap_or_default())[..8],
    );
    let ds = json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": name, "namespace": cfg.namespace, "labels": labels,
            "annotations": {SPEC_HASH: hash}},
        "spec": spec,
    });
    serde_json::from_value(ds)
        .map_err(|e| ProviderError::transient(format!("building the DaemonSet: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use portway_provider::Protocol;
    use portway_provider::testkit::SvcExt as _;

    fn svc(name: &str) -> LbService {
        portway_provider::testkit::svc("default", name)
            .uid("0507a580-1111-2222-3333-444455556666")
            .named_ports(&[
                ("http", Protocol::Tcp, 80, 30080),
                ("dns", Protocol::Udp, 53, 30053),
            ])
            .cluster_ips(&["10.43.0.10"])
    }

    fn env(ds: &DaemonSet, container: usize, name: &str) -> serde_json::Value {
        let v = serde_json::to_value(ds).expect("json");
        v["spec"]["template"]["spec"]["containers"][container]["env"]
            .as_array()
            .and_then(|e| e.iter().find(|x| x["name"] == name).cloned())
            .unwrap_or(serde_json::Value::Null)
    }

    #[test]
    fn cluster_policy_matches_k3s() {
        let ds = build_daemonset(&svc("traefik"), &HostportConfig::default(), false).expect("ds");
        let v = serde_json::to_value(&ds).expect("json");
        assert_eq!(v["metadata"]["name"], "svclb-traefik-0507a580");
        assert_eq!(v["metadata"]["namespace"], "kube-system");
        assert_eq!(v["metadata"]["labels"][NODESELECTOR], "false");
        assert!(v["metadata"].get("ownerReferences").is_none());
        let c = &v["spec"]["template"]["spec"]["containers"];
        assert_eq!(c[0]["name"], "lb-tcp-80");
        assert_eq!(c[1]["name"], "lb-udp-53");
        assert_eq!(c[0]["ports"][0]["hostPort"], 80);
        assert_eq!(c[0]["image"], "rancher/klipper-lb:v0.4.17");
        assert_eq!(
            c[0]["securityContext"]["capabilities"]["add"][0],
            "NET_ADMIN"
        );
        assert_eq!(env(&ds, 0, "DEST_IPS")["value"], "10.43.0.10");
        assert_eq!(env(&ds, 0, "DEST_PORT")["value"], "80");
        assert_eq!(env(&ds, 0, "SRC_RANGES")["value"], "0.0.0.0/0");
        let spec = &v["spec"]["template"]["spec"];
        assert_eq!(spec["automountServiceAccountToken"], false);
        assert_eq!(spec["priorityClassName"], "system-node-critical");
        assert_eq!(
            spec["securityContext"]["sysctls"][0]["name"],
            "net.ipv4.ip_forward"
        );
        assert_eq!(
            v["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"],
            1
        );
        assert_eq!(spec["tolerations"].as_array().map(Vec::len), Some(3));
    }

    /// Found reviewing issue 16 #7: a node labelled `0`, `f` or `F` counted as eligible
    /// in the controller's node set but could never run the svclb pod.
    #[test]
    fn excluded_nodes_follow_parse_bool_like_the_node_set() {
        let ds = build_daemonset(&svc("web"), &HostportConfig::default(), false).expect("ds");
        let v = serde_json::to_value(&ds).expect("json");
        let terms = &v["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            ["nodeSelectorTerms"];
        let included: Vec<&str> = terms[1]["matchExpressions"][0]["values"]
            .as_array()
            .expect("values")
            .iter()
            .filter_map(|x| x.as_str())
            .collect();
        for value in ["0", "f", "F", "false", "FALSE", "False"] {
            assert!(included.contains(&value), "{value} must include the node");
        }
        assert!(!included.contains(&"true") && !included.contains(&"no"));
        assert_eq!(terms[0]["matchExpressions"][0]["operator"], "DoesNotExist");
    }

    #[test]
    fn local_policy_uses_node_port_and_host_ips() {
        let mut s = svc("web");
        s.external_traffic_policy = TrafficPolicy::Local;
        let ds = build_daemonset(&s, &HostportConfig::default(), false).expect("ds");
        assert_eq!(env(&ds, 0, "DEST_PORT")["value"], "30080");
        assert_eq!(
            env(&ds, 0, "DEST_IPS")["valueFrom"]["fieldRef"]["fieldPath"],
            "status.hostIPs"
        );
        s.ports[0].node_port = None;
        assert!(build_daemonset(&s, &HostportConfig::default(), false).is_err());
    }

    #[test]
    fn dual_stack_and_source_ranges() {
        let mut s = svc("web");
        s.ip_families = vec![IpFamily::V4, IpFamily::V6];
        s.cluster_ips.push("fd00:43::a".parse().expect("ip"));
        let ds = build_daemonset(&s, &HostportConfig::default(), false).expect("ds");
        assert_eq!(env(&ds, 0, "SRC_RANGES")["value"], "0.0.0.0/0,::/0");
        assert_eq!(env(&ds, 0, "DEST_IPS")["value"], "10.43.0.10,fd00:43::a");
        let v = serde_json::to_value(&ds).expect("json");
        assert_eq!(
            v["spec"]["template"]["spec"]["securityContext"]["sysctls"][1]["name"],
            "net.ipv6.conf.all.forwarding"
        );
        s.source_ranges = vec!["192.168.0.0/16".parse().expect("net")];
        let ds = build_daemonset(&s, &HostportConfig::default(), false).expect("ds");
        assert_eq!(env(&ds, 0, "SRC_RANGES")["value"], "192.168.0.0/16");
        // An annotation of only separators resolves to no ranges in the view; its raw text
        // must not reach klipper-lb.
        s.source_ranges.clear();
        s.annotations.insert(
            "service.beta.kubernetes.io/load-balancer-source-ranges".into(),
            ",".into(),
        );
        let ds = build_daemonset(&s, &HostportConfig::default(), false).expect("ds");
        assert_eq!(env(&ds, 0, "SRC_RANGES")["value"], "0.0.0.0/0,::/0");
    }

    #[test]
    fn tolerations_annotation_json_yaml_and_invalid() {
        let mut s = svc("web");
        s.annotations.insert(
            TOLERATIONS_ANNOTATION.into(),
            r#"[{"key":"dedicated","value":"lb","effect":"NoSchedule"}]"#.into(),
        );
        let ds = build_daemonset(&s, &HostportConfig::default(), false).expect("json");
        let v = serde_json::to_value(&ds).expect("json");
        assert_eq!(
            v["spec"]["template"]["spec"]["tolerations"][3]["operator"],
            "Equal"
        );
        s.annotations.insert(
            TOLERATIONS_ANNOTATION.into(),
            "- key: a\n  operator: Exists\n".into(),
        );
        assert!(build_daemonset(&s, &HostportConfig::default(), false).is_ok());
        s.annotations
            .insert(TOLERATIONS_ANNOTATION.into(), "{not a list".into());
        let err = build_daemonset(&s, &HostportConfig::default(), false).expect_err("invalid");
        assert!(err.to_string().contains(TOLERATIONS_ANNOTATION), "{err}");
        s.annotations.insert(
            TOLERATIONS_ANNOTATION.into(),
            r#"[{"operator":"Equal","value":"x"}]"#.into(),
        );
        assert!(build_daemonset(&s, &HostportConfig::default(), false).is_err());
    }

    #[test]
    fn long_names_fit_63_and_lbpool_needs_allow_list() {
        let long = "a".repeat(47) + "-bcdefghijklmnop";
        let n = daemonset_name(&long, "12345678-abcd");
        assert!(n.len() <= 63, "{n}");
        assert_eq!(n, format!("svclb-{}-12345678", "a".repeat(47)));
        let mut s = svc("web");
        s.labels.insert(LBPOOL.into(), "edge".into());
        let v = serde_json::to_value(
            build_daemonset(&s, &HostportConfig::default(), false).expect("ds"),
        )
        .expect("json");
        assert!(v["spec"]["template"]["spec"].get("nodeSelector").is_none());
        let v = serde_json::to_value(
            build_daemonset(&s, &HostportConfig::default(), true).expect("ds"),
        )
        .expect("json");
        assert_eq!(
            v["spec"]["template"]["spec"]["nodeSelector"][ENABLELB],
            "true"
        );
        assert_eq!(
            v["spec"]["template"]["spec"]["nodeSelector"][LBPOOL],
            "edge"
        );
        assert_eq!(v["metadata"]["labels"][NODESELECTOR], "true");
    }

    /// k3s ignores `lbpool: ""` (issue 16 #11): a selector on an empty value would leave
    /// the Service without a pod anywhere.
    #[test]
    fn an_empty_lbpool_is_ignored() {
        let mut s = svc("web");
        s.labels.insert(LBPOOL.into(), String::new());
        let v = serde_json::to_value(
            build_daemonset(&s, &HostportConfig::default(), true).expect("ds"),
        )
        .expect("json");
        let selector = &v["spec"]["template"]["spec"]["nodeSelector"];
        assert_eq!(selector[ENABLELB], "true");
        assert!(selector.get(LBPOOL).is_none(), "{selector}");
    }

    /// k3s appends `::/0` when the ranges are exactly `0.0.0.0/0` on a dual-stack Service
    /// (issue 16 #14); other explicit ranges are kept as written, in spec order.
    #[test]
    fn an_explicit_ipv4_everything_on_dual_stack_lets_ipv6_in() {
        let mut s = svc("web");
        s.ip_families = vec![IpFamily::V4, IpFamily::V6];
        s.source_ranges = vec!["0.0.0.0/0".parse().expect("net")];
        let ds = build_daemonset(&s, &HostportConfig::default(), false).expect("ds");
        assert_eq!(env(&ds, 0, "SRC_RANGES")["value"], "0.0.0.0/0,::/0");
        s.source_ranges = vec![
            "10.0.0.0/8".parse().expect("net"),
            "0.0.0.0/0".parse().expect("net"),
        ];
        let ds = build_daemonset(&s, &HostportConfig::default(), false).expect("ds");
        assert_eq!(env(&ds, 0, "SRC_RANGES")["value"], "10.0.0.0/8,0.0.0.0/0");
        s.ip_families = vec![IpFamily::V4];
        s.source_ranges = vec!["0.0.0.0/0".parse().expect("net")];
        let ds = build_daemonset(&s, &HostportConfig::default(), false).expect("ds");
        assert_eq!(env(&ds, 0, "SRC_RANGES")["value"], "0.0.0.0/0");
    }
}
