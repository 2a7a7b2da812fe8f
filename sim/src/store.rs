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
use crate::registry::WriteOptions;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::services::ServiceAlloc;
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

/// The state behind the store's lock.
pub(crate) struct Inner {
    rv: u64,
    pub(crate) objects: HashMap<&'static str, Objects>,
    history: VecDeque<Arc<Change>>,
    /// Highest resourceVersion no longer in the history.
    compacted: u64,
    cap: usize,
    pub(crate) services: ServiceAlloc,
}

/// The store of one simulated cluster.
pub struct Store {
    kinds: Kinds,
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Arc<Change>>,
    writes: Arc<WriteLog>,
}

pub(crate) fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

pub(crate) fn name_of(v: &Value) -> &str {
    v.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
}

pub(crate) fn rv_of(v: &Value) -> Option<&str> {
    v.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

pub(crate) fn uid_of(v: &Value) -> Option<&str> {
    v.pointer("/metadata/uid")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

pub(crate) fn finalizers_of(v: &Value) -> Vec<&str> {
    v.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
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
        if let Some(ns) = store.kinds.by_storage("namespaces") {
            for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
                let obj =
                    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
                // The namespace kind is built in; creating a fixed name cannot fail.
                let _ = store.create(&ns, "", obj, &WriteOptions::system("kube-apiserver"));
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

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
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

    pub(crate) fn to_view(kind: &ResourceKind, stored: &Value) -> Value {
        if kind.is_events_v1() {
            events_view::core_to_v1(stored)
        } else {
            stored.clone()
        }
    }

    pub(crate) fn to_storage(kind: &ResourceKind, view: Value) -> Value {
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

    pub(crate) fn log(
        &self,
        user: &str,
        verb: &str,
        kind: &ResourceKind,
        ns: &str,
        name: &str,
        sub: &str,
    ) {
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
    pub(crate) fn commit(
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

    pub(crate) fn get_stored(
        inner: &Inner,
        kind: &ResourceKind,
        ns: &str,
        name: &str,
    ) -> Option<Arc<Value>> {
        inner
            .objects
            .get(kind.storage)
            .and_then(|m| m.get(&(ns.to_string(), name.to_string())))
            .cloned()
    }

    /// The canonical view of a kind's storage (core events for events.k8s.io).
    pub(crate) fn canonical(&self, kind: &ResourceKind) -> ResourceKind {
        self.kinds
            .by_storage(kind.storage)
            .unwrap_or_else(|| kind.clone())
    }

    /// A namespaced object can be created only in a namespace that exists and is not
    /// terminating (the NamespaceLifecycle admission plugin).
    pub(crate) fn check_namespace_for_create(
        &self,
        inner: &Inner,
        kind: &ResourceKind,
        ns: &str,
        name: &str,
    ) -> Result<(), ApiError> {
        if !kind.namespaced {
            return Ok(());
        }
        match inner
            .objects
            .get("namespaces")
            .and_then(|m| m.get(&(String::new(), ns.to_string())))
        {
            None => Err(ApiError::not_found("namespaces", ns)),
            Some(n) if n.pointer("/metadata/deletionTimestamp").is_some() => {
                let message = format!(
                    "unable to create new content in namespace {ns} because it is being terminated"
                );
                let mut e = ApiError::forbidden(format!(
                    "{} \"{name}\" is forbidden: {message}",
                    kind.group_resource()
                ));
                e.details = Some(Box::new((name.to_string(), kind.plural.to_string())));
                e.group = kind.group.to_string();
                e.causes = vec![crate::error::Cause {
                    reason: "NamespaceTerminating",
                    field: "metadata.namespace".into(),
                    message: format!("namespace {ns} is being terminated"),
                }];
                Err(e)
            }
            Some(_) => Ok(()),
        }
    }

    /// `GET` one object.
    pub fn get(&self, kind: &ResourceKind, ns: &str, name: &str) -> Result<Value, ApiError> {
        let inner = self.lock();
        Self::get_stored(&inner, kind, ns, name)
            .map(|o| Self::to_view(kind, &o))
            .ok_or_else(|| ApiError::not_found(&kind.group_resource(), name).in_group(kind.group))
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

    /// Forgets the change history up to now, as etcd compaction does: watches and
    /// `resourceVersionMatch=Exact` lists from an older resourceVersion get `410 Gone`.
    pub fn compact(&self) -> u64 {
        let mut inner = self.lock();
        inner.history.clear();
        inner.compacted = inner.rv;
        inner.rv
    }

    /// The resourceVersion up to which the history was dropped.
    pub fn compacted(&self) -> u64 {
        self.lock().compacted
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
        self.kinds.by_storage(storage)
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
pub(crate) fn fold_string_data(obj: &mut Value) {
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
