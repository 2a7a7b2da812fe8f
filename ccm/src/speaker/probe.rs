//! Whether this node reaches the API server now, measured rather than inferred.
//!
//! A watch on a silently cut link (packets dropped, no reset) reports no error for
//! minutes, so a speaker that judged reachability by its watches alone would keep
//! claiming the API and, through the L2 split-brain rule, keep announcing from the
//! wrong side of a partition. The probe asks `/version` every `every` with the same
//! bound, and counts the API reachable only while the last answer is younger than
//! `fresh_for`.

use kube::Client;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// Asks every second, with a one-second bound.
pub const EVERY: Duration = Duration::from_secs(1);

/// Three missed answers make the API unreachable: one lost packet does not
/// hand the decision to gossip, a real cut does within 3-4 s.
pub const FRESH_FOR: Duration = Duration::from_secs(3);

/// A running probe; dropping it stops the task.
pub struct ApiProbe {
    epoch: Instant,
    last_ok_ms: Arc<AtomicU64>,
    fresh_for: Duration,
    task: JoinHandle<()>,
}

impl ApiProbe {
    /// Starts probing; `changed` is notified whenever reachability flips, so the
    /// speaker recomputes at once instead of at its next periodic pass. The API
    /// counts as reachable at start: the caller has just synced its caches.
    pub fn start(
        client: Client,
        every: Duration,
        fresh_for: Duration,
        changed: Arc<Notify>,
    ) -> Self {
        let epoch = Instant::now();
        let last_ok_ms = Arc::new(AtomicU64::new(0));
        let last = last_ok_ms.clone();
        let task = tokio::spawn(async move {
            let mut reported = true;
            loop {
                let answered = tokio::time::timeout(every, client.apiserver_version())
                    .await
                    .is_ok_and(|r| r.is_ok());
                if answered {
                    last.store(millis_since(epoch), Ordering::Relaxed);
                }
                let now = fresh(epoch, &last, fresh_for);
                if std::mem::replace(&mut reported, now) != now {
                    if now {
                        tracing::info!("API server answers again");
                    } else {
                        tracing::warn!(
                            ?fresh_for,
                            "API server unanswered; L2 ownership falls back to gossip quorum"
                        );
                    }
                    changed.notify_one();
                }
                tokio::time::sleep(every).await;
            }
        });
        Self {
            epoch,
            last_ok_ms,
            fresh_for,
            task,
        }
    }

    /// Whether the API server answered within `fresh_for`.
    pub fn reachable(&self) -> bool {
        fresh(self.epoch, &self.last_ok_ms, self.fresh_for)
    }
}

impl Drop for ApiProbe {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn millis_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

fn fresh(epoch: Instant, last_ok_ms: &AtomicU64, fresh_for: Duration) -> bool {
    let age = millis_since(epoch).saturating_sub(last_ok_ms.load(Ordering::Relaxed));
    Duration::from_millis(age) <= fresh_for
}

#[cfg(test)]
mod tests {
    use super::*;
    use portway_sim::SimCluster;

    async fn until(probe: &ApiProbe, want: bool) -> bool {
        for _ in 0..100 {
            if probe.reachable() == want {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    #[tokio::test]
    async fn a_silent_api_becomes_unreachable_and_recovers() {
        let sim = SimCluster::start().await.expect("sim");
        let changed = Arc::new(Notify::new());
        let every = Duration::from_millis(100);
        let probe = ApiProbe::start(
            sim.client(),
            every,
            Duration::from_millis(400),
            changed.clone(),
        );
        assert!(probe.reachable());
        // Requests hang, as on a cut link where nothing answers and nothing resets.
        sim.faults().set_latency(Duration::from_secs(30));
        assert!(
            until(&probe, false).await,
            "a hanging API still counted as reachable"
        );
        tokio::time::timeout(Duration::from_secs(1), changed.notified())
            .await
            .expect("the flip woke the speaker");
        sim.faults().clear();
        assert!(until(&probe, true).await, "the API answers again");
        sim.shutdown().await;
    }
}
