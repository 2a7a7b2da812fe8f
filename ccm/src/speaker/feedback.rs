//! What the speaker tells users: the `portway.dev/announced-by` annotation and events on
//! Services, and log lines for L2 membership changes (the BGP crate logs its sessions).
//!
//! All of it runs in background tasks fed by channels, so a slow API server (or ten
//! thousand Services advertised at once after a restart) never delays the announcement
//! loop: an address is announced first and reported after.

use crate::events::{Events, Reason};
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::Store;
use kube::{Client, Resource, ResourceExt};
use portway_l2::{L2Speaker, SpeakerEvent, SpeakerStatus, mac_text};
use portway_provider::{CONFLICT_ANNOTATION, GO_BOOL_TRUE, REALLOCATE_ANNOTATION};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::desired::status_ips;
use super::l2_vips::Holders;
use super::metrics::SpeakerMetrics;
use super::ready::Key;
use crate::names::ANNOUNCED_BY;

/// How often `portway.dev/announced-by` is compared with the speaker's state when nothing
/// changes, so a stale write by another node is repaired.
const ANNOUNCED_BY_RESYNC: Duration = Duration::from_secs(2);

/// Pending "first advertised" notices; beyond this they are dropped (and logged), since
/// an event is a courtesy and the route is already out.
const NOTICE_QUEUE: usize = 4096;

/// Services one cluster-wide Warning is recorded on (the log line and the metric cover
/// every one): a trap that concerns ten thousand Services is not ten thousand Events.
pub(crate) const WARN_AT_MOST: usize = 100;

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
        let events = Arc::new(Events::new(client.clone(), crate::names::SPEAKER, &node));
        Self {
            client,
            events,
            services,
            node,
        }
    }

    /// Follows the L2 speaker's events: takeover times into the metrics, membership and
    /// quorum changes into the log. The annotation is kept by [`Self::keep_announced_by`].
    pub(crate) fn follow_l2(&self, speaker: &L2Speaker, m: Arc<SpeakerMetrics>) -> JoinHandle<()> {
        let mut rx = speaker.events();
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(SpeakerEvent::Takeover(t)) => {
                        m.takeover(t.since_last_heard.or(t.since_detected));
                        info!(ip = %t.ip, previous = ?t.previous_owner, "l2 takeover");
                    }
                    Ok(SpeakerEvent::MemberUp { name }) => info!(peer = %name, "l2 speaker up"),
                    Ok(SpeakerEvent::MemberDown {
                        name,
                        graceful,
                        silent_for,
                    }) => info!(peer = %name, graceful, ?silent_for, "l2 speaker down"),
                    Ok(SpeakerEvent::Quorum(q)) => info!(quorum = ?q, "l2 split-brain verdict"),
                    Ok(SpeakerEvent::Conflict { ip, mac, iface }) => {
                        this.address_in_use(ip, &mac_text(&mac), &iface);
                    }
                    Ok(SpeakerEvent::ConflictCleared { ip }) => {
                        info!(%ip, "l2 address free again (no answer to a probe); announced")
                    }
                    Ok(other) => debug!(event = ?other, "l2"),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        warn!(missed = n, "l2 events dropped")
                    }
                    Err(_) => return,
                }
            }
        })
    }

    /// Keeps `portway.dev/announced-by` true to the L2 speaker's state, level-triggered: on
    /// every change of the speaker's state and every [`ANNOUNCED_BY_RESYNC`], each l2
    /// Service is compared with what this node announces, and mended.
    ///
    /// Reacting to takeovers alone is not enough: during startup or a gossip hiccup another
    /// node may take an address over for a moment and write its name last, while this node
    /// never stopped owning it and so never takes it over again; or this node's cached
    /// copy of the Service may still show its own name from an earlier term. Comparing
    /// state with state repairs both within one resync.
    ///
    /// Between resyncs the Services of the changed addresses are found in `holders`, the
    /// loop's address → Services index, so a change costs its own Services.
    pub(crate) fn keep_announced_by(
        &self,
        mut status: watch::Receiver<SpeakerStatus>,
        holders: Holders,
    ) -> JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut unplaced = BTreeSet::new();
            let mut resync = tokio::time::interval(ANNOUNCED_BY_RESYNC);
            resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut seen: Option<SpeakerStatus> = None;
            let mut full = true;
            loop {
                let st = status.borrow_and_update().clone();
                // Between resyncs only the Services of the addresses whose owner or
                // announcing state changed can want another annotation.
                let services: Vec<Arc<Service>> = match seen.as_ref().filter(|_| !full) {
                    Some(old) => match changed_addresses(old, &st) {
                        Some(ips) if ips.is_empty() => Vec::new(),
                        Some(ips) => this.services_of(holders.of_any(&ips)),
                        None => this.services.state(),
                    },
                    None => this.services.state(),
                };
                for svc in services {
                    if let Some(want) = announced_by_wanted(&svc, &st, &this.node) {
                        this.mend(&svc, want, &st).await;
                    }
                }
                for ip in newly_unplaced(&mut unplaced, &st.announcer.unplaced) {
                    this.announce_failed(ip).await;
                }
                seen = Some(st);
                tokio::select! {
                    changed = status.changed() => {
                        if changed.is_err() { return }
                        full = false;
                    }
                    _ = resync.tick() => full = true,
                }
            }
        })
    }

    /// The Services of `keys` in the store (one gone meanwhile is skipped).
    fn services_of(&self, keys: BTreeSet<Key>) -> Vec<Arc<Service>> {
        keys.iter()
            .filter_map(|k| self.services.get(&super::ready::store_ref(k)))
            .collect()
    }

    /// Writes `want` as the annotation; when it names this node, says so in an event.
    async fn mend(&self, svc: &Service, want: Option<&str>, st: &SpeakerStatus) {
        if !self.patch_annotation(svc, ANNOUNCED_BY, want).await || want.is_none() {
            return;
        }
        let ips: Vec<String> = status_ips(svc)
            .into_iter()
            .filter(|ip| st.announcing.contains(ip))
            .map(|ip| ip.to_string())
            .collect();
        self.events
            .publish(
                &svc.object_ref(&()),
                Reason::AnnouncingFromNode,
                &format!(
                    "{} is announced over ARP/NDP by node {}",
                    ips.join(", "),
                    self.node
                ),
            )
            .await;
    }

    /// Says on the Service that this node owns `ip` but cannot answer for it,
    /// as MetalLB's `announceFailed` does: otherwise the address is silently dead.
    async fn announce_failed(&self, ip: IpAddr) {
        warn!(%ip, node = %self.node, "owned but cannot be announced");
        for svc in self.services_with(ip) {
            self.events
                .publish(
                    &svc.object_ref(&()),
                    Reason::AnnounceFailed,
                    &format!(
                        "node {} owns {ip} but cannot answer ARP/NDP for it: no usable interface \
                         has an address in its subnet (check l2.interfaces and the node's \
                         addresses) or the interface's socket failed (see the speaker's log)",
                        self.node
                    ),
                )
                .await;
        }
    }

    /// Says on the Services holding `ip` that another host uses it (issue 24): the
    /// speaker quarantined it, so nothing of this cluster answers for it now.
    fn address_in_use(&self, ip: IpAddr, mac: &str, iface: &str) {
        let note = address_in_use_note(ip, mac, iface, &self.node);
        warn!(%ip, %mac, %iface, "{note}");
        let services = self.services_with(ip);
        // Services that let Portway move them are told on the Service, for the controller.
        let movable: Vec<Arc<Service>> = services
            .iter()
            .filter(|s| allows_moving(s))
            .cloned()
            .collect();
        if !movable.is_empty() {
            let this = self.clone();
            let value = conflict_value(ip, mac, iface, &self.node);
            tokio::spawn(async move {
                for svc in movable {
                    this.patch_annotation(&svc, CONFLICT_ANNOTATION, Some(&value))
                        .await;
                }
            });
        }
        self.warn_services(Reason::AddressInUse, note, services);
    }

    /// A queue of addresses first advertised over BGP, each with a Service that holds it
    /// (the loop has it at hand: no look through the Services), reported as an event.
    pub(crate) fn advertised_queue(
        &self,
    ) -> (mpsc::Sender<(IpAddr, Arc<Service>)>, JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<(IpAddr, Arc<Service>)>(NOTICE_QUEUE);
        let this = self.clone();
        let task = tokio::spawn(async move {
            while let Some((ip, svc)) = rx.recv().await {
                this.events
                    .publish(
                        &svc.object_ref(&()),
                        Reason::AdvertisingIP,
                        &format!("{ip} is advertised over BGP by node {}", this.node),
                    )
                    .await;
            }
        });
        (tx, task)
    }

    /// Publishes one Warning on each of `services` (at most [`WARN_AT_MOST`]) in the
    /// background, so the announcement loop never waits for the API server.
    pub(crate) fn warn_services(&self, reason: Reason, note: String, services: Vec<Arc<Service>>) {
        let events = self.events.clone();
        tokio::spawn(async move {
            for svc in services.iter().take(WARN_AT_MOST) {
                events.publish(&svc.object_ref(&()), reason, &note).await;
            }
        });
    }

    /// The l2 Services whose status holds `ip`.
    pub(crate) fn services_with(&self, ip: IpAddr) -> Vec<Arc<Service>> {
        let one = BTreeSet::from([ip]);
        self.services_with_any(&one)
            .into_iter()
            .map(|(_, s)| s)
            .collect()
    }

    /// Each Service whose status holds one of `ips`, with that address: one look through
    /// the store for all of them. The status strings are compared as text first (the
    /// addresses' canonical form, which the controller writes), so a look costs a hash
    /// per Service rather than parsing every address; IPv6 text that differs is parsed.
    pub(crate) fn services_with_any(&self, ips: &BTreeSet<IpAddr>) -> Vec<(IpAddr, Arc<Service>)> {
        holding_any(self.services.state(), ips)
    }

    async fn patch_annotation(&self, svc: &Service, key: &str, value: Option<&str>) -> bool {
        let api: Api<Service> =
            Api::namespaced(self.client.clone(), &svc.namespace().unwrap_or_default());
        let patch = serde_json::json!({"metadata": {"annotations": {key: value}}});
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
                warn!(service = %svc.name_any(), %e, "writing {key}");
                false
            }
        }
    }
}

/// [`Feedback::services_with_any`] over `services`.
fn holding_any(services: Vec<Arc<Service>>, ips: &BTreeSet<IpAddr>) -> Vec<(IpAddr, Arc<Service>)> {
    let texts: std::collections::HashMap<String, IpAddr> =
        ips.iter().map(|ip| (ip.to_string(), *ip)).collect();
    let mut found = Vec::new();
    for svc in services {
        let ingress = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref());
        let mut hits: BTreeSet<IpAddr> = BTreeSet::new();
        for text in ingress
            .into_iter()
            .flatten()
            .filter_map(|i| i.ip.as_deref())
        {
            let ip = match texts.get(text) {
                Some(ip) => Some(*ip),
                // An IPv4 address that parses is spelt canonically (no leading
                // zeros); an IPv6 one may not be (upper case, unshortened).
                None if text.contains(':') => text.parse().ok().filter(|ip| ips.contains(ip)),
                None => None,
            };
            hits.extend(ip);
        }
        found.extend(hits.into_iter().map(|ip| (ip, svc.clone())));
    }
    found
}

/// The addresses whose owner or announcing state differs between two statuses, or
/// `None` when every Service must be looked at (the startup grace began or ended).
fn changed_addresses(old: &SpeakerStatus, new: &SpeakerStatus) -> Option<BTreeSet<IpAddr>> {
    if old.starting != new.starting {
        return None;
    }
    let mut out = BTreeSet::new();
    if !Arc::ptr_eq(&old.owners, &new.owners) {
        out.extend(portway_provider::diff::changed_keys(
            &old.owners,
            &new.owners,
        ));
    }
    if !Arc::ptr_eq(&old.announcing, &new.announcing) {
        out.extend(old.announcing.symmetric_difference(&new.announcing));
    }
    Some(out)
}

/// What `portway.dev/announced-by` on `svc` should become in `node`'s view, or `None`
/// to leave it alone.
///
/// The Service's first address that the L2 speaker knows decides (a dual-stack Service's
/// two addresses may have different owners; one name keeps the annotation from
/// flapping). Its owner writes its own name; a node named there that no longer announces
/// it removes the name when nobody owns the address, and otherwise leaves the change to
/// the new owner. Nothing is removed during the startup grace, when a restarted speaker
/// announces nothing yet but will again.
fn announced_by_wanted<'a>(
    svc: &Service,
    st: &SpeakerStatus,
    node: &'a str,
) -> Option<Option<&'a str>> {
    let current = svc.annotations().get(ANNOUNCED_BY).map(String::as_str);
    let primary = status_ips(svc)
        .into_iter()
        .find(|ip| st.owners.contains_key(ip));
    match primary {
        Some(ip) if st.announcing.contains(&ip) => (current != Some(node)).then_some(Some(node)),
        _ if current != Some(node) || st.starting => None,
        Some(ip) => match st.owners.get(&ip) {
            Some(Some(other)) if other != node => None,
            _ => Some(None),
        },
        None => Some(None),
    }
}

/// The Warning for an address another host uses: who (MAC), where (node, interface),
/// what Portway does, and the fixes.
fn address_in_use_note(ip: IpAddr, mac: &str, iface: &str, node: &str) -> String {
    format!(
        "another host (MAC {mac}) uses {ip}: node {node} saw it answer or announce the \
         address on {iface}. The address is quarantined: no node announces it while that \
         host holds it (re-probed every l2.garpRefresh). Find the host by its MAC, then \
         remove the address from it, or let Portway give the Service a new address \
         (annotation portway.dev/reallocate-on-conflict: \"true\")"
    )
}

/// Whether the Service lets Portway move it off an address another host uses.
fn allows_moving(svc: &Service) -> bool {
    svc.annotations()
        .get(REALLOCATE_ANNOTATION)
        .is_some_and(|v| GO_BOOL_TRUE.contains(&v.as_str()))
}

/// What the speaker writes in [`CONFLICT_ANNOTATION`]: the address first (the controller
/// reads it), then who uses it.
fn conflict_value(ip: IpAddr, mac: &str, iface: &str, node: &str) -> String {
    format!("{ip} mac={mac} node={node} iface={iface}")
}

/// The addresses in `now` that were not unplaced at the last look, each
/// reported once per episode; `seen` becomes `now`.
fn newly_unplaced(seen: &mut BTreeSet<IpAddr>, now: &BTreeSet<IpAddr>) -> Vec<IpAddr> {
    let fresh = now.difference(seen).copied().collect();
    seen.clone_from(now);
    fresh
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_address_in_use_warning_names_the_mac_the_interface_and_the_fix() {
        let ip: IpAddr = "192.0.2.7".parse().expect("ip");
        let note = address_in_use_note(ip, "02:00:00:00:00:0a", "eth0", "n1");
        for part in [
            "02:00:00:00:00:0a",
            "192.0.2.7",
            "eth0",
            "n1",
            "quarantined",
            "portway.dev/reallocate-on-conflict",
        ] {
            assert!(note.contains(part), "{part} in {note}");
        }
    }

    #[test]
    fn a_conflict_is_written_only_for_services_that_allow_moving_and_starts_with_the_address() {
        let mut svc = Service::default();
        assert!(!allows_moving(&svc));
        svc.metadata.annotations = Some(
            [(REALLOCATE_ANNOTATION.to_string(), "True".to_string())]
                .into_iter()
                .collect(),
        );
        assert!(allows_moving(&svc));
        let ip: IpAddr = "192.0.2.7".parse().expect("ip");
        let value = conflict_value(ip, "02:00:00:00:00:0a", "eth0", "n1");
        let (first, who) = value.split_once(' ').expect("two parts");
        assert_eq!(
            first.parse::<IpAddr>().ok(),
            Some(ip),
            "the controller reads it"
        );
        assert!(
            who.contains("02:00:00:00:00:0a") && who.contains("n1"),
            "{who}"
        );
    }

    #[test]
    fn one_look_finds_every_service_holding_any_of_the_addresses_in_any_spelling() {
        let svc = |name: &str, ips: &[&str]| {
            let ingress: Vec<_> = ips.iter().map(|ip| json!({ "ip": ip })).collect();
            Arc::new(
                serde_json::from_value::<Service>(json!({
                    "metadata": { "name": name, "namespace": "default" },
                    "status": { "loadBalancer": { "ingress": ingress } }
                }))
                .expect("service"),
            )
        };
        let services = vec![
            svc("a", &["192.0.2.1"]),
            svc("shared", &["192.0.2.1", "2001:DB8:0:0::7"]),
            svc("other", &["192.0.2.2"]),
            svc("none", &[]),
        ];
        let ips: BTreeSet<IpAddr> = ["192.0.2.1", "2001:db8::7", "192.0.2.9"]
            .iter()
            .map(|ip| ip.parse().expect("ip"))
            .collect();
        let found: Vec<(String, String)> = holding_any(services, &ips)
            .into_iter()
            .map(|(ip, s)| (ip.to_string(), s.name_any()))
            .collect();
        assert_eq!(
            found,
            [
                ("192.0.2.1".to_string(), "a".to_string()),
                ("192.0.2.1".to_string(), "shared".to_string()),
                ("2001:db8::7".to_string(), "shared".to_string()),
            ]
        );
    }

    #[test]
    fn an_unplaced_address_is_reported_once_per_episode() {
        let ip: IpAddr = "192.0.2.7".parse().expect("ip");
        let mut seen = BTreeSet::new();
        assert_eq!(newly_unplaced(&mut seen, &[ip].into()), [ip]);
        assert!(newly_unplaced(&mut seen, &[ip].into()).is_empty());
        assert!(newly_unplaced(&mut seen, &BTreeSet::new()).is_empty());
        assert_eq!(
            newly_unplaced(&mut seen, &[ip].into()),
            [ip],
            "again after it recovered"
        );
    }

    const V4: &str = "10.0.0.1";
    const V6: &str = "fd00::1";

    fn service(annotation: Option<&str>) -> Service {
        let mut anns = serde_json::Map::new();
        if let Some(a) = annotation {
            anns.insert(ANNOUNCED_BY.into(), json!(a));
        }
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "annotations": anns},
            "status": {"loadBalancer": {"ingress": [{"ip": V4}, {"ip": V6}]}}
        }))
        .expect("fixture")
    }

    /// `owners` gives the owner of V4 and V6; `announcing` what this node ("n1") announces.
    fn status(owners: [Option<&str>; 2], announcing: &[&str]) -> SpeakerStatus {
        SpeakerStatus {
            owners: Arc::new(
                [V4, V6]
                    .iter()
                    .zip(owners)
                    .map(|(ip, o)| (ip.parse().expect("ip"), o.map(String::from)))
                    .collect(),
            ),
            announcing: Arc::new(
                announcing
                    .iter()
                    .map(|ip| ip.parse().expect("ip"))
                    .collect(),
            ),
            ..SpeakerStatus::default()
        }
    }

    #[test]
    fn between_resyncs_only_addresses_whose_owner_or_announcing_changed_are_looked_at() {
        let ip = |s: &str| -> IpAddr { s.parse().expect("ip") };
        let a = status([Some("n1"), Some("n2")], &[V4]);
        assert_eq!(changed_addresses(&a, &a.clone()), Some(BTreeSet::new()));
        // Equal content in another allocation: still nothing.
        assert_eq!(
            changed_addresses(&a, &status([Some("n1"), Some("n2")], &[V4])),
            Some(BTreeSet::new())
        );
        let b = status([Some("n1"), Some("n1")], &[V4, V6]);
        assert_eq!(changed_addresses(&a, &b), Some([ip(V6)].into()));
        let mut gone = b.clone();
        gone.owners = Arc::new([(ip(V4), Some("n1".to_string()))].into());
        gone.announcing = Arc::new([ip(V4)].into());
        assert_eq!(changed_addresses(&b, &gone), Some([ip(V6)].into()));
        assert_eq!(changed_addresses(&gone, &b), Some([ip(V6)].into()));
        let mut starting = b.clone();
        starting.starting = true;
        assert_eq!(changed_addresses(&b, &starting), None, "every Service");
    }

    #[test]
    fn the_owner_of_the_first_address_names_itself_even_over_a_later_stale_write() {
        let st = status([Some("n1"), Some("n1")], &[V4, V6]);
        assert_eq!(
            announced_by_wanted(&service(None), &st, "n1"),
            Some(Some("n1"))
        );
        // Another node wrote its name last (it owned the address for a moment); n1 never
        // stopped owning it and writes its name back.
        assert_eq!(
            announced_by_wanted(&service(Some("n2")), &st, "n1"),
            Some(Some("n1"))
        );
        assert_eq!(announced_by_wanted(&service(Some("n1")), &st, "n1"), None);
    }

    #[test]
    fn a_dual_stack_service_is_named_after_the_owner_of_its_first_address() {
        // n1 owns only the IPv6 address: the IPv4 owner (n2) names itself, n1 leaves it.
        let st = status([Some("n2"), Some("n1")], &[V6]);
        assert_eq!(announced_by_wanted(&service(Some("n2")), &st, "n1"), None);
        assert_eq!(announced_by_wanted(&service(None), &st, "n1"), None);
    }

    #[test]
    fn a_former_owner_removes_its_name_only_when_nobody_took_over() {
        let nobody = status([None, None], &[]);
        assert_eq!(
            announced_by_wanted(&service(Some("n1")), &nobody, "n1"),
            Some(None)
        );
        assert_eq!(
            announced_by_wanted(&service(Some("n3")), &nobody, "n1"),
            None
        );
        let moved = status([Some("n2"), Some("n2")], &[]);
        assert_eq!(
            announced_by_wanted(&service(Some("n1")), &moved, "n1"),
            None
        );
        let starting = SpeakerStatus {
            starting: true,
            ..nobody
        };
        assert_eq!(
            announced_by_wanted(&service(Some("n1")), &starting, "n1"),
            None
        );
    }
}
