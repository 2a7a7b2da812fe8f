//! The four patch types of the API server: JSON merge (RFC 7386), JSON patch (RFC 6902, via
//! the `json-patch` crate), strategic merge and (approximated) server-side apply.
//!
//! Strategic merge is hand-written because no maintained Rust crate implements it: it needs
//! the Kubernetes type metadata (which lists merge by which key), kept here as a small table
//! of the fields the simulated kinds use. Lists without a merge key are replaced, as the real
//! server does for them. Server-side apply is approximated as a strategic merge of the applied
//! configuration onto the live object, owned by the field manager; field ownership and
//! conflict detection are not modelled (the README says so).

use serde_json::{Map, Value};

/// Which patch a request carries, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/merge-patch+json`
    Merge,
    /// `application/json-patch+json`
    Json,
    /// `application/strategic-merge-patch+json`
    Strategic,
    /// `application/apply-patch+yaml` (server-side apply)
    Apply,
}

impl PatchType {
    /// The patch type of a content type, or `None` (415 Unsupported Media Type).
    pub fn from_content_type(ct: &str) -> Option<Self> {
        let ct = ct.split(';').next().unwrap_or("").trim();
        Some(match ct {
            "application/merge-patch+json" => PatchType::Merge,
            "application/json-patch+json" => PatchType::Json,
            "application/strategic-merge-patch+json" => PatchType::Strategic,
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => PatchType::Apply,
            _ => return None,
        })
    }
}

/// Decodes a patch body as the real server does: apply configurations are YAML (JSON is
/// YAML), the others JSON of the right shape (`400` otherwise).
pub fn decode(ty: PatchType, body: &[u8]) -> Result<Value, crate::error::ApiError> {
    use crate::error::ApiError;
    if ty == PatchType::Apply {
        return serde_yaml::from_slice::<Value>(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")));
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    match (ty, &v) {
        (PatchType::Json, Value::Array(_)) => Ok(v),
        (PatchType::Json, other) => Err(ApiError::bad_request(format!(
            "error decoding patch: json: cannot unmarshal {} into Go value of type jsonpatch.Patch",
            go_kind(other)
        ))),
        (_, Value::Object(_)) => Ok(v),
        (_, other) => Err(ApiError::bad_request(format!(
            "error decoding patch: json: cannot unmarshal {} into Go value of type map[string]interface {{}}",
            go_kind(other)
        ))),
    }
}

fn go_kind(v: &Value) -> &'static str {
    match v {
        Value::Array(_) => "array",
        Value::Object(_) => "object",
        Value::String(_) => "string",
        Value::Number(_) => "number",
        Value::Bool(_) => "bool",
        Value::Null => "null",
    }
}

/// Applies `patch` (already parsed) of type `ty` to `target`; the error text becomes a 422.
pub fn apply(target: &mut Value, ty: PatchType, patch: &Value) -> Result<(), String> {
    match ty {
        PatchType::Merge => {
            if !patch.is_object() {
                return Err("a merge patch must be a JSON object".into());
            }
            json_patch::merge(target, patch);
            Ok(())
        }
        PatchType::Json => {
            let p: json_patch::Patch = serde_json::from_value(patch.clone())
                .map_err(|e| format!("invalid JSON patch: {e}"))?;
            json_patch::patch(target, &p).map_err(|e| format!("the JSON patch failed: {e}"))
        }
        PatchType::Strategic | PatchType::Apply => {
            if !patch.is_object() {
                return Err("a strategic merge patch must be a JSON object".into());
            }
            strategic(target, patch, &mut Vec::new());
            Ok(())
        }
    }
}

/// How a list field merges.
enum ListMerge {
    /// Replace the whole list (no patch strategy).
    Replace,
    /// Merge maps by this key.
    ByKey(&'static str),
    /// Union of primitive values.
    Primitive,
}

/// The merge strategy of the list at `path` (field names from the root, indices omitted).
fn list_merge(path: &[String]) -> ListMerge {
    let last = path.last().map(String::as_str).unwrap_or("");
    let parent = path
        .len()
        .checked_sub(2)
        .map(|i| path[i].as_str())
        .unwrap_or("");
    match last {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets" => ListMerge::ByKey("name"),
        "ports"
            if matches!(
                parent,
                "containers" | "initContainers" | "ephemeralContainers"
            ) =>
        {
            ListMerge::ByKey("containerPort")
        }
        "ports" if parent == "spec" => ListMerge::ByKey("port"),
        "volumeMounts" => ListMerge::ByKey("mountPath"),
        "volumeDevices" => ListMerge::ByKey("devicePath"),
        "conditions" => ListMerge::ByKey("type"),
        // NodeStatus.addresses really merges by type: the source of the upstream bug that
        // makes CCMs replace addresses as a whole. Reproduced on purpose.
        "addresses" if parent == "status" && path.len() == 2 => ListMerge::ByKey("type"),
        "ownerReferences" => ListMerge::ByKey("uid"),
        "hostAliases" => ListMerge::ByKey("ip"),
        "topologySpreadConstraints" => ListMerge::ByKey("topologyKey"),
        "finalizers" if parent == "metadata" => ListMerge::Primitive,
        _ => ListMerge::Replace,
    }
}

fn strategic(target: &mut Value, patch: &Value, path: &mut Vec<String>) {
    let Some(pmap) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if pmap.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut m = pmap.clone();
        m.remove("$patch");
        *target = Value::Object(m);
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Some(tmap) = target.as_object_mut() else {
        return;
    };
    for (k, pv) in pmap {
        if k == "$patch" || k == "$retainKeys" || k.starts_with("$setElementOrder/") {
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Some(del)) = (tmap.get_mut(field), pv.as_array()) {
                list.retain(|x| !del.contains(x));
            }
            continue;
        }
        if pv.is_null() {
            tmap.remove(k);
            continue;
        }
        path.push(k.clone());
        match pv {
            Value::Object(inner) => {
                if inner.get("$patch").and_then(Value::as_str) == Some("delete") {
                    tmap.remove(k);
                } else {
                    let slot = tmap.entry(k.clone()).or_insert(Value::Null);
                    strategic(slot, pv, path);
                }
            }
            Value::Array(items) => {
                let merged = merge_list(tmap.get(k), items, path);
                tmap.insert(k.clone(), merged);
            }
            _ => {
                tmap.insert(k.clone(), pv.clone());
            }
        }
        path.pop();
    }
}

fn merge_list(current: Option<&Value>, items: &[Value], path: &mut Vec<String>) -> Value {
    let cur: Vec<Value> = current
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    match list_merge(path) {
        ListMerge::Replace => Value::Array(
            items
                .iter()
                .filter(|i| i.get("$patch").is_none())
                .cloned()
                .collect(),
        ),
        ListMerge::Primitive => {
            let patch: Vec<Value> = items.iter().filter(|i| !cur.contains(i)).cloned().collect();
            let server_only: Vec<Value> =
                cur.iter().filter(|i| !items.contains(i)).cloned().collect();
            let mut shared: Vec<Value> =
                items.iter().filter(|i| cur.contains(i)).cloned().collect();
            shared.extend(patch);
            Value::Array(merge_sorted(server_only, shared, &cur, |v| v.clone()))
        }
        ListMerge::ByKey(key) => {
            if items
                .iter()
                .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
            {
                return Value::Array(
                    items
                        .iter()
                        .filter(|i| i.get("$patch").is_none())
                        .cloned()
                        .collect(),
                );
            }
            let id = |v: &Value| v.get(key).cloned().unwrap_or(Value::Null);
            let mut merged = Vec::new();
            let mut deleted = Vec::new();
            for item in items {
                if item.get("$patch").and_then(Value::as_str) == Some("delete") {
                    deleted.push(id(item));
                    continue;
                }
                let mut out = cur
                    .iter()
                    .find(|o| id(o) == id(item))
                    .cloned()
                    .unwrap_or_else(|| Value::Object(Map::new()));
                strategic(&mut out, item, path);
                merged.push(out);
            }
            let server_only: Vec<Value> = cur
                .iter()
                .filter(|o| !deleted.contains(&id(o)) && !merged.iter().any(|m| id(m) == id(o)))
                .cloned()
                .collect();
            Value::Array(merge_sorted(server_only, merged, &cur, id))
        }
    }
}

/// strategicpatch `mergeSortedSlice`: server-only items and patched items interleaved so
/// that items the server had keep their order, and new items come before the server-only
/// items they are compared with.
fn merge_sorted(
    left: Vec<Value>,
    right: Vec<Value>,
    server: &[Value],
    id: impl Fn(&Value) -> Value,
) -> Vec<Value> {
    let pos = |v: &Value| server.iter().position(|s| id(s) == id(v));
    let (mut l, mut r) = (left.into_iter().peekable(), right.into_iter().peekable());
    let mut out = Vec::new();
    loop {
        match (l.peek(), r.peek()) {
            (None, None) => break,
            (Some(_), None) => out.extend(l.next()),
            (None, Some(_)) => out.extend(r.next()),
            (Some(a), Some(b)) => match (pos(a), pos(b)) {
                (Some(x), Some(y)) if x < y => out.extend(l.next()),
                _ => out.extend(r.next()),
            },
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_merges_containers_by_name_and_replaces_plain_lists() {
        let mut obj = json!({"spec": {"template": {"spec": {
            "containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}],
            "tolerations": [{"key": "k"}]}}}});
        let patch = json!({"spec": {"template": {"spec": {
            "containers": [{"name": "b", "image": "z"}, {"name": "c", "image": "w"}],
            "tolerations": [{"key": "j"}]}}}});
        apply(&mut obj, PatchType::Strategic, &patch).expect("patch");
        let c = &obj["spec"]["template"]["spec"]["containers"];
        assert_eq!(c.as_array().map(Vec::len), Some(3));
        assert_eq!(c[1]["image"], "z");
        assert_eq!(
            obj["spec"]["template"]["spec"]["tolerations"],
            json!([{"key": "j"}])
        );
    }

    #[test]
    fn strategic_delete_directive_and_finalizer_union() {
        let mut obj = json!({"metadata": {"finalizers": ["a"]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "X"}]}});
        let patch = json!({"metadata": {"finalizers": ["b"]},
            "status": {"conditions": [{"type": "X", "$patch": "delete"},
                                       {"type": "Ready", "status": "False"}]}});
        apply(&mut obj, PatchType::Strategic, &patch).expect("patch");
        // strategicpatch mergeSortedSlice: the new value comes before the server's (as
        // kube-apiserver answers in the differential test).
        assert_eq!(obj["metadata"]["finalizers"], json!(["b", "a"]));
        assert_eq!(
            obj["status"]["conditions"],
            json!([{"type": "Ready", "status": "False"}])
        );
    }

    #[test]
    fn json_patch_test_failure_is_an_error() {
        let mut obj = json!({"a": 1});
        let p = json!([{"op": "test", "path": "/a", "value": 2}, {"op": "replace", "path": "/a", "value": 3}]);
        assert!(apply(&mut obj, PatchType::Json, &p).is_err());
        assert_eq!(obj["a"], 1);
    }

    #[test]
    fn merge_patch_null_removes() {
        let mut obj = json!({"a": {"b": 1, "c": 2}});
        apply(&mut obj, PatchType::Merge, &json!({"a": {"b": null}})).expect("patch");
        assert_eq!(obj, json!({"a": {"c": 2}}));
    }
}
