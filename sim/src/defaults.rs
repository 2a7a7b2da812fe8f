//! Scheme defaulting, as the real server applies it when it decodes a request body
//! (`pkg/apis/core/v1/defaults.go`, `pkg/apis/apps/v1/defaults.go` and the generated
//! `+default` markers, Kubernetes v1.37.2): before the field manager runs, so the writer owns
//! what was defaulted, unlike what the registry sets afterwards (allocations, status).
//!
//! Also the empty object of each kind as the real server renders a zero value (non-pointer
//! structs present, nil lists of non-omitempty fields as `null`): what a create is compared
//! against to attribute its fields.

use serde_json::{Value, json};

fn set_default(obj: &mut Value, key: &str, v: Value) {
    if let Some(m) = obj.as_object_mut()
        && m.get(key).is_none_or(Value::is_null)
    {
        m.insert(key.to_string(), v);
    }
}

fn each<'a>(v: &'a mut Value, key: &str) -> impl Iterator<Item = &'a mut Value> {
    v.get_mut(key)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
}

/// Applies the scheme defaults of resource `storage` to `obj` (core form).
pub fn apply(storage: &str, obj: &mut Value) {
    match storage {
        "services" => crate::services::scheme_defaults(obj),
        "pods" => {
            if let Some(spec) = obj.get_mut("spec") {
                pod_spec(spec, true);
            }
        }
        "deployments" => {
            let Some(spec) = obj.get_mut("spec").filter(|s| s.is_object()) else {
                return;
            };
            set_default(spec, "replicas", json!(1));
            set_default(spec, "revisionHistoryLimit", json!(10));
            set_default(spec, "progressDeadlineSeconds", json!(600));
            set_default(spec, "strategy", json!({}));
            let strategy = &mut spec["strategy"];
            set_default(strategy, "type", json!("RollingUpdate"));
            if strategy["type"] == "RollingUpdate" {
                set_default(strategy, "rollingUpdate", json!({}));
                set_default(
                    &mut strategy["rollingUpdate"],
                    "maxUnavailable",
                    json!("25%"),
                );
                set_default(&mut strategy["rollingUpdate"], "maxSurge", json!("25%"));
            }
            template(spec);
        }
        "daemonsets" => {
            if obj.get("metadata").is_some_and(Value::is_object)
                && obj
                    .pointer("/metadata/annotations/deprecated.daemonset.template.generation")
                    .is_none()
            {
                set_default(&mut obj["metadata"], "annotations", json!({}));
                obj["metadata"]["annotations"]["deprecated.daemonset.template.generation"] =
                    json!("1");
            }
            let Some(spec) = obj.get_mut("spec").filter(|s| s.is_object()) else {
                return;
            };
            set_default(spec, "revisionHistoryLimit", json!(10));
            set_default(spec, "updateStrategy", json!({}));
            let strategy = &mut spec["updateStrategy"];
            set_default(strategy, "type", json!("RollingUpdate"));
            if strategy["type"] == "RollingUpdate" {
                set_default(strategy, "rollingUpdate", json!({}));
                set_default(&mut strategy["rollingUpdate"], "maxUnavailable", json!(1));
                set_default(&mut strategy["rollingUpdate"], "maxSurge", json!(0));
            }
            template(spec);
        }
        "secrets" => {
            // stringData is folded into data when the body is decoded, so the writer owns
            // data keys in managedFields.
            crate::store::fold_string_data(obj);
            set_default(obj, "type", json!("Opaque"));
        }
        "namespaces" => {
            let name = obj
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if !name.is_empty() && obj.get("metadata").is_some_and(Value::is_object) {
                set_default(&mut obj["metadata"], "labels", json!({}));
                obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
            }
        }
        "endpoints" => {
            for subset in each(obj, "subsets") {
                for p in each(subset, "ports") {
                    set_default(p, "protocol", json!("TCP"));
                }
            }
        }
        "endpointslices" => {
            for p in each(obj, "ports") {
                set_default(p, "protocol", json!("TCP"));
            }
        }
        "rolebindings" | "clusterrolebindings" => {
            for s in each(obj, "subjects") {
                let kind = s.get("kind").and_then(Value::as_str).unwrap_or("");
                if matches!(kind, "User" | "Group") {
                    set_default(s, "apiGroup", json!("rbac.authorization.k8s.io"));
                }
            }
        }
        _ => {}
    }
}

fn template(spec: &mut Value) {
    if let Some(pod) = spec.pointer_mut("/template/spec")
        && pod.is_object()
    {
        pod_spec(pod, false);
    }
}

/// PodSpec, Container and ContainerPort defaults; `pod` adds what only a Pod gets
/// (`SetDefaults_Pod`: enableServiceLinks, hostNetwork ports).
fn pod_spec(spec: &mut Value, pod: bool) {
    if !spec.is_object() {
        return;
    }
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "securityContext", json!({}));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    if let Some(sa) = spec.get("serviceAccountName").cloned() {
        spec["serviceAccount"] = sa;
    } else if let Some(sa) = spec.get("serviceAccount").cloned() {
        spec["serviceAccountName"] = sa;
    }
    if pod {
        set_default(spec, "enableServiceLinks", json!(true));
    }
    let host_network = spec.get("hostNetwork") == Some(&json!(true));
    for list in ["containers", "initContainers"] {
        for c in each(spec, list) {
            container(c, host_network && pod);
        }
    }
}

fn container(c: &mut Value, host_network: bool) {
    if c.get("imagePullPolicy").is_none() {
        let image = c.get("image").and_then(Value::as_str).unwrap_or("");
        // parsers.ParseImageName: no tag and no digest is `latest`.
        let last = image.rsplit('/').next().unwrap_or("");
        let tag = if image.contains('@') {
            ""
        } else {
            last.split_once(':').map(|(_, t)| t).unwrap_or("latest")
        };
        let policy = if tag == "latest" {
            "Always"
        } else {
            "IfNotPresent"
        };
        c["imagePullPolicy"] = json!(policy);
    }
    set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
    set_default(c, "terminationMessagePolicy", json!("File"));
    set_default(c, "resources", json!({}));
    for p in each(c, "ports") {
        set_default(p, "protocol", json!("TCP"));
        if host_network && p.get("hostPort").is_none() {
            let port = p.get("containerPort").cloned().unwrap_or(json!(0));
            p["hostPort"] = port;
        }
    }
}

/// The zero value of a kind as the real server renders it: what a create is compared to.
pub fn empty_object(storage: &str) -> Value {
    let mut o = json!({"metadata": {"creationTimestamp": null}});
    match storage {
        "services" => {
            o["spec"] = json!({});
            o["status"] = json!({"loadBalancer": {}});
        }
        "pods" => {
            o["spec"] = json!({"containers": null});
            o["status"] = json!({});
        }
        "deployments" | "daemonsets" => {
            let strategy = if storage == "deployments" {
                "strategy"
            } else {
                "updateStrategy"
            };
            o["spec"] = json!({"selector": null, "template": {
                "metadata": {"creationTimestamp": null}, "spec": {"containers": null}},
                strategy: {}});
            o["status"] = json!({});
        }
        "namespaces" | "nodes" => {
            o["spec"] = json!({});
            o["status"] = json!({});
        }
        "leases" => o["spec"] = json!({}),
        "endpointslices" => {
            o["endpoints"] = Value::Null;
            o["ports"] = Value::Null;
        }
        "events" => {
            o["involvedObject"] = json!({});
            o["source"] = json!({});
            o["firstTimestamp"] = Value::Null;
            o["lastTimestamp"] = Value::Null;
            o["eventTime"] = Value::Null;
        }
        "roles" | "clusterroles" => o["rules"] = Value::Null,
        "rolebindings" | "clusterrolebindings" => {
            o["roleRef"] = json!({"apiGroup": "", "kind": "", "name": ""});
        }
        _ => {}
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_and_template_defaults() {
        let mut pod = json!({"spec": {"containers": [{"name": "a", "image": "nginx",
            "ports": [{"containerPort": 80}]}, {"name": "b", "image": "x:1.2"}]}});
        apply("pods", &mut pod);
        assert_eq!(pod["spec"]["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(
            pod["spec"]["containers"][1]["imagePullPolicy"],
            "IfNotPresent"
        );
        assert_eq!(pod["spec"]["containers"][0]["ports"][0]["protocol"], "TCP");
        assert_eq!(pod["spec"]["enableServiceLinks"], true);
        let mut d = json!({"spec": {"template": {"spec": {"containers": [{"name": "a",
            "image": "nginx:1"}]}}}});
        apply("deployments", &mut d);
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        assert!(
            d["spec"]["template"]["spec"]
                .get("enableServiceLinks")
                .is_none()
        );
    }
}
