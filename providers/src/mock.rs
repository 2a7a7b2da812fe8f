//! `MockProvider`: a provider that records every call, for controller tests and
//! benchmarks (the sandbox runs the real providers).
//!
//! It hands out addresses from a counter so that statuses differ per Service,
//! and can be told to fail a given number of calls (transiently or with a
//! needs-a-fix error) so tests can assert on the controller's retry policy.

use crate::{LbNode, LbService, LbStatus, LoadBalancerProvider, ProviderError, ServiceKey};
use async_trait::async_trait;
use futures::stream::BoxStream;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::mpsc;

/// One recorded provider call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    /// `adopt` with the keys of the Services handed over.
    Adopt(Vec<ServiceKey>),
    /// `ensure` with the names of the nodes handed over.
    Ensure(ServiceKey, Vec<String>),
    /// `update` with the names of the nodes handed over.
    Update(ServiceKey, Vec<String>),
    /// `ensure_deleted`.
    EnsureDeleted(ServiceKey),
}

impl Call {
    /// The Service the call was about (none for `adopt`).
    pub fn key(&self) -> Option<&ServiceKey> {
        match self {
            Call::Adopt(_) => None,
            Call::Ensure(k, _) | Call::Update(k, _) | Call::EnsureDeleted(k) => Some(k),
        }
    }
}

#[derive(Default)]
struct State {
    calls: Vec<Call>,
    /// Errors to return from the next `ensure`/`update`/`ensure_deleted` calls, in order.
    failures: Vec<ProviderError>,
    /// Errors every `ensure` of these Services returns until cleared: a
    /// condition that lasts (an exhausted pool), unlike the one-shot `failures`.
    failing: HashMap<ServiceKey, ProviderError>,
    /// Fixed statuses per Service; otherwise one address from the counter.
    statuses: HashMap<ServiceKey, LbStatus>,
    assigned: HashMap<ServiceKey, LbStatus>,
    next: u32,
    /// Record calls without their node lists (benchmarks: 10,000 Services x 500 nodes of
    /// recorded names would dwarf the controller being measured).
    lean: bool,
    /// What `endpoints_use` answers (default: never).
    endpoints: crate::EndpointsUse,
    /// How many endpoints each Service's last `ensure` was given.
    endpoints_seen: HashMap<ServiceKey, usize>,
    /// How long each `ensure` takes (a slow appliance), before it is answered.
    ensure_delay: std::time::Duration,
}

/// A provider for tests that records calls and fails on request.
#[derive(Clone)]
pub struct MockProvider {
    class: String,
    state: Arc<Mutex<State>>,
    trigger_tx: mpsc::UnboundedSender<ServiceKey>,
    trigger_rx: Arc<Mutex<Option<mpsc::UnboundedReceiver<ServiceKey>>>>,
}

impl MockProvider {
    /// A mock that records calls without node names, for benchmarks.
    pub fn lean(class: impl Into<String>) -> Self {
        let m = Self::new(class);
        m.state().lean = true;
        m
    }

    /// A mock serving `class`, handing out addresses from 203.0.113.0 upwards
    /// (TEST-NET-3, so they never collide with a real network); it records every
    /// call with the node names it was given.
    pub fn new(class: impl Into<String>) -> Self {
        let (trigger_tx, trigger_rx) = mpsc::unbounded_channel();
        Self {
            class: class.into(),
            state: Arc::default(),
            trigger_tx,
            trigger_rx: Arc::new(Mutex::new(Some(trigger_rx))),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A poisoned lock means a test already panicked; keep its state readable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes the mock ask for endpoints (as f5's cluster mode and hostport's Local do).
    pub fn follow_endpoints(&self, use_: crate::EndpointsUse) {
        self.state().endpoints = use_;
    }

    /// Makes every `ensure` take `delay` (the Service is read before, as a real call).
    pub fn delay_ensures(&self, delay: std::time::Duration) {
        self.state().ensure_delay = delay;
    }

    /// How many endpoints the Service's last `ensure` was given.
    pub fn last_endpoints(&self, key: &ServiceKey) -> Option<usize> {
        self.state().endpoints_seen.get(key).copied()
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.state().calls.clone()
    }

    /// The calls about one Service.
    pub fn calls_for(&self, key: &ServiceKey) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.key() == Some(key))
            .collect()
    }

    /// Forgets the recorded calls.
    pub fn clear_calls(&self) {
        self.state().calls.clear();
    }

    /// Makes the next `n` mutating calls fail with `error`.
    pub fn fail_next(&self, n: usize, error: ProviderError) {
        let mut state = self.state();
        for _ in 0..n {
            state.failures.push(error.clone());
        }
    }

    /// Makes every `ensure` of `key` fail with `error` (or, with `None`, succeed
    /// again), for conditions that last until something else changes.
    pub fn fail_ensures_of(&self, key: ServiceKey, error: Option<ProviderError>) {
        let mut state = self.state();
        match error {
            Some(e) => state.failing.insert(key, e),
            None => state.failing.remove(&key),
        };
    }

    /// Publishes `status` for `key` instead of a counter address.
    pub fn set_status(&self, key: ServiceKey, status: LbStatus) {
        self.state().statuses.insert(key, status);
    }

    /// Asks the controller to reconcile `key` again, as a real provider's
    /// watch would.
    pub fn trigger(&self, key: ServiceKey) {
        // The receiver lives as long as the controller; a send after it is
        // gone is a test that already finished.
        let _ = self.trigger_tx.send(key);
    }

    fn take_failure(state: &mut State) -> Option<ProviderError> {
        if state.failures.is_empty() {
            None
        } else {
            Some(state.failures.remove(0))
        }
    }
}

fn node_names(nodes: &[LbNode]) -> Vec<String> {
    nodes.iter().map(|n| n.name.clone()).collect()
}

#[async_trait]
impl LoadBalancerProvider for MockProvider {
    fn class(&self) -> &str {
        &self.class
    }

    async fn adopt(&self, existing: &[LbService]) -> Vec<(ServiceKey, ProviderError)> {
        let mut state = self.state();
        state.calls.push(Call::Adopt(
            existing.iter().map(|s| s.key.clone()).collect(),
        ));
        for svc in existing {
            if !svc.current_ips.is_empty() {
                state
                    .assigned
                    .insert(svc.key.clone(), LbStatus::vips(svc.current_ips.clone()));
            }
        }
        Vec::new()
    }

    fn endpoints_use(&self) -> crate::EndpointsUse {
        self.state().endpoints
    }

    async fn ensure(&self, svc: &LbService, nodes: &[LbNode]) -> Result<LbStatus, ProviderError> {
        let delay = {
            let mut state = self.state();
            state
                .endpoints_seen
                .insert(svc.key.clone(), svc.endpoints.len());
            let names = node_list(&state, nodes);
            state.calls.push(Call::Ensure(svc.key.clone(), names));
            state.ensure_delay
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let mut state = self.state();
        if let Some(err) = Self::take_failure(&mut state) {
            return Err(err);
        }
        if let Some(err) = state.failing.get(&svc.key) {
            return Err(err.clone());
        }
        if let Some(status) = state.statuses.get(&svc.key).cloned() {
            state.assigned.insert(svc.key.clone(), status.clone());
            return Ok(status);
        }
        if let Some(status) = state.assigned.get(&svc.key) {
            return Ok(status.clone());
        }
        let n = state.next;
        state.next += 1;
        let ip = IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(203, 0, 113, 0)) + n));
        let status = LbStatus::vips([ip]);
        state.assigned.insert(svc.key.clone(), status.clone());
        Ok(status)
    }

    async fn update(&self, svc: &LbService, nodes: &[LbNode]) -> Result<(), ProviderError> {
        let mut state = self.state();
        let names = node_list(&state, nodes);
        state.calls.push(Call::Update(svc.key.clone(), names));
        match Self::take_failure(&mut state) {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    async fn ensure_deleted(&self, svc: &LbService) -> Result<(), ProviderError> {
        let mut state = self.state();
        state.calls.push(Call::EnsureDeleted(svc.key.clone()));
        if let Some(err) = Self::take_failure(&mut state) {
            return Err(err);
        }
        state.assigned.remove(&svc.key);
        Ok(())
    }

    fn triggers(&self) -> Option<BoxStream<'static, ServiceKey>> {
        let rx = self
            .trigger_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()?;
        Some(Box::pin(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|k| (k, rx))
        })))
    }
}

fn node_list(state: &State, nodes: &[LbNode]) -> Vec<String> {
    if state.lean {
        Vec::new()
    } else {
        node_names(nodes)
    }
}
