//! Server-side printing: `Accept: application/json;as=Table;v=v1;g=meta.k8s.io`, which
//! `kubectl get` asks for, answered with the real server's columns and cells
//! (`pkg/printers/internalversion/printers.go`, Kubernetes v1.37.2). Kinds without a
//! printer of their own get the default `Name`/`Created At` table, as upstream.

use crate::kinds::ResourceKind;
use serde_json::{Map, Value, json};

/// The media type of a Table answer.
pub const TABLE_MEDIA: &str = "application/json;as=Table;v=v1;g=meta.k8s.io";

/// Whether a request asks for a Table.
pub fn wanted(accept: &str) -> bool {
    accept.contains("as=Table")
}

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

fn arr<'a>(v: &'a Value, ptr: &str) -> &'a [Value] {
    v.pointer(ptr)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn or_none(v: String) -> Value {
    json!(if v.is_empty() { "<none>".into() } else { v })
}

/// `duration.HumanDuration`.
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    if secs < 0 {
        return "0s".into();
    }
    if secs < 120 {
        return format!("{secs}s");
    }
    let minutes = secs / 60;
    if minutes < 10 {
        let s = secs % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = secs / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

pub(crate) fn age_of(t: &str) -> String {
    match chrono::DateTime::parse_from_rfc3339(t) {
        Ok(t) => human_duration((chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds()),
        Err(_) => "<unknown>".into(),
    }
}

fn age(o: &Value) -> Value {
    json!(age_of(s(o, "/metadata/creationTimestamp")))
}

/// `labels.FormatLabels`: `k=v,k2=v2` sorted, `<none>` when empty.
fn format_labels(m: Option<&Value>) -> Value {
    let parts: Vec<String> = m
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    or_none(parts.join(","))
}

/// `metav1.FormatLabelSelector`.
fn format_selector(sel: &Value) -> Value {
    let mut parts: Vec<String> = sel
        .get("matchLabels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    for e in sel
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let vals: Vec<&str> = arr(e, "/values").iter().filter_map(Value::as_str).collect();
        let key = s(e, "/key");
        parts.push(match s(e, "/operator") {
            "In" => format!("{key} in ({})", vals.join(",")),
            "NotIn" => format!("{key} notin ({})", vals.join(",")),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            op => format!("{key} {op} {}", vals.join(",")),
        });
    }
    or_none(parts.join(","))
}

fn col(name: &str, ty: &str, priority: u8, description: &str) -> Value {
    let format = if name == "Name" { "name" } else { "" };
    json!({"name": name, "type": ty, "format": format, "description": description,
        "priority": priority})
}

pub(crate) const NAME_DOC: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
pub(crate) const AGE_DOC: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";

/// The columns of a kind's table.
pub fn columns(storage: &str) -> Vec<Value> {
    let name = col("Name", "string", 0, NAME_DOC);
    let age = col("Age", "string", 0, AGE_DOC);
    let c = |n: &str, ty: &str, p: u8| col(n, ty, p, "");
    match storage {
        "services" => vec![
            name,
            c("Type", "string", 0),
            c("Cluster-IP", "string", 0),
            c("External-IP", "string", 0),
            c("Port(s)", "string", 0),
            age,
            c("Selector", "string", 1),
        ],
        "nodes" => vec![
            name,
            c("Status", "string", 0),
            c("Roles", "string", 0),
            age,
            c("Version", "string", 0),
            c("Internal-IP", "string", 1),
            c("External-IP", "string", 1),
            c("OS-Image", "string", 1),
            c("Kernel-Version", "string", 1),
            c("Container-Runtime", "string", 1),
        ],
        "pods" => vec![
            name,
            c("Ready", "string", 0),
            c("Status", "string", 0),
            c("Restarts", "string", 0),
            age,
            c("IP", "string", 1),
            c("Node", "string", 1),
            c("Nominated Node", "string", 1),
            c("Readiness Gates", "string", 1),
        ],
        "daemonsets" => vec![
            name,
            c("Desired", "integer", 0),
            c("Current", "integer", 0),
            c("Ready", "integer", 0),
            c("Up-to-date", "integer", 0),
            c("Available", "integer", 0),
            c("Node Selector", "string", 0),
            age,
            c("Containers", "string", 1),
            c("Images", "string", 1),
            c("Selector", "string", 1),
        ],
        "deployments" => vec![
            name,
            c("Ready", "string", 0),
            c("Up-to-date", "string", 0),
            c("Available", "string", 0),
            age,
            c("Containers", "string", 1),
            c("Images", "string", 1),
            c("Selector", "string", 1),
        ],
        "events" => vec![
            c("Last Seen", "string", 0),
            c("Type", "string", 0),
            c("Reason", "string", 0),
            c("Object", "string", 0),
            c("Subobject", "string", 1),
            c("Source", "string", 1),
            c("Message", "string", 0),
            c("First Seen", "string", 1),
            c("Count", "string", 1),
            col("Name", "string", 1, NAME_DOC),
        ],
        "endpointslices" => vec![
            name,
            c("AddressType", "string", 0),
            c("Ports", "string", 0),
            c("Endpoints", "string", 0),
            age,
        ],
        "leases" => vec![name, c("Holder", "string", 0), age],
        "namespaces" => vec![name, c("Status", "string", 0), age],
        "configmaps" => vec![name, c("Data", "string", 0), age],
        "secrets" => vec![name, c("Type", "string", 0), c("Data", "string", 0), age],
        "serviceaccounts" => vec![name, age],
        "endpoints" => vec![name, c("Endpoints", "string", 0), age],
        "clusterrolebindings" | "rolebindings" => vec![
            name,
            c("Role", "string", 0),
            age,
            c("Users", "string", 1),
            c("Groups", "string", 1),
            c("ServiceAccounts", "string", 1),
        ],
        _ => vec![name, col("Created At", "date", 0, AGE_DOC)],
    }
}

fn service_external_ip(o: &Value) -> Value {
    let external: Vec<&str> = arr(o, "/spec/externalIPs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    match s(o, "/spec/type") {
        "LoadBalancer" => {
            let mut ips: Vec<String> = arr(o, "/status/loadBalancer/ingress")
                .iter()
                .map(|i| {
                    let ip = s(i, "/ip");
                    if ip.is_empty() {
                        s(i, "/hostname").to_string()
                    } else {
                        ip.to_string()
                    }
                })
                .filter(|x| !x.is_empty())
                .collect();
            ips.extend(external.iter().map(|x| x.to_string()));
            json!(if ips.is_empty() {
                "<pending>".into()
            } else {
                ips.join(",")
            })
        }
        "ExternalName" => json!(s(o, "/spec/externalName")),
        _ => or_none(external.join(",")),
    }
}

fn service_ports(o: &Value) -> Value {
    let parts: Vec<String> = arr(o, "/spec/ports")
        .iter()
        .map(|p| {
            let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
            let proto = s(p, "/protocol");
            match p.get("nodePort").and_then(Value::as_i64).filter(|n| *n > 0) {
                Some(np) => format!("{port}:{np}/{proto}"),
                None => format!("{port}/{proto}"),
            }
        })
        .collect();
    or_none(parts.join(","))
}

fn condition(o: &Value, ty: &str) -> Option<String> {
    arr(o, "/status/conditions")
        .iter()
        .find(|c| s(c, "/type") == ty)
        .map(|c| s(c, "/status").to_string())
}

fn pod_status(o: &Value) -> String {
    if o.pointer("/metadata/deletionTimestamp").is_some() {
        return "Terminating".into();
    }
    let gated = arr(o, "/spec/schedulingGates").len();
    if gated > 0 && s(o, "/spec/nodeName").is_empty() {
        return "SchedulingGated".into();
    }
    let mut reason = s(o, "/status/phase").to_string();
    if !s(o, "/status/reason").is_empty() {
        reason = s(o, "/status/reason").to_string();
    }
    for c in arr(o, "/status/containerStatuses") {
        let waiting = s(c, "/state/waiting/reason");
        if !waiting.is_empty() {
            reason = waiting.to_string();
        }
    }
    reason
}

fn containers_and_images(spec: &Value) -> (Value, Value) {
    let cs = arr(spec, "/containers");
    let names: Vec<&str> = cs.iter().map(|c| s(c, "/name")).collect();
    let images: Vec<&str> = cs.iter().map(|c| s(c, "/image")).collect();
    (json!(names.join(",")), json!(images.join(",")))
}

fn subjects(o: &Value, kind: &str) -> Value {
    let v: Vec<String> = arr(o, "/subjects")
        .iter()
        .filter(|x| s(x, "/kind") == kind)
        .map(|x| {
            if kind == "ServiceAccount" {
                format!("{}/{}", s(x, "/namespace"), s(x, "/name"))
            } else {
                s(x, "/name").to_string()
            }
        })
        .collect();
    json!(v.join(", "))
}

fn num(o: &Value, ptr: &str) -> i64 {
    o.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

/// The cells of one object's row (view form).
pub fn cells(storage: &str, o: &Value) -> Vec<Value> {
    let name = json!(s(o, "/metadata/name"));
    match storage {
        "services" => vec![
            name,
            json!(s(o, "/spec/type")),
            or_none(s(o, "/spec/clusterIP").to_string()),
            service_external_ip(o),
            service_ports(o),
            age(o),
            format_labels(o.pointer("/spec/selector")),
        ],
        "nodes" => {
            let mut status = match condition(o, "Ready").as_deref() {
                Some("True") => "Ready".to_string(),
                Some(_) => "NotReady".to_string(),
                None => "Unknown".to_string(),
            };
            if o.pointer("/spec/unschedulable") == Some(&json!(true)) {
                status.push_str(",SchedulingDisabled");
            }
            let mut roles: Vec<String> = o
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .map(|l| {
                    l.iter()
                        .filter_map(|(k, v)| {
                            k.strip_prefix("node-role.kubernetes.io/")
                                .map(String::from)
                                .or_else(|| {
                                    (k == "kubernetes.io/role")
                                        .then(|| v.as_str().unwrap_or("").to_string())
                                })
                        })
                        .filter(|r| !r.is_empty())
                        .collect()
                })
                .unwrap_or_default();
            roles.sort();
            let addr = |ty: &str| {
                arr(o, "/status/addresses")
                    .iter()
                    .find(|a| s(a, "/type") == ty)
                    .map(|a| s(a, "/address").to_string())
                    .unwrap_or_default()
            };
            let unknown = |v: &str| json!(if v.is_empty() { "<unknown>" } else { v });
            vec![
                name,
                json!(status),
                or_none(roles.join(",")),
                age(o),
                json!(s(o, "/status/nodeInfo/kubeletVersion")),
                or_none(addr("InternalIP")),
                or_none(addr("ExternalIP")),
                unknown(s(o, "/status/nodeInfo/osImage")),
                unknown(s(o, "/status/nodeInfo/kernelVersion")),
                unknown(s(o, "/status/nodeInfo/containerRuntimeVersion")),
            ]
        }
        "pods" => {
            let total = arr(o, "/spec/containers").len();
            let ready = arr(o, "/status/containerStatuses")
                .iter()
                .filter(|c| c.get("ready") == Some(&json!(true)))
                .count();
            let restarts: i64 = arr(o, "/status/containerStatuses")
                .iter()
                .map(|c| num(c, "/restartCount"))
                .sum();
            vec![
                name,
                json!(format!("{ready}/{total}")),
                json!(pod_status(o)),
                json!(restarts.to_string()),
                age(o),
                or_none(s(o, "/status/podIP").to_string()),
                or_none(s(o, "/spec/nodeName").to_string()),
                or_none(s(o, "/status/nominatedNodeName").to_string()),
                json!("<none>"),
            ]
        }
        "daemonsets" => {
            let (c, i) =
                containers_and_images(o.pointer("/spec/template/spec").unwrap_or(&Value::Null));
            vec![
                name,
                json!(num(o, "/status/desiredNumberScheduled")),
                json!(num(o, "/status/currentNumberScheduled")),
                json!(num(o, "/status/numberReady")),
                json!(num(o, "/status/updatedNumberScheduled")),
                json!(num(o, "/status/numberAvailable")),
                format_labels(o.pointer("/spec/template/spec/nodeSelector")),
                age(o),
                c,
                i,
                format_selector(o.pointer("/spec/selector").unwrap_or(&Value::Null)),
            ]
        }
        "deployments" => {
            let (c, i) =
                containers_and_images(o.pointer("/spec/template/spec").unwrap_or(&Value::Null));
            let desired = o
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            vec![
                name,
                json!(format!("{}/{desired}", num(o, "/status/readyReplicas"))),
                json!(num(o, "/status/updatedReplicas")),
                json!(num(o, "/status/availableReplicas")),
                age(o),
                c,
                i,
                format_selector(o.pointer("/spec/selector").unwrap_or(&Value::Null)),
            ]
        }
        "events" => {
            let last = [
                s(o, "/lastTimestamp"),
                s(o, "/series/lastObservedTime"),
                s(o, "/eventTime"),
            ]
            .into_iter()
            .find(|t| !t.is_empty())
            .map(age_of)
            .unwrap_or_else(|| "<unknown>".into());
            let first = [s(o, "/firstTimestamp"), s(o, "/eventTime")]
                .into_iter()
                .find(|t| !t.is_empty())
                .map(age_of)
                .unwrap_or_else(|| "<unknown>".into());
            let object = format!(
                "{}/{}",
                s(o, "/involvedObject/kind").to_lowercase(),
                s(o, "/involvedObject/name")
            );
            let source = {
                let c = s(o, "/source/component");
                let c = if c.is_empty() {
                    s(o, "/reportingComponent")
                } else {
                    c
                };
                let h = s(o, "/source/host");
                if h.is_empty() {
                    c.to_string()
                } else {
                    format!("{c}, {h}")
                }
            };
            let count = o.get("count").and_then(Value::as_i64).unwrap_or(1);
            vec![
                json!(last),
                json!(s(o, "/type")),
                json!(s(o, "/reason")),
                json!(object),
                json!(s(o, "/involvedObject/fieldPath")),
                json!(source),
                json!(s(o, "/message")),
                json!(first),
                json!(count.to_string()),
                name,
            ]
        }
        "endpointslices" => {
            let ports: Vec<String> = arr(o, "/ports")
                .iter()
                .filter_map(|p| p.get("port").and_then(Value::as_i64).map(|n| n.to_string()))
                .collect();
            let addrs: Vec<&str> = arr(o, "/endpoints")
                .iter()
                .flat_map(|e| arr(e, "/addresses").iter().filter_map(Value::as_str))
                .collect();
            let eps = if addrs.is_empty() {
                "<unset>".to_string()
            } else if addrs.len() > 3 {
                format!("{} + {} more...", addrs[..3].join(","), addrs.len() - 3)
            } else {
                addrs.join(",")
            };
            let ports = if ports.is_empty() {
                "<unset>".into()
            } else {
                ports.join(",")
            };
            vec![
                name,
                json!(s(o, "/addressType")),
                json!(ports),
                json!(eps),
                age(o),
            ]
        }
        "leases" => vec![name, json!(s(o, "/spec/holderIdentity")), age(o)],
        "namespaces" => vec![name, json!(s(o, "/status/phase")), age(o)],
        "configmaps" => {
            let n = o.get("data").and_then(Value::as_object).map_or(0, Map::len)
                + o.get("binaryData")
                    .and_then(Value::as_object)
                    .map_or(0, Map::len);
            vec![name, json!(n), age(o)]
        }
        "secrets" => {
            let n = o.get("data").and_then(Value::as_object).map_or(0, Map::len);
            vec![name, json!(s(o, "/type")), json!(n), age(o)]
        }
        "serviceaccounts" => vec![name, age(o)],
        "endpoints" => {
            let mut eps = Vec::new();
            for sub in arr(o, "/subsets") {
                for a in arr(sub, "/addresses") {
                    for p in arr(sub, "/ports") {
                        eps.push(format!("{}:{}", s(a, "/ip"), num(p, "/port")));
                    }
                }
            }
            let text = if eps.len() > 3 {
                format!("{} + {} more...", eps[..3].join(","), eps.len() - 3)
            } else {
                eps.join(",")
            };
            vec![name, or_none(text), age(o)]
        }
        "clusterrolebindings" | "rolebindings" => vec![
            name,
            json!(format!(
                "{}/{}",
                s(o, "/roleRef/kind"),
                s(o, "/roleRef/name")
            )),
            age(o),
            subjects(o, "User"),
            subjects(o, "Group"),
            subjects(o, "ServiceAccount"),
        ],
        _ => vec![name, json!(s(o, "/metadata/creationTimestamp"))],
    }
}

/// A row: cells and the object (its metadata as PartialObjectMetadata, the default
/// `includeObject=Metadata`; the whole object for `Object`; none for `None`).
fn row(storage: &str, o: &Value, include: &str) -> Value {
    row_of(cells(storage, o), o, include)
}

/// A row of the given cells, with the object as `include` asks.
pub(crate) fn row_of(cells: Vec<Value>, o: &Value, include: &str) -> Value {
    let mut r = json!({"cells": cells});
    match include {
        "None" => {}
        "Object" => r["object"] = o.clone(),
        _ => {
            r["object"] = json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                "metadata": o.get("metadata").cloned().unwrap_or(json!({}))});
        }
    }
    r
}

/// The Table of `items` (view form).
pub fn table(kind: &ResourceKind, items: &[Value], meta: Value, include: &str) -> Value {
    if let Some(custom) = &kind.custom {
        return crate::crd_table::table(custom, items, meta, include);
    }
    let storage = if kind.is_events_v1() {
        "events"
    } else {
        kind.storage
    };
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let core = if kind.is_events_v1() {
                crate::events_view::v1_to_core(o)
            } else {
                o.clone()
            };
            let mut r = row(storage, &core, include);
            if include == "Object" {
                r["object"] = o.clone();
            }
            r
        })
        .collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta,
        "columnDefinitions": columns(storage), "rows": rows})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_and_service_cells() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(125), "2m5s");
        assert_eq!(human_duration(3 * 3600 + 60), "3h1m");
        assert_eq!(human_duration(50 * 3600), "2d2h");
        let svc = json!({"metadata": {"name": "web", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.43.0.10",
                "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}], "selector": {"app": "web"}},
            "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}});
        let c = cells("services", &svc);
        assert_eq!(c[3], "192.0.2.1");
        assert_eq!(c[4], "80:30080/TCP");
        assert_eq!(c[6], "app=web");
        let pending = json!({"spec": {"type": "LoadBalancer"}});
        assert_eq!(cells("services", &pending)[3], "<pending>");
    }
}
