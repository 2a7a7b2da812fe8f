//! A fair work queue, client-go's `workqueue` in small: Services are served in the order
//! they became due, each at most once at a time, and one that changes while it is being
//! reconciled is reconciled again right after.
//!
//! kube-runtime's `Controller` schedules through a delay queue whose entries due at the same
//! instant come out in no particular order: under a burst (10,000 creates) the oldest keys
//! could wait behind the newest, which is what made the controller's p99 three times the
//! bare client's while its median matched (issue 21). Here the order is the order of
//! arrival: a key already queued keeps its place; a key added while it is processing is
//! marked dirty and queued again when it is done; delayed keys (retries) join the back of
//! the queue when their time comes.
//!
//! ```text
//!   add(k) ──► queued? keep place : processing? mark dirty : push back
//!   next() ──► pop front (moving due delayed keys in first), mark processing
//!   done(k) ─► dirty? push back
//! ```

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

struct Inner<K> {
    queue: VecDeque<K>,
    queued: HashSet<K>,
    processing: HashSet<K>,
    dirty: HashSet<K>,
    /// Keys to add at a time (retries, periodic requeues), by deadline then arrival.
    delayed: BTreeMap<(Instant, u64), K>,
    seq: u64,
    closed: bool,
}

/// What a reconcile asks of the queue when it is done with a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Action(Option<Duration>);

impl Action {
    /// Nothing until the Service (or something it depends on) changes.
    pub const fn await_change() -> Self {
        Self(None)
    }

    /// Again after `delay` (a retry with backoff, a wait for a release).
    pub const fn requeue(delay: Duration) -> Self {
        Self(Some(delay))
    }

    /// When to reconcile again without a change, if at all.
    pub fn requeue_after(&self) -> Option<Duration> {
        self.0
    }
}

/// The queue; share it behind an `Arc`.
pub struct WorkQueue<K> {
    inner: Mutex<Inner<K>>,
    ready: Notify,
}

impl<K: Clone + Eq + Hash> Default for WorkQueue<K> {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Inner {
                queue: VecDeque::new(),
                queued: HashSet::new(),
                processing: HashSet::new(),
                dirty: HashSet::new(),
                delayed: BTreeMap::new(),
                seq: 0,
                closed: false,
            }),
            ready: Notify::new(),
        }
    }
}

impl<K: Clone + Eq + Hash> WorkQueue<K> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<K>> {
        // No code path panics while holding it; recover the data anyway.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `key` due now.
    pub fn add(&self, key: K) {
        let mut q = self.lock();
        if q.closed || q.queued.contains(&key) {
            return;
        }
        if q.processing.contains(&key) {
            q.dirty.insert(key);
            return;
        }
        q.queued.insert(key.clone());
        q.queue.push_back(key);
        drop(q);
        self.ready.notify_one();
    }

    /// Makes `key` due after `delay`.
    pub fn add_after(&self, key: K, delay: Duration) {
        if delay.is_zero() {
            return self.add(key);
        }
        let mut q = self.lock();
        if q.closed {
            return;
        }
        q.seq += 1;
        let at = (Instant::now() + delay, q.seq);
        q.delayed.insert(at, key);
        drop(q);
        // A worker waiting may need to wake earlier than it planned.
        self.ready.notify_one();
    }

    /// The next due key, marked as processing; `None` once the queue is closed and empty.
    pub async fn next(&self) -> Option<K> {
        loop {
            let wake_at = {
                let mut q = self.lock();
                let now = Instant::now();
                while let Some(entry) = q.delayed.first_entry() {
                    if entry.key().0 > now {
                        break;
                    }
                    let key = entry.remove();
                    if !q.queued.contains(&key) {
                        if q.processing.contains(&key) {
                            q.dirty.insert(key);
                        } else {
                            q.queued.insert(key.clone());
                            q.queue.push_back(key);
                        }
                    }
                }
                if let Some(key) = q.queue.pop_front() {
                    q.queued.remove(&key);
                    q.processing.insert(key.clone());
                    if !q.queue.is_empty() {
                        // Another worker may take the next one.
                        self.ready.notify_one();
                    }
                    return Some(key);
                }
                if q.closed {
                    // Wake the next worker in line, which sees the same.
                    self.ready.notify_one();
                    return None;
                }
                q.delayed.first_key_value().map(|((at, _), _)| *at)
            };
            match wake_at {
                Some(at) => {
                    let _ = tokio::time::timeout_at(at, self.ready.notified()).await;
                }
                None => self.ready.notified().await,
            }
        }
    }

    /// `key` is reconciled; if it changed meanwhile it is queued again.
    pub fn done(&self, key: &K) {
        let mut q = self.lock();
        q.processing.remove(key);
        if q.dirty.remove(key) && !q.closed {
            q.queued.insert(key.clone());
            q.queue.push_back(key.clone());
            drop(q);
            self.ready.notify_one();
        }
    }

    /// No key is handed out any more; workers drain out.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_waiters();
        self.ready.notify_one();
    }

    /// Keys queued now (not the delayed ones), for metrics.
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a key is queued or being processed: the controller is at work (its event
    /// writer gives way then).
    pub fn is_busy(&self) -> bool {
        let q = self.lock();
        !q.queue.is_empty() || !q.processing.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keys_come_out_in_arrival_order_once_each() {
        let q = WorkQueue::default();
        for k in [3, 1, 2, 1, 3] {
            q.add(k);
        }
        assert_eq!(q.len(), 3, "a queued key keeps its place");
        assert_eq!(q.next().await, Some(3));
        assert_eq!(q.next().await, Some(1));
        assert_eq!(q.next().await, Some(2));
    }

    #[tokio::test]
    async fn a_key_changed_while_processing_comes_back_after_done() {
        let q = WorkQueue::default();
        q.add("a");
        assert_eq!(q.next().await, Some("a"));
        q.add("a");
        q.add("b");
        assert_eq!(
            q.next().await,
            Some("b"),
            "a is not handed out twice at once"
        );
        q.done(&"a");
        assert_eq!(q.next().await, Some("a"));
    }

    #[tokio::test]
    async fn busy_while_a_key_is_queued_or_processing() {
        let q = WorkQueue::default();
        assert!(!q.is_busy());
        q.add("a");
        assert!(q.is_busy(), "queued");
        assert_eq!(q.next().await, Some("a"));
        assert!(q.is_empty() && q.is_busy(), "processing");
        q.done(&"a");
        assert!(!q.is_busy());
    }

    #[tokio::test(start_paused = true)]
    async fn delayed_keys_join_the_back_when_due() {
        let q = WorkQueue::default();
        q.add_after("late", Duration::from_secs(5));
        q.add("now");
        assert_eq!(q.next().await, Some("now"));
        q.done(&"now");
        let started = Instant::now();
        assert_eq!(q.next().await, Some("late"));
        assert!(started.elapsed() >= Duration::from_secs(5));
    }

    #[tokio::test]
    async fn close_drains_the_workers() {
        let q = std::sync::Arc::new(WorkQueue::<u32>::default());
        let worker = {
            let q = q.clone();
            tokio::spawn(async move { q.next().await })
        };
        tokio::task::yield_now().await;
        q.close();
        assert_eq!(worker.await.expect("joins"), None);
    }
}
