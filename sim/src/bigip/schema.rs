//! Which JSON properties each LTM object kind accepts; anything else is refused as a real
//! BIG-IP refuses it.
//!
//! The lists are the union of two public sources, so that the simulator accepts what a real
//! device accepts and nothing it does not:
//! - the tmsh properties F5's own declarative engine maps per object kind,
//!   F5Networks/f5-appsvcs-extension `src/lib/properties.json` (keys `ltm pool`,
//!   `ltm virtual`, `ltm node`, `ltm monitor`, `ltm virtual-address`), in their iControl
//!   REST camelCase spelling. `metadata` appears under pool, virtual and node only, never
//!   under `ltm monitor`.
//! - the properties a real device returns, from the recorded GETs in f5devcentral/f5-cccl
//!   `f5_cccl/test/bigip_data.json` (BIG-IP 12.1) and, for a node's `description`,
//!   F5Networks/terraform-provider-bigip `bigip/resource_bigip_ltm_node.go` (which sets it).
//!
//! An unknown property is answered 400 with the body recorded on a device in
//! f5devcentral/terraform-provider-bigip-old issue #111 ("Found unexpected json pair at
//! configuration item /ltm/node/~Common~terraform_node1. The json pair is \"fqdn\":{}.") and
//! rancher/rancher-catalog PR #147 (`{"code":400,"message":"Found unexpected json pair at
//! configuration item /ltm/virtual. The json pair is \"Production\":{\"RancherTest\":null}.",
//! "errorStack":[]}`).

use super::store::Reply;
use serde_json::{Map, Value, json};

/// Read-only or identity properties every object carries (recorded GETs).
const IDENTITY: &[&str] = &[
    "name",
    "partition",
    "fullPath",
    "kind",
    "generation",
    "selfLink",
    "subPath",
    "appService",
    "appServiceReference",
];

const POOL: &[&str] = &[
    // properties.json `ltm pool`
    "allowNat",
    "allowSnat",
    "description",
    "loadBalancingMode",
    "members",
    "metadata",
    "minActiveMembers",
    "monitor",
    "reselectTries",
    "serviceDownAction",
    "slowRampTime",
    // recorded GET
    "ignorePersistedWeight",
    "ipTosToClient",
    "ipTosToServer",
    "linkQosToClient",
    "linkQosToServer",
    "membersReference",
    "minUpMembers",
    "minUpMembersAction",
    "minUpMembersChecking",
    "queueDepthLimit",
    "queueOnConnectionLimit",
    "queueTimeLimit",
];

const MEMBER: &[&str] = &[
    // recorded `membersReference.items`
    "address",
    "connectionLimit",
    "dynamicRatio",
    "ephemeral",
    "fqdn",
    "inheritProfile",
    "logging",
    "monitor",
    "nameReference",
    "priorityGroup",
    "rateLimit",
    "ratio",
    "session",
    "state",
    // f5-cccl `f5_cccl/resource/ltm/pool_member.py` compares and sends it
    "description",
];

const VIRTUAL: &[&str] = &[
    // properties.json `ltm virtual`
    "addressStatus",
    "autoLasthop",
    "bwcPolicy",
    "clonePools",
    "connectionLimit",
    "description",
    "destination",
    "disabled",
    "enabled",
    "fallbackPersistence",
    "fwEnforcedPolicy",
    "fwStagedPolicy",
    "internal",
    "ipForward",
    "ipIntelligencePolicy",
    "ipProtocol",
    "l2Forward",
    "lastHopPool",
    "mask",
    "metadata",
    "mirror",
    "nat64",
    "perFlowRequestAccessPolicy",
    "persist",
    "policies",
    "pool",
    "profiles",
    "rateLimit",
    "rules",
    "securityLogProfiles",
    "securityNatPolicy",
    "serversslUseSni",
    "serviceDownImmediateAction",
    "servicePolicy",
    "source",
    "sourceAddressTranslation",
    "sourcePort",
    "stateless",
    "throughputCapacity",
    "trafficMatchingCriteria",
    "translateAddress",
    "translatePort",
    "vlans",
    "vlansDisabled",
    "vlansEnabled",
    // recorded GET
    "cmpEnabled",
    "gtmScore",
    "mobileAppTunnel",
    "policiesReference",
    "poolReference",
    "profilesReference",
    "rateLimitDstMask",
    "rateLimitMode",
    "rateLimitSrcMask",
    "rulesReference",
    "synCookieStatus",
    "vsIndex",
];

const NODE: &[&str] = &[
    // properties.json `ltm node`
    "address",
    "fqdn",
    "metadata",
    "monitor",
    // recorded GET
    "connectionLimit",
    "dynamicRatio",
    "ephemeral",
    "logging",
    "rateLimit",
    "ratio",
    "session",
    "state",
    // terraform-provider-bigip `resource_bigip_ltm_node.go`
    "description",
];

const MONITOR: &[&str] = &[
    // properties.json `ltm monitor` (one list for every monitor type; no `metadata`)
    "acceptRcode",
    "adaptive",
    "adaptiveDivergenceType",
    "adaptiveDivergenceValue",
    "adaptiveLimit",
    "adaptiveSamplingTimespan",
    "answerContains",
    "args",
    "base",
    "cert",
    "chaseReferrals",
    "cipherlist",
    "count",
    "database",
    "description",
    "destination",
    "domain",
    "failureInterval",
    "failures",
    "filename",
    "filter",
    "filterLdap",
    "filterNeg",
    "headers",
    "interval",
    "ipDscp",
    "key",
    "mandatoryAttributes",
    "mode",
    "nasIpAddress",
    "password",
    "qname",
    "qtype",
    "recv",
    "recvColumn",
    "recvDisable",
    "recvRow",
    "request",
    "responseTime",
    "retryTime",
    "reverse",
    "run",
    "secret",
    "security",
    "send",
    "sslProfile",
    "timeUntilUp",
    "timeout",
    "transparent",
    "upInterval",
    "userDefined",
    "username",
    // recorded GET (the parent, fixed at creation; see `ltm::parent_change`)
    "defaultsFrom",
    "manualResume",
];

const VIRTUAL_ADDRESS: &[&str] = &[
    // properties.json `ltm virtual-address`
    "address",
    "arp",
    "autoDelete",
    "icmpEcho",
    "mask",
    "routeAdvertisement",
    "serverScope",
    "spanning",
    "trafficGroup",
    "description",
    "enabled",
    "floating",
];

/// The properties `collection` (`pool`, `virtual`, `node`, `virtual-address`,
/// `monitor/<type>`) accepts.
fn allowed(collection: &str) -> &'static [&'static str] {
    match collection {
        "pool" => POOL,
        "virtual" => VIRTUAL,
        "node" => NODE,
        "virtual-address" => VIRTUAL_ADDRESS,
        _ => MONITOR,
    }
}

fn unexpected(item: &str, key: &str, value: &Value) -> Reply {
    (
        400,
        json!({"code": 400, "message": format!(
            "Found unexpected json pair at configuration item {item}. The json pair is \"{key}\":{value}."),
            "errorStack": []}),
    )
}

/// Refuses the first property of `body` that `collection` does not have, naming `item` (the
/// configuration item: `/ltm/<collection>` for a create, `/ltm/<collection>/~P~name` for a
/// change), and the same for every inline pool member.
pub(super) fn check(collection: &str, item: &str, body: &Map<String, Value>) -> Result<(), Reply> {
    let ok = allowed(collection);
    if let Some((k, v)) = body
        .iter()
        .find(|(k, _)| !ok.contains(&k.as_str()) && !IDENTITY.contains(&k.as_str()))
    {
        return Err(unexpected(item, k, v));
    }
    if collection == "pool" {
        for m in body
            .get("members")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(m) = m.as_object() else {
                return Err(unexpected(item, "members", m));
            };
            if let Some((k, v)) = m
                .iter()
                .find(|(k, _)| !MEMBER.contains(&k.as_str()) && !IDENTITY.contains(&k.as_str()))
            {
                return Err(unexpected(&format!("{item}/members"), k, v));
            }
        }
    }
    Ok(())
}
