//! CustomResourceDefinitions (`apiextensions.k8s.io/v1`): their validation and defaults,
//! the status the naming and establishing controllers of kube-apiserver write, the kinds an
//! established CRD serves, and its deletion (every custom resource first, as the
//! `customresourcecleanup` finalizer does). The custom resources themselves go through the
//! ordinary store with [`Custom`] attached to their kind: schema validation, pruning and
//! defaults in [`crate::crd_schema`], CEL rules in [`crate::cel`], Tables in
//! [`crate::crd_table`].

use crate::error::{ApiError, Cause};
use crate::kinds::{ResourceKind, intern};
use crate::registry::WriteOptions;
use crate::store::{EventType, Store, now};
use serde_json::{Value, json};
use std::sync::Arc;

/// The storage of CustomResourceDefinitions.
pub const STORAGE: &str = "customresourcedefinitions";

/// The finalizer kube-apiserver puts on a CRD being deleted until its objects are gone.
pub const CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

/// What a kind served from a CRD needs beyond [`ResourceKind`]: one version's schema,
/// whether it has the status subresource, its printer columns.
#[derive(Debug)]
pub struct Custom {
    /// The CRD's name (`<plural>.<group>`).
    pub crd: String,
    /// `openAPIV3Schema` of this version (`{}` when none).
    pub schema: Value,
    /// Whether `/status` is a subresource (then the main resource ignores status).
    pub status_subresource: bool,
    /// `additionalPrinterColumns` of this version.
    pub columns: Vec<Value>,
}

// Two kinds are the same view when they share the same `Custom` (one per CRD version and
// CRD write): comparing schemas would cost a deep comparison on every lookup.
impl PartialEq for Custom {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}
impl Eq for Custom {}

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

fn versions(crd: &Value) -> &[Value] {
    crd.pointer("/spec/versions")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// The storage key of a CRD's objects, shared by its versions.
fn storage_of(group: &str, plural: &str) -> &'static str {
    intern(&format!("{plural}.{group}"))
}

/// Fills what the real server defaults in a CRD (`SetDefaults_CustomResourceDefinitionSpec`).
pub(crate) fn defaults(crd: &mut Value) {
    let Some(spec) = crd.get_mut("spec").filter(|s| s.is_object()) else {
        return;
    };
    if let Some(names) = spec.get_mut("names").filter(|n| n.is_object()) {
        let kind = s(names, "/kind").to_string();
        if s(names, "/singular").is_empty() {
            names["singular"] = json!(kind.to_lowercase());
        }
        if s(names, "/listKind").is_empty() && !kind.is_empty() {
            names["listKind"] = json!(format!("{kind}List"));
        }
    }
    if spec.get("conversion").is_none_or(Value::is_null) {
        spec["conversion"] = json!({"strategy": "None"});
    }
}

fn cause(field: &str, message: String) -> Cause {
    Cause {
        reason: "FieldValueInvalid",
        field: field.into(),
        message,
    }
}

fn required(field: &str) -> Cause {
    Cause {
        reason: "FieldValueRequired",
        field: field.into(),
        message: "Required value".into(),
    }
}

/// The checks of `ValidateCustomResourceDefinition` that a CRD author meets first: the
/// name, the group, the names, the scope, one storage version, a schema per version.
pub(crate) fn validate(crd: &Value) -> Result<(), ApiError> {
    let name = s(crd, "/metadata/name");
    let group = s(crd, "/spec/group");
    let plural = s(crd, "/spec/names/plural");
    let mut causes = Vec::new();
    if name != format!("{plural}.{group}") {
        causes.push(cause(
            "metadata.name",
            format!("Invalid value: {name:?}: must be spec.names.plural+\".\"+spec.group"),
        ));
    }
    if group.is_empty() {
        causes.push(required("spec.group"));
    } else if !group.contains('.') {
        causes.push(cause(
            "spec.group",
            format!("Invalid value: {group:?}: should be a domain with at least one dot"),
        ));
    }
    if plural.is_empty() {
        causes.push(required("spec.names.plural"));
    }
    if s(crd, "/spec/names/kind").is_empty() {
        causes.push(required("spec.names.kind"));
    }
    match s(crd, "/spec/scope") {
        "Namespaced" | "Cluster" => {}
        "" => causes.push(required("spec.scope")),
        other => causes.push(Cause {
            reason: "FieldValueNotSupported",
            field: "spec.scope".into(),
            message: format!(
                "Unsupported value: {other:?}: supported values: \"Cluster\", \"Namespaced\""
            ),
        }),
    }
    let vs = versions(crd);
    if vs.is_empty() {
        causes.push(required("spec.versions"));
    }
    let storage = vs
        .iter()
        .filter(|v| v["storage"].as_bool() == Some(true))
        .count();
    if !vs.is_empty() && storage != 1 {
        causes.push(cause(
            "spec.versions",
            format!(
                "Invalid value: {}: must have exactly one version marked as storage version",
                serde_json::to_string(vs).unwrap_or_default()
            ),
        ));
    }
    for (i, v) in vs.iter().enumerate() {
        if v.pointer("/schema/openAPIV3Schema").is_none() {
            causes.push(required(&format!(
                "spec.versions[{i}].schema.openAPIV3Schema"
            )));
        }
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "CustomResourceDefinition.apiextensions.k8s.io",
            name,
            causes,
        ))
    }
}

/// The status a CRD is created with: names not yet accepted, the storage version stored.
pub(crate) fn initial_status(crd: &mut Value) {
    let stored: Vec<&str> = versions(crd)
        .iter()
        .filter(|v| v["storage"].as_bool() == Some(true))
        .filter_map(|v| v["name"].as_str())
        .collect();
    crd["status"] = json!({"acceptedNames": {"kind": "", "plural": ""}, "conditions": null,
        "storedVersions": stored});
}

/// The kinds an established CRD serves: one per served version, the storage version first
/// (the canonical view of the storage).
pub(crate) fn kinds_of(crd: &Value) -> Vec<ResourceKind> {
    let group = intern(s(crd, "/spec/group"));
    let names = &crd["spec"]["names"];
    let plural = intern(s(names, "/plural"));
    let storage = storage_of(group, plural);
    let list = |key: &str| -> &'static [&'static str] {
        let items: Vec<&str> = names[key]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        crate::kinds::intern_list(&items)
    };
    let short_names = list("shortNames");
    let categories = list("categories");
    let mut out: Vec<ResourceKind> = Vec::new();
    let mut ordered: Vec<&Value> = versions(crd).iter().collect();
    ordered.sort_by_key(|v| v["storage"].as_bool() != Some(true));
    for v in ordered {
        if v["served"].as_bool() != Some(true) {
            continue;
        }
        let status = v.pointer("/subresources/status").is_some();
        out.push(ResourceKind {
            group,
            version: intern(s(v, "/name")),
            plural,
            singular: intern(s(names, "/singular")),
            kind: intern(s(names, "/kind")),
            namespaced: s(crd, "/spec/scope") == "Namespaced",
            short_names,
            categories,
            status,
            generation: true,
            create_on_update: false,
            storage,
            custom: Some(Arc::new(Custom {
                crd: s(crd, "/metadata/name").to_string(),
                schema: v
                    .pointer("/schema/openAPIV3Schema")
                    .cloned()
                    .unwrap_or(json!({})),
                status_subresource: status,
                columns: v["additionalPrinterColumns"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default(),
            })),
        });
    }
    out
}

fn condition(ty: &str, status: &str, reason: &str, message: &str) -> Value {
    json!({"type": ty, "status": status, "lastTransitionTime": now(), "reason": reason,
        "message": message})
}

fn set_condition(status: &mut Value, c: Value) {
    if !status["conditions"].is_array() {
        status["conditions"] = json!([]);
    }
    if let Some(list) = status["conditions"].as_array_mut() {
        match list.iter_mut().find(|x| x["type"] == c["type"]) {
            Some(x) => {
                if x["status"] != c["status"] {
                    *x = c;
                } else {
                    x["reason"] = c["reason"].clone();
                    x["message"] = c["message"].clone();
                }
            }
            None => list.push(c),
        }
    }
}

impl Store {
    /// What kube-apiserver's naming and establishing controllers do after a CRD is written:
    /// accept its names (`NamesAccepted`), serve its kinds and mark it `Established`. A
    /// CRD whose names another CRD already serves is not accepted.
    pub(crate) fn crd_written(&self, name: &str) {
        let Some(kind) = self.kind_of(STORAGE) else {
            return;
        };
        let Ok(crd) = self.get(&kind, "", name) else {
            return;
        };
        if crd.pointer("/metadata/deletionTimestamp").is_some() {
            return;
        }
        let kinds = kinds_of(&crd);
        let Some(first) = kinds.first() else {
            return;
        };
        let taken = self.kinds().all().into_iter().any(|k| {
            k.group == first.group
                && k.storage != first.storage
                && (k.plural == first.plural || k.kind == first.kind)
        });
        let mut next = crd.clone();
        let status = &mut next["status"];
        if taken {
            set_condition(
                status,
                condition(
                    "NamesAccepted",
                    "False",
                    "PluralConflict",
                    &format!("\"{}\" is already in use", first.plural),
                ),
            );
        } else {
            let mut accepted = crd["spec"]["names"].clone();
            if let Some(m) = accepted.as_object_mut() {
                m.retain(|_, v| !v.is_null());
            }
            status["acceptedNames"] = accepted;
            set_condition(
                status,
                condition("NamesAccepted", "True", "NoConflicts", "no conflicts found"),
            );
            set_condition(
                status,
                condition(
                    "Established",
                    "True",
                    "InitialNamesAccepted",
                    "the initial names have been accepted",
                ),
            );
            if let Some(c) = &first.custom {
                crate::schema::register_custom(first.storage, c.schema.clone());
            }
            self.kinds().replace_storage(first.storage, kinds);
        }
        if next != crd {
            let _ = self.update(
                &kind,
                "",
                name,
                next,
                true,
                &WriteOptions::system("kube-apiserver"),
            );
        }
    }

    /// `DELETE` of a CRD: marked `Terminating` with the cleanup finalizer (the answer), then
    /// every object of its kinds deleted, its kinds no longer served and the CRD gone.
    pub(crate) fn delete_crd(
        &self,
        kind: &ResourceKind,
        name: &str,
        wopts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        let current = self.get(kind, "", name)?;
        let mut marked = current.clone();
        if marked.pointer("/metadata/deletionTimestamp").is_none() {
            marked["metadata"]["deletionTimestamp"] = json!(now());
        }
        let mut finalizers: Vec<Value> = marked["metadata"]["finalizers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if !finalizers.iter().any(|f| f == CLEANUP_FINALIZER) {
            finalizers.push(json!(CLEANUP_FINALIZER));
        }
        marked["metadata"]["finalizers"] = json!(finalizers);
        set_condition(
            &mut marked["status"],
            condition(
                "Terminating",
                "True",
                "InstanceDeletionPending",
                "CustomResourceDefinition marked for deletion; CustomResource deletion will begin soon",
            ),
        );
        if wopts.dry_run {
            return Ok(marked);
        }
        let out = {
            let mut inner = self.lock();
            let previous = Self::get_stored(&inner, kind, "", name);
            let out = self.commit(
                &mut inner,
                kind,
                "",
                name,
                EventType::Modified,
                marked,
                previous,
            );
            (*out).clone()
        };
        self.log(&wopts.user, "delete", kind, "", name, "");
        let group = s(&out, "/spec/group");
        let plural = s(&out, "/spec/names/plural");
        let storage = storage_of(group, plural);
        if let Some(ck) = self.kind_of(storage) {
            let mut inner = self.lock();
            let objects: Vec<((String, String), Arc<Value>)> = inner
                .objects
                .get(storage)
                .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default();
            for ((ons, oname), o) in objects {
                self.commit(
                    &mut inner,
                    &ck,
                    &ons,
                    &oname,
                    EventType::Deleted,
                    (*o).clone(),
                    Some(o),
                );
            }
        }
        self.kinds().replace_storage(storage, Vec::new());
        // The cleanup finalizer goes; with no other finalizer the CRD goes with it.
        let mut done = out.clone();
        done["metadata"]["finalizers"] = json!(
            finalizers_without(&out, CLEANUP_FINALIZER)
                .into_iter()
                .collect::<Vec<_>>()
        );
        let _ = self.update(
            kind,
            "",
            name,
            done,
            false,
            &WriteOptions::system("kube-apiserver"),
        );
        Ok(out)
    }
}

fn finalizers_without(o: &Value, f: &str) -> Vec<Value> {
    crate::store::finalizers_of(o)
        .into_iter()
        .filter(|x| *x != f)
        .map(|x| json!(x))
        .collect()
}
