//! Route domains: `%N`, the partition's `defaultRouteDomain`, and how addresses come back.

use super::{call, device, get, message, ok};
use crate::bigip::address::RouteDomainDisplay;
use axum::http::Method;
use serde_json::json;

/// f5devcentral/f5-cccl `f5_cccl/test/bigip_data.json` records node `10.2.3.5%0` of partition
/// `test` as `"address": "10.2.3.5"`, `"fullPath": "/test/10.2.3.5%0"`, `"name":
/// "10.2.3.5%0"`, `"selfLink": "https://localhost/mgmt/tm/ltm/node/~test~10.2.3.5%250?ver=
/// 12.1.0"`: the name as written, the default route domain left out of the address, `%`
/// sent as `%25` in the path.
#[test]
fn a_node_keeps_its_name_and_shows_its_address_without_the_default_route_domain() {
    let (mut s, t) = device();
    call(
        &mut s,
        &t,
        Method::POST,
        "/mgmt/tm/auth/partition",
        json!({"name": "test"}),
    );
    ok(
        &mut s,
        &t,
        Method::POST,
        "/mgmt/tm/ltm/node",
        json!({"name": "10.2.3.5%0", "partition": "test", "address": "10.2.3.5%0"}),
    );
    let (code, out) = get(&mut s, &t, "/mgmt/tm/ltm/node/~test~10.2.3.5%250", "");
    assert_eq!(code, 200, "{out}");
    assert_eq!(out["name"], "10.2.3.5%0");
    assert_eq!(out["fullPath"], "/test/10.2.3.5%0");
    assert_eq!(out["address"], "10.2.3.5");
    assert_eq!(
        out["selfLink"],
        "https://localhost/mgmt/tm/ltm/node/~test~10.2.3.5%250?ver=13.1.0"
    );
}

/// An address without `%N` lives in the partition's default route domain (f5-cccl
/// `f5_cccl/utils/route_domain.py` `normalize_address_with_route_domain`). Whether the
/// device writes that `%N` back is "Typically, it doesn't, but it's also not consistent in
/// all cases" (an F5 engineer on f5devcentral/f5-cccl PR #196); joel74/POSH-LTM-Rest issue
/// #55 records a member of partition `dev` read back as `10.100.10.1%4`.
#[test]
fn addresses_take_the_partition_default_and_show_it_by_mode() {
    let (mut s, t) = device();
    call(
        &mut s,
        &t,
        Method::POST,
        "/mgmt/tm/auth/partition",
        json!({"name": "dev", "defaultRouteDomain": 4}),
    );
    ok(
        &mut s,
        &t,
        Method::POST,
        "/mgmt/tm/ltm/pool",
        json!({"name": "ewgtest_pool", "partition": "dev",
            "members": [{"name": "10.100.10.1:443", "partition": "dev"}]}),
    );
    ok(
        &mut s,
        &t,
        Method::POST,
        "/mgmt/tm/ltm/virtual",
        json!({"name": "vs", "partition": "dev", "destination": "/dev/10.1.10.100:443",
            "source": "0.0.0.0/0", "pool": "/dev/ewgtest_pool"}),
    );
    let read = |s: &mut crate::bigip::store::BigIpState| {
        let (_, pool) = get(
            s,
            &t,
            "/mgmt/tm/ltm/pool/~dev~ewgtest_pool",
            "expandSubcollections=true",
        );
        let (_, vs) = get(s, &t, "/mgmt/tm/ltm/virtual/~dev~vs", "");
        (
            pool["membersReference"]["items"][0]["address"].clone(),
            vs["destination"].clone(),
            vs["source"].clone(),
        )
    };
    assert_eq!(
        read(&mut s),
        (
            json!("10.100.10.1"),
            json!("/dev/10.1.10.100:443"),
            json!("0.0.0.0/0")
        )
    );
    s.rd_display = RouteDomainDisplay::Explicit;
    assert_eq!(
        read(&mut s),
        (
            json!("10.100.10.1%4"),
            json!("/dev/10.1.10.100%4:443"),
            json!("0.0.0.0%4/0")
        )
    );
}

/// "you can assign the same IP address or subnet to multiple nodes on a network, provided
/// that each instance of the IP address resides in a separate routing domain" (F5 TMOS
/// Routing Administration, "Route Domains"); within one route domain the address is a node
/// once, across partitions: F5Networks/f5-appsvcs-extension `test/integration/bigip/misc/
/// shareNodes.js` expects "Invalid Node, the IP address 192.0.2.1 already exists." when two
/// tenants use one member IP without `shareNodes`.
#[test]
fn one_ip_is_a_node_once_per_route_domain_across_partitions() {
    let (mut s, t) = device();
    for (name, rd) in [("tenantOne", 0), ("tenantTwo", 0), ("tenantRd2", 2)] {
        call(
            &mut s,
            &t,
            Method::POST,
            "/mgmt/tm/auth/partition",
            json!({"name": name, "defaultRouteDomain": rd}),
        );
    }
    let pool = |partition: &str, member_partition: &str| {
        json!({"name": "pool", "partition": partition,
            "members": [{"name": "192.0.2.1:80", "partition": member_partition}]})
    };
    ok(
        &mut s,
        &t,
        Method::POST,
        "/mgmt/tm/ltm/pool",
        pool("tenantOne", "tenantOne"),
    );
    let (code, out) = call(
        &mut s,
        &t,
        Method::POST,
        "/mgmt/tm/ltm/pool",
        pool("tenantTwo", "tenantTwo"),
    );
    assert_eq!(code, 400);
    assert!(
        message(&out).ends_with("Invalid Node, the IP address 192.0.2.1 already exists."),
        "{out}"
    );
    // An explicit node is refused the same way.
    let (code, out) = call(
        &mut s,
        &t,
        Method::POST,
        "/mgmt/tm/ltm/node",
        json!({"name": "other-name", "partition": "tenantTwo", "address": "192.0.2.1"}),
    );
    assert_eq!(code, 400, "{out}");
    // Naming the existing node (its partition) shares it.
    let out = ok(
        &mut s,
        &t,
        Method::POST,
        "/mgmt/tm/ltm/pool",
        pool("tenantTwo", "tenantOne"),
    );
    assert_eq!(
        out["membersReference"]["items"][0]["fullPath"],
        "/tenantOne/192.0.2.1:80"
    );
    // Another route domain is another address.
    ok(
        &mut s,
        &t,
        Method::POST,
        "/mgmt/tm/ltm/pool",
        pool("tenantRd2", "tenantRd2"),
    );
}
