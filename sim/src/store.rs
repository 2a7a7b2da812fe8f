//! The object store: every object as JSON, one global resourceVersion, a bounded event
//! history for watches, and the write rules of the real API server (metadata, status
//! subresource, generation, finalizers, garbage collection, Service defaulting).
//!
//! Everything sits behind one mutex with no `.await` inside, so each request is atomic and
//! the resourceVersion order is the commit order.

use crate::error::ApiError;
use crate::events_view;
use crate::faults::{WriteLog, WriteRecord};
use crate::kinds::{Kinds, ResourceKind};
use crate::patch::{self, PatchType};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::services::{self, ServiceAlloc};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;
use tokio::sync::broadcast;

/// The user the simulated controllers write as.
pub const SYSTEM_USER: &str = "system:sim";

/// The type of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Object created.
    Added,
    /// Object changed.
    Modified,
    /// Object removed.
    Deleted,
}

impl EventType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One committed change, kept in the history and broadcast to watchers.
#[derive(Debug)]
pub struct Change {
    /// The resourceVersion this change committed at.
    pub rv: u64,
    /// Storage key of the object (`services`, `events`, ...).
    pub storage: &'static str,
    /// Namespace, empty for cluster-scoped objects.
    pub namespace: String,
    /// What happened.
    pub kind: EventType,
    /// The object after the change (for deletions: the last state).
    pub object: Arc<Value>,
    /// The object before the change, for selector transitions.
    pub previous: Option<Arc<Value>>,
}

/// Options of a delete.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    /// `preconditions.uid`.
    pub uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub resource_version: Option<String>,
}

/// A list page.
#[derive(Debug)]
pub struct ListPage {
    /// Items in view form.
    pub items: Vec<Value>,
    /// The list's resourceVersion.
    pub resource_version: u64,
    /// Continue token when more items remain.
    pub continue_token: Option<String>,
    /// Items left after this page.
    pub remaining: usize,
}

type Objects = BTreeMap<(String, String), Arc<Value>>;
type Entry<'a> = (&'a (String, String), &'a Arc<Value>);

struct Inner {
    rv: u64,
    objects: HashMap<&'static str, Objects>,
    history: VecDeque<Arc<Change>>,
    /// Highest resourceVersion no longer in the history.
    compacted: u64,
    cap: usize,
    services: ServiceAlloc,
}

/// The store of one simulated cluster.
pub struct Store {
    kinds: Kinds,
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Arc<Change>>,
    writes: Arc<WriteLog>,
}

fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn name_of(v: &Value) -> &str {
    v.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
}

pub(crate) fn rv_of(v: &Value) -> Option<&str> {
    v.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn uid_of(v: &Value) -> Option<&str> {
    v.pointer("/metadata/uid")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn finalizers_of(v: &Value) -> Vec<&str> {
    v.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| ALPHABET[rand::random::<u32>() as usize % ALPHABET.len()] as char)
        .collect()
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// Everything but metadata and status, for generation bumps.
fn spec_part(v: &Value) -> Value {
    let mut m = v.as_object().cloned().unwrap_or_default();
    m.remove("metadata");
    m.remove("status");
    Value::Object(m)
}

/// The comparable part of an object (no resourceVersion, no managedFields).
fn comparable(v: &Value) -> Value {
    let mut c = v.clone();
    if let Some(m) = c.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
        m.remove("managedFields");
    }
    c
}

/// A watch as registered: what to replay, the live feed, and the resourceVersion both
/// were taken at, under one lock, so that no write falls between them.
pub struct WatchStart {
    /// Changes to send first (every object as ADDED, or the history after `from`).
    pub replay: Vec<Arc<Change>>,
    /// Changes from here on.
    pub live: broadcast::Receiver<Arc<Change>>,
    /// The resourceVersion the replay is complete up to.
    pub rv: u64,
}

impl Store {
    /// A store with the default and kube-system namespaces, keeping `history` changes.
    pub fn new(kinds: Kinds, history: usize, writes: Arc<WriteLog>) -> Self {
        let (tx, _) = broadcast::channel(8192);
        let store = Store {
            kinds,
            inner: Mutex::new(Inner {
                rv: 0,
                objects: HashMap::new(),
                history: VecDeque::new(),
                compacted: 0,
                cap: history.max(1),
                services: ServiceAlloc::default(),
            }),
            tx,
            writes,
        };
        if let Some(ns) = store.kinds.by_storage("namespaces").cloned() {
            for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
                let obj =
                    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
                // The namespace kind is built in; creating a fixed name cannot fail.
                let _ = store.create(&ns, "", obj, SYSTEM_USER);
            }
        }
        store
    }

    /// The kinds this store serves.
    pub fn kinds(&self) -> &Kinds {
        &self.kinds
    }

    /// The write log.
    pub fn writes(&self) -> &Arc<WriteLog> {
        &self.writes
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    /// Subscribes to changes without replay (for the simulated controllers).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.tx.subscribe()
    }

    fn to_view(kind: &ResourceKind, stored: &Value) -> Value {
        if kind.is_events_v1() {
            events_view::core_to_v1(stored)
        } else {
            stored.clone()
        }
    }

    fn to_storage(kind: &ResourceKind, view: Value) -> Value {
        if kind.is_events_v1() {
            events_view::v1_to_core(&view)
        } else {
            view
        }
    }

    /// An object in view form.
    pub fn view(&self, kind: &ResourceKind, stored: &Value) -> Value {
        Self::to_view(kind, stored)
    }

    fn log(&self, user: &str, verb: &str, kind: &ResourceKind, ns: &str, name: &str, sub: &str) {
        self.writes.push(WriteRecord {
            user: user.to_string(),
            verb: verb.to_string(),
            resource: kind.plural.to_string(),
            subresource: sub.to_string(),
            namespace: ns.to_string(),
            name: name.to_string(),
            at: Instant::now(),
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn commit(
        &self,
        inner: &mut Inner,
        kind: &ResourceKind,
        ns: &str,
        name: &str,
        ev: EventType,
        mut obj: Value,
        previous: Option<Arc<Value>>,
    ) -> Arc<Value> {
        inner.rv += 1;
        let rv = inner.rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        let obj = Arc::new(obj);
        let map = inner.objects.entry(kind.storage).or_default();
        let key = (ns.to_string(), name.to_string());
        if ev == EventType::Deleted {
            map.remove(&key);
        } else {
            map.insert(key, obj.clone());
        }
        let change = Arc::new(Change {
            rv,
            storage: kind.storage,
            namespace: ns.to_string(),
            kind: ev,
            object: obj.clone(),
            previous,
        });
        inner.history.push_back(change.clone());
        while inner.history.len() > inner.cap {
            if let Some(old) = inner.history.pop_front() {
                inner.compacted = old.rv;
            }
        }
        let _ = self.tx.send(change);
        obj
    }

    fn get_stored(inner: &Inner, kind: &ResourceKind, ns: &str, name: &str) -> Option<Arc<Value>> {
        inner
            .objects
            .get(kind.storage)
            .and_then(|m| m.get(&(ns.to_string(), name.to_string())))
            .cloned()
    }

    fn check_namespace(inner: &Inner, kind: &ResourceKind, ns: &str) -> Result<(), ApiError> {
        if !kind.namespaced {
            return Ok(());
        }
        let exists = inner
            .objects
            .get("namespaces")
            .is_some_and(|m| m.contains_key(&(String::new(), ns.to_string())));
        if exists {
            Ok(())
        } else {
            Err(ApiError::not_found("namespaces", ns))
        }
    }

    /// `GET` one object.
    pub fn get(&self, kind: &ResourceKind, ns: &str, name: &str) -> Result<Value, ApiError> {
        let inner = self.lock();
        Self::get_stored(&inner, kind, ns, name)
            .map(|o| Self::to_view(kind, &o))
            .ok_or_else(|| ApiError::not_found(&kind.group_resource(), name))
    }

    /// `GET` a collection (namespace `None` = all namespaces).
    pub fn list(
        &self,
        kind: &ResourceKind,
        ns: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
        limit: Option<usize>,
        continue_token: Option<&str>,
    ) -> Result<ListPage, ApiError> {
        let start = match continue_token {
            Some(t) => Some(decode_continue(t)?),
            None => None,
        };
        let inner = self.lock();
        let rv = inner.rv;
        let mut items = Vec::new();
        let mut remaining = 0usize;
        let mut last_key = None;
        if let Some(map) = inner.objects.get(kind.storage) {
            let iter: Box<dyn Iterator<Item = Entry<'_>>> = match ns {
                Some(ns) => Box::new(
                    map.range((ns.to_string(), String::new())..)
                        .take_while(move |((n, _), _)| n == ns),
                ),
                None => Box::new(map.iter()),
            };
            for (key, obj) in iter {
                if let Some((sns, sname)) = &start
                    && (&key.0, &key.1) <= (sns, sname)
                {
                    continue;
                }
                if !labels.matches(obj) || !fields.matches(obj) {
                    continue;
                }
                if limit.is_some_and(|l| l > 0 && items.len() >= l) {
                    remaining += 1;
                    continue;
                }
                last_key = Some(key.clone());
                items.push(Self::to_view(kind, obj));
            }
        }
        let continue_token = if remaining > 0 {
            last_key.map(|(a, b)| encode_continue(&a, &b))
        } else {
            None
        };
        Ok(ListPage {
            items,
            resource_version: rv,
            continue_token,
            remaining,
        })
    }

    /// Registers a watch from `from` (None: the current state as ADDED events): returns the
    /// changes to replay and a receiver for what follows, atomically.
    pub fn watch(&self, kind: &ResourceKind, from: Option<u64>) -> Result<WatchStart, ApiError> {
        let inner = self.lock();
        let rx = self.tx.subscribe();
        let replay = match from {
            None => inner
                .objects
                .get(kind.storage)
                .map(|m| {
                    m.iter()
                        .map(|((ns, _), o)| {
                            Arc::new(Change {
                                rv: rv_of(o).and_then(|r| r.parse().ok()).unwrap_or(0),
                                storage: kind.storage,
                                namespace: ns.clone(),
                                kind: EventType::Added,
                                object: o.clone(),
                                previous: None,
                            })
                        })
                        .collect()
                })
                .unwrap_or_default(),
            Some(r) => {
                if r < inner.compacted {
                    return Err(ApiError::gone(r, inner.compacted + 1));
                }
                inner
                    .history
                    .iter()
                    .filter(|c| c.rv > r && c.storage == kind.storage)
                    .cloned()
                    .collect()
            }
        };
        Ok(WatchStart {
            replay,
            live: rx,
            rv: from.unwrap_or(inner.rv),
        })
    }

    /// `POST`: create.
    pub fn create(
        &self,
        kind: &ResourceKind,
        ns: &str,
        obj: Value,
        user: &str,
    ) -> Result<Value, ApiError> {
        if kind.is_events_v1() {
            crate::events_view::validate_v1(&obj)?;
        }
        let mut obj = Self::to_storage(kind, obj);
        if !obj.is_object() {
            return Err(ApiError::bad_request("the body must be a JSON object"));
        }
        if let Some(k) = obj.get("kind").and_then(Value::as_str)
            && k != kind.kind
        {
            return Err(ApiError::bad_request(format!(
                "the kind of the body ({k}) does not match the resource ({})",
                kind.kind
            )));
        }
        let canonical = self.kinds.by_storage(kind.storage).unwrap_or(kind).clone();
        obj["apiVersion"] = json!(canonical.api_version());
        obj["kind"] = json!(canonical.kind);
        if !obj.get("metadata").is_some_and(Value::is_object) {
            obj["metadata"] = json!({});
        }
        if kind.namespaced {
            match obj.pointer("/metadata/namespace").and_then(Value::as_str) {
                Some(n) if !n.is_empty() && n != ns => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                _ => obj["metadata"]["namespace"] = json!(ns),
            }
        } else if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("namespace");
        }
        let ns = if kind.namespaced { ns } else { "" };
        let mut name = name_of(&obj).to_string();
        if name.is_empty() {
            match obj
                .pointer("/metadata/generateName")
                .and_then(Value::as_str)
            {
                Some(g) if !g.is_empty() => {
                    name = format!("{g}{}", random_suffix());
                    obj["metadata"]["name"] = json!(name);
                }
                _ => {
                    return Err(ApiError::invalid(
                        kind.kind,
                        "",
                        vec![crate::error::Cause {
                            reason: "FieldValueRequired",
                            field: "metadata.name".into(),
                            message: "Required value: name or generateName is required".into(),
                        }],
                    ));
                }
            }
        }
        let name_ok = if kind.storage == "events" || kind.storage == "leases" {
            !name.is_empty() && name.len() <= 253
        } else {
            valid_name(&name)
        };
        if !name_ok {
            return Err(ApiError::invalid(
                kind.kind,
                &name,
                vec![crate::error::Cause {
                    reason: "FieldValueInvalid",
                    field: "metadata.name".into(),
                    message: format!(
                        "Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
                    ),
                }],
            ));
        }
        let mut inner = self.lock();
        Self::check_namespace(&inner, kind, ns)?;
        if Self::get_stored(&inner, kind, ns, &name).is_some() {
            return Err(ApiError::already_exists(&kind.group_resource(), &name));
        }
        {
            let meta = &mut obj["metadata"];
            meta["uid"] = json!(uuid::Uuid::new_v4().to_string());
            meta["creationTimestamp"] = json!(now());
            if let Some(m) = meta.as_object_mut() {
                m.remove("deletionTimestamp");
                m.remove("resourceVersion");
            }
        }
        if kind.generation {
            obj["metadata"]["generation"] = json!(1);
        }
        match kind.storage {
            "services" => {
                if let Some(m) = obj.as_object_mut() {
                    m.remove("status");
                }
                inner.services.admit(&mut obj, None)?;
                services::default_status(&mut obj);
            }
            "daemonsets" | "deployments" => {
                obj["status"] = json!({});
            }
            "secrets" => fold_string_data(&mut obj),
            "pods" if obj.pointer("/status/phase").is_none() => {
                obj["status"]["phase"] = json!("Pending");
            }
            "namespaces" => {
                obj["status"] = json!({"phase": "Active"});
                obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
            }
            _ => {}
        }
        let out = self.commit(
            &mut inner,
            &canonical,
            ns,
            &name,
            EventType::Added,
            obj,
            None,
        );
        drop(inner);
        self.log(user, "create", kind, ns, &name, "");
        Ok(Self::to_view(kind, &out))
    }

    /// `PUT`: replace (optionally the `status` subresource), with optimistic concurrency.
    pub fn update(
        &self,
        kind: &ResourceKind,
        ns: &str,
        name: &str,
        obj: Value,
        status: bool,
        user: &str,
    ) -> Result<Value, ApiError> {
        let ns = if kind.namespaced { ns } else { "" };
        let exists = {
            let inner = self.lock();
            Self::get_stored(&inner, kind, ns, name).is_some()
        };
        if !exists {
            if kind.create_on_update && !status {
                return self.create(kind, ns, obj, user);
            }
            return Err(ApiError::not_found(&kind.group_resource(), name));
        }
        if name_of(&obj) != name && !name_of(&obj).is_empty() {
            return Err(ApiError::bad_request(
                "the name of the object does not match the name on the URL",
            ));
        }
        self.write(kind, ns, name, status, user, "update", |current| {
            if let (Some(want), Some(have)) = (rv_of(&obj), rv_of(current))
                && want != have
            {
                return Err(ApiError::conflict(&kind.group_resource(), name));
            }
            // A copy of an object that was deleted and recreated meanwhile (a real server
            // checks the uid as a precondition, resourceVersion or not).
            if let (Some(want), Some(have)) = (uid_of(&obj), uid_of(current))
                && want != have
            {
                let mut e = ApiError::conflict(&kind.group_resource(), name);
                e.message = format!(
                    "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: UID in precondition: {want}, UID in object meta: {have}",
                    kind.group_resource()
                );
                return Err(e);
            }
            Ok(obj.clone())
        })
    }

    /// `PATCH` with any of the four patch types; apply creates a missing object.
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &self,
        kind: &ResourceKind,
        ns: &str,
        name: &str,
        ty: PatchType,
        body: &Value,
        status: bool,
        user: &str,
    ) -> Result<Value, ApiError> {
        let ns = if kind.namespaced { ns } else { "" };
        let exists = {
            let inner = self.lock();
            Self::get_stored(&inner, kind, ns, name).is_some()
        };
        if !exists {
            if ty == PatchType::Apply && !status {
                let mut obj = body.clone();
                obj["metadata"]["name"] = json!(name);
                return self.create(kind, ns, obj, user);
            }
            return Err(ApiError::not_found(&kind.group_resource(), name));
        }
        self.write(kind, ns, name, status, user, "patch", |current| {
            let mut next = current.clone();
            patch::apply(&mut next, ty, body).map_err(ApiError::unprocessable)?;
            if let Some(want) = body
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                && ty != PatchType::Json
                && Some(want) != rv_of(current)
            {
                return Err(ApiError::conflict(&kind.group_resource(), name));
            }
            Ok(next)
        })
    }

    /// The shared tail of update and patch: `f` maps the current object (view form) to the
    /// requested one; the store rules decide what is kept.
    #[allow(clippy::too_many_arguments)]
    fn write(
        &self,
        kind: &ResourceKind,
        ns: &str,
        name: &str,
        status: bool,
        user: &str,
        verb: &str,
        f: impl FnOnce(&Value) -> Result<Value, ApiError>,
    ) -> Result<Value, ApiError> {
        let canonical = self.kinds.by_storage(kind.storage).unwrap_or(kind).clone();
        let mut inner = self.lock();
        let Some(current) = Self::get_stored(&inner, kind, ns, name) else {
            return Err(ApiError::not_found(&kind.group_resource(), name));
        };
        let requested = Self::to_storage(kind, f(&Self::to_view(kind, &current))?);
        let mut next = if status {
            // The status subresource changes only status.
            let mut n = (*current).clone();
            n["status"] = requested.get("status").cloned().unwrap_or(Value::Null);
            n
        } else {
            let mut n = requested;
            if !n.is_object() {
                return Err(ApiError::bad_request("the body must be a JSON object"));
            }
            if kind.status {
                match current.get("status") {
                    Some(s) => n["status"] = s.clone(),
                    None => {
                        if let Some(m) = n.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
            }
            n
        };
        // An object being deleted may lose finalizers but never gain one (a real server
        // answers 422): a controller that adds its finalizer too late must fail here too.
        if current.pointer("/metadata/deletionTimestamp").is_some() {
            let had = finalizers_of(&current);
            if let Some(new) = finalizers_of(&next).into_iter().find(|f| !had.contains(f)) {
                return Err(ApiError::invalid(
                    kind.kind,
                    name,
                    vec![crate::error::Cause {
                        reason: "FieldValueForbidden",
                        field: "metadata.finalizers".into(),
                        message: format!(
                            "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{{{new:?}}}"
                        ),
                    }],
                ));
            }
        }
        // Fields the server owns.
        next["apiVersion"] = json!(canonical.api_version());
        next["kind"] = json!(canonical.kind);
        for field in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "name",
            "namespace",
        ] {
            match current.pointer(&format!("/metadata/{field}")) {
                Some(v) => next["metadata"][field] = v.clone(),
                None => {
                    if let Some(m) = next.get_mut("metadata").and_then(Value::as_object_mut) {
                        m.remove(field);
                    }
                }
            }
        }
        if kind.generation {
            let g = current
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            let g = if spec_part(&next) != spec_part(&current) {
                g + 1
            } else {
                g
            };
            next["metadata"]["generation"] = json!(g);
        }
        if kind.storage == "services" {
            if !status {
                inner.services.admit(&mut next, Some(&current))?;
            }
            services::default_status(&mut next);
        }
        if kind.storage == "secrets" {
            fold_string_data(&mut next);
        }
        if comparable(&next) == comparable(&current) {
            // A no-op write: no new resourceVersion, no event, as on the real server.
            drop(inner);
            self.log(
                user,
                verb,
                kind,
                ns,
                name,
                if status { "status" } else { "" },
            );
            return Ok(Self::to_view(kind, &current));
        }
        let deleting = next.pointer("/metadata/deletionTimestamp").is_some();
        let out = if deleting && finalizers_of(&next).is_empty() {
            let out = self.commit(
                &mut inner,
                &canonical,
                ns,
                name,
                EventType::Deleted,
                next,
                Some(current),
            );
            self.after_delete(&mut inner, &canonical, &out);
            out
        } else {
            self.commit(
                &mut inner,
                &canonical,
                ns,
                name,
                EventType::Modified,
                next,
                Some(current),
            )
        };
        drop(inner);
        self.log(
            user,
            verb,
            kind,
            ns,
            name,
            if status { "status" } else { "" },
        );
        Ok(Self::to_view(kind, &out))
    }

    /// `DELETE`: objects with finalizers get a deletionTimestamp and stay.
    pub fn delete(
        &self,
        kind: &ResourceKind,
        ns: &str,
        name: &str,
        opts: &DeleteOptions,
        user: &str,
    ) -> Result<Value, ApiError> {
        let ns = if kind.namespaced { ns } else { "" };
        let canonical = self.kinds.by_storage(kind.storage).unwrap_or(kind).clone();
        let mut inner = self.lock();
        let Some(current) = Self::get_stored(&inner, kind, ns, name) else {
            return Err(ApiError::not_found(&kind.group_resource(), name));
        };
        if let Some(uid) = &opts.uid
            && uid_of(&current) != Some(uid.as_str())
        {
            return Err(ApiError::conflict(&kind.group_resource(), name));
        }
        if let Some(rv) = &opts.resource_version
            && rv_of(&current) != Some(rv.as_str())
        {
            return Err(ApiError::conflict(&kind.group_resource(), name));
        }
        let out = if finalizers_of(&current).is_empty() {
            let out = self.commit(
                &mut inner,
                &canonical,
                ns,
                name,
                EventType::Deleted,
                (*current).clone(),
                Some(current.clone()),
            );
            self.after_delete(&mut inner, &canonical, &out);
            out
        } else if current.pointer("/metadata/deletionTimestamp").is_some() {
            current
        } else {
            let mut next = (*current).clone();
            next["metadata"]["deletionTimestamp"] = json!(now());
            next["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            self.commit(
                &mut inner,
                &canonical,
                ns,
                name,
                EventType::Modified,
                next,
                Some(current),
            )
        };
        drop(inner);
        self.log(user, "delete", kind, ns, name, "");
        Ok(Self::to_view(kind, &out))
    }

    /// Releases allocations, garbage-collects dependents (background propagation) and
    /// empties a deleted namespace.
    fn after_delete(&self, inner: &mut Inner, kind: &ResourceKind, gone: &Value) {
        if kind.storage == "services" {
            inner.services.release(gone);
        }
        let mut doomed: Vec<(ResourceKind, String, String)> = Vec::new();
        if kind.storage == "namespaces" {
            let ns = name_of(gone).to_string();
            for k in self.kinds.all() {
                if !k.namespaced || self.kinds.by_storage(k.storage) != Some(k) {
                    continue;
                }
                if let Some(map) = inner.objects.get(k.storage) {
                    for ((ons, oname), _) in map.iter().filter(|((n, _), _)| *n == ns) {
                        doomed.push((k.clone(), ons.clone(), oname.clone()));
                    }
                }
            }
        }
        if let Some(uid) = gone.pointer("/metadata/uid").and_then(Value::as_str) {
            for k in self.kinds.all() {
                if self.kinds.by_storage(k.storage) != Some(k) {
                    continue;
                }
                if let Some(map) = inner.objects.get(k.storage) {
                    for ((ons, oname), o) in map {
                        let owned = o
                            .pointer("/metadata/ownerReferences")
                            .and_then(Value::as_array)
                            .is_some_and(|refs| {
                                refs.iter()
                                    .any(|r| r.get("uid").and_then(Value::as_str) == Some(uid))
                            });
                        if owned {
                            doomed.push((k.clone(), ons.clone(), oname.clone()));
                        }
                    }
                }
            }
        }
        for (k, ons, oname) in doomed {
            let Some(current) = Self::get_stored(inner, &k, &ons, &oname) else {
                continue;
            };
            if finalizers_of(&current).is_empty() {
                let out = self.commit(
                    inner,
                    &k,
                    &ons,
                    &oname,
                    EventType::Deleted,
                    (*current).clone(),
                    Some(current.clone()),
                );
                self.after_delete(inner, &k, &out);
            } else if current.pointer("/metadata/deletionTimestamp").is_none() {
                let mut next = (*current).clone();
                next["metadata"]["deletionTimestamp"] = json!(now());
                self.commit(
                    inner,
                    &k,
                    &ons,
                    &oname,
                    EventType::Modified,
                    next,
                    Some(current),
                );
            }
        }
    }

    /// All stored objects of a storage (core form), for the simulated controllers.
    pub fn snapshot(&self, storage: &str) -> Vec<Arc<Value>> {
        self.lock()
            .objects
            .get(storage)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The canonical kind of a storage.
    pub fn kind_of(&self, storage: &str) -> Option<ResourceKind> {
        self.kinds.by_storage(storage).cloned()
    }
}

fn encode_continue(ns: &str, name: &str) -> String {
    hex::encode(serde_json::to_vec(&json!([ns, name])).unwrap_or_default())
}

fn decode_continue(token: &str) -> Result<(String, String), ApiError> {
    let bad = || ApiError::bad_request("continue key is not valid");
    let bytes = hex::decode(token).map_err(|_| bad())?;
    let (a, b): (String, String) = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    Ok((a, b))
}

/// The API server folds a Secret's write-only `stringData` into `data` (base64) and never
/// stores it, so a client that reads `data` (as it should) sees every value.
fn fold_string_data(obj: &mut Value) {
    let Some(m) = obj.as_object_mut() else {
        return;
    };
    let Some(Value::Object(string_data)) = m.remove("stringData") else {
        return;
    };
    let data = m.entry("data").or_insert_with(|| json!({}));
    if !data.is_object() {
        *data = json!({});
    }
    for (k, v) in string_data {
        if let Some(text) = v.as_str() {
            data[k] = json!(k8s_openapi::ByteString(text.as_bytes().to_vec()));
        }
    }
}
