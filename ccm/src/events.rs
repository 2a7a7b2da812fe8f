//! Events on Services and Nodes, recorded as the upstream controllers record them:
//! core/v1 Events with `source.component` (`service-controller`, `cloud-node-controller`),
//! so that `kubectl get events --field-selector source=service-controller`, `kubectl
//! describe` and alerts written for the upstream CCM find Portway's too.
//!
//! A [`Reason`] is a type, not a string: it carries its Normal/Warning kind and its action,
//! so a misspelt reason cannot silently become another one. Identical events (same object,
//! reason and message) within ten minutes are one event whose `count` and
//! `lastTimestamp` move, as client-go's event correlator does; a new message is a new
//! event, so a second, different error is never hidden behind the first one's text.

use crate::k8s::{ObjectReference, Patch, PatchParams, PostParams};
use hashlink::LruCache;
use k8s_openapi::api::core::v1::{Event as CoreEvent, EventSource};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::{Api, Client};
use std::hash::Hash;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

/// Identical events within this window are one event with a count.
const SERIES_WINDOW: Duration = Duration::from_secs(600);
/// Series remembered at most, the least recently seen forgotten first: client-go's event
/// correlator keeps an LRU of 4096 (`maxLruCacheEntries`). A forgotten series that
/// happens again is a new event instead of a count. Pruning only what was older than the
/// window did not bound it: a burst of ten thousand new Services (two events each) kept
/// twenty thousand series, about 8 MiB of the controller's peak on the real server.
const MAX_SERIES: usize = 4096;

/// Normal or Warning, as Kubernetes spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Progress a user may like to see.
    Normal,
    /// Something a user must look at.
    Warning,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Normal => "Normal",
            Kind::Warning => "Warning",
        }
    }
}

macro_rules! reasons {
    ($($(#[$doc:meta])* $name:ident: $kind:ident, $action:literal;)*) => {
        /// Every event reason Portway records, with its kind and action.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Reason {
            $($(#[$doc])* $name,)*
        }

        impl Reason {
            /// The reason as users search for it (the variant's name).
            pub fn as_str(self) -> &'static str {
                match self { $(Reason::$name => stringify!($name),)* }
            }

            /// Normal or Warning.
            pub fn kind(self) -> Kind {
                match self { $(Reason::$name => Kind::$kind,)* }
            }

            /// What the controller was doing (the event's `action`).
            pub fn action(self) -> &'static str {
                match self { $(Reason::$name => $action,)* }
            }
        }
    };
}

reasons! {
    /// The provider is about to be called for a new or changed Service (upstream).
    EnsuringLoadBalancer: Normal, "EnsureLoadBalancer";
    /// The provider answered with the status to publish (upstream).
    EnsuredLoadBalancer: Normal, "EnsureLoadBalancer";
    /// The published addresses changed, old -> new (k3s), or the node set changed
    /// (upstream's "Updated load balancer with new hosts").
    UpdatedLoadBalancer: Normal, "UpdateLoadBalancer";
    /// Updating the node set failed (upstream).
    UpdateLoadBalancerFailed: Warning, "UpdateLoadBalancer";
    /// Anything else failed, deletion included (upstream).
    SyncLoadBalancerFailed: Warning, "SyncLoadBalancer";
    /// Deletion started, for a load balancer that exists (upstream).
    DeletingLoadBalancer: Normal, "EnsureLoadBalancerDeleted";
    /// Deletion finished (upstream).
    DeletedLoadBalancer: Normal, "EnsureLoadBalancerDeleted";
    /// Nothing can carry the Service's traffic: no eligible node, or no node serving it
    /// (upstream, k3s).
    UnAvailableLoadBalancer: Warning, "SyncLoadBalancer";
    /// The svclb DaemonSet was created or changed (k3s).
    AppliedDaemonSet: Normal, "EnsureLoadBalancer";
    /// A port the Service asks for is held by another Service on some nodes.
    LoadBalancerConflict: Warning, "SyncLoadBalancer";
    /// No address was left for the Service.
    AllocationFailed: Warning, "SyncLoadBalancer";
    /// A provider's note that did not stop the load balancer.
    SyncLoadBalancerWarning: Warning, "SyncLoadBalancer";
    /// Two Services claimed one address at start-up.
    AddressConflict: Warning, "AdoptLoadBalancer";
    /// A Service keeps an address that no configured pool contains.
    AddressOrphaned: Warning, "AdoptLoadBalancer";
    /// Another problem found while rebuilding state at start-up.
    AdoptionFailed: Warning, "AdoptLoadBalancer";
    /// The speaker of this node answers ARP/NDP for the Service's addresses.
    AnnouncingFromNode: Normal, "Announce";
    /// The speaker owns an address but cannot answer for it.
    AnnounceFailed: Warning, "Announce";
    /// The speaker refuses to announce an address: outside the l2 pools, or a node's own.
    AnnounceRefused: Warning, "Announce";
    /// No node may announce the Service's address: every node is excluded by label.
    NoAnnouncingNode: Warning, "Announce";
    /// The announcement policies of the address's pool select no ready node, so nobody
    /// announces it (the policy named, with the fix).
    NotSelectedByPolicy: Warning, "Announce";
    /// kube-proxy runs IPVS without strictARP: every node answers ARP for the address.
    KubeProxyAnswersArp: Warning, "Announce";
    /// Another host (its MAC named) uses the Service's address: quarantined, not announced.
    AddressInUse: Warning, "Announce";
    /// The speaker advertises an address over BGP.
    AdvertisingIP: Normal, "Advertise";
    /// A pool contains a node's own address: it is never handed out (on the Node), or a
    /// Service holds one anyway (on the Service).
    PoolOverlapsNode: Warning, "CheckPools";
    /// A node was initialized (upstream's cloud node controller).
    Synced: Normal, "InitializeNode";
    /// A node cannot be initialized yet, and why.
    NodeInitializationFailed: Warning, "InitializeNode";
    /// An initialized node's addresses were rewritten, old -> new.
    NodeAddressesChanged: Normal, "UpdateNodeAddresses";
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    uid: String,
    reason: Reason,
    note: String,
}

struct Series {
    namespace: String,
    name: String,
    count: i32,
    last: Instant,
}

/// Events waiting before new ones are dropped, with a warning: client-go's broadcaster
/// keeps 1000 (`maxQueuedEvents`) and drops beyond, too. 4 x 1024 waiting events held
/// 3.2 MiB at the peak of a burst of ten thousand new Services, 4 x 8192 held 13 MiB.
const QUEUE_CAPACITY: usize = 1000;

/// What the worker is given.
enum Job {
    /// One event to record.
    Record {
        regarding: ObjectReference,
        reason: Reason,
        note: String,
    },
    /// Answered once every job queued before it is done: how [`Events::flush`] knows.
    Barrier(oneshot::Sender<()>),
}

/// The pause before each event while the owner reports a backlog: at most ten events a
/// second then (see [`Events::yielding_to`]).
const BACKLOG_GAP: Duration = Duration::from_millis(100);

/// Whether the owner has work waiting (a probe, called before each event).
type Backlog = Box<dyn Fn() -> bool + Send + Sync>;

/// What the worker records with.
struct Recorder {
    client: Client,
    component: String,
    instance: String,
    series: Mutex<LruCache<Key, Series>>,
    backlog: Option<Backlog>,
}

/// Publishes events for one component, off the caller's path.
///
/// An event is feedback, not part of a reconcile's correctness, and it is an API write:
/// waiting for it would put one or two extra round trips on every Service's way to its
/// status (the upstream recorder does not wait either). [`Events::publish`] queues it; one
/// worker, started with the first event, records them in the order they were said.
/// Dropping the publisher lets the worker finish what is queued and stop.
///
/// One worker, as client-go's broadcaster records to its sink from one goroutine: events
/// are feedback, and they compete with the reconciles' own writes. On the real server four
/// writers made a burst of ten thousand new Services take 1.74 x the bare client's time
/// (one: 1.46 x; no events at all: 1.08 x), and their p99 1.35 x (one: 1.08 x).
pub struct Events {
    recorder: Arc<Recorder>,
    queue: OnceLock<mpsc::Sender<Job>>,
}

impl Events {
    /// A publisher whose events name `component` as their source (e.g.
    /// [`crate::names::SERVICE_CONTROLLER`]) and `instance` (the pod or node name) as host.
    pub fn new(client: Client, component: &str, instance: &str) -> Self {
        Self::with_backlog(client, component, instance, None)
    }

    /// A publisher whose events give way to its owner's own writes: while `backlog` says
    /// the owner is at work (the service controller: a key queued or being reconciled),
    /// the worker writes at most ten events a second, so the writes that publish addresses
    /// are not slowed by their own feedback. Upstream's recorder is held back the same way
    /// by its client's QPS limit, which every write shares. What cannot wait in the queue
    /// is dropped with a warning, as without the yield; an idle controller's events are
    /// written at once.
    ///
    /// Measured on the real control plane at 10,000 new Services (BENCHMARKS.md): the
    /// burst took 1.46 x the bare client's time with events written as fast as the server
    /// took them, and 0.98 x with this yield.
    pub fn yielding_to(
        client: Client,
        component: &str,
        instance: &str,
        backlog: impl Fn() -> bool + Send + Sync + 'static,
    ) -> Self {
        Self::with_backlog(client, component, instance, Some(Box::new(backlog)))
    }

    fn with_backlog(
        client: Client,
        component: &str,
        instance: &str,
        backlog: Option<Backlog>,
    ) -> Self {
        Self {
            recorder: Arc::new(Recorder {
                client,
                component: component.to_string(),
                instance: instance.to_string(),
                series: Mutex::new(LruCache::new(MAX_SERIES)),
                backlog,
            }),
            queue: OnceLock::new(),
        }
    }

    /// Queues an event on `regarding`; it is recorded shortly, in order with the object's
    /// other events. A failure to record is logged, never returned. Must be called within
    /// a Tokio runtime (the worker is spawned there).
    pub async fn publish(&self, regarding: &ObjectReference, reason: Reason, note: &str) {
        let sender = self.queue.get_or_init(|| {
            let (tx, mut rx) = mpsc::channel::<Job>(QUEUE_CAPACITY);
            let recorder = self.recorder.clone();
            tokio::spawn(async move {
                while let Some(job) = rx.recv().await {
                    match job {
                        Job::Record {
                            regarding,
                            reason,
                            note,
                        } => {
                            if recorder.backlog.as_ref().is_some_and(|busy| busy()) {
                                tokio::time::sleep(BACKLOG_GAP).await;
                            }
                            if let Err(e) = recorder.record(&regarding, reason, &note).await {
                                warn!(%e, reason = reason.as_str(), "could not record event");
                            }
                        }
                        Job::Barrier(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            });
            tx
        });
        let job = Job::Record {
            regarding: regarding.clone(),
            reason,
            note: note.to_string(),
        };
        if let Err(e) = sender.try_send(job) {
            warn!(reason = reason.as_str(), "event dropped: {e}");
        }
    }

    /// Waits, at most `limit`, until every event queued so far is recorded (or failed).
    ///
    /// A stopping process calls it after its last reconcile: the events that explain what
    /// it did are written by it, not lost with it, and a successor starting right after
    /// does not see the old leader's writes arrive under its own watch. Returns whether
    /// everything was written in time; what was not is logged.
    pub async fn flush(&self, limit: Duration) -> bool {
        let Some(sender) = self.queue.get() else {
            return true;
        };
        let (tx, rx) = oneshot::channel();
        // A full queue takes the barrier once there is room: `send`, not `try_send`.
        let wait = async move {
            if sender.send(Job::Barrier(tx)).await.is_ok() {
                let _ = rx.await;
            }
        };
        let done = tokio::time::timeout(limit, wait).await.is_ok();
        if !done {
            warn!(?limit, "events still queued at shutdown were not recorded");
        }
        done
    }
}

impl Recorder {
    async fn record(
        &self,
        regarding: &ObjectReference,
        reason: Reason,
        note: &str,
    ) -> Result<(), kube::Error> {
        // Events of cluster-scoped objects (Nodes) live in `default`, as upstream's.
        let namespace = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_string());
        let note = truncate_note(note);
        let key = Key {
            uid: regarding.uid.clone().unwrap_or_default(),
            reason,
            note: note.clone(),
        };
        let now = Timestamp::now();
        let mut series = self.series.lock().await;
        if let Some(s) = series
            .get_mut(&key)
            .filter(|s| s.last.elapsed() < SERIES_WINDOW)
        {
            s.count += 1;
            s.last = Instant::now();
            let patch = serde_json::json!({"count": s.count, "lastTimestamp": Time(now)});
            let (ns, name) = (s.namespace.clone(), s.name.clone());
            drop(series);
            let api: Api<CoreEvent> = Api::namespaced(self.client.clone(), &ns);
            return api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map(|_| ());
        }
        let name = format!(
            "{}.{:x}",
            regarding.name.as_deref().unwrap_or(&self.component),
            now.as_nanosecond()
        );
        series.insert(
            key,
            Series {
                namespace: namespace.clone(),
                name: name.clone(),
                count: 1,
                last: Instant::now(),
            },
        );
        drop(series);
        let event = CoreEvent {
            metadata: ObjectMeta {
                name: Some(name),
                namespace: Some(namespace.clone()),
                ..Default::default()
            },
            involved_object: regarding.clone(),
            reason: Some(reason.as_str().to_string()),
            message: Some(note),
            type_: Some(reason.kind().as_str().to_string()),
            action: Some(reason.action().to_string()),
            source: Some(EventSource {
                component: Some(self.component.clone()),
                host: Some(self.instance.clone()),
            }),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            count: Some(1),
            event_time: Some(MicroTime(now)),
            reporting_component: Some(self.component.clone()),
            reporting_instance: Some(self.instance.clone()),
            ..Default::default()
        };
        let api: Api<CoreEvent> = Api::namespaced(self.client.clone(), &namespace);
        api.create(&PostParams::default(), &event).await.map(|_| ())
    }
}

/// The server refuses a message over 1024 bytes (bytes, not characters): cut at the last
/// character boundary that fits.
fn truncate_note(note: &str) -> String {
    // `str::floor_char_boundary` is newer than the crate's MSRV (1.89).
    let mut end = note.len().min(1024);
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    note[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_note_is_cut_to_1024_bytes_on_a_character_boundary() {
        let long = "é".repeat(600); // 1200 bytes
        let cut = truncate_note(&long);
        assert!(cut.len() <= 1024 && cut.len() >= 1023, "{}", cut.len());
        assert!(cut.chars().all(|c| c == 'é'));
        assert_eq!(truncate_note("short"), "short");
    }

    /// A recorder whose API answers every write with an empty Event, counting POSTs
    /// (new events) and PATCHes (a series' count moved).
    fn counting_recorder() -> (Recorder, Arc<std::sync::Mutex<(u32, u32)>>) {
        let (client, writes) = counting_client();
        let recorder = Recorder {
            client,
            component: "service-controller".into(),
            instance: "test".into(),
            series: Mutex::new(LruCache::new(MAX_SERIES)),
            backlog: None,
        };
        (recorder, writes)
    }

    /// A client whose API answers every write with an empty Event, counting POSTs and
    /// PATCHes.
    fn counting_client() -> (Client, Arc<std::sync::Mutex<(u32, u32)>>) {
        let writes = Arc::new(std::sync::Mutex::new((0u32, 0u32)));
        let seen = writes.clone();
        let service = tower::service_fn(move |req: http::Request<kube::client::Body>| {
            let seen = seen.clone();
            async move {
                {
                    let mut w = seen.lock().unwrap_or_else(|e| e.into_inner());
                    if req.method() == http::Method::POST {
                        w.0 += 1;
                    } else {
                        w.1 += 1;
                    }
                }
                let body = br#"{"metadata": {"name": "e"}, "involvedObject": {}}"#.to_vec();
                http::Response::builder()
                    .status(if req.method() == http::Method::POST {
                        201
                    } else {
                        200
                    })
                    .header("content-type", "application/json")
                    .body(kube::client::Body::from(body))
                    .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
            }
        });
        (Client::new(service, "default"), writes)
    }

    /// While the owner has a backlog, events wait their turn at ten a second; once it is
    /// gone they are written at once. (Paused clock: the times are the runtime's own.)
    #[tokio::test(start_paused = true)]
    async fn events_give_way_to_a_backlog_and_catch_up_when_it_is_gone() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let (client, writes) = counting_client();
        let busy = Arc::new(AtomicBool::new(true));
        let probe = busy.clone();
        let events = Events::yielding_to(client, "service-controller", "test", move || {
            probe.load(Ordering::SeqCst)
        });
        let written = || writes.lock().unwrap_or_else(|e| e.into_inner()).0;
        for i in 0..5 {
            events
                .publish(&regarding(i), Reason::EnsuredLoadBalancer, "Ensured")
                .await;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(written(), 2, "ten a second while the backlog lasts");
        busy.store(false, Ordering::SeqCst);
        assert!(events.flush(Duration::from_secs(1)).await);
        assert_eq!(written(), 5, "the rest at once");
    }

    fn regarding(i: usize) -> ObjectReference {
        ObjectReference {
            kind: Some("Service".into()),
            namespace: Some("default".into()),
            name: Some(format!("svc-{i}")),
            uid: Some(format!("uid-{i}")),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn series_are_bounded_like_client_gos_correlator_and_the_least_recent_go_first() {
        let (recorder, writes) = counting_recorder();
        let ensured = Reason::EnsuredLoadBalancer;
        for i in 0..MAX_SERIES + 100 {
            recorder
                .record(&regarding(i), ensured, "Ensured load balancer")
                .await
                .expect("recorded");
            if i == 0 {
                // Said twice at once: the series' count moves (a PATCH, not a new event).
                recorder
                    .record(&regarding(0), ensured, "Ensured load balancer")
                    .await
                    .expect("recorded");
            }
        }
        assert_eq!(recorder.series.lock().await.len(), MAX_SERIES, "bounded");
        let before = *writes.lock().unwrap_or_else(|e| e.into_inner());
        assert_eq!(before, (MAX_SERIES as u32 + 100, 1), "one count moved");
        // The most recent series moves its count; one pushed out by a hundred newer ones
        // is a new event.
        for i in [MAX_SERIES + 99, 50] {
            recorder
                .record(&regarding(i), ensured, "Ensured load balancer")
                .await
                .expect("recorded");
        }
        let after = *writes.lock().unwrap_or_else(|e| e.into_inner());
        assert_eq!(after, (before.0 + 1, before.1 + 1));
    }

    #[test]
    fn reasons_carry_their_kind_and_action() {
        assert_eq!(Reason::SyncLoadBalancerFailed.kind(), Kind::Warning);
        assert_eq!(Reason::SyncLoadBalancerFailed.action(), "SyncLoadBalancer");
        assert_eq!(Reason::DeletingLoadBalancer.kind(), Kind::Normal);
        assert_eq!(
            Reason::DeletingLoadBalancer.action(),
            "EnsureLoadBalancerDeleted"
        );
        assert_eq!(
            Reason::UnAvailableLoadBalancer.as_str(),
            "UnAvailableLoadBalancer"
        );
    }
}
