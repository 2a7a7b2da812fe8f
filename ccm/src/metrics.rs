//! Prometheus metrics of the controller, under the `portway_` prefix.
//!
//! One registry per process, handed to every part that records something;
//! `/metrics` encodes it in the Prometheus text format. Labels are small,
//! bounded sets (result, class, operation, error kind) so the series count
//! stays flat however many Services there are.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    class: String,
    op: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    class: String,
    op: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UserErrorLabels {
    class: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    pool: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// Every metric the controller records.
pub struct Metrics {
    registry: Mutex<Registry>,
    reconciles: Family<ResultLabels, Counter>,
    reconcile_seconds: Family<ResultLabels, Histogram, fn() -> Histogram>,
    provider_calls: Family<CallLabels, Counter>,
    provider_call_seconds: Family<OpLabels, Histogram, fn() -> Histogram>,
    in_flight: Gauge,
    retries_pending: Gauge,
    user_errors: Family<UserErrorLabels, Counter>,
    leader: Gauge,
    pool_total: Family<PoolLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pool_in_use: Family<PoolLabels, Gauge>,
    pool_failures: Family<PoolLabels, Gauge>,
    node_overlaps: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("portway");
        let reconciles = Family::<ResultLabels, Counter>::default();
        registry.register(
            "service_reconciles",
            "Service reconciles by result",
            reconciles.clone(),
        );
        let reconcile_seconds =
            Family::<ResultLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        registry.register(
            "service_reconcile_duration_seconds",
            "Time spent in one Service reconcile, by result",
            reconcile_seconds.clone(),
        );
        let provider_calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "provider_calls",
            "Provider calls by class, operation and result",
            provider_calls.clone(),
        );
        let provider_call_seconds =
            Family::<OpLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        registry.register(
            "provider_call_duration_seconds",
            "Time one provider call took (middleware included), by class and operation",
            provider_call_seconds.clone(),
        );
        // kube-runtime's scheduler does not expose its queue; these two are the
        // work the controller knows is under way or due.
        let in_flight = Gauge::default();
        registry.register(
            "service_reconciles_in_flight",
            "Service reconciles running now (bounded by --concurrent-service-syncs)",
            in_flight.clone(),
        );
        let retries_pending = Gauge::default();
        registry.register(
            "service_retries_pending",
            "Services waiting for a retry after a transient error or an exhausted pool",
            retries_pending.clone(),
        );
        let user_errors = Family::<UserErrorLabels, Counter>::default();
        registry.register(
            "service_user_errors",
            "Needs-a-fix errors reported on Services, by class and kind",
            user_errors.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this process holds the controller lease",
            leader.clone(),
        );
        let node_overlaps = Gauge::default();
        registry.register(
            "ipam_node_address_overlaps",
            "Nodes' own addresses that lie in a pool (never handed out; take them out of the pool)",
            node_overlaps.clone(),
        );
        let pool_total = Family::default();
        registry.register(
            "ipam_addresses_total",
            "Addresses in each pool",
            pool_total.clone(),
        );
        let pool_in_use = Family::default();
        registry.register(
            "ipam_addresses_in_use",
            "Addresses assigned to Services in each pool",
            pool_in_use.clone(),
        );
        let pool_failures = Family::default();
        registry.register(
            "ipam_allocation_failures",
            "Allocations refused by each pool since start",
            pool_failures.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            reconciles,
            reconcile_seconds,
            provider_calls,
            provider_call_seconds,
            in_flight,
            retries_pending,
            user_errors,
            leader,
            pool_total,
            pool_in_use,
            pool_failures,
            node_overlaps,
        }
    }

    /// Counts one reconcile and its duration.
    pub fn observe_reconcile(&self, result: &str, took: Duration) {
        let labels = ResultLabels {
            result: result.to_string(),
        };
        self.reconciles.get_or_create(&labels).inc();
        self.reconcile_seconds
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// Counts one provider call and its duration.
    pub fn observe_provider_call(&self, class: &str, op: &str, ok: bool, took: Duration) {
        self.provider_call_seconds
            .get_or_create(&OpLabels {
                class: class.to_string(),
                op: op.to_string(),
            })
            .observe(took.as_secs_f64());
        self.provider_calls
            .get_or_create(&CallLabels {
                class: class.to_string(),
                op: op.to_string(),
                result: if ok { "ok" } else { "error" }.to_string(),
            })
            .inc();
    }

    /// Marks a reconcile started (`true`) or finished (`false`).
    pub fn reconcile_running(&self, started: bool) {
        if started {
            self.in_flight.inc();
        } else {
            self.in_flight.dec();
        }
    }

    /// Records how many Services wait for a retry.
    pub fn set_retries_pending(&self, n: usize) {
        self.retries_pending
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Counts one needs-a-fix error reported on a Service.
    pub fn observe_user_error(&self, class: &str, kind: &str) {
        self.user_errors
            .get_or_create(&UserErrorLabels {
                class: class.to_string(),
                kind: kind.to_string(),
            })
            .inc();
    }

    /// Records whether this process leads.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Records how many nodes' own addresses lie in pools.
    pub fn set_node_overlaps(&self, n: usize) {
        self.node_overlaps.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Records one pool's figures.
    pub fn set_pool(&self, pool: &str, total: f64, in_use: u64, failures: u64) {
        let labels = PoolLabels {
            pool: pool.to_string(),
        };
        self.pool_total.get_or_create(&labels).set(total);
        self.pool_in_use
            .get_or_create(&labels)
            .set(i64::try_from(in_use).unwrap_or(i64::MAX));
        self.pool_failures
            .get_or_create(&labels)
            .set(i64::try_from(failures).unwrap_or(i64::MAX));
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_with_prefix() {
        let m = Metrics::new();
        m.observe_reconcile("ok", Duration::from_millis(3));
        m.observe_provider_call("portway.dev/l2", "ensure", true, Duration::from_millis(20));
        m.set_pool("lan", 11.0, 2, 0);
        m.reconcile_running(true);
        m.reconcile_running(true);
        m.reconcile_running(false);
        m.set_retries_pending(4);
        let text = m.encode();
        assert!(
            text.contains("portway_service_reconciles_total{result=\"ok\"} 1"),
            "{text}"
        );
        assert!(text.contains("portway_provider_calls_total{class=\"portway.dev/l2\",op=\"ensure\",result=\"ok\"} 1"), "{text}");
        assert!(
            text.contains("portway_ipam_addresses_in_use{pool=\"lan\"} 2"),
            "{text}"
        );
        assert!(text.contains("portway_provider_call_duration_seconds_count{class=\"portway.dev/l2\",op=\"ensure\"} 1"), "{text}");
        assert!(
            text.contains("portway_service_reconciles_in_flight 1"),
            "{text}"
        );
        assert!(text.contains("portway_service_retries_pending 4"), "{text}");
    }
}
