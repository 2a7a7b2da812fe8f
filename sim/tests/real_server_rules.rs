//! Rules of the real API server that a lenient simulation would let a client get wrong:
//! each is one a controller has been known to break, and each is refused here as there.

use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use portway_sim::SimCluster;
use serde_json::json;

fn cm(name: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": {"a": "1"}})).expect("cm")
}

async fn raw_get(sim: &SimCluster, path: &str) -> serde_json::Value {
    let req = axum::http::Request::get(path)
        .body(Vec::new())
        .expect("request");
    let text = sim.client().request_text(req).await.expect("raw get");
    serde_json::from_str(&text).expect("json")
}

#[tokio::test]
async fn list_items_carry_no_kind_but_gets_do() {
    let sim = SimCluster::start().await.expect("sim");
    let api: Api<ConfigMap> = Api::namespaced(sim.client(), "default");
    api.create(&PostParams::default(), &cm("one"))
        .await
        .expect("create");
    let list = raw_get(&sim, "/api/v1/namespaces/default/configmaps").await;
    assert_eq!(list["kind"], "ConfigMapList");
    // The namespace's kube-root-ca.crt is listed too.
    let item = list["items"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["metadata"]["name"] == "one"))
        .expect("the configmap is listed");
    assert!(
        item.get("kind").is_none() && item.get("apiVersion").is_none(),
        "{item}"
    );
    let one = raw_get(&sim, "/api/v1/namespaces/default/configmaps/one").await;
    assert_eq!(one["kind"], "ConfigMap");
    // kube-rs (like client-go) reads such lists as every real server sends them (the
    // namespace's kube-root-ca.crt beside ours).
    let names: Vec<String> = api
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    assert_eq!(names, ["kube-root-ca.crt", "one"]);
    sim.shutdown().await;
}

#[tokio::test]
async fn creating_with_a_resource_version_is_refused() {
    let sim = SimCluster::start().await.expect("sim");
    let api: Api<ConfigMap> = Api::namespaced(sim.client(), "default");
    let mut read = api
        .create(&PostParams::default(), &cm("one"))
        .await
        .expect("create");
    read.metadata.name = Some("copy".into());
    let err = api
        .create(&PostParams::default(), &read)
        .await
        .expect_err("an object read back keeps its resourceVersion");
    match err {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 500);
            assert!(
                s.message.contains("resourceVersion should not be set"),
                "{}",
                s.message
            );
        }
        other => panic!("{other:?}"),
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn no_new_finalizer_on_an_object_being_deleted() {
    let sim = SimCluster::start().await.expect("sim");
    let api: Api<ConfigMap> = Api::namespaced(sim.client(), "default");
    let mut held = cm("held");
    held.metadata.finalizers = Some(vec!["example.com/first".into()]);
    api.create(&PostParams::default(), &held)
        .await
        .expect("create");
    api.delete("held", &DeleteParams::default())
        .await
        .expect("delete");
    let add = json!({"metadata": {"finalizers": ["example.com/first", "example.com/second"]}});
    let err = api
        .patch("held", &PatchParams::default(), &Patch::Merge(&add))
        .await
        .expect_err("a new finalizer on a deleting object");
    match err {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 422);
            assert!(s.message.contains("no new finalizers"), "{}", s.message);
        }
        other => panic!("{other:?}"),
    }
    // Removing the one it has is what a controller does, and ends the deletion.
    let done = json!({"metadata": {"finalizers": null}});
    api.patch("held", &PatchParams::default(), &Patch::Merge(&done))
        .await
        .expect("remove finalizer");
    assert!(api.get_opt("held").await.expect("get").is_none());
    sim.shutdown().await;
}

#[tokio::test]
async fn services_are_selected_by_spec_type_only() {
    let sim = SimCluster::start().await.expect("sim");
    let api: Api<Service> = Api::namespaced(sim.client(), "default");
    let lb: Service = serde_json::from_value(json!({"metadata": {"name": "lb"},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}}))
    .expect("svc");
    api.create(&PostParams::default(), &lb)
        .await
        .expect("create");
    let found = api
        .list(&ListParams::default().fields("spec.type=LoadBalancer"))
        .await
        .expect("spec.type");
    assert_eq!(found.items.len(), 1);
    let err = api
        .list(&ListParams::default().fields("type=LoadBalancer"))
        .await
        .expect_err("a bare `type` is not a Service field label");
    assert!(matches!(err, kube::Error::Api(s) if s.code == 400));
    sim.shutdown().await;
}

#[tokio::test]
async fn a_put_of_a_copy_from_before_a_recreate_is_a_conflict() {
    let sim = SimCluster::start().await.expect("sim");
    let api: Api<ConfigMap> = Api::namespaced(sim.client(), "default");
    let old = api
        .create(&PostParams::default(), &cm("one"))
        .await
        .expect("create");
    api.delete("one", &DeleteParams::default())
        .await
        .expect("delete");
    api.create(&PostParams::default(), &cm("one"))
        .await
        .expect("recreate");
    let mut stale = old;
    stale.metadata.resource_version = None;
    let err = api
        .replace("one", &PostParams::default(), &stale)
        .await
        .expect_err("the old uid");
    match err {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 409);
            assert!(
                s.message.contains("Precondition failed: UID"),
                "{}",
                s.message
            );
        }
        other => panic!("{other:?}"),
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn an_event_without_the_required_fields_is_refused() {
    use k8s_openapi::api::events::v1::Event;
    let sim = SimCluster::start().await.expect("sim");
    let api: Api<Event> = Api::namespaced(sim.client(), "default");
    let bare: Event = serde_json::from_value(json!({"metadata": {"name": "e1"},
        "reason": "Something", "type": "Normal", "note": "hello"}))
    .expect("event");
    // kube-apiserver v1.37.2 (as the differential test shows): without an eventTime only
    // that and the type are checked; with one, the reporting fields and the action too.
    let err = api
        .create(&PostParams::default(), &bare)
        .await
        .expect_err("no eventTime");
    match err {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 422);
            assert!(
                s.message.contains("eventTime: Required value"),
                "{}",
                s.message
            );
        }
        other => panic!("{other:?}"),
    }
    let timed: Event = serde_json::from_value(json!({"metadata": {"name": "e1"},
        "reason": "Something", "type": "Normal", "note": "hello",
        "eventTime": "2026-01-01T00:00:00.000000Z"}))
    .expect("event");
    let err = api
        .create(&PostParams::default(), &timed)
        .await
        .expect_err("no reportingController, reportingInstance or action");
    match err {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 422);
            for field in ["reportingController", "reportingInstance", "action"] {
                assert!(
                    s.message.contains(field),
                    "{field} not named: {}",
                    s.message
                );
            }
        }
        other => panic!("{other:?}"),
    }
    let full: Event = serde_json::from_value(json!({"metadata": {"name": "e2"},
        "reason": "Something", "type": "Normal", "note": "hello", "action": "Test",
        "eventTime": "2026-01-01T00:00:00.000000Z", "reportingController": "example.com/test",
        "reportingInstance": "test-1"}))
    .expect("event");
    api.create(&PostParams::default(), &full)
        .await
        .expect("a complete event");
    sim.shutdown().await;
}
