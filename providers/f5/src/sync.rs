//! Converging one Service's objects, and the resync: what the provider reads for each
//! (see [`crate::snapshot`] for why a reconcile reads only its own objects, by name, and a
//! resync reads the partition once for every Service), the plan, the writes and what they
//! leave to clean up.

use crate::client::{PartitionInfo, TxError};
use crate::config::MonitorKind;
use crate::current::Current;
use crate::desired::{Desired, desired};
use crate::nodes::NodeIndex;
use crate::plan::{Plan, needs_nodes, plan};
use crate::provider::{Core, lock};
use crate::snapshot::{Known, Names, addresses, applied, by_uid};
use crate::tag::{tagged_service, tagged_uid};
use portway_provider::{LbNode, LbService, ProviderError, ServiceKey};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Instant;
use tokio::sync::mpsc;
use tracing::{info, warn};

impl Core {
    /// At `adopt` (this replica now leads): read the whole partition (every monitor kind),
    /// sweep what belongs to no managed Service, and delete Portway's nodes no pool of
    /// Portway's uses (left by a controller that stopped midway).
    pub(crate) async fn start_up(&self) {
        let info = match self.session().await {
            Ok(info) => info,
            Err(e) => {
                warn!(%e, "BIG-IP not reachable at start; will converge on the first reconcile");
                return;
            }
        };
        match self.read_all(&info, None).await {
            Ok(read) => {
                if let Err(e) = self.sweep(&info, &read).await {
                    warn!(%e, "sweeping orphaned BIG-IP objects");
                }
                let used = lock(&self.snapshot).used_addresses();
                self.device
                    .gc_nodes(&self.cfg.partition, info.route_domain, &used)
                    .await;
            }
            Err(e) => warn!(%e, "reading the BIG-IP partition"),
        }
    }

    /// One resync: read the partition once (pools, virtuals and the monitor kinds in use),
    /// sweep it, and ask the controller (through `tx`, the triggers channel) to ensure every
    /// managed Service again: each plans against this read without reading, so drift is
    /// repaired and Services in sync cost nothing more. False once nobody listens.
    pub(crate) async fn resync_pass(&self, tx: &mpsc::UnboundedSender<ServiceKey>) -> bool {
        match self.session().await {
            Ok(info) => {
                let kinds = {
                    let s = lock(&self.snapshot);
                    s.loaded().then(|| s.monitor_kinds())
                };
                match self.read_all(&info, kinds.as_ref()).await {
                    Ok(read) => {
                        if let Err(e) = self.sweep(&info, &read).await {
                            warn!(%e, "sweeping orphaned BIG-IP objects");
                        }
                    }
                    Err(e) => warn!(%e, "BIG-IP resync: reading the partition"),
                }
            }
            Err(e) => warn!(%e, "BIG-IP resync: no session"),
        }
        let keys: Vec<ServiceKey> = lock(&self.managed).keys().cloned().collect();
        keys.into_iter().all(|k| tx.send(k).is_ok())
    }

    /// Reads the whole partition (`kinds`: see [`crate::client::BigIp::read`]) and installs
    /// it in the snapshot, each Service's part fresh for one resync period.
    async fn read_all(
        &self,
        info: &PartitionInfo,
        kinds: Option<&BTreeSet<MonitorKind>>,
    ) -> Result<Current, ProviderError> {
        let started = lock(&self.snapshot).clock();
        let read = self
            .device
            .read(&self.cfg.partition, info.route_domain, kinds)
            .await?;
        let fresh_until = Instant::now() + self.cfg.resync_period;
        lock(&self.snapshot).install(&read, started, fresh_until);
        Ok(read)
    }

    /// `uid`'s objects to plan against: from the snapshot when it is fresh or holds none,
    /// else read by name (what it holds and what `want` names). The first call loads the
    /// snapshot, one load for all callers.
    async fn own(
        &self,
        info: &PartitionInfo,
        uid: &str,
        want: &Desired,
    ) -> Result<Current, ProviderError> {
        if !lock(&self.snapshot).loaded() {
            let _one = self.loading.lock().await;
            if !lock(&self.snapshot).loaded() {
                self.read_all(info, None).await?;
            }
        }
        let known = lock(&self.snapshot).take(uid, Instant::now());
        match known {
            Known::Fresh(c) => Ok(c),
            Known::Nothing => Ok(Current::default()),
            Known::Held(c) => self.read_own(info, uid, &Names::of(want, &c)).await,
        }
    }

    /// The objects of `names` tagged `uid`, read by name and stored in the snapshot.
    async fn read_own(
        &self,
        info: &PartitionInfo,
        uid: &str,
        names: &Names,
    ) -> Result<Current, ProviderError> {
        let read = self
            .device
            .read_named(&self.cfg.partition, info.route_domain, names)
            .await?;
        let own = read.filter(|o| tagged_uid(o) == Some(uid));
        lock(&self.snapshot).store(uid, own.clone());
        Ok(own)
    }

    /// Brings `svc`'s objects to what it should have on `nodes` with addresses `ips`.
    pub(crate) async fn converge(
        &self,
        svc: &LbService,
        nodes: &[LbNode],
        ips: &[IpAddr],
    ) -> Result<(), ProviderError> {
        let info = self.session().await?;
        let members = self.members(svc, nodes).await?;
        let want = desired(
            svc,
            ips,
            &members,
            &self.cfg.partition,
            &self.cfg.monitors(),
        );
        if let Some(p) = self.apply_fresh(&info, None, &svc.uid, &want).await? {
            info!(service = %svc.key, nodes = p.nodes.len(), patches = p.member_patches.len(), commands = p.transaction.len(), "BIG-IP converged");
        }
        Ok(())
    }

    /// Plans `uid`'s objects towards `want` against `read` (or what [`Self::own`] gives)
    /// and applies the plan; what it wrote goes to the snapshot, and nodes it stopped using
    /// are collected. When the partition changed between the read and the write
    /// ([`TxError::Stale`]: a create that meets an existing object, a change or delete of
    /// one that is gone), it reads the Service's objects by name and plans again: the create
    /// becomes a PATCH, what is gone drops out (a 404 on a delete is success). Once only, so
    /// an object of our name that is not ours cannot make this loop. Returns the plan
    /// applied, `None` when already in sync. On failure the snapshot doubts `uid`, so its
    /// next reconcile reads.
    async fn apply_fresh(
        &self,
        info: &PartitionInfo,
        read: Option<Current>,
        uid: &str,
        want: &Desired,
    ) -> Result<Option<Plan>, ProviderError> {
        let r = self.plan_and_apply(info, read, uid, want).await;
        if r.is_err() {
            lock(&self.snapshot).doubt(uid);
        }
        r
    }

    async fn plan_and_apply(
        &self,
        info: &PartitionInfo,
        read: Option<Current>,
        uid: &str,
        want: &Desired,
    ) -> Result<Option<Plan>, ProviderError> {
        let partition = &self.cfg.partition;
        let mut own = match read {
            Some(c) => c,
            None => self.own(info, uid, want).await?,
        };
        let mut reread = false;
        loop {
            // Members name nodes: only an address new to the Service's pools needs a read of them.
            let index = if needs_nodes(want, &own) {
                self.device.nodes(partition, info).await?
            } else {
                NodeIndex::from_members(partition, &own)
            };
            let p = plan(want, &own, partition, &index);
            if p.is_empty() {
                return Ok(None);
            }
            match self.apply(&p).await {
                Ok(()) => {
                    let now = applied(want, &index);
                    let dropped: Vec<IpAddr> = addresses(&own)
                        .difference(&addresses(&now))
                        .copied()
                        .collect();
                    let used = {
                        let mut s = lock(&self.snapshot);
                        s.store(uid, now);
                        s.used_addresses()
                    };
                    if dropped.iter().any(|ip| !used.contains(ip)) {
                        self.device
                            .gc_nodes(partition, info.route_domain, &used)
                            .await;
                    }
                    self.schedule_save();
                    return Ok(Some(p));
                }
                Err(TxError::Stale(e)) if !reread => {
                    info!(%uid, %e, "BIG-IP partition changed meanwhile; reading again to converge");
                    reread = true;
                    own = self.read_own(info, uid, &Names::of(want, &own)).await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Sends a plan: its nodes and member PATCHes, or its transaction (a plan has one or the
    /// other).
    async fn apply(&self, p: &Plan) -> Result<(), TxError> {
        self.device.create_nodes(&p.nodes).await?;
        for (pool, members) in &p.member_patches {
            let path = format!(
                "/mgmt/tm/ltm/pool/{}",
                crate::names::uri_name(&self.cfg.partition, pool)
            );
            self.device
                .patch_members(&path, &serde_json::json!({"members": members}))
                .await?;
        }
        self.device.transaction(&p.transaction).await
    }

    /// Deletes everything of `uid`.
    pub(crate) async fn remove(&self, uid: &str) -> Result<(), ProviderError> {
        let info = self.session().await?;
        self.apply_fresh(&info, None, uid, &Desired::default())
            .await
            .map(|_| ())
    }

    /// Deletes tagged objects of `read` (the partition just read) whose Service this
    /// provider does not manage: gone, recreated with another uid, or moved to another class.
    async fn sweep(&self, info: &PartitionInfo, read: &Current) -> Result<(), ProviderError> {
        let managed: Vec<String> = lock(&self.managed).values().cloned().collect();
        for (uid, objects) in by_uid(read) {
            if managed.contains(&uid) {
                continue;
            }
            // Not a Service of this class now: deleted, recreated with another uid, or moved
            // to another class. A Service being ensured is in `managed` before its objects
            // are written, so its objects are never taken for an orphan's.
            let svc = objects
                .virtuals
                .iter()
                .chain(&objects.pools)
                .chain(objects.monitors.iter().map(|(_, m)| m))
                .find_map(tagged_service)
                .unwrap_or_default()
                .to_string();
            info!(service = %svc, "removing BIG-IP objects of a Service that is gone");
            self.apply_fresh(info, Some(objects), &uid, &Desired::default())
                .await?;
        }
        Ok(())
    }
}
