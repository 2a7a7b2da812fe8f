//! Fault injection and the write log: the two instruments of reliability tests.
//!
//! Faults act on HTTP requests only; the simulated kubelet and DaemonSet controller keep
//! working, like the real control plane does while one client's requests fail.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;

#[derive(Debug, Default)]
struct FaultState {
    fail_next: u64,
    fail_code: u16,
    fraction: f64,
    fraction_code: u16,
    latency: Duration,
    resource_failures: Vec<(String, u16)>,
    object_failures: Vec<(ObjectTarget, u16)>,
    expire_watches: u64,
}

/// One object's writes: plural resource, subresource (`""` for the object itself) and name.
type ObjectTarget = (String, String, String);

/// Switches for failures the real API server shows under load or during upgrades.
#[derive(Debug)]
pub struct Faults {
    state: Mutex<FaultState>,
    drops: watch::Sender<u64>,
    generation: AtomicU64,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            state: Mutex::default(),
            drops: watch::channel(0).0,
            generation: AtomicU64::new(0),
        }
    }
}

impl Faults {
    fn state(&self) -> std::sync::MutexGuard<'_, FaultState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ends every open watch stream at once (an API server restart, a load balancer reset).
    pub fn drop_watches(&self) {
        let g = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        self.drops.send_replace(g);
    }

    /// Answers the next `n` watches that resume from a resourceVersion with `410 Expired`,
    /// as a real server does after etcd compaction, however small the gap: clients must
    /// relist. Deterministic, unlike racing writes against a small history.
    pub fn expire_next_watches(&self, n: u64) {
        self.state().expire_watches = n;
    }

    /// How many of the watches [`Faults::expire_next_watches`] asked for are still to come.
    pub fn expired_watches_pending(&self) -> u64 {
        self.state().expire_watches
    }

    /// Whether this resuming watch is to be answered `410` (counts it down).
    pub(crate) fn take_expired_watch(&self) -> bool {
        let mut s = self.state();
        let hit = s.expire_watches > 0;
        s.expire_watches = s.expire_watches.saturating_sub(1);
        hit
    }

    /// Answers the next `n` write requests with `code` (500 or 409 are typical).
    pub fn fail_next_writes(&self, n: u64, code: u16) {
        let mut s = self.state();
        s.fail_next = n;
        s.fail_code = code;
    }

    /// Answers this fraction (0.0-1.0) of write requests with `code`, until set back to 0.
    pub fn fail_fraction(&self, fraction: f64, code: u16) {
        let mut s = self.state();
        s.fraction = fraction.clamp(0.0, 1.0);
        s.fraction_code = code;
    }

    /// Fails every write to one resource (e.g. `leases`) with `code` until cleared with
    /// [`Faults::clear`]; models an etcd problem behind one resource.
    pub fn fail_resource_writes(&self, resource: &str, code: u16) {
        self.state()
            .resource_failures
            .push((resource.to_string(), code));
    }

    /// Fails every write to one object (`subresource` `""` for the object itself, `"status"`
    /// for its status) with `code` until cleared with [`Faults::clear`]: one Service whose
    /// writes keep failing while the rest of the cluster works holds a controller between
    /// two of its writes, where a restart or another Service's reconcile can meet it.
    pub fn fail_object_writes(&self, resource: &str, subresource: &str, name: &str, code: u16) {
        let target = (
            resource.to_string(),
            subresource.to_string(),
            name.to_string(),
        );
        self.state().object_failures.push((target, code));
    }

    /// Adds latency to every request.
    pub fn set_latency(&self, latency: Duration) {
        self.state().latency = latency;
    }

    /// Removes every injected fault.
    pub fn clear(&self) {
        *self.state() = FaultState::default();
    }

    pub(crate) fn latency(&self) -> Duration {
        self.state().latency
    }

    pub(crate) fn drops(&self) -> watch::Receiver<u64> {
        self.drops.subscribe()
    }

    /// The status code to fail this write with, if any.
    pub(crate) fn write_failure(
        &self,
        resource: &str,
        subresource: &str,
        name: &str,
    ) -> Option<u16> {
        let mut s = self.state();
        if let Some((_, code)) = s.resource_failures.iter().find(|(r, _)| r == resource) {
            return Some(*code);
        }
        let object = |(r, sub, n): &ObjectTarget| r == resource && sub == subresource && n == name;
        if let Some((_, code)) = s.object_failures.iter().find(|(t, _)| object(t)) {
            return Some(*code);
        }
        if s.fail_next > 0 {
            s.fail_next -= 1;
            return Some(s.fail_code);
        }
        if s.fraction > 0.0 && rand::random::<f64>() < s.fraction {
            return Some(s.fraction_code);
        }
        None
    }
}

/// One accepted write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteRecord {
    /// The authenticated user (`admin`, the name given to `client_as`, `system:sim` for the
    /// simulated controllers).
    pub user: String,
    /// `create`, `update`, `patch` or `delete`.
    pub verb: String,
    /// Plural resource name, e.g. `services`.
    pub resource: String,
    /// Subresource, e.g. `status`, or empty.
    pub subresource: String,
    /// Namespace, empty for cluster-scoped objects.
    pub namespace: String,
    /// Object name.
    pub name: String,
    /// When it was accepted.
    pub at: Instant,
}

/// Every accepted write, in order, so tests can count them per object and per user.
#[derive(Debug, Default)]
pub struct WriteLog {
    records: Mutex<Vec<WriteRecord>>,
}

impl WriteLog {
    fn records(&self) -> std::sync::MutexGuard<'_, Vec<WriteRecord>> {
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn push(&self, r: WriteRecord) {
        self.records().push(r);
    }

    /// All writes so far.
    pub fn all(&self) -> Vec<WriteRecord> {
        self.records().clone()
    }

    /// Writes to one object (any subresource) by anyone but the simulated controllers.
    pub fn count_for(&self, resource: &str, namespace: &str, name: &str) -> usize {
        self.records()
            .iter()
            .filter(|r| {
                r.resource == resource
                    && r.namespace == namespace
                    && r.name == name
                    && r.user != crate::store::SYSTEM_USER
            })
            .count()
    }

    /// Writes by one user.
    pub fn by_user(&self, user: &str) -> Vec<WriteRecord> {
        self.records()
            .iter()
            .filter(|r| r.user == user)
            .cloned()
            .collect()
    }

    /// Forgets everything recorded so far (to measure one phase of a test).
    pub fn reset(&self) {
        self.records().clear();
    }
}
