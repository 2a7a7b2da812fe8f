//! Address pools as resources, end to end in the test world (`PORTWAY_TEST_CLUSTER`): the
//! CRDs of deploy/base/crds.yaml applied with kubectl, the controller's live pool task
//! (`portway::pools::run`) and the service controller as `portway controller` wires them.
//!
//! - a pool created with `kubectl apply` serves a waiting Service at once (the retry backoff
//!   is set to a minute, so only the live change can serve it), and a new Service after it;
//! - a narrowed pool moves no address; a deleted pool leaves its Services their addresses,
//!   each with an `AddressOrphaned` Warning;
//! - the pool's status counts match the Services, and lists an address two Services claim
//!   among its conflicts until one of them lets go;
//! - bad input is refused by `kubectl apply`, naming the field;
//! - MetalLB's documented pools, imported, pass the schema and serve the addresses MetalLB gives.
//!
//! Needs `$PORTWAY_KUBECTL`; skips without it unless `PORTWAY_REQUIRE_PRIVILEGED=1`.

use k8s_openapi::api::core::v1::{Event, Service};
use kube::api::{Api, ListParams, PostParams};
use portway::config::Config;
use portway::crd::AddressPool;
use portway_tests::{L2, SimNode, TestCluster, eventually, svc};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);

fn kubectl_bin() -> Option<PathBuf> {
    let missing = match std::env::var("PORTWAY_KUBECTL") {
        Ok(p) if Path::new(&p).exists() => return Some(PathBuf::from(p)),
        Ok(p) => format!("PORTWAY_KUBECTL={p} does not exist"),
        Err(_) => "PORTWAY_KUBECTL is not set (scripts/install-test-deps)".into(),
    };
    portway_tests::privileged("pools as resources (kubectl apply)", Some(missing)).ok();
    None
}

/// A test world with the CRDs applied, and kubectl pointed at it.
struct World {
    cluster: TestCluster,
    kubectl: PathBuf,
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

impl World {
    async fn start() -> Option<Self> {
        let kubectl = kubectl_bin()?;
        let cluster = TestCluster::builder()
            .kubelet(false)
            .daemonsets(false)
            .start()
            .await
            .expect("cluster");
        cluster
            .add_node(SimNode::new("n1").ipv4("10.0.0.1"))
            .await
            .expect("node");
        let dir = tempfile::tempdir().expect("tmp");
        let kubeconfig = dir.path().join("admin.kubeconfig");
        cluster
            .write_kubeconfig(&kubeconfig, "admin")
            .await
            .expect("kubeconfig");
        let w = Self {
            cluster,
            kubectl,
            kubeconfig,
            _dir: dir,
        };
        let crds = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/base/crds.yaml");
        w.ok(&["apply", "-f", crds.to_str().expect("utf-8")], "")
            .await;
        w.ok(
            &[
                "wait",
                "--for=condition=Established",
                "--timeout=30s",
                "crd/addresspools.portway.dev",
                "crd/l2announcementpolicies.portway.dev",
                "crd/bgppeers.portway.dev",
                "crd/bgpadvertisements.portway.dev",
            ],
            "",
        )
        .await;
        Some(w)
    }

    /// Runs kubectl with `stdin`; (success, stdout + stderr).
    async fn run(&self, args: &[&str], stdin: &str) -> (bool, String) {
        use tokio::io::AsyncWriteExt as _;
        let mut child = tokio::process::Command::new(&self.kubectl)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("kubectl runs");
        let mut input = child.stdin.take().expect("stdin is piped");
        input.write_all(stdin.as_bytes()).await.expect("stdin");
        drop(input);
        let out = child.wait_with_output().await.expect("kubectl output");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    async fn ok(&self, args: &[&str], stdin: &str) -> String {
        let (ok, text) = self.run(args, stdin).await;
        assert!(ok, "kubectl {args:?} failed:\n{text}");
        text
    }

    async fn apply(&self, yaml: &str) {
        self.ok(&["apply", "-f", "-"], yaml).await;
    }

    /// Starts the controller as `portway controller` does, with a minute of retry backoff
    /// so that only a live pool change can serve a waiting Service quickly.
    async fn controller(&self, config: &str) -> (portway_tests::Running, portway::pools::Live) {
        let config = Config::from_yaml(config).expect("config");
        let client = self.cluster.client();
        let built = portway::providers::build(&config, &client)
            .await
            .expect("providers");
        let live = portway::pools::run(
            client.clone(),
            &config,
            &built,
            "crd-e2e",
            Duration::from_secs(10),
            Duration::from_millis(200),
        )
        .await;
        let cfg = portway::config::ServiceControllerConfig {
            min_retry_delay: Duration::from_secs(60),
            max_retry_delay: Duration::from_secs(60),
            ..portway_tests::fast_config()
        };
        let controller = portway::service::ServiceController::new(
            client,
            built.providers,
            &config.default_class,
            cfg,
        )
        .pool_changes(live.pools.changes.clone());
        (portway_tests::start_controller(controller), live)
    }
}

fn pool_yaml(name: &str, addresses: &[&str]) -> String {
    format!(
        "apiVersion: portway.dev/v1alpha1\nkind: AddressPool\nmetadata: {{name: {name}}}\n\
         spec:\n  addresses: [{}]\n",
        addresses
            .iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

const ALL_POOLS_L2: &str = "apiVersion: portway.dev/v1alpha1\nkind: L2AnnouncementPolicy\n\
     metadata: {name: everywhere}\nspec: {pools: []}\n";

fn ip(s: &Service) -> Option<String> {
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

async fn ip_of(api: &Api<Service>, name: &str) -> Option<String> {
    api.get_opt(name).await.ok().flatten().as_ref().and_then(ip)
}

async fn create(api: &Api<Service>, name: &str) {
    api.create(&PostParams::default(), &svc(name).class(L2).build())
        .await
        .expect("create");
}

async fn orphan_warnings(cluster: &TestCluster, name: &str) -> usize {
    let events: Api<Event> = Api::namespaced(cluster.client(), "default");
    events
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .iter()
        .filter(|e| {
            e.reason.as_deref() == Some("AddressOrphaned")
                && e.type_.as_deref() == Some("Warning")
                && e.involved_object.name.as_deref() == Some(name)
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_applied_with_kubectl_serves_a_waiting_service_at_once() {
    let Some(w) = World::start().await else {
        return;
    };
    let (_c, _live) = w.controller("l2: {}\n").await;
    let api: Api<Service> = Api::namespaced(w.cluster.client(), "default");
    create(&api, "waiting").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(ip_of(&api, "waiting").await, None, "no pool yet");

    let started = Instant::now();
    w.apply(&format!(
        "{}---\n{ALL_POOLS_L2}",
        pool_yaml("lab", &["192.168.50.0/29"])
    ))
    .await;
    // The retry backoff is a minute: only the live change serves it within 20 s.
    let got = eventually(
        "the waiting Service served",
        Duration::from_secs(20),
        || async { ip_of(&api, "waiting").await },
    )
    .await;
    println!(
        "waiting Service served {:?} after kubectl apply returned (incl. kubectl's run)",
        started.elapsed()
    );
    assert!(got.starts_with("192.168.50."), "{got}");

    let started = Instant::now();
    create(&api, "new").await;
    let got = eventually("a new Service served", T, || async {
        ip_of(&api, "new").await
    })
    .await;
    println!(
        "new Service served {:?} after its create",
        started.elapsed()
    );
    assert!(got.starts_with("192.168.50."), "{got}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_narrowed_or_deleted_pool_moves_no_address_and_warns() {
    let Some(w) = World::start().await else {
        return;
    };
    w.apply(&format!(
        "{}---\n{ALL_POOLS_L2}",
        pool_yaml("lab", &["192.168.60.0/28"])
    ))
    .await;
    let (_c, live) = w.controller("l2: {}\n").await;
    let api: Api<Service> = Api::namespaced(w.cluster.client(), "default");
    let names = ["s0", "s1", "s2", "s3", "s4"];
    for n in names {
        create(&api, n).await;
    }
    let mut before = Vec::new();
    for n in names {
        before.push(eventually(n, T, || async { ip_of(&api, n).await }).await);
    }

    // The status counts match the Services.
    let pools: Api<AddressPool> = Api::all(w.cluster.client());
    eventually("status counts", T, || async {
        let p = pools.get("lab").await.ok()?;
        let s = p.status?;
        let v4 = s.ipv4?;
        (s.in_use == 5 && v4.in_use == 5 && v4.total == "16" && v4.free == "11").then_some(())
    })
    .await;
    let table = w.ok(&["get", "addresspools"], "").await;
    assert!(
        table.contains("IN USE") && table.contains("V4 FREE"),
        "{table}"
    );

    // Narrowed to .2-.9: nobody moves (.0 and .1 stay held, outside the pool, and are
    // warned about); a new Service gets an address the narrowed pool still has free.
    let mut changes = live.pools.changes.clone();
    let seen = *changes.borrow_and_update();
    w.apply(&pool_yaml("lab", &["192.168.60.2-192.168.60.9"]))
        .await;
    eventually("the narrowing applied", T, || async {
        (*changes.borrow() > seen).then_some(())
    })
    .await;
    create(&api, "after-narrowing").await;
    let fresh = eventually("served after narrowing", T, || async {
        ip_of(&api, "after-narrowing").await
    })
    .await;
    assert!(
        !before.contains(&fresh),
        "{fresh} was handed out again though {before:?} hold it"
    );
    let last: u8 = fresh
        .rsplit('.')
        .next()
        .and_then(|x| x.parse().ok())
        .expect("v4");
    assert!(
        (2..=9).contains(&last),
        "{fresh} is outside the narrowed pool"
    );
    for (n, want) in names.iter().zip(&before) {
        assert_eq!(ip_of(&api, n).await.as_ref(), Some(want), "{n} moved");
        let last: u8 = want
            .rsplit('.')
            .next()
            .and_then(|x| x.parse().ok())
            .expect("v4");
        if last < 2 {
            eventually(&format!("{n} warned"), T, || async {
                (orphan_warnings(&w.cluster, n).await > 0).then_some(())
            })
            .await;
        }
    }

    // Deleted: every Service keeps its address and is warned about.
    w.ok(&["delete", "addresspool", "lab"], "").await;
    w.apply(&pool_yaml("other", &["192.168.61.0/29"])).await;
    eventually(
        "the other pool lists the Services outside every pool",
        T,
        || async {
            let s = pools.get("other").await.ok()?.status?;
            (s.outside_pools.len() == names.len() + 1).then_some(())
        },
    )
    .await;
    for (n, want) in names.iter().zip(&before) {
        assert_eq!(ip_of(&api, n).await.as_ref(), Some(want), "{n} moved");
    }
    eventually("every Service warned", T, || async {
        for n in names.iter().chain(["after-narrowing"].iter()) {
            if orphan_warnings(&w.cluster, n).await == 0 {
                return None;
            }
        }
        Some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_claimed_by_two_services_is_a_conflict_in_the_pool_status() {
    let Some(w) = World::start().await else {
        return;
    };
    w.apply(&format!(
        "{}---\n{ALL_POOLS_L2}---\n{}",
        pool_yaml("lab", &["192.168.70.0/29"]),
        pool_yaml("other", &["192.168.71.0/29"])
    ))
    .await;
    let (_c, _live) = w.controller("l2: {}\n").await;
    let api: Api<Service> = Api::namespaced(w.cluster.client(), "default");
    let wanting = |name: &str| {
        svc(name)
            .class(L2)
            .annotation("portway.dev/load-balancer-ips", "192.168.70.3")
            .build()
    };
    api.create(&PostParams::default(), &wanting("holder"))
        .await
        .expect("create");
    let got = eventually("the holder served", T, || async {
        ip_of(&api, "holder").await
    })
    .await;
    assert_eq!(got, "192.168.70.3");
    api.create(&PostParams::default(), &wanting("claimant"))
        .await
        .expect("create");

    let pools: Api<AddressPool> = Api::all(w.cluster.client());
    let conflicts = eventually("the conflict in the pool's status", T, || async {
        let s = pools.get("lab").await.ok()?.status?;
        (!s.conflicts.is_empty()).then_some(s.conflicts)
    })
    .await;
    assert_eq!(conflicts.len(), 1, "{conflicts:?}");
    assert!(
        conflicts[0].contains("192.168.70.3")
            && conflicts[0].contains("default/holder holds it")
            && conflicts[0].contains("default/claimant was refused"),
        "{conflicts:?}"
    );
    assert_eq!(
        ip_of(&api, "claimant").await,
        None,
        "refused, holds nothing"
    );
    let other = pools.get("other").await.expect("other").status;
    assert!(
        other.is_none_or(|s| s.conflicts.is_empty()),
        "only the address's pool lists it"
    );
    let yaml = w.ok(&["get", "addresspool", "lab", "-o", "yaml"], "").await;
    assert!(yaml.contains("claimed by two Services"), "{yaml}");

    // The holder is deleted: the address is free, the conflict gone.
    api.delete("holder", &Default::default())
        .await
        .expect("delete");
    eventually("the conflict cleared", T, || async {
        let s = pools.get("lab").await.ok()?.status?;
        s.conflicts.is_empty().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_by_kubectl_apply_naming_the_field() {
    let Some(w) = World::start().await else {
        return;
    };
    let cases = [
        (pool_yaml("bad", &["10.0.0.300/24"]), "spec.addresses"),
        (pool_yaml("bad", &["10.0.0.9-fd00::1"]), "spec.addresses"),
        (
            "apiVersion: portway.dev/v1alpha1\nkind: BGPPeer\nmetadata: {name: bad}\n\
             spec: {myASN: 64512, peerASN: 64500, peerAddress: nope}\n"
                .to_string(),
            "spec.peerAddress",
        ),
        (
            "apiVersion: portway.dev/v1alpha1\nkind: BGPPeer\nmetadata: {name: bad}\n\
             spec: {myASN: 64512, peerASN: 64500, peerAddress: 10.0.0.254, holdTime: 9s, \
             keepaliveTime: 30s}\n"
                .to_string(),
            "keepaliveTime must be shorter than holdTime",
        ),
        (
            "apiVersion: portway.dev/v1alpha1\nkind: BGPAdvertisement\nmetadata: {name: bad}\n\
             spec: {pools: [lab], communities: [\"64512:70000\"]}\n"
                .to_string(),
            "spec.communities",
        ),
    ];
    for (yaml, field) in cases {
        let (ok, text) = w.run(&["apply", "-f", "-"], &yaml).await;
        assert!(!ok, "accepted:\n{yaml}");
        assert!(
            text.contains(field),
            "the refusal does not name {field}:\n{text}"
        );
    }
    // And a good one passes, so the refusals are about the fields.
    w.apply(&pool_yaml(
        "good",
        &["10.0.0.0/24", "10.0.1.1-10.0.1.9", "fd00::1"],
    ))
    .await;
}

/// MetalLB's documentation examples (ccm/testdata/metallb), translated by `portway import
/// metallb`, are accepted by the server's schema as they are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_metallb_examples_pass_the_server_schema() {
    let Some(w) = World::start().await else {
        return;
    };
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../ccm/testdata/metallb");
    for file in [
        "index.yaml",
        "advanced-bgp.yaml",
        "advanced-l2.yaml",
        "advanced-pool.yaml",
    ] {
        let text = std::fs::read_to_string(dir.join(file)).expect("test data");
        let docs = portway::import::parse_documents(&text).expect("YAML");
        let imported = portway::import::metallb::translate(&docs);
        let yaml = portway::import::render(&imported).expect("render");
        let (ok, out) = w.run(&["apply", "-f", "-"], &yaml).await;
        assert!(
            ok,
            "{file}: the server refused the translation:\n{out}\n{yaml}"
        );
    }
}

/// MetalLB's pools, translated by `portway import metallb`, give each Service the address
/// MetalLB gives it (ccm/testdata/metallb/advanced-pool.yaml, MetalLB's own example): the
/// lowest free address of the pool that admits the Service, `.0` included unless the pool
/// avoids buggy IPs; a higher-priority pool for the namespaces and labels it selects; a pool
/// named by MetalLB's annotation even when it does not auto-assign; an address asked for by
/// MetalLB's annotation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_metallb_pools_serve_the_addresses_metallb_gives() {
    let Some(w) = World::start().await else {
        return;
    };
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../ccm/testdata/metallb");
    let text = std::fs::read_to_string(dir.join("advanced-pool.yaml")).expect("test data");
    let docs = portway::import::parse_documents(&text).expect("YAML");
    let yaml =
        portway::import::render(&portway::import::metallb::translate(&docs)).expect("render");
    w.apply(&format!("{yaml}\n---\n{ALL_POOLS_L2}")).await;
    w.apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: namespace-a}\n")
        .await;
    let (_c, _live) = w.controller("l2: {}\n").await;
    let client = w.cluster.client();
    let default: Api<Service> = Api::namespaced(client.clone(), "default");
    let ns_a: Api<Service> = Api::namespaced(client, "namespace-a");
    let pp = PostParams::default();
    let cases = [
        (&default, svc("plain").class(L2).build(), "192.168.10.0"),
        (
            &default,
            svc("chosen")
                .class(L2)
                .annotation("metallb.universe.tf/address-pool", "expensive")
                .build(),
            "42.176.25.64",
        ),
        (
            &default,
            svc("asked")
                .class(L2)
                .annotation("metallb.universe.tf/loadBalancerIPs", "192.168.10.77")
                .build(),
            "192.168.10.77",
        ),
        (
            &ns_a,
            svc("bar")
                .namespace("namespace-a")
                .class(L2)
                .label("app", "bar")
                .build(),
            "192.168.20.1",
        ),
    ];
    for (api, s, want) in cases {
        let name = s.metadata.name.clone().expect("name");
        api.create(&pp, &s).await.expect("create");
        let got = eventually(&format!("{name} served"), T, || async {
            ip_of(api, &name).await
        })
        .await;
        assert_eq!(got, want, "{name}: MetalLB gives {want}");
    }
}
