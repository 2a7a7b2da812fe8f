//! Custom resources served from CustomResourceDefinitions, driven by kube-rs as Portway's
//! controllers will drive its own CRDs: establishment, discovery, CRUD with defaults and
//! validation (schema and CEL), the status subresource and generation, watch, and CRD
//! deletion taking its objects. The wording of every answer is compared with
//! kube-apiserver by the differential test (`tests/tests/sim_differential/crd.yaml`).

use futures::StreamExt;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube::runtime::{WatchStreamExt, watcher};
use portway_sim::SimCluster;
use serde_json::{Value, json};
use std::time::Duration;

fn crd() -> CustomResourceDefinition {
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "pools.test.portway.dev"},
        "spec": {
            "group": "test.portway.dev", "scope": "Namespaced",
            "names": {"plural": "pools", "kind": "Pool", "shortNames": ["pl"]},
            "versions": [{
                "name": "v1alpha1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [{"name": "CIDR", "type": "string", "jsonPath": ".spec.cidr"}],
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {
                            "type": "object", "required": ["cidr"],
                            "properties": {
                                "cidr": {"type": "string", "x-kubernetes-validations": [
                                    {"rule": "isCIDR(self) && cidr(self).prefixLength() >= 16",
                                     "message": "must be a CIDR of /16 or longer"}]},
                                "autoAssign": {"type": "boolean", "default": true},
                                "priority": {"type": "integer", "minimum": 0, "default": 10}
                            }
                        },
                        "status": {"type": "object", "properties": {"free": {"type": "integer"}}}
                    }
                }}
            }]
        }
    }))
    .expect("crd")
}

fn pools(sim: &SimCluster) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("test.portway.dev", "v1alpha1", "Pool");
    Api::namespaced_with(sim.client(), "default", &ApiResource::from_gvk(&gvk))
}

fn pool(name: &str, cidr: &str) -> DynamicObject {
    serde_json::from_value(
        json!({"apiVersion": "test.portway.dev/v1alpha1", "kind": "Pool",
        "metadata": {"name": name}, "spec": {"cidr": cidr}}),
    )
    .expect("pool")
}

async fn established(sim: &SimCluster) -> Api<CustomResourceDefinition> {
    let crds: Api<CustomResourceDefinition> = Api::all(sim.client());
    crds.create(&PostParams::default(), &crd())
        .await
        .expect("CRD created");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let c = crds.get("pools.test.portway.dev").await.expect("CRD");
        let conds = c
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .into_iter()
            .map(|c| (c.type_, c.status))
            .collect::<Vec<_>>();
        if conds.contains(&("Established".into(), "True".into())) {
            assert!(conds.contains(&("NamesAccepted".into(), "True".into())));
            return crds;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not established: {conds:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn spec(o: &DynamicObject) -> &Value {
    &o.data["spec"]
}

#[tokio::test]
async fn an_established_crd_serves_its_kind_with_defaults_status_and_watch() {
    let sim = SimCluster::start().await.expect("sim");
    established(&sim).await;
    let discovery = kube::Discovery::new(sim.client())
        .run()
        .await
        .expect("discovery");
    let (ar, caps) = discovery
        .groups()
        .find(|g| g.name() == "test.portway.dev")
        .and_then(|g| g.recommended_kind("Pool"))
        .expect("Pool in discovery");
    assert_eq!(ar.plural, "pools");
    assert!(
        caps.subresources
            .iter()
            .any(|(s, _)| s.plural.ends_with("status")),
        "{:?}",
        caps.subresources
    );

    let api = pools(&sim);
    let mut events = watcher(api.clone(), watcher::Config::default())
        .applied_objects()
        .boxed();
    let mut p = pool("a", "10.1.0.0/16");
    p.data["status"] = json!({"free": 7});
    let created = api
        .create(&PostParams::default(), &p)
        .await
        .expect("create");
    assert_eq!(spec(&created)["autoAssign"], json!(true), "default");
    assert_eq!(spec(&created)["priority"], json!(10), "default");
    assert!(
        created.data.get("status").is_none(),
        "status is the subresource's"
    );
    assert_eq!(created.metadata.generation, Some(1));
    let seen = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .expect("a watch event")
        .expect("stream")
        .expect("object");
    assert_eq!(seen.metadata.name.as_deref(), Some("a"));

    let st = api
        .patch_status(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"priority": 1}, "status": {"free": 5}})),
        )
        .await
        .expect("status patch");
    assert_eq!(st.data["status"]["free"], json!(5));
    assert_eq!(spec(&st)["priority"], json!(10), "spec is not the status's");
    assert_eq!(
        st.metadata.generation,
        Some(1),
        "a status change is no generation"
    );
    let sp = api
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"priority": 2}, "status": {"free": 0}})),
        )
        .await
        .expect("spec patch");
    assert_eq!(
        sp.data["status"]["free"],
        json!(5),
        "status is not the spec's"
    );
    assert_eq!(sp.metadata.generation, Some(2));
    let strategic = api
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"priority": 3}})),
        )
        .await
        .expect_err("strategic merge is refused");
    assert!(
        matches!(strategic, kube::Error::Api(ref s) if s.code == 415),
        "{strategic:?}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn schema_and_cel_rules_refuse_bad_objects_naming_the_field() {
    let sim = SimCluster::start().await.expect("sim");
    established(&sim).await;
    let api = pools(&sim);
    let refused = |e: kube::Error| match e {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 422, "{s:?}");
            s.message
        }
        other => panic!("{other:?}"),
    };
    let e = api
        .create(&PostParams::default(), &pool("b", "10.0.0.0/8"))
        .await
        .expect_err("a /8 breaks the CEL rule");
    let msg = refused(e);
    assert!(
        msg.contains("spec.cidr: Invalid value: \"10.0.0.0/8\": must be a CIDR of /16 or longer"),
        "{msg}"
    );
    let e = api
        .create(&PostParams::default(), &pool("b", "not-a-cidr"))
        .await
        .expect_err("isCIDR");
    assert!(refused(e).contains("spec.cidr"));
    let mut neg = pool("b", "10.2.0.0/16");
    neg.data["spec"]["priority"] = json!(-1);
    let e = api
        .create(&PostParams::default(), &neg)
        .await
        .expect_err("minimum");
    assert!(refused(e).contains("spec.priority in body should be greater than or equal to 0"));
    let mut missing = pool("b", "x");
    missing.data["spec"] = json!({});
    let e = api
        .create(&PostParams::default(), &missing)
        .await
        .expect_err("required");
    assert!(refused(e).contains("spec.cidr: Required value"));
    api.create(&PostParams::default(), &pool("b", "10.2.0.0/16"))
        .await
        .expect("a good pool");
    sim.shutdown().await;
}

#[tokio::test]
async fn deleting_the_crd_deletes_its_objects_and_its_kind() {
    let sim = SimCluster::start().await.expect("sim");
    let crds = established(&sim).await;
    let api = pools(&sim);
    api.create(&PostParams::default(), &pool("c", "10.3.0.0/16"))
        .await
        .expect("create");
    crds.delete("pools.test.portway.dev", &DeleteParams::default())
        .await
        .expect("CRD delete");
    let gone = api
        .get("c")
        .await
        .expect_err("the kind is no longer served");
    assert!(
        matches!(gone, kube::Error::Api(ref s) if s.code == 404),
        "{gone:?}"
    );
    assert!(
        crds.get_opt("pools.test.portway.dev")
            .await
            .expect("get")
            .is_none()
    );
    // Defined again, the kind starts empty.
    established(&sim).await;
    let left = api.list(&Default::default()).await.expect("list");
    assert!(left.items.is_empty(), "{:?}", left.items);
    sim.shutdown().await;
}
