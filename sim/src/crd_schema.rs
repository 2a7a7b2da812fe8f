//! The structural schema of a custom resource (`openAPIV3Schema` of its CRD version):
//! pruning of unknown fields, defaults, and validation (types, formats, required, enum,
//! bounds, lengths, pattern, then the CEL `x-kubernetes-validations` rules), worded as
//! kube-apiserver's apiextensions validation words its field errors.

use crate::crd::Custom;
use crate::error::{ApiError, Cause};
use crate::kinds::ResourceKind;
use crate::typed::Decoded;
use serde_json::Value;

fn preserves(schema: &Value) -> bool {
    schema["x-kubernetes-preserve-unknown-fields"].as_bool() == Some(true)
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Drops the fields the schema does not declare (what the real decoder prunes) and names
/// them for `fieldValidation`. `apiVersion`, `kind` and `metadata` are always kept.
pub fn prune(schema: &Value, obj: &mut Value) -> Decoded {
    let mut out = Decoded::default();
    if let Some(m) = obj.as_object_mut() {
        for (k, v) in m.iter_mut() {
            if matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            if let Some(s) = schema.pointer(&format!("/properties/{}", k.replace('/', "~1"))) {
                prune_at(s, v, k, &mut out.unknown);
            }
        }
        if !preserves(schema) {
            let unknown: Vec<String> = m
                .keys()
                .filter(|k| !matches!(k.as_str(), "apiVersion" | "kind" | "metadata"))
                .filter(|k| schema["properties"].get(k.as_str()).is_none())
                .cloned()
                .collect();
            for k in unknown {
                m.remove(&k);
                out.unknown.push(k);
            }
        }
    }
    out.unknown.sort();
    out
}

fn prune_at(schema: &Value, v: &mut Value, path: &str, unknown: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            let props = schema["properties"].as_object();
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            let keys: Vec<String> = m.keys().cloned().collect();
            for k in keys {
                let sub = props.and_then(|p| p.get(&k)).or(additional);
                match sub {
                    Some(s) => {
                        if let Some(x) = m.get_mut(&k) {
                            prune_at(s, x, &join(path, &k), unknown);
                        }
                    }
                    None if !preserves(schema) && (props.is_some() || additional.is_none()) => {
                        if schema["additionalProperties"].as_bool() == Some(true) {
                            continue;
                        }
                        m.remove(&k);
                        unknown.push(join(path, &k));
                    }
                    None => {}
                }
            }
        }
        Value::Array(a) => {
            if let Some(items) = schema.get("items").filter(|i| i.is_object()) {
                for (i, x) in a.iter_mut().enumerate() {
                    prune_at(items, x, &format!("{path}[{i}]"), unknown);
                }
            }
        }
        _ => {}
    }
}

/// Sets the schema's `default`s where a field is missing, top-down (a defaulted object
/// gets the defaults of its own fields too), as the real server does when it decodes.
pub fn default(schema: &Value, obj: &mut Value) {
    default_at(schema, obj, true);
}

fn default_at(schema: &Value, v: &mut Value, root: bool) {
    match v {
        Value::Object(m) => {
            if let Some(props) = schema["properties"].as_object() {
                for (k, s) in props {
                    if root && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                        continue;
                    }
                    if let Some(d) = s.get("default")
                        && m.get(k)
                            .is_none_or(|x| x.is_null() && s["nullable"] != true)
                    {
                        m.insert(k.clone(), d.clone());
                    }
                }
            }
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            for (k, x) in m.iter_mut() {
                if root && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                if let Some(s) = schema["properties"].get(k.as_str()).or(additional) {
                    default_at(s, x, false);
                }
            }
        }
        Value::Array(a) => {
            if let Some(items) = schema.get("items").filter(|i| i.is_object()) {
                for x in a {
                    default_at(items, x, false);
                }
            }
        }
        _ => {}
    }
}

/// The validation of a custom resource on create and update: schema, then CEL rules
/// (skipped when the schema already refused a value's type, as upstream).
pub fn admit(
    kind: &ResourceKind,
    custom: &Custom,
    name: &str,
    obj: &Value,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    let mut causes = Vec::new();
    if let Some(m) = obj.as_object() {
        for (k, v) in m {
            if matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            if let Some(s) = custom.schema["properties"].get(k) {
                validate(s, v, k, &mut causes);
            }
        }
        for r in required_of(&custom.schema) {
            if !m.contains_key(r) {
                causes.push(required(r));
            }
        }
    }
    // The errors that stop the CEL rules upstream (`hasBlockingErr`): a pattern or a bound
    // does not.
    let blocking = causes.iter().any(|c| {
        matches!(
            c.reason,
            "FieldValueNotSupported"
                | "FieldValueRequired"
                | "FieldValueTooLong"
                | "FieldValueTooMany"
                | "FieldValueTypeInvalid"
        )
    });
    if !blocking {
        rules(&custom.schema, obj, old, "", &mut causes);
    } else if has_rules(&custom.schema) {
        // Upstream skips the CEL rules of an object the schema refused, and says so.
        causes.push(Cause {
            reason: "FieldValueInvalid",
            field: "<nil>".into(),
            message: "Invalid value: null: some validation rules were not checked because the object was invalid; correct the existing errors to complete validation".into(),
        });
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(&kind.qualified_kind(), name, causes))
    }
}

fn has_rules(schema: &Value) -> bool {
    match schema {
        Value::Object(m) => m.contains_key("x-kubernetes-validations") || m.values().any(has_rules),
        Value::Array(a) => a.iter().any(has_rules),
        _ => false,
    }
}

fn required_of(schema: &Value) -> Vec<&str> {
    schema["required"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn required(path: &str) -> Cause {
    Cause {
        reason: "FieldValueRequired",
        field: path.into(),
        message: "Required value".into(),
    }
}

/// How `field.Invalid` prints a value: strings quoted, numbers plain, others as JSON.
fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

fn invalid(path: &str, v: &Value, detail: String) -> Cause {
    Cause {
        reason: "FieldValueInvalid",
        field: path.into(),
        message: format!("Invalid value: {}: {detail}", shown(v)),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_ok(ty: &str, v: &Value) -> bool {
    match ty {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        _ => true,
    }
}

fn format_ok(format: &str, s: &str) -> bool {
    use std::net::{Ipv4Addr, Ipv6Addr};
    match format {
        "ipv4" => s.parse::<Ipv4Addr>().is_ok(),
        "ipv6" => s.parse::<Ipv6Addr>().is_ok(),
        "cidr" => s.parse::<ipnet::IpNet>().is_ok(),
        "uuid" => uuid::Uuid::parse_str(s).is_ok(),
        "date-time" => chrono::DateTime::parse_from_rfc3339(s).is_ok(),
        "date" => chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok(),
        "hostname" => {
            !s.is_empty()
                && s.len() <= 255
                && s.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                })
        }
        _ => true,
    }
}

fn pattern_ok(pattern: &str, s: &str) -> bool {
    static CACHE: std::sync::Mutex<Vec<(String, Option<regex::Regex>)>> =
        std::sync::Mutex::new(Vec::new());
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, re)) = cache.iter().find(|(p, _)| p == pattern) {
        return re.as_ref().is_none_or(|r| r.is_match(s));
    }
    let re = regex::Regex::new(pattern).ok();
    let ok = re.as_ref().is_none_or(|r| r.is_match(s));
    cache.push((pattern.to_string(), re));
    ok
}

fn validate(schema: &Value, v: &Value, path: &str, causes: &mut Vec<Cause>) {
    if v.is_null() {
        if schema["nullable"].as_bool() != Some(true) && schema.get("type").is_some() {
            causes.push(Cause {
                reason: "FieldValueTypeInvalid",
                field: path.into(),
                message: format!(
                    "Invalid value: \"null\": {path} in body must be of type {}: \"null\"",
                    schema["type"].as_str().unwrap_or("")
                ),
            });
        }
        return;
    }
    if let Some(ty) = schema["type"].as_str()
        && !type_ok(ty, v)
    {
        let have = type_name(v);
        causes.push(Cause {
            reason: "FieldValueTypeInvalid",
            field: path.into(),
            message: format!(
                "Invalid value: \"{have}\": {path} in body must be of type {ty}: \"{have}\""
            ),
        });
        return;
    }
    if let Some(e) = schema["enum"].as_array()
        && !e.contains(v)
    {
        let supported: Vec<String> = e.iter().map(shown).collect();
        causes.push(Cause {
            reason: "FieldValueNotSupported",
            field: path.into(),
            message: format!(
                "Unsupported value: {}: supported values: {}",
                shown(v),
                supported.join(", ")
            ),
        });
    }
    match v {
        Value::String(s) => {
            if let Some(f) = schema["format"].as_str()
                && !format_ok(f, s)
            {
                let mut c = invalid(
                    path,
                    v,
                    format!("{path} in body must be of type {f}: {s:?}"),
                );
                c.reason = "FieldValueTypeInvalid";
                causes.push(c);
            }
            if let Some(max) = schema["maxLength"].as_u64()
                && s.chars().count() as u64 > max
            {
                causes.push(Cause {
                    reason: "FieldValueTooLong",
                    field: path.into(),
                    message: format!("Too long: may not be more than {max} bytes"),
                });
            }
            if let Some(min) = schema["minLength"].as_u64()
                && (s.chars().count() as u64) < min
            {
                causes.push(invalid(
                    path,
                    v,
                    format!("{path} in body should be at least {min} chars long"),
                ));
            }
            if let Some(p) = schema["pattern"].as_str()
                && !pattern_ok(p, s)
            {
                causes.push(invalid(
                    path,
                    v,
                    format!("{path} in body should match '{p}'"),
                ));
            }
        }
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(0.0);
            let exclusive = |k: &str| schema[k].as_bool() == Some(true);
            if let Some(min) = schema["minimum"].as_f64() {
                if exclusive("exclusiveMinimum") && x <= min {
                    causes.push(invalid(
                        path,
                        v,
                        format!(
                            "{path} in body should be greater than {}",
                            schema["minimum"]
                        ),
                    ));
                } else if x < min {
                    causes.push(invalid(
                        path,
                        v,
                        format!(
                            "{path} in body should be greater than or equal to {}",
                            schema["minimum"]
                        ),
                    ));
                }
            }
            if let Some(max) = schema["maximum"].as_f64() {
                if exclusive("exclusiveMaximum") && x >= max {
                    causes.push(invalid(
                        path,
                        v,
                        format!("{path} in body should be less than {}", schema["maximum"]),
                    ));
                } else if x > max {
                    causes.push(invalid(
                        path,
                        v,
                        format!(
                            "{path} in body should be less than or equal to {}",
                            schema["maximum"]
                        ),
                    ));
                }
            }
        }
        Value::Array(a) => {
            if let Some(max) = schema["maxItems"].as_u64()
                && a.len() as u64 > max
            {
                causes.push(Cause {
                    reason: "FieldValueTooMany",
                    field: path.into(),
                    message: format!("Too many: {}: must have at most {max} items", a.len()),
                });
            }
            if let Some(min) = schema["minItems"].as_u64()
                && (a.len() as u64) < min
            {
                causes.push(invalid(
                    path,
                    v,
                    format!("{path} in body should have at least {min} items"),
                ));
            }
            if let Some(items) = schema.get("items").filter(|i| i.is_object()) {
                for (i, x) in a.iter().enumerate() {
                    validate(items, x, &format!("{path}[{i}]"), causes);
                }
            }
        }
        Value::Object(m) => {
            let props = schema["properties"].as_object();
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            for (k, x) in m {
                if let Some(s) = props.and_then(|p| p.get(k)).or(additional) {
                    validate(s, x, &join(path, k), causes);
                }
            }
            for r in required_of(schema) {
                if !m.contains_key(r) {
                    causes.push(required(&join(path, r)));
                }
            }
        }
        Value::Bool(_) | Value::Null => {}
    }
}

/// Evaluates the `x-kubernetes-validations` of every node present in `v`, deepest last as
/// upstream reports them (a node's own rules before its children's).
fn rules(schema: &Value, v: &Value, old: Option<&Value>, path: &str, causes: &mut Vec<Cause>) {
    if v.is_null() {
        return;
    }
    if let Some(list) = schema["x-kubernetes-validations"].as_array() {
        for r in list {
            let rule = r["rule"].as_str().unwrap_or("");
            if crate::cel::is_transition(rule) && old.is_none() {
                continue;
            }
            let held = crate::cel::eval(rule, v, old);
            let field = match r["fieldPath"].as_str() {
                Some(fp) if !fp.is_empty() => format!("{path}{fp}"),
                _ => path.to_string(),
            };
            // The value shown: a scalar itself, an object or list by its type; none when
            // the rule points elsewhere with `fieldPath`.
            let shown_value = match v {
                Value::Object(_) | Value::Array(_) => {
                    format!("{:?}", schema["type"].as_str().unwrap_or("object"))
                }
                other => shown(other),
            };
            let msg = || {
                r["message"]
                    .as_str()
                    .map(String::from)
                    .unwrap_or_else(|| format!("failed rule: {rule}"))
            };
            match held {
                Ok(true) => {}
                Ok(false) => {
                    let msg = r["messageExpression"]
                        .as_str()
                        .and_then(|e| crate::cel::message(e, v))
                        .unwrap_or_else(msg);
                    let value = (field == path).then_some(shown_value.as_str());
                    causes.push(rule_cause(r["reason"].as_str(), &field, value, msg));
                }
                // A rule that fails to evaluate (a bad address for `cidr()`, a function the
                // sim lacks) is the node's error, as upstream words it.
                Err(e) => causes.push(Cause {
                    reason: "FieldValueInvalid",
                    field: path.to_string(),
                    message: format!(
                        "Invalid value: {shown_value}: {e} evaluating rule: {}",
                        msg()
                    ),
                }),
            }
        }
    }
    let olds = |k: &str| old.and_then(|o| o.get(k));
    match v {
        Value::Object(m) => {
            let props = schema["properties"].as_object();
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            for (k, x) in m {
                if path.is_empty() && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                if let Some(s) = props.and_then(|p| p.get(k)).or(additional) {
                    rules(s, x, olds(k), &join(path, k), causes);
                }
            }
        }
        Value::Array(a) => {
            if let Some(items) = schema.get("items").filter(|i| i.is_object()) {
                for (i, x) in a.iter().enumerate() {
                    // Old items correlate only in map-type lists upstream; not here.
                    rules(items, x, None, &format!("{path}[{i}]"), causes);
                }
            }
        }
        _ => {}
    }
}

fn rule_cause(reason: Option<&str>, field: &str, value: Option<&str>, msg: String) -> Cause {
    let shown = value.map(|v| format!("{v}: ")).unwrap_or_default();
    let (reason, message) = match reason {
        Some("FieldValueForbidden") => ("FieldValueForbidden", format!("Forbidden: {msg}")),
        Some("FieldValueRequired") => ("FieldValueRequired", format!("Required value: {msg}")),
        Some("FieldValueDuplicate") => (
            "FieldValueDuplicate",
            format!("Duplicate value: {shown}{msg}"),
        ),
        _ => ("FieldValueInvalid", format!("Invalid value: {shown}{msg}")),
    };
    Cause {
        reason,
        field: field.into(),
        message,
    }
}
