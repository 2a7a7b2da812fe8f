//! Label and field selectors as the API server parses them from `labelSelector` and
//! `fieldSelector` query parameters.
//!
//! A selector that cannot be parsed is a `400 BadRequest`, as on the real server, rather than
//! a silent match-all: a client bug must show up in tests.

use serde_json::Value;

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Req {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(Vec<Req>);

/// Splits on commas that are not inside parentheses.
fn split_top(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' => {
                depth += 1;
                cur.push(c);
            }
            ')' => {
                depth -= 1;
                cur.push(c);
            }
            ',' if depth == 0 => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter()
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

fn set_values(rest: &str) -> Result<Vec<String>, String> {
    let rest = rest.trim();
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| format!("expected a parenthesised value list, found {rest:?}"))?;
    Ok(inner
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect())
}

impl LabelSelector {
    /// Parses `a=b,c!=d,e in (x,y),f notin (z),g,!h`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for part in split_top(s) {
            if let Some(key) = part.strip_prefix('!') {
                reqs.push(Req::NotExists(valid_key(key.trim())?));
            } else if let Some((k, v)) = part.split_once("!=") {
                reqs.push(Req::NotEq(valid_key(k.trim())?, v.trim().to_string()));
            } else if let Some((k, v)) = part.split_once("==") {
                reqs.push(Req::Eq(valid_key(k.trim())?, v.trim().to_string()));
            } else if let Some((k, v)) = part.split_once('=') {
                reqs.push(Req::Eq(valid_key(k.trim())?, v.trim().to_string()));
            } else if let Some((k, rest)) = part.split_once(" notin ") {
                reqs.push(Req::NotIn(valid_key(k.trim())?, set_values(rest)?));
            } else if let Some((k, rest)) = part.split_once(" in ") {
                reqs.push(Req::In(valid_key(k.trim())?, set_values(rest)?));
            } else {
                let mut words = part.split_whitespace();
                let key = words.next().unwrap_or("");
                if let Some(found) = words.next() {
                    // k8s.io/apimachinery labels.Parser: a key followed by anything but
                    // an operator.
                    return Err(format!(
                        "found '{found}', expected: in, notin, =, ==, !=, gt, lt"
                    ));
                }
                reqs.push(Req::Exists(valid_key(key)?));
            }
        }
        Ok(LabelSelector(reqs))
    }

    /// Whether the selector selects everything.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether an object's `metadata.labels` satisfy every requirement.
    pub fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels");
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Req::Eq(k, v) => get(k) == Some(v.as_str()),
            Req::NotEq(k, v) => get(k) != Some(v.as_str()),
            Req::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Req::NotIn(k, vs) => !get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Req::Exists(k) => get(k).is_some(),
            Req::NotExists(k) => get(k).is_none(),
        })
    }
}

fn valid_key(k: &str) -> Result<String, String> {
    let ok = !k.is_empty()
        && k.len() <= 317
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    if ok {
        Ok(k.to_string())
    } else {
        Err(format!("invalid label key {k:?}"))
    }
}

/// A parsed field selector over the fields a resource supports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

/// The fields each storage supports in a field selector besides `metadata.name` and
/// `metadata.namespace` (the real server's per-resource field label conversion).
fn supported(storage: &str, field: &str) -> Option<&'static str> {
    Some(match (storage, field) {
        (_, "metadata.name") => "/metadata/name",
        (_, "metadata.namespace") => "/metadata/namespace",
        ("pods", "spec.nodeName") => "/spec/nodeName",
        ("pods", "status.phase") => "/status/phase",
        ("pods", "spec.serviceAccountName") => "/spec/serviceAccountName",
        // A real server knows only `spec.type` here; a bare `type` is refused (400).
        ("services", "spec.type") => "/spec/type",
        ("services", "spec.clusterIP") => "/spec/clusterIP",
        ("nodes", "spec.unschedulable") => "/spec/unschedulable",
        ("secrets", "type") => "/type",
        ("events", "involvedObject.kind") => "/involvedObject/kind",
        ("events", "involvedObject.name") => "/involvedObject/name",
        ("events", "involvedObject.namespace") => "/involvedObject/namespace",
        ("events", "involvedObject.uid") => "/involvedObject/uid",
        // The rest of the real server's event fields (pkg/registry/core/event/strategy.go
        // ToSelectableFields): `source` is `source.component`.
        ("events", "involvedObject.apiVersion") => "/involvedObject/apiVersion",
        ("events", "involvedObject.resourceVersion") => "/involvedObject/resourceVersion",
        ("events", "involvedObject.fieldPath") => "/involvedObject/fieldPath",
        ("events", "source") => "/source/component",
        ("events", "reason") => "/reason",
        ("events", "type") => "/type",
        ("events", "reportingComponent") => "/reportingComponent",
        _ => return None,
    })
}

impl FieldSelector {
    /// Parses `a=b,c!=d` for the given storage; unknown fields are refused like the real
    /// server ("field label not supported").
    pub fn parse(storage: &str, s: &str) -> Result<Self, String> {
        let mut out = Vec::new();
        for part in split_top(s) {
            let (k, eq, v) = if let Some((k, v)) = part.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = part.split_once("==") {
                (k, true, v)
            } else if let Some((k, v)) = part.split_once('=') {
                (k, true, v)
            } else {
                return Err(format!(
                    "invalid field selector {part:?}: expected field=value"
                ));
            };
            let k = k.trim();
            let ptr =
                supported(storage, k).ok_or_else(|| format!("field label not supported: {k}"))?;
            out.push((ptr.to_string(), eq, v.trim().to_string()));
        }
        Ok(FieldSelector(out))
    }

    /// Whether the selector selects everything.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether the (stored, core-form) object matches.
    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(ptr, eq, want)| {
            let have = match obj.pointer(ptr) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Bool(b)) => b.to_string(),
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
            (have == *want) == *eq
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selector_operators() {
        let obj = json!({"metadata": {"labels": {"app": "web", "tier": "fe"}}});
        let m = |s: &str| LabelSelector::parse(s).expect("parses").matches(&obj);
        assert!(m(""));
        assert!(m("app=web"));
        assert!(m("app==web,tier"));
        assert!(!m("app!=web"));
        assert!(m("app in (web, api)"));
        assert!(!m("app notin (web)"));
        assert!(m("tier notin (be),!missing"));
        assert!(!m("missing"));
        assert!(LabelSelector::parse("a b c").is_err());
    }

    #[test]
    fn field_selector_per_resource() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n1"}});
        let f = FieldSelector::parse("pods", "spec.nodeName=n1").expect("ok");
        assert!(f.matches(&pod));
        assert!(
            !FieldSelector::parse("pods", "spec.nodeName!=n1")
                .expect("ok")
                .matches(&pod)
        );
        assert!(FieldSelector::parse("services", "spec.nodeName=n1").is_err());
        let svc = json!({"metadata": {"name": "s"}, "spec": {"type": "LoadBalancer"}});
        assert!(
            FieldSelector::parse("services", "spec.type=LoadBalancer")
                .expect("ok")
                .matches(&svc)
        );
        assert!(
            FieldSelector::parse("services", "type=LoadBalancer").is_err(),
            "a real server answers `field label not supported: type`"
        );
    }
}
