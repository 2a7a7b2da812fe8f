//! When the speaker loop runs its next pass after a watch reported a change.
//!
//! A fixed wait after every change (the loop's first design: 50 ms) put that wait into
//! every announcement, even a lone change on an idle cluster. Passes are incremental now
//! (one change costs its own Service), so the wait only has to bound how often a pass
//! runs under a burst: a change that arrives when the last pass began at least
//! [`COALESCE`] ago is handled at once; one that arrives sooner waits for the rest of
//! that [`COALESCE`], and everything that arrived meanwhile shares the pass. A change
//! thus waits at most [`COALESCE`], and a burst costs at most one pass per [`COALESCE`].

use std::time::Duration;
use tokio::time::Instant;

/// The least time between the starts of two passes the watches asked for.
pub(crate) const COALESCE: Duration = Duration::from_millis(50);

/// How long to wait before the next pass, `now`, when the last one began at `last_pass`.
pub(crate) fn wait_before_pass(last_pass: Instant, now: Instant) -> Duration {
    (last_pass + COALESCE).saturating_duration_since(now)
}

/// Waits as [`wait_before_pass`] says (not at all after an idle spell).
pub(crate) async fn before_pass(last_pass: Instant) {
    let wait = wait_before_pass(last_pass, Instant::now());
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            before_pass(last).await;
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
