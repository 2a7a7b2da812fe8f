//! The f5 provider: VIPs from the shared allocator, objects on the BIG-IP, drift repair.

use crate::client::{BigIp, PartitionInfo};
use crate::config::{F5Config, MemberMode};
use crate::session::Credentials;
use crate::snapshot::Snapshot;
use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::Api;
use portway_provider::ipam::VipManager;
use portway_provider::{
    EndpointsUse, LbNode, LbService, LbStatus, LoadBalancerProvider, ProviderError, ServiceKey,
};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::warn;

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The `portway.dev/f5` provider.
pub struct F5Provider {
    core: Arc<Core>,
    vips: VipManager,
    triggers: Mutex<Option<mpsc::UnboundedReceiver<ServiceKey>>>,
    /// The sending end of the triggers channel (the timer holds a clone).
    trigger: mpsc::UnboundedSender<ServiceKey>,
    /// The resync timer, started by `adopt`: a standby replica must not write to the device.
    resync: Mutex<Resync>,
}

/// Where the resync timer is in its life: started at most once, by the first `adopt` (the
/// controller calls it once it leads), and never again after `shutdown`.
enum Resync {
    /// Not started.
    Idle,
    /// Running until aborted: the timer.
    Running(Vec<tokio::task::JoinHandle<()>>),
    /// Shut down.
    Stopped,
}

/// What the f5 provider may read in the cluster, and nothing more: the one credentials
/// Secret its configuration names. Services and their endpoints come from the controller.
#[derive(Clone)]
pub struct CredentialsReader {
    secrets: Api<Secret>,
}

impl CredentialsReader {
    /// A reader of Secrets in the namespace of `f5.credentialsSecret`.
    pub fn new(client: Client, cfg: &F5Config) -> Self {
        Self {
            secrets: Api::namespaced(client, &cfg.credentials_secret.namespace),
        }
    }
}

/// The device side, shared by the provider and its resync task (converging in `sync`).
pub(crate) struct Core {
    secrets: CredentialsReader,
    pub(crate) cfg: F5Config,
    pub(crate) device: Arc<BigIp>,
    /// Services this provider manages, with their uids: their objects are never swept.
    pub(crate) managed: Mutex<BTreeMap<ServiceKey, String>>,
    /// The partition once it is known to exist, with the route domains of the partitions
    /// the account reads.
    partition: Mutex<Option<PartitionInfo>>,
    save_pending: Arc<AtomicBool>,
    /// When the credentials Secret was last read: it is read again once per resync period,
    /// or at once after the device refused it, not on every reconcile.
    creds_read: Mutex<Option<Instant>>,
    /// Portway's objects in the partition as last read or written ([`crate::snapshot`]).
    pub(crate) snapshot: Mutex<Snapshot>,
    /// Held while the snapshot is first loaded, so concurrent reconciles share one read.
    pub(crate) loading: tokio::sync::Mutex<()>,
}

impl Drop for F5Provider {
    fn drop(&mut self) {
        self.stop_resync();
    }
}

impl F5Provider {
    /// A provider for the device in `cfg`, allocating VIPs through `vips` (a handle scoped to
    /// `cfg.pools`). It makes no request to the device until it is used: the resync timer
    /// starts with the first [`LoadBalancerProvider::adopt`], which the controller calls once
    /// it leads, so a standby replica never writes to the BIG-IP.
    ///
    /// Every resync period the timer sweeps the partition of tagged objects whose Service is
    /// gone (even when no f5 Service is left to reconcile) and asks the controller to ensure
    /// every managed Service again, which repairs drift.
    pub fn new(
        secrets: CredentialsReader,
        cfg: F5Config,
        vips: VipManager,
    ) -> Result<F5Provider, ProviderError> {
        if cfg.insecure_skip_verify {
            warn!(url = %cfg.url, "f5.insecureSkipVerify is set: the BIG-IP's TLS certificate is NOT verified");
        }
        let device = Arc::new(BigIp::new(
            &cfg.url,
            &cfg.ca_bundle,
            cfg.insecure_skip_verify,
        )?);
        let (tx, rx) = mpsc::unbounded_channel();
        let core = Arc::new(Core {
            secrets,
            cfg,
            device,
            managed: Mutex::default(),
            partition: Mutex::default(),
            save_pending: Arc::new(AtomicBool::new(false)),
            creds_read: Mutex::new(None),
            snapshot: Mutex::default(),
            loading: tokio::sync::Mutex::new(()),
        });
        Ok(F5Provider {
            core,
            vips,
            triggers: Mutex::new(Some(rx)),
            trigger: tx,
            resync: Mutex::new(Resync::Idle),
        })
    }

    /// Starts the resync timer unless it runs already or was shut down.
    fn start_resync(&self) {
        let mut r = lock(&self.resync);
        *r = match std::mem::replace(&mut *r, Resync::Stopped) {
            Resync::Idle => Resync::Running(vec![tokio::spawn(resync(
                self.core.clone(),
                self.trigger.clone(),
            ))]),
            other => other,
        };
    }

    /// Stops the resync timer for good.
    fn stop_resync(&self) {
        if let Resync::Running(tasks) = std::mem::replace(&mut *lock(&self.resync), Resync::Stopped)
        {
            tasks.iter().for_each(|t| t.abort());
        }
    }

    /// The device client (REST call counts for benchmarks).
    pub fn device(&self) -> &Arc<BigIp> {
        &self.core.device
    }

    /// Runs one resync pass now, as the timer does every `resyncPeriod`: the Services it
    /// asks to ensure again arrive on [`LoadBalancerProvider::triggers`]. For benchmarks and
    /// tests that measure one pass without waiting for the period.
    pub async fn resync_now(&self) {
        self.core.resync_pass(&self.trigger).await;
    }
}

/// The resync timer: every period, one [`Core::resync_pass`].
async fn resync(core: Arc<Core>, tx: mpsc::UnboundedSender<ServiceKey>) {
    let mut tick = tokio::time::interval(core.cfg.resync_period);
    tick.tick().await;
    loop {
        tick.tick().await;
        if !core.resync_pass(&tx).await {
            return;
        }
    }
}

impl Core {
    /// Reads the credentials Secret into the device client.
    async fn load_credentials(&self) -> Result<(), ProviderError> {
        let r = &self.cfg.credentials_secret;
        let field = "f5.credentialsSecret";
        let secret = self
            .secrets
            .secrets
            .get_opt(&r.name)
            .await
            .map_err(|e| {
                ProviderError::transient(format!("reading Secret {}/{}: {e}", r.namespace, r.name))
            })?
            .ok_or_else(|| {
                ProviderError::invalid(
                    field,
                    format!(
                        "Secret {}/{} does not exist; create it with keys username and password",
                        r.namespace, r.name
                    ),
                )
            })?;
        let get = |k: &str| -> Result<String, ProviderError> {
            secret
                .data
                .as_ref()
                .and_then(|d| d.get(k))
                .map(|v| String::from_utf8_lossy(&v.0).into_owned())
                .ok_or_else(|| {
                    ProviderError::invalid(
                        field,
                        format!("Secret {}/{} has no key {k:?}", r.namespace, r.name),
                    )
                })
        };
        self.device
            .set_credentials(Credentials {
                username: get("username")?,
                password: get("password")?,
            })
            .await;
        Ok(())
    }

    /// Credentials loaded and the partition present: the step before every device call.
    pub(crate) async fn session(&self) -> Result<PartitionInfo, ProviderError> {
        let fresh = lock(&self.creds_read).is_some_and(|t| t.elapsed() < self.cfg.resync_period);
        if !fresh || self.device.credentials_refused() {
            self.load_credentials().await?;
            *lock(&self.creds_read) = Some(Instant::now());
        }
        if let Some(info) = lock(&self.partition).clone() {
            return Ok(info);
        }
        let info = self.device.ensure_partition(&self.cfg.partition).await?;
        *lock(&self.partition) = Some(info.clone());
        Ok(info)
    }

    pub(crate) async fn members(
        &self,
        svc: &LbService,
        nodes: &[LbNode],
    ) -> Result<Vec<Vec<(IpAddr, u16)>>, ProviderError> {
        match self.cfg.member_mode {
            MemberMode::Nodeport => svc
                .ports
                .iter()
                .map(|p| {
                    let np = p.node_port.ok_or_else(|| {
                        ProviderError::invalid(
                            "spec.allocateLoadBalancerNodePorts",
                            "f5 memberMode nodeport sends traffic to node ports; allocate them (remove allocateLoadBalancerNodePorts: false) or use memberMode cluster",
                        )
                    })?;
                    Ok(nodes.iter().filter_map(|n| n.internal_ips.first()).map(|ip| (*ip, np)).collect())
                })
                .collect(),
            // The pods themselves: the Service's endpoints, which the controller hands over
            // (an unknown ready state counts as ready, as the API says).
            MemberMode::Cluster => Ok(svc
                .ports
                .iter()
                .map(|p| {
                    svc.endpoints
                        .iter()
                        .filter(|e| e.ready != Some(false))
                        .flat_map(|e| {
                            let port = e.ports.iter().find(|sp| sp.name == p.name).map(|sp| sp.port);
                            e.addresses.iter().filter_map(move |ip| port.map(|port| (*ip, port)))
                        })
                        .collect()
                })
                .collect()),
        }
    }

    pub(crate) fn schedule_save(&self) {
        if self.save_pending.swap(true, Ordering::SeqCst) {
            return;
        }
        let device = self.device.clone();
        let pending = self.save_pending.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            pending.store(false, Ordering::SeqCst);
            if let Err(e) = device.save().await {
                warn!(%e, "saving the BIG-IP configuration");
            }
        });
    }
}

#[async_trait]
impl LoadBalancerProvider for F5Provider {
    fn class(&self) -> &str {
        crate::CLASS
    }

    async fn adopt(&self, existing: &[LbService]) -> Vec<(ServiceKey, ProviderError)> {
        // Called once this replica leads: only now may the timer write to the device.
        self.start_resync();
        {
            let mut m = lock(&self.core.managed);
            for s in existing {
                m.insert(s.key.clone(), s.uid.clone());
            }
        }
        // Addresses outside every pool come back as `Orphaned` from `adopt` itself.
        let problems = self.vips.adopt(existing);
        self.core.start_up().await;
        problems
    }

    async fn ensure(&self, svc: &LbService, nodes: &[LbNode]) -> Result<LbStatus, ProviderError> {
        let status = self.vips.ensure(svc)?;
        let ips: Vec<IpAddr> = status.ingress.iter().map(|i| i.ip).collect();
        lock(&self.core.managed).insert(svc.key.clone(), svc.uid.clone());
        // Status is returned (and published) only after the BIG-IP committed.
        self.core.converge(svc, nodes, &ips).await?;
        Ok(status)
    }

    async fn update(&self, svc: &LbService, nodes: &[LbNode]) -> Result<(), ProviderError> {
        let status = self.vips.ensure(svc)?;
        let ips: Vec<IpAddr> = status.ingress.iter().map(|i| i.ip).collect();
        self.core.converge(svc, nodes, &ips).await
    }

    async fn ensure_deleted(&self, svc: &LbService) -> Result<(), ProviderError> {
        self.core.remove(&svc.uid).await?;
        lock(&self.core.managed).remove(&svc.key);
        self.vips.release(&svc.key);
        Ok(())
    }

    async fn shutdown(&self) {
        self.stop_resync();
        self.core.device.logout().await;
    }

    /// In `cluster` member mode the pool members are the Service's endpoints: the
    /// controller hands them over and calls `ensure` again when they change, so a pod that
    /// goes or comes changes the members within a reconcile, not a resync period.
    fn endpoints_use(&self) -> EndpointsUse {
        match self.core.cfg.member_mode {
            MemberMode::Cluster => EndpointsUse::Always,
            MemberMode::Nodeport => EndpointsUse::Never,
        }
    }

    fn triggers(&self) -> Option<BoxStream<'static, ServiceKey>> {
        let mut rx = lock(&self.triggers).take()?;
        Some(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed())
    }
}
