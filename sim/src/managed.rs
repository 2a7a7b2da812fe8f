//! `metadata.managedFields` and server-side apply, after the real server's field manager
//! (k8s.io/apimachinery `pkg/util/managedfields/internal`: managedfieldsupdater.go,
//! stripmeta.go, skipnonapplied.go, conflict.go; structured-merge-diff `merge/update.go`).
//!
//! Every write is attributed to a manager (the `fieldManager` parameter, else the client's
//! User-Agent up to its first `/`): an update owns the fields it added or changed and takes
//! them from other managers; an apply owns exactly the fields of its configuration, merges
//! them into the object, removes the fields it stopped applying that nobody else owns, and
//! fails with `409 Conflict` when it would change a field another manager owns, unless
//! forced.

use crate::error::{ApiError, Cause};
use crate::fields::{self, Comparison, FieldSet, Pe, Walker};
use crate::schema::{self, ListType};
use serde_json::{Map, Value, json};

/// Who writes, and through which endpoint.
#[derive(Debug, Clone)]
pub struct Writer<'a> {
    /// The manager name.
    pub manager: &'a str,
    /// `""` or `status`.
    pub subresource: &'a str,
    /// The request's `apiVersion` (`v1`, `apps/v1`).
    pub api_version: String,
    /// Resource storage key, for the schema.
    pub storage: &'a str,
    /// Whether the resource has a status subresource (its status is reset on the main
    /// resource, and everything else on `/status`).
    pub has_status: bool,
}

/// One `managedFields` entry, decoded.
#[derive(Debug, Clone)]
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    subresource: String,
    time: Option<Value>,
    set: FieldSet,
}

impl Entry {
    fn same_key(&self, manager: &str, op: &str, w: &Writer<'_>) -> bool {
        self.manager == manager
            && self.operation == op
            && self.subresource == w.subresource
            && self.api_version == w.api_version
    }

    fn encode(&self) -> Value {
        let mut e = json!({"manager": self.manager, "operation": self.operation,
            "apiVersion": self.api_version, "fieldsType": "FieldsV1",
            "fieldsV1": self.set.to_fields_v1()});
        if let Some(t) = &self.time {
            e["time"] = t.clone();
        }
        if !self.subresource.is_empty() {
            e["subresource"] = json!(self.subresource);
        }
        e
    }

    /// The manager as conflict messages print it (conflict.go `printManager`).
    fn printed(&self) -> String {
        let mut s = format!("{:?}", self.manager);
        if !self.subresource.is_empty() {
            s = format!("{s} with subresource {:?}", self.subresource);
        }
        if self.operation == "Update" {
            s = format!("{s} using {}", self.api_version);
        }
        s
    }
}

fn decode(v: Option<&Value>) -> Option<Vec<Entry>> {
    let list = v?.as_array()?;
    list.iter()
        .map(|e| {
            Some(Entry {
                manager: e.get("manager")?.as_str()?.to_string(),
                operation: e.get("operation")?.as_str()?.to_string(),
                api_version: e
                    .get("apiVersion")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                subresource: e
                    .get("subresource")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                time: e.get("time").cloned(),
                set: FieldSet::from_fields_v1(e.get("fieldsV1")?)?,
            })
        })
        .collect()
}

fn encode(entries: &mut [Entry]) -> Value {
    // managedfields.go sortEncodedManagedFields: Apply before Update, then by time,
    // manager, apiVersion, subresource.
    entries.sort_by(|a, b| {
        let t = |e: &Entry| {
            e.time
                .as_ref()
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        (
            &a.operation,
            t(a),
            &a.manager,
            &a.api_version,
            &a.subresource,
        )
            .cmp(&(
                &b.operation,
                t(b),
                &b.manager,
                &b.api_version,
                &b.subresource,
            ))
    });
    Value::Array(entries.iter().map(Entry::encode).collect())
}

/// The paths the field manager never attributes (stripmeta.go) as a set.
fn stripped() -> FieldSet {
    let mut s = FieldSet::default();
    let f = |n: &str| Pe::Field(n.to_string());
    s.insert(&[f("apiVersion")]);
    s.insert(&[f("kind")]);
    s.insert(&[f("metadata")]);
    for m in [
        "name",
        "namespace",
        "creationTimestamp",
        "selfLink",
        "uid",
        "clusterName",
        "generation",
        "managedFields",
        "resourceVersion",
    ] {
        s.insert(&[f("metadata"), f(m)]);
    }
    s
}

/// The fields a write through this endpoint cannot change (the strategies' reset fields):
/// status on the main resource, everything but status and metadata on `/status`.
fn reset_fields(w: &Writer<'_>, obj: &Value) -> FieldSet {
    let mut s = FieldSet::default();
    if !w.has_status {
        return s;
    }
    if w.subresource == "status" {
        for k in obj.as_object().into_iter().flat_map(Map::keys) {
            if k != "status" && k != "metadata" && k != "apiVersion" && k != "kind" {
                s.insert(&[Pe::Field(k.clone())]);
            }
        }
        s.insert(&[Pe::Field("spec".into())]);
    } else {
        s.insert(&[Pe::Field("status".into())]);
    }
    s
}

fn now() -> Value {
    json!(chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string())
}

fn owned_changes(c: &Comparison) -> FieldSet {
    c.added.union(&c.modified)
}

/// Records an update (create, update, any patch but apply) in `new`'s managedFields.
/// `live` is the stored object, or for a create the empty object of the kind.
pub fn update(w: &Writer<'_>, live: &Value, new: &mut Value, creating: bool) {
    let requested = new.pointer("/metadata/managedFields").cloned();
    let mut entries = match &requested {
        // An empty list resets the managed fields (fieldmanager.go isResetManagedFields).
        Some(Value::Array(a)) if a.is_empty() => {
            if let Some(m) = new["metadata"].as_object_mut() {
                m.remove("managedFields");
            }
            return;
        }
        Some(v) => decode(Some(v))
            .filter(|e| !e.is_empty())
            .or_else(|| decode(live.pointer("/metadata/managedFields")))
            .unwrap_or_default(),
        None => decode(live.pointer("/metadata/managedFields")).unwrap_or_default(),
    };
    // An object stored without managed fields is not tracked by updates
    // (skipnonapplied.go); a new one is.
    if entries.is_empty() && !creating {
        if let Some(m) = new["metadata"].as_object_mut() {
            m.remove("managedFields");
        }
        return;
    }
    let mut c = Comparison::default();
    Walker::new(w.storage).compare(Some(live), Some(&*new), &mut c);
    let reset = reset_fields(w, new);
    let changed = owned_changes(&c)
        .recursive_difference(&reset)
        .difference(&stripped());
    let removed = c
        .removed
        .recursive_difference(&reset)
        .difference(&stripped());
    for e in &mut entries {
        e.set = e.set.difference(&changed).difference(&removed);
    }
    if !changed.is_empty() {
        match entries
            .iter_mut()
            .find(|e| e.same_key(w.manager, "Update", w))
        {
            Some(e) => {
                e.set = e.set.union(&changed);
                e.time = Some(now());
            }
            None => entries.push(Entry {
                manager: w.manager.to_string(),
                operation: "Update".into(),
                api_version: w.api_version.clone(),
                subresource: w.subresource.to_string(),
                time: Some(now()),
                set: changed,
            }),
        }
    }
    entries.retain(|e| !e.set.is_empty());
    set_entries(new, &mut entries);
}

fn set_entries(obj: &mut Value, entries: &mut [Entry]) {
    if entries.is_empty() {
        if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("managedFields");
        }
    } else {
        obj["metadata"]["managedFields"] = encode(entries);
    }
}

/// Server-side apply of `config` onto `live` (the stored object, or the empty object of the
/// kind for a create): the merged object with its managedFields, or `409` with the
/// conflicts.
pub fn apply(w: &Writer<'_>, live: &Value, config: &Value, force: bool) -> Result<Value, ApiError> {
    let mut entries = decode(live.pointer("/metadata/managedFields")).unwrap_or_default();
    let mut merged = live.clone();
    merge(w.storage, &mut Vec::new(), &mut merged, config);
    let reset = reset_fields(w, config);
    let mut set = FieldSet::default();
    Walker::new(w.storage).to_set(config, &mut set);
    let set = set.recursive_difference(&reset).difference(&stripped());
    let last = entries
        .iter()
        .find(|e| e.same_key(w.manager, "Apply", w))
        .map(|e| e.set.clone());
    if let Some(last) = last {
        let others = entries
            .iter()
            .filter(|e| !e.same_key(w.manager, "Apply", w))
            .fold(FieldSet::default(), |acc, e| acc.union(&e.set));
        for path in last.difference(&set).difference(&others).paths() {
            remove_path(&mut merged, &path);
        }
    }
    let mut c = Comparison::default();
    Walker::new(w.storage).compare(Some(live), Some(&merged), &mut c);
    let changed = owned_changes(&c)
        .recursive_difference(&reset)
        .difference(&stripped());
    let mut conflicts: Vec<(String, String)> = Vec::new();
    for e in &entries {
        if e.same_key(w.manager, "Apply", w) {
            continue;
        }
        for p in e.set.intersection(&changed).paths() {
            conflicts.push((e.printed(), fields::display_path(&p)));
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflict_error(&conflicts));
    }
    let removed = c
        .removed
        .recursive_difference(&reset)
        .difference(&stripped());
    for e in &mut entries {
        if !e.same_key(w.manager, "Apply", w) {
            e.set = e.set.difference(&changed).difference(&removed);
        }
    }
    let changed_object = merged != *live;
    match entries
        .iter_mut()
        .find(|e| e.same_key(w.manager, "Apply", w))
    {
        Some(e) => {
            e.set = set;
            if changed_object {
                e.time = Some(now());
            }
        }
        None => entries.push(Entry {
            manager: w.manager.to_string(),
            operation: "Apply".into(),
            api_version: w.api_version.clone(),
            subresource: w.subresource.to_string(),
            time: Some(now()),
            set,
        }),
    }
    entries.retain(|e| !e.set.is_empty());
    set_entries(&mut merged, &mut entries);
    Ok(merged)
}

/// conflict.go `NewConflictError`.
fn conflict_error(conflicts: &[(String, String)]) -> ApiError {
    let message = if let [(m, p)] = conflicts {
        format!("Apply failed with 1 conflict: conflict with {m}: {p}")
    } else {
        let mut managers: Vec<&String> = conflicts.iter().map(|(m, _)| m).collect();
        managers.sort();
        managers.dedup();
        let mut lines = Vec::new();
        for m in managers {
            lines.push(format!("conflicts with {m}:"));
            for (_, p) in conflicts.iter().filter(|(x, _)| x == m) {
                lines.push(format!("- {p}"));
            }
        }
        format!(
            "Apply failed with {} conflicts: {}",
            conflicts.len(),
            lines.join("\n")
        )
    };
    let mut e = ApiError::conflict_apply(message);
    e.causes = conflicts
        .iter()
        .map(|(m, p)| Cause {
            reason: "FieldManagerConflict",
            field: p.clone(),
            message: format!("conflict with {m}"),
        })
        .collect();
    e
}

fn item_matches(lt: ListType, item: &Value, other: &Value) -> bool {
    match lt {
        ListType::Map(keys) => keys.iter().all(|k| {
            let tcp = Value::String("TCP".into());
            let key = |v: &Value| match v.get(*k) {
                None if *k == "protocol" => Some(tcp.clone()),
                x => x.cloned(),
            };
            key(item) == key(other)
        }),
        ListType::Set => item == other,
        ListType::Atomic => false,
    }
}

/// The structural merge of an applied configuration (typed `Merge`): objects merge by
/// field, associative lists by key, sets by value; atomic nodes and scalars are replaced.
fn merge<'a>(storage: &str, names: &mut Vec<&'a str>, live: &mut Value, config: &'a Value) {
    match (live.as_object_mut(), config) {
        (Some(lm), Value::Object(cm))
            if !cm.is_empty() && !schema::atomic_object(storage, names) =>
        {
            for (k, cv) in cm {
                names.push(k.as_str());
                match lm.get_mut(k) {
                    Some(lv) if !lv.is_null() => merge(storage, names, lv, cv),
                    _ => {
                        lm.insert(k.clone(), cv.clone());
                    }
                }
                names.pop();
            }
            return;
        }
        _ => {}
    }
    let lt = schema::list_type(storage, names);
    match (live.as_array_mut(), config) {
        (Some(items), Value::Array(citems)) if lt != ListType::Atomic => {
            let atomic_items = schema::atomic_items(storage, names);
            for ci in citems {
                match items.iter_mut().find(|li| item_matches(lt, li, ci)) {
                    Some(li) if lt == ListType::Set || atomic_items => *li = ci.clone(),
                    Some(li) => merge(storage, names, li, ci),
                    None => items.push(ci.clone()),
                }
            }
        }
        _ => *live = config.clone(),
    }
}

/// Removes the node at `path` (a member of a field set) from an object.
fn remove_path(v: &mut Value, path: &[Pe]) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    match (first, v) {
        (Pe::Field(f), Value::Object(m)) => {
            if rest.is_empty() {
                m.remove(f);
            } else if let Some(child) = m.get_mut(f) {
                remove_path(child, rest);
            }
        }
        (Pe::Key(k), Value::Array(items)) => {
            let key: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
            let pos = items
                .iter()
                .position(|i| key.iter().all(|(kk, kv)| i.get(kk) == Some(kv)));
            if let Some(pos) = pos {
                if rest.is_empty() {
                    items.remove(pos);
                } else {
                    remove_path(&mut items[pos], rest);
                }
            }
        }
        (Pe::Value(val), Value::Array(items)) => {
            let val: Value = serde_json::from_str(val).unwrap_or(Value::Null);
            items.retain(|i| *i != val);
        }
        _ => {}
    }
}
