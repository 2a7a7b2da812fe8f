//! What the reconciles share: the API client, the providers, the caches and, per
//! Service, the little the controller remembers between reconciles.

use super::dispatch::{Handle, Registry, Reply, Request};
use super::nodes::NodeSet;
use crate::config::ServiceControllerConfig;
use crate::events::{Events, Reason};
use crate::k8s::{Api, Namespace, ObjectRef, Resource, ResourceExt, Service, Store};
use crate::metrics::Metrics;
use kube::Client;
use portway_provider::ProviderError;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::watch;

/// What the controller remembers of a Service between reconciles.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SvcState {
    /// The class whose provider last handled it (for cleanup after the class
    /// disappears from the spec, e.g. on a type change).
    pub class: String,
    /// Fingerprint of the spec last ensured successfully.
    pub ensured: Option<u64>,
    /// Fingerprint of a spec that got a needs-a-fix error: wait for a change.
    pub parked: Option<u64>,
    /// Node set generation last handed to the provider.
    pub node_generation: u64,
    /// Consecutive transient failures, for backoff.
    pub failures: u32,
    /// The last ensure found no address free, or the one it asks for held by another
    /// Service: retried with backoff, and at once when a cleanup releases something.
    pub waiting_for_release: bool,
    /// A provider was called for it: something may be held, so a deletion or a type change
    /// must be cleaned up even if the finalizer was stripped.
    pub served: bool,
    /// The uid of the Service as last handed to a provider: with the key and the class it
    /// is all `ensure_deleted` needs, and a Service deleted without the finalizer is gone
    /// from the cache before its cleanup. (A uid, not a whole view: 10,000 Services.)
    pub uid: Option<String>,
    /// The digest ([`super::status::ingress_digest`]) of the status this controller last
    /// wrote (or found already so). The cache can be older than that write: an ensure that
    /// decides the status the stale copy still shows must write it anyway, or the newer
    /// write stays for good (the real control plane showed it with hostport, a DaemonSet
    /// rolling its pods). The write's resourceVersion precondition refuses it until the
    /// cache has caught up.
    pub published: Option<u64>,
}

/// Shared state of the reconciles.
pub struct Context {
    pub(super) client: Client,
    pub(super) registry: Registry,
    pub(super) default_class: String,
    pub(super) cfg: ServiceControllerConfig,
    pub(super) events: Events,
    pub(super) metrics: Arc<Metrics>,
    pub(super) namespaces: Store<Namespace>,
    /// EndpointSlices, cached only when some provider reads endpoints.
    pub(super) slices: Option<Store<k8s_openapi::api::discovery::v1::EndpointSlice>>,
    pub(super) nodes: watch::Receiver<NodeSet>,
    pub(super) ready: watch::Receiver<bool>,
    pub(super) state: Mutex<HashMap<ObjectRef<Service>, SvcState>>,
    pub(super) forced: Mutex<HashSet<ObjectRef<Service>>>,
    /// The work queue: a key is reconciled by one worker at a time, in order of arrival.
    pub(super) queue: Arc<super::queue::WorkQueue<ObjectRef<Service>>>,
    /// Classes switched off: their Services are cleaned up.
    pub(super) retired: Vec<String>,
    /// Whether this process may write (it leads); checked before every provider call.
    pub(super) fence: crate::fence::Fence,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // No code path panics while holding these locks; recover the data anyway.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Context {
    pub(super) fn take_forced(&self, key: &ObjectRef<Service>) -> bool {
        lock(&self.forced).remove(key)
    }

    pub(super) fn state_of(&self, key: &ObjectRef<Service>) -> Option<SvcState> {
        lock(&self.state).get(key).cloned()
    }

    /// Changes the state of `key` (a default one if none) and returns the failure count.
    pub(super) fn update_state(
        &self,
        key: &ObjectRef<Service>,
        f: impl FnOnce(&mut SvcState),
    ) -> u32 {
        let mut map = lock(&self.state);
        let st = map.entry(key.clone()).or_default();
        f(st);
        st.failures
    }

    pub(super) fn forget(&self, key: &ObjectRef<Service>) {
        lock(&self.state).remove(key);
    }

    /// Reconciles at once every Service waiting for a release: a cleanup or a move has
    /// just freed what it held, which may be the address or port one of them needs.
    pub(super) fn retry_waiting_for_release(&self) {
        let waiting: Vec<_> = lock(&self.state)
            .iter()
            .filter(|(_, st)| st.waiting_for_release)
            .map(|(k, _)| k.clone())
            .collect();
        for key in waiting {
            self.queue.add(key);
        }
    }

    /// One provider call through the middleware, counted and timed.
    pub(super) async fn call(
        &self,
        class: &str,
        handle: &Handle,
        request: Request,
    ) -> Result<Reply, ProviderError> {
        if !self.fence.open() {
            return Err(ProviderError::transient(
                crate::fence::NotLeading.to_string(),
            ));
        }
        let op = request.op();
        let started = std::time::Instant::now();
        let result = handle.call(request).await;
        self.metrics
            .observe_provider_call(class, op, result.is_ok(), started.elapsed());
        result
    }

    /// Services waiting for a retry, for the metric (a pool exhausted counts too).
    pub(super) fn retries_pending(&self) -> usize {
        lock(&self.state)
            .values()
            .filter(|st| st.failures > 0)
            .count()
    }

    pub(super) fn backoff(&self, failures: u32, e: &ProviderError) -> Duration {
        backoff_delay(
            failures,
            e,
            self.cfg.min_retry_delay,
            self.cfg.max_retry_delay,
        )
    }

    pub(super) fn services(&self, svc: &Service) -> Api<Service> {
        Api::namespaced(self.client.clone(), &svc.namespace().unwrap_or_default())
    }

    pub(super) fn namespace_labels(&self, svc: &Service) -> BTreeMap<String, String> {
        let ns = svc.namespace().unwrap_or_default();
        self.namespaces
            .get(&ObjectRef::new(&ns))
            .and_then(|n| n.metadata.labels.clone())
            .unwrap_or_default()
    }

    pub(super) async fn publish(&self, svc: &Service, reason: Reason, note: &str) {
        self.events
            .publish(&svc.object_ref(&()), reason, note)
            .await;
    }
}

/// The delay before the `failures`-th retry: a provider's own `retry_after`, else
/// `min * 2^(failures-1)` capped at `max`.
pub fn backoff_delay(failures: u32, e: &ProviderError, min: Duration, max: Duration) -> Duration {
    if let ProviderError::Transient {
        retry_after: Some(d),
        ..
    } = e
    {
        return *d;
    }
    let exp = failures.saturating_sub(1).min(20);
    min.saturating_mul(1u32 << exp).min(max)
}
