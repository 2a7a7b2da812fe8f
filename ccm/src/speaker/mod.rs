//! `portway speaker`: the node agent. It runs on every node (DaemonSet, host network) and
//! announces the addresses the controller allocated: the L2 announcer (gossip membership,
//! rendezvous owner, ARP/NDP) for the l2 class and the BGP speaker for the bgp class.
//!
//! It only reads the cluster (Services, Nodes, EndpointSlices) and writes two kinds of
//! feedback: the `portway.dev/announced-by` annotation on an l2 Service when this node takes
//! it over, and events on the Service.

mod bgp;
mod bgp_merge;
pub mod desired;
mod feedback;
pub mod gossip_key;
pub mod guard;
pub mod l2_policy;
mod l2_vips;
mod live_bgp;
mod live_pools;
pub mod metrics;
mod pace;
mod peer_status;
mod probe;
pub mod ready;
mod reports;
pub mod table;
mod trim;
mod watched;

use crate::config::Config;
use crate::k8s::wait_until_ready;
use anyhow::Context as _;
use k8s_openapi::api::core::v1::{Node, Service};
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use portway_bgp::State as BgpState;
use portway_l2::{GossipKeys, L2Speaker, SpeakerConfig};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use table::{BgpTable, Dirty};
use tokio::sync::Notify;
use tracing::{debug, info, warn};
use watched::Watched;

/// The annotation naming the node that answers for an l2 address.
pub use crate::names::ANNOUNCED_BY;

/// Flags of `portway speaker`.
#[derive(clap::Args, Clone, Debug)]
pub struct SpeakerArgs {
    /// This node's name (the DaemonSet passes `spec.nodeName`).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: String,
    /// Kubeconfig; in-cluster configuration when absent.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Portway's configuration file (the same as the controller's).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Where to serve `/metrics` and `/healthz` (plain HTTP, no authentication; port 0
    /// disables). Loopback by default: the speaker runs in the host's network, so any other
    /// address is reachable from the node's networks; `$(POD_IP):7473` exposes it to a
    /// scraper (SECURITY.md). 7473, not MetalLB's 7472, so both can run side by side during a
    /// migration.
    #[arg(long, default_value = "127.0.0.1:7473")]
    pub metrics_bind_address: std::net::SocketAddr,
    /// `NAMESPACE/NAME` of the Secret whose `secretkey` signs the L2 gossip (MetalLB's
    /// memberlist secret); unset: unsigned gossip, limited to Nodes' addresses.
    #[arg(long, env = "PORTWAY_GOSSIP_SECRET")]
    pub gossip_secret: Option<String>,
}

/// Settings of the speaker loop beyond the configuration file.
#[derive(Clone, Debug, Default)]
pub struct SpeakerOptions {
    /// `--gossip-secret`, parsed.
    pub gossip_secret: Option<(String, String)>,
    /// How often BGP password Secrets are read again; `None`: every 60 s. Tests shorten it.
    pub password_refresh: Option<Duration>,
}

/// Runs the speaker until SIGTERM/Ctrl-C, then withdraws (BGP Cease) and stops announcing.
pub async fn run(args: SpeakerArgs) -> anyhow::Result<()> {
    let config = Config::load(args.config.as_deref())
        .map_err(|e| anyhow::anyhow!("invalid configuration:\n{e}"))?;
    let opts = SpeakerOptions {
        gossip_secret: args
            .gossip_secret
            .as_deref()
            .map(gossip_key::parse_ref)
            .transpose()
            .map_err(anyhow::Error::msg)?,
        password_refresh: None,
    };
    let client = crate::process::client(args.kubeconfig.as_deref()).await?;
    let m = Arc::new(metrics::SpeakerMetrics::new());
    if args.metrics_bind_address.port() != 0 {
        let bound = metrics::serve(args.metrics_bind_address, m.clone())
            .await
            .with_context(|| format!("serving metrics on {}", args.metrics_bind_address))?;
        info!(%bound, "serving /metrics and /healthz");
    }
    run_with_options(
        client,
        config,
        args.node_name,
        m,
        opts,
        crate::process::shutdown_signal(),
    )
    .await
}

/// The speaker loop for `node`, until `shutdown` completes (in-process tests use this).
pub async fn run_with(
    client: Client,
    config: Config,
    node: String,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    run_with_metrics(
        client,
        config,
        node,
        Arc::new(metrics::SpeakerMetrics::new()),
        shutdown,
    )
    .await
}

/// [`run_with`], recording into `m`.
///
/// One loop follows the watches' changes (at once, or a burst coalesced: `pace.rs`) and
/// hands them to the announcers: the BGP sessions get the prefixes that changed, the L2
/// speaker its VIP list when an l2 input changed. Only what a change touches is
/// recomputed (its Service's routes and VIPs, its slice's Service), so one change costs
/// the same at 100 Services as at 10,000; everything is recomputed from the stores when a watch relists, when this
/// node's Node changes, and every [`RESYNC`], so the incremental state cannot drift.
pub async fn run_with_metrics(
    client: Client,
    config: Config,
    node: String,
    m: Arc<metrics::SpeakerMetrics>,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    run_with_options(client, config, node, m, SpeakerOptions::default(), shutdown).await
}

/// [`run_with_metrics`] with [`SpeakerOptions`].
pub async fn run_with_options(
    client: Client,
    config: Config,
    node: String,
    m: Arc<metrics::SpeakerMetrics>,
    opts: SpeakerOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let sections = &config;
    let changed = Arc::new(Notify::new());
    // A change bringing a new l2 address: the pass runs at once (pace.rs).
    let urgent = Arc::new(Notify::new());
    let dirty = Arc::new(Mutex::new(Dirty::default()));
    let holders = l2_vips::Holders::default();
    let d = dirty.clone();
    let (known, wake, default_class) = (
        holders.clone(),
        urgent.clone(),
        config.default_class.clone(),
    );
    let l2_on = sections.l2.is_some();
    let services = Watched::start(
        Api::all(client.clone()),
        &changed,
        crate::trim::service,
        move |ev| {
            let mut d = lock(&d);
            match ev {
                watcher::Event::Apply(s) => {
                    d.services.insert(ready::key_of(s));
                    if l2_on
                        && desired::brings_new_l2_address(s, &default_class, |ip| {
                            known.contains(ip)
                        })
                    {
                        wake.notify_one();
                    }
                }
                watcher::Event::Delete(s) => {
                    d.services.insert(ready::key_of(s));
                }
                watcher::Event::InitDone => d.all = true,
                _ => {}
            }
        },
    );
    let d = dirty.clone();
    let nodes = Watched::start(
        Api::all(client.clone()),
        &changed,
        crate::trim::node,
        move |_| {
            lock(&d).nodes = true;
        },
    );
    let d = dirty.clone();
    let slices = Watched::start(Api::all(client.clone()), &changed, trim::slice, move |ev| {
        let mut d = lock(&d);
        match ev {
            watcher::Event::Apply(s) => d.slices.push((s.clone(), true)),
            watcher::Event::Delete(s) => d.slices.push((s.clone(), false)),
            watcher::Event::InitDone => d.all = true,
            _ => {}
        }
    });
    wait_until_ready(&services.store).await;
    wait_until_ready(&nodes.store).await;
    wait_until_ready(&slices.store).await;
    let me_ref = ObjectRef::<Node>::new(&node);
    if nodes.store.get(&me_ref).is_none() {
        anyhow::bail!("node {node} not found; --node-name must name this node");
    }
    info!(
        node,
        l2 = sections.l2.is_some(),
        bgp = sections.bgp.is_some(),
        "speaker running"
    );

    // Only the L2 split-brain rule asks whether the API answers; BGP speakers skip the probe.
    let api = sections.l2.is_some().then(|| {
        probe::ApiProbe::start(
            client.clone(),
            probe::EVERY,
            probe::FRESH_FOR,
            changed.clone(),
        )
    });
    let feedback = feedback::Feedback::new(client.clone(), services.store.clone(), node.clone());
    let (notices, notices_task) = feedback.advertised_queue();
    let mut l2: Option<(L2Speaker, [tokio::task::JoinHandle<()>; 2])> = None;
    let mut l2_status: Option<tokio::sync::watch::Receiver<portway_l2::SpeakerStatus>> = None;
    let refresh = opts.password_refresh.unwrap_or(bgp::PASSWORD_REFRESH);
    let mut bgp = sections
        .bgp
        .as_ref()
        .map(|_| bgp::BgpRunner::new(client.clone(), node.clone(), refresh));
    // AddressPools and L2AnnouncementPolicies, live: the l2 class's pools as the controller
    // sees them.
    let live_pools = sections
        .l2
        .is_some()
        .then(|| live_pools::LivePools::start(&client, changed.clone()));
    // BGPPeers, BGPAdvertisements and AddressPools, live, merged with the file's `bgp`
    // (one AddressPool watch for both sides).
    let live_bgp = sections.bgp.is_some().then(|| {
        let shared = live_pools.as_ref().map(live_pools::LivePools::pool_store);
        live_bgp::LiveBgp::start(&client, changed.clone(), shared)
    });
    let mut peer_status = peer_status::PeerStatusWriter::new(client.clone(), node.clone());
    let mut bgp_warned = BTreeMap::new();
    let mut advertised: BTreeSet<IpAddr> = BTreeSet::new();
    let mut reported = Reported::default();
    let mut l2_reports = reports::L2Reports::default();
    let mut gossip_keys = match (&sections.l2, opts.gossip_secret.clone()) {
        (Some(_), Some((ns, name))) => Some(gossip_key::follow(client.clone(), ns, name).await),
        (Some(_), None) => {
            warn!(
                "no --gossip-secret: the L2 gossip is not signed (senders are still limited to Nodes' addresses)"
            );
            None
        }
        _ => None,
    };
    let mut keys_applied = GossipKeys::default();
    let kube_proxy = sections
        .l2
        .is_some()
        .then(|| guard::follow_kube_proxy(client.clone()));
    let mut allowed_applied: Option<BTreeMap<String, BTreeSet<IpAddr>>> = None;
    let mut state = State {
        vips: l2_vips::L2Vips::sharing(holders),
        ..State::default()
    };
    // What the next pass must do besides the watches' changes.
    let (mut full, mut scan_advertised) = (true, true);

    tokio::pin!(shutdown);
    loop {
        let pass_began = tokio::time::Instant::now();
        let d = std::mem::take(&mut *lock(&dirty));
        let me = nodes.store.get(&me_ref);
        let me_version = me.as_ref().and_then(|n| n.resource_version());
        full |= d.all || me_version != state.me_version || state.last_full.elapsed() >= RESYNC;
        let bgp_now = live_bgp::current(
            &sections.pools,
            sections.bgp.as_ref(),
            live_bgp.as_ref(),
            me.as_deref(),
            &mut bgp_warned,
        );
        // A changed effective configuration (peers, advertisements, pools) can change
        // every route: a full pass, as a changed guard is for L2.
        let bgp_key = bgp_now.as_ref().map(|(p, e)| (p.clone(), e.config.clone()));
        full |= bgp_key != state.bgp_applied;
        // The Services whose routes and VIPs are recomputed: every one, or those changed.
        let keys: Vec<ready::Key> = if full {
            state = State {
                ready: desired::ReadyNodes::index(&slices.store.state()),
                me_version,
                generation: state.generation,
                bgp_applied: bgp_key.clone(),
                // The same index (the annotation keeper shares it); the l2 part of a full
                // pass clears and refills it.
                vips: std::mem::take(&mut state.vips),
                ..State::default()
            };
            services
                .store
                .state()
                .iter()
                .map(|s| ready::key_of(s))
                .collect()
        } else {
            let mut keys = d.services;
            for (slice, applied) in &d.slices {
                keys.extend(match applied {
                    true => state.ready.apply(slice),
                    false => state.ready.remove(slice),
                });
            }
            keys.into_iter().collect()
        };
        let lookup = |k: &ready::Key| services.store.get(&ready::store_ref(k));
        // Watches report a broken stream; only the probe sees a silent cut.
        let api_ok = api.as_ref().is_none_or(probe::ApiProbe::reachable)
            && services.healthy()
            && nodes.healthy()
            && slices.healthy();

        if let (Some(l2cfg), None, Some(me)) = (&sections.l2, &l2, &me) {
            // The gossip address is the node's first InternalIP; a node that has none
            // yet (kubelet still starting) is retried on the next pass.
            match desired::node_addrs(me).first() {
                Some(addr) => {
                    let mut speaker_config = SpeakerConfig::new(node.clone(), *addr, l2cfg.clone());
                    if let Some(k) = &gossip_keys {
                        keys_applied = k.borrow().clone();
                        speaker_config.gossip_keys = keys_applied.clone();
                    }
                    m.set_gossip_signed(!keys_applied.is_empty());
                    let speaker = L2Speaker::start(speaker_config)
                        .await
                        .context("starting the L2 speaker")?;
                    info!(node, %addr, port = l2cfg.gossip_port, "L2 speaker started");
                    let tasks = [
                        feedback.follow_l2(&speaker, m.clone()),
                        feedback.keep_announced_by(speaker.status(), state.vips.holders()),
                    ];
                    l2_status = Some(speaker.status());
                    l2 = Some((speaker, tasks));
                    full = true; // its first pass hands it everything
                }
                None => reported.once("no-address", || {
                    warn!(node, "the node has no InternalIP yet; the L2 speaker waits")
                }),
            }
        }
        if let (Some((speaker, _)), Some(l2cfg)) = (&l2, &sections.l2) {
            let all_nodes = nodes.store.state();
            // Only addresses of the l2 pools that are no Node's own reach the election.
            let (pools, l2_now) = match &live_pools {
                Some(live) => live.effective(&sections.pools, l2cfg),
                None => (sections.pools.clone(), l2cfg.clone()),
            };
            // The policies' nodes and interfaces per pool ride in the guard (l2_policy).
            let policies = live_pools.as_ref().map(|l| l.policies());
            let scopes = l2_policy::Scopes::new(&pools, &policies.unwrap_or_default());
            let guard = match &state.guard {
                Some(last) if !full && !d.nodes => {
                    guard::L2Guard::with_nodes_of(&pools, &l2_now, last)
                }
                _ => guard::L2Guard::new(&pools, &l2_now, &all_nodes),
            }
            .with_scopes(scopes);
            // A changed pool (a resource applied) or Node address re-checks every VIP.
            let l2_full = full || state.guard.as_ref() != Some(&guard);
            if l2_full {
                l2_reports.overlaps(guard.pool_overlaps(), &m);
                state.vips.clear();
                state.refused.clear();
            }
            let l2_keys: Vec<ready::Key> = match l2_full && !full {
                true => services
                    .store
                    .state()
                    .iter()
                    .map(|s| ready::key_of(s))
                    .collect(),
                false => keys.clone(),
            };
            let (mut vips_changed, mut refused_changed) = (l2_full, l2_full);
            for k in &l2_keys {
                let (vips, refused) = lookup(k)
                    .map(|s| {
                        guard.split(desired::vip_inputs(
                            &[s],
                            &state.ready,
                            &config.default_class,
                        ))
                    })
                    .unwrap_or_default();
                vips_changed |= state.vips.set(k, vips);
                if state.refused.get(k).cloned().unwrap_or_default() != refused {
                    refused_changed = true;
                    match refused.is_empty() {
                        true => state.refused.remove(k),
                        false => state.refused.insert(k.clone(), refused),
                    };
                }
            }
            if refused_changed {
                let all = state.refused.values().flatten();
                l2_reports.refused(
                    all.map(|(ip, why)| (*ip, why.clone())).collect(),
                    &feedback,
                    &m,
                );
            }
            // Every Node may gossip (an excluded one still hands its addresses over);
            // looked at again when a Node changed.
            if full || d.nodes || allowed_applied.is_none() {
                let allowed: BTreeMap<String, BTreeSet<IpAddr>> = all_nodes
                    .iter()
                    .map(|n| (n.name_any(), desired::node_addrs(n).into_iter().collect()))
                    .collect();
                if allowed_applied.as_ref() != Some(&allowed) {
                    speaker.set_allowed(Some(allowed.clone()));
                    allowed_applied = Some(allowed);
                }
            }
            if let Some(k) = &mut gossip_keys {
                let keys = k.borrow_and_update().clone();
                if keys != keys_applied {
                    info!(keys = keys.len(), "new L2 gossip keys");
                    m.set_gossip_signed(!keys.is_empty());
                    speaker.set_gossip_keys(keys.clone());
                    keys_applied = keys;
                }
            }
            // Once per pass: it looks at every Node.
            let reporter = guard::reports_traps(&node, &all_nodes);
            if reporter && (vips_changed || d.nodes) {
                let unselected = guard.scopes().unselected(&all_nodes);
                let now = l2_policy::unselected_vips(state.vips.each(), &unselected);
                l2_reports.unselected(now, &feedback, &m);
            }
            if reporter {
                let ipvs = kube_proxy.as_ref().is_some_and(|r| *r.borrow());
                let of_l2 = || {
                    services
                        .store
                        .state()
                        .into_iter()
                        .filter(|s| {
                            desired::status_ips(s)
                                .iter()
                                .any(|ip| guard.check(*ip).is_ok())
                        })
                        .collect()
                };
                l2_reports.traps(guard::all_excluded(&all_nodes), ipvs, of_l2, &feedback, &m);
            }
            if full || d.nodes {
                speaker.set_nodes(desired::node_inputs(&all_nodes));
            }
            if l2_full {
                // The whole list (the speaker skips an equal one) ...
                speaker.set_vips(state.vips.all());
            } else if vips_changed {
                // ... else only the changed Services' addresses.
                let (set, gone) = state.vips.take_delta();
                speaker.update_vips(set, gone);
            }
            state.guard = Some(guard);
            speaker.set_api_reachable(api_ok);
        }
        if let Some(rx) = l2_status
            .as_mut()
            .filter(|rx| full || rx.has_changed().unwrap_or(false))
        {
            let st = rx.borrow_and_update().clone();
            m.set_l2(&st);
            if reported.l2_changed(&st) {
                info!(live = ?st.live, known = st.known.len(), quorum = ?st.quorum,
                    announcing = st.announcing.len(), api_ok, "l2 state");
            }
        }
        if let (Some(runner), Some(me), Some((pools, eff))) = (&mut bgp, &me, &bgp_now) {
            let cfg = &eff.config;
            let rules = desired::RouteRules::new(me, &config.default_class, pools, cfg);
            let mut changes = Vec::new();
            for k in &keys {
                let routes = lookup(k)
                    .map(|s| rules.of(&s, &state.ready))
                    .unwrap_or_default();
                changes.extend(state.table.set(k, routes));
            }
            let up = runner.reconcile(me, cfg).await.is_some();
            let (states, skipped) = runner
                .running()
                .map(|h| (h.peer_states(), h.skipped()))
                .unwrap_or_default();
            peer_status
                .sync(peer_status::entries(&node, eff, &states, skipped))
                .await;
            let generation = runner.generation();
            if let Some(handle) = runner.running().filter(|_| up) {
                // A new speaker starts empty: it gets the whole table.
                if full || generation != state.generation {
                    handle.set_routes(state.table.routes().clone());
                    state.generation = generation;
                } else if !changes.is_empty() {
                    handle.update(changes.iter().cloned());
                }
                let peers = handle.peer_states();
                let table = &state.table;
                let covered = |ip: &IpAddr| table.covers(ip);
                // The Service event the first time one of its addresses is out to a router.
                if peers.iter().any(|p| p.state == BgpState::Established) {
                    let svcs: Vec<Arc<Service>> = match full || scan_advertised {
                        true => services.store.state(),
                        false => keys.iter().filter_map(lookup).collect(),
                    };
                    // Each Service holding an address first advertised in this pass (two
                    // may share one) is told, and the notice carries it: no look-up.
                    let mut fresh = BTreeSet::new();
                    for svc in &svcs {
                        for ip in desired::status_ips(svc) {
                            let first = covered(&ip) && advertised.insert(ip);
                            if (first || fresh.contains(&ip))
                                && notices.try_send((ip, svc.clone())).is_err()
                            {
                                debug!(%ip, "event queue full; AdvertisingIP event skipped");
                            }
                            if first {
                                fresh.insert(ip);
                            }
                        }
                    }
                    scan_advertised = false;
                } else {
                    scan_advertised = true;
                }
                if full {
                    advertised.retain(|ip| covered(ip));
                } else {
                    for (prefix, _) in changes.iter().filter(|(_, a)| a.is_empty()) {
                        let gone: Vec<IpAddr> = advertised
                            .range(prefix.network()..=prefix.broadcast())
                            .copied()
                            .collect();
                        gone.iter().for_each(|ip| {
                            advertised.remove(ip);
                        });
                    }
                }
                m.set_bgp(&peers);
            } else {
                scan_advertised = true;
                m.set_bgp(&[]);
            }
        }
        if let (Some(runner), None) = (&bgp, &me) {
            // Our Node object is gone (the node is being removed): advertise nothing.
            if let Some(handle) = runner.running() {
                handle.set_routes(portway_bgp::route::RouteSet::default());
            }
            m.set_bgp(&[]);
        }
        if full {
            state.last_full = std::time::Instant::now();
        }
        full = false;
        tokio::select! {
            _ = &mut shutdown => break,
            // At once after an idle spell; a burst shares one pass per window.
            _ = changed.notified() => pace::before_pass(pass_began, &urgent).await,
            _ = async {
                match &mut bgp {
                    Some(runner) => runner.status_changed().await,
                    None => std::future::pending().await,
                }
            } => scan_advertised = true,
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
    info!(
        node,
        "shutting down: withdrawing routes and stopping announcements"
    );
    if let Some(runner) = bgp {
        runner.shutdown().await;
    }
    if let Some((speaker, tasks)) = l2 {
        speaker.shutdown().await;
        tasks.iter().for_each(|t| t.abort());
    }
    notices_task.abort();
    services.task.abort();
    nodes.task.abort();
    slices.task.abort();
    Ok(())
}

/// How often the loop recomputes everything from the stores although nothing relisted.
const RESYNC: Duration = Duration::from_secs(60);

/// What the loop keeps between passes.
struct State {
    ready: desired::ReadyNodes,
    table: BgpTable,
    vips: l2_vips::L2Vips,
    /// Each Service's addresses the L2 guard refused, and why.
    refused: HashMap<ready::Key, BTreeMap<IpAddr, guard::Refusal>>,
    /// The guard of the last L2 pass: a different one (pools, Node addresses) re-checks all.
    guard: Option<guard::L2Guard>,
    /// This node's Node as last seen: a change (labels, addresses, conditions) can change
    /// every route, so it means a full pass.
    me_version: Option<String>,
    /// The BGP speaker the table was last handed to in full.
    generation: u64,
    /// The effective BGP pools and configuration of the last pass (file and resources).
    bgp_applied: Option<(
        Vec<portway_provider::ipam::PoolConfig>,
        portway_bgp::BgpConfig,
    )>,
    last_full: std::time::Instant,
}

impl Default for State {
    fn default() -> Self {
        State {
            ready: desired::ReadyNodes::default(),
            table: BgpTable::default(),
            vips: l2_vips::L2Vips::default(),
            refused: HashMap::new(),
            guard: None,
            me_version: None,
            generation: 0,
            bgp_applied: None,
            last_full: std::time::Instant::now(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding it cannot leave `Dirty` half-written in a way that matters:
    // at worst a change is seen twice.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What was last logged, so steady state stays quiet.
#[derive(Default)]
struct Reported {
    once: BTreeSet<&'static str>,
    /// The live speakers and the quorum verdict last logged (each address's takeover and
    /// release has its own line, so a change of addresses alone is not logged again).
    l2: Option<(BTreeSet<String>, Option<portway_l2::Quorum>)>,
}

impl Reported {
    fn once(&mut self, what: &'static str, log: impl FnOnce()) {
        if self.once.insert(what) {
            log();
        }
    }

    fn l2_changed(&mut self, st: &portway_l2::SpeakerStatus) -> bool {
        let now = Some((st.live.clone(), st.quorum));
        if self.l2 == now {
            return false;
        }
        self.l2 = now;
        true
    }
}
