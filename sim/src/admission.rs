//! What the real server does to some kinds between decoding and storing, beyond defaulting:
//! the admission plugins on pods (ServiceAccount, Priority, DefaultTolerationSeconds), the
//! registry strategies that set fields (`PodScheduled=SchedulingGated`, a DaemonSet's
//! template generation annotation, a node's allocatable), and the update validations that
//! refuse changes to immutable fields — with the real server's causes.

use crate::error::{ApiError, Cause};
use crate::service_validation::{forbidden, invalid, required};
use serde_json::{Value, json};

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| ALPHABET[rand::random::<u32>() as usize % ALPHABET.len()] as char)
        .collect()
}

/// Registry and admission changes to a new object (create).
pub fn on_create(storage: &str, obj: &mut Value, now: &str) {
    match storage {
        "pods" => pod(obj, now),
        "nodes" => node_status(obj),
        "events" => event(obj),
        _ => {}
    }
}

/// Registry changes to an updated object.
pub fn on_update(storage: &str, next: &mut Value, current: &Value) {
    match storage {
        "daemonsets" if next.pointer("/spec/template") != current.pointer("/spec/template") => {
            let g = s(
                current,
                "/metadata/annotations/deprecated.daemonset.template.generation",
            )
            .parse::<i64>()
            .unwrap_or(1);
            next["metadata"]["annotations"]["deprecated.daemonset.template.generation"] =
                json!((g + 1).to_string());
        }
        "nodes" => node_status(next),
        "events" => event(next),
        _ => {}
    }
}

/// Go renders a core Event's non-omitempty fields even when unset.
fn event(obj: &mut Value) {
    for (k, v) in [
        ("eventTime", Value::Null),
        ("firstTimestamp", Value::Null),
        ("lastTimestamp", Value::Null),
        ("reportingComponent", json!("")),
        ("reportingInstance", json!("")),
    ] {
        if obj.get(k).is_none() {
            obj[k] = v;
        }
    }
    if obj.get("source").is_none() {
        obj["source"] = json!({});
    }
}

/// `SetDefaults_NodeStatus`: allocatable is capacity unless reported.
fn node_status(obj: &mut Value) {
    if obj.pointer("/status/allocatable").is_none()
        && let Some(cap) = obj.pointer("/status/capacity").cloned()
    {
        obj["status"]["allocatable"] = cap;
    }
}

/// ServiceAccount, Priority and DefaultTolerationSeconds admission, and the pod strategy's
/// `PodScheduled=SchedulingGated` condition.
fn pod(obj: &mut Value, now: &str) {
    let Some(spec) = obj.get_mut("spec").filter(|s| s.is_object()) else {
        return;
    };
    if s(spec, "/serviceAccountName").is_empty() {
        spec["serviceAccountName"] = json!("default");
    }
    spec["serviceAccount"] = spec["serviceAccountName"].clone();
    if spec.get("automountServiceAccountToken") != Some(&json!(false)) {
        let name = format!("kube-api-access-{}", random_suffix());
        let mount = json!({"mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
            "name": name, "readOnly": true});
        for list in ["containers", "initContainers"] {
            if let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) {
                for c in cs {
                    match c.get_mut("volumeMounts").and_then(Value::as_array_mut) {
                        Some(m) => m.push(mount.clone()),
                        None => c["volumeMounts"] = json!([mount.clone()]),
                    }
                }
            }
        }
        let volume = json!({"name": name, "projected": {"defaultMode": 420, "sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"items": [{"key": "ca.crt", "path": "ca.crt"}], "name": "kube-root-ca.crt"}},
            {"downwardAPI": {"items": [{"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}, "path": "namespace"}]}}]}});
        match spec.get_mut("volumes").and_then(Value::as_array_mut) {
            Some(v) => v.push(volume),
            None => spec["volumes"] = json!([volume]),
        }
    }
    if spec.get("priority").is_none() {
        spec["priority"] = json!(0);
    }
    if spec.get("preemptionPolicy").is_none() {
        spec["preemptionPolicy"] = json!("PreemptLowerPriority");
    }
    let mut tolerations: Vec<Value> = spec
        .get("tolerations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        let has = tolerations.iter().any(|t| {
            s(t, "/key") == key || (s(t, "/key").is_empty() && s(t, "/operator") == "Exists")
        });
        if !has {
            tolerations.push(
                json!({"effect": "NoExecute", "key": key, "operator": "Exists",
                "tolerationSeconds": 300}),
            );
        }
    }
    spec["tolerations"] = json!(tolerations);
    let gated = spec
        .get("schedulingGates")
        .and_then(Value::as_array)
        .is_some_and(|g| !g.is_empty());
    if gated {
        obj["status"]["conditions"] = json!([{"type": "PodScheduled", "status": "False",
            "reason": "SchedulingGated",
            "message": "Scheduling is blocked due to non-empty scheduling gates",
            "lastProbeTime": null, "lastTransitionTime": now}]);
    }
}

/// Update validations of fields a kind does not let change.
pub fn validate_update(
    kind: &str,
    storage: &str,
    name: &str,
    next: &Value,
    current: &Value,
) -> Result<(), ApiError> {
    let mut errs: Vec<Cause> = Vec::new();
    match storage {
        "rolebindings" | "clusterrolebindings" if next.get("roleRef") != current.get("roleRef") => {
            let r = next.get("roleRef").cloned().unwrap_or(Value::Null);
            let go = json!({"APIGroup": s(&r, "/apiGroup"), "Kind": s(&r, "/kind"), "Name": s(&r, "/name")});
            errs.push(invalid("roleRef", &go, "field is immutable"));
        }
        "secrets" => {
            let ty = s(next, "/type");
            if ty != s(current, "/type") {
                errs.push(invalid("type", &json!(ty), "field is immutable"));
            }
            if ty == "kubernetes.io/tls" {
                for key in ["tls.crt", "tls.key"] {
                    if next
                        .pointer(&format!("/data/{}", key.replace('/', "~1")))
                        .is_none()
                    {
                        errs.push(required(format!("data[{key}]"), ""));
                    }
                }
            }
        }
        "endpointslices" if next.get("addressType") != current.get("addressType") => {
            errs.push(invalid("addressType", &Value::Null, "field is immutable"));
        }
        "pods" => {
            // Binding an unscheduled pod (the scheduler's `pods/binding`) sets nodeName.
            let binding = s(current, "/spec/nodeName").is_empty();
            let strip = |v: &Value| {
                let mut spec = v.get("spec").cloned().unwrap_or(json!({}));
                for list in ["containers", "initContainers"] {
                    if let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) {
                        for c in cs {
                            if let Some(m) = c.as_object_mut() {
                                m.remove("image");
                            }
                        }
                    }
                }
                if let Some(m) = spec.as_object_mut() {
                    for f in [
                        "activeDeadlineSeconds",
                        "tolerations",
                        "terminationGracePeriodSeconds",
                        "schedulingGates",
                    ] {
                        m.remove(f);
                    }
                    if binding {
                        m.remove("nodeName");
                    }
                }
                spec
            };
            if strip(next) != strip(current) {
                errs.push(forbidden(
                    "spec",
                    "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
                ));
            }
        }
        _ => {}
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(kind, name, errs))
    }
}

/// A workload's selector must select its template (apps validation).
pub fn validate_workload(kind: &str, name: &str, obj: &Value) -> Result<(), ApiError> {
    let Some(match_labels) = obj
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
    else {
        return Ok(());
    };
    let labels = obj
        .pointer("/spec/template/metadata/labels")
        .cloned()
        .unwrap_or(json!({}));
    let selects = match_labels.iter().all(|(k, v)| labels.get(k) == Some(v));
    if selects {
        return Ok(());
    }
    Err(ApiError::invalid(
        kind,
        name,
        vec![invalid(
            "spec.template.metadata.labels",
            &labels,
            "`selector` does not match template `labels`",
        )],
    ))
}
