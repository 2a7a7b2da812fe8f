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
    let externally =
        ty == "LoadBalancer" || ty == "NodePort" || (ty == "ClusterIP" && external_ips);
    if externally
        && spec
            .get("externalTrafficPolicy")
            .is_none_or(|v| v.is_null() || *v == json!(""))
    {
        spec["externalTrafficPolicy"] = json!("Cluster");
    }
    if matches!(ty.as_str(), "NodePort" | "LoadBalancer" | "ClusterIP")
        && spec.get("internalTrafficPolicy").is_none_or(Value::is_null)
    {
        spec["internalTrafficPolicy"] = json!("Cluster");
    }
    if ty == "LoadBalancer"
        && spec
            .get("allocateLoadBalancerNodePorts")
            .is_none_or(Value::is_null)
    {
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

    /// Admits a Service on create (`old` = None) or update as the real registry does:
    /// type-dependent fields dropped and allocated values carried over on update,
    /// cluster IPs and node ports allocated (`BeginCreate`/`BeginUpdate`), then validated.
    /// Nothing stays allocated when either step fails.
    pub(crate) fn admit(&mut self, new: &mut Value, old: Option<&Value>) -> Result<(), ApiError> {
        let name = str_at(new, "/metadata/name").unwrap_or("").to_string();
        let who = owner(new);
        if !new.get("spec").is_some_and(Value::is_object) {
            new["spec"] = json!({});
        }
        if let Some(old) = old {
            drop_type_dependent_fields(new, old);
            patch_allocated_values(new, old);
        }
        let mut txn = Txn {
            owned_ips: old.map(ips_of).unwrap_or_default(),
            ..Default::default()
        };
        let mut errs = self.allocate(new, &who, &mut txn);
        if errs.is_empty() {
            errs = crate::service_validation::validate(new, old);
        }
        if !errs.is_empty() {
            self.rollback(txn);
            return Err(ApiError::invalid("Service", &name, errs));
        }
        if let Some(old) = old {
            let keep_ports: HashSet<u16> = node_ports_of(new).into_iter().collect();
            for p in node_ports_of(old) {
                if !keep_ports.contains(&p) && self.node_ports.get(&p) == Some(&who) {
                    self.node_ports.remove(&p);
                }
            }
            let keep_ips: HashSet<IpAddr> = ips_of(new).into_iter().collect();
            for ip in ips_of(old) {
                if !keep_ips.contains(&ip) {
                    self.cluster_ips.remove(&ip);
                }
            }
        }
        Ok(())
    }

    fn rollback(&mut self, txn: Txn) {
        for p in txn.ports {
            self.node_ports.remove(&p);
        }
        for ip in txn.ips {
            self.cluster_ips.remove(&ip);
        }
    }

    /// Families, cluster IPs, node ports and the health check port (the registry's
    /// `allocateCreate`/`allocateUpdate`); the errors it finds.
    fn allocate(&mut self, svc: &mut Value, who: &str, txn: &mut Txn) -> Vec<Cause> {
        let mut errs = Vec::new();
        let spec = &mut svc["spec"];
        let ty = spec
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP")
            .to_string();
        if ty == "ExternalName" {
            return errs;
        }
        let headless = spec.get("clusterIP").and_then(Value::as_str) == Some("None");
        let given: Vec<String> = spec
            .get("clusterIPs")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(String::from)
                    .collect()
            })
            .filter(|v: &Vec<String>| !v.is_empty())
            .or_else(|| {
                spec.get("clusterIP")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .map(|s| vec![s.to_string()])
            })
            .unwrap_or_default();
        let policy = spec
            .get("ipFamilyPolicy")
            .and_then(Value::as_str)
            .unwrap_or("SingleStack")
            .to_string();
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
        if families.is_empty() {
            families = given
                .iter()
                .filter(|ip| *ip != "None")
                .map(|ip| if ip.contains(':') { "IPv6" } else { "IPv4" }.to_string())
                .collect();
        }
        if families.is_empty() {
            families.push("IPv4".into());
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
            errs.push(crate::service_validation::invalid(
                "spec.ipFamilyPolicy",
                &json!(policy),
                "must be RequireDualStack or PreferDualStack when multiple 'ipFamilies' are specified",
            ));
            return errs;
        }
        spec["ipFamilyPolicy"] = json!(policy);
        spec["ipFamilies"] = json!(families);
        if headless {
            spec["clusterIPs"] = json!(["None"]);
        } else {
            let mut ips = Vec::new();
            for (i, fam) in families.iter().enumerate() {
                match given.get(i) {
                    Some(ip) => match ip.parse::<IpAddr>() {
                        Ok(addr) => {
                            if self.cluster_ips.insert(addr) {
                                txn.ips.push(addr);
                            } else if !txn.owned_ips.contains(&addr) {
                                errs.push(crate::service_validation::invalid(
                                    format!("spec.clusterIPs[{i}]"),
                                    &json!(ip),
                                    &format!("failed to allocate IP {ip}: provided IP is already allocated"),
                                ));
                            }
                            ips.push(ip.clone());
                        }
                        Err(_) => ips.push(ip.clone()),
                    },
                    None => match self.alloc_ip(fam == "IPv6") {
                        Some(ip) => {
                            txn.ips.push(ip);
                            ips.push(ip.to_string());
                        }
                        None => errs.push(crate::service_validation::invalid(
                            format!("spec.clusterIPs[{i}]"),
                            &Value::Null,
                            "range is full",
                        )),
                    },
                }
            }
            if let Some(first) = ips.first() {
                spec["clusterIP"] = json!(first);
            }
            spec["clusterIPs"] = json!(ips);
        }
        let is_lb = ty == "LoadBalancer";
        let want_node_ports = ty == "NodePort"
            || (is_lb && spec.get("allocateLoadBalancerNodePorts") != Some(&json!(false)));
        if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
            for (i, p) in ports.iter_mut().enumerate() {
                let given = p
                    .get("nodePort")
                    .and_then(Value::as_u64)
                    .filter(|n| *n != 0);
                match given {
                    Some(np) => {
                        if let Some(e) =
                            self.claim_port(np, who, &format!("spec.ports[{i}].nodePort"), txn)
                        {
                            errs.push(e);
                        }
                    }
                    None if want_node_ports => match self.alloc_port(who) {
                        Some(np) => {
                            txn.ports.push(np);
                            p["nodePort"] = json!(np);
                        }
                        None => errs.push(crate::service_validation::invalid(
                            format!("spec.ports[{i}].nodePort"),
                            &Value::Null,
                            "range is full",
                        )),
                    },
                    None => {}
                }
            }
        }
        let local = spec.get("externalTrafficPolicy").and_then(Value::as_str) == Some("Local");
        if is_lb && local {
            match spec
                .get("healthCheckNodePort")
                .and_then(Value::as_u64)
                .filter(|n| *n != 0)
            {
                Some(hc) => {
                    if let Some(e) = self.claim_port(hc, who, "spec.healthCheckNodePort", txn) {
                        errs.push(e);
                    }
                }
                None => match self.alloc_port(who) {
                    Some(hc) => {
                        txn.ports.push(hc);
                        spec["healthCheckNodePort"] = json!(hc);
                    }
                    None => errs.push(crate::service_validation::invalid(
                        "spec.healthCheckNodePort",
                        &Value::Null,
                        "range is full",
                    )),
                },
            }
        }
        errs
    }

    /// Takes a node port a Service asks for by number.
    fn claim_port(&mut self, np: u64, who: &str, field: &str, txn: &mut Txn) -> Option<Cause> {
        let in_range = (NODE_PORT_MIN as u64..=NODE_PORT_MAX as u64).contains(&np);
        if !in_range {
            return Some(crate::service_validation::invalid(
                field,
                &json!(np),
                &format!(
                    "provided port is not in the valid range. The range of valid ports is {NODE_PORT_MIN}-{NODE_PORT_MAX}"
                ),
            ));
        }
        let np = np as u16;
        match self.node_ports.get(&np) {
            Some(o) if o != who => Some(crate::service_validation::invalid(
                field,
                &json!(np),
                "provided port is already allocated",
            )),
            Some(_) => None,
            None => {
                self.node_ports.insert(np, who.to_string());
                txn.ports.push(np);
                None
            }
        }
    }
}

/// What one admission allocated, to undo on failure.
#[derive(Default)]
struct Txn {
    ports: Vec<u16>,
    ips: Vec<IpAddr>,
    /// IPs the Service already held (an update keeps them).
    owned_ips: Vec<IpAddr>,
}

fn node_ports_of(svc: &Value) -> Vec<u16> {
    let mut out: Vec<u16> = svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("nodePort").and_then(Value::as_u64))
        .map(|n| n as u16)
        .collect();
    if let Some(hc) = svc
        .pointer("/spec/healthCheckNodePort")
        .and_then(Value::as_u64)
    {
        out.push(hc as u16);
    }
    out
}

fn ips_of(svc: &Value) -> Vec<IpAddr> {
    svc.pointer("/spec/clusterIPs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// `dropTypeDependentFields` (pkg/registry/core/service/strategy.go): when the type changes,
/// fields the new type cannot have are cleared if the user left them as they were.
fn drop_type_dependent_fields(new: &mut Value, old: &Value) {
    let new_ty = str_at(new, "/spec/type").unwrap_or("ClusterIP").to_string();
    let old_ty = str_at(old, "/spec/type").unwrap_or("ClusterIP").to_string();
    if new_ty == old_ty {
        return;
    }
    let same = |new: &Value, ptr: &str| new.pointer(ptr) == old.pointer(ptr);
    let needs_node_ports = new_ty == "NodePort" || new_ty == "LoadBalancer";
    if !needs_node_ports {
        let old_ports = old
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if let Some(ports) = new.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
            for p in ports {
                let np = p.get("nodePort").cloned();
                let was = old_ports
                    .iter()
                    .any(|o| o.get("port") == p.get("port") && o.get("nodePort") == np.as_ref());
                if was && let Some(m) = p.as_object_mut() {
                    m.remove("nodePort");
                }
            }
        }
    }
    let spec_drop = |new: &mut Value, field: &str, cond: bool| {
        if cond
            && same(new, &format!("/spec/{field}"))
            && let Some(m) = new["spec"].as_object_mut()
        {
            m.remove(field);
        }
    };
    let lb = new_ty == "LoadBalancer";
    spec_drop(new, "healthCheckNodePort", !lb);
    spec_drop(new, "allocateLoadBalancerNodePorts", !lb);
    spec_drop(new, "loadBalancerClass", !lb);
    let external = |v: &Value| {
        let ty = str_at(v, "/spec/type").unwrap_or("ClusterIP");
        ty == "NodePort"
            || ty == "LoadBalancer"
            || (ty == "ClusterIP"
                && v.pointer("/spec/externalIPs")
                    .and_then(Value::as_array)
                    .is_some_and(|a| !a.is_empty()))
    };
    let was_external = external(old);
    let is_external = external(new);
    spec_drop(new, "externalTrafficPolicy", was_external && !is_external);
    if new_ty == "ExternalName" {
        spec_drop(new, "clusterIP", true);
        spec_drop(new, "clusterIPs", true);
        spec_drop(new, "ipFamilies", true);
        spec_drop(new, "ipFamilyPolicy", true);
        spec_drop(new, "internalTrafficPolicy", true);
    }
}

/// `patchAllocatedValues` (pkg/registry/core/service/storage/storage.go): an update that
/// leaves allocated values out keeps them.
fn patch_allocated_values(new: &mut Value, old: &Value) {
    let ty = str_at(new, "/spec/type").unwrap_or("ClusterIP").to_string();
    if ty == "ExternalName" {
        return;
    }
    if str_at(new, "/spec/clusterIP").unwrap_or("").is_empty() {
        for f in ["clusterIP", "clusterIPs"] {
            if let Some(v) = old.pointer(&format!("/spec/{f}")) {
                new["spec"][f] = v.clone();
            }
        }
    }
    if ty == "NodePort" || ty == "LoadBalancer" {
        let old_ports = old
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if let Some(ports) = new.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
            for p in ports {
                if p.get("nodePort").and_then(Value::as_u64).unwrap_or(0) == 0
                    && let Some(np) = old_ports
                        .iter()
                        .find(|o| {
                            o.get("port") == p.get("port") && o.get("protocol") == p.get("protocol")
                        })
                        .and_then(|o| o.get("nodePort"))
                {
                    p["nodePort"] = np.clone();
                }
            }
        }
    }
    if ty == "LoadBalancer"
        && str_at(new, "/spec/externalTrafficPolicy") == Some("Local")
        && new
            .pointer("/spec/healthCheckNodePort")
            .and_then(Value::as_u64)
            .unwrap_or(0)
            == 0
        && let Some(hc) = old.pointer("/spec/healthCheckNodePort")
    {
        new["spec"]["healthCheckNodePort"] = hc.clone();
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
        let mut s = json!({"metadata": {"name": name, "namespace": "default"}, "spec": spec});
        scheme_defaults(&mut s);
        s
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
        scheme_defaults(&mut changed);
        assert!(a.admit(&mut changed, Some(&s)).is_err());
        let mut to_cip = s.clone();
        to_cip["spec"]["type"] = json!("ClusterIP");
        scheme_defaults(&mut to_cip);
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
