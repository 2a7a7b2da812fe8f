//! What may differ between two correct API servers, replaced by its shape before the
//! comparison: uids, timestamps, resourceVersions and continue tokens, names made from
//! `generateName`, cluster IPs (10.43.0.0/16, fd00:43::/112 on both) and node ports
//! (30000-32767). Everything else, `managedFields` included, must be equal.

use super::corpus::{Exchange, Step};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// The comparable form of an answer: status, media type, warnings, normalized body.
pub fn exchange(step: &Step, ex: &Exchange) -> Value {
    let mut body = ex.body.clone();
    let mut names = BTreeMap::new();
    generated_names(&body, &mut names);
    walk(&mut body, "", &names);
    let warnings: Vec<Value> = ex
        .warnings
        .iter()
        .map(|w| Value::String(text(w, &names)))
        .collect();
    let mut out = json!({"status": ex.status, "contentType": ex.content_type,
        "warnings": warnings, "body": body});
    // `ignore` pointers are into this whole exchange (`/body/...`, `/warnings`).
    for ptr in &step.ignore {
        remove(&mut out, ptr);
    }
    out
}

/// Removes what a pointer names; a `*` segment stands for every element or key.
fn remove(v: &mut Value, ptr: &str) {
    let segs: Vec<String> = ptr
        .split('/')
        .skip(1)
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect();
    remove_at(v, &segs);
}

fn remove_at(v: &mut Value, segs: &[String]) {
    let Some((first, rest)) = segs.split_first() else {
        return;
    };
    match v {
        Value::Object(m) if rest.is_empty() => {
            if first == "*" {
                m.clear();
            } else {
                m.remove(first);
            }
        }
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                if first == "*" || k == first {
                    remove_at(x, rest);
                }
            }
        }
        Value::Array(a) if rest.is_empty() => {
            if first == "*" {
                a.clear();
            } else if let Ok(i) = first.parse::<usize>()
                && i < a.len()
            {
                a.remove(i);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter_mut().enumerate() {
                if first == "*" || first.parse::<usize>() == Ok(i) {
                    remove_at(x, rest);
                }
            }
        }
        _ => {}
    }
}

/// Names an object got from its `generateName`: name -> `prefix<gen>`.
fn generated_names(v: &Value, out: &mut BTreeMap<String, String>) {
    match v {
        Value::Object(m) => {
            if let (Some(Value::String(g)), Some(Value::String(n))) = (
                m.get("metadata").and_then(|md| md.get("generateName")),
                m.get("metadata").and_then(|md| md.get("name")),
            ) && n.starts_with(g.as_str())
                && n.len() > g.len()
            {
                out.insert(n.clone(), format!("{g}<gen>"));
            }
            m.values().for_each(|x| generated_names(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| generated_names(x, out)),
        _ => {}
    }
}

fn walk(v: &mut Value, key: &str, names: &BTreeMap<String, String>) {
    match v {
        Value::Object(m) => {
            // Keys carry uids too (`k:{"uid":"..."}` in managedFields).
            if m.keys().any(|k| has_uuid(k)) {
                let old = std::mem::take(m);
                for (k, v) in old {
                    m.insert(uuids_in(&k), v);
                }
            }
            for (k, x) in m.iter_mut() {
                walk(x, k, names);
            }
        }
        Value::Array(a) => {
            a.iter_mut().for_each(|x| walk(x, key, names));
            if key == "managedFields" {
                // Ordered by time to the second on the server, which two servers need not
                // share: compared by operation, manager and subresource instead.
                let k = |e: &Value| {
                    ["operation", "manager", "subresource"]
                        .map(|f| e.get(f).and_then(Value::as_str).unwrap_or("").to_string())
                };
                a.sort_by_key(k);
            }
        }
        Value::String(s) => {
            if let Some(n) = shape(key, s, names) {
                *s = n;
            }
        }
        Value::Number(n)
            if matches!(key, "nodePort" | "healthCheckNodePort")
                && n.as_u64().is_some_and(|p| (30000..=32767).contains(&p)) =>
        {
            *v = Value::String("<node-port>".into());
        }
        _ => {}
    }
}

fn shape(key: &str, s: &str, names: &BTreeMap<String, String>) -> Option<String> {
    if matches!(key, "resourceVersion") && !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return Some("<rv>".into());
    }
    if key == "continue" && !s.is_empty() {
        return Some("<continue>".into());
    }
    if let Some(n) = names.get(s) {
        return Some(n.clone());
    }
    // The projected token volume the ServiceAccount admission plugin names at random.
    if let Some(rest) = s.strip_prefix("kube-api-access-")
        && rest.len() == 5
    {
        return Some("kube-api-access-<gen>".into());
    }
    if is_uuid(s) {
        return Some("<uid>".into());
    }
    if is_time(s) {
        return Some("<time>".into());
    }
    if let Some(ip) = cluster_ip(s) {
        return Some(ip);
    }
    let t = text(s, names);
    (t != s).then_some(t)
}

/// Shapes inside free text (messages, warnings).
fn text(s: &str, names: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        let trimmed = word.trim_end_matches([',', ')', '.', ':', '"', ']']);
        let tail = &word[trimmed.len()..];
        let lead = trimmed.trim_start_matches(['(', '"', '[']);
        let head = &trimmed[..trimmed.len() - lead.len()];
        let replaced = if let Some(n) = names.get(lead) {
            n.clone()
        } else if is_uuid(lead) {
            "<uid>".into()
        } else if is_time(lead) {
            "<time>".into()
        } else if let Some(ip) = cluster_ip(lead) {
            ip
        } else {
            lead.to_string()
        };
        out.push_str(head);
        out.push_str(&replaced);
        out.push_str(tail);
        word.clear();
    };
    for c in s.chars() {
        if c.is_whitespace() {
            flush(&mut word, &mut out);
            out.push(c);
        } else {
            word.push(c);
        }
    }
    flush(&mut word, &mut out);
    if out.to_lowercase().contains("resource version") || out.contains("ResourceVersion") {
        // `too old resource version: 12 (345)`: the numbers are each server's own.
        let mut o = String::new();
        let mut in_num = false;
        for c in out.chars() {
            if c.is_ascii_digit() {
                if !in_num {
                    o.push_str("<n>");
                }
                in_num = true;
            } else {
                in_num = false;
                o.push(c);
            }
        }
        out = o;
    }
    out
}

fn has_uuid(s: &str) -> bool {
    uuids_in(s) != s
}

/// `s` with every uuid-shaped substring replaced.
fn uuids_in(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < b.len() {
        if i + 36 <= b.len()
            && s.is_char_boundary(i)
            && s.is_char_boundary(i + 36)
            && is_uuid(&s[i..i + 36])
        {
            out.push_str("<uid>");
            i += 36;
        } else {
            let c = s[i..].chars().next().unwrap_or(' ');
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

fn is_time(s: &str) -> bool {
    let b = s.as_bytes();
    (20..=32).contains(&b.len())
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && (s.ends_with('Z') || s.ends_with("+00:00"))
}

fn cluster_ip(s: &str) -> Option<String> {
    match s.parse::<IpAddr>().ok()? {
        IpAddr::V4(v4) if v4.octets()[..2] == [10, 43] && v4.octets() != [10, 43, 0, 1] => {
            Some("<cluster-ipv4>".into())
        }
        IpAddr::V6(v6) if v6.segments()[..7] == [0xfd00, 0x43, 0, 0, 0, 0, 0] => {
            Some("<cluster-ipv6>".into())
        }
        _ => None,
    }
}

/// JSON pointers where two values differ (at most 20).
pub fn differing_paths(a: &Value, b: &Value) -> Vec<String> {
    let mut out = Vec::new();
    diff(a, b, String::new(), &mut out);
    out
}

fn diff(a: &Value, b: &Value, path: String, out: &mut Vec<String>) {
    if out.len() >= 20 || a == b {
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            let empty = Value::Null;
            for k in keys {
                diff(
                    x.get(k).unwrap_or(&empty),
                    y.get(k).unwrap_or(&empty),
                    format!("{path}/{k}"),
                    out,
                );
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                diff(p, q, format!("{path}/{i}"), out);
            }
        }
        _ => out.push(path),
    }
}
