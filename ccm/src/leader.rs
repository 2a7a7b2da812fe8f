//! Leader election on a coordination.k8s.io Lease, with client-go's timing.
//!
//! Candidates try every `retry_period` to take the Lease; the holder renews
//! at the same period and gives up if it could not renew within
//! `renew_deadline`. Another holder's Lease counts as expired when its record
//! has not changed for `lease_duration` *as observed locally*, so clock skew
//! between nodes does not matter. Every write is a replace guarded by the
//! Lease's resourceVersion: two candidates racing get one success and one
//! 409, never two leaders.
//!
//! `kube-lease-manager` was considered and not used: it relies on server-side
//! apply conflicts for exclusion, counts time in whole seconds and has no
//! renew deadline, while the upstream CCM flags (15s/10s/2s) need all three.

use crate::k8s::{Api, ObjectMeta, PostParams};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;
use tracing::{debug, info, warn};

/// Where and how to elect.
#[derive(Clone, Debug)]
pub struct LeaderConfig {
    /// The Lease's name (`--leader-elect-resource-name`).
    pub name: String,
    /// The Lease's namespace.
    pub namespace: String,
    /// This candidate's identity (hostname + random suffix, as client-go).
    pub identity: String,
    /// How long a Lease is valid after its last renewal.
    pub lease_duration: Duration,
    /// A leader that cannot renew within this stops leading.
    pub renew_deadline: Duration,
    /// Pause between attempts and renewals.
    pub retry_period: Duration,
}

/// Leadership facts shared with the health endpoint.
#[derive(Debug, Default)]
pub struct LeaderState {
    leading: AtomicBool,
    /// Milliseconds since `epoch` of the last successful renewal.
    last_renew_ms: AtomicU64,
    epoch: std::sync::OnceLock<Instant>,
}

impl LeaderState {
    fn epoch(&self) -> Instant {
        *self.epoch.get_or_init(Instant::now)
    }

    /// Records a renewal that was *sent* at `sent`: the Lease says we hold it from the
    /// moment the server wrote it, which is no earlier than that. The receipt time would
    /// be wrong for a process paused while the answer was on its way: it would resume
    /// believing in a fresh renewal that another replica has long seen expire.
    fn renewed(&self, sent: Instant) {
        let at = sent.saturating_duration_since(self.epoch());
        let ms = u64::try_from(at.as_millis()).unwrap_or(u64::MAX);
        self.last_renew_ms.store(ms, Ordering::Relaxed);
    }

    /// Whether this process holds the Lease.
    pub fn is_leading(&self) -> bool {
        self.leading.load(Ordering::Relaxed)
    }

    /// Marks this process as leading, just renewed (tests of what the lease gates).
    #[cfg(test)]
    pub(crate) fn set_leading_for_tests(&self) {
        self.leading.store(true, Ordering::Relaxed);
        self.renewed(Instant::now());
    }

    /// Time since the last successful renewal, while leading.
    pub fn since_renewal(&self) -> Option<Duration> {
        if !self.is_leading() {
            return None;
        }
        let last = Duration::from_millis(self.last_renew_ms.load(Ordering::Relaxed));
        Some(self.epoch().elapsed().saturating_sub(last))
    }
}

#[derive(Clone, Debug, PartialEq)]
struct Observed {
    holder: String,
    renew: Option<MicroTime>,
    at: Instant,
}

/// One candidate.
pub struct Elector {
    api: Api<Lease>,
    cfg: LeaderConfig,
    observed: Mutex<Option<Observed>>,
    state: Arc<LeaderState>,
}

impl Elector {
    /// A candidate for `cfg`'s Lease.
    pub fn new(client: Client, cfg: LeaderConfig) -> Self {
        let state = Arc::new(LeaderState::default());
        state.epoch();
        Self {
            api: Api::namespaced(client, &cfg.namespace),
            cfg,
            observed: Mutex::default(),
            state,
        }
    }

    /// The shared leadership state (for `/healthz` and metrics).
    pub fn state(&self) -> Arc<LeaderState> {
        self.state.clone()
    }

    /// Waits until this candidate holds the Lease.
    pub async fn acquire(&self) {
        loop {
            let sent = Instant::now();
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    info!(lease = %self.cfg.name, identity = %self.cfg.identity, "acquired leadership");
                    self.state.renewed(sent);
                    self.state.leading.store(true, Ordering::Relaxed);
                    return;
                }
                Ok(false) => {}
                Err(e) => debug!(%e, "lease not acquired"),
            }
            tokio::time::sleep(self.cfg.retry_period).await;
        }
    }

    /// Renews until leadership is lost (returns then); the caller must stop
    /// every controller at once.
    pub async fn hold(&self) {
        loop {
            tokio::time::sleep(self.cfg.retry_period).await;
            let deadline = Instant::now() + self.cfg.renew_deadline;
            loop {
                let sent = Instant::now();
                match tokio::time::timeout_at(deadline.into(), self.try_acquire_or_renew()).await {
                    Ok(Ok(true)) => {
                        self.state.renewed(sent);
                        break;
                    }
                    Ok(Ok(false)) => {
                        warn!(lease = %self.cfg.name, "another candidate holds the lease");
                        self.state.leading.store(false, Ordering::Relaxed);
                        return;
                    }
                    Ok(Err(e)) => warn!(%e, "lease renewal failed; retrying"),
                    Err(_) => {}
                }
                if Instant::now() >= deadline {
                    warn!(lease = %self.cfg.name, deadline = ?self.cfg.renew_deadline, "could not renew the lease in time");
                    self.state.leading.store(false, Ordering::Relaxed);
                    return;
                }
                tokio::time::sleep(self.cfg.retry_period.min(deadline - Instant::now())).await;
            }
        }
    }

    /// Gives the Lease up on a graceful shutdown so a standby takes over at
    /// once instead of after `lease_duration`.
    pub async fn release(&self) {
        if !self.state.is_leading() {
            return;
        }
        if let Ok(mut lease) = self.api.get(&self.cfg.name).await {
            let spec = lease.spec.get_or_insert_with(Default::default);
            if spec.holder_identity.as_deref() == Some(&self.cfg.identity) {
                spec.holder_identity = None;
                spec.lease_duration_seconds = Some(1);
                spec.renew_time = Some(MicroTime(Timestamp::now()));
                if let Err(e) = self
                    .api
                    .replace(&self.cfg.name, &PostParams::default(), &lease)
                    .await
                {
                    warn!(%e, "could not release the lease");
                }
            }
        }
        self.state.leading.store(false, Ordering::Relaxed);
    }

    /// One attempt: take a free or expired Lease, or renew our own.
    async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = MicroTime(Timestamp::now());
        let secs = i32::try_from(self.cfg.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let lease = match self.api.get_opt(&self.cfg.name).await? {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.cfg.name.clone()),
                        namespace: Some(self.cfg.namespace.clone()),
                        ..Default::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.cfg.identity.clone()),
                        lease_duration_seconds: Some(secs),
                        acquire_time: Some(now.clone()),
                        renew_time: Some(now),
                        lease_transitions: Some(0),
                        ..Default::default()
                    }),
                };
                return match self.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                    Err(e) => Err(e),
                };
            }
            Some(l) => l,
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let ours = holder == self.cfg.identity;
        if !ours && !holder.is_empty() && !self.expired(&holder, &spec).await {
            return Ok(false);
        }
        let mut next = lease.clone();
        let s = next.spec.get_or_insert_with(Default::default);
        if !ours {
            s.acquire_time = Some(now.clone());
            s.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        s.holder_identity = Some(self.cfg.identity.clone());
        s.lease_duration_seconds = Some(secs);
        s.renew_time = Some(now);
        match self
            .api
            .replace(&self.cfg.name, &PostParams::default(), &next)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Whether another holder's record has stood still for its lease duration,
    /// as seen from here.
    async fn expired(&self, holder: &str, spec: &LeaseSpec) -> bool {
        let mut observed = self.observed.lock().await;
        let record = (holder.to_string(), spec.renew_time.clone());
        let changed = observed
            .as_ref()
            .is_none_or(|o| (o.holder.clone(), o.renew.clone()) != record);
        if changed {
            *observed = Some(Observed {
                holder: record.0,
                renew: record.1,
                at: Instant::now(),
            });
            return false;
        }
        let duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map(Duration::from_secs)
            .unwrap_or(self.cfg.lease_duration);
        observed
            .as_ref()
            .is_some_and(|o| o.at.elapsed() >= duration)
    }
}

/// A client-go style identity: the host name and a random suffix, so two
/// processes on one host never share it.
pub fn default_identity() -> String {
    let host = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "portway".to_string());
    format!("{host}_{}", uuid::Uuid::new_v4())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process paused while its renewal's answer was in flight must count the lease from
    /// when it asked, not from when it resumed: another replica counts from then too.
    #[test]
    fn a_renewal_counts_from_when_it_was_sent() {
        let state = LeaderState::default();
        state.epoch();
        let sent = Instant::now();
        std::thread::sleep(Duration::from_millis(40));
        state.leading.store(true, Ordering::Relaxed);
        state.renewed(sent);
        let since = state.since_renewal().expect("leading");
        assert!(since >= Duration::from_millis(40), "{since:?}");
    }
}
