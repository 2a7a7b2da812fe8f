//! What the speaker tells users: the `portway.dev/announced-by` annotation and events on
//! Services, and log lines for L2 membership changes (the BGP crate logs its sessions).
//!
//! All of it runs in background tasks fed by channels, so a slow API server (or ten
//! thousand Services advertised at once after a restart) never delays the announcement
//! loop: an address is announced first and reported after.

use crate::events::{Events, Kind};
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::Store;
use kube::{Client, Resource, ResourceExt};
use portway_l2::{L2Speaker, SpeakerEvent};
use std::net::IpAddr;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::ANNOUNCED_BY;
use super::desired::status_ips;
use super::metrics::SpeakerMetrics;

/// Pending "first advertised" notices; beyond this they are dropped (and logged), since
/// an event is a courtesy and the route is already out.
const NOTICE_QUEUE: usize = 4096;

/// Shared by the feedback tasks.
#[derive(Clone)]
pub(crate) struct Feedback {
    client: Client,
    events: Arc<Events>,
    services: Store<Service>,
    node: String,
}

impl Feedback {
    pub(crate) fn new(client: Client, services: Store<Service>, node: String) -> Self {
        let events = Arc::new(Events::new(client.clone(), "portway-speaker", &node));
        Self {
            client,
            events,
            services,
            node,
        }
    }

    /// Follows the L2 speaker's events: annotation and event on takeover, annotation
    /// removed when this node stops announcing and nobody took over, membership and
    /// quorum changes logged.
    pub(crate) fn follow_l2(&self, speaker: &L2Speaker, m: Arc<SpeakerMetrics>) -> JoinHandle<()> {
        let mut rx = speaker.events();
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(SpeakerEvent::Takeover(t)) => {
                        m.takeover(t.since_last_heard.or(t.since_detected));
                        this.announced(t.ip).await;
                    }
                    Ok(SpeakerEvent::Released { ip, new_owner }) => {
                        if new_owner.is_none() {
                            this.unannounced(ip).await;
                        }
                    }
                    Ok(SpeakerEvent::MemberUp { name }) => info!(peer = %name, "l2 speaker up"),
                    Ok(SpeakerEvent::MemberDown {
                        name,
                        graceful,
                        silent_for,
                    }) => info!(peer = %name, graceful, ?silent_for, "l2 speaker down"),
                    Ok(SpeakerEvent::Quorum(q)) => info!(quorum = ?q, "l2 split-brain verdict"),
                    Ok(other) => debug!(event = ?other, "l2"),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        warn!(missed = n, "l2 events dropped; annotations may lag")
                    }
                    Err(_) => return,
                }
            }
        })
    }

    /// A queue of addresses first advertised over BGP, each reported as an event.
    pub(crate) fn advertised_queue(&self) -> (mpsc::Sender<IpAddr>, JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<IpAddr>(NOTICE_QUEUE);
        let this = self.clone();
        let task = tokio::spawn(async move {
            while let Some(ip) = rx.recv().await {
                for svc in this.services_with(ip) {
                    this.events
                        .publish(
                            &svc.object_ref(&()),
                            Kind::Normal,
                            "AdvertisingIP",
                            "Advertise",
                            &format!("{ip} is advertised over BGP by node {}", this.node),
                        )
                        .await;
                }
            }
        });
        (tx, task)
    }

    fn services_with(&self, ip: IpAddr) -> Vec<Arc<Service>> {
        self.services
            .state()
            .into_iter()
            .filter(|s| status_ips(s).contains(&ip))
            .collect()
    }

    async fn patch_annotation(&self, svc: &Service, value: Option<&str>) -> bool {
        let api: Api<Service> =
            Api::namespaced(self.client.clone(), &svc.namespace().unwrap_or_default());
        let patch = serde_json::json!({"metadata": {"annotations": {ANNOUNCED_BY: value}}});
        match api
            .patch(
                &svc.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => true,
            Err(e) => {
                warn!(service = %svc.name_any(), %e, "writing {ANNOUNCED_BY}");
                false
            }
        }
    }

    /// This node took `ip` over: name it on the Service (only when that changes) and say so.
    async fn announced(&self, ip: IpAddr) {
        for svc in self.services_with(ip) {
            if svc.annotations().get(ANNOUNCED_BY).map(String::as_str) == Some(&self.node) {
                continue;
            }
            if !self.patch_annotation(&svc, Some(&self.node)).await {
                continue;
            }
            self.events
                .publish(
                    &svc.object_ref(&()),
                    Kind::Normal,
                    "AnnouncingFromNode",
                    "Announce",
                    &format!("{ip} is announced over ARP/NDP by node {}", self.node),
                )
                .await;
        }
    }

    /// This node stopped announcing `ip` and no other node took it: the annotation would
    /// otherwise name a node that no longer answers.
    async fn unannounced(&self, ip: IpAddr) {
        for svc in self.services_with(ip) {
            if svc.annotations().get(ANNOUNCED_BY).map(String::as_str) == Some(&self.node) {
                self.patch_annotation(&svc, None).await;
            }
        }
    }
}
