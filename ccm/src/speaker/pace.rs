//! When the speaker loop runs its next pass after a watch reported a change.
//!
//! A fixed wait after every change (the loop's first design: 50 ms) put that wait into
//! every announcement, even a lone change on an idle cluster. Passes are incremental now
//! (one change costs its own Service), so the wait only has to bound how often a pass
//! runs under a burst: a change that arrives when the last pass began at least
//! [`COALESCE`] ago is handled at once; one that arrives sooner waits for the rest of
//! that [`COALESCE`], and everything that arrived meanwhile shares the pass. A change
//! thus waits at most [`COALESCE`], and a burst costs at most one pass per [`COALESCE`].
//!
//! One kind of change does not wait: a Service with an l2 address no Service held before
//! (the watch's tap checks the loop's address index, `l2_vips::Holders`). Its owner
//! probes the address before answering for it (RFC 5227, `PROBE_WAIT`), so a wait here
//! came on top of the probe's; such changes are few (a new Service or address), and a
//! burst of them still shares passes, each taking what arrived during the one before.

use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// The least time between the starts of two passes the watches asked for.
pub(crate) const COALESCE: Duration = Duration::from_millis(50);

/// How long to wait before the next pass, `now`, when the last one began at `last_pass`.
pub(crate) fn wait_before_pass(last_pass: Instant, now: Instant) -> Duration {
    (last_pass + COALESCE).saturating_duration_since(now)
}

/// Waits as [`wait_before_pass`] says (not at all after an idle spell), or until
/// `urgent` is notified: a change that brings a new l2 address (its owner must probe it
/// for [`portway_l2::responder::PROBE_WAIT`] before answering, so a wait here would add
/// to that) runs the pass at once. Such changes are rare (a new Service or address);
/// the frequent ones (endpoints, annotations) still share a window.
pub(crate) async fn before_pass(last_pass: Instant, urgent: &Notify) {
    let wait = wait_before_pass(last_pass, Instant::now());
    if !wait.is_zero() {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = urgent.notified() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_urgent_change_cuts_the_window_short_and_one_that_came_first_skips_it() {
        let urgent = Notify::new();
        let start = Instant::now();
        // Mid-window, an urgent change arrives 5 ms into the wait.
        let waited = async {
            before_pass(start, &urgent).await;
            Instant::now() - start
        };
        let notify = async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            urgent.notify_one();
        };
        let (waited, ()) = tokio::join!(waited, notify);
        assert_eq!(waited, Duration::from_millis(5));
        // One that arrived before the wait began (it woke the loop): no wait at all.
        urgent.notify_one();
        let t = Instant::now();
        before_pass(t, &urgent).await;
        assert_eq!(Instant::now(), t);
        // Without one, the whole window.
        before_pass(t, &urgent).await;
        assert_eq!(Instant::now() - t, COALESCE);
    }

    #[test]
    fn a_change_after_an_idle_spell_runs_at_once_one_in_a_burst_waits_out_the_window() {
        let t0 = Instant::now();
        // Idle: the last pass began long ago.
        assert_eq!(
            wait_before_pass(t0, t0 + Duration::from_secs(5)),
            Duration::ZERO
        );
        assert_eq!(wait_before_pass(t0, t0 + COALESCE), Duration::ZERO);
        // A burst: 10 ms after a pass began, the rest of the window.
        assert_eq!(
            wait_before_pass(t0, t0 + Duration::from_millis(10)),
            COALESCE - Duration::from_millis(10)
        );
        assert_eq!(wait_before_pass(t0, t0), COALESCE);
    }

    #[tokio::test(start_paused = true)]
    async fn passes_under_a_steady_stream_are_at_most_one_per_window() {
        // A change every 10 ms for a second: the loop's passes, as the loop runs them.
        let start = Instant::now();
        let mut passes = vec![];
        let mut last = start - COALESCE;
        let mut waited_longest = Duration::ZERO;
        for k in 0..100u32 {
            let change = start + Duration::from_millis(10) * k;
            if change < Instant::now() {
                continue; // it arrived during the wait: it shares that pass
            }
            tokio::time::sleep_until(change).await;
            before_pass(last, &Notify::new()).await;
            last = Instant::now();
            waited_longest = waited_longest.max(last - change);
            passes.push(last);
        }
        assert!(passes.len() <= 21, "{} passes", passes.len());
        assert!(passes.windows(2).all(|w| w[1] - w[0] >= COALESCE));
        assert!(waited_longest <= COALESCE);
        // The first change, after an idle spell, did not wait.
        assert_eq!(passes[0], start);
    }
}
