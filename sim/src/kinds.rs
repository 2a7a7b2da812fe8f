//! The table of resource kinds the simulated API server knows.
//!
//! One row per resource drives discovery (`/api/v1`, `/apis/<group>/<version>`), URL routing
//! and the per-kind rules of the store (status subresource, generation, create-on-update), so
//! adding a kind is one line in [`builtin_kinds`].

/// How the store treats one resource type, and how discovery advertises it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceKind {
    /// API group, empty for the core group.
    pub group: &'static str,
    /// API version inside the group, e.g. `v1`.
    pub version: &'static str,
    /// Plural resource name used in URLs, e.g. `services`.
    pub plural: &'static str,
    /// Singular name advertised in discovery (kubectl uses it to resolve `kubectl get service`).
    pub singular: &'static str,
    /// The `kind` of the objects.
    pub kind: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// Short names advertised in discovery (`svc`, `no`, `ds`, ...).
    pub short_names: &'static [&'static str],
    /// Categories advertised in discovery (`all` makes `kubectl get all` include the kind).
    pub categories: &'static [&'static str],
    /// Whether a `/status` subresource exists; then the main resource ignores status changes
    /// and the subresource ignores everything but status (and metadata), as the real server.
    pub status: bool,
    /// Whether `metadata.generation` is kept and bumped on spec changes (workload kinds).
    pub generation: bool,
    /// Whether a PUT to a missing object creates it (the real server allows this for a few
    /// kinds such as leases, endpoints and events).
    pub create_on_update: bool,
    /// Storage key: two API views of the same objects share one (core and events.k8s.io events).
    pub storage: &'static str,
    /// The schema, columns and rules of a kind served from a CustomResourceDefinition
    /// (`None` for the built-in kinds).
    pub custom: Option<std::sync::Arc<crate::crd::Custom>>,
}

impl ResourceKind {
    /// `group/version` as written in `apiVersion` (`v1` for the core group).
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// A unique key of this API view: `<group>/<version>/<plural>`.
    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.group, self.version, self.plural)
    }

    /// The resource name for error messages: `services` or `daemonsets.apps`.
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// The kind as validation errors name it: `Service`, `DaemonSet.apps`.
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() || self.is_events_v1() {
            self.kind.to_string()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    /// Whether this view is the events.k8s.io rendering of core events.
    pub(crate) fn is_events_v1(&self) -> bool {
        self.group == "events.k8s.io"
    }
}

#[allow(clippy::too_many_arguments)]
const fn row(
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
    status: bool,
    generation: bool,
    create_on_update: bool,
    storage: &'static str,
) -> ResourceKind {
    ResourceKind {
        group,
        version,
        plural,
        singular,
        kind,
        namespaced,
        short_names,
        categories: &[],
        status,
        generation,
        create_on_update,
        storage,
        custom: None,
    }
}

const ALL: &[&str] = &["all"];

/// Every kind the simulated server serves out of the box.
pub fn builtin_kinds() -> Vec<ResourceKind> {
    let mut kinds = vec![
        //   group, version, plural, singular, kind, namespaced, short, status, generation, create-on-update, storage
        row(
            "",
            "v1",
            "namespaces",
            "namespace",
            "Namespace",
            false,
            &["ns"],
            true,
            false,
            false,
            "namespaces",
        ),
        row(
            "",
            "v1",
            "nodes",
            "node",
            "Node",
            false,
            &["no"],
            true,
            false,
            false,
            "nodes",
        ),
        row(
            "",
            "v1",
            "services",
            "service",
            "Service",
            true,
            &["svc"],
            true,
            false,
            false,
            "services",
        ),
        row(
            "",
            "v1",
            "pods",
            "pod",
            "Pod",
            true,
            &["po"],
            true,
            true,
            false,
            "pods",
        ),
        row(
            "",
            "v1",
            "endpoints",
            "endpoints",
            "Endpoints",
            true,
            &["ep"],
            false,
            false,
            true,
            "endpoints",
        ),
        row(
            "",
            "v1",
            "configmaps",
            "configmap",
            "ConfigMap",
            true,
            &["cm"],
            false,
            false,
            false,
            "configmaps",
        ),
        row(
            "",
            "v1",
            "secrets",
            "secret",
            "Secret",
            true,
            &[],
            false,
            false,
            false,
            "secrets",
        ),
        row(
            "",
            "v1",
            "events",
            "event",
            "Event",
            true,
            &["ev"],
            false,
            false,
            true,
            "events",
        ),
        row(
            "",
            "v1",
            "serviceaccounts",
            "serviceaccount",
            "ServiceAccount",
            true,
            &["sa"],
            false,
            false,
            false,
            "serviceaccounts",
        ),
        row(
            "apps",
            "v1",
            "daemonsets",
            "daemonset",
            "DaemonSet",
            true,
            &["ds"],
            true,
            true,
            false,
            "daemonsets",
        ),
        row(
            "apps",
            "v1",
            "deployments",
            "deployment",
            "Deployment",
            true,
            &["deploy"],
            true,
            true,
            false,
            "deployments",
        ),
        row(
            "discovery.k8s.io",
            "v1",
            "endpointslices",
            "endpointslice",
            "EndpointSlice",
            true,
            &[],
            false,
            true,
            false,
            "endpointslices",
        ),
        row(
            "coordination.k8s.io",
            "v1",
            "leases",
            "lease",
            "Lease",
            true,
            &[],
            false,
            false,
            true,
            "leases",
        ),
        row(
            "events.k8s.io",
            "v1",
            "events",
            "event",
            "Event",
            true,
            &["ev"],
            false,
            false,
            true,
            "events",
        ),
        row(
            "rbac.authorization.k8s.io",
            "v1",
            "clusterroles",
            "clusterrole",
            "ClusterRole",
            false,
            &[],
            false,
            false,
            true,
            "clusterroles",
        ),
        row(
            "rbac.authorization.k8s.io",
            "v1",
            "clusterrolebindings",
            "clusterrolebinding",
            "ClusterRoleBinding",
            false,
            &[],
            false,
            false,
            true,
            "clusterrolebindings",
        ),
        row(
            "rbac.authorization.k8s.io",
            "v1",
            "roles",
            "role",
            "Role",
            true,
            &[],
            false,
            false,
            true,
            "roles",
        ),
        row(
            "rbac.authorization.k8s.io",
            "v1",
            "rolebindings",
            "rolebinding",
            "RoleBinding",
            true,
            &[],
            false,
            false,
            true,
            "rolebindings",
        ),
        // Stored so that `kubectl apply` of Portway's manifests works; not enforced: the
        // sim evaluates no CEL, so the policies are tested on the real control plane
        // (tests/tests/admission_real.rs). generation/observedGeneration as upstream.
        row(
            "admissionregistration.k8s.io",
            "v1",
            "validatingadmissionpolicies",
            "validatingadmissionpolicy",
            "ValidatingAdmissionPolicy",
            false,
            &[],
            true,
            true,
            false,
            "validatingadmissionpolicies",
        ),
        row(
            "admissionregistration.k8s.io",
            "v1",
            "validatingadmissionpolicybindings",
            "validatingadmissionpolicybinding",
            "ValidatingAdmissionPolicyBinding",
            false,
            &[],
            false,
            true,
            false,
            "validatingadmissionpolicybindings",
        ),
        row(
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            "customresourcedefinition",
            "CustomResourceDefinition",
            false,
            &["crd", "crds"],
            true,
            true,
            false,
            "customresourcedefinitions",
        ),
    ];
    for k in &mut kinds {
        if matches!(k.plural, "services" | "pods" | "daemonsets" | "deployments") {
            k.categories = ALL;
        }
        if k.plural == "customresourcedefinitions" {
            k.categories = &["api-extensions"];
        }
    }
    kinds
}

/// The registry of kinds of one simulated cluster: the built-in kinds, then those of the
/// established CustomResourceDefinitions, which come and go while the server runs.
#[derive(Debug)]
pub struct Kinds {
    list: std::sync::RwLock<Vec<ResourceKind>>,
}

/// A `&'static str` for a name that came over the wire (a CRD's group, plural, kind):
/// kinds are keyed by static strings everywhere in the store, and the set of distinct names a
/// cluster ever serves is small, so each distinct name is leaked once and reused.
pub fn intern(s: &str) -> &'static str {
    static NAMES: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    let mut names = NAMES.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(n) = names.iter().find(|n| **n == s) {
        return n;
    }
    let leaked: &'static str = Box::leak(s.to_string().into_boxed_str());
    names.push(leaked);
    leaked
}

/// A `&'static` list of interned names (a CRD's short names, a list's map keys), each
/// distinct list leaked once and reused, as [`intern`] does for names.
pub fn intern_list(items: &[&str]) -> &'static [&'static str] {
    static LISTS: std::sync::Mutex<Vec<&'static [&'static str]>> =
        std::sync::Mutex::new(Vec::new());
    if items.is_empty() {
        return &[];
    }
    let mut lists = LISTS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(l) = lists.iter().find(|l| **l == items) {
        return l;
    }
    let leaked: &'static [&'static str] = Box::leak(
        items
            .iter()
            .map(|i| intern(i))
            .collect::<Vec<_>>()
            .into_boxed_slice(),
    );
    lists.push(leaked);
    leaked
}

impl Kinds {
    /// A registry over `list` (the first row of a storage is its canonical view).
    pub fn new(list: Vec<ResourceKind>) -> Self {
        Kinds {
            list: std::sync::RwLock::new(list),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<ResourceKind>> {
        self.list.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Every served view, in registration order.
    pub fn all(&self) -> Vec<ResourceKind> {
        self.read().clone()
    }

    /// The kind served at `group/version/plural`.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<ResourceKind> {
        self.read()
            .iter()
            .find(|k| k.group == group && k.version == version && k.plural == plural)
            .cloned()
    }

    /// The canonical (first registered) view of a storage key.
    pub fn by_storage(&self, storage: &str) -> Option<ResourceKind> {
        self.read().iter().find(|k| k.storage == storage).cloned()
    }

    /// The kind of an object from its `apiVersion` and `kind`.
    pub fn by_api_kind(&self, api_version: &str, kind: &str) -> Option<ResourceKind> {
        self.read()
            .iter()
            .find(|k| k.kind == kind && k.api_version() == api_version)
            .cloned()
    }

    /// Replaces the views of `storage` by `views` (the first one canonical): a CRD was
    /// established or changed. An empty `views` stops serving the storage (CRD deleted).
    pub fn replace_storage(&self, storage: &str, views: Vec<ResourceKind>) {
        let mut list = self.list.write().unwrap_or_else(|p| p.into_inner());
        list.retain(|k| k.storage != storage);
        list.extend(views);
    }

    /// Groups in registration order, each with its versions.
    pub fn groups(&self) -> Vec<(&'static str, Vec<&'static str>)> {
        let mut out: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
        for k in self.read().iter() {
            if k.group.is_empty() {
                continue;
            }
            match out.iter_mut().find(|(g, _)| *g == k.group) {
                Some((_, versions)) => {
                    if !versions.contains(&k.version) {
                        versions.push(k.version);
                    }
                }
                None => out.push((k.group, vec![k.version])),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_share_storage_and_groups_are_listed_once() {
        let kinds = Kinds::new(builtin_kinds());
        let core = kinds.find("", "v1", "events").expect("kind");
        let v1 = kinds.find("events.k8s.io", "v1", "events").expect("kind");
        assert_eq!(core.storage, v1.storage);
        assert_eq!(kinds.by_storage("events").expect("kind").group, "");
        let groups = kinds.groups();
        assert_eq!(groups.iter().filter(|(g, _)| *g == "apps").count(), 1);
        assert_eq!(
            kinds
                .by_api_kind("apps/v1", "DaemonSet")
                .expect("kind")
                .plural,
            "daemonsets"
        );
    }
}
