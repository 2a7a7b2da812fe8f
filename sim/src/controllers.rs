//! The simulated kube-controller-manager controllers beside the DaemonSet one
//! ([`crate::workloads`]): the ServiceAccount controller and root CA publisher (every
//! namespace gets a `default` ServiceAccount and the `kube-root-ca.crt` ConfigMap) and a
//! Deployment controller that runs a Deployment's pods itself (no ReplicaSets: the README
//! lists it) and reports the status kubectl reads (`READY`, `Available`).

use crate::deletion::DeleteOptions;
use crate::registry::WriteOptions;
use crate::store::Store;
use serde_json::{Value, json};
use std::sync::Arc;

const KCM: &str = "kube-controller-manager";
const CA_DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";
/// The sim serves plain HTTP; the ConfigMap still carries a certificate-shaped bundle so
/// that pods (and tools) that mount it find what they expect.
const CA_PLACEHOLDER: &str = "-----BEGIN CERTIFICATE-----\nportway-sim serves plain HTTP: no CA\n-----END CERTIFICATE-----\n";

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

/// Every active namespace has its `default` ServiceAccount and `kube-root-ca.crt`.
pub(crate) fn namespaces(store: &Store) {
    let (Some(sa), Some(cm)) = (
        store.kind_of("serviceaccounts"),
        store.kind_of("configmaps"),
    ) else {
        return;
    };
    let opts = WriteOptions::system(KCM);
    for ns in store.snapshot("namespaces") {
        if ns.pointer("/metadata/deletionTimestamp").is_some() {
            continue;
        }
        let name = s(&ns, "/metadata/name");
        if store.get(&sa, name, "default").is_err() {
            let _ = store.create(&sa, name, json!({"metadata": {"name": "default"}}), &opts);
        }
        if store.get(&cm, name, "kube-root-ca.crt").is_err() {
            let obj = json!({"metadata": {"name": "kube-root-ca.crt",
                "annotations": {"kubernetes.io/description": CA_DESCRIPTION}},
                "data": {"ca.crt": CA_PLACEHOLDER}});
            let _ = store.create(&cm, name, obj, &opts);
        }
    }
}

fn owned_by(pod: &Value, uid: &str) -> bool {
    pod.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|r| r.iter().any(|o| o["uid"] == uid && o["controller"] == true))
}

fn ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// Runs each Deployment's replicas as pods it owns and reports its status.
pub(crate) fn deployments(store: &Store) {
    let (Some(dk), Some(pk)) = (store.kind_of("deployments"), store.kind_of("pods")) else {
        return;
    };
    let opts = WriteOptions::system(KCM);
    let pods = store.snapshot("pods");
    for d in store.snapshot("deployments") {
        if d.pointer("/metadata/deletionTimestamp").is_some() {
            continue;
        }
        let (ns, name, uid) = (
            s(&d, "/metadata/namespace").to_string(),
            s(&d, "/metadata/name").to_string(),
            s(&d, "/metadata/uid").to_string(),
        );
        let want = d
            .pointer("/spec/replicas")
            .and_then(Value::as_u64)
            .unwrap_or(1) as usize;
        let mine: Vec<&Arc<Value>> = pods
            .iter()
            .filter(|p| owned_by(p, &uid) && p.pointer("/metadata/deletionTimestamp").is_none())
            .collect();
        let hash = format!(
            "{:x}",
            uid.bytes()
                .fold(7u32, |h, b| h.wrapping_mul(31) ^ u32::from(b))
                & 0xffffff
        );
        for _ in mine.len()..want {
            let mut labels = d
                .pointer("/spec/template/metadata/labels")
                .cloned()
                .unwrap_or(json!({}));
            labels["pod-template-hash"] = json!(hash);
            let pod = json!({"metadata": {"generateName": format!("{name}-{hash}-"),
                "labels": labels,
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": name,
                    "uid": uid, "controller": true, "blockOwnerDeletion": true}]},
                "spec": d.pointer("/spec/template/spec").cloned().unwrap_or(json!({}))});
            let _ = store.create(&pk, &ns, pod, &opts);
        }
        for extra in mine.iter().skip(want) {
            let _ = store.delete(
                &pk,
                &ns,
                s(extra, "/metadata/name"),
                &DeleteOptions::default(),
                &opts,
            );
        }
        let count = mine.len().min(want);
        let ready_n = mine.iter().take(want).filter(|p| ready(p)).count();
        let generation = d
            .pointer("/metadata/generation")
            .cloned()
            .unwrap_or(json!(1));
        let now = crate::store::now();
        let keep = |t: &str, status: &str| {
            d.pointer("/status/conditions")
                .and_then(Value::as_array)
                .and_then(|cs| cs.iter().find(|c| c["type"] == t && c["status"] == status))
                .and_then(|c| c.get("lastTransitionTime").cloned())
                .unwrap_or(json!(now))
        };
        let available = ready_n >= want;
        let (a_status, a_reason, a_msg) = if available {
            (
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.",
            )
        } else {
            (
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
            )
        };
        let mut status = json!({"observedGeneration": generation, "terminatingReplicas": 0, "conditions": [
            {"type": "Available", "status": a_status, "reason": a_reason, "message": a_msg,
                "lastUpdateTime": keep("Available", a_status), "lastTransitionTime": keep("Available", a_status)},
            {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
                "message": format!("ReplicaSet \"{name}-{hash}\" has successfully progressed."),
                "lastUpdateTime": keep("Progressing", "True"), "lastTransitionTime": keep("Progressing", "True")}]});
        for (k, v) in [
            ("replicas", count),
            ("updatedReplicas", count),
            ("readyReplicas", ready_n),
            ("availableReplicas", ready_n),
            ("unavailableReplicas", want.saturating_sub(ready_n)),
        ] {
            if v > 0 {
                status[k] = json!(v);
            }
        }
        let mut next = (*d).clone();
        next["status"] = status;
        if next
            .pointer("/metadata/annotations/deployment.kubernetes.io~1revision")
            .is_none()
        {
            next["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = json!("1");
            let mut meta_only = (*d).clone();
            meta_only["metadata"] = next["metadata"].clone();
            let _ = store.update(&dk, &ns, &name, meta_only, false, &opts);
        }
        if d.get("status") != next.get("status") {
            if let Some(m) = next["metadata"].as_object_mut() {
                m.remove("resourceVersion");
            }
            let _ = store.update(&dk, &ns, &name, next, true, &opts);
        }
    }
}
