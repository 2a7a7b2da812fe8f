//! The write rules of the real server's registries (`pkg/registry/*`, the generic store of
//! k8s.io/apiserver): create, update and patch with defaulting, `managedFields`, the status
//! subresource, generation, finalizers, dry runs and preconditions. Deletion lives in
//! [`crate::deletion`].

use crate::defaults;
use crate::error::{ApiError, Cause};
use crate::kinds::ResourceKind;
use crate::managed::{self, Writer};
use crate::patch::{self, PatchType};
use crate::services;
use crate::store::{EventType, Store, finalizers_of, name_of, now, rv_of, uid_of};
use crate::typed::{self, FieldValidation};
use serde_json::{Value, json};
use std::sync::Mutex;

/// Who writes, and how.
#[derive(Debug, Default)]
pub struct WriteOptions {
    /// The authenticated user (the write log's user).
    pub user: String,
    /// The field manager (`fieldManager`, else the User-Agent up to its first `/`).
    pub manager: String,
    /// `dryRun=All`: everything but storing.
    pub dry_run: bool,
    /// `force=true` of a server-side apply.
    pub force: bool,
    /// `fieldValidation`.
    pub validation: FieldValidation,
    /// `Warning` headers the request earned (unknown fields), for the response.
    pub warnings: Mutex<Vec<String>>,
}

impl WriteOptions {
    /// A write by `user` with the manager the real server derives from a missing
    /// User-Agent (`unknown`).
    pub fn user(user: &str) -> Self {
        WriteOptions {
            user: user.to_string(),
            manager: "unknown".into(),
            ..Default::default()
        }
    }

    /// A write of one of the simulated control-plane components, under the manager name
    /// the real component uses (`kube-controller-manager`, `kube-scheduler`, `kubelet`).
    pub fn system(manager: &str) -> Self {
        WriteOptions {
            user: crate::store::SYSTEM_USER.to_string(),
            manager: manager.to_string(),
            ..Default::default()
        }
    }
}

fn writer<'a>(kind: &'a ResourceKind, opts: &'a WriteOptions, status: bool) -> Writer<'a> {
    Writer {
        manager: &opts.manager,
        subresource: if status { "status" } else { "" },
        api_version: kind.api_version(),
        storage: kind.storage,
        has_status: kind.status,
    }
}

/// Typed decoding of a body (see [`crate::typed`]): unknown fields dropped and warned
/// about or refused, values of the wrong type refused. A create or update is refused as
/// its decoder does (`400`); a patch as its patched object is (`422` on `patch`).
fn decode_body(
    kind: &ResourceKind,
    obj: &mut Value,
    opts: &WriteOptions,
    patch: bool,
) -> Result<(), ApiError> {
    let storage = if kind.is_events_v1() {
        "events.k8s.io"
    } else {
        kind.storage
    };
    let d = match &kind.custom {
        Some(c) => crate::crd_schema::prune(&c.schema, obj),
        None => typed::decode(storage, obj),
    };
    let handled = |msg: String| {
        ApiError::bad_request(format!(
            "{k} in version \"{v}\" cannot be handled as a {k}: {msg}",
            k = kind.kind,
            v = kind.version
        ))
    };
    if let Some(t) = d.type_error {
        return Err(handled(t));
    }
    if d.unknown.is_empty() {
        return Ok(());
    }
    let named: Vec<String> = d
        .unknown
        .iter()
        .map(|f| format!("unknown field {f:?}"))
        .collect();
    match opts.validation {
        FieldValidation::Strict if patch => {
            let detail = format!("strict decoding error: {}", named.join(", "));
            let mut e = ApiError::invalid(
                "",
                "",
                vec![Cause {
                    reason: "FieldValueInvalid",
                    field: "patch".into(),
                    message: format!(
                        "Invalid value: {:?}: {detail}",
                        serde_json::to_string(obj).unwrap_or_default()
                    ),
                }],
            );
            e.details = None;
            Err(e)
        }
        FieldValidation::Strict => Err(handled(format!(
            "strict decoding error: {}",
            named.join(", ")
        ))),
        FieldValidation::Warn => {
            opts.warnings
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(named);
            Ok(())
        }
        FieldValidation::Ignore => Ok(()),
    }
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

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| ALPHABET[rand::random::<u32>() as usize % ALPHABET.len()] as char)
        .collect()
}

/// Everything but metadata and status, for generation bumps.
fn spec_part(v: &Value) -> Value {
    let mut m = v.as_object().cloned().unwrap_or_default();
    m.remove("metadata");
    m.remove("status");
    Value::Object(m)
}

/// The comparable part of an object (no resourceVersion).
fn comparable(v: &Value) -> Value {
    let mut c = v.clone();
    if let Some(m) = c.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
    }
    c
}

/// The QoS class of a pod (`qos.GetPodQOS`, reduced to what the sim's pods carry).
fn qos_class(pod: &Value) -> &'static str {
    let containers: Vec<&Value> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let res = |c: &Value, which: &str| {
        c.pointer(&format!("/resources/{which}"))
            .and_then(Value::as_object)
            .filter(|m| !m.is_empty())
            .cloned()
    };
    if containers
        .iter()
        .all(|c| res(c, "requests").is_none() && res(c, "limits").is_none())
    {
        return "BestEffort";
    }
    let guaranteed = containers.iter().all(|c| {
        let limits = res(c, "limits").unwrap_or_default();
        let requests = res(c, "requests").unwrap_or_default();
        ["cpu", "memory"].iter().all(|r| {
            limits.contains_key(*r) && requests.get(*r).is_none_or(|q| limits.get(*r) == Some(q))
        })
    });
    if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

impl Store {
    /// `POST`: create.
    pub fn create(
        &self,
        kind: &ResourceKind,
        ns: &str,
        obj: Value,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        self.create_inner(kind, ns, obj, opts, true)
    }

    fn create_inner(
        &self,
        kind: &ResourceKind,
        ns: &str,
        obj: Value,
        opts: &WriteOptions,
        track: bool,
    ) -> Result<Value, ApiError> {
        let mut obj = obj;
        if !obj.is_object() {
            return Err(ApiError::bad_request("the body must be a JSON object"));
        }
        if let Some(k) = obj.get("kind").and_then(Value::as_str)
            && k != kind.kind
        {
            let internal = if kind.group.is_empty() {
                "core"
            } else {
                kind.group.split('.').next().unwrap_or("")
            };
            return Err(ApiError::bad_request(format!(
                "{k} in version \"{v}\" cannot be handled as a {kk}: converting ({v}.{k}) to ({internal}.{kk}): unknown conversion",
                v = kind.version,
                kk = kind.kind
            )));
        }
        decode_body(kind, &mut obj, opts, false)?;
        if kind.is_events_v1() {
            crate::events_view::validate_v1(&obj, ns)?;
        }
        let mut obj = Self::to_storage(kind, obj);
        let canonical = self.canonical(kind);
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
                        vec![Cause {
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
                vec![Cause {
                    reason: "FieldValueInvalid",
                    field: "metadata.name".into(),
                    message: format!(
                        "Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
                    ),
                }],
            ));
        }
        crate::defaults::apply(kind.storage, &mut obj);
        if let Some(c) = &kind.custom {
            crate::crd_schema::default(&c.schema, &mut obj);
            if c.status_subresource
                && let Some(m) = obj.as_object_mut()
            {
                m.remove("status");
            }
        }
        if kind.storage == crate::crd::STORAGE {
            crate::crd::defaults(&mut obj);
            crate::crd::validate(&obj)?;
            crate::crd::initial_status(&mut obj);
        }
        if matches!(kind.storage, "deployments" | "daemonsets") {
            crate::admission::validate_workload(&kind.qualified_kind(), &name, &obj)?;
        }
        if track {
            let empty = defaults::empty_object(kind.storage);
            managed::update(&writer(kind, opts, false), &empty, &mut obj, true);
        }
        let mut inner = self.lock();
        self.check_namespace_for_create(&inner, kind, ns, &name)?;
        if Self::get_stored(&inner, kind, ns, &name).is_some() {
            return Err(
                ApiError::already_exists(&kind.group_resource(), &name).in_group(kind.group)
            );
        }
        {
            let meta = &mut obj["metadata"];
            meta["uid"] = json!(uuid::Uuid::new_v4().to_string());
            meta["creationTimestamp"] = json!(now());
            if let Some(m) = meta.as_object_mut() {
                m.remove("deletionTimestamp");
                m.remove("deletionGracePeriodSeconds");
                m.remove("resourceVersion");
            }
        }
        if kind.generation {
            obj["metadata"]["generation"] = json!(1);
        }
        crate::admission::on_create(kind.storage, &mut obj, &now());
        if let Some(c) = &kind.custom {
            crate::crd_schema::admit(kind, c, &name, &obj, None)?;
        }
        match kind.storage {
            "services" => {
                if let Some(m) = obj.as_object_mut() {
                    m.remove("status");
                }
                let mut alloc = inner.services.clone_if(opts.dry_run);
                let target = alloc.as_mut().unwrap_or(&mut inner.services);
                target.admit(&mut obj, None)?;
                services::default_status(&mut obj);
            }
            "deployments" => obj["status"] = json!({}),
            "daemonsets" => {
                obj["status"] = json!({"currentNumberScheduled": 0, "numberMisscheduled": 0,
                    "desiredNumberScheduled": 0, "numberReady": 0});
            }
            "secrets" => crate::store::fold_string_data(&mut obj),
            "pods" => {
                let qos = qos_class(&obj);
                let conditions = obj.pointer("/status/conditions").cloned();
                obj["status"] = json!({"phase": "Pending", "qosClass": qos});
                if let Some(c) = conditions {
                    obj["status"]["conditions"] = c;
                }
            }
            "namespaces" => {
                obj["spec"] = json!({"finalizers": ["kubernetes"]});
                obj["status"] = json!({"phase": "Active"});
            }
            _ => {}
        }
        if opts.dry_run {
            return Ok(Self::to_view(kind, &obj));
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
        self.log(&opts.user, "create", kind, ns, &name, "");
        if kind.storage == crate::crd::STORAGE {
            self.crd_written(&name);
        }
        Ok(Self::to_view(kind, &out))
    }

    /// `PUT`: replace (optionally the `status` subresource), with optimistic concurrency.
    #[allow(clippy::too_many_arguments)]
    pub fn update(
        &self,
        kind: &ResourceKind,
        ns: &str,
        name: &str,
        obj: Value,
        status: bool,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        let ns = if kind.namespaced { ns } else { "" };
        let exists = {
            let inner = self.lock();
            Self::get_stored(&inner, kind, ns, name).is_some()
        };
        if !exists {
            if kind.create_on_update && !status {
                return self.create(kind, ns, obj, opts);
            }
            return Err(ApiError::not_found(&kind.group_resource(), name).in_group(kind.group));
        }
        if name_of(&obj) != name && !name_of(&obj).is_empty() {
            return Err(ApiError::bad_request(
                "the name of the object does not match the name on the URL",
            ));
        }
        self.write(kind, ns, name, status, opts, "update", false, |current| {
            if let (Some(want), Some(have)) = (rv_of(&obj), rv_of(current))
                && want != have
            {
                return Err(ApiError::conflict(&kind.group_resource(), name).in_group(kind.group));
            }
            // A copy of an object that was deleted and recreated meanwhile (a real server
            // checks the uid as a precondition, resourceVersion or not).
            if let (Some(want), Some(have)) = (uid_of(&obj), uid_of(current))
                && want != have
            {
                let mut e = ApiError::conflict(&kind.group_resource(), name).in_group(kind.group);
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
        opts: &WriteOptions,
    ) -> Result<(Value, bool), ApiError> {
        let ns = if kind.namespaced { ns } else { "" };
        let exists = {
            let inner = self.lock();
            Self::get_stored(&inner, kind, ns, name).is_some()
        };
        if !exists {
            if ty == PatchType::Apply && !status {
                let mut config = body.clone();
                if !config.get("metadata").is_some_and(Value::is_object) {
                    config["metadata"] = json!({});
                }
                config["metadata"]["name"] = json!(name);
                let obj = Self::to_storage(kind, config);
                let mut empty = defaults::empty_object(kind.storage);
                empty["apiVersion"] = obj["apiVersion"].clone();
                empty["kind"] = obj["kind"].clone();
                let merged = managed::apply(&writer(kind, opts, false), &empty, &obj, opts.force)?;
                return self
                    .create_inner(kind, ns, Self::to_view(kind, &merged), opts, false)
                    .map(|v| (v, true));
            }
            return Err(ApiError::not_found(&kind.group_resource(), name).in_group(kind.group));
        }
        let apply = ty == PatchType::Apply;
        self.write(kind, ns, name, status, opts, "patch", apply, |current| {
            if apply {
                let config = Self::to_storage(kind, body.clone());
                let live = Self::to_storage(kind, current.clone());
                let merged =
                    managed::apply(&writer(kind, opts, status), &live, &config, opts.force)?;
                return Ok(Self::to_view(kind, &merged));
            }
            let mut next = current.clone();
            match ty {
                PatchType::Json => {
                    patch::apply(&mut next, ty, body).map_err(|_| ApiError::patch_rejected())?
                }
                _ => patch::apply(&mut next, ty, body).map_err(ApiError::unprocessable)?,
            }
            if let Some(want) = body
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                && ty != PatchType::Json
                && Some(want) != rv_of(current)
            {
                return Err(ApiError::conflict(&kind.group_resource(), name).in_group(kind.group));
            }
            Ok(next)
        })
        .map(|v| (v, false))
    }

    /// The shared tail of update and patch: `f` maps the current object (view form) to the
    /// requested one; the registry rules decide what is kept.
    #[allow(clippy::too_many_arguments)]
    fn write(
        &self,
        kind: &ResourceKind,
        ns: &str,
        name: &str,
        status: bool,
        opts: &WriteOptions,
        verb: &str,
        applied: bool,
        f: impl FnOnce(&Value) -> Result<Value, ApiError>,
    ) -> Result<Value, ApiError> {
        let canonical = self.canonical(kind);
        let mut inner = self.lock();
        let Some(current) = Self::get_stored(&inner, kind, ns, name) else {
            return Err(ApiError::not_found(&kind.group_resource(), name).in_group(kind.group));
        };
        let mut requested = f(&Self::to_view(kind, &current))?;
        if !requested.is_object() {
            return Err(ApiError::bad_request("the body must be a JSON object"));
        }
        decode_body(kind, &mut requested, opts, verb == "patch")?;
        let mut requested = Self::to_storage(kind, requested);
        defaults::apply(kind.storage, &mut requested);
        if let Some(c) = &kind.custom {
            crate::crd_schema::default(&c.schema, &mut requested);
        }
        if kind.storage == crate::crd::STORAGE && !status {
            crate::crd::defaults(&mut requested);
            crate::crd::validate(&requested)?;
        }
        if !applied {
            managed::update(&writer(kind, opts, status), &current, &mut requested, false);
        }
        let managed_fields = requested.pointer("/metadata/managedFields").cloned();
        let mut next = if status {
            // The status subresource changes only status (and metadata the owner may set).
            let mut n = (*current).clone();
            n["status"] = requested.get("status").cloned().unwrap_or(Value::Null);
            for field in ["labels", "annotations"] {
                if let Some(v) = requested.pointer(&format!("/metadata/{field}")) {
                    n["metadata"][field] = v.clone();
                }
            }
            n
        } else {
            let mut n = requested;
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
        match managed_fields {
            Some(m) => next["metadata"]["managedFields"] = m,
            None => {
                if let Some(m) = next["metadata"].as_object_mut() {
                    m.remove("managedFields");
                }
            }
        }
        // An object being deleted may lose finalizers but never gain one (a real server
        // answers 422): a controller that adds its finalizer too late must fail here too.
        if current.pointer("/metadata/deletionTimestamp").is_some() {
            let had = finalizers_of(&current);
            if let Some(new) = finalizers_of(&next).into_iter().find(|f| !had.contains(f)) {
                return Err(ApiError::invalid(
                    &kind.qualified_kind(),
                    name,
                    vec![Cause {
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
            "deletionGracePeriodSeconds",
            "name",
            "namespace",
            "generation",
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
        if kind.generation && spec_part(&next) != spec_part(&current) {
            let g = current
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            next["metadata"]["generation"] = json!(g + 1);
        }
        if !status {
            crate::admission::validate_update(
                &kind.qualified_kind(),
                kind.storage,
                name,
                &next,
                &current,
            )?;
        }
        crate::admission::on_update(kind.storage, &mut next, &current);
        if kind.storage == "namespaces" && !status {
            // Namespace.spec.finalizers change only through /finalize.
            next["spec"] = current.get("spec").cloned().unwrap_or(json!({}));
        }
        if kind.storage == "services" {
            services::default_status(&mut next);
            if status {
                let errs = crate::service_validation::validate_status(&next, &current);
                if !errs.is_empty() {
                    return Err(ApiError::invalid("Service", name, errs));
                }
            } else {
                let mut alloc = inner.services.clone_if(opts.dry_run);
                let target = alloc.as_mut().unwrap_or(&mut inner.services);
                target.admit(&mut next, Some(&current))?;
            }
        }
        if kind.storage == "secrets" {
            crate::store::fold_string_data(&mut next);
        }
        if let Some(c) = &kind.custom {
            crate::crd_schema::admit(kind, c, name, &next, Some(&current))?;
        }
        if comparable(&next) == comparable(&current) {
            // A no-op write: no new resourceVersion, no event, as on the real server.
            drop(inner);
            if !opts.dry_run {
                self.log(
                    &opts.user,
                    verb,
                    kind,
                    ns,
                    name,
                    if status { "status" } else { "" },
                );
            }
            return Ok(Self::to_view(kind, &current));
        }
        if opts.dry_run {
            if let Some(rv) = current.pointer("/metadata/resourceVersion") {
                next["metadata"]["resourceVersion"] = rv.clone();
            }
            return Ok(Self::to_view(kind, &next));
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
            &opts.user,
            verb,
            kind,
            ns,
            name,
            if status { "status" } else { "" },
        );
        if kind.storage == crate::crd::STORAGE && !status {
            self.crd_written(name);
        }
        Ok(Self::to_view(kind, &out))
    }
}
