//! The service controller end to end: the real controller against the test world
//! (`PORTWAY_TEST_CLUSTER`: the sim or the real control plane), with `MockProvider`s
//! recording every call.

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use portway_provider::mock::{Call, MockProvider};
use portway_provider::{LoadBalancerProvider, ProviderError, ServiceKey};
use portway_tests::{
    BGP, HOSTPORT, L2, SimNode, TestCluster, eventually, start_service_controller, svc,
};
use std::sync::Arc;
use std::time::Duration;

const FINALIZER: &str = "service.kubernetes.io/load-balancer-cleanup";
const T: Duration = Duration::from_secs(15);

struct World {
    cluster: TestCluster,
    hostport: MockProvider,
    l2: MockProvider,
    bgp: MockProvider,
}

impl World {
    async fn new(nodes: usize) -> World {
        let cluster = TestCluster::start().await.expect("cluster starts");
        for i in 0..nodes {
            cluster
                .add_node(SimNode::new(&format!("n{i}")).ipv4(&format!("10.0.0.{}", i + 1)))
                .await
                .expect("node");
        }
        World {
            cluster,
            hostport: MockProvider::new(HOSTPORT),
            l2: MockProvider::new(L2),
            bgp: MockProvider::new(BGP),
        }
    }

    fn providers(&self) -> Vec<Arc<dyn LoadBalancerProvider>> {
        vec![
            Arc::new(self.hostport.clone()),
            Arc::new(self.l2.clone()),
            Arc::new(self.bgp.clone()),
        ]
    }

    fn start(&self) -> portway_tests::Running {
        start_service_controller(self.cluster.client(), self.providers(), HOSTPORT)
    }

    fn api(&self) -> Api<Service> {
        Api::namespaced(self.cluster.client(), "default")
    }

    async fn create(&self, s: Service) -> Service {
        self.api()
            .create(&PostParams::default(), &s)
            .await
            .expect("create")
    }

    async fn get(&self, name: &str) -> Option<Service> {
        self.api().get_opt(name).await.expect("get")
    }

    async fn wait_ip(&self, name: &str) -> String {
        eventually(&format!("{name} to get an address"), T, || async {
            self.get(name).await.and_then(|s| ingress_ip(&s))
        })
        .await
    }

    /// The service controller's events on `name` (on the real world, kube-controller-manager's
    /// endpoints controller may warn about the same Service: not ours to count).
    async fn events(&self, name: &str) -> Vec<Event> {
        let events: Api<Event> = Api::namespaced(self.cluster.client(), "default");
        events
            .list(&Default::default())
            .await
            .expect("events")
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .filter(|e| e.reporting_controller.as_deref() == Some("service-controller"))
            .collect()
    }

    async fn reasons(&self, name: &str) -> Vec<String> {
        self.events(name)
            .await
            .into_iter()
            .filter_map(|e| e.reason)
            .collect()
    }
}

fn ingress_ip(s: &Service) -> Option<String> {
    s.status
        .as_ref()?
        .load_balancer
        .as_ref()?
        .ingress
        .as_ref()?
        .first()?
        .ip
        .clone()
}

fn has_finalizer(s: &Service) -> bool {
    s.metadata
        .finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|x| x == FINALIZER))
}

fn key(name: &str) -> ServiceKey {
    ServiceKey::new("default", name)
}

fn count(calls: &[Call], pred: impl Fn(&Call) -> bool) -> usize {
    calls.iter().filter(|c| pred(c)).count()
}

#[tokio::test]
async fn create_adds_finalizer_then_status_and_events() {
    let w = World::new(3).await;
    let _c = w.start();
    w.create(svc("web").class(L2).build()).await;
    let ip = w.wait_ip("web").await;
    assert!(ip.starts_with("203.0.113."), "{ip}");
    let s = w.get("web").await.expect("exists");
    assert!(has_finalizer(&s));
    let ingress = &s
        .status
        .as_ref()
        .and_then(|st| st.load_balancer.clone())
        .and_then(|lb| lb.ingress)
        .expect("ingress")[0];
    assert_eq!(ingress.ip_mode.as_deref(), Some("VIP"));
    let calls = w.l2.calls_for(&key("web"));
    assert!(
        matches!(&calls[0], Call::Ensure(_, nodes) if nodes.len() == 3),
        "{calls:?}"
    );
    let reasons = eventually("events", T, || async {
        let r = w.reasons("web").await;
        r.contains(&"EnsuredLoadBalancer".to_string()).then_some(r)
    })
    .await;
    assert!(
        reasons.contains(&"EnsuringLoadBalancer".to_string()),
        "{reasons:?}"
    );
    // The other providers never saw it.
    assert!(w.hostport.calls_for(&key("web")).is_empty());
    assert!(w.bgp.calls_for(&key("web")).is_empty());
}

#[tokio::test]
async fn in_sync_service_gets_zero_writes_and_one_ensure() {
    let w = World::new(1).await;
    let _c = w.start();
    w.create(svc("web").class(L2).build()).await;
    w.wait_ip("web").await;
    // Let the controller see its own finalizer and status writes come back.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ensures = count(&w.l2.calls_for(&key("web")), |c| {
        matches!(c, Call::Ensure(..))
    });
    assert_eq!(ensures, 1, "own writes must not re-trigger the provider");
    let writes = w
        .cluster
        .writes()
        .await
        .count_for("services", "default", "web");
    // create (by the test) + finalizer + status.
    assert_eq!(writes, 3, "{:?}", w.cluster.writes().await.all());
}

#[tokio::test]
async fn delete_calls_ensure_deleted_then_drops_finalizer() {
    let w = World::new(1).await;
    let _c = w.start();
    w.create(svc("web").class(BGP).build()).await;
    w.wait_ip("web").await;
    w.api()
        .delete("web", &DeleteParams::default())
        .await
        .expect("delete");
    eventually("web to be gone", T, || async {
        w.get("web").await.is_none().then_some(())
    })
    .await;
    let calls = w.bgp.calls_for(&key("web"));
    assert!(
        matches!(calls.last(), Some(Call::EnsureDeleted(_))),
        "{calls:?}"
    );
    // The event is published after the finalizer goes: wait for it.
    eventually("a DeletedLoadBalancer event", T, || async {
        w.reasons("web")
            .await
            .contains(&"DeletedLoadBalancer".to_string())
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn foreign_class_is_untouched() {
    let w = World::new(1).await;
    let _c = w.start();
    w.create(svc("other").class("example.com/lb").build()).await;
    w.create(svc("mine").class(L2).build()).await;
    w.wait_ip("mine").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let s = w.get("other").await.expect("exists");
    assert!(!has_finalizer(&s));
    assert!(ingress_ip(&s).is_none());
    assert!(w.events("other").await.is_empty());
    for m in [&w.hostport, &w.l2, &w.bgp] {
        assert!(m.calls_for(&key("other")).is_empty());
    }
}

#[tokio::test]
async fn foreign_class_with_the_shared_finalizer_keeps_it_and_its_status() {
    // Another load-balancer controller uses the same upstream finalizer name
    // and owns the status: Portway touches neither, not even on deletion.
    let w = World::new(1).await;
    let mut other = svc("other").class("example.com/lb").build();
    other.metadata.finalizers = Some(vec![
        "service.kubernetes.io/load-balancer-cleanup".to_string(),
    ]);
    w.create(other).await;
    let status =
        serde_json::json!({"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.9"}]}}});
    w.api()
        .patch_status("other", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("status");
    let _c = w.start();
    w.create(svc("mine").class(L2).build()).await;
    w.wait_ip("mine").await;
    w.api()
        .delete("other", &DeleteParams::default())
        .await
        .expect("delete");
    w.create(svc("after").class(L2).build()).await;
    w.wait_ip("after").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let s = w
        .get("other")
        .await
        .expect("held by the other controller's finalizer");
    assert!(has_finalizer(&s), "the foreign finalizer was removed");
    assert_eq!(ingress_ip(&s).as_deref(), Some("192.0.2.9"));
    assert!(w.events("other").await.is_empty());
    for m in [&w.hostport, &w.l2, &w.bgp] {
        assert!(m.calls_for(&key("other")).is_empty());
    }
}

#[tokio::test]
async fn a_provider_trigger_re_ensures_quietly_and_publishes_what_changed() {
    // A provider's own watch (svclb pods ready, BIG-IP drift) asks for an ensure of a
    // Service nothing in the cluster changed: one call, the new status, no Ensuring event.
    let w = World::new(1).await;
    let _c = w.start();
    w.create(svc("web").class(L2).build()).await;
    w.wait_ip("web").await;
    let ensures = || {
        count(&w.l2.calls_for(&key("web")), |c| {
            matches!(c, Call::Ensure(..))
        })
    };
    assert_eq!(ensures(), 1);
    // Events are written off the reconcile's path: wait for the create's own.
    let ensuring_before = eventually("the create's Ensuring event", T, || async {
        let n = w
            .reasons("web")
            .await
            .iter()
            .filter(|r| *r == "EnsuringLoadBalancer")
            .count();
        (n > 0).then_some(n)
    })
    .await;
    let moved: std::net::IpAddr = "198.51.100.7".parse().expect("ip");
    w.l2.set_status(key("web"), portway_provider::LbStatus::vips([moved]));
    w.l2.trigger(key("web"));
    eventually("the triggered status", T, || async {
        (w.get("web").await.and_then(|s| ingress_ip(&s)).as_deref() == Some("198.51.100.7"))
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ensures(), 2, "exactly one more ensure");
    let ensuring_after = w
        .reasons("web")
        .await
        .iter()
        .filter(|r| *r == "EnsuringLoadBalancer")
        .count();
    assert_eq!(ensuring_before, ensuring_after, "a trigger is quiet");
}

#[tokio::test]
async fn a_class_configured_out_keeps_its_service_until_deleted() {
    // f5 is not configured here: its Service keeps its finalizer and status, with one
    // Warning saying what to add; deleting it is not blocked.
    let w = World::new(1).await;
    let mut f5 = svc("appliance").class("portway.dev/f5").build();
    f5.metadata.finalizers = Some(vec![FINALIZER.to_string()]);
    w.create(f5).await;
    let status =
        serde_json::json!({"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.77"}]}}});
    w.api()
        .patch_status("appliance", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("status");
    let _c = w.start();
    eventually("a warning naming the missing section", T, || async {
        w.events("appliance")
            .await
            .iter()
            .any(|e| {
                e.type_.as_deref() == Some("Warning")
                    && e.note
                        .as_deref()
                        .is_some_and(|n| n.contains("portway.dev/f5 is not configured"))
            })
            .then_some(())
    })
    .await;
    let s = w.get("appliance").await.expect("exists");
    assert!(has_finalizer(&s));
    assert_eq!(ingress_ip(&s).as_deref(), Some("203.0.113.77"));
    w.api()
        .delete("appliance", &DeleteParams::default())
        .await
        .expect("delete");
    eventually("the Service is gone", T, || async {
        w.get("appliance").await.is_none().then_some(())
    })
    .await;
}

#[tokio::test]
async fn no_class_goes_to_the_default_class() {
    let w = World::new(1).await;
    let _c = w.start();
    w.create(svc("plain").build()).await;
    w.wait_ip("plain").await;
    assert_eq!(
        count(&w.hostport.calls_for(&key("plain")), |c| matches!(
            c,
            Call::Ensure(..)
        )),
        1
    );
}

#[tokio::test]
async fn type_change_away_from_load_balancer_cleans_up() {
    let w = World::new(1).await;
    let _c = w.start();
    w.create(svc("web").class(L2).build()).await;
    w.wait_ip("web").await;
    let patch = serde_json::json!({ "spec": { "type": "ClusterIP", "loadBalancerClass": null,
        "ports": [{ "name": "tcp-80", "port": 80, "protocol": "TCP", "nodePort": null }] } });
    w.api()
        .patch("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch");
    let s = eventually("cleanup", T, || async {
        w.get("web").await.filter(|s| !has_finalizer(s))
    })
    .await;
    assert!(ingress_ip(&s).is_none(), "status cleared");
    let calls = w.l2.calls_for(&key("web"));
    assert!(
        matches!(calls.last(), Some(Call::EnsureDeleted(_))),
        "{calls:?}"
    );
}

#[tokio::test]
async fn transient_failures_are_retried_until_success() {
    let w = World::new(1).await;
    w.l2.fail_next(2, ProviderError::transient("appliance busy"));
    let _c = w.start();
    w.create(svc("web").class(L2).build()).await;
    w.wait_ip("web").await;
    let ensures = count(&w.l2.calls_for(&key("web")), |c| {
        matches!(c, Call::Ensure(..))
    });
    assert_eq!(ensures, 3);
    // Events are written off the reconcile's path: wait for the second failure's count.
    let warnings: Vec<Event> = eventually("the series counts both failures", T, || async {
        let warnings: Vec<Event> = w
            .events("web")
            .await
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("SyncLoadBalancerFailed"))
            .collect();
        (warnings
            .iter()
            .map(|e| e.deprecated_count.unwrap_or(1))
            .sum::<i32>()
            >= 2)
            .then_some(warnings)
    })
    .await;
    assert_eq!(warnings.len(), 1, "identical warnings are one series");
    assert_eq!(warnings[0].deprecated_count, Some(2));
    assert_eq!(warnings[0].type_.as_deref(), Some("Warning"));
    assert!(
        warnings[0]
            .note
            .as_deref()
            .unwrap_or("")
            .contains("appliance busy")
    );
}

#[tokio::test]
async fn an_exhausted_pool_is_retried_when_a_cleanup_frees_an_address() {
    let w = World::new(1).await;
    // Retries so slow that only the release can bring the waiting Service back in time.
    let cfg = portway::config::ServiceControllerConfig {
        min_retry_delay: Duration::from_secs(600),
        max_retry_delay: Duration::from_secs(600),
        ..portway_tests::fast_config()
    };
    let _c = portway_tests::start_service_controller_with(
        w.cluster.client(),
        w.providers(),
        HOSTPORT,
        cfg,
    );
    w.create(svc("old").class(L2).build()).await;
    w.wait_ip("old").await;
    let exhausted = ProviderError::Exhausted {
        pool: "lan".into(),
        reason: "no IPv4 address left".into(),
    };
    w.l2.fail_ensures_of(key("web"), Some(exhausted));
    w.create(svc("web").class(L2).build()).await;
    eventually("the exhausted warning", T, || async {
        w.reasons("web")
            .await
            .contains(&"SyncLoadBalancerFailed".to_string())
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(w.get("web").await.and_then(|s| ingress_ip(&s)).is_none());
    // The pool has room again once "old" is gone; nothing about "web" changes.
    w.l2.fail_ensures_of(key("web"), None);
    w.api()
        .delete("old", &DeleteParams::default())
        .await
        .expect("delete");
    w.wait_ip("web").await;
}

#[tokio::test]
async fn needs_a_fix_gives_one_warning_and_no_hot_loop() {
    let w = World::new(1).await;
    w.l2.fail_next(
        1,
        ProviderError::invalid(
            "metadata.annotations[portway.dev/address-pool]",
            "no pool named nope",
        ),
    );
    let _c = w.start();
    w.create(
        svc("web")
            .class(L2)
            .annotation("portway.dev/address-pool", "nope")
            .build(),
    )
    .await;
    let warning = eventually("a warning", T, || async {
        w.events("web")
            .await
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("SyncLoadBalancerFailed"))
    })
    .await;
    assert!(
        warning
            .note
            .as_deref()
            .unwrap_or("")
            .contains("portway.dev/address-pool")
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ensures = count(&w.l2.calls_for(&key("web")), |c| {
        matches!(c, Call::Ensure(..))
    });
    assert_eq!(ensures, 1, "parked until the Service changes");
    // The fix: a change of the Service wakes it up.
    let patch =
        serde_json::json!({ "metadata": { "annotations": { "portway.dev/address-pool": "lan" } } });
    w.api()
        .patch("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch");
    w.wait_ip("web").await;
}

#[tokio::test]
async fn bad_annotation_is_reported_before_any_provider_call() {
    let w = World::new(1).await;
    let _c = w.start();
    w.create(
        svc("web")
            .class(L2)
            .annotation("portway.dev/load-balancer-ips", "10.0.0.999")
            .build(),
    )
    .await;
    let warning = eventually("a warning", T, || async {
        w.events("web")
            .await
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("SyncLoadBalancerFailed"))
    })
    .await;
    assert!(
        warning
            .note
            .as_deref()
            .unwrap_or("")
            .contains("portway.dev/load-balancer-ips")
    );
    assert!(w.l2.calls_for(&key("web")).is_empty());
}

#[tokio::test]
async fn node_changes_cause_exactly_one_update_per_service() {
    let w = World::new(2).await;
    let _c = w.start();
    for name in ["a", "b"] {
        w.create(svc(name).class(L2).build()).await;
    }
    w.create(svc("c").class(BGP).build()).await;
    for name in ["a", "b", "c"] {
        w.wait_ip(name).await;
    }
    let updates = |m: &MockProvider, name: &str| {
        count(&m.calls_for(&key(name)), |c| matches!(c, Call::Update(..)))
    };

    w.cluster
        .add_node(SimNode::new("n9").ipv4("10.0.0.9"))
        .await
        .expect("node");
    eventually("updates after node add", T, || async {
        (updates(&w.l2, "a") == 1 && updates(&w.l2, "b") == 1 && updates(&w.bgp, "c") == 1)
            .then_some(())
    })
    .await;
    let last = w.l2.calls_for(&key("a")).last().cloned();
    assert!(matches!(last, Some(Call::Update(_, nodes)) if nodes.len() == 3));

    // Readiness is not part of the eligible set (KEP-3458): no update.
    w.cluster
        .set_node_ready("n9", false)
        .await
        .expect("not ready");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(updates(&w.l2, "a"), 1);

    // Excluding a node is.
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(w.cluster.client());
    let patch = serde_json::json!({ "metadata": { "labels": {
        "node.kubernetes.io/exclude-from-external-load-balancers": "true" } } });
    nodes
        .patch("n9", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("label");
    eventually("updates after exclusion", T, || async {
        (updates(&w.l2, "a") == 2 && updates(&w.l2, "b") == 2 && updates(&w.bgp, "c") == 2)
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(updates(&w.l2, "a"), 2, "exactly one per change");
    let last = w.l2.calls_for(&key("a")).last().cloned();
    assert!(matches!(last, Some(Call::Update(_, nodes)) if nodes.len() == 2));
}

#[tokio::test]
async fn restart_does_not_repeat_side_effects() {
    let w = World::new(2).await;
    let c = w.start();
    for i in 0..5 {
        w.create(svc(&format!("s{i}")).class(L2).build()).await;
    }
    for i in 0..5 {
        w.wait_ip(&format!("s{i}")).await;
    }
    c.stop().await;
    let before = w.cluster.writes().await.by_user("admin").len();
    // A new process: a fresh provider that adopts what the cluster says.
    let l2 = MockProvider::new(L2);
    let c2 = portway_tests::start_service_controller(
        w.cluster.client(),
        vec![
            Arc::new(l2.clone()),
            Arc::new(w.hostport.clone()),
            Arc::new(w.bgp.clone()),
        ],
        HOSTPORT,
    );
    eventually("adopt and one ensure each", T, || async {
        let calls = l2.calls();
        (calls
            .iter()
            .filter(|c| matches!(c, Call::Ensure(..)))
            .count()
            == 5)
            .then_some(())
    })
    .await;
    assert!(
        matches!(l2.calls()[0], Call::Adopt(ref keys) if keys.len() == 5),
        "adopt comes first"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = w.cluster.writes().await.by_user("admin");
    assert_eq!(
        after.len(),
        before,
        "no writes for in-sync Services: {:?}",
        &after[before..]
    );
    c2.stop().await;
}

// ---------------------------------------------------------------- issue 16: upstream parity

/// Issue 16 #1: with a default class that no provider serves (no `l2:` section, hostport
/// off), a Service without a class is parked with one Warning and keeps its address and
/// finalizer, as a Service naming an unconfigured class does; it is never torn down.
#[tokio::test]
async fn a_default_class_that_is_not_configured_parks_classless_services() {
    let w = World::new(1).await;
    let mut plain = svc("plain").build();
    plain.metadata.finalizers = Some(vec![FINALIZER.to_string()]);
    w.create(plain).await;
    let status = serde_json::json!({"status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.1"}]}}});
    w.api()
        .patch_status("plain", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("status");
    // Only l2 and bgp are served; the default is l2's neighbour, not configured here.
    let _c = portway_tests::start_service_controller(
        w.cluster.client(),
        vec![Arc::new(w.bgp.clone())],
        L2,
    );
    let warning = eventually("a warning naming the class", T, || async {
        w.events("plain").await.into_iter().find(|e| {
            e.type_.as_deref() == Some("Warning")
                && e.note
                    .as_deref()
                    .is_some_and(|n| n.contains("portway.dev/l2 is not configured"))
        })
    })
    .await;
    assert_eq!(warning.reason.as_deref(), Some("SyncLoadBalancerFailed"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s = w.get("plain").await.expect("exists");
    assert!(has_finalizer(&s), "the finalizer must stay");
    assert_eq!(
        ingress_ip(&s).as_deref(),
        Some("10.0.0.1"),
        "the address must stay"
    );
    assert!(w.bgp.calls_for(&key("plain")).is_empty());
    let warnings: Vec<(Option<String>, Option<String>, Option<i32>)> = w
        .events("plain")
        .await
        .into_iter()
        // Ours only: the real endpoints controller may warn about the same Service.
        .filter(|e| {
            e.type_.as_deref() == Some("Warning")
                && e.reporting_controller.as_deref() == Some("service-controller")
        })
        .map(|e| (e.reason, e.note, e.deprecated_count))
        .collect();
    assert_eq!(
        warnings.len(),
        1,
        "one Warning, not one per resync: {warnings:?}"
    );
}

/// Issue 16 #4: a requested address held by another Service is retried as soon as the
/// holder releases it, and the Warning says who holds it.
#[tokio::test]
async fn a_conflict_is_retried_when_the_holder_releases() {
    let w = World::new(1).await;
    // Retries so slow that only the release can bring the waiting Service back in time.
    let cfg = portway::config::ServiceControllerConfig {
        min_retry_delay: Duration::from_secs(600),
        max_retry_delay: Duration::from_secs(600),
        ..portway_tests::fast_config()
    };
    let _c = portway_tests::start_service_controller_with(
        w.cluster.client(),
        w.providers(),
        HOSTPORT,
        cfg,
    );
    w.create(svc("holder").class(L2).build()).await;
    w.wait_ip("holder").await;
    w.l2.fail_ensures_of(
        key("web"),
        Some(ProviderError::Conflict {
            what: "address 203.0.113.9 (requested)".into(),
            holder: "default/holder".into(),
        }),
    );
    w.create(svc("web").class(L2).build()).await;
    let note = eventually("the conflict warning", T, || async {
        w.events("web")
            .await
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("SyncLoadBalancerFailed"))
            .and_then(|e| e.note)
    })
    .await;
    assert!(note.contains("held by default/holder"), "{note}");
    w.l2.fail_ensures_of(key("web"), None);
    w.api()
        .delete("holder", &DeleteParams::default())
        .await
        .expect("delete");
    w.wait_ip("web").await;
}

/// Issue 16 #5: someone stripped the finalizer, then deleted the Service: what the
/// provider made is released all the same, from what the controller remembered.
#[tokio::test]
async fn a_service_deleted_without_its_finalizer_is_cleaned_up() {
    let w = World::new(1).await;
    let _c = w.start();
    w.create(svc("web").class(BGP).build()).await;
    w.wait_ip("web").await;
    let strip = serde_json::json!({"metadata": {"finalizers": null}});
    w.api()
        .patch("web", &PatchParams::default(), &Patch::Merge(&strip))
        .await
        .expect("strip");
    w.api()
        .delete("web", &DeleteParams::default())
        .await
        .expect("delete");
    eventually("ensure_deleted for the deleted Service", T, || async {
        w.bgp
            .calls_for(&key("web"))
            .iter()
            .any(|c| matches!(c, Call::EnsureDeleted(_)))
            .then_some(())
    })
    .await;
}

/// Issue 16 #5, the type change: without the finalizer the load balancer is still
/// released and the status cleared.
#[tokio::test]
async fn a_type_change_without_the_finalizer_is_cleaned_up() {
    let w = World::new(1).await;
    let _c = w.start();
    w.create(svc("web").class(L2).build()).await;
    w.wait_ip("web").await;
    let strip = serde_json::json!({"metadata": {"finalizers": null}});
    w.api()
        .patch("web", &PatchParams::default(), &Patch::Merge(&strip))
        .await
        .expect("strip");
    let patch = serde_json::json!({ "spec": { "type": "ClusterIP", "loadBalancerClass": null,
        "ports": [{ "name": "tcp-80", "port": 80, "protocol": "TCP", "nodePort": null }] } });
    w.api()
        .patch("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch");
    eventually("released and cleared", T, || async {
        let released =
            w.l2.calls_for(&key("web"))
                .iter()
                .any(|c| matches!(c, Call::EnsureDeleted(_)));
        let cleared = w.get("web").await.is_some_and(|s| ingress_ip(&s).is_none());
        (released && cleared).then_some(())
    })
    .await;
}

/// Issue 16 #6: upstream leaves load balancers alone when the cluster autoscaler taints a
/// node it will remove, so connections drain; the next update for another reason leaves
/// the node out.
#[tokio::test]
async fn the_autoscaler_taint_alone_updates_no_load_balancer() {
    let w = World::new(2).await;
    let _c = w.start();
    w.create(svc("a").class(L2).build()).await;
    w.wait_ip("a").await;
    let updates = || {
        count(&w.l2.calls_for(&key("a")), |c| {
            matches!(c, Call::Update(..))
        })
    };
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(w.cluster.client());
    let taint = serde_json::json!({"spec": {"taints": [
        {"key": "ToBeDeletedByClusterAutoscaler", "value": "1700000000", "effect": "NoSchedule"}]}});
    nodes
        .patch("n1", &PatchParams::default(), &Patch::Merge(&taint))
        .await
        .expect("taint");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        updates(),
        0,
        "the taint alone must not reprogram the load balancer"
    );
    w.cluster
        .add_node(SimNode::new("n9").ipv4("10.0.0.9"))
        .await
        .expect("node");
    eventually("an update for the new node", T, || async {
        (updates() == 1).then_some(())
    })
    .await;
    let last = w.l2.calls_for(&key("a")).last().cloned();
    assert!(
        matches!(&last, Some(Call::Update(_, nodes)) if nodes.len() == 2 && !nodes.contains(&"n1".to_string())),
        "{last:?}"
    );
}

/// Issue 16 #9: the events are core/v1 Events from `service-controller`, so the filters
/// users and alerts have for the upstream controller find them.
#[tokio::test]
async fn events_are_recorded_as_the_upstream_service_controller_records_them() {
    use k8s_openapi::api::core::v1::Event as CoreEvent;
    let w = World::new(1).await;
    let _c = w.start();
    w.create(svc("web").class(L2).build()).await;
    w.wait_ip("web").await;
    let events: Api<CoreEvent> = Api::namespaced(w.cluster.client(), "default");
    let by_source = eventually("events found by source", T, || async {
        let list = events
            .list(&kube::api::ListParams::default().fields("source=service-controller"))
            .await
            .ok()?;
        let reasons: Vec<String> = list.items.iter().filter_map(|e| e.reason.clone()).collect();
        reasons
            .contains(&"EnsuredLoadBalancer".to_string())
            .then_some(list.items)
    })
    .await;
    let e = by_source
        .iter()
        .find(|e| e.reason.as_deref() == Some("EnsuringLoadBalancer"))
        .expect("EnsuringLoadBalancer");
    assert_eq!(e.involved_object.name.as_deref(), Some("web"));
    assert_eq!(e.involved_object.kind.as_deref(), Some("Service"));
    assert_eq!(e.type_.as_deref(), Some("Normal"));
}

/// A stopping controller writes the events it queued before it goes (`Events::flush`):
/// its successor must not see them arrive later, and what it said is not lost.
#[tokio::test]
async fn flush_waits_until_every_queued_event_is_written() {
    use kube::Resource as _;
    use portway::events::{Events, Reason};
    let w = World::new(1).await;
    w.create(svc("web").class(L2).build()).await;
    let s = w.get("web").await.expect("exists");
    let events = Events::new(w.cluster.client(), "service-controller", "test");
    for i in 0..40 {
        let note = format!("note {i}");
        events
            .publish(&s.object_ref(&()), Reason::SyncLoadBalancerWarning, &note)
            .await;
    }
    assert!(events.flush(T).await, "flushed within the limit");
    let notes: Vec<String> = w
        .events("web")
        .await
        .into_iter()
        .filter_map(|e| e.note)
        .collect();
    assert_eq!(notes.len(), 40, "{notes:?}");
}

/// Endpoints that change while a Service's first ensure is in flight are ensured again:
/// that ensure read the endpoints before the change reached the cache, and nothing else
/// would call the provider again (the f5 cluster-mode test lost its first member so).
#[tokio::test]
async fn endpoints_that_change_during_the_first_ensure_are_ensured_again() {
    let w = World::new(1).await;
    w.l2.follow_endpoints(portway_provider::EndpointsUse::Always);
    w.l2.delay_ensures(Duration::from_secs(2));
    let _c = w.start();
    w.create(svc("web").class(L2).build()).await;
    eventually("the first ensure under way", T, || async {
        (!w.l2.calls_for(&key("web")).is_empty()).then_some(())
    })
    .await;
    w.cluster
        .set_endpoints("default", "web", &["n0"])
        .await
        .expect("endpoints");
    eventually("an ensure that saw the endpoint", T, || async {
        (w.l2.last_endpoints(&key("web")) == Some(1)).then_some(())
    })
    .await;
}
