//! Faults only a real control plane has: kube-apiserver killed and restarted mid-test (every
//! watch breaks, every client reconnects), etcd compacted while it restarts (resuming watches
//! really get `410 Gone` and must relist), and a permission revoked under a running
//! controller. Built only with `--features real-cluster`; runs on the real world
//! (`PORTWAY_TEST_CLUSTER=real`, as `scripts/test` sets for it).

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use portway_tests::process::{get, spawn_with_lease};
use portway_tests::{Backend, L2, SimNode, TestCluster, eventually, svc};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(60);
const CONFIG: &str = "pools:\n- name: lan\n  addresses: [192.168.50.0/26]\nl2:\n  pools: [lan]\n";

async fn real() -> TestCluster {
    let c = TestCluster::start().await.expect("cluster");
    assert_eq!(
        c.backend(),
        Backend::Real,
        "faults_real runs on the real control plane: set PORTWAY_TEST_CLUSTER=real"
    );
    c.add_node(SimNode::new("n1").ipv4("10.0.0.1"))
        .await
        .expect("node");
    c
}

fn ips(s: &Service) -> Vec<String> {
    s.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|l| l.ingress.as_ref())
        .map(|i| i.iter().filter_map(|x| x.ip.clone()).collect())
        .unwrap_or_default()
}

async fn wait_served(api: &Api<Service>, names: &[String]) -> Vec<String> {
    let mut all = Vec::new();
    for name in names {
        let got = eventually(&format!("{name} to get an address"), T, || async {
            let s = api.get_opt(name).await.ok().flatten()?;
            let ips = ips(&s);
            (!ips.is_empty()).then_some(ips)
        })
        .await;
        all.extend(got);
    }
    all
}

fn unique(ips: &[String]) {
    let set: BTreeSet<&String> = ips.iter().collect();
    assert_eq!(
        set.len(),
        ips.len(),
        "an address is on two Services: {ips:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_rides_out_an_apiserver_restart_with_etcd_compacted() {
    let c = real().await;
    let dir = tempfile::tempdir().expect("tmp");
    // A Lease long enough to outlast a slow restart: the test is about the relist, not
    // about losing leadership (faults_sim and the fence tests cover that).
    let _ctl = spawn_with_lease(&c, dir.path(), "ctrl", CONFIG, ["60s", "45s", "2s"]).await;
    let api: Api<Service> = Api::namespaced(c.client(), "default");
    let before: Vec<String> = (0..5).map(|i| format!("before-{i}")).collect();
    for n in &before {
        api.create(&PostParams::default(), &svc(n).class(L2).build())
            .await
            .expect("create");
    }
    let first = wait_served(&api, &before).await;
    let seen_rv = api
        .list(&ListParams::default())
        .await
        .expect("list")
        .metadata
        .resource_version
        .expect("list resourceVersion");

    // Writes the Service watch does not see move the revision past it; compaction then
    // removes that history from etcd, and the restarted apiserver's watch cache starts
    // after it: a watch resuming from the old resourceVersion can only get 410.
    let cms: Api<ConfigMap> = Api::namespaced(c.client(), "default");
    for i in 0..20 {
        let cm =
            serde_json::from_value(serde_json::json!({"metadata": {"name": format!("churn-{i}")}}))
                .expect("configmap");
        cms.create(&PostParams::default(), &cm)
            .await
            .expect("configmap");
    }
    let real = c.real().expect("real");
    real.compact_etcd().await.expect("compact");
    real.restart_apiserver().await.expect("restart");

    // The restarted server may still be filling its watch cache (429, or a connection
    // refused): ask again until it answers, for at most a minute.
    let gone = eventually(
        "an answer to a watch from before the compaction",
        T,
        || async {
            let mut old = match api.watch(&WatchParams::default(), &seen_rv).await {
                Ok(stream) => stream.boxed(),
                Err(kube::Error::Api(e)) if e.code == 410 => return Some(410),
                Err(_) => return None,
            };
            tokio::time::timeout(Duration::from_secs(10), async {
                while let Some(ev) = old.next().await {
                    if let Ok(WatchEvent::Error(e)) = ev {
                        return Some(e.code);
                    }
                }
                None
            })
            .await
            .ok()
            .flatten()
            .filter(|code| *code != 429 && *code < 500)
        },
    )
    .await;
    assert_eq!(
        gone, 410,
        "a watch from before the compaction resumes into 410 Gone"
    );

    // The controller relisted: Services made after the restart are served, the old ones
    // kept their addresses, and no address is handed out twice.
    let after: Vec<String> = (0..5).map(|i| format!("after-{i}")).collect();
    for n in &after {
        // Just after its restart the server may still be repairing its ClusterIP
        // allocator ("range is full", 500): a client asks again, as kubectl users do.
        eventually(&format!("{n} created"), T, || async {
            match api
                .create(&PostParams::default(), &svc(n).class(L2).build())
                .await
            {
                Ok(_) => Some(()),
                // A create that went through before its answer was lost.
                Err(kube::Error::Api(e)) if e.code == 409 => Some(()),
                Err(_) => None,
            }
        })
        .await;
    }
    let second = wait_served(&api, &after).await;
    let again = wait_served(&api, &before).await;
    assert_eq!(first, again, "an address moved across the restart");
    let mut all = first.clone();
    all.extend(second);
    unique(&all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_lease_permission_makes_the_leader_step_down_and_exit() {
    let c = real().await;
    let dir = tempfile::tempdir().expect("tmp");
    // The controller's user holds cluster-admin while RBAC is "off"; enforcing RBAC takes
    // every permission away from it, the Lease's first.
    let mut ctl = spawn_with_lease(&c, dir.path(), "ctrl", CONFIG, ["6s", "3s", "1500ms"]).await;
    let api: Api<Service> = Api::namespaced(c.client(), "default");
    api.create(&PostParams::default(), &svc("web").class(L2).build())
        .await
        .expect("create");
    wait_served(&api, &["web".to_string()]).await;
    assert_eq!(get(ctl.port, "/healthz").await.map(|r| r.0), Some(200));
    c.enforce_rbac(true).await.expect("revoke");
    let mut saw_500 = false;
    let deadline = Instant::now() + T;
    let status = loop {
        if let Some((500, _)) = get(ctl.port, "/healthz").await {
            saw_500 = true;
        }
        if let Ok(Some(status)) = ctl.child.try_wait() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the controller kept running without its lease"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!status.success(), "a lost lease must exit non-zero");
    assert!(saw_500, "/healthz never reported the overdue renewal");
}
