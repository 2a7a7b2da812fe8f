//! Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`), which
//! kubectl's typed clients send for built-in kinds (`kubectl create service ...`).
//!
//! The wire format is the magic `k8s\0` and a `runtime.Unknown` envelope holding the
//! type's protobuf encoding. The messages are decoded by `k8s-rs-pb` (rust-protobuf types
//! generated from the upstream `generated.proto` files, with serde impls for `Time`,
//! `IntOrString` and `Quantity`); this module turns their serde form into the JSON the real
//! server would have decoded: `type_` is `type`, `bytes` are base64 (Secret `data`,
//! ConfigMap `binaryData`) or raw JSON (`FieldsV1`), `MicroTime` is RFC 3339, Go's zero
//! time is `null`, and the Go structs embedded inline (`VolumeSource`, `ProbeHandler`, ...)
//! are inlined. Empty values are left to [`crate::typed`], as for any body.
//!
//! Why this crate: `k8s-pb` (kube-rs) has prost types with neither serde nor reflection;
//! `prost-reflect` needs descriptor sets no crate ships; k8s-rs-pb's reflection deadlocks
//! (its generated `core/v1` descriptor depends on itself) and a few of its serde impls
//! unwrap, so its serde path runs behind `catch_unwind`: odd input is a `400`, never a
//! crashed request.

use k8s_rs_pb::apimachinery::pkg::runtime::Unknown;
use serde_json::{Map, Value, json};

const MAGIC: &[u8] = b"k8s\0";

/// Decodes a protobuf body into the object's JSON (with `apiVersion` and `kind`).
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let raw = body
        .strip_prefix(MAGIC)
        .ok_or("the body does not start with the protobuf magic number")?;
    let unknown = <Unknown as protobuf::Message>::parse_from_bytes(raw)
        .map_err(|e| format!("decoding the protobuf envelope: {e}"))?;
    let api_version = unknown.typeMeta.apiVersion().to_string();
    let kind = unknown.typeMeta.kind().to_string();
    let inner = unknown.raw().to_vec();
    let (av, k) = (api_version.clone(), kind.clone());
    let decoded = std::panic::catch_unwind(move || to_json(&av, &k, &inner))
        .map_err(|_| format!("the {kind} in the body could not be decoded"))??;
    let mut obj = kubernetes_json(decoded, "");
    obj["apiVersion"] = json!(api_version);
    obj["kind"] = json!(kind);
    Ok(obj)
}

fn to_json(api_version: &str, kind: &str, raw: &[u8]) -> Result<Value, String> {
    use k8s_rs_pb::api::{apps, coordination, core, discovery, events, rbac};
    fn p<M: protobuf::Message + serde::Serialize>(raw: &[u8]) -> Result<(M, Value), String> {
        let m = M::parse_from_bytes(raw).map_err(|e| e.to_string())?;
        let v = serde_json::to_value(&m).map_err(|e| e.to_string())?;
        Ok((m, v))
    }
    fn plain<M: protobuf::Message + serde::Serialize>(raw: &[u8]) -> Result<Value, String> {
        p::<M>(raw).map(|(_, v)| v)
    }
    match (api_version, kind) {
        ("v1", "Namespace") => plain::<core::v1::Namespace>(raw),
        ("v1", "Node") => plain::<core::v1::Node>(raw),
        ("v1", "Service") => p::<core::v1::Service>(raw).map(|(svc, mut v)| {
            for (i, port) in svc.spec.ports.iter().enumerate() {
                if let Some(t) = port.targetPort.as_ref() {
                    v["spec"]["ports"][i]["targetPort"] = int_or_string(t);
                }
            }
            v
        }),
        ("v1", "Pod") => plain::<core::v1::Pod>(raw),
        ("v1", "Endpoints") => plain::<core::v1::Endpoints>(raw),
        ("v1", "ConfigMap") => plain::<core::v1::ConfigMap>(raw),
        ("v1", "Secret") => plain::<core::v1::Secret>(raw),
        ("v1", "Event") => plain::<core::v1::Event>(raw),
        ("v1", "ServiceAccount") => plain::<core::v1::ServiceAccount>(raw),
        ("apps/v1", "DaemonSet") => p::<apps::v1::DaemonSet>(raw).map(|(ds, mut v)| {
            if let Some(ru) = ds.spec.updateStrategy.rollingUpdate.as_ref() {
                let at = &mut v["spec"]["updateStrategy"]["rollingUpdate"];
                fix(at, "maxSurge", ru.maxSurge.as_ref());
                fix(at, "maxUnavailable", ru.maxUnavailable.as_ref());
            }
            v
        }),
        ("apps/v1", "Deployment") => p::<apps::v1::Deployment>(raw).map(|(d, mut v)| {
            if let Some(ru) = d.spec.strategy.rollingUpdate.as_ref() {
                let at = &mut v["spec"]["strategy"]["rollingUpdate"];
                fix(at, "maxSurge", ru.maxSurge.as_ref());
                fix(at, "maxUnavailable", ru.maxUnavailable.as_ref());
            }
            v
        }),
        ("discovery.k8s.io/v1", "EndpointSlice") => plain::<discovery::v1::EndpointSlice>(raw),
        ("coordination.k8s.io/v1", "Lease") => plain::<coordination::v1::Lease>(raw),
        ("events.k8s.io/v1", "Event") => plain::<events::v1::Event>(raw),
        ("rbac.authorization.k8s.io/v1", "Role") => plain::<rbac::v1::Role>(raw),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => plain::<rbac::v1::RoleBinding>(raw),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => plain::<rbac::v1::ClusterRole>(raw),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            plain::<rbac::v1::ClusterRoleBinding>(raw)
        }
        _ => Err(format!(
            "no protobuf decoding for {api_version}, Kind={kind}"
        )),
    }
    .map_err(|e| format!("decoding {kind}: {e}"))
}

type IntOrString = k8s_rs_pb::apimachinery::pkg::util::intstr::IntOrString;

/// k8s-rs-pb's serde writes an IntOrString's `intVal` whenever it is present, and Go
/// always sends it (0 for a string): the value is rebuilt from the message by its `type`.
fn int_or_string(v: &IntOrString) -> Value {
    if v.type_() == 1 {
        json!(v.strVal())
    } else {
        json!(v.intVal())
    }
}

fn fix(at: &mut Value, field: &str, v: Option<&IntOrString>) {
    if let Some(v) = v
        && at.is_object()
    {
        at[field] = int_or_string(v);
    }
}

/// Go structs embedded with `json:",inline"`, a field of their own in protobuf.
const INLINED: &[&str] = &[
    "volumeSource",
    "persistentVolumeSource",
    "handler",
    "ephemeralContainerCommon",
    "localObjectReference",
];

fn bytes_of(v: &Value) -> Option<Vec<u8>> {
    v.as_array()?
        .iter()
        .map(|b| b.as_u64().filter(|b| *b < 256).map(|b| b as u8))
        .collect()
}

fn base64(bytes: Vec<u8>) -> Value {
    serde_json::to_value(k8s_openapi::ByteString(bytes)).unwrap_or(Value::Null)
}

/// The serde form of a decoded message as Kubernetes JSON; `key` is the field it is in.
fn kubernetes_json(v: Value, key: &str) -> Value {
    match v {
        Value::Object(m) => {
            // FieldsV1 and RawExtension: raw JSON bytes.
            if m.len() == 1
                && let Some(raw) = m.get("Raw").or_else(|| m.get("raw"))
            {
                return bytes_of(raw)
                    .and_then(|b| serde_json::from_slice(&b).ok())
                    .unwrap_or(Value::Null);
            }
            // MicroTime (a plain message): RFC 3339 with microseconds.
            if !m.is_empty() && m.keys().all(|k| k == "seconds" || k == "nanos") {
                let secs = m.get("seconds").and_then(Value::as_i64).unwrap_or(0);
                let nanos = m.get("nanos").and_then(Value::as_u64).unwrap_or(0);
                return match chrono::DateTime::from_timestamp(secs, nanos.min(999_999_999) as u32) {
                    Some(t) if secs > 0 => {
                        json!(t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
                    }
                    _ => Value::Null,
                };
            }
            let mut out = Map::new();
            for (k, v) in m {
                let k = if k == "type_" { "type".to_string() } else { k };
                let v = match (key, &v) {
                    ("data" | "binaryData", Value::Array(_)) => {
                        bytes_of(&v).map(base64).unwrap_or(Value::Null)
                    }
                    _ => kubernetes_json(v, &k),
                };
                if v.is_null() {
                    continue;
                }
                if INLINED.contains(&k.as_str())
                    && let Value::Object(fields) = v
                {
                    out.extend(fields);
                    continue;
                }
                out.insert(k, v);
            }
            Value::Object(out)
        }
        Value::Array(items) => {
            Value::Array(items.into_iter().map(|i| kubernetes_json(i, key)).collect())
        }
        // Go's zero time.Time.
        Value::String(t) if t.starts_with("0001-01-01T") || t == "1970-01-01T00:00:00Z" => {
            Value::Null
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bodies captured from kube-apiserver v1.37.2 (`Accept: application/vnd.kubernetes.protobuf`)
    /// for objects `kubectl create service loadbalancer`, `create deployment` and
    /// `create secret generic` made.
    #[test]
    fn decodes_objects_captured_from_kube_apiserver() {
        let svc = decode(include_bytes!("../testdata/service.pb")).expect("service");
        assert_eq!(svc["kind"], "Service");
        assert_eq!(svc["spec"]["type"], "LoadBalancer");
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], 8080);
        assert_eq!(svc["spec"]["ports"][0]["port"], 80);
        assert_eq!(svc["metadata"]["labels"]["app"], "web");
        assert!(
            svc["metadata"]["creationTimestamp"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z'))
        );
        assert!(svc["metadata"]["managedFields"][0]["fieldsV1"]["f:spec"].is_object());
        let dep = decode(include_bytes!("../testdata/deployment.pb")).expect("deployment");
        assert_eq!(dep["spec"]["replicas"], 2);
        assert_eq!(
            dep["spec"]["template"]["spec"]["containers"][0]["image"],
            "nginx:1.27"
        );
        assert!(dep["spec"]["template"]["metadata"]["creationTimestamp"].is_null());
        assert_eq!(dep["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        let secret = decode(include_bytes!("../testdata/secret.pb")).expect("secret");
        assert_eq!(secret["data"]["a"], "Yg==");
        assert_eq!(secret["type"], "Opaque");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode(b"").is_err());
        assert!(decode(b"k8s\0\xff\xff\xff").is_err());
        assert!(decode(b"{\"kind\": \"Service\"}").is_err());
    }
}
