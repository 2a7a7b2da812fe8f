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

/// What a real server requires of an events.k8s.io/v1 Event on create (its
/// `ValidateEventCreate`): a recorder that leaves one out works against a lenient
/// simulation and loses every event on a real cluster.
pub fn validate_v1(obj: &Value) -> Result<(), crate::error::ApiError> {
    use crate::error::{ApiError, Cause};
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let text = |field: &str| obj.get(field).and_then(Value::as_str).unwrap_or("");
    let mut causes = Vec::new();
    let mut require = |field: &str, max: usize| {
        let v = text(field);
        if v.is_empty() {
            causes.push(Cause {
                reason: "FieldValueRequired",
                field: field.to_string(),
                message: "Required value".into(),
            });
        } else if v.len() > max {
            causes.push(Cause {
                reason: "FieldValueInvalid",
                field: field.to_string(),
                message: format!("Invalid value: can have at most {max} characters"),
            });
        }
    };
    require("eventTime", usize::MAX);
    require("reportingController", 253);
    require("reportingInstance", 128);
    require("action", 128);
    require("reason", 128);
    if !matches!(text("type"), "Normal" | "Warning") {
        causes.push(Cause {
            reason: "FieldValueNotSupported",
            field: "type".into(),
            message: format!(
                "Unsupported value: {:?}: supported values: \"Normal\", \"Warning\"",
                text("type")
            ),
        });
    }
    if text("note").len() > 1024 {
        causes.push(Cause {
            reason: "FieldValueInvalid",
            field: "note".into(),
            message: "Invalid value: can have at most 1024 bytes".into(),
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
    if out.get("reportingController").is_none_or(Value::is_null)
        && let Some(c) = out
            .get("deprecatedSource")
            .and_then(|s| s.get("component"))
            .cloned()
    {
        out.insert("reportingController".into(), c);
    }
    if out.get("eventTime").is_none_or(Value::is_null) {
        // The real server fills eventTime from the deprecated timestamps when converting.
        if let Some(t) = out
            .get("deprecatedFirstTimestamp")
            .or_else(|| out.get("deprecatedLastTimestamp"))
            .and_then(Value::as_str)
        {
            let micro = t.trim_end_matches('Z').to_string() + ".000000Z";
            out.insert("eventTime".into(), Value::String(micro));
        }
    }
    Value::Object(out)
}

/// The stored (core) form of an event written through the events.k8s.io/v1 view.
pub fn v1_to_core(obj: &Value) -> Value {
    let mut out = rename(obj, false);
    out.insert("apiVersion".into(), Value::String("v1".into()));
    out.insert("kind".into(), Value::String("Event".into()));
    if out.get("source").is_none_or(Value::is_null)
        && let Some(c) = out.get("reportingComponent").cloned()
    {
        out.insert("source".into(), serde_json::json!({ "component": c }));
    }
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
        assert_eq!(core["source"]["component"], "portway");
        let back = core_to_v1(&core);
        assert_eq!(back["note"], "hello");
        assert_eq!(back["regarding"], v1["regarding"]);
        assert_eq!(back["reportingController"], "portway");
    }
}
