//! `L2AnnouncementPolicy` (`portway.dev/v1alpha1`): which pools the l2 class answers ARP/NDP
//! for, from which nodes and interfaces (MetalLB's `L2Advertisement`).

// kube's `printcolumn(...)` repeats by design; clippy takes the repeats for duplicates.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// The desired announcement: the pools it covers (empty: every pool) and where.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "portway.dev",
    version = "v1alpha1",
    kind = "L2AnnouncementPolicy",
    shortname = "pwl2",
    category = "portway",
    doc = "Which pools the l2 class announces over ARP/NDP, from which nodes and interfaces.",
    printcolumn(name = "Pools", type_ = "string", json_path = ".spec.pools"),
    printcolumn(name = "Interfaces", type_ = "string", json_path = ".spec.interfaces"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct L2AnnouncementPolicySpec {
    /// Pools (AddressPool names or the file's `pools:` names) the l2 class allocates from
    /// and announces; empty means every pool.
    #[serde(default)]
    #[schemars(length(max = 64), inner(length(min = 1, max = 253)))]
    pub pools: Vec<String>,
    /// Nodes that may announce; empty means every node. One selector must match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub node_selectors: Vec<LabelSelector>,
    /// Interfaces to answer on; empty means every interface with a route to the address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 32),
        inner(length(min = 1, max = 15), regex(pattern = r"^[^/\s:]+$"))
    )]
    pub interfaces: Vec<String>,
}
