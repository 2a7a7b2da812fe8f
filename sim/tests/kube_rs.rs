//! The simulated API server driven by kube-rs, a client nobody here wrote.

use futures::StreamExt;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use portway_sim::{SimCluster, SimNode};
use serde_json::json;
use std::collections::BTreeSet;
use std::time::Duration;

fn lb(name: &str) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"type": "LoadBalancer", "ports": [{"name": "http", "port": 80}]}
    }))
    .expect("service")
}

async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn crud_defaults_conflicts_and_status_subresource() {
    let sim = SimCluster::start().await.expect("sim");
    let api: Api<Service> = Api::namespaced(sim.client(), "default");
    let created = api
        .create(&PostParams::default(), &lb("web"))
        .await
        .expect("create");
    let spec = created.spec.clone().expect("spec");
    assert!(
        spec.cluster_ip
            .as_deref()
            .is_some_and(|ip| ip.starts_with("10.43."))
    );
    assert!(spec.ports.as_ref().expect("ports")[0].node_port.is_some());
    assert_eq!(spec.ip_families, Some(vec!["IPv4".to_string()]));
    assert!(created.metadata.uid.is_some());
    assert!(created.metadata.creation_timestamp.is_some());
    // Duplicate create.
    let err = api
        .create(&PostParams::default(), &lb("web"))
        .await
        .expect_err("exists");
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 409),
        "{err:?}"
    );
    // Stale PUT.
    let mut stale = created.clone();
    api.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
    )
    .await
    .expect("patch");
    stale.metadata.labels = Some([("x".to_string(), "y".to_string())].into());
    let err = api
        .replace("web", &PostParams::default(), &stale)
        .await
        .expect_err("conflict");
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 409 && s.reason == "Conflict"),
        "{err:?}"
    );
    // Status through the main resource is ignored; through /status it lands, ipMode defaulted.
    api.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}}})),
    )
    .await
    .expect("patch main");
    let got = api.get("web").await.expect("get");
    assert!(
        got.status
            .and_then(|s| s.load_balancer)
            .and_then(|l| l.ingress)
            .is_none()
    );
    let st = api
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}}})),
        )
        .await
        .expect("status");
    let ing = st
        .status
        .and_then(|s| s.load_balancer)
        .and_then(|l| l.ingress)
        .expect("ingress");
    assert_eq!(ing[0].ip_mode.as_deref(), Some("VIP"));
    // A no-op write keeps the resourceVersion.
    let rv = api.get("web").await.expect("get").metadata.resource_version;
    let again = api
        .patch_status("web", &PatchParams::default(), &Patch::Merge(json!({"status": {"loadBalancer": {"ingress": [{"ip": "1.2.3.4", "ipMode": "VIP"}]}}})))
        .await
        .expect("status");
    assert_eq!(again.metadata.resource_version, rv);
    // Validation: class on ClusterIP, immutable class.
    let bad: Service = serde_json::from_value(json!({"metadata": {"name": "bad"},
        "spec": {"type": "ClusterIP", "loadBalancerClass": "x", "ports": [{"port": 80}]}}))
    .expect("svc");
    let err = api
        .create(&PostParams::default(), &bad)
        .await
        .expect_err("invalid");
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 422 && s.message.contains("loadBalancerClass")),
        "{err:?}"
    );
    let err = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"loadBalancerClass": "y"}})),
        )
        .await
        .expect_err("immutable");
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 422),
        "{err:?}"
    );
    // Strategic merge of ports by port; JSON patch with a failing test.
    api.patch(
        "web",
        &PatchParams::default(),
        &Patch::Strategic(json!({"spec": {"ports": [{"name": "https", "port": 443}]}})),
    )
    .await
    .expect("strategic");
    assert_eq!(
        api.get("web")
            .await
            .expect("get")
            .spec
            .expect("spec")
            .ports
            .expect("ports")
            .len(),
        2
    );
    let jp = serde_json::from_value(
        json!([{"op": "test", "path": "/metadata/labels/a", "value": "zzz"}]),
    )
    .expect("patch");
    let err = api
        .patch("web", &PatchParams::default(), &Patch::<()>::Json(jp))
        .await
        .expect_err("test op");
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 422),
        "{err:?}"
    );
    // Not found.
    let err = api.get("nope").await.expect_err("404");
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 404),
        "{err:?}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn finalizers_hold_deletion_and_owners_collect_dependents() {
    let sim = SimCluster::start().await.expect("sim");
    let cms: Api<ConfigMap> = Api::namespaced(sim.client(), "default");
    let owner: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "owner", "finalizers": ["x/y"]}}))
            .expect("cm");
    let owner = cms
        .create(&PostParams::default(), &owner)
        .await
        .expect("create");
    let dep: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "dep", "ownerReferences": [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}]}}))
        .expect("cm");
    cms.create(&PostParams::default(), &dep).await.expect("dep");
    cms.delete("owner", &DeleteParams::default())
        .await
        .expect("delete");
    let held = cms.get("owner").await.expect("still there");
    assert!(held.metadata.deletion_timestamp.is_some());
    cms.patch(
        "owner",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .expect("clear finalizers");
    assert!(cms.get_opt("owner").await.expect("get").is_none());
    assert!(
        cms.get_opt("dep").await.expect("get").is_none(),
        "dependent collected"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn list_pagination_and_selectors() {
    let sim = SimCluster::start().await.expect("sim");
    let cms: Api<ConfigMap> = Api::namespaced(sim.client(), "default");
    for i in 0..25 {
        let cm: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": format!("cm-{i:02}"),
            "labels": {"parity": if i % 2 == 0 { "even" } else { "odd" }}}}))
            .expect("cm");
        cms.create(&PostParams::default(), &cm)
            .await
            .expect("create");
    }
    let page = cms
        .list(&ListParams::default().limit(10))
        .await
        .expect("list");
    assert_eq!(page.items.len(), 10);
    let token = page.metadata.continue_.clone().expect("continue");
    let page2 = cms
        .list(&ListParams::default().limit(10).continue_token(&token))
        .await
        .expect("list");
    assert_eq!(page2.items[0].metadata.name.as_deref(), Some("cm-10"));
    let even = cms
        .list(&ListParams::default().labels("parity=even"))
        .await
        .expect("list");
    assert_eq!(even.items.len(), 13);
    let notin = cms
        .list(&ListParams::default().labels("parity,parity notin (even)"))
        .await
        .expect("list");
    assert_eq!(notin.items.len(), 12);
    let one = cms
        .list(&ListParams::default().fields("metadata.name=cm-03"))
        .await
        .expect("list");
    assert_eq!(one.items.len(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn watcher_survives_dropped_watches_and_gone() {
    let sim = SimCluster::builder()
        .history(50)
        .start()
        .await
        .expect("sim");
    let cms: Api<ConfigMap> = Api::namespaced(sim.client(), "default");
    let mut stream = watcher(cms.clone(), watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .boxed();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(BTreeSet::new()));
    let seen2 = seen.clone();
    let task = tokio::spawn(async move {
        while let Some(item) = stream.next().await {
            match item {
                Ok(cm) => {
                    seen2
                        .lock()
                        .expect("lock")
                        .insert(cm.metadata.name.unwrap_or_default());
                }
                Err(e) => eprintln!("watcher error (retried): {e}"),
            }
        }
    });
    for i in 0..200 {
        let cm: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": format!("w-{i}")}})).expect("cm");
        cms.create(&PostParams::default(), &cm)
            .await
            .expect("create");
        if i % 50 == 25 {
            sim.faults().drop_watches();
        }
    }
    eventually("every object seen", || {
        let seen = seen.clone();
        // The namespace's kube-root-ca.crt is seen too.
        async move {
            let seen = seen.lock().expect("lock");
            seen.iter().filter(|n| n.starts_with("w-")).count() == 200
        }
    })
    .await;
    task.abort();
    sim.shutdown().await;
}

/// A kube-rs reflector, fed through dropped watches and forced 410s (relists), ends with
/// exactly the server's state, modifications and deletions included: no event is lost or
/// replayed wrongly. Creates alone could not show a lost event, since a relist re-sends
/// every object.
#[tokio::test]
async fn reflector_matches_the_server_through_drops_and_410s() {
    use kube::runtime::reflector;
    use std::collections::BTreeMap;
    let sim = SimCluster::start().await.expect("sim");
    let cms: Api<ConfigMap> = Api::namespaced(sim.client(), "default");
    let (store, writer) = reflector::store::<ConfigMap>();
    let stream = reflector::reflector(writer, watcher(cms.clone(), watcher::Config::default()))
        .default_backoff()
        .touched_objects();
    let task = tokio::spawn(stream.for_each(|_| futures::future::ready(())));
    let state = |items: Vec<ConfigMap>| -> BTreeMap<String, String> {
        items
            .into_iter()
            .map(|c| {
                let v = c.data.and_then(|d| d.get("v").cloned()).unwrap_or_default();
                (c.metadata.name.unwrap_or_default(), v)
            })
            .collect()
    };
    for i in 0..60 {
        let name = format!("r-{i}");
        let cm: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": name}, "data": {"v": "0"}}))
                .expect("cm");
        cms.create(&PostParams::default(), &cm)
            .await
            .expect("create");
        if i % 3 == 0 {
            let patch = json!({"data": {"v": format!("{i}")}});
            cms.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .expect("patch");
        }
        if i % 4 == 0 {
            cms.delete(&name, &DeleteParams::default())
                .await
                .expect("delete");
        }
        if i % 15 == 7 {
            sim.faults().expire_next_watches(1);
            sim.faults().drop_watches();
        }
    }
    let truth = state(cms.list(&ListParams::default()).await.expect("list").items);
    // The last forced 410 is met when the reflector next asks for a watch, which may come
    // after its store already holds the final state (the loop's last changes arrived on the
    // watch the drop then ended): wait for it, then compare.
    eventually("the 410s were met", || {
        let pending = sim.faults().expired_watches_pending();
        async move { pending == 0 }
    })
    .await;
    eventually("the reflector equals the server", || {
        let store = store.clone();
        let truth = truth.clone();
        async move {
            let cached: Vec<ConfigMap> = store.state().iter().map(|c| (**c).clone()).collect();
            state(cached) == truth
        }
    })
    .await;
    task.abort();
    sim.shutdown().await;
}

#[tokio::test]
async fn stale_watch_gets_410() {
    let sim = SimCluster::builder()
        .history(20)
        .start()
        .await
        .expect("sim");
    let cms: Api<ConfigMap> = Api::namespaced(sim.client(), "default");
    for i in 0..40 {
        let cm: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": format!("g-{i}")}})).expect("cm");
        cms.create(&PostParams::default(), &cm)
            .await
            .expect("create");
    }
    let mut s = cms
        .watch(&kube::api::WatchParams::default(), "1")
        .await
        .expect("watch")
        .boxed();
    match s.next().await {
        Some(Ok(kube::api::WatchEvent::Error(e))) => assert_eq!(e.code, 410),
        Some(Err(kube::Error::Api(e))) => assert_eq!(e.code, 410),
        other => panic!("expected 410, got {other:?}"),
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn daemonset_pods_schedule_and_host_ports_clash() {
    let sim = SimCluster::start().await.expect("sim");
    for i in 1..=3 {
        sim.add_node(SimNode::new(&format!("node-{i}")).ipv4(&format!("10.0.0.1{i}")))
            .await
            .expect("node");
    }
    let ds_api: Api<DaemonSet> = Api::namespaced(sim.client(), "kube-system");
    let ds = |name: &str, sel: Option<(&str, &str)>| -> DaemonSet {
        let port = if sel.is_some() { 81 } else { 80 };
        let mut spec = json!({"containers": [{"name": "lb", "image": "x",
            "ports": [{"containerPort": port, "hostPort": port, "protocol": "TCP"}]}]});
        if let Some((k, v)) = sel {
            spec["nodeSelector"] = json!({k: v});
        }
        serde_json::from_value(json!({"metadata": {"name": name},
            "spec": {"selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}}, "spec": spec}}}))
        .expect("ds")
    };
    ds_api
        .create(&PostParams::default(), &ds("first", None))
        .await
        .expect("ds");
    let pods: Api<Pod> = Api::namespaced(sim.client(), "kube-system");
    eventually("3 ready pods", || {
        let ds_api = ds_api.clone();
        async move {
            ds_api
                .get_status("first")
                .await
                .ok()
                .and_then(|d| d.status)
                .is_some_and(|s| s.number_ready == 3 && s.desired_number_scheduled == 3)
        }
    })
    .await;
    ds_api
        .create(&PostParams::default(), &ds("second", None))
        .await
        .expect("ds");
    eventually("pending pods with a reason", || {
        let pods = pods.clone();
        async move {
            let l = pods
                .list(&ListParams::default().labels("app=second"))
                .await
                .expect("list");
            l.items.len() == 3
                && l.items.iter().all(|p| {
                    p.status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|cs| {
                            cs.iter().any(|c| {
                                c.reason.as_deref() == Some("Unschedulable")
                                    && c.message
                                        .as_deref()
                                        .is_some_and(|m| m.contains("free ports"))
                            })
                        })
                })
        }
    })
    .await;
    // Deleting the first DaemonSet collects its pods and frees the ports.
    ds_api
        .delete("first", &DeleteParams::default())
        .await
        .expect("delete");
    eventually("second runs", || {
        let ds_api = ds_api.clone();
        async move {
            ds_api
                .get_status("second")
                .await
                .ok()
                .and_then(|d| d.status)
                .is_some_and(|s| s.number_ready == 3)
        }
    })
    .await;
    // Node selector narrows; a not-ready node makes its pod unready.
    ds_api
        .create(&PostParams::default(), &ds("third", Some(("role", "edge"))))
        .await
        .expect("ds");
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(sim.client());
    nodes
        .patch(
            "node-2",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"role": "edge"}}})),
        )
        .await
        .expect("label");
    eventually("third on node-2 only", || {
        let pods = pods.clone();
        async move {
            let l = pods
                .list(&ListParams::default().labels("app=third"))
                .await
                .expect("list");
            l.items.len() == 1
                && l.items[0]
                    .spec
                    .as_ref()
                    .and_then(|s| s.node_name.as_deref())
                    == Some("node-2")
        }
    })
    .await;
    sim.set_node_ready("node-2", false)
        .await
        .expect("not ready");
    eventually("third unready", || {
        let ds_api = ds_api.clone();
        async move {
            ds_api
                .get_status("third")
                .await
                .ok()
                .and_then(|d| d.status)
                .is_some_and(|s| s.number_ready == 0)
        }
    })
    .await;
    sim.shutdown().await;
}

#[tokio::test]
async fn events_are_two_views_of_one_store() {
    use k8s_openapi::api::core::v1::Event as CoreEvent;
    use k8s_openapi::api::events::v1::Event;
    let sim = SimCluster::start().await.expect("sim");
    let v1: Api<Event> = Api::namespaced(sim.client(), "default");
    let ev: Event = serde_json::from_value(json!({"metadata": {"name": "web.1"},
        "regarding": {"kind": "Service", "name": "web", "namespace": "default"},
        "reason": "EnsuredLoadBalancer", "note": "done", "type": "Normal", "action": "Ensure",
        "reportingController": "portway", "reportingInstance": "portway-1",
        "eventTime": "2026-11-22T00:00:00.000000Z"}))
    .expect("event");
    v1.create(&PostParams::default(), &ev)
        .await
        .expect("create");
    let core: Api<CoreEvent> = Api::namespaced(sim.client(), "default");
    let got = core.get("web.1").await.expect("core view");
    assert_eq!(got.message.as_deref(), Some("done"));
    assert_eq!(got.involved_object.name.as_deref(), Some("web"));
    let back = v1.get("web.1").await.expect("v1 view");
    assert_eq!(back.note.as_deref(), Some("done"));
    sim.shutdown().await;
}

#[tokio::test]
async fn faults_fail_writes_and_log_users() {
    let sim = SimCluster::start().await.expect("sim");
    let cms: Api<ConfigMap> = Api::namespaced(sim.client_as("alice"), "default");
    sim.faults().fail_next_writes(2, 500);
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "f"}})).expect("cm");
    for _ in 0..2 {
        let err = cms
            .create(&PostParams::default(), &cm)
            .await
            .expect_err("fault");
        assert!(
            matches!(err, kube::Error::Api(ref s) if s.code == 500),
            "{err:?}"
        );
    }
    cms.create(&PostParams::default(), &cm)
        .await
        .expect("third works");
    assert_eq!(sim.writes().count_for("configmaps", "default", "f"), 1);
    assert_eq!(sim.writes().by_user("alice").len(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn rbac_denies_what_is_not_granted() {
    let sim = SimCluster::builder().rbac(true).start().await.expect("sim");
    let admin = sim.client();
    let roles: Api<k8s_openapi::api::rbac::v1::ClusterRole> = Api::all(admin.clone());
    roles
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "read-cm"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]}))
            .expect("role"),
        )
        .await
        .expect("role");
    let bindings: Api<k8s_openapi::api::rbac::v1::ClusterRoleBinding> = Api::all(admin);
    bindings
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "bob-read"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "read-cm"},
            "subjects": [{"kind": "User", "name": "bob"}]})).expect("binding"))
        .await
        .expect("binding");
    let bob: Api<ConfigMap> = Api::namespaced(sim.client_as("bob"), "default");
    bob.list(&ListParams::default())
        .await
        .expect("list allowed");
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "x"}})).expect("cm");
    let err = bob
        .create(&PostParams::default(), &cm)
        .await
        .expect_err("forbidden");
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 403),
        "{err:?}"
    );
    sim.shutdown().await;
}

/// `stringData` is write-only on the real server: folded into `data` (base64) on create,
/// replace and patch, never stored, so clients reading `data` see every value.
#[tokio::test]
async fn secret_string_data_is_folded_into_data() {
    use k8s_openapi::api::core::v1::Secret;
    let sim = SimCluster::start().await.expect("sim");
    let api: Api<Secret> = Api::namespaced(sim.client(), "default");
    let created = api
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "creds"},
                "data": {"username": "YWRtaW4="},
                "stringData": {"password": "s3cret"}
            }))
            .expect("secret"),
        )
        .await
        .expect("create");
    let data = |s: &Secret, k: &str| {
        s.data
            .as_ref()
            .and_then(|d| d.get(k))
            .map(|v| String::from_utf8_lossy(&v.0).into_owned())
    };
    assert_eq!(data(&created, "username").as_deref(), Some("admin"));
    assert_eq!(data(&created, "password").as_deref(), Some("s3cret"));
    assert!(created.string_data.is_none());
    let patched = api
        .patch(
            "creds",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"password": "rotated"}})),
        )
        .await
        .expect("patch");
    assert_eq!(data(&patched, "password").as_deref(), Some("rotated"));
    assert_eq!(data(&patched, "username").as_deref(), Some("admin"));
    let got = api.get("creds").await.expect("get");
    assert!(got.string_data.is_none());
    assert_eq!(data(&got, "password").as_deref(), Some("rotated"));
}
