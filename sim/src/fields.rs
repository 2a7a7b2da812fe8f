//! Field sets, the unit of `managedFields` ownership, after sigs.k8s.io/structured-merge-diff
//! v6 (`fieldpath`, `typed/compare.go`, `typed/tofieldset.go`): a trie of path elements
//! (`f:name`, `k:{"port":80,"protocol":"TCP"}`, `v:"x"`), each node possibly a member
//! itself (`"."` in the `FieldsV1` encoding).
//!
//! Objects are walked with the list and map semantics of [`crate::schema`]: atomic lists and
//! maps are leaves; associative lists descend by their keys, sets by value.

use crate::schema::{self, ListType};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// One step of a path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Pe {
    /// A field of an object: `f:name`.
    Field(String),
    /// An item of an associative list by its keys, as compact JSON with sorted keys.
    Key(String),
    /// An item of a set by value, as JSON.
    Value(String),
}

impl Pe {
    fn encode(&self) -> String {
        match self {
            Pe::Field(f) => format!("f:{f}"),
            Pe::Key(k) => format!("k:{k}"),
            Pe::Value(v) => format!("v:{v}"),
        }
    }

    fn decode(s: &str) -> Option<Pe> {
        let (tag, rest) = s.split_at_checked(2)?;
        Some(match tag {
            "f:" => Pe::Field(rest.to_string()),
            "k:" => Pe::Key(rest.to_string()),
            "v:" => Pe::Value(rest.to_string()),
            _ => return None,
        })
    }

    /// The element as the real server prints it in conflict messages: `.name`,
    /// `[port=80,protocol="TCP"]`, `[="x"]`.
    fn display(&self) -> String {
        match self {
            Pe::Field(f) => format!(".{f}"),
            Pe::Key(k) => {
                let m: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
                let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!("[{}]", parts.join(","))
            }
            Pe::Value(v) => format!("[={v}]"),
        }
    }
}

/// A set of field paths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet {
    member: bool,
    children: BTreeMap<Pe, FieldSet>,
}

impl FieldSet {
    /// Whether nothing is in the set.
    pub fn is_empty(&self) -> bool {
        !self.member && self.children.values().all(FieldSet::is_empty)
    }

    /// Adds a path.
    pub fn insert(&mut self, path: &[Pe]) {
        match path.split_first() {
            None => self.member = true,
            Some((first, rest)) => self.children.entry(first.clone()).or_default().insert(rest),
        }
    }

    /// Whether the path is a member.
    pub fn has(&self, path: &[Pe]) -> bool {
        match path.split_first() {
            None => self.member,
            Some((first, rest)) => self.children.get(first).is_some_and(|c| c.has(rest)),
        }
    }

    fn prune(&mut self) {
        self.children.retain(|_, c| {
            c.prune();
            !c.is_empty()
        });
    }

    /// Everything in `self` or `other`.
    pub fn union(&self, other: &FieldSet) -> FieldSet {
        let mut out = self.clone();
        out.member |= other.member;
        for (k, c) in &other.children {
            let merged = match out.children.get(k) {
                Some(mine) => mine.union(c),
                None => c.clone(),
            };
            out.children.insert(k.clone(), merged);
        }
        out
    }

    /// What is in `self` but not in `other` (members only, not their descendants).
    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && !other.member,
            children: BTreeMap::new(),
        };
        for (k, c) in &self.children {
            let d = match other.children.get(k) {
                Some(o) => c.difference(o),
                None => c.clone(),
            };
            out.children.insert(k.clone(), d);
        }
        out.prune();
        out
    }

    /// What is in `self` but neither in `other` nor below a member of `other`.
    pub fn recursive_difference(&self, other: &FieldSet) -> FieldSet {
        if other.member {
            return FieldSet::default();
        }
        let mut out = FieldSet {
            member: self.member,
            children: BTreeMap::new(),
        };
        for (k, c) in &self.children {
            let d = match other.children.get(k) {
                Some(o) => c.recursive_difference(o),
                None => c.clone(),
            };
            out.children.insert(k.clone(), d);
        }
        out.prune();
        out
    }

    /// What is in both.
    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && other.member,
            children: BTreeMap::new(),
        };
        for (k, c) in &self.children {
            if let Some(o) = other.children.get(k) {
                out.children.insert(k.clone(), c.intersection(o));
            }
        }
        out.prune();
        out
    }

    /// Every member path, in order.
    pub fn paths(&self) -> Vec<Vec<Pe>> {
        let mut out = Vec::new();
        self.collect(&mut Vec::new(), &mut out);
        out
    }

    fn collect(&self, prefix: &mut Vec<Pe>, out: &mut Vec<Vec<Pe>>) {
        if self.member {
            out.push(prefix.clone());
        }
        for (k, c) in &self.children {
            prefix.push(k.clone());
            c.collect(prefix, out);
            prefix.pop();
        }
    }

    /// The `FieldsV1` encoding.
    pub fn to_fields_v1(&self) -> Value {
        let mut m = Map::new();
        if self.member && !self.children.is_empty() {
            m.insert(".".into(), json!({}));
        }
        for (k, c) in &self.children {
            if !c.is_empty() {
                m.insert(k.encode(), c.to_fields_v1());
            }
        }
        Value::Object(m)
    }

    /// Reads the `FieldsV1` encoding; `None` if it is not one.
    pub fn from_fields_v1(v: &Value) -> Option<FieldSet> {
        let m = v.as_object()?;
        let mut out = FieldSet::default();
        for (k, c) in m {
            if k == "." {
                out.member = true;
                continue;
            }
            let mut child = FieldSet::from_fields_v1(c)?;
            if c.as_object().is_some_and(Map::is_empty) {
                child.member = true;
            }
            out.children.insert(Pe::decode(k)?, child);
        }
        Some(out)
    }
}

/// A path as the real server prints it: `.spec.ports[port=80,protocol="TCP"].targetPort`.
pub fn display_path(path: &[Pe]) -> String {
    path.iter().map(Pe::display).collect()
}

/// The outcome of comparing two versions of an object.
#[derive(Debug, Default, Clone)]
pub struct Comparison {
    /// Paths only in the new object.
    pub added: FieldSet,
    /// Leaves with another value.
    pub modified: FieldSet,
    /// Paths only in the old object.
    pub removed: FieldSet,
}

/// Walks an object with the schema of one resource.
pub struct Walker<'a> {
    storage: &'a str,
    names: Vec<&'a str>,
    path: Vec<Pe>,
}

fn is_empty_node(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::Object(m)) => m.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        Some(_) => false,
    }
}

/// The path element of a list item, or `None` when the item lacks its keys.
fn item_pe(list: ListType, item: &Value) -> Option<Pe> {
    match list {
        ListType::Set => Some(Pe::Value(item.to_string())),
        ListType::Map(keys) => {
            let mut m = Map::new();
            for k in keys {
                // Keys with a default (protocol) are filled before this is called; a key
                // still missing is left out, as upstream does for optional keys.
                match item.get(*k) {
                    Some(v) => {
                        m.insert((*k).to_string(), v.clone());
                    }
                    // `protocol` keys default to TCP in the schema, so an item that
                    // leaves it out is the TCP one.
                    None if *k == "protocol" => {
                        m.insert("protocol".into(), Value::String("TCP".into()));
                    }
                    None => {}
                }
            }
            (!m.is_empty()).then(|| Pe::Key(Value::Object(m).to_string()))
        }
        ListType::Atomic => None,
    }
}

impl<'a> Walker<'a> {
    /// A walker for objects of resource `storage`.
    pub fn new(storage: &'a str) -> Self {
        Walker {
            storage,
            names: Vec::new(),
            path: Vec::new(),
        }
    }

    fn list_type(&self) -> ListType {
        schema::list_type(self.storage, &self.names)
    }

    /// The fields an object sets (`typed.ToFieldSet`): leaves, list items, and objects that
    /// are empty.
    pub fn to_set(&mut self, v: &'a Value, out: &mut FieldSet) {
        match v {
            Value::Object(m)
                if !m.is_empty() && !schema::atomic_object(self.storage, &self.names) =>
            {
                for (k, child) in m {
                    self.descend_field(k, |w| {
                        w.to_set(child, out);
                        if is_empty_node(Some(child)) {
                            out.insert(&w.path);
                        }
                    });
                }
            }
            Value::Array(items) if self.list_type() != ListType::Atomic => {
                let lt = self.list_type();
                let atomic_items = schema::atomic_items(self.storage, &self.names);
                for item in items {
                    if let Some(pe) = item_pe(lt, item) {
                        self.path.push(pe);
                        if !atomic_items {
                            self.to_set(item, out);
                        }
                        out.insert(&self.path);
                        self.path.pop();
                    }
                }
            }
            _ => out.insert(&self.path),
        }
    }

    fn descend_field(&mut self, name: &'a str, f: impl FnOnce(&mut Self)) {
        self.names.push(name);
        self.path.push(Pe::Field(name.to_string()));
        f(self);
        self.path.pop();
        self.names.pop();
    }

    /// Compares two versions (`typed.Compare`). A `null` is a node that is there but
    /// empty (Go renders nil lists and maps of non-omitempty fields so), unlike a missing one.
    pub fn compare(&mut self, old: Option<&'a Value>, new: Option<&'a Value>, c: &mut Comparison) {
        #[derive(PartialEq)]
        enum Shape {
            Nothing,
            Object,
            List,
            Scalar,
        }
        let shape = |v: Option<&Value>| match v {
            None | Some(Value::Null) => Shape::Nothing,
            Some(Value::Object(_)) => Shape::Object,
            Some(Value::Array(_)) => Shape::List,
            Some(_) => Shape::Scalar,
        };
        let (so, sn) = (shape(old), shape(new));
        if old.is_none() && new.is_none() {
            return;
        }
        let container = match (&so, &sn) {
            (Shape::Object | Shape::Nothing, Shape::Object | Shape::Nothing)
                if so == Shape::Object || sn == Shape::Object =>
            {
                Some(Shape::Object)
            }
            (Shape::List | Shape::Nothing, Shape::List | Shape::Nothing)
                if so == Shape::List || sn == Shape::List =>
            {
                Some(Shape::List)
            }
            _ => None,
        };
        let leaf = match container {
            Some(Shape::Object) => {
                schema::atomic_object(self.storage, &self.names)
                    || (is_empty_node(old) && is_empty_node(new))
            }
            Some(_) => {
                self.list_type() == ListType::Atomic || (is_empty_node(old) && is_empty_node(new))
            }
            None => true,
        };
        if leaf {
            match (old, new) {
                (None, _) => c.added.insert(&self.path),
                (_, None) => c.removed.insert(&self.path),
                (Some(a), Some(b)) if a != b => c.modified.insert(&self.path),
                _ => {}
            }
            return;
        }
        if container == Some(Shape::Object) {
            let om = old.and_then(Value::as_object);
            let nm = new.and_then(Value::as_object);
            let keys: std::collections::BTreeSet<&'a String> = om
                .into_iter()
                .flat_map(Map::keys)
                .chain(nm.into_iter().flat_map(Map::keys))
                .collect();
            for k in keys {
                let a = om.and_then(|m| m.get(k.as_str()));
                let b = nm.and_then(|m| m.get(k.as_str()));
                self.descend_field(k.as_str(), |w| w.compare(a, b, c));
            }
        } else {
            self.compare_items(old, new, c);
        }
        if !self.path.is_empty() {
            if old.is_none() {
                c.added.insert(&self.path);
            } else if new.is_none() {
                c.removed.insert(&self.path);
            }
        }
    }

    fn compare_items(
        &mut self,
        old: Option<&'a Value>,
        new: Option<&'a Value>,
        c: &mut Comparison,
    ) {
        let lt = self.list_type();
        let atomic_items = schema::atomic_items(self.storage, &self.names);
        let index = |v: Option<&'a Value>| -> Vec<(Pe, &'a Value)> {
            v.and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|i| item_pe(lt, i).map(|pe| (pe, i)))
                        .collect()
                })
                .unwrap_or_default()
        };
        let (ol, nl) = (index(old), index(new));
        let mut pes: Vec<Pe> = ol.iter().map(|(p, _)| p.clone()).collect();
        for (p, _) in &nl {
            if !pes.contains(p) {
                pes.push(p.clone());
            }
        }
        for pe in pes {
            let a = ol.iter().find(|(p, _)| *p == pe).map(|(_, v)| *v);
            let b = nl.iter().find(|(p, _)| *p == pe).map(|(_, v)| *v);
            self.path.push(pe);
            if atomic_items {
                match (a, b) {
                    (None, _) => c.added.insert(&self.path),
                    (_, None) => c.removed.insert(&self.path),
                    (Some(x), Some(y)) if x != y => c.modified.insert(&self.path),
                    _ => {}
                }
            } else {
                self.compare(a, b, c);
            }
            self.path.pop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_of_a_configmap_owns_data_and_labels() {
        let new = json!({"metadata": {"name": "a", "labels": {"x": "1"}}, "data": {"a": "1"}});
        let old = json!({"metadata": {}});
        let mut c = Comparison::default();
        Walker::new("configmaps").compare(Some(&old), Some(&new), &mut c);
        let owned = c.added.union(&c.modified);
        assert_eq!(
            owned.to_fields_v1(),
            json!({"f:data": {".": {}, "f:a": {}},
                "f:metadata": {"f:labels": {".": {}, "f:x": {}}, "f:name": {}}})
        );
        let round = FieldSet::from_fields_v1(&owned.to_fields_v1()).expect("decodes");
        assert_eq!(round, owned);
    }

    #[test]
    fn service_ports_are_keyed_by_port_and_protocol() {
        let v = json!({"spec": {"ports": [{"port": 80, "protocol": "TCP", "name": "http"}],
            "selector": {"app": "x"}}});
        let mut set = FieldSet::default();
        Walker::new("services").to_set(&v, &mut set);
        assert_eq!(
            set.to_fields_v1(),
            json!({"f:spec": {"f:ports": {"k:{\"port\":80,\"protocol\":\"TCP\"}": {
                ".": {}, "f:name": {}, "f:port": {}, "f:protocol": {}}}, "f:selector": {}}})
        );
        let p = &set.paths()[0];
        assert_eq!(display_path(p), ".spec.ports[port=80,protocol=\"TCP\"]");
    }

    #[test]
    fn set_algebra() {
        let mut a = FieldSet::default();
        a.insert(&[Pe::Field("spec".into()), Pe::Field("x".into())]);
        a.insert(&[Pe::Field("spec".into()), Pe::Field("y".into())]);
        let mut b = FieldSet::default();
        b.insert(&[Pe::Field("spec".into()), Pe::Field("x".into())]);
        assert_eq!(a.intersection(&b), b);
        assert_eq!(a.difference(&b).paths().len(), 1);
        let mut spec = FieldSet::default();
        spec.insert(&[Pe::Field("spec".into())]);
        assert!(a.recursive_difference(&spec).is_empty());
        assert!(!a.difference(&spec).is_empty());
    }
}
