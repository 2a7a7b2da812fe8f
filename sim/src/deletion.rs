//! Deletion as the real server and its controllers do it: preconditions, graceful deletion
//! of pods, namespaces that terminate, finalizers, and garbage collection with each
//! `propagationPolicy` (k8s.io/apiserver `registry/generic/registry/store.go` Delete and
//! `deletionFinalizersForGarbageCollection`; kube-controller-manager's garbage collector and
//! namespace controller, run here by [`Store::collect_garbage`] from the simulated
//! control-plane loop).

use crate::error::ApiError;
use crate::kinds::ResourceKind;
use crate::registry::WriteOptions;
use crate::store::{EventType, Inner, Store, finalizers_of, name_of, now, rv_of, uid_of};
use serde_json::{Value, json};

/// The finalizer of a foreground deletion.
pub const FOREGROUND: &str = "foregroundDeletion";
/// The finalizer of an orphaning deletion.
pub const ORPHAN: &str = "orphan";

/// Options of a delete (`DeleteOptions` body and query).
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    /// `preconditions.uid`.
    pub uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub resource_version: Option<String>,
    /// `propagationPolicy`: `Background` (default), `Foreground`, `Orphan`.
    pub propagation: Option<String>,
    /// `gracePeriodSeconds`.
    pub grace_period: Option<i64>,
}

/// What a delete did.
#[derive(Debug, Clone)]
pub enum Deleted {
    /// The object is gone; its last state.
    Gone(Value),
    /// The object stays until its finalizers or grace period are done; its new state.
    Pending(Value),
}

/// Whether a DELETE that removed the object answers with the object (the registries with
/// `ReturnDeletedObject`) rather than a `Status`.
pub fn returns_object(storage: &str) -> bool {
    matches!(
        storage,
        "pods" | "services" | "namespaces" | "serviceaccounts"
    )
}

/// The generic store's precondition conflict (`registry/generic/registry/store.go`): it
/// names the Kind, not the resource.
fn precondition_failed(kind: &ResourceKind, name: &str, what: &str) -> ApiError {
    let mut e = ApiError::conflict(kind.kind, name).in_group(kind.group);
    e.message = format!(
        "Operation cannot be fulfilled on {} \"{name}\": {what}",
        kind.kind
    );
    e
}

impl Store {
    /// `DELETE` one object.
    pub fn delete(
        &self,
        kind: &ResourceKind,
        ns: &str,
        name: &str,
        opts: &DeleteOptions,
        wopts: &WriteOptions,
    ) -> Result<Deleted, ApiError> {
        let ns = if kind.namespaced { ns } else { "" };
        if kind.storage == crate::crd::STORAGE {
            return self.delete_crd(kind, name, wopts).map(Deleted::Pending);
        }
        let canonical = self.canonical(kind);
        let mut inner = self.lock();
        let Some(current) = Self::get_stored(&inner, kind, ns, name) else {
            return Err(ApiError::not_found(&kind.group_resource(), name).in_group(kind.group));
        };
        if let Some(uid) = &opts.uid
            && uid_of(&current) != Some(uid.as_str())
        {
            let have = uid_of(&current).unwrap_or("");
            return Err(precondition_failed(
                kind,
                name,
                &format!(
                    "the UID in the precondition ({uid}) does not match the UID in record ({have}). The object might have been deleted and then recreated"
                ),
            ));
        }
        if let Some(rv) = &opts.resource_version
            && rv_of(&current) != Some(rv.as_str())
        {
            let have = rv_of(&current).unwrap_or("");
            return Err(precondition_failed(
                kind,
                name,
                &format!(
                    "the ResourceVersion in the precondition ({rv}) does not match the ResourceVersion in record ({have}). The object might have been modified"
                ),
            ));
        }
        let mut next = (*current).clone();
        let mut finalizers: Vec<String> = finalizers_of(&current)
            .into_iter()
            .map(String::from)
            .collect();
        match opts.propagation.as_deref() {
            Some("Foreground") if !finalizers.iter().any(|f| f == FOREGROUND) => {
                finalizers.retain(|f| f != ORPHAN);
                finalizers.push(FOREGROUND.into());
            }
            Some("Orphan") if !finalizers.iter().any(|f| f == ORPHAN) => {
                finalizers.retain(|f| f != FOREGROUND);
                finalizers.push(ORPHAN.into());
            }
            _ => {}
        }
        let grace = match kind.storage {
            "pods" => {
                let bound = current
                    .pointer("/spec/nodeName")
                    .and_then(Value::as_str)
                    .is_some_and(|n| !n.is_empty());
                let done = matches!(
                    current.pointer("/status/phase").and_then(Value::as_str),
                    Some("Succeeded" | "Failed")
                );
                let want = opts.grace_period.unwrap_or_else(|| {
                    current
                        .pointer("/spec/terminationGracePeriodSeconds")
                        .and_then(Value::as_i64)
                        .unwrap_or(30)
                });
                if bound && !done { want.max(0) } else { 0 }
            }
            _ => 0,
        };
        let terminating_namespace = kind.storage == "namespaces"
            && current
                .pointer("/spec/finalizers")
                .and_then(Value::as_array)
                .is_some_and(|f| !f.is_empty());
        let already = current.pointer("/metadata/deletionTimestamp").is_some();
        let pending = !finalizers.is_empty() || grace > 0 || terminating_namespace;
        if already && pending && finalizers == finalizers_of(&current) {
            // Deleting again changes nothing while finalizers or a grace period remain.
            drop(inner);
            return Ok(Deleted::Pending(Self::to_view(kind, &current)));
        }
        if kind.storage == "pods" && !already {
            // A pod is marked (grace period, a new generation) before it goes, and the
            // answer shows the mark even when it went at once.
            let when = chrono::Utc::now() + chrono::Duration::seconds(grace);
            next["metadata"]["deletionTimestamp"] =
                json!(when.format("%Y-%m-%dT%H:%M:%SZ").to_string());
            next["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
            let g = next
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            next["metadata"]["generation"] = json!(g + 1);
        }
        let out = if !pending {
            if wopts.dry_run {
                return Ok(Deleted::Gone(Self::to_view(kind, &next)));
            }
            let out = self.commit(
                &mut inner,
                &canonical,
                ns,
                name,
                EventType::Deleted,
                next,
                Some(current.clone()),
            );
            self.after_delete(&mut inner, &canonical, &out);
            Deleted::Gone(Self::to_view(kind, &out))
        } else {
            if !already && kind.storage != "pods" {
                next["metadata"]["deletionTimestamp"] = json!(now());
                if kind.storage != "namespaces" {
                    next["metadata"]["deletionGracePeriodSeconds"] = json!(0);
                }
            }
            if finalizers.is_empty() {
                if let Some(m) = next["metadata"].as_object_mut() {
                    m.remove("finalizers");
                }
            } else {
                next["metadata"]["finalizers"] = json!(finalizers);
            }
            if terminating_namespace {
                next["status"]["phase"] = json!("Terminating");
            }
            if kind.generation && kind.storage != "pods" && !already {
                // Marking a workload for deletion is a new generation (its strategy bumps it).
                let g = next
                    .pointer("/metadata/generation")
                    .and_then(Value::as_i64)
                    .unwrap_or(1);
                next["metadata"]["generation"] = json!(g + 1);
            }
            if wopts.dry_run {
                return Ok(Deleted::Pending(Self::to_view(kind, &next)));
            }
            let out = self.commit(
                &mut inner,
                &canonical,
                ns,
                name,
                EventType::Modified,
                next,
                Some(current),
            );
            Deleted::Pending(Self::to_view(kind, &out))
        };
        drop(inner);
        self.log(&wopts.user, "delete", kind, ns, name, "");
        Ok(out)
    }

    /// Releases allocations and garbage-collects dependents of a deleted object in the
    /// background: a dependent goes when none of its owners is left, otherwise only its
    /// reference to this owner does.
    pub(crate) fn after_delete(&self, inner: &mut Inner, kind: &ResourceKind, gone: &Value) {
        if kind.storage == "services" {
            inner.services.release(gone);
        }
        let Some(uid) = uid_of(gone).map(String::from) else {
            return;
        };
        for (k, ons, oname, obj) in self.dependents(inner, &uid) {
            let others_alive = owner_uids(&obj)
                .iter()
                .filter(|u| **u != uid)
                .any(|u| self.exists_uid(inner, u));
            if others_alive {
                let mut next = (*obj).clone();
                drop_owner(&mut next, &uid);
                self.commit(
                    inner,
                    &k,
                    &ons,
                    &oname,
                    EventType::Modified,
                    next,
                    Some(obj),
                );
            } else if finalizers_of(&obj).is_empty() {
                let out = self.commit(
                    inner,
                    &k,
                    &ons,
                    &oname,
                    EventType::Deleted,
                    (*obj).clone(),
                    Some(obj.clone()),
                );
                self.after_delete(inner, &k, &out);
            } else if obj.pointer("/metadata/deletionTimestamp").is_none() {
                let mut next = (*obj).clone();
                next["metadata"]["deletionTimestamp"] = json!(now());
                next["metadata"]["deletionGracePeriodSeconds"] = json!(0);
                self.commit(
                    inner,
                    &k,
                    &ons,
                    &oname,
                    EventType::Modified,
                    next,
                    Some(obj),
                );
            }
        }
    }

    fn dependents(
        &self,
        inner: &Inner,
        uid: &str,
    ) -> Vec<(ResourceKind, String, String, std::sync::Arc<Value>)> {
        let mut out = Vec::new();
        for k in self.kinds().all() {
            if self.kinds().by_storage(k.storage).as_ref() != Some(&k) {
                continue;
            }
            if let Some(map) = inner.objects.get(k.storage) {
                for ((ons, oname), o) in map {
                    if owner_uids(o).iter().any(|u| u == uid) {
                        out.push((k.clone(), ons.clone(), oname.clone(), o.clone()));
                    }
                }
            }
        }
        out
    }

    fn exists_uid(&self, inner: &Inner, uid: &str) -> bool {
        inner
            .objects
            .values()
            .any(|m| m.values().any(|o| uid_of(o) == Some(uid)))
    }

    /// One pass of the garbage collector and the namespace controller: finishes foreground
    /// and orphaning deletions and empties terminating namespaces. Returns whether it
    /// changed anything.
    pub fn collect_garbage(&self) -> bool {
        let gc = WriteOptions::system("kube-controller-manager");
        let mut changed = false;
        let deleting: Vec<(ResourceKind, std::sync::Arc<Value>)> = {
            let inner = self.lock();
            self.kinds()
                .all()
                .iter()
                .filter(|k| self.kinds().by_storage(k.storage).as_ref() == Some(*k))
                .flat_map(|k| {
                    inner
                        .objects
                        .get(k.storage)
                        .into_iter()
                        .flat_map(|m| m.values())
                        .filter(|o| o.pointer("/metadata/deletionTimestamp").is_some())
                        .map(|o| (k.clone(), o.clone()))
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        for (kind, obj) in deleting {
            let ns = obj
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let name = name_of(&obj).to_string();
            let uid = uid_of(&obj).unwrap_or("").to_string();
            let finalizers = finalizers_of(&obj);
            let deps = {
                let inner = self.lock();
                self.dependents(&inner, &uid)
            };
            let mut done = None;
            if finalizers.contains(&ORPHAN) {
                for (k, dns, dname, dep) in &deps {
                    let mut next = (**dep).clone();
                    drop_owner(&mut next, &uid);
                    changed |= self.patch_json(k, dns, dname, next, &gc).is_ok();
                }
                done = Some(ORPHAN);
            } else if finalizers.contains(&FOREGROUND) {
                for (k, dns, dname, dep) in &deps {
                    if dep.pointer("/metadata/deletionTimestamp").is_none() {
                        changed |= self
                            .delete(k, dns, dname, &DeleteOptions::default(), &gc)
                            .is_ok();
                    }
                }
                if deps.is_empty() {
                    done = Some(FOREGROUND);
                }
            }
            if let Some(f) = done {
                let mut next = (*obj).clone();
                let keep: Vec<&str> = finalizers.iter().copied().filter(|x| *x != f).collect();
                if keep.is_empty() {
                    if let Some(m) = next["metadata"].as_object_mut() {
                        m.remove("finalizers");
                    }
                } else {
                    next["metadata"]["finalizers"] = json!(keep);
                }
                changed |= self.patch_json(&kind, &ns, &name, next, &gc).is_ok();
            }
            if kind.storage == "namespaces" {
                changed |= self.terminate_namespace(&obj, &gc);
            }
        }
        changed
    }

    /// The namespace controller: deletes the content of a terminating namespace, then
    /// removes the `kubernetes` finalizer so the namespace itself goes.
    fn terminate_namespace(&self, ns_obj: &Value, gc: &WriteOptions) -> bool {
        let ns = name_of(ns_obj).to_string();
        // The real controller takes a few seconds (discovery, then every resource): a
        // client sees the namespace Terminating, and its new content refused, meanwhile.
        let since = ns_obj
            .pointer("/metadata/deletionTimestamp")
            .and_then(Value::as_str)
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| chrono::Utc::now().signed_duration_since(t))
            .unwrap_or_default();
        if since < chrono::Duration::seconds(2) {
            return false;
        }
        let mut left = 0;
        let mut changed = false;
        for k in self.kinds().all() {
            if !k.namespaced || self.kinds().by_storage(k.storage).as_ref() != Some(&k) {
                continue;
            }
            let items: Vec<(String, bool)> = {
                let inner = self.lock();
                inner
                    .objects
                    .get(k.storage)
                    .map(|m| {
                        m.range((ns.clone(), String::new())..)
                            .take_while(|((n, _), _)| *n == ns)
                            .map(|((_, name), o)| {
                                (
                                    name.clone(),
                                    o.pointer("/metadata/deletionTimestamp").is_some(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default()
            };
            for (name, deleting) in items {
                left += 1;
                if !deleting {
                    let opts = DeleteOptions {
                        grace_period: Some(0),
                        ..Default::default()
                    };
                    changed |= self.delete(&k, &ns, &name, &opts, gc).is_ok();
                }
            }
        }
        if left > 0 {
            return changed;
        }
        let mut next = ns_obj.clone();
        let spec_finalizers: Vec<Value> = next
            .pointer("/spec/finalizers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if spec_finalizers.iter().any(|f| f == "kubernetes") {
            let keep: Vec<Value> = spec_finalizers
                .into_iter()
                .filter(|f| f != "kubernetes")
                .collect();
            next["spec"]["finalizers"] = json!(keep);
            if let Some(kind) = self.kind_of("namespaces") {
                return self.finalize_namespace(&kind, &ns, next, gc).is_ok() || changed;
            }
        }
        changed
    }

    /// Replaces an object as a controller does with a patch (no resourceVersion check).
    fn patch_json(
        &self,
        kind: &ResourceKind,
        ns: &str,
        name: &str,
        mut next: Value,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        if let Some(m) = next["metadata"].as_object_mut() {
            m.remove("resourceVersion");
        }
        self.update(kind, ns, name, Self::to_view(kind, &next), false, opts)
    }

    /// `PUT .../namespaces/NAME/finalize`: sets `spec.finalizers`; a terminating namespace
    /// without any is deleted.
    pub fn finalize_namespace(
        &self,
        kind: &ResourceKind,
        name: &str,
        obj: Value,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        let mut inner = self.lock();
        let Some(current) = Self::get_stored(&inner, kind, "", name) else {
            return Err(ApiError::not_found("namespaces", name));
        };
        let mut next = (*current).clone();
        next["spec"]["finalizers"] = obj
            .pointer("/spec/finalizers")
            .cloned()
            .unwrap_or(json!([]));
        let empty = next
            .pointer("/spec/finalizers")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty);
        if empty && let Some(m) = next["spec"].as_object_mut() {
            m.remove("finalizers");
        }
        let gone = empty
            && next.pointer("/metadata/deletionTimestamp").is_some()
            && finalizers_of(&next).is_empty();
        let ev = if gone {
            EventType::Deleted
        } else {
            EventType::Modified
        };
        let out = self.commit(&mut inner, kind, "", name, ev, next, Some(current));
        drop(inner);
        self.log(&opts.user, "update", kind, "", name, "finalize");
        Ok(Self::to_view(kind, &out))
    }
}

fn owner_uids(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|refs| {
            refs.iter()
                .filter_map(|r| r.get("uid").and_then(Value::as_str).map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn drop_owner(obj: &mut Value, uid: &str) {
    if let Some(refs) = obj
        .pointer_mut("/metadata/ownerReferences")
        .and_then(Value::as_array_mut)
    {
        refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(uid));
        if refs.is_empty()
            && let Some(m) = obj["metadata"].as_object_mut()
        {
            m.remove("ownerReferences");
        }
    }
}
