//! The simulated DaemonSet controller, scheduler and kubelet.
//!
//! Enough of the control plane for the hostport provider to be tested as on a real cluster:
//! a DaemonSet gets one pod per matching node (nodeSelector, required node affinity of the
//! `In`/`NotIn`/`Exists`/`DoesNotExist` kind, taints against tolerations); the scheduler
//! binds a pod only when its hostPorts are free on the node, otherwise leaves it Pending with
//! `PodScheduled=False, reason Unschedulable`; the kubelet makes bound pods Running and Ready
//! (not Ready on a NotReady node) and DaemonSet status counts follow.

use crate::deletion::DeleteOptions;
use crate::registry::WriteOptions;
use crate::store::{Change, Store};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

/// The manager name of kube-controller-manager's writes.
const KCM: &str = "kube-controller-manager";

/// A delete with no grace period, as kubelet sends once a pod's containers stopped.
fn gone_now() -> DeleteOptions {
    DeleteOptions {
        grace_period: Some(0),
        ..Default::default()
    }
}

/// Which simulated controllers run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Switches {
    pub(crate) kubelet: bool,
    pub(crate) daemonsets: bool,
}

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

fn labels(v: &Value) -> BTreeMap<String, String> {
    v.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

fn node_ready(node: &Value) -> bool {
    node.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

fn tolerates(tolerations: &[Value], taint: &Value) -> bool {
    tolerations.iter().any(|t| {
        let op = t.get("operator").and_then(Value::as_str).unwrap_or("Equal");
        let key = s(t, "/key");
        let effect = s(t, "/effect");
        let key_ok = (key.is_empty() && op == "Exists") || key == s(taint, "/key");
        let value_ok = op == "Exists" || s(t, "/value") == s(taint, "/value");
        let effect_ok = effect.is_empty() || effect == s(taint, "/effect");
        key_ok && value_ok && effect_ok
    })
}

fn taints_ok(node: &Value, tolerations: &[Value]) -> bool {
    node.pointer("/spec/taints")
        .and_then(Value::as_array)
        .is_none_or(|taints| {
            taints
                .iter()
                .filter(|t| matches!(s(t, "/effect"), "NoSchedule" | "NoExecute"))
                .all(|t| tolerates(tolerations, t))
        })
}

fn expr_ok(e: &Value, value: Option<&str>) -> bool {
    let values: Vec<&str> = e
        .get("values")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    match s(e, "/operator") {
        "In" => value.is_some_and(|v| values.contains(&v)),
        "NotIn" => !value.is_some_and(|v| values.contains(&v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(w)) = (
                value.and_then(|v| v.parse::<i64>().ok()),
                values.first().and_then(|w| w.parse::<i64>().ok()),
            ) else {
                return false;
            };
            if s(e, "/operator") == "Gt" {
                v > w
            } else {
                v < w
            }
        }
        _ => false,
    }
}

/// Whether a pod spec may run on a node (selector, required affinity, taints).
pub(crate) fn fits(pod_spec: &Value, node: &Value) -> bool {
    let node_labels = labels(node);
    let node_name = s(node, "/metadata/name");
    if let Some(sel) = pod_spec.get("nodeSelector").and_then(Value::as_object)
        && !sel
            .iter()
            .all(|(k, v)| node_labels.get(k).map(String::as_str) == v.as_str())
    {
        return false;
    }
    if let Some(terms) = pod_spec
        .pointer("/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms")
        .and_then(Value::as_array)
        && !terms.is_empty()
    {
        let any = terms.iter().any(|term| {
            let exprs = term
                .get("matchExpressions")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let fields = term
                .get("matchFields")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            exprs
                .iter()
                .all(|e| expr_ok(e, node_labels.get(s(e, "/key")).map(String::as_str)))
                && fields.iter().all(|e| {
                    let v = (s(e, "/key") == "metadata.name").then_some(node_name);
                    expr_ok(e, v)
                })
        });
        if !any {
            return false;
        }
    }
    let tolerations = pod_spec
        .get("tolerations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    taints_ok(node, &tolerations)
}

/// Tolerations the DaemonSet controller adds to every pod it creates.
fn daemon_tolerations() -> Vec<Value> {
    let mut v = vec![
        json!({"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"}),
        json!({"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"}),
    ];
    for k in [
        "disk-pressure",
        "memory-pressure",
        "pid-pressure",
        "unschedulable",
    ] {
        v.push(json!({"key": format!("node.kubernetes.io/{k}"), "operator": "Exists", "effect": "NoSchedule"}));
    }
    v
}

/// The host ports (port, protocol) a pod asks for.
fn host_ports(pod: &Value) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    for c in pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        for p in c
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(hp) = p.get("hostPort").and_then(Value::as_u64).filter(|h| *h > 0) {
                let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
                out.push((hp, proto.to_string()));
            }
        }
    }
    out
}

/// The node a pending pod is meant for (DaemonSet pods carry it in their affinity).
fn target_node(pod: &Value) -> Option<String> {
    let terms = pod
        .pointer("/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms")
        .and_then(Value::as_array)?;
    terms.iter().find_map(|t| {
        t.get("matchFields")
            .and_then(Value::as_array)?
            .iter()
            .find(|f| s(f, "/key") == "metadata.name" && s(f, "/operator") == "In")
            .and_then(|f| f.pointer("/values/0"))
            .and_then(Value::as_str)
            .map(String::from)
    })
}

fn owner_uid(pod: &Value) -> Option<&str> {
    pod.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)?
        .iter()
        .find(|r| r.get("controller") == Some(&json!(true)))
        .and_then(|r| r.get("uid"))
        .and_then(Value::as_str)
}

/// Runs the enabled controllers until the store's channel closes.
pub(crate) async fn run(store: Arc<Store>, sw: Switches) {
    let mut rx = store.subscribe();
    let mut ips = PodIps::default();
    reconcile(&store, sw, &mut ips);
    loop {
        // Changes wake the controllers; a slow tick drives what waits on time (namespaces
        // that terminate after a while).
        let woke = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await;
        match woke {
            Ok(Ok(c)) if !relevant(&c) => continue,
            Ok(Ok(_)) | Ok(Err(RecvError::Lagged(_))) | Err(_) => {}
            Ok(Err(RecvError::Closed)) => return,
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
        while let Ok(_) | Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) =
            rx.try_recv()
        {}
        reconcile(&store, sw, &mut ips);
    }
}

fn relevant(c: &Change) -> bool {
    matches!(
        c.storage,
        "nodes" | "pods" | "daemonsets" | "deployments" | "namespaces"
    ) || c.object.pointer("/metadata/deletionTimestamp").is_some()
}

#[derive(Default)]
struct PodIps {
    by_pod: HashMap<String, String>,
    next: u32,
}

impl PodIps {
    fn ip(&mut self, uid: &str) -> String {
        if let Some(ip) = self.by_pod.get(uid) {
            return ip.clone();
        }
        self.next += 1;
        let n = self.next;
        let ip = format!("10.42.{}.{}", (n >> 8) & 0xff, (n & 0xff).max(1));
        self.by_pod.insert(uid.to_string(), ip.clone());
        ip
    }
}

fn reconcile(store: &Store, sw: Switches, ips: &mut PodIps) {
    // The garbage collector and namespace controller run whatever the switches say, as
    // kube-controller-manager does beside any kubelet.
    for _ in 0..8 {
        if !store.collect_garbage() {
            break;
        }
    }
    crate::controllers::namespaces(store);
    if sw.daemonsets {
        crate::controllers::deployments(store);
    }
    let (Some(pod_kind), Some(ds_kind)) = (store.kind_of("pods"), store.kind_of("daemonsets"))
    else {
        return;
    };
    let nodes = store.snapshot("nodes");
    let node_by_name: HashMap<&str, &Value> = nodes
        .iter()
        .map(|n| (s(n, "/metadata/name"), n.as_ref()))
        .collect();
    if sw.daemonsets {
        let pods = store.snapshot("pods");
        let mut by_owner: HashMap<String, Vec<Arc<Value>>> = HashMap::new();
        for p in &pods {
            if let Some(uid) = owner_uid(p) {
                by_owner.entry(uid.to_string()).or_default().push(p.clone());
            }
        }
        for ds in store.snapshot("daemonsets") {
            if ds.pointer("/metadata/deletionTimestamp").is_some() {
                continue;
            }
            let uid = s(&ds, "/metadata/uid").to_string();
            let ns = s(&ds, "/metadata/namespace").to_string();
            let name = s(&ds, "/metadata/name").to_string();
            let generation = ds
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            let mut template_spec = ds
                .pointer("/spec/template/spec")
                .cloned()
                .unwrap_or(json!({}));
            let mut tol = template_spec
                .get("tolerations")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            tol.extend(daemon_tolerations());
            template_spec["tolerations"] = json!(tol);
            let desired: Vec<&str> = nodes
                .iter()
                .filter(|n| n.pointer("/metadata/deletionTimestamp").is_none())
                .filter(|n| fits(&template_spec, n))
                .map(|n| s(n, "/metadata/name"))
                .collect();
            let owned = by_owner.get(&uid).cloned().unwrap_or_default();
            let mut covered = HashSet::new();
            for p in &owned {
                let node = p
                    .pointer("/spec/nodeName")
                    .and_then(Value::as_str)
                    .map(String::from)
                    .or_else(|| target_node(p))
                    .unwrap_or_default();
                let gen_ok =
                    s(p, "/metadata/labels/pod-template-generation") == generation.to_string();
                let pname = s(p, "/metadata/name");
                if !desired.contains(&node.as_str()) || !gen_ok || covered.contains(&node) {
                    let _ = store.delete(
                        &pod_kind,
                        &ns,
                        pname,
                        &DeleteOptions::default(),
                        &WriteOptions::system(KCM),
                    );
                } else {
                    covered.insert(node);
                }
            }
            for node in &desired {
                if covered.contains(*node) {
                    continue;
                }
                let mut spec = template_spec.clone();
                spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] = json!({
                    "nodeSelectorTerms": [{"matchFields": [
                        {"key": "metadata.name", "operator": "In", "values": [node]}]}]});
                let mut meta_labels = ds
                    .pointer("/spec/template/metadata/labels")
                    .cloned()
                    .unwrap_or(json!({}));
                meta_labels["pod-template-generation"] = json!(generation.to_string());
                meta_labels["controller-revision-hash"] = json!(format!("{:x}", generation * 7919));
                let pod = json!({
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {
                        "generateName": format!("{name}-"), "namespace": ns,
                        "labels": meta_labels,
                        "annotations": ds.pointer("/spec/template/metadata/annotations").cloned().unwrap_or(json!({})),
                        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet",
                            "name": name, "uid": uid, "controller": true, "blockOwnerDeletion": true}],
                    },
                    "spec": spec,
                });
                let _ = store.create(&pod_kind, &ns, pod, &WriteOptions::system(KCM));
            }
        }
    }
    if sw.kubelet {
        schedule_and_run(store, &pod_kind, &node_by_name, ips);
    }
    if sw.daemonsets {
        ds_status(store, &ds_kind, &node_by_name);
    }
}

fn schedule_and_run(
    store: &Store,
    pod_kind: &crate::kinds::ResourceKind,
    nodes: &HashMap<&str, &Value>,
    ips: &mut PodIps,
) {
    let pods = store.snapshot("pods");
    let mut used: HashMap<String, HashSet<(u64, String)>> = HashMap::new();
    for p in &pods {
        if let Some(n) = p.pointer("/spec/nodeName").and_then(Value::as_str)
            && p.pointer("/metadata/deletionTimestamp").is_none()
        {
            used.entry(n.to_string()).or_default().extend(host_ports(p));
        }
    }
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let total = nodes.len();
    for p in &pods {
        let ns = s(p, "/metadata/namespace");
        let name = s(p, "/metadata/name");
        if p.pointer("/metadata/deletionTimestamp").is_some() {
            // Kubelet stops the containers and deletes the pod for good.
            if p.pointer("/metadata/finalizers").is_none() {
                let _ = store.delete(
                    pod_kind,
                    ns,
                    name,
                    &gone_now(),
                    &WriteOptions::system("kubelet"),
                );
            }
            continue;
        }
        let gated = p
            .pointer("/spec/schedulingGates")
            .and_then(Value::as_array)
            .is_some_and(|g| !g.is_empty());
        match p.pointer("/spec/nodeName").and_then(Value::as_str) {
            None | Some("") if gated => {}
            None | Some("") => {
                // Scheduling: the target node (DaemonSet pods) or any fitting ready node.
                let spec = p.get("spec").cloned().unwrap_or(json!({}));
                let wanted = host_ports(p);
                let candidates: Vec<&str> = match target_node(p) {
                    Some(t) => vec![nodes.keys().copied().find(|n| *n == t).unwrap_or("")],
                    None => {
                        let mut c: Vec<&str> = nodes.keys().copied().collect();
                        c.sort_unstable();
                        c
                    }
                };
                let chosen = candidates.iter().copied().find(|n| {
                    nodes.get(n).is_some_and(|node| fits(&spec, node))
                        && wanted
                            .iter()
                            .all(|hp| !used.get(*n).is_some_and(|u| u.contains(hp)))
                });
                match chosen {
                    Some(n) => {
                        used.entry(n.to_string()).or_default().extend(wanted);
                        let mut next = (**p).clone();
                        next["spec"]["nodeName"] = json!(n);
                        let _ = store.update(
                            pod_kind,
                            ns,
                            name,
                            next,
                            false,
                            &WriteOptions::system("kube-scheduler"),
                        );
                    }
                    None => {
                        let port_clash = candidates.iter().any(|n| {
                            wanted
                                .iter()
                                .any(|hp| used.get(*n).is_some_and(|u| u.contains(hp)))
                        });
                        let msg = if port_clash {
                            format!(
                                "0/{total} nodes are available: 1 node(s) didn't have free ports for the requested pod ports."
                            )
                        } else {
                            format!(
                                "0/{total} nodes are available: {} node(s) didn't match Pod's node affinity/selector.",
                                total
                            )
                        };
                        let cond = json!([{"type": "PodScheduled", "status": "False",
                            "reason": "Unschedulable", "message": msg,
                            "lastTransitionTime": p.pointer("/status/conditions/0/lastTransitionTime").cloned().unwrap_or(json!(now))}]);
                        if p.pointer("/status/conditions") != Some(&cond) {
                            let mut next = (**p).clone();
                            next["status"]["phase"] = json!("Pending");
                            next["status"]["conditions"] = cond;
                            let _ = store.update(
                                pod_kind,
                                ns,
                                name,
                                next,
                                true,
                                &WriteOptions::system("kube-scheduler"),
                            );
                        }
                    }
                }
            }
            Some(node_name) => {
                let Some(node) = nodes.get(node_name) else {
                    // Pod garbage collection for pods bound to a node that is gone.
                    let _ =
                        store.delete(pod_kind, ns, name, &gone_now(), &WriteOptions::system(KCM));
                    continue;
                };
                let ready = node_ready(node);
                let ready_s = if ready { "True" } else { "False" };
                let node_ips: Vec<String> = node
                    .pointer("/status/addresses")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter(|x| x["type"] == "InternalIP")
                            .filter_map(|x| x["address"].as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                let host_network = p.pointer("/spec/hostNetwork") == Some(&json!(true));
                let pod_ip = if host_network {
                    node_ips.first().cloned().unwrap_or_default()
                } else {
                    ips.ip(s(p, "/metadata/uid"))
                };
                let keep_time = |t: &str| {
                    p.pointer("/status/conditions")
                        .and_then(Value::as_array)
                        .and_then(|cs| cs.iter().find(|c| c["type"] == t))
                        .filter(|c| {
                            c["status"]
                                == if t == "Ready" || t == "ContainersReady" {
                                    ready_s
                                } else {
                                    "True"
                                }
                        })
                        .and_then(|c| c.get("lastTransitionTime").cloned())
                        .unwrap_or(json!(now))
                };
                let containers: Vec<Value> = p
                    .pointer("/spec/containers")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .map(|c| json!({"name": c["name"], "image": c["image"], "imageID": "",
                        "ready": ready, "started": true, "restartCount": 0,
                        "state": {"running": {"startedAt": p.pointer("/status/startTime").cloned().unwrap_or(json!(now))}}}))
                    .collect();
                let mut status = json!({
                    "phase": "Running",
                    "conditions": [
                        {"type": "PodScheduled", "status": "True", "lastTransitionTime": keep_time("PodScheduled")},
                        {"type": "Initialized", "status": "True", "lastTransitionTime": keep_time("Initialized")},
                        {"type": "ContainersReady", "status": ready_s, "lastTransitionTime": keep_time("ContainersReady")},
                        {"type": "Ready", "status": ready_s, "lastTransitionTime": keep_time("Ready")},
                    ],
                    "hostIP": node_ips.first().cloned().unwrap_or_default(),
                    "hostIPs": node_ips.iter().map(|ip| json!({"ip": ip})).collect::<Vec<_>>(),
                    "podIP": pod_ip,
                    "podIPs": [{"ip": pod_ip}],
                    "startTime": p.pointer("/status/startTime").cloned().unwrap_or(json!(now)),
                    "containerStatuses": containers,
                    "qosClass": "BestEffort",
                });
                if host_network {
                    status["podIPs"] = json!(
                        node_ips
                            .iter()
                            .map(|ip| json!({"ip": ip}))
                            .collect::<Vec<_>>()
                    );
                }
                if p.get("status") != Some(&status) {
                    let mut next = (**p).clone();
                    next["status"] = status;
                    let _ = store.update(
                        pod_kind,
                        ns,
                        name,
                        next,
                        true,
                        &WriteOptions::system("kubelet"),
                    );
                }
            }
        }
    }
}

fn ds_status(store: &Store, ds_kind: &crate::kinds::ResourceKind, nodes: &HashMap<&str, &Value>) {
    let pods = store.snapshot("pods");
    for ds in store.snapshot("daemonsets") {
        let uid = s(&ds, "/metadata/uid");
        let generation = ds
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        let owned: Vec<&Arc<Value>> = pods.iter().filter(|p| owner_uid(p) == Some(uid)).collect();
        let mut template_spec = ds
            .pointer("/spec/template/spec")
            .cloned()
            .unwrap_or(json!({}));
        let mut tol = template_spec
            .get("tolerations")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        tol.extend(daemon_tolerations());
        template_spec["tolerations"] = json!(tol);
        let desired = nodes.values().filter(|n| fits(&template_spec, n)).count();
        let scheduled = owned
            .iter()
            .filter(|p| {
                p.pointer("/spec/nodeName")
                    .and_then(Value::as_str)
                    .is_some_and(|n| !n.is_empty())
            })
            .count();
        let ready = owned
            .iter()
            .filter(|p| {
                p.pointer("/status/conditions")
                    .and_then(Value::as_array)
                    .is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c["type"] == "Ready" && c["status"] == "True")
                    })
            })
            .count();
        let updated = owned
            .iter()
            .filter(|p| s(p, "/metadata/labels/pod-template-generation") == generation.to_string())
            .count();
        // DaemonSetStatus: the first four are rendered even when 0, the rest omitted.
        let mut status = json!({
            "currentNumberScheduled": scheduled, "desiredNumberScheduled": desired,
            "numberMisscheduled": 0, "numberReady": ready, "observedGeneration": generation,
        });
        for (k, v) in [
            ("numberAvailable", ready),
            ("numberUnavailable", desired.saturating_sub(ready)),
            ("updatedNumberScheduled", updated),
        ] {
            if v > 0 {
                status[k] = json!(v);
            }
        }
        if ds.get("status") != Some(&status) {
            let mut next = (*ds).clone();
            next["status"] = status;
            let _ = store.update(
                ds_kind,
                s(&ds, "/metadata/namespace"),
                s(&ds, "/metadata/name"),
                next,
                true,
                &WriteOptions::system(KCM),
            );
        }
    }
}
