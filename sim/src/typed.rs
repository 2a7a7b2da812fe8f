//! Typed decoding: what the real server's decoder does to a body before anything else. It
//! knows every field of the served kinds from their OpenAPI schemas (k8s-openapi's
//! `schemars` impls, generated from the upstream spec): unknown fields are dropped with a
//! `Warning`, refused under `fieldValidation=Strict`, kept under `Ignore` (dropped all the
//! same); a value of the wrong JSON type is a `400` naming the Go field, as
//! `encoding/json` words it.
//!
//! The same schemas are served as `/openapi/v3` (see [`crate::openapi`]).

use k8s_openapi::schemars::{SchemaGenerator, generate::SchemaSettings};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::OnceLock;

/// The schemas of the served kinds: component name -> schema, and the root component of
/// each storage key.
pub struct Schemas {
    /// `io.k8s.api.core.v1.Service` -> its schema (refs are `#/components/schemas/NAME`).
    pub components: Map<String, Value>,
    /// Storage key -> root component name.
    pub roots: HashMap<&'static str, String>,
}

fn build() -> Schemas {
    use k8s_openapi::api::{
        admissionregistration, apps, coordination, core, discovery, events, rbac,
    };
    let mut generator: SchemaGenerator = SchemaSettings::openapi3().into_generator();
    let mut roots = HashMap::new();
    macro_rules! root {
        ($storage:expr, $ty:ty) => {{
            let r = generator.subschema_for::<$ty>();
            let name = r
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|s| s.rsplit('/').next())
                .unwrap_or("")
                .to_string();
            roots.insert($storage, name);
        }};
    }
    root!("namespaces", core::v1::Namespace);
    root!("nodes", core::v1::Node);
    root!("services", core::v1::Service);
    root!("pods", core::v1::Pod);
    root!("endpoints", core::v1::Endpoints);
    root!("configmaps", core::v1::ConfigMap);
    root!("secrets", core::v1::Secret);
    root!("events", core::v1::Event);
    root!("events.k8s.io", events::v1::Event);
    root!("serviceaccounts", core::v1::ServiceAccount);
    root!("daemonsets", apps::v1::DaemonSet);
    root!("deployments", apps::v1::Deployment);
    root!("endpointslices", discovery::v1::EndpointSlice);
    root!("leases", coordination::v1::Lease);
    root!("clusterroles", rbac::v1::ClusterRole);
    root!("clusterrolebindings", rbac::v1::ClusterRoleBinding);
    root!("roles", rbac::v1::Role);
    root!("rolebindings", rbac::v1::RoleBinding);
    root!(
        "validatingadmissionpolicies",
        admissionregistration::v1::ValidatingAdmissionPolicy
    );
    root!(
        "validatingadmissionpolicybindings",
        admissionregistration::v1::ValidatingAdmissionPolicyBinding
    );
    let components = generator.take_definitions(true);
    Schemas { components, roots }
}

/// The schemas, built once.
pub fn schemas() -> &'static Schemas {
    static S: OnceLock<Schemas> = OnceLock::new();
    S.get_or_init(build)
}

/// `fieldValidation` of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    /// Drop unknown fields silently.
    Ignore,
    /// Drop them with a `Warning` header each (the default since 1.27).
    #[default]
    Warn,
    /// Refuse the request.
    Strict,
}

impl FieldValidation {
    /// From the query parameter.
    pub fn parse(v: Option<&str>) -> Self {
        match v {
            Some("Ignore") => FieldValidation::Ignore,
            Some("Strict") => FieldValidation::Strict,
            _ => FieldValidation::Warn,
        }
    }
}

/// What decoding found.
#[derive(Debug, Default)]
pub struct Decoded {
    /// Unknown fields, as the real decoder names them (`spec.ports[0].bogus`).
    pub unknown: Vec<String>,
    /// A value of the wrong type: the `encoding/json` message.
    pub type_error: Option<String>,
}

/// Follows `$ref` (and the `allOf: [{$ref}]` a described reference is wrapped in).
pub fn resolve<'a>(s: &'a Schemas, schema: &'a Value) -> &'a Value {
    let mut cur = schema;
    for _ in 0..8 {
        match ref_name(cur).and_then(|n| s.components.get(n)) {
            Some(next) => cur = next,
            None => break,
        }
    }
    cur
}

/// The component a schema refers to.
pub fn ref_name(schema: &Value) -> Option<&str> {
    schema
        .get("$ref")
        .or_else(|| schema.pointer("/allOf/0/$ref"))
        .and_then(Value::as_str)
        .and_then(|r| r.rsplit('/').next())
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "string",
        Value::Number(_) => "number",
        Value::Bool(_) => "bool",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
        Value::Null => "null",
    }
}

/// Drops the unknown fields of `obj` (root component of `storage`) and reports them.
pub fn decode(storage: &str, obj: &mut Value) -> Decoded {
    let s = schemas();
    let mut out = Decoded::default();
    if let Some((name, root)) = s
        .roots
        .get(storage)
        .and_then(|n| s.components.get(n).map(|c| (n.as_str(), c)))
    {
        walk(
            s,
            root,
            obj,
            &mut String::new(),
            &mut Vec::new(),
            name,
            &mut out,
        );
    }
    out
}

/// Walks `v` with `schema`. `path` is the decoder's path (`spec.ports[0]`), `fields` the
/// Go field path (`spec.ports`), `owner` the struct that declares the current field.
fn walk(
    s: &Schemas,
    schema: &Value,
    v: &mut Value,
    path: &mut String,
    fields: &mut Vec<String>,
    owner: &str,
    out: &mut Decoded,
) {
    let name = ref_name(schema).unwrap_or(owner).to_string();
    let schema = resolve(s, schema);
    if v.is_null() {
        return;
    }
    let ty = schema.get("type").and_then(Value::as_str);
    let wrong = match (ty, &*v) {
        (Some("object"), Value::Object(_))
        | (Some("array"), Value::Array(_))
        | (Some("string"), Value::String(_))
        | (Some("boolean"), Value::Bool(_))
        | (Some("integer" | "number"), Value::Number(_))
        | (None, _) => false,
        (Some(_), _) => true,
    };
    if wrong {
        if out.type_error.is_none() {
            let go_type = match (ty, schema.get("format").and_then(Value::as_str)) {
                (Some("integer"), Some(f)) => f.to_string(),
                (Some("integer"), None) => "int".into(),
                (Some("number"), _) => "float64".into(),
                (Some("boolean"), _) => "bool".into(),
                (Some("string"), _) => "string".into(),
                (Some("array"), _) => "[]".into(),
                _ => format!("v1.{}", name.rsplit('.').next().unwrap_or("")),
            };
            let struct_name = owner.rsplit('.').next().unwrap_or("");
            out.type_error = Some(format!(
                "json: cannot unmarshal {} into Go struct field {struct_name}.{} of type {go_type}",
                json_kind(v),
                fields.join(".")
            ));
        }
        return;
    }
    match v {
        Value::Object(m) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            if props.is_none() && additional.is_none() {
                return;
            }
            let required: Vec<&str> = schema
                .get("required")
                .and_then(Value::as_array)
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let mut keys: Vec<String> = m.keys().cloned().collect();
            // Fields Go always renders, added when absent.
            for (owner, field) in [
                ("PodCondition", "lastProbeTime"),
                ("PodCondition", "lastTransitionTime"),
            ] {
                if name.rsplit('.').next() == Some(owner) && !m.contains_key(field) {
                    m.insert(field.to_string(), Value::Null);
                    keys.push(field.to_string());
                }
            }
            for k in keys {
                let sub = props.and_then(|p| p.get(&k)).or(additional);
                let at = if path.is_empty() {
                    k.clone()
                } else if additional.is_some() && !props.is_some_and(|p| p.contains_key(&k)) {
                    format!("{path}[{k}]")
                } else {
                    format!("{path}.{k}")
                };
                match sub {
                    None => {
                        if !matches!(k.as_str(), "apiVersion" | "kind") {
                            out.unknown.push(at);
                            m.remove(&k);
                        }
                    }
                    Some(sub) => {
                        let declared = props.is_some_and(|p| p.contains_key(&k));
                        if declared {
                            fields.push(k.clone());
                        }
                        let mut p = at;
                        if let Some(child) = m.get_mut(&k) {
                            walk(s, sub, child, &mut p, fields, &name, out);
                        }
                        if declared {
                            fields.pop();
                        }
                        // encoding/json and a protobuf round trip through etcd: an empty
                        // optional (omitempty) list, map or string is left out, an empty
                        // required list or map is `null`; a struct stays `{}`.
                        let is_map = resolve(s, sub).get("additionalProperties").is_some();
                        let empty = match m.get(&k) {
                            Some(Value::Null) => Some(false),
                            Some(Value::Array(a)) if a.is_empty() => Some(true),
                            Some(Value::Object(o)) if o.is_empty() && is_map => Some(true),
                            Some(Value::String(t)) if t.is_empty() && declared => Some(false),
                            _ => None,
                        };
                        // Go renders these although unset (a non-omitempty list, a struct
                        // Time): `null`.
                        let always = matches!(
                            (name.rsplit('.').next().unwrap_or(""), k.as_str()),
                            ("EndpointSlice", "ports")
                                | ("PodCondition", "lastProbeTime" | "lastTransitionTime")
                        );
                        if always && empty.is_some() {
                            m.insert(k.clone(), Value::Null);
                            continue;
                        }
                        match empty {
                            Some(nullable) if nullable && required.contains(&k.as_str()) => {
                                m.insert(k.clone(), Value::Null);
                            }
                            Some(_) if !required.contains(&k.as_str()) => {
                                m.remove(&k);
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    let mut p = format!("{path}[{i}]");
                    walk(s, item_schema, item, &mut p, fields, owner, out);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_fields_are_named_and_dropped() {
        let mut svc = json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "a", "bogus": 1, "labels": {"x": "y"}},
            "spec": {"ports": [{"port": 80, "nope": true}], "selector": {"a": "b"}}});
        let d = decode("services", &mut svc);
        assert_eq!(d.unknown, vec!["metadata.bogus", "spec.ports[0].nope"]);
        assert!(svc.pointer("/spec/ports/0/nope").is_none());
        assert_eq!(svc["metadata"]["labels"]["x"], "y");
        assert!(d.type_error.is_none());
    }

    #[test]
    fn a_string_port_is_a_type_error() {
        let mut svc = json!({"spec": {"ports": [{"port": "eighty"}]}});
        let d = decode("services", &mut svc);
        assert_eq!(
            d.type_error.as_deref(),
            Some(
                "json: cannot unmarshal string into Go struct field ServicePort.spec.ports.port of type int32"
            )
        );
    }
}
