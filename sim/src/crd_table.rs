//! Tables of custom resources: `Name`, then the CRD version's `additionalPrinterColumns`
//! (or `Age` when it has none), cells found by the columns' JSONPath and rendered by type,
//! as kube-apiserver's CRD table convertor does.

use crate::crd::Custom;
use crate::tables::{AGE_DOC, NAME_DOC, age_of, row_of};
use serde_json::{Value, json};

fn default_columns() -> Vec<Value> {
    vec![
        json!({"name": "Age", "type": "date", "description": AGE_DOC,
        "jsonPath": ".metadata.creationTimestamp"}),
    ]
}

/// The Table of custom resources `items`.
pub fn table(custom: &Custom, items: &[Value], meta: Value, include: &str) -> Value {
    let columns = if custom.columns.is_empty() {
        default_columns()
    } else {
        custom.columns.clone()
    };
    let mut defs = vec![json!({"name": "Name", "type": "string", "format": "name",
        "description": NAME_DOC, "priority": 0})];
    for c in &columns {
        defs.push(json!({
            "name": c["name"].as_str().unwrap_or(""),
            "type": c["type"].as_str().unwrap_or(""),
            "format": c["format"].as_str().unwrap_or(""),
            "description": c["description"].as_str().filter(|d| !d.is_empty()).map_or_else(
                || format!(
                    "Custom resource definition column (in JSONPath format): {}",
                    c["jsonPath"].as_str().unwrap_or("")
                ),
                String::from,
            ),
            "priority": c["priority"].as_i64().unwrap_or(0),
        }));
    }
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let mut cells = vec![o.pointer("/metadata/name").cloned().unwrap_or(json!(""))];
            for c in &columns {
                let path = c["jsonPath"].as_str().unwrap_or("");
                cells.push(cell(c["type"].as_str().unwrap_or(""), &find(o, path)));
            }
            row_of(cells, o, include)
        })
        .collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta,
        "columnDefinitions": defs, "rows": rows})
}

/// A cell: `null` when the path finds nothing; by the column type otherwise.
fn cell(ty: &str, found: &[Value]) -> Value {
    let Some(first) = found.first() else {
        return Value::Null;
    };
    match ty {
        "integer" => first
            .as_i64()
            .or_else(|| first.as_f64().map(|f| f as i64))
            .map_or(Value::Null, |i| json!(i)),
        "number" => first.as_f64().map_or(Value::Null, |f| json!(f)),
        "boolean" => first.as_bool().map_or(Value::Null, |b| json!(b)),
        "date" => first.as_str().map_or(Value::Null, |t| json!(age_of(t))),
        _ => {
            let parts: Vec<String> = found.iter().map(print).collect();
            json!(parts.join(" "))
        }
    }
}

/// How the JSONPath printer shows a value: text as is, others as JSON.
fn print(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The values a JSONPath of printer columns finds: `.a.b`, `[n]`, `[*]` and
/// `[?(@.k=="v")]` filters, which is what column paths use.
pub fn find(o: &Value, path: &str) -> Vec<Value> {
    let mut current = vec![o.clone()];
    let mut rest = path.trim_start_matches('{').trim_end_matches('}');
    rest = rest.strip_prefix('$').unwrap_or(rest);
    while !rest.is_empty() {
        let (next, tail): (Vec<Value>, &str) = if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            let key = &r[..end];
            (
                current.iter().filter_map(|v| v.get(key).cloned()).collect(),
                &r[end..],
            )
        } else if let Some(r) = rest.strip_prefix('[') {
            let Some(end) = r.find(']') else {
                return Vec::new();
            };
            let sel = &r[..end];
            let mut out = Vec::new();
            for v in &current {
                let items = v.as_array().cloned().unwrap_or_default();
                if sel == "*" {
                    out.extend(items);
                } else if let Ok(i) = sel.parse::<i64>() {
                    let idx = if i < 0 { items.len() as i64 + i } else { i };
                    if let Some(x) = usize::try_from(idx).ok().and_then(|i| items.get(i)) {
                        out.push(x.clone());
                    }
                } else if let Some(f) = sel.strip_prefix("?(@.").and_then(|f| f.strip_suffix(')'))
                    && let Some((k, want)) = f.split_once("==")
                {
                    let want = want.trim().trim_matches(|c| c == '"' || c == '\'');
                    out.extend(
                        items
                            .into_iter()
                            .filter(|x| x.get(k.trim()).map(print).as_deref() == Some(want)),
                    );
                }
            }
            (out, &r[end + 1..])
        } else {
            return Vec::new();
        };
        current = next;
        rest = tail;
    }
    current
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printer_column_paths() {
        let o = json!({"spec": {"cidrs": ["10.0.0.0/8", "fd00::/64"], "n": 3},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        assert_eq!(find(&o, ".spec.n"), vec![json!(3)]);
        assert_eq!(find(&o, ".spec.cidrs[1]"), vec![json!("fd00::/64")]);
        assert_eq!(
            cell("string", &find(&o, ".spec.cidrs[*]")),
            json!("10.0.0.0/8 fd00::/64")
        );
        assert_eq!(
            find(&o, r#".status.conditions[?(@.type=="Ready")].status"#),
            vec![json!("True")]
        );
        assert_eq!(cell("integer", &find(&o, ".spec.missing")), Value::Null);
    }
}
