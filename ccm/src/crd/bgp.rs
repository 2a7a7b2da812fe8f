//! `BGPPeer` and `BGPAdvertisement` (`portway.dev/v1alpha1`): the `bgp.peers` and
//! `bgp.advertisements` entries of the configuration file as resources (MetalLB's `BGPPeer`,
//! `BGPAdvertisement`), with each node's session state in the peer's status.

// kube's `printcolumn(...)` repeats by design; clippy takes the repeats for duplicates.
#![allow(clippy::duplicated_attributes)]

use super::rules::{
    COMMUNITY_MESSAGE, COMMUNITY_RULE, DURATION_PATTERN, IP_MESSAGE, IP_RULE,
    LARGE_COMMUNITY_MESSAGE, LARGE_COMMUNITY_RULE, TIMERS_MESSAGE, TIMERS_RULE,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// One BGP neighbour of the speakers.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "portway.dev",
    version = "v1alpha1",
    kind = "BGPPeer",
    shortname = "pwpeer",
    category = "portway",
    status = "BGPPeerStatus",
    doc = "A BGP neighbour of the speakers on the nodes it selects.",
    validation = Rule::new(TIMERS_RULE).message(TIMERS_MESSAGE),
    printcolumn(name = "Address", type_ = "string", json_path = ".spec.peerAddress"),
    printcolumn(name = "ASN", type_ = "integer", json_path = ".spec.peerASN"),
    printcolumn(name = "Nodes", type_ = "string", json_path = ".status.sessions[*].node"),
    printcolumn(name = "Sessions", type_ = "string", json_path = ".status.sessions[*].state"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct BGPPeerSpec {
    /// The speakers' AS number.
    #[serde(rename = "myASN")]
    #[schemars(range(min = 1, max = 4_294_967_295_i64))]
    pub my_asn: i64,
    /// The neighbour's AS number (equal to `myASN` for iBGP).
    #[serde(rename = "peerASN")]
    #[schemars(range(min = 1, max = 4_294_967_295_i64))]
    pub peer_asn: i64,
    /// The neighbour's address.
    #[x_kube(validation = Rule::new(IP_RULE).message(IP_MESSAGE))]
    #[schemars(length(max = 45))]
    pub peer_address: String,
    /// The neighbour's TCP port.
    #[serde(default = "bgp_port")]
    #[schemars(range(min = 1, max = 65535), default = "bgp_port")]
    pub peer_port: i32,
    /// The local address to connect from; the node's route decides when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(IP_RULE).message(IP_MESSAGE))]
    #[schemars(length(max = 45))]
    pub source_address: Option<String>,
    /// Proposed hold time (`90s`); at least 3 s or 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = 32))]
    pub hold_time: Option<String>,
    /// Keepalive interval (`30s`); below the hold time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = 32))]
    pub keepalive_time: Option<String>,
    /// TTL of an eBGP session to a neighbour more than one hop away; 0 or absent: directly
    /// connected (GTSM-style TTL 255 checks stay on).
    #[serde(
        default,
        rename = "ebgpMultiHop",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 0, max = 255))]
    pub ebgp_multihop: Option<i32>,
    /// The TCP MD5 password, read from a Secret (never inline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret: Option<SecretKeyRef>,
    /// Nodes that peer; empty means every node. One selector must match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub node_selectors: Vec<LabelSelector>,
    /// Keep routes through a speaker restart (RFC 4724).
    #[serde(default)]
    pub graceful_restart: bool,
}

fn bgp_port() -> i32 {
    179
}

/// Where a password lives: a key of a Secret.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The Secret's namespace (the speakers' namespace, where their Role reads Secrets).
    #[schemars(length(min = 1, max = 63))]
    pub namespace: String,
    /// The key in the Secret's data; `password` when absent.
    #[serde(default = "password_key")]
    #[schemars(default = "password_key", length(min = 1, max = 253))]
    pub key: String,
}

fn password_key() -> String {
    "password".to_string()
}

/// Session state per node, written by each node's speaker.
///
/// No summed count of Established sessions: every node's speaker writes this object with
/// server-side apply and owns only its own entry, so no writer could keep a total right
/// without reading the others' entries first (a race). `kubectl get bgppeers` shows every
/// node's state in the `Nodes` and `Sessions` columns instead.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BGPPeerStatus {
    /// One entry per node peering with this neighbour. A map keyed by `node` for
    /// server-side apply: each node's speaker owns its own entry (field manager
    /// `portway-speaker/<node>`), so many speakers write one object without races.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["node".into()]))]
    pub sessions: Vec<SessionState>,
}

/// One node's session with the peer.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionState {
    /// The node.
    pub node: String,
    /// The BGP FSM state: Idle, Connect, Active, OpenSent, OpenConfirm, Established.
    pub state: String,
    /// Why the session is not Established, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Which pools are advertised to which peers, and with which attributes.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "portway.dev",
    version = "v1alpha1",
    kind = "BGPAdvertisement",
    shortname = "pwadv",
    category = "portway",
    doc = "Which pools the bgp class advertises, to which peers, with which attributes.",
    printcolumn(name = "Pools", type_ = "string", json_path = ".spec.pools"),
    printcolumn(name = "Peers", type_ = "string", json_path = ".spec.peers"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct BGPAdvertisementSpec {
    /// Pools whose addresses are advertised (and that the bgp class allocates from).
    #[schemars(length(min = 1, max = 64), inner(length(min = 1, max = 253)))]
    pub pools: Vec<String>,
    /// Advertise the covering prefix of this length instead of /32 (0: per address).
    #[serde(default)]
    #[schemars(range(min = 0, max = 32))]
    pub aggregation_length: i32,
    /// The same for IPv6 (0: per address, /128).
    #[serde(default, rename = "aggregationLengthV6")]
    #[schemars(range(min = 0, max = 128))]
    pub aggregation_length_v6: i32,
    /// Standard communities, `ASN:value`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(max = 11)))]
    #[x_kube(validation = Rule::new(COMMUNITY_RULE).message(COMMUNITY_MESSAGE))]
    pub communities: Vec<String>,
    /// Large communities, `global:local1:local2`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(max = 32)))]
    #[x_kube(validation = Rule::new(LARGE_COMMUNITY_RULE).message(LARGE_COMMUNITY_MESSAGE))]
    pub large_communities: Vec<String>,
    /// LOCAL_PREF for iBGP peers; 0 leaves it out.
    #[serde(default)]
    #[schemars(range(min = 0, max = 4_294_967_295_i64))]
    pub local_pref: i64,
    /// BGPPeer names to advertise to; empty means every peer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 253)))]
    pub peers: Vec<String>,
}
