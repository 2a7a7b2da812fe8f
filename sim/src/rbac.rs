//! Identity and a small RBAC authorizer, so that a test can run a controller with exactly
//! the permissions `deploy/` grants it and see a 403 for anything else.
//!
//! Tokens are not secrets here: `sim-token/<user>` names the user. The `admin` user (and
//! the simulated controllers) bypass authorization like `system:masters` does.

use crate::store::{SYSTEM_USER, Store};
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};

/// The administrator identity of in-process clients and kubeconfigs by default.
pub const ADMIN: &str = "admin";
/// The identity of requests without credentials.
pub const ANONYMOUS: &str = "system:anonymous";
const TOKEN_PREFIX: &str = "sim-token/";

/// The bearer token that authenticates as `user`.
pub fn token_for(user: &str) -> String {
    format!("{TOKEN_PREFIX}{user}")
}

/// The user a bearer token names, if it is one of ours.
pub fn user_of(token: &str) -> Option<String> {
    token
        .strip_prefix(TOKEN_PREFIX)
        .filter(|u| !u.is_empty())
        .map(String::from)
}

/// What is being asked, in RBAC terms.
#[derive(Debug, Clone)]
pub struct Attributes<'a> {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`.
    pub verb: &'a str,
    /// API group (empty for core).
    pub group: &'a str,
    /// Plural resource.
    pub resource: &'a str,
    /// Subresource or empty.
    pub subresource: &'a str,
    /// Namespace or empty.
    pub namespace: &'a str,
    /// Object name or empty.
    pub name: &'a str,
}

/// The authorizer; off by default.
#[derive(Debug, Default)]
pub struct Rbac {
    enforce: AtomicBool,
}

fn strs(v: Option<&Value>) -> Vec<&str> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn subject_matches(s: &Value, user: &str) -> bool {
    let kind = s.get("kind").and_then(Value::as_str).unwrap_or("");
    let name = s.get("name").and_then(Value::as_str).unwrap_or("");
    match kind {
        "User" => name == user,
        "ServiceAccount" => {
            let ns = s.get("namespace").and_then(Value::as_str).unwrap_or("");
            user == format!("system:serviceaccount:{ns}:{name}")
        }
        "Group" => {
            (name == "system:authenticated" && user != ANONYMOUS)
                || (name == "system:unauthenticated" && user == ANONYMOUS)
                || (name == "system:serviceaccounts" && user.starts_with("system:serviceaccount:"))
                || name
                    .strip_prefix("system:serviceaccounts:")
                    .is_some_and(|ns| user.starts_with(&format!("system:serviceaccount:{ns}:")))
        }
        _ => false,
    }
}

fn rule_allows(rule: &Value, a: &Attributes<'_>) -> bool {
    let verbs = strs(rule.get("verbs"));
    let groups = strs(rule.get("apiGroups"));
    let resources = strs(rule.get("resources"));
    let names = strs(rule.get("resourceNames"));
    let full = if a.subresource.is_empty() {
        a.resource.to_string()
    } else {
        format!("{}/{}", a.resource, a.subresource)
    };
    (verbs.contains(&"*") || verbs.contains(&a.verb))
        && (groups.contains(&"*") || groups.contains(&a.group))
        && (resources.contains(&"*") || resources.contains(&full.as_str()))
        && (names.is_empty() || (!a.name.is_empty() && names.contains(&a.name)))
}

impl Rbac {
    /// Turns enforcement on or off.
    pub fn set_enforced(&self, on: bool) {
        self.enforce.store(on, Ordering::SeqCst);
    }

    /// Whether `user` may do `a`, from the stored Roles, ClusterRoles and their bindings.
    pub fn allowed(&self, store: &Store, user: &str, a: &Attributes<'_>) -> bool {
        if !self.enforce.load(Ordering::SeqCst) || user == ADMIN || user == SYSTEM_USER {
            return true;
        }
        let role_rules = |storage: &str, ns: &str, name: &str| -> Vec<Value> {
            store
                .snapshot(storage)
                .iter()
                .filter(|r| {
                    r.pointer("/metadata/name").and_then(Value::as_str) == Some(name)
                        && r.pointer("/metadata/namespace")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            == ns
                })
                .flat_map(|r| {
                    r.get("rules")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default()
                })
                .collect()
        };
        let mut rules = Vec::new();
        for b in store.snapshot("clusterrolebindings") {
            if strs_subjects(&b).iter().any(|s| subject_matches(s, user)) {
                let name = b
                    .pointer("/roleRef/name")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                rules.extend(role_rules("clusterroles", "", name));
            }
        }
        if !a.namespace.is_empty() {
            for b in store.snapshot("rolebindings") {
                if b.pointer("/metadata/namespace").and_then(Value::as_str) != Some(a.namespace) {
                    continue;
                }
                if strs_subjects(&b).iter().any(|s| subject_matches(s, user)) {
                    let name = b
                        .pointer("/roleRef/name")
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    match b.pointer("/roleRef/kind").and_then(Value::as_str) {
                        Some("ClusterRole") => rules.extend(role_rules("clusterroles", "", name)),
                        _ => rules.extend(role_rules("roles", a.namespace, name)),
                    }
                }
            }
        }
        rules.iter().any(|r| rule_allows(r, a))
    }
}

fn strs_subjects(b: &Value) -> Vec<Value> {
    b.get("subjects")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// The 403 message of the real authorizer.
pub fn forbidden_message(user: &str, a: &Attributes<'_>) -> String {
    let res = if a.subresource.is_empty() {
        a.resource.to_string()
    } else {
        format!("{}/{}", a.resource, a.subresource)
    };
    let what = if a.name.is_empty() {
        res.clone()
    } else {
        format!("{res} \"{}\"", a.name)
    };
    let scope = if a.namespace.is_empty() {
        "at the cluster scope".to_string()
    } else {
        format!("in the namespace \"{}\"", a.namespace)
    };
    format!(
        "{what} is forbidden: User \"{user}\" cannot {} resource \"{res}\" in API group \"{}\" {scope}",
        a.verb, a.group
    )
}
