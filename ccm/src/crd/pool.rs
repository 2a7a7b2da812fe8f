//! `AddressPool` (`portway.dev/v1alpha1`): the `pools:` entry of the configuration file as a
//! cluster-scoped resource, so pools change with `kubectl apply` and show their use with
//! `kubectl get addresspools`. The object's name is the pool's name.

// kube's `printcolumn(...)` repeats by design; clippy takes the repeats for duplicates.
#![allow(clippy::duplicated_attributes)]

use super::rules::{ADDRESSES_MESSAGE, ADDRESSES_RULE};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// The desired pool: shaped like MetalLB's `IPAddressPool` so `portway import metallb` is a
/// rename, and like the file's `pools:` entry so both sources mean the same.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "portway.dev",
    version = "v1alpha1",
    kind = "AddressPool",
    shortname = "pwpool",
    category = "portway",
    status = "AddressPoolStatus",
    doc = "A pool of virtual IPs for the l2, bgp and f5 classes; the name is the pool's name.",
    printcolumn(name = "Auto", type_ = "boolean", json_path = ".spec.autoAssign"),
    printcolumn(name = "In Use", type_ = "integer", json_path = ".status.inUse"),
    printcolumn(name = "V4 Free", type_ = "string", json_path = ".status.ipv4.free"),
    printcolumn(name = "V6 Free", type_ = "string", json_path = ".status.ipv6.free"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct AddressPoolSpec {
    /// CIDRs, `first-last` ranges and single addresses, IPv4 and IPv6 mixed. Checked by the
    /// server (a CEL rule) so `kubectl apply` names the field; overlaps with other pools are
    /// reported in the status, since one object cannot see the others.
    #[schemars(length(min = 1, max = 64), inner(length(min = 1, max = 100)))]
    #[x_kube(validation = kube::core::Rule::new(ADDRESSES_RULE).message(ADDRESSES_MESSAGE))]
    pub addresses: Vec<String>,
    /// `false` keeps the pool for Services that ask for it by annotation or by address.
    #[serde(default = "yes")]
    #[schemars(default = "yes")]
    pub auto_assign: bool,
    /// Skip IPv4 addresses ending in `.0` and `.255` (old firmwares take them for broadcast).
    #[serde(default, rename = "avoidBuggyIPs")]
    pub avoid_buggy_ips: bool,
    /// Restricts the pool to some namespaces/Services and orders it before general pools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_allocation: Option<ServiceAllocationSpec>,
}

fn yes() -> bool {
    true
}

/// Which Services may use the pool, and how strongly it is preferred (as in the file).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAllocationSpec {
    /// A lower positive number is tried first; 0 comes after every positive priority.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub priority: i32,
    /// Namespaces allowed to use the pool, beside those namespaceSelector selects; both
    /// empty allow all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(max = 63)))]
    pub namespaces: Vec<String>,
    /// Labels that let a namespace use the pool, beside the namespaces listed (a union, as
    /// MetalLB's namespaces and namespaceSelectors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// Labels the Service must carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_selector: Option<LabelSelector>,
}

/// What the controller sees of the pool: counts per family, the Services holding addresses
/// outside every pool, conflicts, and conditions (`Ready`, `Conflict`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AddressPoolStatus {
    /// Addresses of this pool held by at least one Service (both families).
    #[serde(default)]
    pub in_use: i64,
    /// IPv4 figures; absent when the pool has no IPv4 range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<FamilyCounts>,
    /// IPv6 figures; absent when the pool has no IPv6 range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<FamilyCounts>,
    /// Services holding addresses in no pool at all (`namespace/name ip`), the same on every
    /// pool, so that whoever looks at any pool sees them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outside_pools: Vec<String>,
    /// Overlaps with other pools (file or resource) and addresses claimed by two Services.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<String>,
    /// `Ready` (the pool is in use by the allocator) and `Conflict`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` these figures were computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Address counts of one family. Totals are strings: an IPv6 /64 has 2^64 addresses, more
/// than an integer in a Kubernetes schema can hold.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct FamilyCounts {
    /// Allocatable addresses (`avoidBuggyIPs` excluded), decimal.
    pub total: String,
    /// Addresses held by at least one Service.
    pub in_use: i64,
    /// `total - inUse`, decimal.
    pub free: String,
}
