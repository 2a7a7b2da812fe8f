//! Service validation in the real server's order and words (`pkg/apis/core/validation`
//! `validateService`, `validateServicePort`, `ValidateServiceClusterIPsRelatedFields`,
//! `validateUpgradeDowngradeClusterIPs`, `validateLoadBalancerClassField`,
//! `validateServiceExternalTrafficPolicy`, `ValidateLoadBalancerStatus`, Kubernetes v1.37.2):
//! a controller reads `causes` to tell its user what to fix, so they must be the same.

use crate::error::Cause;
use serde_json::Value;
use std::collections::HashSet;
use std::net::IpAddr;

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

fn strs(v: &Value, ptr: &str) -> Vec<String> {
    v.pointer(ptr)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

/// `field.Invalid` with a value rendered as the real server does (`%q` for strings, JSON
/// for the rest).
pub(crate) fn invalid(field: impl Into<String>, value: &Value, detail: &str) -> Cause {
    Cause {
        reason: "FieldValueInvalid",
        field: field.into(),
        message: format!("Invalid value: {}: {detail}", render(value)),
    }
}

/// A bad value as `field.Error` prints it.
pub(crate) fn render(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        other => other.to_string(),
    }
}

pub(crate) fn required(field: impl Into<String>, detail: &str) -> Cause {
    Cause {
        reason: "FieldValueRequired",
        field: field.into(),
        message: if detail.is_empty() {
            "Required value".into()
        } else {
            format!("Required value: {detail}")
        },
    }
}

pub(crate) fn forbidden(field: impl Into<String>, detail: &str) -> Cause {
    Cause {
        reason: "FieldValueForbidden",
        field: field.into(),
        message: format!("Forbidden: {detail}"),
    }
}

fn not_supported(field: impl Into<String>, value: &Value, supported: &[&str]) -> Cause {
    let list: Vec<String> = supported.iter().map(|x| format!("{x:?}")).collect();
    Cause {
        reason: "FieldValueNotSupported",
        field: field.into(),
        message: format!(
            "Unsupported value: {}: supported values: {}",
            render(value),
            list.join(", ")
        ),
    }
}

fn duplicate(field: impl Into<String>, value: &str) -> Cause {
    Cause {
        reason: "FieldValueDuplicate",
        field: field.into(),
        message: format!("Duplicate value: {value}"),
    }
}

const PORT_RANGE: &str = "must be between 1 and 65535, inclusive";

fn dns1123_label(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && v.starts_with(|c: char| c.is_ascii_alphanumeric())
        && v.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// `IsValidIPForLegacyField`: a value already stored is accepted as it is.
fn valid_ip(field: String, ip: &str, existing: &[String]) -> Option<Cause> {
    if existing.iter().any(|e| e == ip) || ip.parse::<IpAddr>().is_ok() {
        return None;
    }
    Some(invalid(
        field,
        &Value::String(ip.to_string()),
        "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
    ))
}

fn headless(svc: &Value) -> bool {
    s(svc, "/spec/clusterIP") == "None"
}

/// `validateService` (and the update checks when `old` is given). The Service has been
/// defaulted and its cluster IPs and node ports allocated, as upstream validates after
/// `BeginCreate`/`BeginUpdate`.
pub(crate) fn validate(svc: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut errs = Vec::new();
    let ty = s(svc, "/spec/type");
    if let Some(old) = old {
        upgrade_downgrade_cluster_ips(old, svc, &mut errs);
        load_balancer_class(Some(old), svc, &mut errs, true);
        let hc = |v: &Value| {
            s(v, "/spec/type") == "LoadBalancer" && s(v, "/spec/externalTrafficPolicy") == "Local"
        };
        if hc(old)
            && hc(svc)
            && old.pointer("/spec/healthCheckNodePort") != svc.pointer("/spec/healthCheckNodePort")
        {
            errs.push(forbidden("spec.healthCheckNodePort", "field is immutable"));
        }
    }
    let ports: Vec<Value> = svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if ports.is_empty() && !headless(svc) && ty != "ExternalName" {
        errs.push(required("spec.ports", ""));
    }
    let cluster_ips = strs(svc, "/spec/clusterIPs");
    match ty {
        "LoadBalancer" | "NodePort" if headless(svc) => errs.push(invalid(
            "spec.clusterIPs[0]",
            &Value::String(cluster_ips.first().cloned().unwrap_or_default()),
            &format!("may not be set to 'None' for {ty} services"),
        )),
        "ExternalName" => {
            if !cluster_ips.is_empty() {
                errs.push(forbidden(
                    "spec.clusterIPs",
                    "may not be set for ExternalName services",
                ));
            }
            if svc.pointer("/spec/externalName").is_none() {
                errs.push(required("spec.externalName", ""));
            }
        }
        _ => {}
    }
    let mut names = HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        let path = format!("spec.ports[{i}]");
        let name = s(p, "/name");
        if ports.len() > 1 && name.is_empty() {
            errs.push(required(format!("{path}.name"), ""));
        } else if !name.is_empty() {
            if !dns1123_label(name) {
                errs.push(invalid(
                    format!("{path}.name"),
                    &Value::String(name.into()),
                    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
                ));
            }
            if !names.insert(name.to_string()) {
                errs.push(duplicate(format!("{path}.name"), &format!("{name:?}")));
            }
        }
        let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
        if !(1..=65535).contains(&port) {
            errs.push(invalid(format!("{path}.port"), &port.into(), PORT_RANGE));
        }
        let proto = s(p, "/protocol");
        if proto.is_empty() {
            errs.push(required(format!("{path}.protocol"), ""));
        } else if !matches!(proto, "TCP" | "UDP" | "SCTP") {
            errs.push(not_supported(
                format!("{path}.protocol"),
                &Value::String(proto.into()),
                &["SCTP", "TCP", "UDP"],
            ));
        }
        match p.get("targetPort") {
            Some(Value::Number(n)) => {
                let t = n.as_i64().unwrap_or(0);
                if !(1..=65535).contains(&t) {
                    errs.push(invalid(format!("{path}.targetPort"), &t.into(), PORT_RANGE));
                }
            }
            Some(Value::String(name)) if name.len() > 15 || !dns1123_label(name) => {
                errs.push(invalid(
                    format!("{path}.targetPort"),
                    &Value::String(name.clone()),
                    "must contain at least one letter (a-z), only lower-case letters, digits and '-', at most 15 characters",
                ));
            }
            _ => {}
        }
    }
    let affinity = s(svc, "/spec/sessionAffinity");
    if !matches!(affinity, "None" | "ClientIP") {
        errs.push(not_supported(
            "spec.sessionAffinity",
            &Value::String(affinity.into()),
            &["ClientIP", "None"],
        ));
    }
    cluster_ips_related(svc, old, &mut errs);
    let existing_external: Vec<String> = old
        .map(|o| strs(o, "/spec/externalIPs"))
        .unwrap_or_default();
    for (i, ip) in strs(svc, "/spec/externalIPs").iter().enumerate() {
        errs.extend(valid_ip(
            format!("spec.externalIPs[{i}]"),
            ip,
            &existing_external,
        ));
    }
    if !matches!(
        ty,
        "ClusterIP" | "NodePort" | "LoadBalancer" | "ExternalName"
    ) {
        errs.push(not_supported(
            "spec.type",
            &Value::String(ty.into()),
            &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
        ));
    }
    if ty == "ClusterIP" {
        for (i, p) in ports.iter().enumerate() {
            if p.get("nodePort").and_then(Value::as_i64).unwrap_or(0) != 0 {
                errs.push(forbidden(
                    format!("spec.ports[{i}].nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                ));
            }
        }
    }
    let mut node_ports = HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        let np = p.get("nodePort").and_then(Value::as_i64).unwrap_or(0);
        if np != 0 && !node_ports.insert((s(p, "/protocol").to_string(), np)) {
            errs.push(duplicate(
                format!("spec.ports[{i}].nodePort"),
                &np.to_string(),
            ));
        }
    }
    let mut seen = HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
        let proto = s(p, "/protocol");
        if !seen.insert((proto.to_string(), port)) {
            errs.push(duplicate(
                format!("spec.ports[{i}]"),
                &format!(
                    "{{\"Name\":\"\",\"Protocol\":\"{proto}\",\"AppProtocol\":null,\"Port\":{port},\"TargetPort\":0,\"NodePort\":0}}"
                ),
            ));
        }
    }
    let ranges = strs(svc, "/spec/loadBalancerSourceRanges");
    if !ranges.is_empty() && ty != "LoadBalancer" {
        errs.push(forbidden(
            "spec.LoadBalancerSourceRanges",
            "may only be used when `type` is 'LoadBalancer'",
        ));
    }
    if svc.pointer("/spec/allocateLoadBalancerNodePorts").is_some() && ty != "LoadBalancer" {
        errs.push(forbidden(
            "spec.allocateLoadBalancerNodePorts",
            "may only be used when `type` is 'LoadBalancer'",
        ));
    }
    load_balancer_class(None, svc, &mut errs, false);
    let externally = matches!(ty, "LoadBalancer" | "NodePort")
        || (ty == "ClusterIP" && !strs(svc, "/spec/externalIPs").is_empty());
    let etp = s(svc, "/spec/externalTrafficPolicy");
    if !externally {
        if !etp.is_empty() {
            errs.push(invalid(
                "spec.externalTrafficPolicy",
                &Value::String(etp.into()),
                "may only be set for externally-accessible services",
            ));
        }
    } else if !matches!(etp, "Cluster" | "Local") {
        errs.push(not_supported(
            "spec.externalTrafficPolicy",
            &Value::String(etp.into()),
            &["Cluster", "Local"],
        ));
    }
    let hc = svc
        .pointer("/spec/healthCheckNodePort")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if !(ty == "LoadBalancer" && etp == "Local") && hc != 0 {
        errs.push(invalid(
            "spec.healthCheckNodePort",
            &hc.into(),
            "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'",
        ));
    }
    let itp = s(svc, "/spec/internalTrafficPolicy");
    if !itp.is_empty() && !matches!(itp, "Cluster" | "Local") {
        errs.push(not_supported(
            "spec.internalTrafficPolicy",
            &Value::String(itp.into()),
            &["Cluster", "Local"],
        ));
    }
    errs
}

fn load_balancer_class(old: Option<&Value>, svc: &Value, errs: &mut Vec<Cause>, update: bool) {
    let class = svc
        .pointer("/spec/loadBalancerClass")
        .filter(|v| !v.is_null());
    let lb = s(svc, "/spec/type") == "LoadBalancer";
    if let Some(old) = old
        && s(old, "/spec/type") == "LoadBalancer"
        && lb
        && old
            .pointer("/spec/loadBalancerClass")
            .filter(|v| !v.is_null())
            != class
    {
        errs.push(invalid(
            "spec.loadBalancerClass",
            class.unwrap_or(&Value::Null),
            "may not change once set",
        ));
    }
    if update {
        return;
    }
    if !lb && class.is_some() {
        errs.push(forbidden(
            "spec.loadBalancerClass",
            "may only be used when `type` is 'LoadBalancer'",
        ));
    }
}

fn cluster_ips_related(svc: &Value, old: Option<&Value>, errs: &mut Vec<Cause>) {
    if s(svc, "/spec/type") == "ExternalName" {
        return;
    }
    let ips = strs(svc, "/spec/clusterIPs");
    let ip = s(svc, "/spec/clusterIP");
    let ips_value = Value::from(ips.clone());
    if !ip.is_empty() {
        if ips.is_empty() {
            errs.push(required("spec.clusterIPs", ""));
        } else if ips[0] != ip {
            errs.push(invalid(
                "spec.clusterIPs",
                &ips_value,
                "first value must match `clusterIP`",
            ));
        }
    } else if !ips.is_empty() {
        errs.push(invalid(
            "spec.clusterIPs",
            &ips_value,
            "must be empty when `clusterIP` is not specified",
        ));
    }
    let mut seen = HashSet::new();
    for (i, f) in strs(svc, "/spec/ipFamilies").iter().enumerate() {
        if !matches!(f.as_str(), "IPv4" | "IPv6") {
            errs.push(not_supported(
                format!("spec.ipFamilies[{i}]"),
                &Value::String(f.clone()),
                &["IPv4", "IPv6"],
            ));
        }
        if !seen.insert(f.clone()) {
            errs.push(duplicate(
                format!("spec.ipFamilies[{i}]"),
                &format!("{f:?}"),
            ));
        }
    }
    let policy = s(svc, "/spec/ipFamilyPolicy");
    if !policy.is_empty()
        && !matches!(
            policy,
            "SingleStack" | "PreferDualStack" | "RequireDualStack"
        )
    {
        errs.push(not_supported(
            "spec.ipFamilyPolicy",
            &Value::String(policy.into()),
            &["PreferDualStack", "RequireDualStack", "SingleStack"],
        ));
    }
    let existing: Vec<String> = old.map(|o| strs(o, "/spec/clusterIPs")).unwrap_or_default();
    for (i, c) in ips.iter().enumerate() {
        if i == 0 && c == "None" {
            continue;
        }
        errs.extend(valid_ip(format!("spec.clusterIPs[{i}]"), c, &existing));
    }
}

fn upgrade_downgrade_cluster_ips(old: &Value, svc: &Value, errs: &mut Vec<Cause>) {
    if s(svc, "/spec/type") == "ExternalName" || s(old, "/spec/type") == "ExternalName" {
        return;
    }
    if headless(old) && headless(svc) {
        return;
    }
    let (o, n) = (strs(old, "/spec/clusterIPs"), strs(svc, "/spec/clusterIPs"));
    let nv = Value::from(n.clone());
    if o.len() == n.len() {
        for (i, ip) in o.iter().enumerate() {
            if *ip != n[i] {
                errs.push(invalid(
                    format!("spec.clusterIPs[{i}]"),
                    &nv,
                    "may not change once set",
                ));
            }
        }
    } else if o.len() > n.len() {
        if n.is_empty() {
            errs.push(invalid(
                "spec.clusterIPs[0]",
                &nv,
                "primary clusterIP can not be unset",
            ));
        } else if n[0] != o[0] {
            errs.push(invalid(
                "spec.clusterIPs[0]",
                &nv,
                "may not change once set",
            ));
        }
    } else if !o.is_empty() && n[0] != o[0] {
        errs.push(invalid(
            "spec.clusterIPs[0]",
            &nv,
            "may not change once set",
        ));
    }
}

/// `ValidateServiceStatusUpdate`: the load balancer status.
pub(crate) fn validate_status(svc: &Value, old: &Value) -> Vec<Cause> {
    let mut errs = Vec::new();
    let ingress: Vec<Value> = svc
        .pointer("/status/loadBalancer/ingress")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if s(svc, "/spec/type") != "LoadBalancer" && !ingress.is_empty() {
        errs.push(forbidden(
            "status.loadBalancer.ingress",
            "may only be used when `spec.type` is 'LoadBalancer'",
        ));
        return errs;
    }
    let existing: Vec<String> = old
        .pointer("/status/loadBalancer/ingress")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|i| i.get("ip").and_then(Value::as_str))
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    for (i, ing) in ingress.iter().enumerate() {
        let path = format!("status.loadBalancer.ingress[{i}]");
        let ip = s(ing, "/ip");
        if !ip.is_empty() {
            errs.extend(valid_ip(format!("{path}.ip"), ip, &existing));
        }
        match ing.get("ipMode").filter(|m| !m.is_null()) {
            None if !ip.is_empty() => {
                errs.push(required(
                    format!("{path}.ipMode"),
                    "must be specified when `ip` is set",
                ));
            }
            Some(_) if ip.is_empty() => {
                errs.push(forbidden(
                    format!("{path}.ipMode"),
                    "may not be specified when `ip` is not set",
                ));
            }
            Some(m) if !matches!(m.as_str(), Some("VIP" | "Proxy")) => {
                errs.push(not_supported(
                    format!("{path}.ipMode"),
                    m,
                    &["Proxy", "VIP"],
                ));
            }
            _ => {}
        }
        let host = s(ing, "/hostname");
        if !host.is_empty() && host.parse::<IpAddr>().is_ok() {
            errs.push(invalid(
                format!("{path}.hostname"),
                &Value::String(host.into()),
                "must be a DNS name, not an IP address",
            ));
        }
    }
    errs
}
