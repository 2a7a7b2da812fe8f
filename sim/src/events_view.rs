//! core/v1 and events.k8s.io/v1 Events are two views of the same stored objects, as in the
//! real API server: stored in the core form, converted at the edges.

use serde_json::{Map, Value};

/// (core field, events.k8s.io/v1 field) pairs that only differ by name.
const RENAMES: &[(&str, &str)] = &[
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("reportingComponent", "reportingController"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
];

fn rename(obj: &Value, to_v1: bool) -> Map<String, Value> {
    let mut out = obj.as_object().cloned().unwrap_or_default();
    for (core, v1) in RENAMES {
        let (from, to) = if to_v1 { (core, v1) } else { (v1, core) };
        if let Some(v) = out.remove(*from) {
            out.insert((*to).to_string(), v);
        }
    }
    out
}

/// What kube-apiserver requires of an events.k8s.io/v1 Event on create
/// (`pkg/apis/core/validation/events.go`, `legacyValidateEvent` then `ValidateEventCreate`):
/// its `regarding` in its own namespace; with an `eventTime`, a reporting controller and
/// instance, an action and a reason; an `eventTime`; a `Normal` or `Warning` type.
pub fn validate_v1(obj: &Value, ns: &str) -> Result<(), crate::error::ApiError> {
    use crate::error::{ApiError, Cause};
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let text = |ptr: &str| obj.pointer(ptr).and_then(Value::as_str).unwrap_or("");
    let mut causes = Vec::new();
    let required = |field: &str| Cause {
        reason: "FieldValueRequired",
        field: field.into(),
        message: "Required value".into(),
    };
    let regarding_ns = text("/regarding/namespace");
    let has_time = !text("/eventTime").is_empty();
    let ns_mismatch = if has_time {
        regarding_ns.is_empty() && ns != "default" && ns != "kube-system"
    } else if regarding_ns.is_empty() {
        !ns.is_empty() && ns != "default"
    } else {
        regarding_ns != ns
    };
    if ns_mismatch || (!has_time && !regarding_ns.is_empty() && regarding_ns != ns) {
        causes.push(Cause {
            reason: "FieldValueInvalid",
            field: "involvedObject.namespace".into(),
            message: format!("Invalid value: {regarding_ns:?}: does not match event.namespace"),
        });
    }
    if has_time {
        for (field, limit) in [
            ("reportingController", 0),
            ("reportingInstance", 128),
            ("action", 128),
            ("reason", 128),
        ] {
            let v = text(&format!("/{field}"));
            if v.is_empty() {
                causes.push(required(field));
                if field == "reportingController" {
                    // ValidateQualifiedName of the empty name, as upstream also runs it.
                    for m in [
                        "name part must be non-empty",
                        "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
                    ] {
                        causes.push(Cause {
                            reason: "FieldValueInvalid",
                            field: field.into(),
                            message: format!("Invalid value: \"\": {m}"),
                        });
                    }
                }
            } else if limit > 0 && v.len() > limit {
                causes.push(Cause {
                    reason: "FieldValueInvalid",
                    field: field.into(),
                    message: format!("Invalid value: \"\": can have at most {limit} characters"),
                });
            }
        }
    }
    if text("/note").len() > 1024 {
        causes.push(Cause {
            reason: "FieldValueInvalid",
            field: "note".into(),
            message: "Invalid value: \"\": can have at most 1024 characters".into(),
        });
    }
    if !has_time {
        causes.push(required("eventTime"));
    }
    let ty = text("/type");
    if !matches!(ty, "Normal" | "Warning") {
        causes.push(Cause {
            reason: "FieldValueInvalid",
            field: "type".into(),
            message: format!("Invalid value: \"\": has invalid value: {ty}"),
        });
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid("Event", name, causes))
    }
}

/// The events.k8s.io/v1 rendering of a stored (core) event.
pub fn core_to_v1(obj: &Value) -> Value {
    let mut out = rename(obj, true);
    out.insert(
        "apiVersion".into(),
        Value::String("events.k8s.io/v1".into()),
    );
    out.insert("kind".into(), Value::String("Event".into()));
    for (k, v) in [
        ("deprecatedFirstTimestamp", Value::Null),
        ("deprecatedLastTimestamp", Value::Null),
        ("deprecatedSource", Value::Object(Map::new())),
    ] {
        out.entry(k).or_insert(v);
    }
    if out.get("reportingController").is_some_and(|v| v == "") {
        out.remove("reportingController");
    }
    if out.get("reportingInstance").is_some_and(|v| v == "") {
        out.remove("reportingInstance");
    }
    Value::Object(out)
}

/// The stored (core) form of an event written through the events.k8s.io/v1 view.
pub fn v1_to_core(obj: &Value) -> Value {
    let mut out = rename(obj, false);
    out.insert("apiVersion".into(), Value::String("v1".into()));
    out.insert("kind".into(), Value::String("Event".into()));
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trip_keeps_fields() {
        let v1 = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "e", "namespace": "default"},
            "regarding": {"kind": "Service", "name": "web"}, "note": "hello",
            "reason": "EnsuredLoadBalancer", "type": "Normal",
            "reportingController": "portway", "reportingInstance": "x",
            "eventTime": "2026-01-01T00:00:00.000000Z", "action": "Ensure"});
        let core = v1_to_core(&v1);
        assert_eq!(core["involvedObject"]["name"], "web");
        assert_eq!(core["message"], "hello");
        let back = core_to_v1(&core);
        assert_eq!(back["note"], "hello");
        assert_eq!(back["regarding"], v1["regarding"]);
        assert_eq!(back["reportingController"], "portway");
    }
}
