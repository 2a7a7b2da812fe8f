//! Service defaulting, validation and the cluster-IP / nodePort allocators, as the real API
//! server applies them on create and update.
//!
//! Controllers compare what they wrote with what they read back; a sim that did not default
//! `ipMode`, `clusterIPs` or nodePorts would hide churn bugs that show up on a real cluster.

use crate::error::{ApiError, Cause};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// First and last nodePort of the default range.
const NODE_PORT_MIN: u16 = 30000;
const NODE_PORT_MAX: u16 = 32767;

/// Allocations shared by all Services.
#[derive(Debug, Default, Clone)]
pub(crate) struct ServiceAlloc {
    node_ports: HashMap<u16, String>,
    cluster_ips: HashSet<IpAddr>,
    next_v4: u32,
    next_v6: u32,
    next_port: u16,
}

fn cause(reason: &'static str, field: impl Into<String>, message: impl Into<String>) -> Cause {
    Cause {
        reason,
        field: field.into(),
        message: message.into(),
    }
}

fn owner(obj: &Value) -> String {
    format!(
        "{}/{}",
        obj.pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or(""),
        obj.pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
    )
}

fn str_at<'a>(v: &'a Value, ptr: &str) -> Option<&'a str> {
    v.pointer(ptr).and_then(Value::as_str)
}

/// `SetDefaults_Service` (pkg/apis/core/v1/defaults.go): what decoding a Service fills in,
/// owned by the writer in `managedFields`.
pub(crate) fn scheme_defaults(obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec").filter(|s| s.is_object()) else {
        return;
    };
    if spec.get("sessionAffinity").is_none_or(Value::is_null) {
        spec["sessionAffinity"] = json!("None");
    }
    if spec["sessionAffinity"] == "None"
        && let Some(m) = spec.as_object_mut()
    {
        m.remove("sessionAffinityConfig");
    }
    if spec["sessionAffinity"] == "ClientIP"
        && spec
            .pointer("/sessionAffinityConfig/clientIP/timeoutSeconds")
            .is_none()
    {
        spec["sessionAffinityConfig"] = json!({"clientIP": {"timeoutSeconds": 10800}});
    }
    if spec.get("type").is_none_or(Value::is_null) {
        spec["type"] = json!("ClusterIP");
    }
    let ty = spec["type"].as_str().unwrap_or("").to_string();
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports {
            if p.get("protocol").is_none_or(Value::is_null) {
                p["protocol"] = json!("TCP");
            }
            let target = p.get("targetPort");
            if target.is_none_or(|t| t.is_null() || *t == json!(0) || *t == json!("")) {
                p["targetPort"] = p.get("port").cloned().unwrap_or(json!(0));
            }
        }
    }
    let external_ips = spec
        .get("externalIPs")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    let externally = ty == "LoadBalancer" || ty == "NodePort" || (ty == "ClusterIP" && external_ips);
    if externally && spec.get("externalTrafficPolicy").is_none_or(|v| v.is_null() || *v == json!("")) {
        spec["externalTrafficPolicy"] = json!("Cluster");
    }
    if matches!(ty.as_str(), "NodePort" | "LoadBalancer" | "ClusterIP")
        && spec.get("internalTrafficPolicy").is_none_or(Value::is_null)
    {
        spec["internalTrafficPolicy"] = json!("Cluster");
    }
    if ty == "LoadBalancer" && spec.get("allocateLoadBalancerNodePorts").is_none_or(Value::is_null) {
        spec["allocateLoadBalancerNodePorts"] = json!(true);
    }
    if ty == "LoadBalancer" {
        default_ip_mode(obj);
    }
}

fn default_ip_mode(obj: &mut Value) {
    if let Some(ing) = obj
        .pointer_mut("/status/loadBalancer/ingress")
        .and_then(Value::as_array_mut)
    {
        for i in ing {
            if i.get("ip").is_some_and(|ip| ip != "") && i.get("ipMode").is_none() {
                i["ipMode"] = json!("VIP");
            }
        }
    }
}

impl ServiceAlloc {
    /// A copy to allocate from in a dry run (whose allocations are thrown away).
    pub(crate) fn clone_if(&self, dry_run: bool) -> Option<ServiceAlloc> {
        dry_run.then(|| self.clone())
    }

    fn alloc_ip(&mut self, v6: bool) -> Option<IpAddr> {
        for _ in 0..70000 {
            let ip = if v6 {
                self.next_v6 = self.next_v6 % 65534 + 1;
                IpAddr::V6(Ipv6Addr::new(
                    0xfd00,
                    0x43,
                    0,
                    0,
                    0,
                    0,
                    0,
                    self.next_v6 as u16,
                ))
            } else {
                self.next_v4 = (self.next_v4 % 65500) + 1;
                let n = 10 + self.next_v4;
                IpAddr::V4(Ipv4Addr::new(10, 43, (n >> 8) as u8, (n & 0xff) as u8))
            };
            if self.cluster_ips.insert(ip) {
                return Some(ip);
            }
        }
        None
    }

    fn alloc_port(&mut self, who: &str) -> Option<u16> {
        let span = NODE_PORT_MAX - NODE_PORT_MIN + 1;
        if self.next_port == 0 {
            self.next_port = (rand::random::<u16>() % span) + NODE_PORT_MIN;
        }
        for _ in 0..span {
            let p = self.next_port;
            self.next_port = if p >= NODE_PORT_MAX {
                NODE_PORT_MIN
            } else {
                p + 1
            };
            if let std::collections::hash_map::Entry::Vacant(e) = self.node_ports.entry(p) {
                e.insert(who.to_string());
                return Some(p);
            }
        }
        None
    }

    /// Releases everything a Service held (on delete).
    pub(crate) fn release(&mut self, obj: &Value) {
        let who = owner(obj);
        self.node_ports.retain(|_, o| *o != who);
        if let Some(ips) = obj.pointer("/spec/clusterIPs").and_then(Value::as_array) {
            for ip in ips.iter().filter_map(Value::as_str) {
                if let Ok(ip) = ip.parse::<IpAddr>() {
                    self.cluster_ips.remove(&ip);
                }
            }
        }
    }

    /// Defaults and validates a Service on create (`old` = None) or update, allocating what
    /// it needs. Nothing is allocated when validation fails.
    pub(crate) fn admit(&mut self, new: &mut Value, old: Option<&Value>) -> Result<(), ApiError> {
        let name = str_at(new, "/metadata/name").unwrap_or("").to_string();
        let who = owner(new);
        let mut causes = Vec::new();
        if !new.get("spec").is_some_and(Value::is_object) {
            new["spec"] = json!({});
        }
        let spec = &mut new["spec"];
        let ty = spec
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP")
            .to_string();
        spec["type"] = json!(ty);
        let is_lb = ty == "LoadBalancer";
        let has_node_ports = is_lb || ty == "NodePort";
        if !matches!(
            ty.as_str(),
            "ClusterIP" | "NodePort" | "LoadBalancer" | "ExternalName"
        ) {
            causes.push(cause(
                "FieldValueNotSupported",
                "spec.type",
                format!("Unsupported value: {ty:?}: supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""),
            ));
        }
        // Fields that only make sense for some types are dropped when the type changes, as
        // the real server's dropTypeDependentFields does.
        if let Some(old) = old {
            let old_ty = str_at(old, "/spec/type").unwrap_or("ClusterIP");
            if old_ty == "LoadBalancer"
                && !is_lb
                && let Some(m) = spec.as_object_mut()
            {
                m.remove("loadBalancerClass");
                m.remove("allocateLoadBalancerNodePorts");
                m.remove("healthCheckNodePort");
            }
            if !has_node_ports
                && let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut)
            {
                for p in ports {
                    if let Some(m) = p.as_object_mut() {
                        m.remove("nodePort");
                    }
                }
            }
        }
        let class = spec
            .get("loadBalancerClass")
            .and_then(Value::as_str)
            .map(String::from);
        if class.is_some() && !is_lb {
            causes.push(cause(
                "FieldValueForbidden",
                "spec.loadBalancerClass",
                "Forbidden: may only be used when `type` is 'LoadBalancer'",
            ));
        }
        if let Some(old) = old
            && str_at(old, "/spec/type") == Some("LoadBalancer")
            && is_lb
            && str_at(old, "/spec/loadBalancerClass") != class.as_deref()
        {
            causes.push(cause(
                "FieldValueInvalid",
                "spec.loadBalancerClass",
                format!("Invalid value: {class:?}: may not change once set"),
            ));
        }
        if spec.get("sessionAffinity").is_none() {
            spec["sessionAffinity"] = json!("None");
        }
        if ty != "ExternalName" && spec.get("internalTrafficPolicy").is_none() {
            spec["internalTrafficPolicy"] = json!("Cluster");
        }
        if has_node_ports && spec.get("externalTrafficPolicy").is_none() {
            spec["externalTrafficPolicy"] = json!("Cluster");
        }
        if is_lb && spec.get("allocateLoadBalancerNodePorts").is_none() {
            spec["allocateLoadBalancerNodePorts"] = json!(true);
        }
        let etp = spec
            .get("externalTrafficPolicy")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if etp == "Local" && !has_node_ports {
            causes.push(cause(
                "FieldValueInvalid",
                "spec.externalTrafficPolicy",
                "may only be set when `type` is 'NodePort' or 'LoadBalancer'",
            ));
        }

        // Ports: protocol defaults, targetPort, duplicates.
        let mut seen = HashSet::new();
        let mut wanted_node_ports: Vec<(usize, Option<u16>)> = Vec::new();
        let old_ports: Vec<Value> = old
            .and_then(|o| o.pointer("/spec/ports"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let alloc_node_ports = has_node_ports
            && !(is_lb && spec.get("allocateLoadBalancerNodePorts") == Some(&json!(false)));
        if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
            let many = ports.len() > 1;
            for (i, p) in ports.iter_mut().enumerate() {
                let proto = p
                    .get("protocol")
                    .and_then(Value::as_str)
                    .unwrap_or("TCP")
                    .to_string();
                p["protocol"] = json!(proto);
                let port = p.get("port").and_then(Value::as_u64).unwrap_or(0);
                if !(1..=65535).contains(&port) {
                    causes.push(cause(
                        "FieldValueInvalid",
                        format!("spec.ports[{i}].port"),
                        format!("Invalid value: {port}: must be between 1 and 65535, inclusive"),
                    ));
                }
                if many
                    && p.get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .is_empty()
                {
                    causes.push(cause(
                        "FieldValueRequired",
                        format!("spec.ports[{i}].name"),
                        "Required value",
                    ));
                }
                if !seen.insert((port, proto.clone())) {
                    causes.push(cause(
                        "FieldValueDuplicate",
                        format!("spec.ports[{i}]"),
                        format!(
                            "Duplicate value: {{\"Name\":\"\",\"Protocol\":\"{proto}\",\"AppProtocol\":null,\"Port\":{port},\"TargetPort\":0,\"NodePort\":0}}"
                        ),
                    ));
                }
                if p.get("targetPort").is_none() {
                    p["targetPort"] = json!(port);
                }
                if alloc_node_ports {
                    let given = p.get("nodePort").and_then(Value::as_u64).map(|n| n as u16);
                    let kept = given.or_else(|| {
                        old_ports
                            .iter()
                            .find(|o| {
                                o.get("port").and_then(Value::as_u64) == Some(port)
                                    && o.get("protocol").and_then(Value::as_str)
                                        == Some(proto.as_str())
                            })
                            .and_then(|o| o.get("nodePort"))
                            .and_then(Value::as_u64)
                            .map(|n| n as u16)
                    });
                    wanted_node_ports.push((i, kept));
                }
            }
        } else if ty != "ExternalName" {
            causes.push(cause("FieldValueRequired", "spec.ports", "Required value"));
        }
        for (i, np) in &wanted_node_ports {
            if let Some(np) = np {
                if !(NODE_PORT_MIN..=NODE_PORT_MAX).contains(np) {
                    causes.push(cause(
                        "FieldValueInvalid",
                        format!("spec.ports[{i}].nodePort"),
                        format!("Invalid value: {np}: provided port is not in the valid range. The range of valid ports is 30000-32767"),
                    ));
                } else if self.node_ports.get(np).is_some_and(|o| *o != who) {
                    causes.push(cause(
                        "FieldValueInvalid",
                        format!("spec.ports[{i}].nodePort"),
                        format!("Invalid value: {np}: provided port is already allocated"),
                    ));
                }
            }
        }

        // Families and cluster IPs.
        let policy = spec
            .get("ipFamilyPolicy")
            .and_then(Value::as_str)
            .unwrap_or("SingleStack")
            .to_string();
        let headless = spec.get("clusterIP").and_then(Value::as_str) == Some("None");
        let mut families: Vec<String> = spec
            .get("ipFamilies")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        let old_ips: Vec<String> = match old {
            Some(o) => o
                .pointer("/spec/clusterIPs")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default(),
            None => {
                let given: Vec<String> = spec
                    .get("clusterIPs")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(String::from)
                            .collect()
                    })
                    .or_else(|| {
                        spec.get("clusterIP")
                            .and_then(Value::as_str)
                            .map(|s| vec![s.to_string()])
                    })
                    .unwrap_or_default();
                let given: Vec<String> = given
                    .into_iter()
                    .filter(|s| !s.is_empty() && s != "None")
                    .collect();
                for (i, ip) in given.iter().enumerate() {
                    match ip.parse::<IpAddr>() {
                        Ok(addr) if self.cluster_ips.contains(&addr) => causes.push(cause(
                            "FieldValueInvalid",
                            format!("spec.clusterIPs[{i}]"),
                            format!("Invalid value: {ip:?}: failed to allocate IP {ip}: provided IP is already allocated"),
                        )),
                        Ok(_) => {}
                        Err(_) => causes.push(cause(
                            "FieldValueInvalid",
                            format!("spec.clusterIPs[{i}]"),
                            format!("Invalid value: {ip:?}: must be a valid IP address"),
                        )),
                    }
                }
                given
            }
        };
        if families.is_empty() {
            families = if old_ips.is_empty() {
                vec!["IPv4".to_string()]
            } else {
                old_ips
                    .iter()
                    .map(|ip| if ip.contains(':') { "IPv6" } else { "IPv4" }.to_string())
                    .collect()
            };
        }
        if policy != "SingleStack" && families.len() == 1 {
            let other = if families[0] == "IPv4" {
                "IPv6"
            } else {
                "IPv4"
            };
            families.push(other.to_string());
        }
        if policy == "SingleStack" && families.len() > 1 {
            causes.push(cause(
                "FieldValueInvalid",
                "spec.ipFamilies",
                "Invalid value: when spec.ipFamilyPolicy is SingleStack only one family may be given",
            ));
        }
        if !matches!(
            policy.as_str(),
            "SingleStack" | "PreferDualStack" | "RequireDualStack"
        ) {
            causes.push(cause(
                "FieldValueNotSupported",
                "spec.ipFamilyPolicy",
                format!("Unsupported value: {policy:?}"),
            ));
        }
        if let Some(old) = old
            && ty != "ExternalName"
            && let (Some(a), Some(b)) = (
                str_at(old, "/spec/clusterIP"),
                spec.get("clusterIP").and_then(Value::as_str),
            )
            && a != b
            && !b.is_empty()
        {
            causes.push(cause(
                "FieldValueInvalid",
                "spec.clusterIPs[0]",
                "Invalid value: field is immutable",
            ));
        }
        if !causes.is_empty() {
            return Err(ApiError::invalid("Service", &name, causes));
        }

        // All checks passed: allocate.
        if ty != "ExternalName" && !headless {
            let mut ips = Vec::new();
            for (i, fam) in families.iter().enumerate() {
                let ip = match old_ips.get(i) {
                    Some(ip) => {
                        if let Ok(addr) = ip.parse::<IpAddr>() {
                            self.cluster_ips.insert(addr);
                        }
                        ip.clone()
                    }
                    None => match self.alloc_ip(fam == "IPv6") {
                        Some(ip) => ip.to_string(),
                        None => return Err(ApiError::internal("cluster IP range is full")),
                    },
                };
                ips.push(ip);
            }
            spec["clusterIP"] = json!(ips[0]);
            spec["clusterIPs"] = json!(ips);
        } else if headless {
            spec["clusterIPs"] = json!(["None"]);
        }
        if ty != "ExternalName" {
            spec["ipFamilies"] = json!(families);
            spec["ipFamilyPolicy"] = json!(policy);
        }
        // nodePorts: release the ones this Service no longer uses, then allocate.
        self.node_ports
            .retain(|p, o| *o != who || wanted_node_ports.iter().any(|(_, w)| *w == Some(*p)));
        let mut assigned = Vec::new();
        for (i, np) in wanted_node_ports {
            let np = match np {
                Some(np) => {
                    self.node_ports.insert(np, who.clone());
                    np
                }
                None => self
                    .alloc_port(&who)
                    .ok_or_else(|| ApiError::internal("nodePort range is full"))?,
            };
            assigned.push((i, np));
        }
        if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
            for (i, np) in assigned {
                ports[i]["nodePort"] = json!(np);
            }
        }
        if is_lb && etp == "Local" {
            let hc = spec
                .get("healthCheckNodePort")
                .and_then(Value::as_u64)
                .map(|n| n as u16)
                .or_else(|| {
                    old.and_then(|o| o.pointer("/spec/healthCheckNodePort"))
                        .and_then(Value::as_u64)
                        .map(|n| n as u16)
                });
            let hc = match hc {
                Some(p) => {
                    self.node_ports.insert(p, who.clone());
                    p
                }
                None => self
                    .alloc_port(&who)
                    .ok_or_else(|| ApiError::internal("nodePort range is full"))?,
            };
            spec["healthCheckNodePort"] = json!(hc);
        } else if let Some(m) = spec.as_object_mut() {
            m.remove("healthCheckNodePort");
        }
        Ok(())
    }
}

/// A Service's status is always rendered with `loadBalancer` (a non-pointer struct), and
/// ingress entries of a LoadBalancer with an IP get `ipMode: VIP`, as the real server does
/// since the LoadBalancerIPMode feature (1.30).
pub(crate) fn default_status(obj: &mut Value) {
    if obj.pointer("/status/loadBalancer").is_none() {
        obj["status"]["loadBalancer"] = json!({});
    }
    if obj.pointer("/spec/type").and_then(Value::as_str) == Some("LoadBalancer") {
        default_ip_mode(obj);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, spec: Value) -> Value {
        json!({"metadata": {"name": name, "namespace": "default"}, "spec": spec})
    }

    #[test]
    fn defaults_load_balancer() {
        let mut a = ServiceAlloc::default();
        let mut s = svc(
            "a",
            json!({"type": "LoadBalancer", "ports": [{"port": 80}],
            "externalTrafficPolicy": "Local"}),
        );
        a.admit(&mut s, None).expect("valid");
        assert_eq!(s["spec"]["ports"][0]["protocol"], "TCP");
        assert_eq!(s["spec"]["ports"][0]["targetPort"], 80);
        assert!(s["spec"]["ports"][0]["nodePort"].as_u64().is_some());
        assert!(s["spec"]["healthCheckNodePort"].as_u64().is_some());
        assert_eq!(s["spec"]["ipFamilies"], json!(["IPv4"]));
        assert!(
            s["spec"]["clusterIP"]
                .as_str()
                .is_some_and(|ip| ip.starts_with("10.43."))
        );
        // Update keeps the allocations.
        let before = s.clone();
        let mut upd = svc(
            "a",
            json!({"type": "LoadBalancer", "ports": [{"port": 80}],
            "externalTrafficPolicy": "Local"}),
        );
        a.admit(&mut upd, Some(&before)).expect("valid");
        assert_eq!(
            upd["spec"]["ports"][0]["nodePort"],
            before["spec"]["ports"][0]["nodePort"]
        );
        assert_eq!(upd["spec"]["clusterIP"], before["spec"]["clusterIP"]);
    }

    #[test]
    fn rejects_class_on_cluster_ip_duplicate_ports_and_taken_node_port() {
        let mut a = ServiceAlloc::default();
        let mut s = svc(
            "a",
            json!({"type": "ClusterIP", "loadBalancerClass": "x",
            "ports": [{"port": 80, "name": "a"}, {"port": 80, "name": "b"}]}),
        );
        let err = a.admit(&mut s, None).expect_err("invalid");
        assert_eq!(err.code, 422);
        assert_eq!(err.causes.len(), 2, "{err:?}");
        let mut s1 = svc(
            "b",
            json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}),
        );
        a.admit(&mut s1, None).expect("valid");
        let mut s2 = svc(
            "c",
            json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}),
        );
        let err = a.admit(&mut s2, None).expect_err("taken");
        assert!(err.message.contains("already allocated"), "{err}");
    }

    #[test]
    fn class_is_immutable_and_dropped_with_type() {
        let mut a = ServiceAlloc::default();
        let mut s = svc(
            "a",
            json!({"type": "LoadBalancer", "loadBalancerClass": "x", "ports": [{"port": 80}]}),
        );
        a.admit(&mut s, None).expect("valid");
        let mut changed = s.clone();
        changed["spec"]["loadBalancerClass"] = json!("y");
        assert!(a.admit(&mut changed, Some(&s)).is_err());
        let mut to_cip = s.clone();
        to_cip["spec"]["type"] = json!("ClusterIP");
        a.admit(&mut to_cip, Some(&s))
            .expect("type change drops class");
        assert!(to_cip["spec"].get("loadBalancerClass").is_none());
        assert!(to_cip["spec"]["ports"][0].get("nodePort").is_none());
    }

    #[test]
    fn dual_stack_preferred() {
        let mut a = ServiceAlloc::default();
        let mut s = svc(
            "a",
            json!({"ipFamilyPolicy": "PreferDualStack", "ports": [{"port": 80}]}),
        );
        a.admit(&mut s, None).expect("valid");
        assert_eq!(s["spec"]["ipFamilies"], json!(["IPv4", "IPv6"]));
        assert!(
            s["spec"]["clusterIPs"][1]
                .as_str()
                .is_some_and(|ip| ip.starts_with("fd00:43::"))
        );
    }
}
