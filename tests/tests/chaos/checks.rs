//! The invariants: checked on the converged cluster after the churn (every LoadBalancer
//! Service of a Portway class served from its class's pools with the finalizer, no address
//! on two Services, nothing left for Services that no longer want it, nothing stuck
//! deleting), and watched during it (no VIP moved without a spec change, no write by a
//! replica that did not hold the Lease).

use super::churn::Churn;
use super::world::{BGP_PREFIX, F5_PREFIX, L2_PREFIX, L2_REQUESTED_PREFIX, NODES, USERS, World};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, ListParams};
use kube::runtime::{WatchStreamExt, watcher};
use portway_tests::{BGP, F5, HOSTPORT, L2};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const FINALIZER: &str = "service.kubernetes.io/load-balancer-cleanup";
const REQUEST: &str = "portway.dev/load-balancer-ips";

fn ips(s: &Service) -> Vec<String> {
    s.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|l| l.ingress.as_ref())
        .map(|i| i.iter().filter_map(|x| x.ip.clone()).collect())
        .unwrap_or_default()
}

fn class_of(s: &Service) -> Option<&str> {
    let spec = s.spec.as_ref()?;
    (spec.type_.as_deref() == Some("LoadBalancer"))
        .then(|| spec.load_balancer_class.as_deref().unwrap_or(HOSTPORT))
}

/// What may change a VIP: the spec (all of it, and its generation where the server keeps
/// one, so a spec changed and changed back between two observed events, say across a
/// watch relist, still counts as changed) and the requested address.
fn spec_mark(s: &Service) -> Mark {
    (
        format!(
            "{:?}{}",
            s.metadata.generation,
            serde_json::to_string(&s.spec).unwrap_or_default()
        ),
        s.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REQUEST).cloned()),
    )
}

/// The spec under which a Service's addresses appeared (see [`spec_mark`]).
type Mark = (String, Option<String>);
/// Lease polls: sent and answered when, and which controller held it at some moment
/// between the two (on a loaded machine a GET can take longer than the tolerance).
type Polls = Arc<Mutex<Vec<(Instant, Instant, Option<usize>)>>>;

/// Watches the Services during the churn for VIPs that move without a spec change.
pub struct Observer {
    task: tokio::task::JoinHandle<()>,
    moves: Arc<Mutex<Vec<String>>>,
}

impl Observer {
    pub fn start(w: &World) -> Observer {
        let api: Api<Service> = Api::namespaced(w.cluster.client(), "default");
        let moves: Arc<Mutex<Vec<String>>> = Arc::default();
        let out = moves.clone();
        let task = tokio::spawn(async move {
            // uid -> (last VIP set of its class, the spec mark it was published under,
            // whether the spec changed since)
            let mut seen: BTreeMap<String, (Vec<String>, Mark, bool)> = BTreeMap::new();
            let mut stream = watcher(api, watcher::Config::default())
                .default_backoff()
                .applied_objects()
                .boxed();
            while let Some(ev) = stream.next().await {
                let Ok(s) = ev else { continue };
                let uid = s.metadata.uid.clone().unwrap_or_default();
                let now = ips(&s);
                let class = class_of(&s);
                let vip = class.is_some_and(|c| c != HOSTPORT);
                if !vip {
                    seen.remove(&uid);
                    continue;
                }
                let mark = spec_mark(&s);
                if let Some(entry) = seen.get_mut(&uid)
                    && entry.1 != mark
                {
                    entry.2 = true;
                }
                // Addresses still left from a previous class are not this class's VIPs.
                if now.is_empty()
                    || !now
                        .iter()
                        .all(|ip| class.is_some_and(|c| in_class_pool(c, ip)))
                {
                    continue;
                }
                if let Some((before, _, changed)) = seen.get(&uid)
                    && *before != now
                    && !changed
                {
                    let mut m = out.lock().unwrap_or_else(|p| p.into_inner());
                    m.push(format!(
                        "{}: {before:?} -> {now:?} under one spec",
                        s.metadata.name.clone().unwrap_or_default(),
                    ));
                }
                // The mark is the spec under which these addresses first appeared.
                if seen.get(&uid).is_none_or(|(before, _, _)| *before != now) {
                    seen.insert(uid, (now, mark, false));
                }
            }
        });
        Observer { task, moves }
    }

    pub async fn stop(self) -> Vec<String> {
        self.task.abort();
        let _ = self.task.await;
        self.moves.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Who held the Lease when, polled every 50 ms.
pub struct LeaseLog {
    task: tokio::task::JoinHandle<()>,
    log: Polls,
}

impl LeaseLog {
    pub fn start(w: &World) -> LeaseLog {
        let api: Api<Lease> = Api::namespaced(w.cluster.client(), "default");
        let log: Polls = Arc::default();
        let out = log.clone();
        let task = tokio::spawn(async move {
            loop {
                let sent = Instant::now();
                let holder = api
                    .get_opt("portway-controller")
                    .await
                    .ok()
                    .flatten()
                    .and_then(|l| l.spec?.holder_identity);
                if let Some(h) = holder {
                    let who = USERS.iter().position(|u| h.starts_with(&format!("{u}_")));
                    out.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((sent, Instant::now(), who));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        LeaseLog { task, log }
    }

    /// Service writes by a controller received at a moment (± 300 ms around a poll's
    /// flight) when the polls never saw it hold the Lease.
    pub async fn stop(self, w: &World) -> Vec<String> {
        self.task.abort();
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let tolerance = Duration::from_millis(300);
        let mut out = Vec::new();
        for write in w.cluster.writes().await.0 {
            let Some(who) = USERS.iter().position(|u| *u == write.user) else {
                continue;
            };
            if write.resource != "services" {
                continue;
            }
            // A poll covers [sent - tolerance, answered + tolerance].
            let near = |sent: &Instant, answered: &Instant| {
                sent.saturating_duration_since(write.at) <= tolerance
                    && write.at.saturating_duration_since(*answered) <= tolerance
            };
            let held = log
                .iter()
                .any(|(sent, answered, h)| *h == Some(who) && near(sent, answered));
            let polled = log.iter().any(|(sent, answered, _)| near(sent, answered));
            if polled && !held {
                out.push(format!("{write:?}"));
            }
        }
        out
    }
}

/// The outcome of the convergence check.
#[derive(Default)]
pub struct Report {
    pub converged_after: Option<Duration>,
    pub violations: Vec<String>,
    pub counts: BTreeMap<&'static str, usize>,
}

impl Report {
    pub fn summary(&self) -> String {
        self.counts
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn in_class_pool(class: &str, ip: &str) -> bool {
    match class {
        HOSTPORT => NODES.contains(&ip),
        L2 => ip.starts_with(L2_PREFIX) || ip.starts_with(L2_REQUESTED_PREFIX),
        BGP => ip.starts_with(BGP_PREFIX),
        F5 => ip.starts_with(F5_PREFIX),
        _ => false,
    }
}

/// Waits (at most `timeout`) until every invariant holds; the report has the time it
/// took, or the violations of the last look.
pub async fn converge(w: &World, _churn: &Churn, timeout: Duration) -> Report {
    let start = Instant::now();
    loop {
        let (violations, counts) = look(w).await;
        if violations.is_empty() {
            return Report {
                converged_after: Some(start.elapsed()),
                violations,
                counts,
            };
        }
        if start.elapsed() > timeout {
            return Report {
                converged_after: None,
                violations,
                counts,
            };
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn look(w: &World) -> (Vec<String>, BTreeMap<&'static str, usize>) {
    let mut bad = Vec::new();
    let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
    let services = Api::<Service>::namespaced(w.cluster.client(), "default")
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    let mut holders: BTreeMap<String, String> = BTreeMap::new();
    let mut hostport_uids: BTreeSet<(String, String)> = BTreeSet::new();
    let mut f5_uids: BTreeSet<String> = BTreeSet::new();
    for s in services.iter().filter(|s| {
        s.metadata
            .name
            .as_deref()
            .is_some_and(|n| n.starts_with("chaos-"))
    }) {
        let name = s.metadata.name.clone().unwrap_or_default();
        let uid = s.metadata.uid.clone().unwrap_or_default();
        *counts.entry("services").or_default() += 1;
        let finalized = s
            .metadata
            .finalizers
            .as_ref()
            .is_some_and(|f| f.iter().any(|x| x == FINALIZER));
        if s.metadata.deletion_timestamp.is_some() {
            bad.push(format!("{name}: still deleting"));
            continue;
        }
        let addrs = ips(s);
        match class_of(s) {
            Some(class) => {
                if !finalized {
                    bad.push(format!("{name} ({class}): no finalizer"));
                }
                if addrs.is_empty() {
                    bad.push(format!("{name} ({class}): no address"));
                }
                for ip in &addrs {
                    *counts.entry("addresses").or_default() += 1;
                    if !in_class_pool(class, ip) {
                        bad.push(format!("{name} ({class}): {ip} is not from its class"));
                    }
                    if class != HOSTPORT
                        && let Some(other) = holders.insert(ip.clone(), name.clone())
                    {
                        bad.push(format!("{ip} is on {other} and {name}"));
                    }
                }
                if class == HOSTPORT {
                    hostport_uids.insert((name.clone(), uid.clone()));
                }
                if class == F5 {
                    f5_uids.insert(uid.clone());
                }
            }
            None => {
                *counts.entry("cluster_ip_services").or_default() += 1;
                if finalized || !addrs.is_empty() {
                    bad.push(format!(
                        "{name}: not a LoadBalancer, yet finalizer {finalized} / status {addrs:?}"
                    ));
                }
            }
        }
    }
    let daemonsets = Api::<DaemonSet>::namespaced(w.cluster.client(), "kube-system")
        .list(&ListParams::default().labels("svccontroller.k3s.cattle.io/svcname"))
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    for ds in daemonsets {
        *counts.entry("svclb_daemonsets").or_default() += 1;
        let ds_name = ds.metadata.name.clone().unwrap_or_default();
        let wanted = hostport_uids
            .iter()
            .any(|(n, uid)| portway_hostport::daemonset_name(n, uid) == ds_name);
        if !wanted {
            bad.push(format!(
                "svclb DaemonSet {ds_name} belongs to no hostport Service"
            ));
        }
    }
    for kind in ["virtual", "pool"] {
        for o in w.bigip.objects(kind, "portway") {
            *counts.entry("bigip_objects").or_default() += 1;
            let tag = o["description"].as_str().unwrap_or_default();
            let uid = tag
                .split_whitespace()
                .find_map(|t| t.strip_prefix("portway-uid="))
                .unwrap_or_default();
            if !f5_uids.contains(uid) {
                bad.push(format!(
                    "BIG-IP {kind} {} belongs to no f5 Service",
                    o["name"].as_str().unwrap_or_default()
                ));
            }
        }
    }
    (bad, counts)
}
