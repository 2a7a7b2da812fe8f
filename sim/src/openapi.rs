//! `/openapi/v3`: the OpenAPI documents of the served group versions, built from the kinds'
//! schemas ([`crate::typed`]), so `kubectl explain` works. Each kind's root schema carries
//! `x-kubernetes-group-version-kind`, which kubectl looks kinds up by. The patch-strategy
//! extensions are not in the schemas k8s-openapi ships (the README lists it).

use crate::store::Store;
use serde_json::{Map, Value, json};

/// The index: every group version and where its document is.
pub fn index(store: &Store) -> Value {
    let mut paths = Map::new();
    let mut gvs: Vec<String> = Vec::new();
    for k in store.kinds().all() {
        let p = if k.group.is_empty() {
            format!("api/{}", k.version)
        } else {
            format!("apis/{}/{}", k.group, k.version)
        };
        if !gvs.contains(&p) {
            gvs.push(p);
        }
    }
    for p in gvs {
        let url = format!("/openapi/v3/{p}?hash=portway-sim-v1");
        paths.insert(p, json!({"serverRelativeURL": url}));
    }
    json!({"paths": paths})
}

/// The document of one group version (`api/v1`, `apis/apps/v1`), or `None`.
pub fn document(store: &Store, gv_path: &str) -> Option<Value> {
    let (group, version) = match gv_path.split('/').collect::<Vec<_>>().as_slice() {
        ["api", v] => ("", *v),
        ["apis", g, v] => (*g, *v),
        _ => return None,
    };
    let kinds: Vec<_> = store
        .kinds()
        .all()
        .into_iter()
        .filter(|k| k.group == group && k.version == version)
        .collect();
    if kinds.is_empty() {
        return None;
    }
    let schemas = crate::typed::schemas();
    let mut components = schemas.components.clone();
    // kubectl explain finds a resource's kind through its list path's `get` operation.
    let mut paths = Map::new();
    let prefix = if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    };
    for k in &kinds {
        let path = if k.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}", k.plural)
        } else {
            format!("{prefix}/{}", k.plural)
        };
        paths.insert(
            path,
            json!({"get": {"x-kubernetes-group-version-kind":
            {"group": k.group, "kind": k.kind, "version": k.version}}}),
        );
    }
    for k in kinds {
        let key = if k.is_events_v1() {
            "events.k8s.io"
        } else {
            k.storage
        };
        if let Some(root) = schemas.roots.get(key)
            && let Some(s) = components.get_mut(root)
        {
            s["x-kubernetes-group-version-kind"] =
                json!([{"group": k.group, "kind": k.kind, "version": k.version}]);
        }
    }
    Some(json!({"openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.37.2"},
        "paths": paths, "components": {"schemas": components}}))
}
