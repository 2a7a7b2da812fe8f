//! The pools the allocator uses: the configuration file's, then every valid `AddressPool`
//! resource that does not clash with them. Pure, so the rules are tested without a cluster.
//!
//! Which wins (docs/configuration.md#pools-as-resources): the file, always — a resource
//! named like a file pool, or overlapping one, is left out; between two resources the older
//! one (creation time, then name) wins. A resource left out keeps its Services' addresses
//! (nothing is ever moved) and says why in its status (`Ready=False`, `conflicts`).

use crate::crd::{AddressPool, BGPAdvertisement, L2AnnouncementPolicy};
use kube::ResourceExt;
use portway_provider::ipam::{LabelSelector, PoolConfig, ServiceAllocation, validate_pools};
use std::collections::BTreeMap;

/// Why a resource is not in the allocator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The condition reason: `NameTaken`, `Overlap` or `Invalid`.
    pub reason: &'static str,
    /// Every problem, each naming the field (`spec.addresses[0]`) or the other pool.
    pub problems: Vec<String>,
}

/// The merged pool list and the verdict on every resource.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Merged {
    /// File pools first, then accepted resources (oldest first).
    pub pools: Vec<PoolConfig>,
    /// Resources left out, by name.
    pub refused: BTreeMap<String, Refusal>,
}

/// A resource as a pool of the file's shape (the name is the object's name).
pub fn to_config(pool: &AddressPool) -> PoolConfig {
    let spec = &pool.spec;
    PoolConfig {
        name: pool.name_any(),
        addresses: spec.addresses.clone(),
        auto_assign: spec.auto_assign,
        avoid_buggy_ips: spec.avoid_buggy_ips,
        service_allocation: spec.service_allocation.as_ref().map(|a| ServiceAllocation {
            priority: a.priority,
            namespaces: a.namespaces.clone(),
            namespace_selector: selector(a.namespace_selector.as_ref()),
            service_selector: selector(a.service_selector.as_ref()),
        }),
    }
}

/// Kubernetes' selector as the allocator's copy of it (same fields, same meaning).
pub(crate) fn selector(
    s: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
) -> LabelSelector {
    let Some(s) = s else {
        return LabelSelector::default();
    };
    LabelSelector {
        match_labels: s.match_labels.clone().unwrap_or_default(),
        match_expressions: s
            .match_expressions
            .iter()
            .flatten()
            .map(|r| portway_provider::ipam::LabelSelectorRequirement {
                key: r.key.clone(),
                operator: r.operator.clone(),
                values: r.values.clone().unwrap_or_default(),
            })
            .collect(),
    }
}

/// Merges the file's pools (valid: the configuration loader checked them) with the resources.
pub fn merge(file: &[PoolConfig], resources: &[AddressPool]) -> Merged {
    let mut sorted: Vec<&AddressPool> = resources
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    sorted.sort_by_key(|p| (p.metadata.creation_timestamp.clone(), p.name_any()));
    let mut out = Merged {
        pools: file.to_vec(),
        refused: BTreeMap::new(),
    };
    for res in sorted {
        let name = res.name_any();
        if file.iter().any(|p| p.name == name) {
            out.refused.insert(
                name.clone(),
                Refusal {
                    reason: "NameTaken",
                    problems: vec![format!(
                        "the configuration file defines a pool named {name:?} and wins; \
                         rename this AddressPool or remove the file's pool"
                    )],
                },
            );
            continue;
        }
        let mut candidate = out.pools.clone();
        candidate.push(to_config(res));
        let at = format!("pools[{}]", candidate.len() - 1);
        let ours = |path: &str| path == at || path.starts_with(&format!("{at}."));
        // An overlap is reported on the later-starting entry, which may be the other pool's.
        let problems: Vec<String> = validate_pools(&candidate)
            .into_iter()
            .filter(|e| ours(&e.path) || e.message.contains(&format!("{at}.")))
            .map(|e| describe(&e.path, &at, &e.message, &candidate))
            .collect();
        if problems.is_empty() {
            out.pools = candidate;
        } else {
            let reason = if problems.iter().any(|p| p.contains("overlap")) {
                "Overlap"
            } else {
                "Invalid"
            };
            out.refused.insert(name, Refusal { reason, problems });
        }
    }
    out
}

/// A problem of the candidate `at`, its path in the resource's spelling
/// (`spec.addresses[0]`) and other pools named instead of indexed.
fn describe(path: &str, at: &str, message: &str, pools: &[PoolConfig]) -> String {
    let name = |text: &str| {
        let mut text = text.to_string();
        for (i, p) in pools.iter().enumerate().rev() {
            text = text.replace(&format!("pools[{i}]"), &format!("pool {:?}", p.name));
        }
        text
    };
    match path.strip_prefix(at) {
        Some("") => name(message),
        Some(field) => format!("spec{field}: {}", name(message)),
        None => format!("{}: {}", name(path), name(message)),
    }
}

/// The pools a class draws from: those the file lists for it, and those its resources
/// name; a policy or advertisement naming no pool means every pool.
pub fn class_pools(file: &[String], named: &[Vec<String>], all: &[PoolConfig]) -> Vec<String> {
    let mut out: Vec<String> = file.to_vec();
    let every = named.iter().any(Vec::is_empty);
    let extra: Vec<&String> = if every {
        all.iter().map(|p| &p.name).collect()
    } else {
        named.iter().flatten().collect()
    };
    for p in extra {
        if !out.contains(p) {
            out.push(p.clone());
        }
    }
    out
}

/// The pool names every L2AnnouncementPolicy lists (one list per policy).
pub fn l2_named(policies: &[L2AnnouncementPolicy]) -> Vec<Vec<String>> {
    policies.iter().map(|p| p.spec.pools.clone()).collect()
}

/// The pool names every BGPAdvertisement lists (one list per advertisement).
pub fn bgp_named(advs: &[BGPAdvertisement]) -> Vec<Vec<String>> {
    advs.iter().map(|a| a.spec.pools.clone()).collect()
}
