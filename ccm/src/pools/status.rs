//! Each AddressPool's status: addresses total / in use / free per family from the running
//! allocator, the Services holding addresses outside every pool, the reasons a pool is
//! left out and the addresses of it two Services claim (its conflicts), and the `Ready`
//! condition. Written with a merge patch of the status
//! subresource, only when it changed, checked every `every`.

use super::merge::Merged;
use super::watch::Caches;
use crate::crd::{AddressPool, AddressPoolStatus, FamilyCounts};
use crate::k8s::{Api, Client, Patch, PatchParams, ResourceExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use portway_provider::ipam::{Contest, PoolStats, VipManager};
use std::collections::BTreeMap;
use std::time::Duration;
use tracing::warn;

/// The status a pool should show now (without transition times, which [`write_loop`] keeps).
pub fn compute(
    pool: &AddressPool,
    merged: &Merged,
    stats: &[PoolStats],
    outside: &[String],
    contests: &[Contest],
) -> AddressPoolStatus {
    let name = pool.name_any();
    let mut conflicts = merged
        .refused
        .get(&name)
        .map(|r| r.problems.clone())
        .unwrap_or_default();
    conflicts.extend(
        contests
            .iter()
            .filter(|c| c.pool.as_deref() == Some(name.as_str()))
            .map(|c| {
                format!(
                    "address {} claimed by two Services: {} holds it, {} was refused \
                     (change one Service's requested address or let them share it)",
                    c.ip, c.holder, c.claimant
                )
            }),
    );
    let mine = stats.iter().find(|s| s.name == name);
    let family = |f: usize| {
        mine.filter(|s| s.total_by_family[f] > 0).map(|s| {
            let used = s.in_use_by_family[f];
            FamilyCounts {
                total: s.total_by_family[f].to_string(),
                in_use: i64::try_from(used).unwrap_or(i64::MAX),
                free: s.total_by_family[f]
                    .saturating_sub(u128::from(used))
                    .to_string(),
            }
        })
    };
    let refusal = merged.refused.get(&name);
    let (status, reason, message) = match (refusal, mine) {
        (Some(r), _) => ("False", r.reason, r.problems.join("; ")),
        (None, Some(_)) => (
            "True",
            "Allocating",
            "the allocator uses this pool".to_string(),
        ),
        (None, None) => ("Unknown", "Pending", "not applied yet".to_string()),
    };
    AddressPoolStatus {
        in_use: mine.map_or(0, |s| i64::try_from(s.in_use).unwrap_or(i64::MAX)),
        ipv4: family(0),
        ipv6: family(1),
        outside_pools: outside.to_vec(),
        conflicts,
        conditions: vec![Condition {
            type_: "Ready".into(),
            status: status.into(),
            reason: reason.into(),
            message,
            observed_generation: pool.metadata.generation,
            last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
        }],
        observed_generation: pool.metadata.generation,
    }
}

/// What the status writer follows, cloned from [`super::watch::LivePools`].
pub struct Watched {
    /// Applied pool changes.
    pub changes: tokio::sync::watch::Receiver<u64>,
    /// The last merge.
    pub merged: tokio::sync::watch::Receiver<Merged>,
    /// The resources.
    pub caches: Caches,
}

impl Watched {
    /// What to follow of a running [`super::watch::LivePools`].
    pub fn of(live: &super::watch::LivePools) -> Self {
        Self {
            changes: live.changes.clone(),
            merged: live.merged.clone(),
            caches: live.caches.clone(),
        }
    }
}

/// Keeps every pool's status current until dropped.
pub async fn write_loop(client: Client, live: &Watched, vips: VipManager, every: Duration) {
    let api: Api<AddressPool> = Api::all(client);
    // Per pool: the last status written, and when its Ready status last changed.
    let mut written: BTreeMap<String, AddressPoolStatus> = BTreeMap::new();
    let mut merged = live.merged.clone();
    let mut changes = live.changes.clone();
    loop {
        let stats = vips.stats();
        let outside: Vec<String> = vips
            .orphans()
            .into_iter()
            .filter_map(|(k, e)| match e {
                portway_provider::ProviderError::Orphaned { ip } => Some(format!("{k} {ip}")),
                _ => None,
            })
            .collect();
        let contests = vips.contests();
        let snapshot = merged.borrow_and_update().clone();
        for pool in live.caches.pools.state() {
            let name = pool.name_any();
            let mut want = compute(&pool, &snapshot, &stats, &outside, &contests);
            let before = written.get(&name);
            let same_ready = |b: &AddressPoolStatus| {
                b.conditions.first().map(|c| (&c.status, &c.reason))
                    == want.conditions.first().map(|c| (&c.status, &c.reason))
            };
            let time = match before.and_then(|b| b.conditions.first()) {
                Some(c) if before.is_some_and(same_ready) => c.last_transition_time.clone(),
                // Whole seconds, as the server keeps them.
                _ => Time(
                    k8s_openapi::jiff::Timestamp::from_second(
                        k8s_openapi::jiff::Timestamp::now().as_second(),
                    )
                    .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
                ),
            };
            // `compute` always makes exactly one condition.
            if let Some(c) = want.conditions.first_mut() {
                c.last_transition_time = time;
            }
            // Written already; a status wiped by someone else is rewritten on the next change.
            if before == Some(&want) {
                continue;
            }
            let body = serde_json::json!({
                "status": {
                    "inUse": want.in_use,
                    "ipv4": want.ipv4,
                    "ipv6": want.ipv6,
                    "outsidePools": want.outside_pools,
                    "conflicts": want.conflicts,
                    "conditions": want.conditions,
                    "observedGeneration": want.observed_generation,
                }
            });
            match api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&body))
                .await
            {
                Ok(_) => {
                    written.insert(name, want);
                }
                Err(e) => warn!(pool = %name, %e, "could not write the pool's status"),
            }
        }
        written.retain(|n, _| {
            live.caches
                .pools
                .get(&kube::runtime::reflector::ObjectRef::new(n))
                .is_some()
        });
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = changes.changed() => {}
            _ = merged.changed() => {}
        }
    }
}
